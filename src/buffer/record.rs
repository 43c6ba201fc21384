//! The disk buffer's records: a batch of events in a compact binary form,
//! framed with its length and a CRC32C.
//!
//! ```text
//! frame:  u32 length of payload | u32 crc32c of payload | payload
//! payload: u32 events | event*
//! event:  id | i64 time | str type | str source | opt str subject | str host | map attrs | value data
//! id:     0 u128 (generated) | 1 str (given)
//! str:    u32 length | UTF-8 bytes
//! value:  0 null | 1 false | 2 true | 3 i64 | 4 f64 | 5 str | 6 u32 n value* | 7 u32 n (str value)*
//! ```
//!
//! Little-endian throughout. Decoding takes the payload as one `Bytes` and
//! slices its strings out of it: no copy per string. The attributes and
//! keys that repeat from event to event (type, source, host, subject, field
//! names) are interned instead: no reference count to move per event, and
//! the encoders see the same string again.

use bytes::Bytes;

use crate::event::{Event, EventId, Map, Str, Value};

/// The frame header: length and checksum.
pub const HEADER: usize = 8;
/// A frame longer than this is taken for corruption.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// Appends one framed record holding `events` to `out`.
pub fn encode(events: &[Event], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        event(e, out);
    }
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The payload length and checksum in a frame header.
pub fn header(h: &[u8; HEADER]) -> (usize, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
}

/// Does `payload` match the checksum of its header?
pub fn intact(payload: &[u8], crc: u32) -> bool {
    crc32c::crc32c(payload) == crc
}

fn str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn event(e: &Event, out: &mut Vec<u8>) {
    match &e.id {
        EventId::Generated(n) => {
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
        }
        EventId::Given(s) => {
            out.push(1);
            str(s, out);
        }
    }
    out.extend_from_slice(&e.time.to_le_bytes());
    str(&e.ty, out);
    str(&e.source, out);
    match &e.subject {
        Some(s) => {
            out.push(1);
            str(s, out);
        }
        None => out.push(0),
    }
    str(&e.host, out);
    map(&e.attrs, out);
    value(&e.data, out);
}

fn map(m: &Map, out: &mut Vec<u8>) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    for (k, v) in m.iter() {
        str(k, out);
        value(v, out);
    }
}

fn value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Int(n) => {
            out.push(3);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            out.push(5);
            str(s, out);
        }
        Value::Array(a) => {
            out.push(6);
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            for v in a {
                value(v, out);
            }
        }
        Value::Object(m) => {
            out.push(7);
            map(m, out);
        }
    }
}

// === decoding ===

/// `a == b`, without a call to `memcmp` for the short strings that names
/// are: two overlapping 8-byte words cover up to 16 bytes.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    match n {
        0 => true,
        1..=7 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Reads a payload that passed its checksum. An error means the writer and
/// the reader disagree on the format (or the checksum missed a corruption).
pub fn decode(payload: Bytes) -> Result<Vec<Event>, String> {
    decode_sized(payload).map(|(events, _)| events)
}

/// [`decode`], and an estimate of the memory the events hold (for buffer
/// limits), counted on the way: the payload they slice, the events and
/// their maps and arrays. Walking every event again to estimate it cost as
/// much as a good part of the decoding.
pub fn decode_sized(payload: Bytes) -> Result<(Vec<Event>, usize), String> {
    let mut r = Reader { b: payload, at: 0, slots: [""; SLOTS], entries: 0, elements: 0 };
    let n = r.u32()? as usize;
    // Each event takes at least 40 bytes: no allocation from a bogus count.
    let mut events = Vec::with_capacity(n.min(r.b.len() / 40 + 1));
    for _ in 0..n {
        events.push(r.event()?);
    }
    if r.at != r.b.len() {
        return Err(format!("{} bytes after the last event", r.b.len() - r.at));
    }
    let size = r.b.len()
        + events.len() * std::mem::size_of::<Event>()
        + r.entries * std::mem::size_of::<(Str, Value)>()
        + r.elements * std::mem::size_of::<Value>();
    Ok((events, size))
}

struct Reader {
    b: Bytes,
    at: usize,
    /// The interned string last read at each place (type, source, subject,
    /// host, then the names of the first fields): the next event most
    /// likely has the same there.
    slots: [&'static str; SLOTS],
    /// Map entries and array elements read, for the size estimate.
    entries: usize,
    elements: usize,
}

const SLOTS: usize = 16;
const TYPE: usize = 0;
const SOURCE: usize = 1;
const SUBJECT: usize = 2;
const HOST: usize = 3;
/// Field names: this slot and on, by position at the top level.
const FIELDS: usize = 4;

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("a record cut short")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<Str, String> {
        let n = self.u32()? as usize;
        let start = self.at;
        self.take(n)?;
        Str::from_utf8(self.b.slice(start..start + n)).map_err(|e| format!("a string that is not UTF-8: {e}"))
    }

    /// A string that likely repeats at this place (`slot`): interned when
    /// possible.
    fn name(&mut self, slot: usize) -> Result<Str, String> {
        let n = self.u32()? as usize;
        let start = self.at;
        self.take(n)?;
        let bytes = &self.b[start..start + n];
        let last = self.slots[slot.min(SLOTS - 1)];
        if same(last.as_bytes(), bytes) {
            return Ok(Str::from_static(last));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| format!("a string that is not UTF-8: {e}"))?;
        if let Some(s) = crate::event::intern_some(text) {
            self.slots[slot.min(SLOTS - 1)] = s;
            return Ok(Str::from_static(s));
        }
        Str::from_utf8(self.b.slice(start..start + n)).map_err(|e| e.to_string())
    }

    fn event(&mut self) -> Result<Event, String> {
        let id = match self.u8()? {
            0 => {
                let b = self.take(16)?;
                let mut a = [0; 16];
                a.copy_from_slice(b);
                EventId::Generated(u128::from_le_bytes(a))
            }
            1 => EventId::Given(self.str()?),
            t => return Err(format!("an id of kind {t}")),
        };
        let time = self.u64()? as i64;
        let ty = self.name(TYPE)?;
        let source = self.name(SOURCE)?;
        let subject = match self.u8()? {
            0 => None,
            _ => Some(self.name(SUBJECT)?),
        };
        let host = self.name(HOST)?;
        let attrs = self.map(0)?;
        let data = self.value(0)?;
        Ok(Event { id, time, ty, source, subject, host, attrs, data })
    }

    fn map(&mut self, depth: usize) -> Result<Map, String> {
        let n = self.u32()? as usize;
        let mut m = Map::with_capacity(n.min(self.b.len() - self.at));
        for i in 0..n {
            // Nested objects share the last slot.
            let slot = if depth == 0 { FIELDS + i } else { SLOTS - 1 };
            let k = self.name(slot)?;
            let v = self.value(depth + 1)?;
            m.push(k, v);
        }
        // Counted once read: a bogus count fails above, it does not overflow.
        self.entries += n;
        Ok(m)
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        // JSON nests, but not without end: a bound keeps a corrupt record
        // from overflowing the stack.
        if depth > 256 {
            return Err("values nested too deep".into());
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Int(self.u64()? as i64),
            4 => Value::Float(f64::from_bits(self.u64()?)),
            5 => Value::Str(self.str()?),
            6 => {
                let n = self.u32()? as usize;
                let mut a = Vec::with_capacity(n.min(self.b.len() - self.at));
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                self.elements += n;
                Value::Array(a)
            }
            7 => Value::Object(self.map(depth)?),
            t => return Err(format!("a value of kind {t}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Event> {
        let mut data = Map::new();
        data.push(Str::from("message"), Value::Str(Str::from("GET / 200 ünïcode")));
        data.push(Str::from("n"), Value::Int(-7));
        data.push(Str::from("f"), Value::Float(1.5));
        data.push(
            Str::from("list"),
            Value::Array(vec![Value::Null, Value::Bool(true), Value::Bool(false), Value::Object(Map::new())]),
        );
        let mut attrs = Map::new();
        attrs.push(Str::from("traceparent"), Value::Str(Str::from("00-abc")));
        vec![
            Event {
                id: EventId::Generated(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                time: 1_700_000_000_123_456,
                ty: Str::from("log.line"),
                source: Str::from("hostwatch://h/logs"),
                subject: Some(Str::from("/var/log/a.log")),
                host: Str::from("h"),
                attrs,
                data: Value::Object(data),
            },
            Event {
                id: EventId::Given(Str::from("app-1")),
                time: -1,
                ty: Str::from("t"),
                source: Str::from("s"),
                subject: None,
                host: Str::from(""),
                attrs: Map::new(),
                data: Value::Null,
            },
        ]
    }

    #[test]
    fn events_come_back_as_they_were() {
        let events = sample();
        let mut out = Vec::new();
        encode(&events, &mut out);
        let (len, crc) = header(out[..HEADER].try_into().unwrap());
        assert_eq!(len, out.len() - HEADER);
        assert!(intact(&out[HEADER..], crc));
        let (back, size) = decode_sized(Bytes::copy_from_slice(&out[HEADER..])).unwrap();
        assert_eq!(back, events);
        assert!(size >= out.len() - HEADER + std::mem::size_of_val(&events[..]));
    }

    #[test]
    fn damage_is_caught_by_the_checksum_or_the_decoder_never_a_panic() {
        let mut out = Vec::new();
        encode(&sample(), &mut out);
        let (_, crc) = header(out[..HEADER].try_into().unwrap());
        for i in HEADER..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x55;
            assert!(!intact(&bad[HEADER..], crc), "a flipped byte at {i} passed the checksum");
            let _ = decode(Bytes::copy_from_slice(&bad[HEADER..]));
        }
        for cut in HEADER..out.len() {
            assert!(decode(Bytes::copy_from_slice(&out[HEADER..cut])).is_err());
        }
    }
}
