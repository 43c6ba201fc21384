//! `hostwatch validate` and broken configs: exit 78 with every error, each
//! with its line and column.

mod common;

use std::path::Path;

use common::{validate, validate_file};

#[test]
fn the_example_config_is_valid() {
    let (code, stderr) =
        validate_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.yaml.example").as_path());
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_packaged_default_config_is_valid() {
    let (code, stderr) = validate_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/agent.yaml"));
    assert_eq!(code, 0, "{stderr}");
}

/// Every component's example (what `hostwatch example TYPE` prints) is a
/// valid config, given something to read from.
#[test]
fn every_component_example_is_valid() {
    let out = std::process::Command::new(common::BIN).arg("example").output().unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let types: Vec<(String, String)> = listing
        .lines()
        .skip(1)
        .flat_map(|l| {
            let mut words = l.split_whitespace();
            let kind = words.next().unwrap().trim_end_matches('s').to_string();
            words.map(|t| (kind.clone(), t.trim_end_matches(',').to_string())).collect::<Vec<_>>()
        })
        .collect();
    assert!(types.len() >= 6, "{listing}");
    for (kind, ty) in types {
        let out = std::process::Command::new(common::BIN).args(["example", &kind, &ty]).output().unwrap();
        assert!(out.status.success(), "example {kind} {ty}");
        let example = String::from_utf8(out.stdout).unwrap();
        let id = example
            .lines()
            .find(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
            .map(|l| l.trim().trim_end_matches(':').to_string())
            .unwrap_or_else(|| panic!("no component id in the example of {ty}"));
        let config = if example.contains("\nsources:") || example.starts_with("sources:") {
            format!("{example}\nsinks:\n  check:\n    type: console\n    inputs: [{id}]\n")
        } else if example.contains("\ntransforms:") {
            // A route is read by its branches.
            let output =
                if example.contains("type: route") { format!("{id}._unmatched") } else { id.clone() };
            format!(
                "{example}\nsources:\n  upstream:\n    type: generator\nsinks:\n  check:\n    type: console\n    inputs: [{output}]\n"
            )
        } else {
            format!("{example}\nsources:\n  upstream:\n    type: generator\n")
        };
        let (code, stderr) = validate(&config);
        assert_eq!(code, 0, "the example of `{ty}` does not validate:\n{stderr}\n{config}");
    }
}

#[test]
fn every_error_is_listed_with_its_line_and_column() {
    let config = "\
sources:
  gen:
    type: generator
    rate: 10
    colour: blue
transforms:
  a:
    type: sample
    inputs: [b]
    rate: 0.5
  b:
    type: sample
    inputs: [a, gen]
    rate: 0.5
sinks:
  out:
    type: http
    inputs: [gen, missing]
    url: http://127.0.0.1:1/
    batch:
      timeout: 10 parsecs
";
    let (code, stderr) = validate(config);
    assert_eq!(code, 78, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("agent.yaml:5:5: error: sources.gen: unknown field `colour`"), "{stderr}");
    assert!(has("agent.yaml:7:3: error: transforms.a: the inputs form a cycle: a -> b -> a"), "{stderr}");
    assert!(has("agent.yaml:18:19: error: sinks.out.inputs: unknown input `missing`"), "{stderr}");
    assert!(
        has("agent.yaml:21:16: error: sinks.out.batch.timeout: invalid duration `10 parsecs`"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_broken_config_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, "sources:\n  x:\n    type: generator\n    rate: [1\n").unwrap();
    let out = std::process::Command::new(common::BIN).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.yaml:") && stderr.contains("invalid YAML"), "{stderr}");
}

#[test]
fn a_sink_without_inputs_is_an_error_and_a_source_feeding_nothing_a_warning() {
    let (code, stderr) = validate(
        "sources:\n  a:\n    type: generator\n  b:\n    type: generator\nsinks:\n  out:\n    type: console\n    inputs: [a]\n  idle:\n    type: console\n",
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("agent.yaml:10:3: error: sinks.idle: `inputs` is missing or empty"), "{stderr}");
    assert!(
        stderr.contains("agent.yaml:4:3: warning: sources.b: no transform or sink reads from this source"),
        "{stderr}"
    );

    let (code, stderr) = validate(
        "sources:\n  a:\n    type: generator\n  b:\n    type: generator\nsinks:\n  out:\n    type: console\n    inputs: [a]\n",
    );
    assert_eq!(code, 0, "a warning alone does not fail: {stderr}");
    assert!(stderr.contains("warning: sources.b"), "{stderr}");
}

#[test]
fn duplicate_ids_and_environment_variables() {
    let (code, stderr) =
        validate("sources:\n  x:\n    type: generator\nsinks:\n  x:\n    type: console\n    inputs: [x]\n");
    assert_eq!(code, 78);
    assert!(stderr.contains("agent.yaml:5:3: error: sinks.x: duplicate component id `x`"), "{stderr}");

    let (code, stderr) =
        validate("sources:\n  x:\n    type: ingest\n    address: ${HOSTWATCH_TEST_SURELY_UNSET}\n");
    assert_eq!(code, 78);
    assert!(
        stderr.contains(
            "agent.yaml:4:14: error: environment variable `HOSTWATCH_TEST_SURELY_UNSET` is not set"
        ),
        "{stderr}"
    );
    let (code, stderr) = validate(
        "sources:\n  x:\n    type: ingest\n    address: ${HOSTWATCH_TEST_SURELY_UNSET:-127.0.0.1:9}\nsinks:\n  o:\n    type: console\n    inputs: [x]\n",
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn build_checks_point_at_the_setting() {
    let (code, stderr) = validate(
        "sources:\n  x:\n    type: generator\nsinks:\n  o:\n    type: http\n    inputs: [x]\n    url: ftp://example.com\n    tls:\n      ca_file: /nonexistent/ca.pem\n",
    );
    assert_eq!(code, 78);
    assert!(
        stderr.contains("agent.yaml:8:10: error: sinks.o: `url` must start with http:// or https://"),
        "{stderr}"
    );
}

/// `file` is a source and a sink: each example can be printed, and the
/// type alone shows both.
#[test]
fn a_type_name_shared_by_a_source_and_a_sink() {
    let example = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN).arg("example").args(args).output().unwrap();
        assert!(out.status.success(), "example {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let source = example(&["source", "file"]);
    let sink = example(&["sink", "file"]);
    assert!(source.contains("\nsources:\n") && !source.contains("\nsinks:\n"), "{source}");
    assert!(sink.contains("\nsinks:\n") && !sink.contains("\nsources:\n"), "{sink}");
    let both = example(&["file"]);
    assert!(both.contains(&source) && both.contains(&sink), "{both}");
    assert!(both.contains("hostwatch example source file") && both.contains("hostwatch example sink file"));
    assert_eq!(example(&["sinks", "http"]), example(&["http"]));
    let out = std::process::Command::new(common::BIN).args(["example", "source", "http"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn version_and_unknown_example() {
    let out = std::process::Command::new(common::BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hostwatch "));
    let out = std::process::Command::new(common::BIN).args(["example", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// A config that can do nothing (empty, or no sink) is refused.
#[test]
fn a_config_without_sinks_is_refused() {
    for config in ["", "# nothing yet\n", "sources:\n  gen:\n    type: generator\n"] {
        let (code, stderr) = validate(config);
        assert_eq!(code, 78, "{config:?}: {stderr}");
        assert!(stderr.contains("error: sinks:"), "{config:?}: {stderr}");
    }
}

/// Several bad values in one mapping are all listed, each where it is.
#[test]
fn every_bad_value_of_a_mapping_is_listed() {
    let config = "\
sources:
  gen:
    type: generator
sinks:
  out:
    type: http
    inputs: [gen]
    url: http://127.0.0.1:1/
    encoding: xml
    compression: rar
    batch: {max_events: many, timeout: 10 parsecs}
";
    let (code, stderr) = validate(config);
    assert_eq!(code, 78, "{stderr}");
    for needle in [
        "agent.yaml:9:15: error: sinks.out.encoding: unknown variant `xml`",
        "agent.yaml:10:18: error: sinks.out.compression: unknown variant `rar`",
        "agent.yaml:11:25: error: sinks.out.batch.max_events:",
        "agent.yaml:11:40: error: sinks.out.batch.timeout: invalid duration `10 parsecs`",
    ] {
        assert!(stderr.lines().any(|l| l.contains(needle)), "no `{needle}` in\n{stderr}");
    }
}

/// A data_dir that cannot be made is refused by validate and by run with
/// 78, even as root (/proc refuses everyone).
#[test]
fn a_data_dir_that_cannot_be_made_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "data_dir: /proc/hostwatch-test\nsources:\n  gen:\n    type: generator\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n",
    )
    .unwrap();
    let (code, stderr) = validate_file(&path);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("data_dir /proc/hostwatch-test is not writable: it cannot be created"),
        "{stderr}"
    );
    let out = std::process::Command::new(common::BIN).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    // What validate makes to try, it removes.
    let (code, stderr) = validate(
        &std::fs::read_to_string(&path)
            .unwrap()
            .replace("/proc/hostwatch-test", dir.path().join("a/b").to_str().unwrap()),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!dir.path().join("a").exists());
}

/// `warning` is a level (not a module name that silences everything); a
/// word that is no level is refused.
#[test]
fn log_level_warning_logs_warnings() {
    let config = |level: &str| {
        format!(
            "log: {{level: {level}}}\nsources:\n  gen:\n    type: generator\n    rate: 1\n  lonely:\n    type: generator\n    rate: 1\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n"
        )
    };
    let (code, stderr) = validate(&config("verbose"));
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("agent.yaml:1:14: error: log.level: unknown log level `verbose`"), "{stderr}");
    let (code, stderr) = validate(&config("warning"));
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.yaml"), config("info")).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["validate", "--config"])
        .arg(dir.path().join("agent.yaml"))
        .env("HOSTWATCH_LOG", "verbose")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("$HOSTWATCH_LOG: unknown log level `verbose`"), "{stderr}");

    // The same, from the config and from $HOSTWATCH_LOG: the warning that
    // `lonely` feeds nothing is logged, the info lines are not.
    for (level, env) in [("warning", None), ("info", Some("warning"))] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            config(level).replace("log:", &format!("data_dir: {}\nlog:", dir.path().display())),
        )
        .unwrap();
        let log = dir.path().join("agent.log");
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["run", "--config"]).arg(&path).stdout(std::process::Stdio::null());
        cmd.stderr(std::fs::File::create(&log).unwrap()).env_remove("HOSTWATCH_LOG");
        if let Some(env) = env {
            cmd.env("HOSTWATCH_LOG", env);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("sources.lonely") || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(text.contains("WARN") && text.contains("sources.lonely"), "{level} {env:?}:\n{text}");
        assert!(!text.contains("INFO"), "{level} {env:?}:\n{text}");
    }
}
