//! Sniff mode's connections. Each captured TCP segment goes to its flow;
//! each direction is put back in order (`reassembly`) and parsed
//! (`parser`); requests and responses pair up into `http.transaction`s.
//!
//! What the capture missed is never guessed: a loss inside a body of known
//! length is counted as body and the transaction is reported with
//! `gap: true`; a loss anywhere else stops the parse of that direction
//! until a segment starts with a message head again. A response is never
//! paired with a request the server had not received when it answered (its
//! acknowledgement number tells), so a lost request cannot shift the
//! pairing of those after it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::parser::{Expect, Head, Item, Parser, Side};
use super::reassembly::{Chunk, Reassembler};
use super::{Captured, Recording, Request};
use crate::event::{Map, Str, Value};

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
                // Only a SYN or data starts a flow: the last ACKs of a closed
                // connection do not.
                let starts = (s.flags & SYN != 0 && s.flags & ACK == 0) || !s.payload.is_empty();
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
            for (_, r) in ex.requests.iter_mut() {
                if r.done && !r.reported && now - r.started >= timeout {
                    r.reported = true;
                    out.push(report(
                        &self.rec,
                        (ex.client, ex.server),
                        r,
                        None,
                        Some("no response"),
                        now,
                        r.gap,
                    ));
                }
            }
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

/// A flow but for its reassemblers: what their output goes to.
struct Exchange {
    client: SocketAddr,
    server: SocketAddr,
    up: Half,
    down: Half,
    /// Requests in the order sent, until their response ends, each with
    /// the sequence number of its first byte in the client's stream.
    requests: VecDeque<(u32, Request)>,
    /// The head of the response being received.
    response: Option<Head>,
    /// Whether that response answers a captured request (the oldest one).
    paired: bool,
    response_gap: bool,
    request_body: Option<Captured>,
    response_body: Option<Captured>,
    /// The connection switched protocols: nothing more is HTTP.
    upgraded: bool,
    last: i64,
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
            ex: Exchange {
                client,
                server,
                up: Half::new(Side::Request),
                down: Half::new(Side::Response),
                requests: VecDeque::new(),
                response: None,
                paired: false,
                response_gap: false,
                request_body: None,
                response_body: None,
                upgraded: false,
                last: 0,
            },
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
        }
        // This side's acknowledgement shows what of the other side's
        // stream was lost.
        if s.flags & ACK != 0 {
            other.acked(s.ack, &mut |c| ex.chunk(!to_server, c, &mut cx));
        }
        this.segment(s.seq, s.ack, s.time, s.payload, &mut |c| ex.chunk(to_server, c, &mut cx));
        if s.cut > 0 {
            // The rest of the segment was not captured: a hole, which the
            // peer's acknowledgement turns into a gap.
            cx.counts.gaps += 1;
        }
        if s.flags & FIN != 0 {
            ex.half(to_server).fin = true;
            this.fin(s.seq.wrapping_add(s.payload.len() as u32).wrapping_add(s.cut));
            if !to_server {
                // The server closed: a body read until close ends here.
                ex.end_of_responses(&mut cx);
            }
        }
        ex.up.fin && ex.down.fin
    }

    /// Gives up on the holes of both directions (memory is short).
    fn give_up(&mut self, cx: &mut Cx) {
        let Flow { up, down, ex } = self;
        up.finish(&mut |c| ex.chunk(true, c, cx));
        down.finish(&mut |c| ex.chunk(false, c, cx));
    }

    /// The connection is over (closed, reset or idle): what is held is
    /// parsed, and requests without a response are reported as such.
    fn close(&mut self, mut cx: Cx) {
        self.give_up(&mut cx);
        let ex = &mut self.ex;
        ex.end_of_responses(&mut cx);
        let now = ex.last;
        for (_, r) in std::mem::take(&mut ex.requests) {
            if !r.reported && r.done {
                cx.out.push(report(
                    cx.rec,
                    (ex.client, ex.server),
                    &r,
                    None,
                    Some("no response"),
                    now,
                    r.gap,
                ));
            }
        }
    }
}

impl Exchange {
    fn half(&mut self, to_server: bool) -> &mut Half {
        if to_server { &mut self.up } else { &mut self.down }
    }

    /// What a reassembler delivered.
    fn chunk(&mut self, to_server: bool, c: Chunk, cx: &mut Cx) {
        match c {
            Chunk::Gap(n) => {
                cx.counts.gaps += 1;
                if to_server {
                    self.request_gap(n);
                } else {
                    self.response_gap(n);
                }
            }
            Chunk::Data { bytes, seq, ack, time } => {
                if to_server {
                    self.requests_data(bytes, seq, time, cx);
                } else {
                    self.responses_data(bytes, seq, ack, time, cx);
                }
            }
        }
    }

    fn request_gap(&mut self, n: u64) {
        let sending = self.requests.back_mut().map(|(_, r)| r).filter(|r| !r.done);
        if self.up.gap(n) {
            if let Some(r) = sending {
                r.gap = true;
            }
            return;
        }
        // The request being sent, if any, ends here as far as we know.
        if let Some(r) = sending {
            r.gap = true;
            r.done = true;
            r.body = self.request_body.take();
        }
    }

    fn response_gap(&mut self, n: u64) {
        if self.down.gap(n) {
            self.response_gap |= self.response.is_some();
            return;
        }
        // The response being received is lost: its request reports a gap.
        if self.response.take().is_some()
            && self.paired
            && let Some((_, r)) = self.requests.front_mut()
        {
            r.gap = true;
        }
        self.response_body = None;
    }

    fn requests_data(&mut self, bytes: &[u8], seq: u32, time: i64, cx: &mut Cx) {
        if self.upgraded {
            return;
        }
        if self.up.lost {
            if !request_start(bytes) {
                return;
            }
            self.up.lost = false;
            self.up.parser.reset();
        }
        let Exchange { up, down, requests, request_body, client, server, .. } = self;
        let (rec, out) = (cx.rec, &mut *cx.out);
        let err = up.feed(bytes, seq, time, &mut |_, item, span, at, time| match item {
            Item::Head(head) => {
                if requests.len() >= MAX_PENDING {
                    down.parser.expect.pop_front();
                    if let Some((_, old)) = requests.pop_front()
                        && !old.reported
                    {
                        out.push(report(
                            rec,
                            (*client, *server),
                            &old,
                            None,
                            Some("no response"),
                            time,
                            old.gap,
                        ));
                    }
                }
                down.parser.expect.push_back(Expect::of(&head));
                *request_body = rec.capture(&head);
                requests.push_back((
                    at,
                    Request {
                        head,
                        started: time,
                        body_bytes: 0,
                        done: false,
                        reported: false,
                        gap: false,
                        body: None,
                    },
                ));
            }
            Item::Body => {
                if let Some(b) = request_body.as_mut() {
                    b.add(span, rec.max_body());
                }
            }
            Item::End { body_bytes } => {
                if let Some((_, r)) = requests.back_mut().filter(|(_, r)| !r.done) {
                    r.body_bytes = body_bytes;
                    r.done = true;
                    r.body = request_body.take();
                }
            }
        });
        if err.is_some() {
            cx.counts.malformed += 1;
        }
    }

    fn responses_data(&mut self, bytes: &[u8], seq: u32, ack: u32, time: i64, cx: &mut Cx) {
        if self.upgraded {
            return;
        }
        if self.down.lost {
            if !response_start(bytes) {
                return;
            }
            self.resync(ack, time, cx);
        }
        let mut done: Vec<(Head, u64, Option<Captured>, bool, i64)> = Vec::new();
        let Exchange { down, requests, response, paired, response_gap, response_body, upgraded, .. } = self;
        let rec = cx.rec;
        let err = down.feed(bytes, seq, time, &mut |parser, item, span, _, time| match item {
            Item::Head(head) => {
                if (100..200).contains(&head.status) && head.status != 101 {
                    return; // interim: the request still waits for its answer
                }
                // A response cannot answer a request the server had not
                // received when it sent it: that one was lost in capture.
                *paired = requests.front().is_some_and(|(start, _)| !at_or_after(*start, ack));
                *response_gap = false;
                *response_body = rec.capture(&head);
                if head.status == 101 || parser.upgraded() {
                    // The connection switched protocols (or tunnels): the
                    // exchange ends with the head.
                    done.push((head, 0, None, *paired, time));
                    *upgraded = true;
                } else {
                    *response = Some(head);
                }
            }
            Item::Body => {
                if let Some(b) = response_body.as_mut() {
                    b.add(span, rec.max_body());
                }
            }
            Item::End { body_bytes } => {
                if let Some(head) = response.take() {
                    done.push((head, body_bytes, response_body.take(), *paired, time));
                }
            }
        });
        for (head, body_bytes, body, paired, time) in done {
            self.complete(&head, body_bytes, body.as_ref(), paired, time, cx);
        }
        if err.is_some() {
            cx.counts.malformed += 1;
        }
    }

    /// The response direction found a head again after a loss. The server
    /// had received the requests that start before `ack`; with requests
    /// sent one at a time, it answers the newest of them, and the older
    /// ones were answered in what was lost.
    fn resync(&mut self, ack: u32, time: i64, cx: &mut Cx) {
        let received = self.requests.iter().filter(|(s, _)| !at_or_after(*s, ack)).count();
        for _ in 0..received.saturating_sub(1) {
            if let Some((_, r)) = self.requests.pop_front()
                && !r.reported
            {
                let error = Some("response not captured");
                cx.out.push(report(cx.rec, (self.client, self.server), &r, None, error, time, true));
            }
        }
        self.down.lost = false;
        self.down.parser.reset();
        self.down.parser.expect = self.requests.iter().map(|(_, r)| Expect::of(&r.head)).collect();
        self.response = None;
        self.response_body = None;
    }

    /// A response ended: it completes the oldest request (if it answers one
    /// that was captured).
    fn complete(
        &mut self,
        head: &Head,
        body_bytes: u64,
        body: Option<&Captured>,
        paired: bool,
        time: i64,
        cx: &mut Cx,
    ) {
        let gap = std::mem::take(&mut self.response_gap);
        if !paired {
            return;
        }
        let Some((_, req)) = self.requests.pop_front() else { return };
        if req.reported {
            return;
        }
        let res = Some((head, body_bytes, body));
        cx.out.push(report(cx.rec, (self.client, self.server), &req, res, None, time, gap || req.gap));
    }

    /// The server closed its side.
    fn end_of_responses(&mut self, cx: &mut Cx) {
        if let Some(Item::End { body_bytes }) = self.down.parser.close()
            && let Some(head) = self.response.take()
        {
            let body = self.response_body.take();
            let paired = self.paired;
            self.complete(&head, body_bytes, body.as_ref(), paired, self.last, cx);
        }
    }
}

/// The `http.transaction` of a sniffed request (with `gap`: whether part of
/// the exchange was not captured).
fn report(
    rec: &Recording,
    (client, server): (SocketAddr, SocketAddr),
    req: &Request,
    res: Option<(&Head, u64, Option<&Captured>)>,
    error: Option<&str>,
    time: i64,
    gap: bool,
) -> Map {
    let mut data = rec.transaction(req, res, error, client, server, time);
    data.push(Str::from_static("gap"), Value::Bool(gap));
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection written segment by segment; a segment can be "lost"
    /// (its sequence numbers used, the segment never given to the flows).
    struct Wire {
        flows: Flows,
        client: SocketAddr,
        server: SocketAddr,
        /// Next sequence numbers of client and server.
        c: u32,
        s: u32,
        time: i64,
        out: Vec<Map>,
    }

    impl Wire {
        fn new(max_flow_bytes: usize) -> Self {
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

        fn client_seg(&mut self, flags: u8, payload: &[u8], deliver: bool) -> u32 {
            let seq = self.c;
            self.c = self.c.wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
            self.seg(true, flags, payload, seq, deliver);
            seq
        }

        fn server_seg(&mut self, flags: u8, payload: &[u8], deliver: bool) -> u32 {
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
        fn taken(&mut self) -> Vec<String> {
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

    #[test]
    fn a_lost_request_does_not_shift_the_pairing() {
        let mut w = Wire::new(1 << 16);
        w.client_seg(0, b"GET /lost HTTP/1.1\r\n\r\n", false);
        w.server_seg(0, OK, true); // answers /lost, which was not captured
        w.client_seg(0, b"GET /b HTTP/1.1\r\n\r\n", true);
        w.server_seg(0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", true);
        assert_eq!(w.taken(), ["GET /b 404 gap=false -"]);
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
            ["GET /1 200 gap=false -", "HEAD /2 200 gap=false -", "GET /3 - gap=false no response"]
        );
        assert_eq!(w.flows.count(), 0);
    }

    #[test]
    fn a_flow_joined_mid_stream_waits_for_a_message_head() {
        let mut w = Wire::new(1 << 16);
        w.flows = Flows::new(vec![80], Arc::new(Recording::default()), w.flows.limits);
        w.server_seg(0, b"lo world, the end of an earlier body", true);
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
        assert_eq!(w.flows.flows.values().next().unwrap().ex.requests.len(), MAX_PENDING);
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
