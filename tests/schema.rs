//! `hostwatch schema`: the config's JSON Schema, checked with a validator
//! nobody here wrote (Python's `jsonschema`, which `scripts/brokers`
//! installs): it accepts every config the project ships and rejects what
//! the loader refuses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, validate};

/// Writes the schema and `configs` (name, text) to a directory and runs the
/// validator over them: `(name, None)` for a valid one, `(name, Some(why))`.
fn check(configs: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let schema = dir.path().join("hostwatch.schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, (_, text)) in configs.iter().enumerate() {
        let path = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate_schema.py");
    let out = Command::new("python3").arg(script).arg(&schema).args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "the validator failed (`pip install jsonschema pyyaml`, or run scripts/brokers):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), configs.len(), "{report}");
    configs
        .iter()
        .zip(files)
        .zip(lines)
        .map(|(((name, _), file), line)| {
            let file = file.display().to_string();
            if line == format!("ok {file}") {
                (name.clone(), None)
            } else {
                let why = line.strip_prefix(&format!("invalid {file}: ")).unwrap_or(line);
                (name.clone(), Some(why.to_string()))
            }
        })
        .collect()
}

/// Every component's example, given what it reads from and what reads it
/// (as `tests/config.rs` loads them).
fn examples() -> Vec<(String, String)> {
    let out = Command::new(BIN).arg("example").output().unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut configs = Vec::new();
    for line in listing.lines().skip(1) {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap().trim_end_matches('s').to_string();
        for ty in words.map(|t| t.trim_end_matches(',')) {
            let out = Command::new(BIN).args(["example", &kind, ty]).output().unwrap();
            assert!(out.status.success(), "example {kind} {ty}");
            let example = String::from_utf8(out.stdout).unwrap();
            let config = match kind.as_str() {
                "source" => format!("{example}\nsinks:\n  check:\n    type: console\n    inputs: [x]\n"),
                "transform" => format!(
                    "{example}\nsources:\n  upstream:\n    type: generator\nsinks:\n  check:\n    \
                     type: console\n    inputs: [x]\n"
                ),
                _ => format!("{example}\nsources:\n  upstream:\n    type: generator\n"),
            };
            configs.push((format!("example {kind} {ty}"), config));
        }
    }
    assert!(configs.len() >= 20, "{listing}");
    configs
}

#[test]
fn the_schema_accepts_every_config_the_project_ships() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = examples();
    for file in ["agent.yaml.example", "packaging/agent.yaml"] {
        configs.push((file.to_string(), std::fs::read_to_string(root.join(file)).unwrap()));
    }
    let refused: Vec<String> = check(&configs)
        .into_iter()
        .filter_map(|(name, why)| why.map(|why| format!("{name}: {why}")))
        .collect();
    assert!(refused.is_empty(), "the schema refuses configs the agent loads:\n{}", refused.join("\n"));
}

/// Each of these is refused by the loader and by the schema.
#[test]
fn the_schema_rejects_what_the_loader_refuses() {
    let ok = "sources:\n  gen:\n    type: generator\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n";
    let bad = [
        ("an unknown top-level key", format!("{ok}colour: red\n")),
        ("an unknown key of a source", ok.replace("type: generator\n", "type: generator\n    colour: red\n")),
        ("an unknown key of a sink", format!("{ok}    colour: red\n")),
        ("an unknown key of a shared sink setting", format!("{ok}    batch: {{colour: red}}\n")),
        ("a word for a number", format!("{ok}    batch: {{max_events: many}}\n")),
        ("a list for a string", format!("{ok}    encoding: [text]\n")),
        ("a value outside an enum", format!("{ok}    encoding: xml\n")),
        ("a duration without its unit", format!("{ok}    batch: {{timeout: 10}}\n")),
        ("a duration with a wrong unit", format!("{ok}    batch: {{timeout: 10x}}\n")),
        ("a size with a wrong unit", format!("{ok}    buffer: {{max_bytes: 1 parsec}}\n")),
        ("an unknown type", ok.replace("type: generator", "type: flie")),
        ("a sink without inputs", ok.replace("    inputs: [gen]\n", "")),
        ("no sink", "sources:\n  gen:\n    type: generator\n".to_string()),
        ("an id that is not a plain name", ok.replace("  out:", "  \"o.ut\":")),
        ("a wrong type at the top", format!("{ok}shutdown_timeout: [1]\n")),
    ];
    for (what, config) in &bad {
        let (code, stderr) = validate(config);
        assert_eq!(code, 78, "the loader takes {what}:\n{config}\n{stderr}");
    }
    let mut configs: Vec<(String, String)> = bad.iter().map(|(w, c)| (w.to_string(), c.clone())).collect();
    configs.push(("the valid config they are made from".to_string(), ok.to_string()));
    let results = check(&configs);
    let (valid, invalid) = results.split_last().unwrap();
    assert_eq!(valid.1, None, "{}", ok);
    let accepted: Vec<&str> =
        invalid.iter().filter(|(_, why)| why.is_none()).map(|(n, _)| n.as_str()).collect();
    assert!(accepted.is_empty(), "the schema accepts {accepted:?}");
}

/// The schema reads as an editor needs it: `type` picks a component's
/// settings, and the docs are there.
#[test]
fn the_schema_describes_each_type_with_its_docs() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let sinks = &schema["properties"]["sinks"]["additionalProperties"]["oneOf"];
    let http = sinks
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["properties"]["type"]["const"] == "http")
        .expect("no http sink in the schema");
    assert_eq!(http["additionalProperties"], false);
    for key in ["url", "inputs", "batch", "buffer", "request", "dead_letter"] {
        assert!(http["properties"][key].is_object(), "no `{key}` in the http sink");
    }
    assert!(http["required"].as_array().unwrap().iter().any(|r| r == "url"));
    let timeout = &schema["properties"]["shutdown_timeout"];
    assert_eq!(timeout["default"], "30s", "{timeout}");
    assert!(timeout["description"].as_str().unwrap().contains("SIGTERM"), "{timeout}");
}

/// A reader that stops early (`hostwatch schema | head`) ends the command
/// quietly, as it ends `cat`: no panic about a closed stdout. The schema
/// is larger than a pipe holds, so the agent is still writing when the
/// reader goes.
#[test]
fn printing_to_a_reader_that_stops_early_is_not_a_panic() {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reading end is closed here, before the rest is written.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
