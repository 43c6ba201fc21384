//! Tests of the YAML tree, its parser, interpolation and deserializer.

use super::*;
use serde::Deserialize;

fn no_env(_: &str) -> Option<String> {
    None
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Inner {
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Outer {
    name: Spanned<String>,
    inner: Inner,
    ratio: Option<f64>,
}

#[test]
fn errors_point_at_the_innermost_node() {
    let text = "name: a\ninner:\n  port: 70000\n";
    let node = parse(text, &no_env).unwrap();
    let err = from_node::<Outer>(&node).unwrap_err();
    assert_eq!(err.pos, Some(Pos { line: 3, col: 9 }));
    assert_eq!(err.path, vec!["inner", "port"]);
    assert!(err.message.contains("70000"), "{}", err.message);
}

#[test]
fn unknown_keys_point_at_the_key() {
    let text = "name: a\ninner:\n  port: 80\n  prot: 1\n";
    let node = parse(text, &no_env).unwrap();
    let err = from_node::<Outer>(&node).unwrap_err();
    assert_eq!(err.pos, Some(Pos { line: 4, col: 3 }));
    assert!(err.message.contains("unknown field `prot`"), "{}", err.message);
}

#[test]
fn missing_field_points_at_the_mapping() {
    let text = "name: a\ninner:\n  tags: [x]\n";
    let node = parse(text, &no_env).unwrap();
    let err = from_node::<Outer>(&node).unwrap_err();
    assert_eq!(err.pos, Some(Pos { line: 3, col: 3 }));
    assert!(err.message.contains("missing field `port`"));
}

#[test]
fn spanned_records_position() {
    let node = parse("name:   hello\ninner: {port: 1}\nratio: 0.5\n", &no_env).unwrap();
    let v: Outer = from_node(&node).unwrap();
    assert_eq!(v.name.pos, Pos { line: 1, col: 9 });
    assert_eq!(v.name.value, "hello");
    assert_eq!(v.ratio, Some(0.5));
}

#[test]
fn syntax_errors_have_positions() {
    let errs = parse("a: [1, 2\nb: c\n", &no_env).unwrap_err();
    assert!(errs[0].pos.is_some());
    assert!(errs[0].message.starts_with("invalid YAML"));
}

#[test]
fn interpolation() {
    let env = |k: &str| match k {
        "PORT" => Some("8080".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    assert_eq!(interpolate("x${PORT}y", &env).unwrap(), "x8080y");
    assert_eq!(interpolate("${NOPE:-9}", &env).unwrap(), "9");
    assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
    assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
    assert_eq!(interpolate("$$HOME and $x", &env).unwrap(), "$HOME and $x");
    assert!(interpolate("${NOPE}", &env).unwrap_err().contains("`NOPE` is not set"));
    assert!(interpolate("${1A}", &env).is_err());
    assert!(interpolate("${OPEN", &env).is_err());
}

#[test]
fn secrets_from_files_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-from-file\n").unwrap();
    let token = dir.path().join("token");
    let creds = dir.path().to_str().unwrap().to_string();
    let env = move |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| creds.clone());
    let text = format!("Bearer ${{file:{}}}", token.display());
    assert_eq!(interpolate(&text, &env).unwrap(), "Bearer tok-from-file");
    assert_eq!(interpolate("${credential:token}", &env).unwrap(), "tok-from-file");
    // What a file holds is a secret from then on.
    assert_eq!(crate::util::redact::scrub("got tok-from-file"), "got [redacted]");

    let missing = interpolate("${file:/nonexistent/secret}", &env).unwrap_err();
    assert!(missing.contains("cannot read /nonexistent/secret"), "{missing}");
    assert!(interpolate("${file:relative/path}", &env).unwrap_err().contains("must be absolute"));
    assert!(interpolate("${credential:../token}", &env).unwrap_err().contains("without `/`"));
    let unset = interpolate("${credential:token}", &no_env).unwrap_err();
    assert!(unset.contains("$CREDENTIALS_DIRECTORY is not set"), "{unset}");
}

#[test]
fn a_file_that_cannot_be_read_is_an_error_at_its_position() {
    let errs = parse("a: 1\nb: \"${file:/nonexistent/x}\"\n", &no_env).unwrap_err();
    assert_eq!(errs[0].pos, Some(Pos { line: 2, col: 4 }));
}

#[test]
fn variables_named_like_secrets_are_remembered() {
    let env = |k: &str| Some(format!("value-of-{k}"));
    interpolate("${OPS_API_TOKEN} ${PLAIN_SETTING}", &env).unwrap();
    assert_eq!(
        crate::util::redact::scrub("value-of-OPS_API_TOKEN value-of-PLAIN_SETTING"),
        "[redacted] value-of-PLAIN_SETTING"
    );
}

#[test]
fn substituted_plain_scalars_are_typed() {
    let env = |_: &str| Some("8080".to_string());
    let node = parse("name: n\ninner: {port: \"${P}\"}\n", &env).unwrap();
    let v: Outer = from_node(&node).unwrap();
    assert_eq!(v.inner.port, 8080);
}

#[test]
fn missing_variables_are_all_reported_with_positions() {
    let errs = parse("a: ${X}\nb: ${Y}\n# ${IN_A_COMMENT}\n", &no_env).unwrap_err();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[1].pos, Some(Pos { line: 2, col: 4 }));
}

#[test]
fn anchors_and_merge_keys() {
    let text = "base: &b {port: 1, tags: [a]}\nname: x\ninner:\n  <<: *b\n  port: 2\n";
    let node = parse(text, &no_env).unwrap();
    let Kind::Map(entries) = &node.kind else { panic!() };
    let inner = &entries[2].1;
    let v: Inner = from_node(inner).unwrap();
    assert_eq!(v.port, 2);
    assert_eq!(v.tags, vec!["a"]);
}
