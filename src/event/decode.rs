//! Turning a JSON object that an application published into an [`Event`].
//!
//! What the application set is kept; `id`, `time`, `source` and `host` are
//! filled in where it left them out. Anything that is not a valid CloudEvent
//! is refused with a message the application can act on.

use super::id::IdGen;
use super::{Event, EventId, Map, Str, Value, time};

/// What an event gets where the application did not say.
pub struct Defaults<'a> {
    pub source: &'a Str,
    pub host: &'a Str,
    /// Microseconds since the epoch; read once per request.
    pub time: i64,
    pub ids: &'a mut IdGen,
}

/// Builds an event from one JSON value, or says why it cannot.
pub fn from_json(value: Value, defaults: &mut Defaults<'_>) -> Result<Event, String> {
    let Value::Object(map) = value else {
        return Err(format!("an event must be a JSON object, not {}", value.kind()));
    };
    let mut ty = None;
    let mut id = None;
    let mut source = None;
    let mut subject = None;
    let mut time = None;
    let mut host = None;
    let mut data = Value::Null;
    let mut attrs = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "specversion" => match &value {
                Value::Str(s) if s == "1.0" => {}
                other => {
                    return Err(format!("`specversion` must be \"1.0\", found {}", show(other)));
                }
            },
            "type" => ty = Some(non_empty(&key, value)?),
            "id" => id = Some(non_empty(&key, value)?),
            "source" => source = Some(non_empty(&key, value)?),
            "subject" => subject = Some(string(&key, value)?),
            "host" => host = Some(non_empty(&key, value)?),
            "time" => {
                let text = string(&key, value)?;
                time = Some(
                    time::parse_rfc3339(&text)
                        .ok_or_else(|| format!("`time` must be an RFC 3339 timestamp, found {text:?}"))?,
                );
            }
            "data" => data = value,
            "datacontenttype" | "dataschema" | "data_base64" => {
                attrs.insert(key.clone(), Value::Str(string(&key, value)?));
            }
            _ => {
                if !valid_extension_name(&key) {
                    return Err(format!(
                        "attribute `{key}` is not a CloudEvents attribute, and extension \
                         names are lower-case letters and digits only; put it under `data`"
                    ));
                }
                match value {
                    Value::Null => {}
                    Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                        attrs.insert(key, value)
                    }
                    other => {
                        return Err(format!(
                            "extension attribute `{key}` must be a string, number or boolean, \
                             not {}",
                            other.kind()
                        ));
                    }
                }
            }
        }
    }
    let Some(ty) = ty else {
        return Err("missing `type`".to_string());
    };
    if data != Value::Null && attrs.get("data_base64").is_some() {
        return Err("an event has either `data` or `data_base64`, not both".to_string());
    }
    Ok(Event {
        id: match id {
            Some(id) => EventId::Given(id),
            None => EventId::Generated(defaults.ids.next_id()),
        },
        time: time.unwrap_or(defaults.time),
        ty,
        source: source.unwrap_or_else(|| defaults.source.clone()),
        subject,
        host: host.unwrap_or_else(|| defaults.host.clone()),
        attrs,
        data,
    })
}

fn string(key: &str, value: Value) -> Result<Str, String> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(format!("`{key}` must be a string, not {}", other.kind())),
    }
}

fn non_empty(key: &str, value: Value) -> Result<Str, String> {
    let s = string(key, value)?;
    if s.is_empty() {
        return Err(format!("`{key}` must not be empty"));
    }
    Ok(s)
}

fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.kind().to_string())
}

/// CloudEvents 1.0: extension names are lower-case ASCII letters and digits.
pub fn valid_extension_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Event, String> {
        let mut ids = IdGen::new();
        ids.set_time(1);
        let source = Str::from_static("hostwatch://h/apps");
        let host = Str::from_static("h");
        let mut d = Defaults { source: &source, host: &host, time: 42, ids: &mut ids };
        from_json(serde_json::from_str(text).unwrap(), &mut d)
    }

    #[test]
    fn fills_missing_attributes_and_keeps_given_ones() {
        let e = decode(r#"{"type":"OrderCreated","data":{"order":7}}"#).unwrap();
        assert!(matches!(e.id, EventId::Generated(_)));
        assert_eq!(e.time, 42);
        assert_eq!(e.source, "hostwatch://h/apps");
        assert_eq!(e.host, "h");

        let e = decode(
            r#"{"specversion":"1.0","type":"T","id":"order-7","source":"/shop",
                "time":"2026-01-01T00:00:00Z","host":"other","traceparent":"00-ab","data":1}"#,
        )
        .unwrap();
        assert_eq!(e.id, EventId::Given(Str::from_static("order-7")));
        assert_eq!(e.source, "/shop");
        assert_eq!(e.host, "other");
        assert_eq!(e.time, time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap());
        assert_eq!(e.attrs.get("traceparent"), Some(&Value::from("00-ab")));
    }

    #[test]
    fn refuses_what_is_not_a_cloudevent() {
        assert!(decode(r#"{"data":{}}"#).unwrap_err().contains("missing `type`"));
        assert!(decode(r#"{"type":""}"#).unwrap_err().contains("must not be empty"));
        assert!(decode(r#"{"type":"T","specversion":"0.3"}"#).is_err());
        assert!(decode(r#"{"type":"T","time":"noon"}"#).unwrap_err().contains("RFC 3339"));
        assert!(decode(r#"{"type":"T","userId":5}"#).unwrap_err().contains("under `data`"));
        assert!(decode(r#"{"type":"T","ext":{"a":1}}"#).is_err());
        assert!(decode(r#"[1]"#).unwrap_err().contains("JSON object"));
    }
}
