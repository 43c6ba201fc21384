//! The config's JSON Schema (`hostwatch schema`) and the configuration
//! reference made from it (`hostwatch reference`, committed as
//! docs/reference.md): every setting of the agent and of each component
//! type, with its type, default and doc, then the type's example file (the
//! one `hostwatch example TYPE` prints). The docs cannot drift from the
//! code: the schema is derived from the `Config` types the loader reads and
//! their `///` docs, and a test compares the committed file with this.

use std::fmt::Write as _;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::config::schema::split_default;

/// The JSON Schema of the config file.
pub fn schema() -> Schema {
    let mut schema = crate::config::schema::generate::<crate::topology::config::Config>();
    schema.insert("title".to_string(), "hostwatch agent configuration".into());
    schema
}

/// What a field without a doc gets; the reference test looks for it.
const UNDOCUMENTED: &str = "**undocumented**";
/// What a type this cannot describe gets; the reference test looks for it.
const UNKNOWN_TYPE: &str = "**type not found:**";
/// What an optional field whose doc does not say `Default: ...` gets.
const NO_DEFAULT: &str = "**default not documented**";

/// Each type of a kind with its example file.
type Types = &'static [(&'static str, &'static str)];

/// The kinds of components: title, section key, the types with their examples.
const KINDS: [(&str, &str, Types); 3] = [
    ("Sources", "sources", crate::sources::TYPES),
    ("Transforms", "transforms", crate::transforms::TYPES),
    ("Sinks", "sinks", crate::sinks::TYPES),
];

/// The configuration reference, in markdown.
pub fn render() -> String {
    let schema = schema();
    let root = schema.as_value();
    let empty = Map::new();
    let defs = root.get("definitions").and_then(Value::as_object).unwrap_or(&empty);
    let doc = Doc { defs };

    let mut out = String::new();
    out.push_str(
        "# hostwatch configuration reference\n\n\
         Every setting of the agent and of each component type: its type, its default and what it\n\
         does, then the component's documented example (what `hostwatch example TYPE` prints).\n\
         Durations are written `250ms`, `10s`, `5m`; sizes `64KiB`, `1MiB`, `1GiB`. `${NAME}` and\n\
         `${NAME:-default}` in a value are taken from the environment.\n\n\
         This file is generated from the config's JSON Schema (`hostwatch schema`, made from the\n\
         code's `///` docs) and the example files by `hostwatch reference`; do not edit it: change\n\
         the `///` comments or the example files and run\n\
         `cargo run -q -- reference > docs/reference.md`.\n\n",
    );
    out.push_str("## Contents\n\n- [The agent](#the-agent)\n");
    for (title, key, types) in KINDS {
        let names: Vec<String> = types.iter().map(|(n, _)| format!("[`{n}`](#{key}-{n})")).collect();
        let _ = writeln!(out, "- [{title}](#{key}): {}", names.join(", "));
    }
    out.push('\n');

    out.push_str("## The agent\n\nThe top level of the config file.\n\n");
    out.push_str(HEADER);
    for (title, key, _) in KINDS {
        let default = if key == "sinks" { "required (at least one)" } else { "none" };
        let kind = key.trim_end_matches('s');
        let _ =
            writeln!(out, "| `{key}` | map of {kind} | {default} | The {key}, by id: [{title}](#{key}). |");
    }
    doc.rows(&mut out, root, "", 0, &["sources", "transforms", "sinks"]);
    out.push('\n');

    // A name that is both a source and a sink type (`file`) is printed with
    // its kind: `hostwatch example sink file`.
    let shared_name =
        |name: &str| KINDS.iter().filter(|(_, _, types)| types.iter().any(|(n, _)| *n == name)).count() > 1;
    let shared_settings = shared_sink_settings();

    for (title, key, types) in KINDS {
        let _ = writeln!(out, "## {title}\n");
        let (intro, what) = match key {
            "sources" => ("A source produces events. Each is declared under `sources:` by its id.", "source"),
            "transforms" => (
                "A transform takes events and gives zero or more events. Each is declared under \
                 `transforms:` by its id.",
                "transform",
            ),
            _ => (
                "A sink delivers events somewhere outside. Each is declared under `sinks:` by its \
                 id. Batching, buffering and retries are shared by every sink type.",
                "sink",
            ),
        };
        let _ = writeln!(out, "{intro}\n");
        let variants = root
            .pointer(&format!("/properties/{key}/additionalProperties/oneOf"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let variant = |name: &str| {
            variants
                .iter()
                .find(|v| v.pointer("/properties/type/const").and_then(Value::as_str) == Some(name))
        };
        let mut skip = vec!["type", "inputs"];
        if key == "sinks" {
            skip.extend(shared_settings.iter().map(String::as_str));
            out.push_str("### Settings of every sink\n\n");
            out.push_str(HEADER);
            if let Some(first) = types.first().and_then(|(n, _)| variant(n)) {
                let only: Vec<&str> =
                    object_keys(first).filter(|k| !shared_settings.iter().any(|s| s == k)).collect();
                doc.rows(&mut out, first, "", 0, &only);
            }
            out.push('\n');
        }
        for (name, example) in types {
            let _ = writeln!(out, "### {key}: `{name}`\n");
            out.push_str(HEADER);
            let _ = writeln!(out, "| `type` | string | required | The {what} type, one of those below. |");
            match variant(name) {
                Some(v) => {
                    // A type's own setting named `type`, read from a second `type` key.
                    let own = v.pointer("/properties/type/description").and_then(Value::as_str);
                    if let Some((_, doc)) = own.and_then(|d| d.split_once(": ")) {
                        let (text, default) = split_default(doc);
                        let default = default.unwrap_or_else(|| NO_DEFAULT.to_string());
                        let _ = writeln!(
                            out,
                            "| `type` (again) | string | {} | {} |",
                            cell(&default),
                            cell(&text)
                        );
                    }
                    if key != "sources" {
                        let not_inputs: Vec<&str> = object_keys(v).filter(|k| *k != "inputs").collect();
                        doc.rows(&mut out, v, "", 0, &not_inputs);
                    }
                    doc.rows(&mut out, v, "", 0, &skip);
                }
                None => {
                    let _ = writeln!(out, "| | {UNKNOWN_TYPE} `{name}` | | |");
                }
            }
            out.push('\n');
            let command = match shared_name(name) {
                true => format!("hostwatch example {what} {name}"),
                false => format!("hostwatch example {name}"),
            };
            let _ = writeln!(out, "Example (`{command}`):\n\n```yaml\n{}\n```\n", example.trim_end());
        }
    }
    out.trim_end().to_string() + "\n"
}

const HEADER: &str = "| option | type | default | description |\n|---|---|---|---|\n";

/// The keys every sink has (`batch`, `buffer` ...), whatever its type.
fn shared_sink_settings() -> Vec<String> {
    let schema = crate::sinks::SinkConfig::json_schema(&mut SchemaGenerator::default());
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn object_keys(object: &Value) -> impl Iterator<Item = &str> {
    object.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.keys().map(String::as_str))
}

/// Reads the schema's definitions.
struct Doc<'a> {
    defs: &'a Map<String, Value>,
}

impl<'a> Doc<'a> {
    /// The schema a `$ref` (or an `allOf` of one, draft 7's way of giving
    /// a `$ref` a description) points to, and the name of its definition.
    fn resolve(&self, mut s: &'a Value) -> (&'a Value, Option<&'a str>) {
        let mut name = None;
        for _ in 0..8 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                let Some(n) = r.strip_prefix("#/definitions/") else { break };
                let Some(def) = self.defs.get(n) else { break };
                name = Some(n);
                s = def;
            } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                s = one;
            } else {
                break;
            }
        }
        (s, name)
    }

    /// How a setting's type reads in the table, and the object whose
    /// settings get rows of their own, with the separator their names take
    /// (`.` or `[].`).
    fn describe(&self, s: &'a Value) -> (String, Option<(&'a Value, &'static str)>) {
        let (s, name) = self.resolve(s);
        match name {
            Some("Duration") => return ("duration".to_string(), None),
            Some("ByteSize") => return ("size".to_string(), None),
            _ => {}
        }
        if let Some(alternatives) = s.get("anyOf").or_else(|| s.get("oneOf")).and_then(Value::as_array) {
            let mut nested = None;
            let mut texts = Vec::new();
            for a in alternatives.iter().filter(|a| !is_null(a)) {
                let text = match self.tagged(a) {
                    Some(text) => text,
                    None => {
                        let (text, n) = self.describe(a);
                        nested = nested.or(n);
                        text
                    }
                };
                if !texts.contains(&text) {
                    texts.push(text);
                }
            }
            let consts = texts.iter().all(|t| t.starts_with('`'));
            return (texts.join(if consts { ", " } else { " or " }), nested);
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            let names: Vec<String> = values.iter().filter(|v| !v.is_null()).map(literal).collect();
            return (names.join(", "), None);
        }
        if let Some(c) = s.get("const") {
            return (literal(c), None);
        }
        let ty = match s.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(ts)) => {
                ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null")
            }
            _ => "",
        };
        match ty {
            "string" => ("string".to_string(), None),
            "integer" => ("integer".to_string(), None),
            "number" => ("number".to_string(), None),
            "boolean" => ("bool".to_string(), None),
            "array" => {
                let (text, nested) = s.get("items").map(|i| self.describe(i)).unwrap_or_default();
                (format!("list of {text}"), nested.map(|(n, _)| (n, "[].")))
            }
            "object" if s.get("properties").is_some() => ("object".to_string(), Some((s, "."))),
            "object" => match s.get("additionalProperties") {
                Some(v @ Value::Object(_)) => (format!("map of {}", self.describe(v).0), None),
                _ => ("object".to_string(), None),
            },
            _ => (format!("{UNKNOWN_TYPE} `{}`", name.unwrap_or("?")), None),
        }
    }

    /// A variant of an externally tagged enum, written inline (a struct is
    /// a `$ref`): `` `{bearer: string}` ``, `` `{basic: {user, password}}` ``.
    fn tagged(&self, variant: &'a Value) -> Option<String> {
        if variant.get("$ref").is_some() || variant.get("required").is_none() {
            return None;
        }
        let properties = variant.get("properties").and_then(Value::as_object)?;
        let [(key, value)] = properties.iter().collect::<Vec<_>>()[..] else { return None };
        let (inner, _) = self.resolve(value);
        let text = match inner.get("properties").and_then(Value::as_object) {
            Some(fields) => {
                format!("{{{}}}", fields.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
            }
            None => self.describe(value).0,
        };
        Some(format!("`{{{key}: {text}}}`"))
    }

    /// One row per setting of `object` (but those in `skip`), and rows for
    /// the settings nested in them.
    fn rows(&self, out: &mut String, object: &'a Value, prefix: &str, level: usize, skip: &[&str]) {
        let (object, _) = self.resolve(object);
        let Some(properties) = object.get("properties").and_then(Value::as_object) else { return };
        let required: Vec<&str> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, property) in properties {
            if skip.contains(&name.as_str()) {
                continue;
            }
            let doc = property.get("description").and_then(Value::as_str).unwrap_or("");
            let (text, default) = split_default(doc);
            let default = default.unwrap_or_else(|| {
                if doc.is_empty() {
                    UNDOCUMENTED.to_string()
                } else if required.contains(&name.as_str()) {
                    "required".to_string()
                } else {
                    NO_DEFAULT.to_string()
                }
            });
            let (ty, nested) = self.describe(property);
            let _ =
                writeln!(out, "| `{prefix}{name}` | {} | {} | {} |", cell(&ty), cell(&default), cell(&text));
            // Bounded: settings nest a few levels at most.
            if let Some((nested, sep)) = nested
                && level < 4
            {
                self.rows(out, nested, &format!("{prefix}{name}{sep}"), level + 1, &[]);
            }
        }
    }
}

fn is_null(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("null")
}

/// A value as the YAML says it: `` `json` ``.
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

/// Markdown table cell: paragraphs become `<br>`, lines join.
fn cell(s: &str) -> String {
    let paragraphs: Vec<String> = s
        .split("\n\n")
        .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    unlink(&paragraphs.join("<br>")).replace('|', "\\|")
}

/// Rustdoc's intra-doc links (`` [`tail`] ``) point nowhere in the
/// reference: they keep their text.
fn unlink(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("[`") {
        let Some(close) = rest[at..].find("`]").map(|c| c + at) else { break };
        let after = &rest[close + 2..];
        out.push_str(&rest[..at]);
        if after.starts_with('(') || after.starts_with('[') {
            // A real markdown link: kept whole.
            out.push_str(&rest[at..close + 2]);
        } else {
            out.push_str(&rest[at + 1..close + 1]);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}
