//! The JSON Schema of the config file (`hostwatch schema`), for editors
//! (yaml-language-server) and for the reference (docs/reference.md).
//!
//! Most of it is derived (`schemars::JsonSchema`) from the same `Config`
//! types the loader deserializes, so that their `///` docs become the
//! descriptions and `deny_unknown_fields` becomes `additionalProperties:
//! false`. Here are the parts the derive cannot know: what the loader's own
//! types accept (a duration is a string with a unit, a size a number or a
//! string with a unit, a `Spanned<T>` is written as a plain `T`), how the
//! `sources`, `transforms` and `sinks` sections are laid out (a map of ids to
//! settings whose `type` picks the rest, plus `inputs` and the settings every
//! sink has), and the defaults, taken from the docs' `Default: ...`.
//!
//! It is a little stricter than the loader where YAML's typing is loose: the
//! loader takes `hostname: 123` as the string `"123"`, the schema asks for
//! a string.

use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value};

use super::units::{ByteSize, Duration};
use super::yaml::Spanned;

/// The units `humantime` reads, longest first so that the pattern does not
/// stop at a prefix (`ms` before `m`).
const DURATION_PATTERN: &str = "^\\s*([0-9]+\\s*(nanos|nsec|ns|micros|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)\\s*)+$";

/// The units `ByteSize::parse` reads.
const SIZE_PATTERN: &str = "^\\s*[0-9][0-9.]*\\s*(B|KiB|K|k|MiB|M|GiB|G|TiB|T|KB|kB|MB|GB|TB)?\\s*$";

/// What ids of components may be made of (see `config::components`).
const ID_PATTERN: &str = "^[A-Za-z0-9_-]+$";

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration with its unit: `250ms`, `10s`, `5m`, `1h`, `1h30m`.",
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: `512`, `64KiB`, `1MiB`, `1GiB` (`KB`, `MB`, `GB` are powers of 1000).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": SIZE_PATTERN },
            ],
        })
    }
}

/// A `Spanned<T>` is written as its `T`: the position comes from the file.
impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// `sources:`, `transforms:` or `sinks:`: a map of ids to the settings of
/// one component. `T` is the kind's enum of settings by type, one variant
/// per `type` named as it (for sinks, the struct of the settings every sink
/// has, with that enum flattened in); `INPUTS` says whether the kind reads
/// from others.
pub struct Components<T, const INPUTS: bool>(PhantomData<T>);

impl<T: JsonSchema, const INPUTS: bool> JsonSchema for Components<T, INPUTS> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Components_of_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut kind = T::json_schema(generator);
        let (variants, inlined) = variants(&mut kind, INPUTS, generator.definitions());
        // Each type's settings are written out in its variant: their
        // definitions would only be noise.
        for name in inlined {
            generator.definitions_mut().remove(&name);
        }
        let mut component = json_schema!({ "type": "object" });
        component.insert("oneOf".to_string(), Value::Array(variants));
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": ID_PATTERN },
            "additionalProperties": component,
        })
    }
}

/// The types of a kind, each a closed mapping of all it may hold: its
/// `type`, its own settings, `inputs` and the settings shared by the kind.
/// They are written out in full rather than combined (`allOf`) so that
/// an editor completes and checks each type's keys on their own. Also
/// returns the definitions written out.
///
/// The enum comes externally tagged (`{remap: {...settings}}`), which
/// keeps a type's own setting named `type` (remap's new event type, which
/// the loader reads from a second `type` key, the first naming the
/// component's type): its doc goes to the `type` key.
fn variants(kind: &mut Schema, inputs: bool, definitions: &Map<String, Value>) -> (Vec<Value>, Vec<String>) {
    let shared = match kind.remove("properties") {
        Some(Value::Object(shared)) => shared,
        _ => Map::new(),
    };
    // A flattened enum may come nested in an `allOf`.
    let mut one_of = kind.remove("oneOf");
    if one_of.is_none()
        && let Some(Value::Array(all)) = kind.get_mut("allOf")
    {
        one_of = all.iter_mut().find_map(|s| s.as_object_mut()?.remove("oneOf"));
    }
    let Some(Value::Array(tagged)) = one_of else { return (Vec::new(), Vec::new()) };
    let mut variants = Vec::new();
    let mut inlined = Vec::new();
    for variant in tagged {
        let Some(Value::Object(outer)) = variant.get("properties") else { continue };
        let Some((name, settings)) = outer.iter().next() else { continue };
        let settings = match settings.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let def = r.rsplit('/').next().unwrap_or(r).to_string();
                let Some(found) = definitions.get(&def) else { continue };
                inlined.push(def);
                found.clone()
            }
            None => settings.clone(),
        };
        let Value::Object(mut v) = settings else { continue };
        let mut properties = match v.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        let mut tag = serde_json::json!({ "type": "string", "const": name });
        if let Some(own) = properties.remove("type").as_ref().and_then(|t| t.get("description")) {
            tag["description"] =
                format!("A second `type` key is this type's own setting: {}", own.as_str().unwrap_or(""))
                    .into();
        }
        properties.insert("type".to_string(), tag);
        if inputs {
            properties.insert(
                "inputs".to_string(),
                serde_json::json!({
                    "description": "The ids of the components it reads from; `id.name` reads the \
                                    output `name` of a transform that has several. Required.",
                    "type": "array",
                    "items": { "type": "string" },
                    "minItems": 1,
                }),
            );
        }
        for (key, value) in &shared {
            properties.insert(key.clone(), value.clone());
        }
        let mut required = match v.remove("required") {
            Some(Value::Array(r)) => r,
            _ => Vec::new(),
        };
        required.retain(|r| r != "type");
        required.insert(0, "type".into());
        if inputs {
            required.push("inputs".into());
        }
        v.insert("properties".to_string(), Value::Object(properties));
        v.insert("required".to_string(), Value::Array(required));
        // Every component's settings deny unknown keys; the mark now
        // covers the shared settings too.
        v.remove("unevaluatedProperties");
        v.insert("additionalProperties".to_string(), false.into());
        variants.push(Value::Object(v));
    }
    (variants, inlined)
}

/// The root `Config`'s transform: the loader fills in every top-level key
/// that is left out, but refuses a config without a sink.
pub fn root(schema: &mut Schema) {
    schema.insert("required".to_string(), serde_json::json!(["sinks"]));
    if let Some(sinks) = schema.pointer_mut("/properties/sinks").and_then(Value::as_object_mut) {
        sinks.insert("minProperties".to_string(), 1.into());
    }
}

/// The schema of `T` (the root `Config`) in JSON Schema draft 7, the
/// version editors read best, with `default` wherever a doc names one as
/// a single value (`Default: `30s`.`).
pub fn generate<T: JsonSchema>() -> Schema {
    let mut schema = SchemaSettings::draft07().into_generator().into_root_schema_for::<T>();
    if let Some(obj) = schema.as_object_mut() {
        let mut value = Value::Object(std::mem::take(obj));
        add_defaults(&mut value);
        if let Value::Object(filled) = value {
            *obj = filled;
        }
    }
    schema
}

fn add_defaults(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if !obj.contains_key("default")
                && let Some(Value::String(doc)) = obj.get("description")
                && let (_, Some(default)) = split_default(doc)
                && let Some(v) = literal(&default)
            {
                obj.insert("default".to_string(), v);
            }
            obj.values_mut().for_each(add_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(add_defaults),
        _ => {}
    }
}

/// A default written as one quoted value (`` `30s` ``, `` `true` ``), as
/// the YAML it stands for; `None` for prose (`the kernel's host name`).
fn literal(default: &str) -> Option<Value> {
    let inner = default.strip_prefix('`')?.strip_suffix('`')?;
    if inner.contains('`') || inner.starts_with(['{', '[']) {
        return None;
    }
    Some(match inner {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match inner.parse::<i64>() {
            Ok(n) => n.into(),
            Err(_) => match inner.parse::<f64>() {
                Ok(f) if f.is_finite() => f.into(),
                _ => inner.into(),
            },
        },
    })
}

/// A setting's doc without its default, and the default as written
/// (`Default: ...` up to the end of its sentence; `required` for
/// `Required.`).
pub fn split_default(doc: &str) -> (String, Option<String>) {
    // The lines of a paragraph as one, so that `Default:` may end a line.
    let paragraphs: Vec<String> = doc
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let doc = paragraphs.join("\n\n");
    let doc = doc.as_str();
    if let Some(at) = doc.rfind("Default: ") {
        let rest = &doc[at + "Default: ".len()..];
        // The default runs to the end of its sentence: a `.` followed by a
        // space or the end, outside backquotes and parentheses.
        let (mut quoted, mut paren) = (false, 0);
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '`' => quoted = !quoted,
                '(' if !quoted => paren += 1,
                ')' if !quoted => paren -= 1,
                '.' if !quoted
                    && paren == 0
                    && (i + 1 == rest.len() || rest[i + 1..].starts_with([' ', '\n'])) =>
                {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let default = rest[..end].trim().to_string();
        let after = rest.get(end + 1..).unwrap_or("").trim();
        return (format!("{} {}", doc[..at].trim(), after).trim().to_string(), Some(default));
    }
    if let Some(at) = doc.rfind("Required.") {
        let text = format!("{} {}", doc[..at].trim(), doc[at + "Required.".len()..].trim());
        return (text.trim().to_string(), Some("required".to_string()));
    }
    (doc.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_split_from_the_doc() {
        let (text, default) = split_default("How long to wait. Default: `30s` (or `1m`). More.");
        assert_eq!((text.as_str(), default.as_deref()), ("How long to wait. More.", Some("`30s` (or `1m`)")));
        assert_eq!(split_default("Where. Required.").1.as_deref(), Some("required"));
        assert_eq!(split_default("Nothing said.").1, None);
        assert_eq!(literal("`30s`"), Some(Value::from("30s")));
        assert_eq!(literal("`1000`"), Some(Value::from(1000)));
        assert_eq!(literal("`false`"), Some(Value::from(false)));
        assert_eq!(literal("the kernel's host name"), None);
        assert_eq!(literal("`{level: info}`"), None);
    }

    #[test]
    fn units_match_what_the_loader_reads() {
        let duration = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["250ms", "10s", "5m", "1h30m", "1h 30m", "2days"] {
            assert!(duration.is_match(ok), "{ok}");
            assert!(Duration::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["10", "10x", "", "s"] {
            assert!(!duration.is_match(bad), "{bad}");
        }
        let size = regex::Regex::new(SIZE_PATTERN).unwrap();
        for ok in ["512", "64KiB", "1.5GiB", "10MB", "1 MiB"] {
            assert!(size.is_match(ok), "{ok}");
            assert!(ByteSize::parse(ok).is_ok(), "{ok}");
        }
        assert!(!size.is_match("1 parsec"));
    }
}
