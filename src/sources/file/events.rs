//! Events from a file's lines: each line, or multiline group, becomes a
//! `log.line` event with `data.message`, `data.file`, `data.offset` (where
//! it starts in the file) and the path as `subject`.
//!
//! Lines read at once become one batch of events: they share the time they
//! were read and the path's text, made once per batch rather than per line.
//! A line's text is its bytes as read when they are UTF-8 (no copy).

use std::path::Path;
use std::time::Instant;

use super::lines::Line;
use super::multiline::{Group, Multiline};
use crate::event::id::IdGen;
use crate::event::{Event, EventId, Map, Str, Value, time};

static LOG_LINE: Str = Str::from_static("log.line");

/// Makes the events of a file source.
pub struct Events {
    source: Str,
    host: Str,
    ids: IdGen,
    /// `None` for UTF-8.
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl Events {
    pub fn new(source: Str, host: Str, encoding: Option<&'static encoding_rs::Encoding>) -> Self {
        Events { source, host, ids: IdGen::new(), encoding }
    }

    /// Starts the events of what was just read of the file at `path`;
    /// `capacity` is how many are expected.
    pub fn batch(&mut self, path: &Path, capacity: usize) -> Batch<'_> {
        let time = time::now_micros();
        self.ids.set_time((time / 1000) as u64);
        let path = Str::from(path.to_string_lossy().as_ref());
        Batch { maker: self, path, time, events: Vec::with_capacity(capacity) }
    }
}

/// The events of one read of one file.
pub struct Batch<'a> {
    maker: &'a mut Events,
    path: Str,
    time: i64,
    events: Vec<Event>,
}

impl Batch<'_> {
    /// A line read: its event, or, with `multiline`, a part of a group (and
    /// the event of the group it completes, if it does).
    pub fn line(&mut self, line: Line, multiline: Option<&mut Multiline>, now: Instant) {
        let text = decode(self.maker.encoding, line.bytes);
        match multiline {
            Some(m) => {
                if let Some(group) = m.push(line.offset, &text, now) {
                    self.group(group);
                }
            }
            None => self.push(line.offset, text),
        }
    }

    /// A multiline group's event.
    pub fn group(&mut self, (offset, text): Group) {
        self.push(offset, Str::from(text));
    }

    /// The path's text, as the events hold it.
    pub fn path(&self) -> &Str {
        &self.path
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    fn push(&mut self, offset: u64, message: Str) {
        let m = &mut *self.maker;
        let id = m.ids.next_id();
        self.events.push(log_event(id, self.time, &m.source, &m.host, &self.path, offset, message));
    }
}

/// A line's text: UTF-8 as it is (invalid sequences replaced, without a
/// copy when there are none), other encodings decoded.
fn decode(encoding: Option<&'static encoding_rs::Encoding>, bytes: bytes::Bytes) -> Str {
    match encoding {
        None => Str::from_utf8_lossy(bytes),
        Some(enc) => {
            let (text, _) = enc.decode_without_bom_handling(&bytes);
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            Str::from(text)
        }
    }
}

fn log_event(id: u128, time: i64, source: &Str, host: &Str, path: &Str, offset: u64, message: Str) -> Event {
    static MESSAGE: Str = Str::from_static("message");
    static FILE: Str = Str::from_static("file");
    static OFFSET: Str = Str::from_static("offset");
    let mut data = Map::with_capacity(3);
    data.push(MESSAGE.clone(), Value::Str(message));
    data.push(FILE.clone(), Value::Str(path.clone()));
    data.push(OFFSET.clone(), Value::from(offset));
    Event {
        id: EventId::Generated(id),
        time,
        ty: LOG_LINE.clone(),
        source: source.clone(),
        subject: Some(path.clone()),
        host: host.clone(),
        attrs: Map::new(),
        data: Value::Object(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(offset: u64, text: &str) -> Line {
        Line { offset, bytes: bytes::Bytes::copy_from_slice(text.as_bytes()), truncated: false }
    }

    fn data(e: &Event, key: &str) -> Value {
        e.data.as_object().and_then(|m| m.get(key)).cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn each_line_is_a_log_line_event_of_its_file() {
        let mut events = Events::new(Str::from("file:///var/log"), Str::from("h1"), None);
        let mut batch = events.batch(Path::new("/var/log/a.log"), 2);
        batch.line(line(0, "first"), None, Instant::now());
        batch.line(line(6, "second \u{e9}"), None, Instant::now());
        let got = batch.into_events();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ty.as_str(), "log.line");
        assert_eq!(got[0].subject.as_ref().map(Str::as_str), Some("/var/log/a.log"));
        assert_eq!(got[0].host.as_str(), "h1");
        assert_eq!(data(&got[0], "message"), Value::from("first"));
        assert_eq!(data(&got[1], "message"), Value::from("second \u{e9}"));
        assert_eq!(data(&got[1], "file"), Value::from("/var/log/a.log"));
        assert_eq!(data(&got[1], "offset"), Value::from(6u64));
        assert_eq!(got[0].time, got[1].time, "read together, stamped together");
        assert_ne!(got[0].id, got[1].id);
    }

    #[test]
    fn other_encodings_are_decoded() {
        let mut events = Events::new(Str::from("s"), Str::from("h"), Some(encoding_rs::WINDOWS_1252));
        let mut batch = events.batch(Path::new("/a"), 1);
        batch.line(
            Line { offset: 0, bytes: bytes::Bytes::from_static(b"caf\xe9"), truncated: false },
            None,
            Instant::now(),
        );
        assert_eq!(data(&batch.into_events()[0], "message"), Value::from("caf\u{e9}"));
    }
}
