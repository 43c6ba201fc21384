//! One `Reassembler` driven by a list of operations. Every segment carries
//! the bytes `byte_at(seq)` for its sequence numbers, so retransmissions and
//! overlaps always agree, and every delivered byte can be checked.
//!
//! Checks:
//! - the output is one continuous stream: each `Chunk::Data` starts where
//!   the previous data or gap ended, and `next_seq()` agrees with it;
//! - every delivered byte was carried by some segment at that position and
//!   has that segment's value;
//! - gaps are not empty and less than 2^31;
//! - `held_bytes() <= max_held + the largest segment fed` (skipped with
//!   `FUZZ_NO_HELD_CHECK=1` in the environment, to look past that bug);
//! - nothing is held after `finish`.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use hostwatch::sources::http_capture::reassembly::{Chunk, Reassembler};
use libfuzzer_sys::fuzz_target;

fn byte_at(seq: u32) -> u8 {
    seq.wrapping_mul(31).wrapping_add(7) as u8
}

#[derive(Arbitrary, Debug)]
enum Seq {
    /// `base + n`: most segments land near each other.
    Near(u16),
    /// `base - n`: before the stream (old retransmissions).
    Before(u16),
    /// Anywhere in sequence space.
    Abs(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Syn(Seq),
    /// A segment of `len` bytes (`len * 8` with `big`).
    Segment { seq: Seq, len: u8, big: bool, ack: u32 },
    /// Right after the end of the last segment fed (the common case).
    Next { len: u8, skip: u8 },
    Acked(Seq),
    /// The acknowledgement of everything fed so far, plus `extra`.
    AckedAll { extra: u8 },
    /// FIN after the end of the last segment fed, or at `seq`.
    Fin(Option<Seq>),
    Finish,
}

#[derive(Arbitrary, Debug)]
struct Input {
    base: u32,
    max_held: u8,
    ops: Vec<Op>,
}

struct Model {
    /// Every position some segment carried.
    carried: HashSet<u32>,
    /// Where the stream is: the end of the last data or gap delivered.
    pos: Option<u32>,
    /// The seq of the segment being fed, to start the stream at.
    first: Option<u32>,
}

impl Model {
    fn chunk(&mut self, c: Chunk) {
        match c {
            Chunk::Data { bytes, seq, .. } => {
                assert!(!bytes.is_empty(), "empty data chunk at {seq}");
                let pos = match self.pos {
                    Some(p) => p,
                    None => {
                        assert_eq!(Some(seq), self.first, "the stream starts at a segment not fed now");
                        seq
                    }
                };
                assert_eq!(seq, pos, "data at {seq} but the stream is at {pos}");
                for (i, b) in bytes.iter().enumerate() {
                    let s = seq.wrapping_add(i as u32);
                    assert!(self.carried.contains(&s), "byte at {s} delivered but never carried");
                    assert_eq!(*b, byte_at(s), "wrong byte at {s}");
                }
                self.pos = Some(pos.wrapping_add(bytes.len() as u32));
            }
            Chunk::Gap(n) => {
                let pos = self.pos.expect("a gap before the stream started");
                assert!(n > 0 && n < 1 << 31, "gap of {n}");
                self.pos = Some(pos.wrapping_add(n as u32));
            }
        }
    }
}

fn held_check() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_NO_HELD_CHECK").is_none())
}

fuzz_target!(|input: Input| {
    let max_held = input.max_held as usize;
    let mut r = Reassembler::new(max_held);
    let mut m = Model { carried: HashSet::new(), pos: None, first: None };
    let mut largest = 0usize;
    // The end of the last segment fed, for `Next`, `AckedAll` and `Fin`.
    let mut end = input.base;
    let at = |s: &Seq| match *s {
        Seq::Near(n) => input.base.wrapping_add(n as u32),
        Seq::Before(n) => input.base.wrapping_sub(n as u32),
        Seq::Abs(n) => n,
    };
    let mut data = Vec::new();
    for op in input.ops.iter().take(512) {
        m.first = None;
        match op {
            Op::Syn(s) => {
                let seq = at(s);
                r.syn(seq);
                if m.pos.is_none() {
                    m.pos = Some(seq.wrapping_add(1));
                    end = seq.wrapping_add(1);
                }
            }
            Op::Segment { .. } | Op::Next { .. } => {
                let (seq, len) = match *op {
                    Op::Segment { ref seq, len, big, .. } => {
                        (at(seq), if big { len as usize * 8 } else { len as usize })
                    }
                    Op::Next { len, skip } => (end.wrapping_add(skip as u32), len as usize),
                    _ => unreachable!(),
                };
                let ack = match *op {
                    Op::Segment { ack, .. } => ack,
                    _ => 0,
                };
                data.clear();
                data.extend((0..len).map(|i| byte_at(seq.wrapping_add(i as u32))));
                for i in 0..len {
                    m.carried.insert(seq.wrapping_add(i as u32));
                }
                largest = largest.max(len);
                if len > 0 {
                    end = seq.wrapping_add(len as u32);
                }
                m.first = Some(seq);
                r.segment(seq, ack, 0, &data, &mut |c| m.chunk(c));
            }
            Op::Acked(s) => r.acked(at(s), &mut |c| m.chunk(c)),
            Op::AckedAll { extra } => r.acked(end.wrapping_add(*extra as u32), &mut |c| m.chunk(c)),
            Op::Fin(s) => {
                let e = s.as_ref().map_or(end, |s| at(s));
                r.fin(e);
                if m.pos == Some(e) {
                    m.pos = Some(e.wrapping_add(1));
                }
            }
            Op::Finish => {
                r.finish(&mut |c| m.chunk(c));
                assert_eq!(r.held_bytes(), 0, "bytes held after finish");
            }
        }
        if m.pos.is_none() {
            // The first segment starts the stream even if it delivered
            // nothing (it was held or empty).
            m.pos = r.next_seq();
        }
        assert_eq!(r.next_seq(), m.pos, "next_seq disagrees with what was delivered, after {op:?}");
        assert!(
            !held_check() || r.held_bytes() <= max_held + largest,
            "{} bytes held, max_held {max_held}, largest segment {largest}, after {op:?}",
            r.held_bytes()
        );
    }
    r.finish(&mut |c| m.chunk(c));
    assert_eq!(r.held_bytes(), 0, "bytes held after finish");
    assert_eq!(r.next_seq(), m.pos);
});
