//! The text helpers the formats share: fields as slices of the line (no
//! copies), `-` as null, backslash escapes, and a cursor over words, quoted
//! and bracketed fields.

use bytes::Bytes;

use crate::event::{Str, Value};

/// A slice of `whole` as a `Str` sharing its memory (`part` must lie in it).
pub(super) fn slice(whole: &Str, part: &str) -> Str {
    whole.slice_of(part)
}

pub(super) fn text_or_null(whole: &Str, part: &str) -> Value {
    if part == "-" { Value::Null } else { Value::Str(slice(whole, part)) }
}

/// A quoted field without its backslash escapes (`\"`, `\\`, `\xHH`);
/// shared with the line when it has none.
pub(super) fn unescape(line: &Str, part: &str) -> Str {
    if !part.contains('\\') {
        return slice(line, part);
    }
    let mut out = Vec::with_capacity(part.len());
    let b = part.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'x' if i + 3 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                    if let Ok(v) = u8::from_str_radix(hex, 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                    out.push(b'\\');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 2;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Str::from_utf8_lossy(Bytes::from(out))
}

pub(super) struct Cursor<'a> {
    pub(super) s: &'a str,
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn skip_spaces(&mut self) {
        let b = self.s.as_bytes();
        while self.at < b.len() && b[self.at] == b' ' {
            self.at += 1;
        }
    }

    /// The next run of non-spaces.
    pub(super) fn word(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let rest = &self.s[self.at..];
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b' ', rest.as_bytes()).unwrap_or(rest.len());
        self.at += end;
        Some(&rest[..end])
    }

    /// `[text]`: the text.
    pub(super) fn delimited(&mut self, open: u8, close: u8) -> Option<&'a str> {
        self.skip_spaces();
        let b = self.s.as_bytes();
        if b.get(self.at) != Some(&open) {
            return None;
        }
        let start = self.at + 1;
        let end = start + memchr::memchr(close, &b[start..])?;
        self.at = end + 1;
        Some(&self.s[start..end])
    }

    /// `"text"` where `\"` does not end it: the text, escapes included.
    pub(super) fn quoted(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let b = self.s.as_bytes();
        if b.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let mut i = start;
        loop {
            i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            self.at = i + 1;
            return Some(&self.s[start..i]);
        }
    }
}
