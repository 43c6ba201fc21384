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

use bytes::Bytes;
use indexmap::IndexMap;
use regex::Regex;
use serde::Deserialize;

use super::{OnError, Outputs};
use crate::config::{BuildError, Spanned};
use crate::event::path::FieldPath;
use crate::event::{Event, EventBatch, Map, Str, Value};
use crate::expr::EvalError;
use crate::pipeline::metrics::DropReason;

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

/// How a time is written.
#[derive(Clone, Debug)]
enum TimeFormat {
    Rfc3339,
    Unix,
    UnixMs,
    /// Common Log Format: `27/Nov/2026:03:50:00 +0000`.
    Clf,
    /// RFC 3339, or RFC 3164's `Nov 27 03:50:00` (this year, UTC).
    Syslog,
    Strftime(String),
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

// Field names, made once.
macro_rules! keys {
    ($($name:ident = $text:literal),* $(,)?) => {
        $(static $name: Str = Str::from_static($text);)*
    };
}
keys!(
    CLIENT = "client",
    USER = "user",
    TIME = "time",
    METHOD = "method",
    PATH = "path",
    PROTOCOL = "protocol",
    REQUEST = "request",
    STATUS = "status",
    BYTES = "bytes",
    REFERRER = "referrer",
    USER_AGENT = "user_agent",
    FACILITY = "facility",
    SEVERITY = "severity",
    VERSION = "version",
    TIMESTAMP = "timestamp",
    HOSTNAME = "hostname",
    APPNAME = "appname",
    PROCID = "procid",
    MSGID = "msgid",
    STRUCTURED_DATA = "structured_data",
    MESSAGE = "message",
    PARSE_ERROR = "parse_error",
);

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
        let time_format = match config.time_format.as_deref() {
            None => match config.format {
                Format::NginxCombined | Format::ApacheCombined | Format::ApacheCommon => TimeFormat::Clf,
                Format::Syslog => TimeFormat::Syslog,
                _ => TimeFormat::Rfc3339,
            },
            Some("rfc3339") => TimeFormat::Rfc3339,
            Some("unix") => TimeFormat::Unix,
            Some("unix_ms") => TimeFormat::UnixMs,
            Some(f) => {
                if chrono::format::StrftimeItems::new(f).any(|i| matches!(i, chrono::format::Item::Error)) {
                    return Err(BuildError::new(format!("invalid `time_format` {f:?}")));
                }
                TimeFormat::Strftime(f.to_string())
            }
        };
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
            result = match map.get(name).map(|v| self.time_of(v)) {
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
                let t = self.time_of(v)?;
                let mut out = Vec::with_capacity(27);
                crate::event::time::format_rfc3339(t, &mut out);
                Value::from(String::from_utf8_lossy(&out).into_owned())
            }
        })
    }

    /// A field's time, in microseconds since the epoch.
    fn time_of(&self, v: &Value) -> Result<i64, String> {
        let text = match v {
            Value::Str(s) => s.as_str(),
            Value::Int(n) => {
                return match self.time_format {
                    TimeFormat::UnixMs => Ok(n.saturating_mul(1000)),
                    _ => Ok(n.saturating_mul(1_000_000)),
                };
            }
            Value::Float(f) => {
                return Ok(match self.time_format {
                    TimeFormat::UnixMs => (f * 1000.0) as i64,
                    _ => (f * 1_000_000.0) as i64,
                });
            }
            other => return Err(format!("a {} is not a time", other.kind())),
        };
        let bad = || format!("`{text}` is not a time in the expected format");
        match &self.time_format {
            TimeFormat::Rfc3339 => crate::event::time::parse_rfc3339(text).ok_or_else(bad),
            TimeFormat::Unix => text.trim().parse::<f64>().map(|s| (s * 1e6) as i64).map_err(|_| bad()),
            TimeFormat::UnixMs => text.trim().parse::<f64>().map(|s| (s * 1e3) as i64).map_err(|_| bad()),
            TimeFormat::Clf => clf_time(text.as_bytes()).ok_or_else(bad),
            TimeFormat::Syslog => {
                crate::event::time::parse_rfc3339(text).or_else(|| bsd_time(text)).ok_or_else(bad)
            }
            TimeFormat::Strftime(f) => chrono::DateTime::parse_from_str(text, f)
                .map(|t| t.timestamp_micros())
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(text, f).map(|t| t.and_utc().timestamp_micros())
                })
                .map_err(|_| bad()),
        }
    }
}

/// A slice of `whole` as a `Str` sharing its memory (`part` must lie in it).
fn slice(whole: &Str, part: &str) -> Str {
    whole.slice_of(part)
}

fn text_or_null(whole: &Str, part: &str) -> Value {
    if part == "-" { Value::Null } else { Value::Str(slice(whole, part)) }
}

// === access logs ===

/// `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"` (the common format
/// stops after the bytes). What follows is ignored (custom formats add to it).
fn access_log(line: &Str, combined: bool, out: &mut Map, before: usize) -> Result<(), String> {
    let s = line.as_str();
    let mut cur = Cursor { s, at: 0 };
    let client = cur.word().ok_or("no client address")?;
    let _ident = cur.word().ok_or("no ident field")?;
    let user = cur.word().ok_or("no user field")?;
    let time = cur.delimited(b'[', b']').ok_or("no [time]")?;
    let request = cur.quoted().ok_or("no \"request\"")?;
    let status = cur.word().ok_or("no status")?;
    let bytes = cur.word().ok_or("no byte count")?;
    out.set_after(before, CLIENT.clone(), Value::Str(slice(line, client)));
    out.set_after(before, USER.clone(), text_or_null(line, user));
    out.set_after(before, TIME.clone(), Value::Str(slice(line, time)));
    // `METHOD PATH PROTOCOL`; the path may not hold a space, the protocol can.
    let rb = request.as_bytes();
    let first = memchr::memchr(b' ', rb);
    let second = first.and_then(|f| memchr::memchr(b' ', &rb[f + 1..]).map(|s| f + 1 + s));
    let parts = match (first, second) {
        (Some(f), Some(s)) => (Some(&request[..f]), Some(&request[f + 1..s]), Some(&request[s + 1..])),
        _ => (None, None, None),
    };
    match parts {
        (Some(m), Some(p), Some(v)) if !m.is_empty() && !p.is_empty() => {
            out.set_after(before, METHOD.clone(), Value::Str(slice(line, m)));
            out.set_after(before, PATH.clone(), Value::Str(unescape(line, p)));
            out.set_after(before, PROTOCOL.clone(), Value::Str(slice(line, v)));
        }
        // Garbage in place of a request (a TLS hello on a plain port): kept as is.
        _ => out.set_after(before, REQUEST.clone(), Value::Str(unescape(line, request))),
    }
    out.set_after(
        before,
        STATUS.clone(),
        Value::Int(status.parse().map_err(|_| format!("status `{status}` is not a number"))?),
    );
    out.set_after(
        before,
        BYTES.clone(),
        Value::Int(if bytes == "-" {
            0
        } else {
            bytes.parse().map_err(|_| format!("byte count `{bytes}` is not a number"))?
        }),
    );
    if combined {
        let referrer = cur.quoted().ok_or("no \"referrer\"")?;
        let agent = cur.quoted().ok_or("no \"user agent\"")?;
        // Both are request headers logged the same way: escaped alike, and
        // `-` when the client sent none.
        out.set_after(before, REFERRER.clone(), header_or_null(line, referrer));
        out.set_after(before, USER_AGENT.clone(), header_or_null(line, agent));
    }
    Ok(())
}

/// A logged request header: `null` for `-` (none was sent), else its text
/// without escapes.
fn header_or_null(line: &Str, part: &str) -> Value {
    if part == "-" { Value::Null } else { Value::Str(unescape(line, part)) }
}

/// A quoted field without its backslash escapes (`\"`, `\\`, `\xHH`);
/// shared with the line when it has none.
fn unescape(line: &Str, part: &str) -> Str {
    if !part.contains('\\') {
        return slice(line, part);
    }
    let mut out = Vec::with_capacity(part.len());
    let b = part.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'x' if i + 3 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                    if let Ok(v) = u8::from_str_radix(hex, 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                    out.push(b'\\');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 2;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Str::from_utf8_lossy(Bytes::from(out))
}

struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_spaces(&mut self) {
        let b = self.s.as_bytes();
        while self.at < b.len() && b[self.at] == b' ' {
            self.at += 1;
        }
    }

    /// The next run of non-spaces.
    fn word(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let rest = &self.s[self.at..];
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b' ', rest.as_bytes()).unwrap_or(rest.len());
        self.at += end;
        Some(&rest[..end])
    }

    /// `[text]`: the text.
    fn delimited(&mut self, open: u8, close: u8) -> Option<&'a str> {
        self.skip_spaces();
        let b = self.s.as_bytes();
        if b.get(self.at) != Some(&open) {
            return None;
        }
        let start = self.at + 1;
        let end = start + memchr::memchr(close, &b[start..])?;
        self.at = end + 1;
        Some(&self.s[start..end])
    }

    /// `"text"` where `\"` does not end it: the text, escapes included.
    fn quoted(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let b = self.s.as_bytes();
        if b.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let mut i = start;
        loop {
            i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            self.at = i + 1;
            return Some(&self.s[start..i]);
        }
    }
}

/// `27/Nov/2026:03:50:00 +0000` in microseconds since the epoch.
fn clf_time(t: &[u8]) -> Option<i64> {
    if t.len() != 26 || t[2] != b'/' || t[6] != b'/' || t[11] != b':' || t[20] != b' ' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        t[r].iter().try_fold(0i64, |n, c| c.is_ascii_digit().then(|| n * 10 + (c - b'0') as i64))
    };
    let month = month_number(&t[3..6])?;
    let date = chrono::NaiveDate::from_ymd_opt(num(7..11)? as i32, month, num(0..2)? as u32)?;
    let (h, m, s) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let offset = (num(22..24)? * 3600 + num(24..26)? * 60) * if t[21] == b'-' { -1 } else { 1 };
    let days = date.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    Some((days * 86_400 + h * 3600 + m * 60 + s - offset) * 1_000_000)
}

fn month_number(m: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    MONTHS.iter().position(|x| x[..] == *m).map(|i| i as u32 + 1)
}

/// RFC 3164's `Nov 27 03:50:00` (no year: this year, UTC).
fn bsd_time(text: &str) -> Option<i64> {
    let year = chrono::Utc::now().format("%Y").to_string();
    let full = format!("{year} {}", text.split_whitespace().collect::<Vec<_>>().join(" "));
    chrono::NaiveDateTime::parse_from_str(&full, "%Y %b %d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

// === syslog ===

const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

fn syslog(line: &Str, out: &mut Map, before: usize) -> Result<(), String> {
    let s = line.as_str();
    let mut rest = s;
    if let Some(after) = s.strip_prefix('<') {
        let end = after.find('>').ok_or("`<` without `>` in the priority")?;
        let pri: u32 = after[..end].parse().map_err(|_| "the priority is not a number".to_string())?;
        if pri > 191 {
            return Err(format!("priority {pri} is out of range"));
        }
        out.set_after(before, FACILITY.clone(), Value::from(FACILITIES[(pri / 8) as usize]));
        out.set_after(before, SEVERITY.clone(), Value::from(SEVERITIES[(pri % 8) as usize]));
        rest = &after[end + 1..];
    }
    let b = rest.as_bytes();
    if b.len() > 2
        && b[0].is_ascii_digit()
        && (b[1] == b' ' || (b[1].is_ascii_digit() && b.get(2) == Some(&b' ')))
    {
        rfc5424(line, rest, out, before)
    } else {
        rfc3164(line, rest, out, before)
    }
}

/// `VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`; `-` is nil.
fn rfc5424(line: &Str, rest: &str, out: &mut Map, before: usize) -> Result<(), String> {
    let mut cur = Cursor { s: rest, at: 0 };
    let version = cur.word().ok_or("no version")?;
    out.set_after(
        before,
        VERSION.clone(),
        Value::Int(version.parse().map_err(|_| "bad version".to_string())?),
    );
    for key in [&TIMESTAMP, &HOSTNAME, &APPNAME, &PROCID, &MSGID] {
        let w = cur.word().ok_or_else(|| format!("no {key}"))?;
        if w != "-" {
            out.set_after(before, key.clone(), Value::Str(slice(line, w)));
        }
    }
    cur.skip_spaces();
    let b = rest.as_bytes();
    if b.get(cur.at) == Some(&b'-') {
        cur.at += 1;
    } else if b.get(cur.at) == Some(&b'[') {
        let mut sd = Map::new();
        while b.get(cur.at) == Some(&b'[') {
            cur.at += 1;
            let id_end = rest[cur.at..].find([' ', ']']).ok_or("unterminated structured data")? + cur.at;
            let id = &rest[cur.at..id_end];
            cur.at = id_end;
            let mut params = Map::new();
            loop {
                cur.skip_spaces();
                match b.get(cur.at) {
                    Some(b']') => {
                        cur.at += 1;
                        break;
                    }
                    Some(_) => {
                        let eq =
                            rest[cur.at..].find('=').ok_or("structured data parameter without `=`")? + cur.at;
                        let name = &rest[cur.at..eq];
                        cur.at = eq + 1;
                        let value = cur.quoted().ok_or("structured data value not quoted")?;
                        params.insert(slice(line, name), Value::Str(unescape(line, value)));
                    }
                    None => return Err("unterminated structured data".to_string()),
                }
            }
            sd.insert(slice(line, id), Value::Object(params));
        }
        out.set_after(before, STRUCTURED_DATA.clone(), Value::Object(sd));
    } else {
        return Err("no structured data (nor `-`)".to_string());
    }
    let msg = rest[cur.at..].strip_prefix(' ').unwrap_or(&rest[cur.at..]);
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    out.set_after(before, MESSAGE.clone(), Value::Str(slice(line, msg)));
    Ok(())
}

/// `Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`.
fn rfc3164(line: &Str, rest: &str, out: &mut Map, before: usize) -> Result<(), String> {
    let rest = rest.trim_start();
    // "Nov 27 03:50:00" or "Nov  7 03:50:00": 15 characters.
    if rest.len() < 16 || month_number(&rest.as_bytes()[..3]).is_none() || rest.as_bytes()[15] != b' ' {
        return Err("not syslog: no `Mmm dd hh:mm:ss` time".to_string());
    }
    out.set_after(before, TIMESTAMP.clone(), Value::Str(slice(line, &rest[..15])));
    let mut cur = Cursor { s: rest, at: 15 };
    let host = cur.word().ok_or("no host name")?;
    out.set_after(before, HOSTNAME.clone(), Value::Str(slice(line, host)));
    cur.skip_spaces();
    let after = &rest[cur.at..];
    // The tag ends at `:`, `[` or a space; a `[pid]` may follow.
    let tag_end = after.find([':', '[', ' ']).unwrap_or(after.len());
    let mut msg_start = tag_end;
    if tag_end > 0 && after[tag_end..].starts_with(['[', ':']) {
        out.set_after(before, APPNAME.clone(), Value::Str(slice(line, &after[..tag_end])));
        if after[tag_end..].starts_with('[')
            && let Some(close) = after[tag_end..].find(']')
        {
            out.set_after(
                before,
                PROCID.clone(),
                Value::Str(slice(line, &after[tag_end + 1..tag_end + close])),
            );
            msg_start = tag_end + close + 1;
        }
        if after[msg_start..].starts_with(':') {
            msg_start += 1;
        }
    } else {
        msg_start = 0;
    }
    let msg = after[msg_start..].trim_start_matches(' ');
    out.set_after(before, MESSAGE.clone(), Value::Str(slice(line, msg)));
    Ok(())
}

// === logfmt ===

/// `key=value key="a value" flag`: values as text (`types` converts them),
/// a bare key is `true`.
fn logfmt(line: &Str, out: &mut Map, before: usize) -> Result<(), String> {
    let s = line.as_str();
    let b = s.as_bytes();
    let mut i = 0;
    let mut any = false;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &s[key_start..i];
        if key.is_empty() {
            return Err(format!("a value without a key at column {}", i + 1));
        }
        any = true;
        if i >= b.len() || b[i] == b' ' {
            out.set_after(before, slice(line, key), Value::Bool(true));
            continue;
        }
        i += 1;
        if b.get(i) == Some(&b'"') {
            let mut cur = Cursor { s, at: i };
            let v = cur.quoted().ok_or_else(|| format!("unterminated quote for `{key}`"))?;
            out.set_after(before, slice(line, key), Value::Str(unescape(line, v)));
            i = cur.at;
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            out.set_after(before, slice(line, key), Value::Str(slice(line, &s[start..i])));
        }
    }
    if !any {
        return Err("no key=value pairs".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
