//! Splitting a file's bytes into lines.
//!
//! Reads go into fresh buffers that start with the previous read's unfinished
//! line, so that every complete line is one contiguous slice of a buffer and
//! becomes an event's message without a copy. A line longer than
//! `max_line_bytes` is cut there and the rest of it skipped as it arrives:
//! it is never held whole.

use std::io::Read;

use bytes::Bytes;

/// How lines end in the file's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Newline {
    /// `\n`, in UTF-8 and every ASCII-compatible encoding.
    Byte,
    /// `\n` as a UTF-16 little-endian unit: `0A 00` at an even offset.
    Utf16Le,
    /// `00 0A` at an even offset.
    Utf16Be,
}

impl Newline {
    pub fn for_encoding(encoding: Option<&'static encoding_rs::Encoding>) -> Newline {
        match encoding {
            Some(e) if e == encoding_rs::UTF_16LE => Newline::Utf16Le,
            Some(e) if e == encoding_rs::UTF_16BE => Newline::Utf16Be,
            _ => Newline::Byte,
        }
    }
}

/// One complete line: its raw bytes without the line ending.
#[derive(Debug, PartialEq)]
pub struct Line {
    /// Where the line starts in the file.
    pub offset: u64,
    pub bytes: Bytes,
    /// Cut at `max_line_bytes`.
    pub truncated: bool,
}

#[derive(Clone)]
pub struct Lines {
    newline: Newline,
    max_line: usize,
    chunk: usize,
    /// The unfinished line, and where in the file it starts.
    partial: Vec<u8>,
    partial_at: u64,
    /// Skipping the rest of an over-long line up to its end.
    discarding: bool,
    /// Where the next read continues.
    next: u64,
}

impl Lines {
    pub fn new(newline: Newline, max_line: usize, chunk: usize, at: u64) -> Self {
        Lines { newline, max_line, chunk, partial: Vec::new(), partial_at: at, discarding: false, next: at }
    }

    /// Where the next read continues in the file.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Every byte before this offset belongs to a line given out (or skipped):
    /// the first byte of the unfinished line.
    pub fn consumed(&self) -> u64 {
        if self.discarding { self.next } else { self.partial_at }
    }

    /// Reads once (up to the chunk size) and gives out the complete lines.
    /// Returns the bytes read; 0 at the end of the file.
    pub fn read(&mut self, file: &mut impl Read, emit: &mut impl FnMut(Line)) -> std::io::Result<usize> {
        let mut buf = Vec::with_capacity(self.partial.len() + self.chunk);
        buf.extend_from_slice(&self.partial);
        let keep = buf.len();
        // `take` + `read_to_end` reads into the spare capacity without
        // zeroing it first.
        let n = file.by_ref().take(self.chunk as u64).read_to_end(&mut buf)?;
        if n == 0 {
            return Ok(0);
        }
        self.next += n as u64;
        self.partial.clear();
        // The lines given out hold the buffer until their events are
        // delivered: a short read (a file that grows slowly) must not keep
        // a whole chunk's capacity alive per batch of a few lines.
        if buf.len() < self.chunk / 4 {
            buf.shrink_to_fit();
        }
        self.split(Bytes::from(buf), keep, emit);
        Ok(n)
    }

    /// Gives out the unfinished line as a line: the file will not grow any
    /// more (it was rotated away or deleted).
    pub fn finish(&mut self, emit: &mut impl FnMut(Line)) {
        if !self.partial.is_empty() && !self.discarding {
            let bytes = Bytes::from(std::mem::take(&mut self.partial));
            emit(Line { offset: self.partial_at, bytes, truncated: false });
        }
        self.partial.clear();
        self.discarding = false;
        self.partial_at = self.next;
    }

    /// `buf` holds the old partial line (its first `old` bytes) and new data.
    fn split(&mut self, buf: Bytes, old: usize, emit: &mut impl FnMut(Line)) {
        let base = self.partial_at;
        let mut start = 0;
        // Search only the new bytes: the old ones held no line end.
        let mut from = old.saturating_sub(1);
        while let Some(end) = self.find_newline(&buf, from, base) {
            let width = if self.newline == Newline::Byte { 1 } else { 2 };
            if self.discarding {
                self.discarding = false;
            } else {
                let mut line_end = end;
                if self.ends_with_cr(&buf[start..line_end]) {
                    line_end -= if self.newline == Newline::Byte { 1 } else { 2 };
                }
                let len = line_end - start;
                let truncated = len > self.max_line;
                let cut = if truncated { start + self.max_line } else { line_end };
                emit(Line { offset: base + start as u64, bytes: buf.slice(start..cut), truncated });
            }
            start = end + width;
            from = start;
        }
        self.partial_at = base + start as u64;
        let rest = &buf[start..];
        if self.discarding {
            self.partial_at = base + buf.len() as u64;
        } else if rest.len() > self.max_line {
            // Too long already: give out its beginning, skip the rest.
            emit(Line {
                offset: self.partial_at,
                bytes: buf.slice(start..start + self.max_line),
                truncated: true,
            });
            self.discarding = true;
            self.partial_at = base + buf.len() as u64;
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    fn find_newline(&self, buf: &[u8], from: usize, base: u64) -> Option<usize> {
        match self.newline {
            Newline::Byte => memchr::memchr(b'\n', buf.get(from..)?).map(|i| from + i),
            Newline::Utf16Le | Newline::Utf16Be => {
                let (lo, hi) = if self.newline == Newline::Utf16Le { (0x0A, 0x00) } else { (0x00, 0x0A) };
                let mut i = from;
                // Units start at even file offsets.
                if (base + i as u64) % 2 == 1 {
                    i += 1;
                }
                while i + 1 < buf.len() {
                    if buf[i] == lo && buf[i + 1] == hi {
                        return Some(i);
                    }
                    i += 2;
                }
                None
            }
        }
    }

    fn ends_with_cr(&self, line: &[u8]) -> bool {
        match self.newline {
            Newline::Byte => line.last() == Some(&b'\r'),
            Newline::Utf16Le => line.len() >= 2 && line[line.len() - 2..] == [0x0D, 0x00],
            Newline::Utf16Be => line.len() >= 2 && line[line.len() - 2..] == [0x00, 0x0D],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(newline: Newline, max: usize, chunk: usize, input: &[u8]) -> (Vec<(u64, Vec<u8>, bool)>, Lines) {
        let mut lines = Lines::new(newline, max, chunk, 0);
        let mut out = Vec::new();
        let mut reader = input;
        while lines
            .read(&mut reader, &mut |l: Line| out.push((l.offset, l.bytes.to_vec(), l.truncated)))
            .unwrap()
            > 0
        {}
        (out, lines)
    }

    #[test]
    fn splits_lf_and_crlf_across_reads_with_offsets() {
        let input = b"first\r\nsecond\nthird line\nunfinished";
        for chunk in [1, 2, 3, 7, 64] {
            let (out, lines) = run(Newline::Byte, 100, chunk, input);
            assert_eq!(
                out,
                vec![
                    (0, b"first".to_vec(), false),
                    (7, b"second".to_vec(), false),
                    (14, b"third line".to_vec(), false)
                ],
                "chunk {chunk}"
            );
            assert_eq!(lines.consumed(), 25, "the unfinished line waits");
            assert_eq!(lines.position(), input.len() as u64);
        }
    }

    #[test]
    fn long_lines_are_cut_and_never_held_whole() {
        let mut input = vec![b'x'; 10_000];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        for chunk in [3, 100, 20_000] {
            let (out, lines) = run(Newline::Byte, 16, chunk, &input);
            assert_eq!(out.len(), 2, "chunk {chunk}");
            assert_eq!(out[0], (0, vec![b'x'; 16], true));
            assert_eq!(out[1], (10_001, b"next".to_vec(), false));
            assert!(lines.partial.len() <= 16 + chunk);
            assert_eq!(lines.consumed(), input.len() as u64);
        }
    }

    #[test]
    fn finish_gives_out_the_last_line() {
        let (_, mut lines) = run(Newline::Byte, 100, 8, b"a\nlast");
        let mut out = Vec::new();
        lines.finish(&mut |l| out.push(l));
        assert_eq!(out[0].offset, 2);
        assert_eq!(&out[0].bytes[..], b"last");
        assert_eq!(lines.consumed(), 6);
    }

    #[test]
    fn utf16_lines() {
        let text = "héllo\r\nwörld\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let (out, _) = run(Newline::Utf16Le, 100, 5, &le);
        assert_eq!(out.len(), 2);
        assert_eq!(encoding_rs::UTF_16LE.decode_without_bom_handling(&out[0].1).0, "héllo");
        assert_eq!(out[1].0, 14);
        let be: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        let (out, _) = run(Newline::Utf16Be, 100, 3, &be);
        assert_eq!(encoding_rs::UTF_16BE.decode_without_bom_handling(&out[1].1).0, "wörld");
    }
}
