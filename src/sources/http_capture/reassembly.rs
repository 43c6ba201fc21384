//! TCP reassembly for one direction of a connection: segments as they were
//! captured (out of order, retransmitted, overlapping, some never) in, the
//! byte stream in order out, with each hole reported as a gap of known size
//! instead of bytes that were never seen.
//!
//! A hole is given up on when the peer acknowledges bytes beyond it (the
//! receiver has them, the capture lost them), when the segments held behind
//! it pass the memory limit, or when the stream ends.

/// What the stream delivers, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes from sequence number `seq` on, with the acknowledgement number
    /// and the capture time (microseconds) of the segment that carried them.
    Data { bytes: &'a [u8], seq: u32, ack: u32, time: i64 },
    /// This many bytes were lost.
    Gap(u64),
}

/// A segment that arrived ahead of a hole.
struct Held {
    seq: u32,
    ack: u32,
    time: i64,
    bytes: Vec<u8>,
}

pub struct Reassembler {
    /// The sequence number of the next byte in order; `None` until the
    /// stream's first segment (or SYN) is seen.
    next: Option<u32>,
    /// Segments ahead of `next`, ordered by their distance from it.
    held: Vec<Held>,
    held_bytes: usize,
    max_held: usize,
    /// The sequence number of a FIN seen before the bytes ahead of it: the
    /// stream ends there, so what is missing before it is a hole even with
    /// nothing held after it.
    fin_at: Option<u32>,
}

/// How far `seq` lies after `base` (negative: before), modulo 2³².
fn distance(seq: u32, base: u32) -> i64 {
    i64::from(seq.wrapping_sub(base) as i32)
}

impl Reassembler {
    /// `max_held`: the most bytes held ahead of a hole.
    pub fn new(max_held: usize) -> Self {
        Reassembler { next: None, held: Vec::new(), held_bytes: 0, max_held, fin_at: None }
    }

    /// The sequence number of the next byte expected, once known.
    pub fn next_seq(&self) -> Option<u32> {
        self.next
    }

    /// Bytes held ahead of a hole.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// A SYN with this sequence number: the stream starts after it.
    pub fn syn(&mut self, seq: u32) {
        if self.next.is_none() {
            self.next = Some(seq.wrapping_add(1));
        }
    }

    /// A FIN after `end` (its sequence number plus payload length), already
    /// passed through `segment`: once the stream reaches it, the FIN's own
    /// sequence number is taken so that its acknowledgement is no hole.
    pub fn fin(&mut self, end: u32) {
        if self.next == Some(end) {
            self.next = Some(end.wrapping_add(1));
        } else if self.next.is_some_and(|next| distance(end, next) > 0) {
            self.fin_at = Some(end);
        }
    }

    /// Once the stream reaches a FIN seen early, the FIN is taken.
    fn reach_fin(&mut self) {
        if let (Some(next), Some(fin)) = (self.next, self.fin_at)
            && next == fin
        {
            self.next = Some(fin.wrapping_add(1));
            self.fin_at = None;
        }
    }

    /// A captured segment.
    pub fn segment(&mut self, seq: u32, ack: u32, time: i64, bytes: &[u8], out: &mut impl FnMut(Chunk)) {
        if bytes.is_empty() {
            return;
        }
        let next = *self.next.get_or_insert(seq);
        let d = distance(seq, next);
        if d <= 0 {
            // In order, or overlapping what was delivered: only the new part.
            let old = d.unsigned_abs() as usize;
            if old >= bytes.len() {
                return;
            }
            self.deliver(&bytes[old..], ack, time, out);
            self.drain(out);
            return;
        }
        self.hold(seq, ack, time, bytes);
        // Past the limit, holes are given up from the oldest on until what
        // is held fits again.
        while self.held_bytes > self.max_held && !self.held.is_empty() {
            self.give_up_hole(out);
        }
    }

    /// The peer acknowledged up to `ack`: whatever of this stream before it
    /// was not captured is lost.
    pub fn acked(&mut self, ack: u32, out: &mut impl FnMut(Chunk)) {
        let Some(next) = self.next else { return };
        let d = distance(ack, next);
        if d <= 0 {
            return;
        }
        // The hole reaches up to `ack`, or to the first held segment, or to
        // the FIN (which is no data).
        let mut to = match self.held.first() {
            Some(h) if distance(h.seq, next) < d => distance(h.seq, next),
            _ => d,
        };
        if let Some(fin) = self.fin_at {
            to = to.min(distance(fin, next));
        }
        if to > 0 {
            out(Chunk::Gap(to as u64));
            self.next = Some(next.wrapping_add(to as u32));
        }
        self.reach_fin();
        self.drain(out);
    }

    /// The stream ends (FIN, reset or expiry): what is held is delivered,
    /// with its holes as gaps.
    pub fn finish(&mut self, out: &mut impl FnMut(Chunk)) {
        while !self.held.is_empty() {
            self.give_up_hole(out);
        }
        if let (Some(next), Some(fin)) = (self.next, self.fin_at) {
            let d = distance(fin, next);
            if d > 0 {
                out(Chunk::Gap(d as u64));
                self.next = Some(fin);
            }
            self.reach_fin();
        }
    }

    fn deliver(&mut self, bytes: &[u8], ack: u32, time: i64, out: &mut impl FnMut(Chunk)) {
        let Some(next) = self.next.as_mut() else { return };
        let seq = *next;
        *next = next.wrapping_add(bytes.len() as u32);
        self.reach_fin();
        out(Chunk::Data { bytes, seq, ack, time });
    }

    fn hold(&mut self, seq: u32, ack: u32, time: i64, bytes: &[u8]) {
        let Some(next) = self.next else { return };
        let d = distance(seq, next);
        let at = self.held.partition_point(|h| distance(h.seq, next) < d);
        if let Some(same) = self.held.get_mut(at)
            && same.seq == seq
        {
            // A retransmission of a held segment: keep the longer one.
            if bytes.len() > same.bytes.len() {
                self.held_bytes += bytes.len() - same.bytes.len();
                same.bytes = bytes.to_vec();
            }
            return;
        }
        self.held_bytes += bytes.len();
        self.held.insert(at, Held { seq, ack, time, bytes: bytes.to_vec() });
    }

    /// Delivers the held segments that are now in order.
    fn drain(&mut self, out: &mut impl FnMut(Chunk)) {
        while let (Some(next), Some(first)) = (self.next, self.held.first()) {
            let d = distance(first.seq, next);
            if d > 0 {
                return;
            }
            let h = self.held.remove(0);
            self.held_bytes -= h.bytes.len();
            let old = d.unsigned_abs() as usize;
            if old < h.bytes.len() {
                self.deliver(&h.bytes[old..], h.ack, h.time, out);
            }
        }
    }

    /// Declares the hole before the first held segment lost and moves on.
    fn give_up_hole(&mut self, out: &mut impl FnMut(Chunk)) {
        let (Some(next), Some(first)) = (self.next, self.held.first()) else { return };
        let d = distance(first.seq, next);
        if d > 0 {
            out(Chunk::Gap(d as u64));
            self.next = Some(first.seq);
        }
        self.drain(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` and returns the stream as text, gaps as `[n]`.
    fn stream(max: usize, steps: &[(&str, u32, &str)]) -> String {
        let mut r = Reassembler::new(max);
        let mut s = String::new();
        let mut out = |c: Chunk| match c {
            Chunk::Data { bytes, .. } => s.push_str(std::str::from_utf8(bytes).unwrap()),
            Chunk::Gap(n) => s.push_str(&format!("[{n}]")),
        };
        for (op, seq, data) in steps {
            match *op {
                "syn" => r.syn(*seq),
                "seg" => r.segment(*seq, 0, 0, data.as_bytes(), &mut out),
                "ack" => r.acked(*seq, &mut out),
                "fin" => r.fin(*seq),
                "end" => r.finish(&mut out),
                _ => unreachable!(),
            }
        }
        s
    }

    #[test]
    fn in_order_out_of_order_retransmitted_overlapping() {
        let s = stream(
            1000,
            &[
                ("syn", 99, ""),
                ("seg", 100, "abc"),
                ("seg", 106, "ghi"), // ahead of a hole
                ("seg", 100, "abc"), // retransmitted
                ("seg", 104, "efg"), // overlaps the held one
                ("seg", 103, "de"),  // fills the hole, overlapping
                ("seg", 109, "jk"),
            ],
        );
        assert_eq!(s, "abcdefghijk");
    }

    #[test]
    fn holes_become_gaps_on_ack_limit_and_end() {
        // The peer acknowledged bytes never captured.
        assert_eq!(
            stream(1000, &[("syn", 0, ""), ("seg", 1, "ab"), ("ack", 6, ""), ("seg", 6, "xy")]),
            "ab[3]xy"
        );
        // Held segments beyond the limit.
        assert_eq!(stream(4, &[("seg", 10, "ab"), ("seg", 15, "cd"), ("seg", 17, "efg")]), "ab[3]cdefg");
        // Several holes past the limit: given up oldest first until what is
        // held fits (found by fuzzing: one hole at a time let it grow).
        assert_eq!(
            stream(
                4,
                &[
                    ("seg", 10, "ab"),
                    ("seg", 20, "cd"),
                    ("seg", 15, "ef"),
                    ("seg", 30, "ghij"),
                    ("end", 0, "")
                ]
            ),
            "ab[3]ef[3]cd[8]ghij"
        );
        // The stream ends with a hole.
        assert_eq!(stream(1000, &[("seg", 10, "ab"), ("seg", 14, "cd"), ("end", 0, "")]), "ab[2]cd");
        // The acknowledgement of a FIN is no hole.
        assert_eq!(stream(1000, &[("seg", 10, "ab"), ("fin", 12, ""), ("ack", 13, "")]), "ab");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let s = stream(
            1000,
            &[("syn", u32::MAX - 2, ""), ("seg", u32::MAX - 1, "ab"), ("seg", 2, "ef"), ("seg", 0, "cd")],
        );
        assert_eq!(s, "abcdef");
    }
}
