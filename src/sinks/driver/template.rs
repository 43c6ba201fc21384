//! Templates for destinations that depend on the event: a file path
//! `/var/log/hostwatch/%Y-%m-%d/{type}.log`, a topic `host-{type}`.
//!
//! `{path}` is replaced by a field of the event (see [`FieldPath`]) and
//! `%`-sequences by the event's time in UTC (strftime, as in `date`). Parsed
//! once; rendering reuses the last second's time text, since consecutive
//! events almost always share it.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};

use crate::event::Event;
use crate::event::path::FieldPath;

#[derive(Clone, Debug)]
enum Part {
    /// Text, with strftime sequences if `timed`.
    Text {
        text: String,
        timed: bool,
    },
    Field(FieldPath),
}

#[derive(Debug)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    /// The second the cached time texts are for, and the texts.
    cache_second: i64,
    cache: Vec<String>,
}

impl Clone for Template {
    fn clone(&self) -> Self {
        Template {
            source: self.source.clone(),
            parts: self.parts.clone(),
            cache_second: i64::MIN,
            cache: Vec::new(),
        }
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end =
                        rest.find('}').ok_or_else(|| format!("`{{` without a closing `}}` in {text:?}"))?;
                    parts.push(Part::Field(FieldPath::parse(&rest[1..end])?));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let piece = &rest[..end];
                    let timed = piece.contains('%');
                    if timed && StrftimeItems::new(piece).any(|i| matches!(i, Item::Error)) {
                        return Err(format!("invalid time format {piece:?} in {text:?}"));
                    }
                    parts.push(Part::Text { text: piece.to_string(), timed });
                    rest = &rest[end..];
                }
            }
        }
        Ok(Template { source: text.to_string(), parts, cache_second: i64::MIN, cache: Vec::new() })
    }

    /// Whether the template depends on the event at all.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text { timed: false, .. }))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders for an event. Field values pass through `clean`, which a
    /// caller uses to keep them from escaping (a `/` in a file name).
    pub fn render(&mut self, event: &Event, out: &mut String, clean: fn(&str, &mut String)) {
        let second = event.time.div_euclid(1_000_000);
        if second != self.cache_second {
            self.cache_second = second;
            self.cache.clear();
            let t = chrono::DateTime::from_timestamp(second, 0).unwrap_or_default();
            for part in &self.parts {
                if let Part::Text { text, timed: true } = part {
                    let mut s = String::new();
                    let _ = write!(s, "{}", t.format(text));
                    self.cache.push(s);
                }
            }
        }
        let mut timed = self.cache.iter();
        let mut scratch = String::new();
        for part in &self.parts {
            match part {
                Part::Text { text, timed: false } => out.push_str(text),
                Part::Text { timed: true, .. } => out.push_str(timed.next().map_or("", String::as_str)),
                Part::Field(path) => match path.get(event) {
                    Some(field) => {
                        scratch.clear();
                        field.write_to(&mut scratch);
                        clean(&scratch, out);
                    }
                    None => out.push_str("none"),
                },
            }
        }
    }
}

/// Leaves field values as they are.
pub fn raw(value: &str, out: &mut String) {
    out.push_str(value);
}

/// Keeps a field value inside one path component: `/` and NUL become `_`,
/// and `.`/`..` cannot walk up.
pub fn path_component(value: &str, out: &mut String) {
    if value == "." || value == ".." {
        out.push_str(&"_".repeat(value.len()));
        return;
    }
    for c in value.chars() {
        out.push(if c == '/' || c == '\0' { '_' } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Map, Str, Value};

    fn event(ty: &'static str) -> Event {
        let mut data = Map::new();
        data.push(Str::from_static("app"), Value::from("shop"));
        Event {
            id: EventId::Generated(1),
            time: 1_795_751_400_123_456,
            ty: Str::from_static(ty),
            source: Str::from_static("s"),
            subject: None,
            host: Str::from_static("web-01"),
            attrs: Map::new(),
            data: Value::Object(data),
        }
    }

    #[test]
    fn renders_fields_and_time() {
        let mut t = Template::parse("/var/log/%Y-%m-%d/{host}/{type}-{data.app}-{subject}.log").unwrap();
        let mut out = String::new();
        t.render(&event("log.line"), &mut out, path_component);
        assert_eq!(out, "/var/log/2026-11-27/web-01/log.line-shop-none.log");
        assert!(!t.is_constant());
        assert!(Template::parse("/tmp/x.log").unwrap().is_constant());
    }

    #[test]
    fn field_values_cannot_escape_a_path_component() {
        let mut t = Template::parse("/out/{type}.log").unwrap();
        let mut out = String::new();
        t.render(&event("../../etc/passwd"), &mut out, path_component);
        assert_eq!(out, "/out/.._.._etc_passwd.log");
        out.clear();
        t.render(&event(".."), &mut out, path_component);
        assert_eq!(out, "/out/__.log");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("/x/{type").is_err());
        assert!(Template::parse("/x/{data..a}").is_err());
        assert!(Template::parse("/x/%Q").is_err());
    }
}
