//! `parse`: turns a text field (by default the log line, `data.message`)
//! into fields.
//!
//! Formats: `nginx_combined` and `apache_combined` (the same line), and
//! `apache_common`; `syslog` (RFC 5424 and RFC 3164, with or without the
//! priority); `json`; `logfmt`; `regex` with named captures. The access-log
//! formats give `client`, `user`, `time`, `method`, `path` (with its query),
//! `protocol`, `status` and `bytes` (integers), `referrer`, `user_agent`;
//! `user`, `referrer` and `user_agent` are null when logged as `-`, and
//! quoted fields lose their escapes (`\"`, `\x22`). Text fields are slices
//! of the original line, not copies.
//!
//! A line that does not parse is kept with `data.parse_error` saying why
//! (`on_error: keep`), or dropped (`on_error: drop`); both are counted.

use indexmap::IndexMap;
use regex::Regex;
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::path::FieldPath;
use crate::event::{Event, EventBatch, Map, Str, Value};
use crate::expr::EvalError;
use crate::pipeline::metrics::DropReason;
use crate::transforms::common::{OnError, Outputs};

use self::access_log::access_log;
use self::logfmt::logfmt;
use self::syslog::syslog;
use self::text::slice;
use self::time::TimeFormat;

// Field names, made once (each format's file makes its own).
macro_rules! keys {
    ($($name:ident = $text:literal),* $(,)?) => {
        $(static $name: Str = Str::from_static($text);)*
    };
}

// This file holds the settings and the per-event work; each format family
// has its own file below `parse/` (JSON and `regex` are a few lines here),
// beside the text and time helpers they share.
mod access_log;
mod logfmt;
mod syslog;
mod text;
mod time;

keys!(PARSE_ERROR = "parse_error");

/// `type: parse`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nginx_combined`, `apache_combined`, `apache_common`, `syslog`,
    /// `json`, `logfmt` or `regex`. Required.
    pub format: Format,
    /// The field to parse. Default: `data.message`.
    #[serde(default = "default_field")]
    pub field: Spanned<String>,
    /// Where the fields go: `data` (merged into it) or a field inside it
    /// (`data.parsed`). Default: `data`.
    #[serde(default = "default_target")]
    pub target: Spanned<String>,
    /// With `format: regex`: the pattern; its named captures become fields.
    /// Default: none (required with `format: regex`).
    #[serde(default)]
    pub pattern: Option<Spanned<String>>,
    /// Types for fields that are text otherwise: `int`, `float`, `bool`,
    /// `string`, or `timestamp` (read with `time_format`, written as RFC
    /// 3339). Default: none.
    #[serde(default)]
    pub types: IndexMap<String, FieldType>,
    /// A parsed field that holds the event's time: it becomes the
    /// CloudEvents `time`. Default: none (the time the line was read).
    #[serde(default)]
    pub time_field: Option<String>,
    /// How `time_field` (and `timestamp` types) are written: `rfc3339`,
    /// `unix`, `unix_ms`, or a strftime format such as `%d/%b/%Y:%H:%M:%S
    /// %z`. Default: the format's own (`%d/%b/%Y:%H:%M:%S %z` for access
    /// logs, RFC 3339 or `%b %e %H:%M:%S` for syslog), else `rfc3339`.
    #[serde(default)]
    pub time_format: Option<String>,
    /// What happens to an event whose field does not parse: `keep` it,
    /// marked with `data.parse_error`, or `drop` it. Counted either way.
    /// Default: `keep`.
    #[serde(default)]
    pub on_error: OnError,
}

fn default_field() -> Spanned<String> {
    Spanned { pos: Default::default(), value: "data.message".to_string() }
}
fn default_target() -> Spanned<String> {
    Spanned { pos: Default::default(), value: "data".to_string() }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    NginxCombined,
    ApacheCombined,
    ApacheCommon,
    Syslog,
    Json,
    Logfmt,
    Regex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Int,
    Float,
    Bool,
    String,
    Timestamp,
}

pub struct Parse {
    format: Format,
    field: FieldPath,
    /// Inside `data`; empty to merge into `data` itself.
    target: Vec<Str>,
    regex: Option<(Regex, Vec<(usize, Str)>)>,
    types: Vec<(Str, FieldType)>,
    time_field: Option<String>,
    time_format: TimeFormat,
    on_error: OnError,
}

impl Parse {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let field = FieldPath::parse(&config.field.value).map_err(|e| BuildError::at(config.field.pos, e))?;
        let target = match FieldPath::parse(&config.target.value)
            .map_err(|e| BuildError::at(config.target.pos, e))?
        {
            FieldPath::Data(p) => p.iter().map(|s| Str::interned(s)).collect(),
            _ => return Err(BuildError::at(config.target.pos, "`target` is `data` or a field inside it")),
        };
        let regex = match (config.format, &config.pattern) {
            (Format::Regex, Some(p)) => {
                let re = Regex::new(&p.value)
                    .map_err(|e| BuildError::at(p.pos, format!("invalid pattern: {e}")))?;
                let names: Vec<(usize, Str)> = re
                    .capture_names()
                    .enumerate()
                    .filter_map(|(i, n)| Some((i, Str::interned(n?))))
                    .collect();
                if names.is_empty() {
                    return Err(BuildError::at(
                        p.pos,
                        "the pattern has no named captures, such as (?P<status>\\d+)",
                    ));
                }
                Some((re, names))
            }
            (Format::Regex, None) => return Err(BuildError::new("`format: regex` needs a `pattern`")),
            (_, Some(p)) => return Err(BuildError::at(p.pos, "`pattern` is for `format: regex`")),
            (_, None) => None,
        };
        let time_format = TimeFormat::new(config.format, config.time_format.as_deref())?;
        Ok(Parse {
            format: config.format,
            field,
            target,
            regex,
            types: config.types.iter().map(|(k, t)| (Str::interned(k), *t)).collect(),
            time_field: config.time_field.clone(),
            time_format,
            on_error: config.on_error,
        })
    }

    pub fn process(&mut self, mut batch: EventBatch, out: &mut Outputs) {
        let mut failed = Vec::new();
        let mut errors = 0u64;
        batch.update_sized(|events| {
            let mut added = 0usize;
            for event in events.iter_mut() {
                let result = self.parse_event(event);
                match &result {
                    Ok(fields) => added += fields,
                    Err(reason) => {
                        errors += 1;
                        if self.on_error == OnError::Keep
                            && let Some(data) = event.data.as_object_mut()
                        {
                            data.insert(PARSE_ERROR.clone(), Value::from(reason.clone()));
                        }
                    }
                }
                failed.push(result.is_err());
            }
            // Fields mostly share the text they came from: a map entry each.
            (added * 80) as isize
        });
        if errors > 0 {
            out.error(&EvalError::new("parse_failed", ""));
            out.metrics.add_error("parse_failed", errors - 1);
        }
        if self.on_error == OnError::Drop && errors > 0 {
            let mut i = 0;
            batch.retain(|_| {
                i += 1;
                !failed[i - 1]
            });
            out.metrics.add_dropped(DropReason::Malformed, errors as usize);
        }
        out.push(batch);
    }

    /// Parses one event's field into its target; returns how many fields
    /// were added. On error the event is left as it was.
    fn parse_event(&self, event: &mut Event) -> Result<usize, String> {
        let text = match self.field.get(event) {
            Some(crate::event::path::Field::Value(Value::Str(s))) => s.clone(),
            Some(crate::event::path::Field::Str(s)) => Str::from(s),
            Some(_) => return Err(format!("`{}` is not text", self.field)),
            None => return Err(format!("no `{}` to parse", self.field)),
        };
        let no_target = || {
            format!(
                "the target `{}` is not an object",
                self.target.iter().map(Str::as_str).collect::<Vec<_>>().join(".")
            )
        };
        let map = self.target_map(event).ok_or_else(no_target)?;
        let before = map.len();
        let mut result = self.parse_into(&text, map, before);
        let added = map.len() - before;
        let mut time = None;
        if result.is_ok()
            && let Some(name) = &self.time_field
        {
            result = match map.get(name).map(|v| self.time_format.time_of(v)) {
                Some(Ok(t)) => {
                    time = Some(t);
                    Ok(())
                }
                Some(Err(e)) => Err(format!("`{name}`: {e}")),
                None => Err(format!("no `{name}` for the time")),
            };
        }
        if let Err(e) = result {
            map.truncate(before);
            return Err(e);
        }
        if let Some(t) = time {
            event.time = t;
        }
        Ok(added)
    }

    /// Parses `text` into `map`, whose first `before` entries were there.
    fn parse_into(&self, text: &Str, map: &mut Map, before: usize) -> Result<(), String> {
        // Room for the fields a format gives at once, rather than growing
        // the map four times per line.
        match self.format {
            Format::NginxCombined | Format::ApacheCombined => {
                map.reserve(10);
                access_log(text, true, map, before)?
            }
            Format::ApacheCommon => {
                map.reserve(8);
                access_log(text, false, map, before)?
            }
            Format::Syslog => {
                map.reserve(9);
                syslog(text, map, before)?
            }
            Format::Json => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => {
                    map.reserve(m.len());
                    for (k, v) in m {
                        map.set_after(before, k, v);
                    }
                }
                Ok(other) => return Err(format!("JSON {} where an object was expected", other.kind())),
                Err(e) => return Err(format!("invalid JSON: {e}")),
            },
            Format::Logfmt => logfmt(text, map, before)?,
            Format::Regex => {
                let Some((re, names)) = &self.regex else { return Err("no pattern".to_string()) };
                let caps =
                    re.captures(text).ok_or_else(|| "the line does not match the pattern".to_string())?;
                for (i, name) in names {
                    if let Some(m) = caps.get(*i) {
                        map.set_after(before, name.clone(), Value::Str(slice(text, m.as_str())));
                    }
                }
            }
        }
        for (name, ty) in &self.types {
            let converted = match map.get(name) {
                Some(v) => self.convert(v, *ty).map_err(|e| format!("`{name}`: {e}"))?,
                None => continue,
            };
            map.insert(name.clone(), converted);
        }
        Ok(())
    }

    /// The object the fields go into, made if missing.
    fn target_map<'e>(&self, event: &'e mut Event) -> Option<&'e mut Map> {
        if !matches!(event.data, Value::Object(_)) {
            event.data = Value::Object(Map::new());
        }
        let mut map = event.data.as_object_mut()?;
        for key in &self.target {
            if !matches!(map.get(key), Some(Value::Object(_))) {
                map.insert(key.clone(), Value::Object(Map::new()));
            }
            map = map.get_mut(key)?.as_object_mut()?;
        }
        Some(map)
    }

    fn convert(&self, v: &Value, ty: FieldType) -> Result<Value, String> {
        let text = match v {
            Value::Str(s) => s.as_str(),
            other if ty == FieldType::String => {
                return Ok(Value::from(serde_json::to_string(other).unwrap_or_default()));
            }
            other => return Ok(other.clone()),
        };
        Ok(match ty {
            FieldType::String => v.clone(),
            FieldType::Int => {
                Value::Int(text.trim().parse().map_err(|_| format!("`{text}` is not an integer"))?)
            }
            FieldType::Float => {
                Value::Float(text.trim().parse().map_err(|_| format!("`{text}` is not a number"))?)
            }
            FieldType::Bool => Value::Bool(match text.trim() {
                "true" | "True" | "TRUE" | "yes" | "1" | "on" => true,
                "false" | "False" | "FALSE" | "no" | "0" | "off" => false,
                _ => return Err(format!("`{text}` is not a boolean")),
            }),
            FieldType::Timestamp => {
                let t = self.time_format.time_of(v)?;
                let mut out = Vec::with_capacity(27);
                crate::event::time::format_rfc3339(t, &mut out);
                Value::from(String::from_utf8_lossy(&out).into_owned())
            }
        })
    }
}

#[cfg(test)]
mod tests;
