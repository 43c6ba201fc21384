//! The streaming HTTP/1 parser, driven the way `flows` and `proxy` drive
//! it: bytes arrive in pieces, `next` is called until it needs more, the
//! consumed bytes are dropped.
//!
//! Input: `[flags, expects, k, ctrl[k]..., data...]`. `flags & 1` picks the
//! side; for responses `(flags >> 1) & 7` pending requests are queued with
//! HEAD/CONNECT taken from the bits of `expects`. Each control byte cuts
//! the next piece of `data` (its low 5 bits: 1 to 31 bytes, 31 meaning
//! 4096) and may first call `skip` (a lost piece), `reset` or `close`.
//!
//! Checks:
//! - `next` never consumes more than it was given, and `Item::Body` never
//!   consumes nothing;
//! - no endless loop: a zero-byte item is never followed by another one
//!   without a change of state;
//! - each `Item::End { body_bytes }` is no more than the bytes consumed
//!   (and skipped) since its head, so the sum is no more than the bytes fed;
//! - a `Head` reports no more bytes than it consumed;
//! - a caller's buffer stays bounded: `Ok(None)` never leaves more than
//!   `2 * MAX_HEAD` (blank lines, then a head) plus a piece pending.
#![no_main]

use hostwatch::sources::http_capture::parser::{Expect, Item, MAX_HEAD, Parser, Side};
use libfuzzer_sys::fuzz_target;

struct Run {
    p: Parser,
    /// Bytes consumed (or skipped) since the last head, end or reset.
    since: u64,
    /// Totals.
    fed: u64,
    skipped: u64,
    body_total: u64,
    /// The previous item consumed nothing; the state it left.
    zero: Option<(bool, bool, usize)>,
}

impl Run {
    fn state(&self) -> (bool, bool, usize) {
        (self.p.at_head(), self.p.upgraded(), self.p.expect.len())
    }

    fn end(&mut self, body_bytes: u64) {
        assert!(
            body_bytes <= self.since,
            "End {{ body_bytes: {body_bytes} }} after only {} bytes since the head",
            self.since
        );
        self.body_total += body_bytes;
        assert!(self.body_total <= self.fed + self.skipped, "more body than bytes fed");
        self.since = 0;
    }

    /// Parses `buf` as far as it goes; returns the bytes consumed, and
    /// whether an error stopped it.
    fn parse(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut at = 0;
        loop {
            let before = self.state();
            match self.p.next(&buf[at..]) {
                Ok(Some((item, n))) => {
                    assert!(n <= buf.len() - at, "consumed {n} of {} bytes", buf.len() - at);
                    at += n;
                    self.since += n as u64;
                    if n == 0 {
                        if let Some(prev) = self.zero {
                            assert!(
                                prev != self.state(),
                                "two zero-byte items in a row, the state unchanged: {prev:?}, {item:?}"
                            );
                        }
                        assert!(before != self.state(), "a zero-byte {item:?} that changed no state");
                        self.zero = Some(self.state());
                    } else {
                        self.zero = None;
                    }
                    match item {
                        Item::Head(h) => {
                            assert!(h.bytes <= n, "a head of {} bytes in {n}", h.bytes);
                            assert!(n > 0, "an empty head");
                            self.since = 0;
                        }
                        Item::Body => assert!(n > 0, "an empty Body item"),
                        Item::End { body_bytes } => self.end(body_bytes),
                    }
                    // Like `flows::parse`: an item with nothing left to read
                    // and nothing consumed ends the round.
                    if n == 0 && at >= buf.len() {
                        return (at, false);
                    }
                }
                Ok(None) => {
                    self.zero = None;
                    return (at, false);
                }
                Err(_) => {
                    self.zero = None;
                    return (at, true);
                }
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let side = if input[0] & 1 == 0 { Side::Request } else { Side::Response };
    let mut p = Parser::new(side);
    if side == Side::Response {
        for i in 0..(input[0] >> 1) & 7 {
            let bits = input[1] >> (i % 4 * 2);
            p.expect.push_back(Expect { head_request: bits & 1 != 0, connect: bits & 2 != 0 });
        }
    }
    let k = (input[2] as usize % 32).min(input.len() - 3);
    let ctrl = &input[3..3 + k];
    let data = &input[3 + k..];

    let mut run = Run { p, since: 0, fed: 0, skipped: 0, body_total: 0, zero: None };
    let mut buf: Vec<u8> = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let (size, op) = if ctrl.is_empty() {
            (rest.len(), 0)
        } else {
            let c = ctrl[i % ctrl.len()];
            let size = match c & 0x1f {
                0x1f => 4096,
                s => s as usize + 1,
            };
            (size, c >> 5)
        };
        i += 1;
        let (piece, next) = rest.split_at(size.min(rest.len()));
        rest = next;
        match op {
            // A lost piece, the way `flows` reports a gap: the parser goes on
            // if it can, or the direction starts over at a head.
            5 => {
                if buf.is_empty() && run.p.skip(piece.len() as u64) {
                    run.skipped += piece.len() as u64;
                    run.since += piece.len() as u64;
                } else {
                    buf.clear();
                    run.p.reset();
                    run.since = 0;
                    run.zero = None;
                }
                continue;
            }
            6 => {
                run.p.reset();
                buf.clear();
                run.since = 0;
                run.zero = None;
            }
            7 => {
                if let Some(item) = run.p.close() {
                    let Item::End { body_bytes } = item else { panic!("close gave {item:?}") };
                    run.end(body_bytes);
                }
                run.zero = None;
            }
            _ => {}
        }
        run.fed += piece.len() as u64;
        buf.extend_from_slice(piece);
        let (n, err) = run.parse(&buf);
        buf.drain(..n);
        if err {
            // As `flows` does: drop what is buffered, start over at a head.
            buf.clear();
            run.p.reset();
            run.since = 0;
        } else {
            // Blank lines (up to MAX_HEAD) may precede a head of up to
            // MAX_HEAD; anything past that is unbounded buffering.
            assert!(
                buf.len() <= 2 * MAX_HEAD + 4096 + 1,
                "{} bytes buffered while the parser waits for more",
                buf.len()
            );
        }
    }
    if let Some(item) = run.p.close() {
        let Item::End { body_bytes } = item else { panic!("close gave {item:?}") };
        run.end(body_bytes);
    }
});
