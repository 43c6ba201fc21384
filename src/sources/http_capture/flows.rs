//! Sniff mode's connections. Each captured TCP segment goes to its flow;
//! each direction is put back in order (`reassembly`) and parsed
//! (`parser`); requests and responses pair up into `http.transaction`s.
//!
//! What the capture missed is never guessed: a loss inside a body of known
//! length is counted as body and the transaction is reported with
//! `gap: true`; a loss anywhere else stops the parse of that direction
//! until a segment starts with a message head again. Which request a
//! response answers is `exchange`'s to prove from sequence numbers; where
//! it cannot, the request is reported with `gap: true` and no status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Recording;
use super::parser::{Item, Parser, Side};
use super::reassembly::{Chunk, Reassembler};
use crate::event::Map;
use exchange::Exchange;

#[path = "exchange.rs"]
mod exchange;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// A flow without packets this long (microseconds) is forgotten.
const IDLE: i64 = 120_000_000;

/// The most requests a connection may have waiting for responses: past it
/// (responses that are never captured) the oldest is reported as
/// unanswered and forgotten, so that memory stays bounded.
const MAX_PENDING: usize = 128;

/// A captured TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Capture time, microseconds since the epoch.
    pub time: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
    /// Payload bytes the capture cut off (after `payload`).
    pub cut: u32,
}

/// Limits on memory, and what happened at them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_flows: usize,
    /// Per direction of a flow: bytes held ahead of a hole.
    pub max_flow_bytes: usize,
    /// All flows together.
    pub max_buffered_bytes: usize,
}

/// Counters for the source's metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Connections not followed because `max_flows` were.
    pub flows_refused: u64,
    /// Holes in a stream (lost or cut segments).
    pub gaps: u64,
    /// Streams that could not be parsed as HTTP.
    pub malformed: u64,
}

pub struct Flows {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    ports: Vec<u16>,
    rec: Arc<Recording>,
    limits: Limits,
    buffered: usize,
    pub counts: Counts,
}

impl Flows {
    pub fn new(ports: Vec<u16>, rec: Arc<Recording>, limits: Limits) -> Self {
        Flows { flows: HashMap::new(), ports, rec, limits, buffered: 0, counts: Counts::default() }
    }

    /// Connections followed now.
    pub fn count(&self) -> usize {
        self.flows.len()
    }

    /// A captured segment; finished transactions are pushed to `out`.
    pub fn segment(&mut self, s: &Segment, out: &mut Vec<Map>) {
        let to_server = self.ports.contains(&s.dst.port());
        if !to_server && !self.ports.contains(&s.src.port()) {
            return;
        }
        let key = if to_server { (s.src, s.dst) } else { (s.dst, s.src) };
        let flow = match self.flows.get_mut(&key) {
            Some(f) => f,
            None => {
                // Only a SYN (or the server's SYN-ACK, the client's SYN not
                // captured) or data starts a flow: the last ACKs of a closed
                // connection do not.
                let starts = s.flags & SYN != 0 || !s.payload.is_empty();
                if !starts || s.flags & RST != 0 {
                    return;
                }
                if self.flows.len() >= self.limits.max_flows {
                    self.counts.flows_refused += 1;
                    return;
                }
                let max = self.limits.max_flow_bytes;
                self.flows.entry(key).or_insert_with(|| Flow::new(key.0, key.1, max))
            }
        };
        let before = flow.held();
        let cx = Cx { rec: &self.rec, out, counts: &mut self.counts };
        let done = flow.segment(s, to_server, cx);
        let after = flow.held();
        self.buffered = self.buffered + after - before;
        if self.buffered > self.limits.max_buffered_bytes {
            // Too much held in all: this flow gives up on its holes.
            let mut cx = Cx { rec: &self.rec, out, counts: &mut self.counts };
            flow.give_up(&mut cx);
            self.buffered -= after;
        }
        if done && let Some(mut flow) = self.flows.remove(&key) {
            self.buffered -= flow.held();
            flow.close(Cx { rec: &self.rec, out, counts: &mut self.counts });
        }
    }

    /// Reports requests unanswered for longer than the timeout, and forgets
    /// idle flows. `now` in microseconds since the epoch.
    pub fn sweep(&mut self, now: i64, out: &mut Vec<Map>) {
        let timeout = self.rec.timeout.as_micros() as i64;
        let mut idle = Vec::new();
        for (key, flow) in self.flows.iter_mut() {
            let ex = &mut flow.ex;
            ex.timeouts(&self.rec, now, timeout, out);
            if now - ex.last >= IDLE {
                idle.push(*key);
            }
        }
        for key in idle {
            if let Some(mut flow) = self.flows.remove(&key) {
                self.buffered -= flow.held();
                flow.close(Cx { rec: &self.rec, out, counts: &mut self.counts });
            }
        }
    }
}

/// What a flow's handlers need besides the flow.
struct Cx<'a> {
    rec: &'a Recording,
    out: &'a mut Vec<Map>,
    counts: &'a mut Counts,
}

/// One direction of a flow.
struct Half {
    parser: Parser,
    /// Bytes delivered but not yet parsed (a head split across segments).
    buf: Vec<u8>,
    /// The sequence number of `buf[0]`, and when it was captured.
    buf_seq: u32,
    buf_time: i64,
    /// Not following the stream (after a loss, or joined mid-stream): a
    /// segment that starts with a message head ends it.
    lost: bool,
    fin: bool,
}

impl Half {
    fn new(side: Side) -> Self {
        Half {
            parser: Parser::new(side),
            buf: Vec::new(),
            buf_seq: 0,
            buf_time: 0,
            // Following starts at a SYN, or at a message head.
            lost: true,
            fin: false,
        }
    }
}

struct Flow {
    /// Client to server, server to client.
    up: Reassembler,
    down: Reassembler,
    ex: Exchange,
}

/// Parses `bytes` (from sequence number `seq`, captured at `time`) as far
/// as it goes; returns how much was consumed, and the error that stopped it.
fn parse(
    parser: &mut Parser,
    bytes: &[u8],
    seq: u32,
    time: i64,
    on: &mut impl FnMut(&mut Parser, Item, &[u8], u32, i64),
) -> (usize, Option<String>) {
    let mut at = 0;
    loop {
        match parser.next(&bytes[at..]) {
            Ok(Some((item, n))) => {
                on(parser, item, &bytes[at..at + n], seq.wrapping_add(at as u32), time);
                at += n;
                if n == 0 && at >= bytes.len() {
                    return (at, None);
                }
            }
            Ok(None) => return (at, None),
            Err(e) => return (at, Some(e)),
        }
    }
}

impl Half {
    /// In-order bytes into the parser; `on` gets each item. An error leaves
    /// the direction lost.
    fn feed(
        &mut self,
        bytes: &[u8],
        seq: u32,
        time: i64,
        on: &mut impl FnMut(&mut Parser, Item, &[u8], u32, i64),
    ) -> Option<String> {
        let err = if self.buf.is_empty() {
            let (n, err) = parse(&mut self.parser, bytes, seq, time, on);
            self.buf.extend_from_slice(&bytes[n..]);
            self.buf_seq = seq.wrapping_add(n as u32);
            self.buf_time = time;
            err
        } else {
            self.buf.extend_from_slice(bytes);
            let buf = std::mem::take(&mut self.buf);
            let (n, err) = parse(&mut self.parser, &buf, self.buf_seq, self.buf_time, on);
            self.buf = buf;
            self.buf.drain(..n);
            self.buf_seq = self.buf_seq.wrapping_add(n as u32);
            if n > 0 {
                self.buf_time = time;
            }
            err
        };
        if err.is_some() {
            self.buf.clear();
            self.lost = true;
        }
        err
    }

    /// Bytes lost at this point of the stream: true if parsing goes on.
    fn gap(&mut self, n: u64) -> bool {
        if !self.lost && self.buf.is_empty() && self.parser.skip(n) {
            return true;
        }
        self.lost = true;
        self.buf.clear();
        false
    }
}

/// Does a segment start with a request line?
fn request_start(b: &[u8]) -> bool {
    let method = b.iter().take(8).take_while(|c| c.is_ascii_uppercase()).count();
    method >= 3 && b.get(method) == Some(&b' ')
}

fn response_start(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.")
}

/// Is `a` at or after `b` in sequence space?
fn at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl Flow {
    fn new(client: SocketAddr, server: SocketAddr, max_held: usize) -> Self {
        Flow {
            up: Reassembler::new(max_held),
            down: Reassembler::new(max_held),
            ex: Exchange::new(client, server),
        }
    }

    fn held(&self) -> usize {
        self.up.held_bytes() + self.down.held_bytes()
    }

    /// Returns true when the connection is over.
    fn segment(&mut self, s: &Segment, to_server: bool, mut cx: Cx) -> bool {
        let Flow { up, down, ex } = self;
        ex.last = s.time;
        if s.flags & RST != 0 {
            return true;
        }
        let (this, other) = if to_server { (up, down) } else { (down, up) };
        if s.flags & SYN != 0 && this.next_seq().is_none() {
            this.syn(s.seq);
            ex.half(to_server).lost = false;
            if s.flags & ACK != 0 && other.next_seq().is_none() {
                // A SYN-ACK without the SYN: it tells where the other
                // stream starts.
                other.syn(s.ack.wrapping_sub(1));
                ex.half(!to_server).lost = false;
            }
            ex.started();
        }
        // This side's acknowledgement shows what of the other side's
        // stream was lost.
        if s.flags & ACK != 0 {
            other.acked(s.ack, &mut |c| chunk(ex, !to_server, c, &mut cx));
        }
        this.segment(s.seq, s.ack, s.time, s.payload, &mut |c| chunk(ex, to_server, c, &mut cx));
        if s.cut > 0 {
            // The rest of the segment was not captured: a hole, which the
            // peer's acknowledgement turns into a gap.
            cx.counts.gaps += 1;
        }
        if s.flags & FIN != 0 {
            ex.half(to_server).fin = true;
            let end = s.seq.wrapping_add(s.payload.len() as u32).wrapping_add(s.cut);
            this.fin(end);
            if !to_server && this.next_seq() == Some(end.wrapping_add(1)) {
                // The server closed and nothing before is missing: a body
                // read until close ends here. (With a hole, it ends once
                // the hole is given up.)
                ex.end_of_responses(&mut cx);
            }
        }
        ex.up.fin && ex.down.fin
    }

    /// Gives up on the holes of both directions (memory is short).
    fn give_up(&mut self, cx: &mut Cx) {
        let Flow { up, down, ex } = self;
        up.finish(&mut |c| chunk(ex, true, c, cx));
        down.finish(&mut |c| chunk(ex, false, c, cx));
    }

    /// The connection is over (closed, reset or idle): what is held is
    /// parsed, and requests without a response are reported as such.
    fn close(&mut self, mut cx: Cx) {
        self.give_up(&mut cx);
        self.ex.closed(&mut cx);
    }
}

/// What a reassembler delivered, to the exchange.
fn chunk(ex: &mut Exchange, to_server: bool, c: Chunk, cx: &mut Cx) {
    match c {
        Chunk::Gap(n) => {
            cx.counts.gaps += 1;
            if to_server {
                ex.request_gap(n, cx);
            } else {
                ex.response_gap(n, cx);
            }
        }
        Chunk::Data { bytes, seq, ack, time } => {
            if to_server {
                ex.requests_data(bytes, seq, time, cx);
            } else {
                ex.responses_data(bytes, seq, ack, time, cx);
            }
        }
    }
}

#[cfg(test)]
#[path = "flows_loss_tests.rs"]
mod loss_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    /// A connection written segment by segment; a segment can be "lost"
    /// (its sequence numbers used, the segment never given to the flows).
    pub(super) struct Wire {
        pub(super) flows: Flows,
        client: SocketAddr,
        server: SocketAddr,
        /// Next sequence numbers of client and server.
        c: u32,
        s: u32,
        pub(super) time: i64,
        pub(super) out: Vec<Map>,
    }

    impl Wire {
        pub(super) fn new(max_flow_bytes: usize) -> Self {
            let limits = Limits { max_flows: 2, max_flow_bytes, max_buffered_bytes: 1 << 20 };
            let mut w = Wire {
                flows: Flows::new(vec![80], Arc::new(Recording::default()), limits),
                client: "127.0.0.1:40000".parse().unwrap(),
                server: "127.0.0.1:80".parse().unwrap(),
                c: 1000,
                s: u32::MAX - 10, // the server's stream wraps
                time: 1_000_000,
                out: Vec::new(),
            };
            w.client_seg(SYN, b"", true);
            w.server_seg(SYN | ACK, b"", true);
            w
        }

        fn seg(&mut self, from_client: bool, flags: u8, payload: &[u8], seq: u32, deliver: bool) {
            self.time += 1000;
            let (src, dst, ack) = if from_client {
                (self.client, self.server, self.s)
            } else {
                (self.server, self.client, self.c)
            };
            if deliver {
                // Everything but the first SYN acknowledges.
                let flags = if flags == SYN { SYN } else { flags | ACK };
                let s = Segment { time: self.time, src, dst, seq, ack, flags, payload, cut: 0 };
                self.flows.segment(&s, &mut self.out);
            }
        }

        pub(super) fn client_seg(&mut self, flags: u8, payload: &[u8], deliver: bool) -> u32 {
            let seq = self.c;
            self.c = self.c.wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
            self.seg(true, flags, payload, seq, deliver);
            seq
        }

        pub(super) fn server_seg(&mut self, flags: u8, payload: &[u8], deliver: bool) -> u32 {
            let seq = self.s;
            self.s = self.s.wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
            self.seg(false, flags, payload, seq, deliver);
            seq
        }

        /// A segment sent earlier, captured now (out of order or again).
        fn replay(&mut self, from_client: bool, seq: u32, payload: &[u8]) {
            self.seg(from_client, 0, payload, seq, true);
        }

        /// The transactions so far, as (method, path, status, gap, error).
        pub(super) fn taken(&mut self) -> Vec<String> {
            self.out
                .drain(..)
                .map(|m| {
                    let get = |k: &str| match m.get(k) {
                        Some(Value::Str(s)) => s.to_string(),
                        Some(Value::Null) | None => "-".into(),
                        Some(v) => format!("{v:?}"),
                    };
                    format!(
                        "{} {} {} gap={} {}",
                        get("method"),
                        get("path"),
                        get("status"),
                        get("gap"),
                        get("error")
                    )
                    .replace("Int(", "")
                    .replace("UInt(", "")
                    .replace("Bool(", "")
                    .replace(')', "")
                })
                .collect()
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn out_of_order_and_retransmitted_segments_make_one_clean_transaction() {
        let mut w = Wire::new(1 << 16);
        let a = w.client_seg(0, b"GET /a HTT", false);
        w.client_seg(0, b"P/1.1\r\nHost: x\r\n\r\n", true); // ahead of the first
        w.replay(true, a, b"GET /a HTT");
        w.replay(true, a, b"GET /a HTT"); // again
        w.server_seg(0, OK, true);
        assert_eq!(w.taken(), ["GET /a 200 gap=false -"]);
    }

    #[test]
    fn a_loss_inside_a_body_of_known_length_is_a_gap_not_a_wrong_parse() {
        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /big HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n0123456789", true);
        w.server_seg(0, b"0123456789", false); // lost
        w.server_seg(0, b"0123456789", true);
        // The next request acknowledges the lost bytes: the hole is final.
        w.client_seg(0, b"GET /next HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, OK, true);
        assert_eq!(w.taken(), ["GET /big 200 gap=true -", "GET /next 200 gap=false -"]);
    }

    /// The lost bytes may have held more than one request (pipelined), so
    /// no later response is proven to answer /b.
    #[test]
    fn a_lost_request_does_not_shift_the_pairing() {
        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /lost HTTP/1.1\r\n\r\n", false);
        w.server_seg(0, OK, true); // answers /lost, which was not captured
        w.client_seg(0, b"GET /b HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", true);
        assert_eq!(w.taken(), ["GET /b - gap=true response not captured"]);
    }

    #[test]
    fn a_lost_response_head_reports_its_request_and_the_parse_resumes() {
        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /a HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
        w.server_seg(0, b"5\r\nhello\r\n0\r\n\r\n", true);
        w.client_seg(0, b"GET /b HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, OK, true);
        assert_eq!(w.taken(), ["GET /a - gap=true response not captured", "GET /b 200 gap=false -"]);
    }

    #[test]
    fn pipelined_requests_pair_in_order_and_a_reset_reports_the_unanswered() {
        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.1 100 Continue\r\n\r\n", true);
        w.server_seg(0, OK, true);
        w.server_seg(0, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true); // HEAD: no body
        w.server_seg(RST, b"", true);
        assert_eq!(
            w.taken(),
            [
                "GET /1 200 gap=false -",
                "HEAD /2 200 gap=false -",
                "GET /3 - gap=false connection closed before a response"
            ]
        );
        assert_eq!(w.flows.count(), 0);
    }

    /// Requests sent before the capture began may still wait for their
    /// responses (pipelined): no response is proven to answer /a.
    #[test]
    fn a_flow_joined_mid_stream_pairs_no_response_it_cannot_prove() {
        let mut w = Wire::new(1 << 16);
        w.flows = Flows::new(vec![80], Arc::new(Recording::default()), w.flows.limits);
        w.server_seg(0, b"lo world, the end of an earlier body", true);
        w.client_seg(0, b"GET /a HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, OK, true);
        assert_eq!(w.taken(), ["GET /a - gap=true response not captured"]);
    }

    #[test]
    fn a_connection_whose_syn_was_not_captured_starts_at_the_syn_ack() {
        let mut w = Wire::new(1 << 16);
        w.flows = Flows::new(vec![80], Arc::new(Recording::default()), w.flows.limits);
        // The server's SYN-ACK again (its sequence number one before the
        // server's stream), acknowledging the client's SYN.
        let (s, c) = (w.s.wrapping_sub(1), w.c);
        let synack = Segment {
            time: 1,
            src: w.server,
            dst: w.client,
            seq: s,
            ack: c,
            flags: SYN | ACK,
            payload: b"",
            cut: 0,
        };
        w.flows.segment(&synack, &mut w.out);
        w.client_seg(0, b"GET /a HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, OK, true);
        assert_eq!(w.taken(), ["GET /a 200 gap=false -"]);
    }

    #[test]
    fn a_body_until_close_ends_with_the_servers_fin_and_timeouts_are_reported() {
        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /a HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true);
        w.server_seg(FIN, b"", true);
        assert_eq!(w.taken(), ["GET /a 200 gap=false -"]);

        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /never HTTP/1.1\r\n\r\n", true);
        let now = w.time;
        w.flows.sweep(now + 1_000_000, &mut w.out);
        assert!(w.taken().is_empty());
        w.flows.sweep(now + 31_000_000, &mut w.out);
        assert_eq!(w.taken(), ["GET /never - gap=false no response"]);
        w.server_seg(0, OK, true); // late: reported already
        assert!(w.taken().is_empty());
    }

    #[test]
    fn requests_waiting_for_responses_are_bounded() {
        let mut w = Wire::new(1 << 16);
        for _ in 0..MAX_PENDING + 2 {
            w.client_seg(0, b"GET /a HTTP/1.1\r\n\r\n", true);
        }
        assert_eq!(w.taken(), ["GET /a - gap=false no response"; 2]);
        assert_eq!(w.flows.flows.values().next().unwrap().ex.pending(), MAX_PENDING);
    }

    #[test]
    fn held_bytes_and_flows_are_bounded() {
        let mut w = Wire::new(16);
        w.client_seg(0, b"GET /a HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", true);
        w.server_seg(0, b"0123456789", false);
        w.server_seg(0, b"0123456789", true);
        w.server_seg(0, b"0123456789", true); // past the limit: the hole is given up
        w.server_seg(0, b"0123456789", true);
        assert_eq!(w.taken(), ["GET /a 200 gap=true -"]);
        assert_eq!(w.flows.buffered, 0);
        // Two flows at most.
        for port in [40001, 40002] {
            let s = Segment {
                time: 0,
                src: SocketAddr::new(w.client.ip(), port),
                dst: w.server,
                seq: 1,
                ack: 0,
                flags: SYN,
                payload: b"",
                cut: 0,
            };
            w.flows.segment(&s, &mut w.out);
        }
        assert_eq!((w.flows.count(), w.flows.counts.flows_refused), (2, 1));
    }
}
