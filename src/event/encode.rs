//! Encodings of events: the structured-mode CloudEvents JSON of one event and
//! the batch framings built on it.
//!
//! Encoding writes straight into a caller's buffer: no intermediate
//! `serde_json::Value`, no allocation per event. The time string is cached
//! because the events of a batch usually share their time.

use serde::{Deserialize, Serialize};

use super::{Event, EventId, Str, Value, id, time};

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
    head: Head,
}

impl Encoder {
    pub fn new(codec: Codec) -> Self {
        Encoder { codec, head: Head::default() }
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
                    _ => write_value(out, &event.data),
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
    ///
    /// The attributes events of a batch usually share (source, type, time,
    /// subject, host) come first, and their JSON is kept from one event to
    /// the next: most events then cost a comparison and a copy for them.
    pub fn structured(&mut self, event: &Event, out: &mut Vec<u8>) {
        let has_data = !matches!(event.data, Value::Null);
        let default_type = has_data && event.attrs.get("datacontenttype").is_none();
        if !self.head.matches(event, default_type) {
            self.head.build(event, default_type);
        }
        out.extend_from_slice(&self.head.json);
        out.extend_from_slice(b",\"id\":");
        match &event.id {
            EventId::Generated(n) => {
                out.push(b'"');
                id::format_id(*n, out);
                out.push(b'"');
            }
            EventId::Given(s) => write_str(out, s),
        }
        for (k, v) in event.attrs.iter() {
            out.push(b',');
            write_str(out, k);
            out.push(b':');
            write_value(out, v);
        }
        if has_data {
            out.extend_from_slice(b",\"data\":");
            write_value(out, &event.data);
        }
        out.push(b'}');
    }
}

/// The JSON of the attributes consecutive events share, and what it was
/// made from.
#[derive(Debug, Default)]
struct Head {
    source: Str,
    ty: Str,
    subject: Option<Str>,
    host: Str,
    time: i64,
    default_type: bool,
    json: Vec<u8>,
}

impl Head {
    fn matches(&self, e: &Event, default_type: bool) -> bool {
        !self.json.is_empty()
            && self.time == e.time
            && self.default_type == default_type
            // `Str` equality looks at the pointers first: these are most
            // often the same memory.
            && self.source == e.source
            && self.ty == e.ty
            && self.host == e.host
            && self.subject == e.subject
    }

    fn build(&mut self, e: &Event, default_type: bool) {
        self.source = e.source.clone();
        self.ty = e.ty.clone();
        self.subject = e.subject.clone();
        self.host = e.host.clone();
        self.time = e.time;
        self.default_type = default_type;
        let out = &mut self.json;
        out.clear();
        out.extend_from_slice(b"{\"specversion\":\"1.0\",\"source\":");
        write_str(out, &e.source);
        out.extend_from_slice(b",\"type\":");
        write_str(out, &e.ty);
        out.extend_from_slice(b",\"time\":\"");
        time::format_rfc3339(e.time, out);
        out.push(b'"');
        if let Some(subject) = &e.subject {
            out.extend_from_slice(b",\"subject\":");
            write_str(out, subject);
        }
        out.extend_from_slice(b",\"host\":");
        write_str(out, &e.host);
        if default_type {
            out.extend_from_slice(b",\"datacontenttype\":\"application/json\"");
        }
    }
}

/// Writes a JSON string: quotes, and escapes where JSON requires them.
///
/// The hottest code of the agent: every string of every event passes here.
/// On x86-64 it looks at 16 bytes at a time (SSE2) and copies them whole to
/// the output before it knows whether they need escaping, so a run of plain
/// text costs one load and one store per 16 bytes and each escape one step.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    #[cfg(target_arch = "x86_64")]
    if s.len() <= sse2::MAX_LEN {
        sse2::write_str(out, s.as_bytes());
        return;
    }
    write_str_portable(out, s);
}

/// The same, eight bytes at a time with word tricks. Of the flags they
/// raise, the lowest is always exact (a false one can only follow a true
/// one), so each escape costs one step, not one per byte of its word.
fn write_str_portable(out: &mut Vec<u8>, s: &str) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * b'"' as u64);
        let backslash = w ^ (ONES * b'\\' as u64);
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGHS;
        if flags == 0 {
            i += 8;
            continue;
        }
        let at = i + (flags.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..at]);
        push_escape(out, bytes[at]);
        start = at + 1;
        i = at + 1;
    }
    while i < bytes.len() {
        if ESCAPE[bytes[i] as usize] != 0 {
            out.extend_from_slice(&bytes[start..i]);
            push_escape(out, bytes[i]);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Sixteen bytes at a time with SSE2, which every x86-64 processor has.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_storeu_si128,
    };

    use super::ESCAPE;

    /// Longer strings take the portable path: this one reserves the worst
    /// case (every byte escaped) up front.
    pub const MAX_LEN: usize = 64 * 1024;

    /// Bit `k` is set when byte `k` of the 16 must be escaped.
    #[inline]
    fn flags(v: __m128i) -> u32 {
        // SAFETY: SSE2 is part of the x86-64 baseline; these only compute.
        unsafe {
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // v <= 0x1f, unsigned: min(v, 0x1f) == v.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }

    pub fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
        debug_assert!(bytes.len() <= MAX_LEN);
        // Worst case: every byte becomes `\u00XX`; plus the quotes, plus the
        // 16 bytes a full-width store may write past the end.
        out.reserve(bytes.len() * 6 + 2 + 16);
        let len = bytes.len();
        let src = bytes.as_ptr();
        // SAFETY: every write below is at `w + n` with `w + n` at most
        // `old len + 6 * (bytes read so far) + 2 + 16`, inside the capacity
        // reserved above; every read is inside `bytes` (`i + 16 <= len` for
        // the 16-byte loads). `set_len` covers only bytes written.
        unsafe {
            let dst = out.as_mut_ptr();
            let mut w = out.len();
            *dst.add(w) = b'"';
            w += 1;
            let mut i = 0;
            while i + 16 <= len {
                let v = _mm_loadu_si128(src.add(i).cast());
                _mm_storeu_si128(dst.add(w).cast(), v);
                let m = flags(v);
                if m == 0 {
                    i += 16;
                    w += 16;
                    continue;
                }
                // The bytes before the first flagged one are in place.
                let k = m.trailing_zeros() as usize;
                i += k;
                w += k;
                w += escape_at(dst.add(w), *src.add(i));
                i += 1;
            }
            // The last 0 to 15 bytes: the same, from a copy padded with
            // zeros, whose flags past the end are masked off.
            if i < len {
                let rest = len - i;
                let mut tail = [0u8; 16];
                std::ptr::copy_nonoverlapping(src.add(i), tail.as_mut_ptr(), rest);
                let v = _mm_loadu_si128(tail.as_ptr().cast());
                _mm_storeu_si128(dst.add(w).cast(), v);
                if flags(v) & ((1u32 << rest) - 1) == 0 {
                    // Already in place.
                    w += rest;
                } else {
                    for &b in &tail[..rest] {
                        if ESCAPE[b as usize] == 0 {
                            *dst.add(w) = b;
                            w += 1;
                        } else {
                            w += escape_at(dst.add(w), b);
                        }
                    }
                }
            }
            *dst.add(w) = b'"';
            w += 1;
            out.set_len(w);
        }
    }

    /// Writes the escape of `byte` at `dst`; returns its length (2 or 6).
    ///
    /// # Safety
    /// `dst` must have room for 6 bytes.
    #[inline]
    unsafe fn escape_at(dst: *mut u8, byte: u8) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let esc = ESCAPE[byte as usize];
        // SAFETY: the caller guarantees room for 6 bytes.
        unsafe {
            *dst = b'\\';
            if esc == b'u' {
                *dst.add(1) = b'u';
                *dst.add(2) = b'0';
                *dst.add(3) = b'0';
                *dst.add(4) = HEX[(byte >> 4) as usize];
                *dst.add(5) = HEX[(byte & 15) as usize];
                6
            } else {
                *dst.add(1) = esc;
                2
            }
        }
    }
}

/// For each byte: 0 when it stands as is, else the letter after `\`
/// (`u` for the `\u00XX` form).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let esc = ESCAPE[byte as usize];
    if esc == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(byte >> 4) as usize],
            HEX[(byte & 15) as usize],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

/// Writes a value as JSON.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        // JSON has no NaN or infinity.
        Value::Float(f) if !f.is_finite() => out.extend_from_slice(b"null"),
        Value::Float(f) => {
            let result = serde_json::to_writer(&mut *out, f);
            debug_assert!(result.is_ok());
        }
        Value::Str(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
    }
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
    fn strings_are_escaped_like_serde_json() {
        let cases = [
            "",
            "plain ascii text that is longer than eight bytes",
            "quote\" backslash\\ newline\n tab\t cr\r",
            "\u{0}\u{1}\u{1f}\u{7f} bell\u{8} ff\u{c}",
            "unicode: héllo wörld ✓ 😀 and \"quotes\" at the end\"",
            "12345678\"2345678\\",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "ab\"\\\n\t\u{0}\u{1f} é✓😀xyz0123456789".chars().collect();
        let random: Vec<String> = (0..2000)
            .map(|_| (0..rng.usize(0..80)).map(|_| alphabet[rng.usize(..alphabet.len())]).collect())
            .collect();
        for s in cases.iter().copied().chain(random.iter().map(String::as_str)) {
            // After some content, so that offsets inside the output vary too.
            let mut out = b"prefix".to_vec();
            write_str(&mut out, s);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(
                String::from_utf8(out[6..].to_vec()).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
            let mut out = Vec::new();
            write_str_portable(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        let v: Value = serde_json::from_str(r#"{"a":[1,-2,3.5,true,null,"x\ty"],"b":{}}"#).unwrap();
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn text_writes_the_message() {
        let mut enc = Encoder::new(Codec::Text);
        let mut out = Vec::new();
        enc.event(&sample(), true, &mut out);
        assert_eq!(out, b"GET /a \"q\" 200\n");
    }
}
