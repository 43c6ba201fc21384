//! Encodings of events: the structured-mode CloudEvents JSON of one event and
//! the batch framings built on it.
//!
//! Encoding writes straight into a caller's buffer: no intermediate
//! `serde_json::Value`, no allocation per event. The time string is cached
//! because the events of a batch usually share their time.

use serde::{Deserialize, Serialize};

use super::{Event, EventId, Value, id, time};

/// How a batch of events becomes bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// One structured CloudEvent per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A JSON array of structured CloudEvents (`application/json`).
    Json,
    /// The same array as the CloudEvents batch format
    /// (`application/cloudevents-batch+json`).
    CloudeventsBatch,
    /// The `message` of each event's data (or the data as JSON), one a line.
    Text,
}

impl Codec {
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Ndjson => "application/x-ndjson",
            Codec::Json => "application/json",
            Codec::CloudeventsBatch => "application/cloudevents-batch+json",
            Codec::Text => "text/plain; charset=utf-8",
        }
    }

    fn is_array(self) -> bool {
        matches!(self, Codec::Json | Codec::CloudeventsBatch)
    }
}

/// Encodes events for one sink. Holds the per-sink caches.
#[derive(Debug)]
pub struct Encoder {
    codec: Codec,
    time_micros: i64,
    time_text: Vec<u8>,
}

impl Encoder {
    pub fn new(codec: Codec) -> Self {
        Encoder { codec, time_micros: i64::MIN, time_text: Vec::with_capacity(27) }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Starts a batch body.
    pub fn begin(&self, out: &mut Vec<u8>) {
        if self.codec.is_array() {
            out.push(b'[');
        }
    }

    /// Appends one event; `first` says whether it opens the body.
    pub fn event(&mut self, event: &Event, first: bool, out: &mut Vec<u8>) {
        match self.codec {
            Codec::Ndjson => {
                self.structured(event, out);
                out.push(b'\n');
            }
            Codec::Json | Codec::CloudeventsBatch => {
                if !first {
                    out.push(b',');
                }
                self.structured(event, out);
            }
            Codec::Text => {
                match event.data.as_object().and_then(|d| d.get("message")) {
                    Some(Value::Str(m)) => out.extend_from_slice(m.as_bytes()),
                    _ => write_json(out, &event.data),
                }
                out.push(b'\n');
            }
        }
    }

    /// Closes a batch body.
    pub fn end(&self, out: &mut Vec<u8>) {
        if self.codec.is_array() {
            out.push(b']');
        }
    }

    /// Writes the structured-mode JSON of one event.
    pub fn structured(&mut self, event: &Event, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
        match &event.id {
            EventId::Generated(n) => {
                out.push(b'"');
                id::format_id(*n, out);
                out.push(b'"');
            }
            EventId::Given(s) => write_json(out, s.as_str()),
        }
        out.extend_from_slice(b",\"source\":");
        write_json(out, event.source.as_str());
        out.extend_from_slice(b",\"type\":");
        write_json(out, event.ty.as_str());
        out.extend_from_slice(b",\"time\":\"");
        if event.time != self.time_micros {
            self.time_micros = event.time;
            self.time_text.clear();
            time::format_rfc3339(event.time, &mut self.time_text);
        }
        out.extend_from_slice(&self.time_text);
        out.push(b'"');
        if let Some(subject) = &event.subject {
            out.extend_from_slice(b",\"subject\":");
            write_json(out, subject.as_str());
        }
        out.extend_from_slice(b",\"host\":");
        write_json(out, event.host.as_str());
        let has_data = event.data != Value::Null;
        if has_data && event.attrs.get("datacontenttype").is_none() {
            out.extend_from_slice(b",\"datacontenttype\":\"application/json\"");
        }
        for (k, v) in event.attrs.iter() {
            out.push(b',');
            write_json(out, k.as_str());
            out.push(b':');
            write_json(out, v);
        }
        if has_data {
            out.extend_from_slice(b",\"data\":");
            write_json(out, &event.data);
        }
        out.push(b'}');
    }
}

/// Writes a value as JSON. Writing to a `Vec` cannot fail, and our values
/// serialize without error (non-finite floats become null).
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let result = serde_json::to_writer(&mut *out, value);
    debug_assert!(result.is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Map, Str};

    fn sample() -> Event {
        let mut data = Map::new();
        data.push(Str::from_static("message"), Value::from("GET /a \"q\" 200"));
        data.push(Str::from_static("offset"), Value::Int(18231));
        Event {
            id: EventId::Generated(0x0193a4c27f1e7cc39a4e2f8d5b0e1a77),
            time: 1_795_751_400_123_456,
            ty: Str::from_static("log.line"),
            source: Str::from_static("hostwatch://web-01/app_logs"),
            subject: Some(Str::from_static("/var/log/app/app.log")),
            host: Str::from_static("web-01"),
            attrs: Map::new(),
            data: Value::Object(data),
        }
    }

    #[test]
    fn structured_event_is_valid_cloudevent_json() {
        let mut enc = Encoder::new(Codec::Ndjson);
        let mut out = Vec::new();
        enc.event(&sample(), true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "0193a4c2-7f1e-7cc3-9a4e-2f8d5b0e1a77");
        assert_eq!(v["time"], "2026-11-27T03:50:00.123456Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["subject"], "/var/log/app/app.log");
        assert_eq!(v["host"], "web-01");
        assert_eq!(v["data"]["message"], "GET /a \"q\" 200");
        assert_eq!(v["data"]["offset"], 18231);
    }

    #[test]
    fn array_codecs_frame_with_commas() {
        let mut enc = Encoder::new(Codec::CloudeventsBatch);
        let mut out = Vec::new();
        enc.begin(&mut out);
        enc.event(&sample(), true, &mut out);
        enc.event(&sample(), false, &mut out);
        enc.end(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
    }

    #[test]
    fn text_writes_the_message() {
        let mut enc = Encoder::new(Codec::Text);
        let mut out = Vec::new();
        enc.event(&sample(), true, &mut out);
        assert_eq!(out, b"GET /a \"q\" 200\n");
    }
}
