//! Format 0 of the disk buffer's records, read still so that events that
//! waited on disk across an upgrade are delivered:
//!
//! ```text
//! event:  id | i64 time | str type | str source | opt str subject | str host | map attrs | value data
//! id:     0 u128 (generated) | 1 str (given)
//! str:    u32 length | UTF-8 bytes
//! value:  0 null | 1 false | 2 true | 3 i64 | 4 f64 | 5 str | 6 u32 n value* | 7 u32 n (str value)*
//! ```
//!
//! Little-endian throughout.

use super::{Bad, Cursor};
use crate::event::{Event, EventId, Map, Str, Value};

/// Reads `n` events into `events`.
pub(super) fn decode(c: &mut Cursor, n: usize, events: &mut Vec<Event>) -> Result<(), Bad> {
    let mut r = Reader { c, slots: [""; SLOTS] };
    for _ in 0..n {
        events.push(r.event()?);
    }
    Ok(())
}

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

struct Reader<'a> {
    c: &'a mut Cursor,
    /// The interned string last read at each place (type, source, subject,
    /// host, then the names of the first fields): the next event most
    /// likely has the same there.
    slots: [&'static str; SLOTS],
}

const SLOTS: usize = 16;
const TYPE: usize = 0;
const SOURCE: usize = 1;
const SUBJECT: usize = 2;
const HOST: usize = 3;
/// Field names: this slot and on, by position at the top level.
const FIELDS: usize = 4;

impl Reader<'_> {
    fn str(&mut self) -> Result<Str, Bad> {
        let n = self.c.u32()? as usize;
        self.c.str_of(n)
    }

    /// A string that likely repeats at this place (`slot`): interned when
    /// possible.
    fn name(&mut self, slot: usize) -> Result<Str, Bad> {
        let n = self.c.u32()? as usize;
        let last = self.slots[slot.min(SLOTS - 1)];
        let start = self.c.at;
        let bytes = self.c.take(n)?;
        if same(last.as_bytes(), bytes) {
            return Ok(Str::from_static(last));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "a string that is not UTF-8")?;
        if let Some(s) = crate::event::intern_some(text) {
            self.slots[slot.min(SLOTS - 1)] = s;
            return Ok(Str::from_static(s));
        }
        Str::from_utf8(self.c.b.slice(start..start + n)).map_err(|_| "a string that is not UTF-8")
    }

    fn event(&mut self) -> Result<Event, Bad> {
        let id = match self.c.u8()? {
            0 => {
                let b = self.c.take(16)?;
                let mut a = [0; 16];
                a.copy_from_slice(b);
                EventId::Generated(u128::from_le_bytes(a))
            }
            1 => EventId::Given(self.str()?),
            _ => return Err("an id of an unknown kind"),
        };
        let time = self.c.u64()? as i64;
        let ty = self.name(TYPE)?;
        let source = self.name(SOURCE)?;
        let subject = match self.c.u8()? {
            0 => None,
            _ => Some(self.name(SUBJECT)?),
        };
        let host = self.name(HOST)?;
        let attrs = self.map(0)?;
        let data = self.value(0)?;
        Ok(Event { id, time, ty, source, subject, host, attrs, data })
    }

    fn map(&mut self, depth: usize) -> Result<Map, Bad> {
        let n = self.c.u32()? as usize;
        let mut m = Map::with_capacity(n.min(self.c.b.len() - self.c.at));
        for i in 0..n {
            // Nested objects share the last slot.
            let slot = if depth == 0 { FIELDS + i } else { SLOTS - 1 };
            let k = self.name(slot)?;
            let v = self.value(depth + 1)?;
            m.push(k, v);
        }
        // Counted once read: a bogus count fails above, it does not overflow.
        self.c.entries += n;
        Ok(m)
    }

    fn value(&mut self, depth: usize) -> Result<Value, Bad> {
        // JSON nests, but not without end: a bound keeps a corrupt record
        // from overflowing the stack.
        if depth > 256 {
            return Err("values nested too deep");
        }
        Ok(match self.c.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Int(self.c.u64()? as i64),
            4 => Value::Float(f64::from_bits(self.c.u64()?)),
            5 => Value::Str(self.str()?),
            6 => {
                let n = self.c.u32()? as usize;
                let mut a = Vec::with_capacity(n.min(self.c.b.len() - self.c.at));
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                self.c.elements += n;
                Value::Array(a)
            }
            7 => Value::Object(self.map(depth)?),
            _ => return Err("a value of an unknown kind"),
        })
    }
}

/// The format 0 writer, kept to test that such records still read.
#[cfg(test)]
pub(super) fn encode(events: &[Event], out: &mut Vec<u8>) {
    fn str(s: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
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
                a.iter().for_each(|v| value(v, out));
            }
            Value::Object(m) => {
                out.push(7);
                map(m, out);
            }
        }
    }
    let start = out.len();
    out.extend_from_slice(&[0; super::HEADER]);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
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
    let len = (out.len() - start - super::HEADER) as u32;
    let crc = crc32c::crc32c(&out[start + super::HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}
