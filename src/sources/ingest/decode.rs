//! Request bodies into events, by `Content-Type` (see the module above).

use base64::Engine as _;
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap};

use crate::event::decode::{self, Defaults};
use crate::event::{Event, Map, Str, Value};

/// Decodes a whole request body into events, or the reason it cannot be.
pub fn decode_body(headers: &HeaderMap, body: Bytes, d: &mut Defaults<'_>) -> Result<Vec<Event>, String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    if headers.contains_key("ce-specversion") || headers.contains_key("ce-type") {
        return binary_mode(headers, &content_type, body, d).map(|e| vec![e]);
    }
    match content_type.as_str() {
        "application/cloudevents+json" => {
            let v = parse_json(&body)?;
            if matches!(v, Value::Array(_)) {
                return Err("application/cloudevents+json takes one event; send an array as \
                            application/cloudevents-batch+json"
                    .to_string());
            }
            Ok(vec![decode::from_json(v, d)?])
        }
        "application/cloudevents-batch+json" => match parse_json(&body)? {
            Value::Array(items) => decode_all(items, d),
            other => Err(format!(
                "application/cloudevents-batch+json takes a JSON array of events, not {}",
                other.kind()
            )),
        },
        "" | "application/json" => match parse_json(&body)? {
            Value::Array(items) => decode_all(items, d),
            one => Ok(vec![decode::from_json(one, d).map_err(|e| format!("event 0: {e}"))?]),
        },
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            let mut events = Vec::new();
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v = parse_json(line).map_err(|e| format!("line {}: {e}", i + 1))?;
                events.push(decode::from_json(v, d).map_err(|e| format!("line {}: {e}", i + 1))?);
            }
            Ok(events)
        }
        other => Err(format!(
            "unsupported Content-Type `{other}`: send application/cloudevents+json, \
             application/cloudevents-batch+json, application/json or application/x-ndjson"
        )),
    }
}

fn decode_all(items: Vec<Value>, d: &mut Defaults<'_>) -> Result<Vec<Event>, String> {
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        events.push(decode::from_json(item, d).map_err(|e| format!("event {i}: {e}"))?);
    }
    Ok(events)
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// The CloudEvents HTTP binding, binary mode: attributes in `ce-*` headers,
/// the body is the data, `Content-Type` its `datacontenttype`.
fn binary_mode(
    headers: &HeaderMap,
    content_type: &str,
    body: Bytes,
    d: &mut Defaults<'_>,
) -> Result<Event, String> {
    let mut map = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else { continue };
        let value = value.to_str().map_err(|_| format!("header `{name}` is not valid text"))?;
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("header `{name}` is not valid UTF-8 once decoded"))?;
        map.insert(Str::from(attr), Value::from(value.into_owned()));
    }
    if let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        map.insert(Str::from_static("datacontenttype"), Value::from(ct.to_string()));
    }
    if !body.is_empty() {
        let json = content_type == "application/json" || content_type.ends_with("+json");
        if json {
            map.insert(Str::from_static("data"), parse_json(&body)?);
        } else if content_type.starts_with("text/") {
            let text =
                String::from_utf8(body.to_vec()).map_err(|_| "the text body is not UTF-8".to_string())?;
            map.insert(Str::from_static("data"), Value::from(text));
        } else {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
            map.insert(Str::from_static("data_base64"), Value::from(encoded));
        }
    }
    decode::from_json(Value::Object(map), d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::id::IdGen;
    use hyper::header::HeaderValue;

    fn decode(content_type: &str, body: &str) -> Result<Vec<Event>, String> {
        let mut headers = HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        }
        let mut ids = IdGen::new();
        let s = Str::from_static("hostwatch://h/apps");
        let h = Str::from_static("h");
        let mut d = Defaults { source: &s, host: &h, time: 1, ids: &mut ids };
        decode_body(&headers, Bytes::from(body.to_string()), &mut d)
    }

    #[test]
    fn content_types() {
        assert_eq!(decode("application/cloudevents+json", r#"{"type":"A"}"#).unwrap().len(), 1);
        assert_eq!(
            decode("application/cloudevents-batch+json", r#"[{"type":"A"},{"type":"B"}]"#).unwrap().len(),
            2
        );
        assert_eq!(decode("application/json; charset=utf-8", r#"{"type":"A","data":{}}"#).unwrap().len(), 1);
        assert_eq!(decode("", r#"[{"type":"A"}]"#).unwrap().len(), 1);
        assert_eq!(
            decode("application/x-ndjson", "{\"type\":\"A\"}\r\n\n{\"type\":\"B\"}\n").unwrap().len(),
            2
        );
        assert!(decode("text/csv", "a,b").unwrap_err().contains("unsupported Content-Type"));
    }

    #[test]
    fn one_bad_event_refuses_the_request_and_says_which() {
        let err = decode("application/json", r#"[{"type":"A"},{"data":1}]"#).unwrap_err();
        assert_eq!(err, "event 1: missing `type`");
        let err = decode("application/x-ndjson", "{\"type\":\"A\"}\n{oops\n").unwrap_err();
        assert!(err.starts_with("line 2: invalid JSON"), "{err}");
        let err = decode("application/cloudevents-batch+json", r#"{"type":"A"}"#).unwrap_err();
        assert!(err.contains("JSON array"));
    }

    #[test]
    fn binary_mode_reads_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-type", HeaderValue::from_static("OrderCreated"));
        headers.insert("ce-id", HeaderValue::from_static("o-1"));
        headers.insert("ce-traceparent", HeaderValue::from_static("00%2Dx"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut ids = IdGen::new();
        let s = Str::from_static("src");
        let h = Str::from_static("h");
        let mut d = Defaults { source: &s, host: &h, time: 1, ids: &mut ids };
        let e = decode_body(&headers, Bytes::from_static(b"{\"n\":1}"), &mut d).unwrap().remove(0);
        assert_eq!(e.ty, "OrderCreated");
        assert_eq!(e.attrs.get("traceparent"), Some(&Value::from("00-x")));
        assert_eq!(e.data.as_object().unwrap().get("n"), Some(&Value::Int(1)));

        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let e = decode_body(&headers, Bytes::from_static(b"\x00\x01"), &mut d).unwrap().remove(0);
        assert_eq!(e.attrs.get("data_base64"), Some(&Value::from("AAE=")));
    }
}
