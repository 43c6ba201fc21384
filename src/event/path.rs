//! Field paths: `type`, `subject`, `data.client`, `data.request.path`.
//!
//! A path names a CloudEvents attribute or a field inside `data`. Parsed once
//! when the config loads, looked up per event without allocating.

use std::fmt;

use super::{Event, EventId, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldPath {
    Id,
    Type,
    Source,
    Subject,
    Host,
    Time,
    /// Another attribute (`datacontenttype`, an extension).
    Attr(String),
    /// `data` itself (empty) or a field inside it.
    Data(Vec<String>),
}

/// What a path finds in an event.
#[derive(Debug, PartialEq)]
pub enum Field<'a> {
    Str(&'a str),
    Value(&'a Value),
    /// Attributes kept in another form: a generated id, the time.
    Id(u128),
    Time(i64),
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut parts = text.split('.');
        let first = parts.next().unwrap_or("");
        let rest: Vec<String> = parts.map(str::to_string).collect();
        if first.is_empty() || rest.iter().any(String::is_empty) {
            return Err(format!("`{text}` is not a field path; write e.g. `type` or `data.client`"));
        }
        if first == "ext" {
            // `ext.sampledrate`: an extension attribute, as in expressions.
            return match rest.as_slice() {
                [name] => Ok(FieldPath::Attr(name.clone())),
                _ => Err(format!("`{text}`: write ext.<attribute>")),
            };
        }
        if first != "data" && !rest.is_empty() {
            return Err(format!("`{text}`: only `data` has fields inside it"));
        }
        Ok(match first {
            "id" => FieldPath::Id,
            "type" => FieldPath::Type,
            "source" => FieldPath::Source,
            "subject" => FieldPath::Subject,
            "host" => FieldPath::Host,
            "time" => FieldPath::Time,
            "data" => FieldPath::Data(rest),
            other => FieldPath::Attr(other.to_string()),
        })
    }

    pub fn get<'a>(&self, event: &'a Event) -> Option<Field<'a>> {
        match self {
            FieldPath::Id => Some(match &event.id {
                EventId::Generated(n) => Field::Id(*n),
                EventId::Given(s) => Field::Str(s),
            }),
            FieldPath::Type => Some(Field::Str(&event.ty)),
            FieldPath::Source => Some(Field::Str(&event.source)),
            FieldPath::Subject => event.subject.as_deref().map(Field::Str),
            FieldPath::Host => Some(Field::Str(&event.host)),
            FieldPath::Time => Some(Field::Time(event.time)),
            FieldPath::Attr(name) => event.attrs.get(name).map(Field::Value),
            FieldPath::Data(path) => {
                let mut v = &event.data;
                for key in path {
                    v = v.as_object()?.get(key)?;
                }
                Some(Field::Value(v))
            }
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Id => f.write_str("id"),
            FieldPath::Type => f.write_str("type"),
            FieldPath::Source => f.write_str("source"),
            FieldPath::Subject => f.write_str("subject"),
            FieldPath::Host => f.write_str("host"),
            FieldPath::Time => f.write_str("time"),
            FieldPath::Attr(a) => write!(f, "ext.{a}"),
            FieldPath::Data(p) if p.is_empty() => f.write_str("data"),
            FieldPath::Data(p) => write!(f, "data.{}", p.join(".")),
        }
    }
}

impl Field<'_> {
    /// Appends the field as text: strings as they are, other values as JSON.
    pub fn write_to(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            Field::Str(s) => out.push_str(s),
            Field::Value(Value::Str(s)) => out.push_str(s),
            Field::Value(Value::Int(n)) => {
                let _ = write!(out, "{n}");
            }
            Field::Value(v) => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
            Field::Id(n) => {
                let _ = write!(out, "{}", uuid::Uuid::from_u128(*n).hyphenated());
            }
            Field::Time(t) => {
                let mut buf = Vec::with_capacity(27);
                super::time::format_rfc3339(*t, &mut buf);
                out.push_str(&String::from_utf8_lossy(&buf));
            }
        }
    }
}
