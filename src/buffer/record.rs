//! The disk buffer's records: a batch of events in a compact binary form,
//! framed with its length and a CRC32C.
//!
//! ```text
//! frame:   u32 length of payload | u32 crc32c of payload | payload
//! payload: u32 (format << 28 | events) | event*
//! ```
//!
//! Format 1 (written since), most of it varints (LEB128; signed ones
//! zigzagged) and most of it differences from the event before in the same
//! record, because the events of a batch mostly share their source, type,
//! host and field names and have increasing ids and times:
//!
//! ```text
//! event:  u8 flags | id | varint time − previous time
//!         | [str type] | [str source] | [str subject] | [str host]
//!         | [map attrs] | value data
//! flags:  1 id given | 2 subject set | 4 type, 8 source, 16 subject,
//!         32 host as the previous event's (so not written) | 64 attrs set
//! id:     given: str | generated: varint (id >> 32) − previous, u32 id low bits
//! str:    varint length | UTF-8 bytes
//! map:    varint n | (key value)*
//! key:    0 (the key at this place in the previous event's map) | varint length + 1, bytes
//! value:  0 null | 1 false | 2 true | 3 varint int | 4 f64 | 5 str
//!         | 6 varint n value* | 7 map
//!         | 8 (the string at this place in the previous event)
//!         | 9 varint int − the int at this place in the previous event
//! ```
//!
//! Format 0 (the first one, still read): fixed-width integers, every string
//! in full (`u32 length | bytes`), see [`v0`].
//!
//! Decoding takes the payload as one `Bytes` and slices its strings out of
//! it: no copy per string. The attributes and keys that repeat (type,
//! source, host, subject, field names) are interned instead: no reference
//! count to move per event, and the encoders see the same string again.
//! A bit over half the bytes of format 0 for a typical log line: less to
//! checksum, write, read and copy.

#[cfg(test)]
mod tests;
mod v0;

use bytes::Bytes;

use crate::event::{Event, EventId, Map, Str, Value};

/// The frame header: length and checksum.
pub const HEADER: usize = 8;
/// A frame longer than this is taken for corruption.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// The format [`encode`] writes, in the top bits of a payload's first word.
pub const FORMAT: u32 = 1;
const COUNT_BITS: u32 = 28;

/// The number of events announced by a payload's first word.
pub fn count(word: u32) -> u32 {
    word & ((1 << COUNT_BITS) - 1)
}

/// The format of a payload, from its first word.
pub fn format(word: u32) -> u32 {
    word >> COUNT_BITS
}

/// Appends one framed record holding `events` to `out`. A batch holds far
/// fewer than 2^28 events (the channels' limits see to that).
pub fn encode(events: &[Event], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&((FORMAT << COUNT_BITS) | count(events.len() as u32)).to_le_bytes());
    let mut w = Writer { out, high: 0, time: 0 };
    let mut prev = None;
    for e in events {
        w.event(e, prev);
        prev = Some(e);
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

const ID_GIVEN: u8 = 1;
const SUBJECT: u8 = 2;
const SAME_TYPE: u8 = 4;
const SAME_SOURCE: u8 = 8;
const SAME_SUBJECT: u8 = 16;
const SAME_HOST: u8 = 32;
const ATTRS: u8 = 64;

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

// === encoding ===

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// The top 96 bits of the last generated id, and the last time.
    high: u128,
    time: i64,
}

impl Writer<'_> {
    fn varint(&mut self, mut n: u128) {
        while n >= 0x80 {
            self.out.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u128);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn event(&mut self, e: &Event, prev: Option<&Event>) {
        let same = |f: fn(&Event) -> &Str| prev.is_some_and(|p| f(p) == f(e));
        let mut flags = 0;
        if matches!(e.id, EventId::Given(_)) {
            flags |= ID_GIVEN;
        }
        if let Some(s) = &e.subject {
            flags |= SUBJECT;
            if prev.is_some_and(|p| p.subject.as_ref() == Some(s)) {
                flags |= SAME_SUBJECT;
            }
        }
        if same(|e| &e.ty) {
            flags |= SAME_TYPE;
        }
        if same(|e| &e.source) {
            flags |= SAME_SOURCE;
        }
        if same(|e| &e.host) {
            flags |= SAME_HOST;
        }
        if !e.attrs.is_empty() {
            flags |= ATTRS;
        }
        self.out.push(flags);
        match &e.id {
            EventId::Generated(id) => {
                // Ids of one generator increase: the top 96 bits (time and
                // counter) differ by little; the low 32 are random.
                let high = id >> 32;
                let delta = high as i128 - self.high as i128;
                self.varint(((delta << 1) ^ (delta >> 127)) as u128);
                self.out.extend_from_slice(&(*id as u32).to_le_bytes());
                self.high = high;
            }
            EventId::Given(s) => self.str(s),
        }
        self.varint(zigzag(e.time.wrapping_sub(self.time)) as u128);
        self.time = e.time;
        if flags & SAME_TYPE == 0 {
            self.str(&e.ty);
        }
        if flags & SAME_SOURCE == 0 {
            self.str(&e.source);
        }
        if let Some(s) = &e.subject
            && flags & SAME_SUBJECT == 0
        {
            self.str(s);
        }
        if flags & SAME_HOST == 0 {
            self.str(&e.host);
        }
        if flags & ATTRS != 0 {
            self.map(&e.attrs, prev.map(|p| &p.attrs));
        }
        self.value(&e.data, prev.map(|p| &p.data));
    }

    /// `prev`: the map at the same place in the previous event, whose keys
    /// this one likely repeats.
    fn map(&mut self, m: &Map, prev: Option<&Map>) {
        self.varint(m.len() as u128);
        for (i, (k, v)) in m.iter().enumerate() {
            let before = prev.and_then(|p| p.entry_at(i));
            match before {
                Some((pk, _)) if pk == k => self.out.push(0),
                _ => {
                    self.varint(k.len() as u128 + 1);
                    self.out.extend_from_slice(k.as_bytes());
                }
            }
            self.value(v, before.map(|(_, pv)| pv));
        }
    }

    fn value(&mut self, v: &Value, prev: Option<&Value>) {
        match v {
            Value::Null => self.out.push(0),
            Value::Bool(false) => self.out.push(1),
            Value::Bool(true) => self.out.push(2),
            Value::Int(n) => match prev {
                // A counter or an offset: the difference is shorter.
                Some(Value::Int(p)) if zigzag(n.wrapping_sub(*p)) < zigzag(*n) => {
                    self.out.push(9);
                    self.varint(zigzag(n.wrapping_sub(*p)) as u128);
                }
                _ => {
                    self.out.push(3);
                    self.varint(zigzag(*n) as u128);
                }
            },
            Value::Float(f) => {
                self.out.push(4);
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Str(s) => match prev {
                // A file name, a unit, a status word: repeats.
                Some(Value::Str(p)) if p == s => self.out.push(8),
                _ => {
                    self.out.push(5);
                    self.str(s);
                }
            },
            Value::Array(a) => {
                self.out.push(6);
                self.varint(a.len() as u128);
                let before = match prev {
                    Some(Value::Array(p)) => p.as_slice(),
                    _ => &[],
                };
                for (i, v) in a.iter().enumerate() {
                    self.value(v, before.get(i));
                }
            }
            Value::Object(m) => {
                self.out.push(7);
                self.map(m, prev.and_then(Value::as_object));
            }
        }
    }
}

// === decoding ===

/// What is wrong with a record. A constant: the decoder's small functions
/// return their results in registers, which a `String` error prevents.
type Bad = &'static str;

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
    let mut r = Cursor { b: payload, at: 0, entries: 0, elements: 0 };
    let word = r.u32()?;
    let n = count(word) as usize;
    // An event takes at least 4 bytes in format 1, 40 in format 0: no
    // allocation from a bogus count.
    let format = format(word);
    let least = if format == 0 { 40 } else { 4 };
    let mut events = Vec::with_capacity(n.min(r.b.len() / least + 1));
    match format {
        0 => v0::decode(&mut r, n, &mut events)?,
        FORMAT => {
            let mut state = Reader { c: &mut r, high: 0, time: 0 };
            for _ in 0..n {
                state.event(&mut events)?;
            }
        }
        f => return Err(format!("a record of format {f}, newer than this version reads")),
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

/// A payload being read, shared by the formats.
struct Cursor {
    b: Bytes,
    at: usize,
    /// Map entries and array elements read, for the size estimate.
    entries: usize,
    elements: usize,
}

impl Cursor {
    fn take(&mut self, n: usize) -> Result<&[u8], Bad> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("a record cut short")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, Bad> {
        let b = *self.b.get(self.at).ok_or("a record cut short")?;
        self.at += 1;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A varint of up to 64 bits: a length, a count, a number.
    #[inline]
    fn varint(&mut self) -> Result<u64, Bad> {
        u64::try_from(self.varint128()?).map_err(|_| "a number too large")
    }

    /// A varint of up to 128 bits (an id's difference).
    #[inline]
    fn varint128(&mut self) -> Result<u128, Bad> {
        // Most are a single byte (lengths, counts, the difference between
        // the ids of one generator): read without the loop.
        if let Some(&b) = self.b.get(self.at)
            && b < 0x80
        {
            self.at += 1;
            return Ok(u128::from(b));
        }
        self.varint128_long()
    }

    fn varint128_long(&mut self) -> Result<u128, Bad> {
        let mut n = 0u128;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            n |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number too long")
    }

    /// A varint that must fit `usize`: a length or a count.
    #[inline]
    fn len(&mut self) -> Result<usize, Bad> {
        usize::try_from(self.varint()?).map_err(|_| "a length too large")
    }

    /// The next `n` bytes as a string sharing the payload's memory.
    fn str_of(&mut self, n: usize) -> Result<Str, Bad> {
        let start = self.at;
        self.take(n)?;
        Str::from_utf8(self.b.slice(start..start + n)).map_err(|_| "a string that is not UTF-8")
    }

    /// The next `n` bytes as a string that likely repeats (a name):
    /// interned while the table has room.
    fn name_of(&mut self, n: usize) -> Result<Str, Bad> {
        let start = self.at;
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes).map_err(|_| "a string that is not UTF-8")?;
        if let Some(s) = crate::event::intern_some(text) {
            return Ok(Str::from_static(s));
        }
        Str::from_utf8(self.b.slice(start..start + n)).map_err(|_| "a string that is not UTF-8")
    }
}

/// Reads format 1, each event against the one before.
struct Reader<'a> {
    c: &'a mut Cursor,
    high: u128,
    time: i64,
}

const MISSING: Bad = "a record that refers to an event before its first";

impl Reader<'_> {
    fn name(&mut self) -> Result<Str, Bad> {
        let n = self.c.len()?;
        self.c.name_of(n)
    }

    /// Decodes the next event and appends it to `events`, whose last one
    /// is the event before it.
    fn event(&mut self, events: &mut Vec<Event>) -> Result<(), Bad> {
        let prev = events.last();
        let flags = self.c.u8()?;
        let id = if flags & ID_GIVEN != 0 {
            let n = self.c.len()?;
            EventId::Given(self.c.str_of(n)?)
        } else {
            let z = self.c.varint128()?;
            let delta = (z >> 1) as i128 ^ -((z & 1) as i128);
            let high = (self.high as i128)
                .checked_add(delta)
                .and_then(|h| u128::try_from(h).ok())
                .filter(|h| *h < 1 << 96)
                .ok_or("an id out of range")?;
            self.high = high;
            EventId::Generated(high << 32 | u128::from(self.c.u32()?))
        };
        self.time = self.time.wrapping_add(unzigzag(self.c.varint()?));
        let ty = match flags & SAME_TYPE {
            0 => self.name()?,
            _ => prev.ok_or(MISSING)?.ty.clone(),
        };
        let source = match flags & SAME_SOURCE {
            0 => self.name()?,
            _ => prev.ok_or(MISSING)?.source.clone(),
        };
        let subject = match (flags & SUBJECT, flags & SAME_SUBJECT) {
            (0, _) => None,
            (_, 0) => Some(self.name()?),
            _ => Some(prev.and_then(|p| p.subject.clone()).ok_or(MISSING)?),
        };
        let host = match flags & SAME_HOST {
            0 => self.name()?,
            _ => prev.ok_or(MISSING)?.host.clone(),
        };
        let attrs = match flags & ATTRS {
            0 => Map::new(),
            _ => self.map(prev.map(|p| &p.attrs), 0)?,
        };
        let mut data = Value::Null;
        self.value(prev.map(|p| &p.data), 0, &mut data)?;
        // Built where it is stored: an event returned, then pushed, was
        // copied (a quarter KiB) twice on the way.
        events.push(Event { id, time: self.time, ty, source, subject, host, attrs, data });
        Ok(())
    }

    fn map(&mut self, prev: Option<&Map>, depth: usize) -> Result<Map, Bad> {
        let n = self.c.len()?;
        let mut entries = Vec::with_capacity(n.min(self.c.b.len() - self.c.at));
        for i in 0..n {
            let before = prev.and_then(|p| p.entry_at(i));
            let k = match self.c.len()? {
                0 => before.ok_or("a key that refers to none before")?.0.clone(),
                n => self.c.name_of(n - 1)?,
            };
            // The value is decoded in place: moving it out of a returned
            // `Result` cost more than decoding it.
            entries.push((k, Value::Null));
            if let Some((_, slot)) = entries.last_mut() {
                self.value(before.map(|(_, v)| v), depth + 1, slot)?;
            }
        }
        // Counted once read: a bogus count fails above, it does not overflow.
        self.c.entries += n;
        Ok(Map::from_entries(entries))
    }

    fn value(&mut self, prev: Option<&Value>, depth: usize, out: &mut Value) -> Result<(), Bad> {
        // JSON nests, but not without end: a bound keeps a corrupt record
        // from overflowing the stack.
        if depth > 256 {
            return Err("values nested too deep");
        }
        *out = match self.c.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Int(unzigzag(self.c.varint()?)),
            4 => Value::Float(f64::from_bits(self.c.u64()?)),
            5 => {
                let n = self.c.len()?;
                Value::Str(self.c.str_of(n)?)
            }
            6 => {
                let n = self.c.len()?;
                let before = match prev {
                    Some(Value::Array(p)) => p.as_slice(),
                    _ => &[],
                };
                let mut a = Vec::with_capacity(n.min(self.c.b.len() - self.c.at));
                for i in 0..n {
                    a.push(Value::Null);
                    if let Some(slot) = a.last_mut() {
                        self.value(before.get(i), depth + 1, slot)?;
                    }
                }
                self.c.elements += n;
                Value::Array(a)
            }
            7 => Value::Object(self.map(prev.and_then(Value::as_object), depth)?),
            8 => match prev {
                Some(Value::Str(p)) => Value::Str(p.clone()),
                _ => return Err("a string that refers to none before"),
            },
            9 => match prev {
                Some(Value::Int(p)) => Value::Int(p.wrapping_add(unzigzag(self.c.varint()?))),
                _ => return Err("a number that refers to none before"),
            },
            _ => return Err("a value of an unknown kind"),
        };
        Ok(())
    }
}
