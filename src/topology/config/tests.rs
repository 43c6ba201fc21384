//! Tests of reading a whole config: every error with its position, the graph checks, fingerprints.

use super::*;

fn check(text: &str) -> Result<(Config, Vec<Diagnostic>), LoadError> {
    parse(text, Path::new("agent.yaml"), &|_| None)
}

fn errors(text: &str) -> Vec<String> {
    let err = check(text).unwrap_err();
    err.diagnostics.iter().map(|d| d.display(&err.path).to_string()).collect()
}

const GEN: &str = "sources:\n  gen:\n    type: generator\n";

#[test]
fn a_minimal_pipeline_loads() {
    let text = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n");
    let (config, warnings) = check(&text).unwrap();
    assert_eq!(config.sources.len(), 1);
    assert_eq!(config.sinks[0].inputs[0].value, "gen");
    assert!(warnings.is_empty());
}

#[test]
fn every_error_is_listed_with_its_position() {
    let text = format!(
        "{GEN}bogus: 1\nsinks:\n  a:\n    type: console\n    inputs: [gen]\n    colour: red\n  \
         b:\n    type: http\n    inputs: [gne]\n    url: http://x\n    batch: {{timeout: 10x}}\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("agent.yaml:4:1: error: unknown setting `bogus`"), "{errs:#?}");
    assert!(errs[1].starts_with("agent.yaml:9:5: error: sinks.a: unknown field `colour`"), "{errs:#?}");
    assert!(
        errs[2]
            .starts_with("agent.yaml:12:14: error: sinks.b.inputs: unknown input `gne`; did you mean `gen`?"),
        "{errs:#?}"
    );
    assert!(
        errs[3].starts_with("agent.yaml:14:22: error: sinks.b.batch.timeout: invalid duration `10x`"),
        "{errs:#?}"
    );
}

#[test]
fn every_bad_value_of_a_component_is_listed() {
    let text = format!(
        "{GEN}sinks:\n  b:\n    type: http\n    inputs: [gen]\n    url: http://x\n    \
         encoding: xml\n    colour: red\n    batch: {{max_events: many, timeout: 10x}}\n    \
         buffer: {{max_events: -1}}\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    for (err, at) in errs.iter().zip([
        "agent.yaml:9:15: error: sinks.b.encoding:",
        "agent.yaml:10:5: error: sinks.b: unknown field `colour`",
        "agent.yaml:11:25: error: sinks.b.batch.max_events:",
        "agent.yaml:11:40: error: sinks.b.batch.timeout:",
        "agent.yaml:12:26: error: sinks.b.buffer.max_events:",
    ]) {
        assert!(err.starts_with(at), "{err} does not start with {at}");
    }
    // A required setting that is wrong is listed once, not again as missing.
    let errs = errors(&format!("{GEN}sinks:\n  b:\n    type: http\n    inputs: [gen]\n    url: [1]\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn a_config_without_sinks_is_refused() {
    for text in ["", "# nothing\n", GEN, "sinks:\n"] {
        let errs = errors(text);
        assert!(errs.iter().any(|e| e.contains("error: sinks:")), "{text:?}: {errs:#?}");
    }
}

#[test]
fn log_levels() {
    let ok = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n");
    let level = |l: &str| check(&format!("log: {{level: {l}}}\n{ok}")).map(|(c, _)| c.log.level);
    assert_eq!(level("warning").unwrap(), "warning");
    let err = level("verbose").unwrap_err().to_string();
    assert!(err.contains("agent.yaml:1:14: error: log.level: unknown log level `verbose`"), "{err}");
}

#[test]
fn graph_errors() {
    let text = format!(
        "{GEN}transforms:\n  t1:\n    type: sample\n    inputs: [t2]\n    rate: 1\n  \
         t2:\n    type: sample\n    inputs: [t1, out]\n    rate: 1\nsinks:\n  out:\n    type: console\n  \
         gen:\n    type: console\n    inputs: [gen]\n"
    );
    let errs = errors(&text).join("\n");
    assert!(errs.contains("sinks.out: `inputs` is missing or empty"), "{errs}");
    assert!(errs.contains("the inputs form a cycle: t1 -> t2 -> t1"), "{errs}");
    assert!(errs.contains("`out` is a sink"), "{errs}");
    assert!(errs.contains("duplicate component id `gen`"), "{errs}");
}

#[test]
fn a_source_that_feeds_nothing_is_a_warning() {
    let text = format!(
        "{GEN}  lonely:\n    type: generator\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n"
    );
    let (_, warnings) = check(&text).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("goes nowhere") || warnings[0].message.contains("go nowhere"));
}

#[test]
fn unknown_type_is_named() {
    let errs = errors("sources:\n  x:\n    type: flie\n");
    assert!(errs[0].contains("sources.x.type: unknown source type `flie`"), "{errs:?}");
}

#[test]
fn fingerprints_follow_settings_not_positions() {
    let a = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n");
    // The same settings, moved and written differently.
    let b = format!("\n\n{GEN}sinks:\n  out: {{type: console, inputs: [gen]}}\n");
    let c = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n    encoding: text\n");
    let print = |t: &str| check(t).unwrap().0.sinks[0].fingerprint;
    assert_eq!(print(&a), print(&b));
    assert_ne!(print(&a), print(&c));
    assert_eq!(check(&a).unwrap().0.sources[0].fingerprint, check(&c).unwrap().0.sources[0].fingerprint);
}
