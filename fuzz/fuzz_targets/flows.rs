//! Sniff mode's `Flows`: TCP segments between three clients and one server
//! (127.0.0.1:80), with flags, sequence and acknowledgement numbers from
//! the input (mostly consistent with the connection, sometimes lost,
//! retransmitted or random), payloads from a dictionary of HTTP fragments
//! or raw bytes, and `sweep` now and then with a growing clock.
//!
//! Checks: no panic; never more flows than `max_flows`; the heap stays
//! bounded: a `Flood` op sends megabytes ahead of a hole, which the memory
//! limits (`max_flow_bytes`, `max_buffered_bytes`) must keep from being
//! held.
//!
//! Then a conversation on a fourth connection, consistent this time (one
//! after another or pipelined, every response true to its request) with
//! segments chosen by the input never captured: every transaction reported
//! with a status has its own request's status, and its size unless marked
//! `gap` or `error` — never another request's answer.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arbitrary::Arbitrary;
use hostwatch::sources::http_capture::Recording;
use hostwatch::sources::http_capture::flows::{ACK, FIN, Flows, Limits, RST, SYN, Segment};
use libfuzzer_sys::fuzz_target;

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Relaxed);
            LIVE.fetch_add(new, Relaxed);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

const DICT: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /?token=x&a=b HTTP/1.1\r\nAuthorization: x\r\nUser-Agent: f\r\nX-Request-Id: 1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    b"HEAD / HTTP/1.1\r\n\r\n",
    b"HEAD",
    b"CONNECT a:443 HTTP/1.1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: application/json\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nSet-Cookie: s=1\r\n\r\n",
    b"HTTP/1.1 ",
    b"5\r\nhello\r\n",
    b"3;x=1\r\nabc\r\n",
    b"0\r\n\r\n",
    b"0\r\nT: v\r\n\r\n",
    b"Content-Length: 3\r\n\r\nabc",
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"\r\n",
    b"hello",
    b"abc",
    b"\x16\x03\x01\x02\x00",
];

#[derive(Arbitrary, Debug)]
enum Payload {
    None,
    Dict(u8),
    /// Part of a dictionary entry.
    Part { idx: u8, from: u8, len: u8 },
    /// Two entries in one segment.
    Two(u8, u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Num {
    /// Where the connection is (the sender's next seq, the peer's next).
    Now,
    /// The same, `n` bytes on: the bytes between were lost in capture.
    Ahead(u16),
    /// The same, `n` bytes back: a retransmission.
    Back(u16),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct Seg {
    client: u8,
    from_server: bool,
    flags: u8,
    seq: Num,
    ack: Num,
    payload: Payload,
    /// Mostly 0: payload bytes cut off by the capture.
    cut: u8,
    dt: u16,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Seg(Seg),
    /// The usual segment: SYN only on a new connection, ACK set, in order.
    Simple { client: u8, from_server: bool, payload: Payload },
    Sweep { dt: u32 },
    /// `count * 16` segments of 1400 bytes, each after a hole.
    Flood { client: u8, from_server: bool, count: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_flows: u8,
    max_flow_bytes: u16,
    max_buffered_bytes: u16,
    isn: [u32; 6],
    ops: Vec<Op>,
    conversation: Conversation,
}

/// One request and its response, and which of their segments are lost.
#[derive(Arbitrary, Debug)]
struct Exchange {
    post: u8,
    status: u8,
    body: u8,
    chunked: bool,
    /// Where the request and the response are cut into segments.
    request_cut: u8,
    response_pieces: u8,
    /// Bit 0: the request's first segment, 1: its second, 2..: response
    /// segments, 15: the client's acknowledgement after the response.
    lost: u16,
}

#[derive(Arbitrary, Debug)]
struct Conversation {
    isn: [u32; 2],
    /// Requests sent before their responses (0 or 1: one at a time).
    pipeline: u8,
    exchanges: Vec<Exchange>,
    /// 0: FIN both ways, 1: reset by the client, else left open; bit 7:
    /// the first of those segments lost.
    close: u8,
}

fn payload<'a>(p: &'a Payload, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    match p {
        Payload::None => b"",
        Payload::Dict(i) => DICT[*i as usize % DICT.len()],
        Payload::Part { idx, from, len } => {
            let e = DICT[*idx as usize % DICT.len()];
            let from = (*from as usize).min(e.len());
            &e[from..(from + *len as usize).min(e.len())]
        }
        Payload::Two(a, b) => {
            scratch.clear();
            scratch.extend_from_slice(DICT[*a as usize % DICT.len()]);
            scratch.extend_from_slice(DICT[*b as usize % DICT.len()]);
            scratch
        }
        Payload::Raw(v) => v,
    }
}

/// A heap allowed besides the flows' limits: per op (requests waiting for
/// a response, events), and per flow direction (a message head waiting for
/// its end, up to `MAX_HEAD`, and what the reassembler may overshoot).
const PER_OP: usize = 4 << 10;
const PER_FLOW: usize = 2 * (hostwatch::sources::http_capture::parser::MAX_HEAD + 4096) + (64 << 10);

fuzz_target!(|input: Input| {
    let limits = Limits {
        max_flows: (input.max_flows % 4) as usize + 1,
        max_flow_bytes: input.max_flow_bytes as usize % 8192,
        max_buffered_bytes: input.max_buffered_bytes as usize % 16384,
    };
    let server: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let clients: [SocketAddr; 3] =
        ["127.0.0.1:40000", "10.0.0.2:40001", "[::1]:40002"].map(|a| a.parse().unwrap());
    let mut flows = Flows::new(vec![80], Arc::new(Recording::default()), limits);
    // Per client: the client's and the server's next sequence numbers.
    let mut next = [[0u32; 2]; 3];
    for (i, n) in next.iter_mut().enumerate() {
        *n = [input.isn[2 * i], input.isn[2 * i + 1]];
    }
    let mut time: i64 = 1_700_000_000_000_000;
    let mut scratch = Vec::new();
    let mut flood = Vec::new();
    let base = LIVE.load(Relaxed);
    let mut ops = 0usize;
    for op in input.ops.iter().take(1024) {
        ops += 1;
        let mut out = Vec::new();
        match op {
            Op::Sweep { dt } => {
                time += *dt as i64;
                flows.sweep(time, &mut out);
            }
            Op::Seg(s) => {
                let c = s.client as usize % 3;
                let dir = s.from_server as usize;
                let num = |n: &Num, at: u32| match *n {
                    Num::Now => at,
                    Num::Ahead(d) => at.wrapping_add(d as u32),
                    Num::Back(d) => at.wrapping_sub(d as u32),
                    Num::Raw(v) => v,
                };
                let seq = num(&s.seq, next[c][dir]);
                let ack = num(&s.ack, next[c][1 - dir]);
                let payload = payload(&s.payload, &mut scratch);
                let flags = s.flags & (FIN | SYN | RST | ACK | 0x08);
                let cut = if s.cut >= 0xf0 { (s.cut - 0xf0) as u32 * 100 } else { 0 };
                time += s.dt as i64;
                let (src, dst) = if dir == 0 { (clients[c], server) } else { (server, clients[c]) };
                let seg = Segment { time, src, dst, seq, ack, flags, payload, cut };
                flows.segment(&seg, &mut out);
                let end = seq
                    .wrapping_add(payload.len() as u32)
                    .wrapping_add(cut)
                    .wrapping_add(u32::from(flags & (SYN | FIN) != 0));
                if (end.wrapping_sub(next[c][dir]) as i32) > 0 {
                    next[c][dir] = end;
                }
            }
            Op::Simple { client, from_server, payload: p } => {
                let c = *client as usize % 3;
                let dir = *from_server as usize;
                let payload = payload(p, &mut scratch);
                let seq = next[c][dir];
                let ack = next[c][1 - dir];
                time += 1000;
                let (src, dst) = if dir == 0 { (clients[c], server) } else { (server, clients[c]) };
                let seg = Segment { time, src, dst, seq, ack, flags: ACK, payload, cut: 0 };
                flows.segment(&seg, &mut out);
                next[c][dir] = seq.wrapping_add(payload.len() as u32);
            }
            Op::Flood { client, from_server, count } => {
                let c = *client as usize % 3;
                let dir = *from_server as usize;
                let (src, dst) = if dir == 0 { (clients[c], server) } else { (server, clients[c]) };
                flood.resize(1400, b'x');
                let start = next[c][dir];
                for i in 0..*count as u32 * 16 {
                    // A one-byte hole before each segment.
                    let seq = start.wrapping_add(1 + i * 1401);
                    time += 10;
                    let seg = Segment { time, src, dst, seq, ack: next[c][1 - dir], flags: ACK, payload: &flood, cut: 0 };
                    flows.segment(&seg, &mut out);
                }
                next[c][dir] = start.wrapping_add(*count as u32 * 16 * 1401);
            }
        }
        drop(out);
        assert!(flows.count() <= limits.max_flows, "{} flows, max_flows {}", flows.count(), limits.max_flows);
        let live = LIVE.load(Relaxed).saturating_sub(base);
        let allowed = ops * PER_OP + limits.max_buffered_bytes + limits.max_flows * PER_FLOW + (256 << 10);
        assert!(live <= allowed, "{live} bytes of heap in use, {allowed} allowed, after {op:?}");
    }
    let mut out = Vec::new();
    flows.sweep(time + 1_000_000_000, &mut out);
    assert_eq!(flows.count(), 0, "flows left after they all went idle");
    conversation(&input.conversation, time + 2_000_000_000);
});

/// A connection written segment by segment, some segments not captured.
struct Wire {
    flows: Flows,
    client: SocketAddr,
    server: SocketAddr,
    next: [u32; 2],
    time: i64,
    out: Vec<hostwatch::event::Map>,
}

impl Wire {
    fn send(&mut self, from_server: bool, flags: u8, payload: &[u8], captured: bool) {
        let dir = from_server as usize;
        let seq = self.next[dir];
        self.next[dir] =
            seq.wrapping_add(payload.len() as u32).wrapping_add(u32::from(flags & (SYN | FIN) != 0));
        self.time += 1000;
        if captured {
            let (src, dst) = if from_server { (self.server, self.client) } else { (self.client, self.server) };
            let flags = if flags == SYN { SYN } else { flags | ACK };
            let ack = self.next[1 - dir];
            let s = Segment { time: self.time, src, dst, seq, ack, flags, payload, cut: 0 };
            self.flows.segment(&s, &mut self.out);
        }
    }
}

fn conversation(c: &Conversation, time: i64) {
    use hostwatch::event::Value;
    let limits = Limits { max_flows: 4, max_flow_bytes: 1 << 16, max_buffered_bytes: 1 << 20 };
    let mut w = Wire {
        flows: Flows::new(vec![80], Arc::new(Recording::default()), limits),
        client: "127.0.0.1:40003".parse().unwrap(),
        server: "127.0.0.1:80".parse().unwrap(),
        next: c.isn,
        time,
        out: Vec::new(),
    };
    w.send(false, SYN, b"", true);
    w.send(true, SYN | ACK, b"", true);
    let exchanges = &c.exchanges[..c.exchanges.len().min(64)];
    // (status, response bytes, whether any of the response was lost)
    let mut truth = Vec::new();
    let batch = (c.pipeline as usize % 4).max(1);
    for (b, group) in exchanges.chunks(batch).enumerate() {
        for (i, e) in group.iter().enumerate() {
            let k = b * batch + i;
            let req = if e.post % 2 == 1 {
                let body = "b".repeat(e.post as usize);
                format!("POST /r{k} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            } else {
                format!("GET /r{k} HTTP/1.1\r\nHost: x\r\n\r\n")
            };
            let req = req.as_bytes();
            let cut = (e.request_cut as usize % req.len()).max(1);
            w.send(false, 0, &req[..cut], e.lost & 1 == 0);
            w.send(false, 0, &req[cut..], e.lost & 2 == 0);
        }
        for (i, e) in group.iter().enumerate() {
            let k = b * batch + i;
            let status = [200u16, 201, 301, 404, 500][e.status as usize % 5];
            let body = vec![b'x'; 7 * k + e.body as usize % 7];
            let mut res = if e.chunked {
                format!("HTTP/1.1 {status} S\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes()
            } else {
                format!("HTTP/1.1 {status} S\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes()
            };
            let head = res.len();
            if e.chunked {
                for part in body.chunks(5) {
                    res.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    res.extend_from_slice(part);
                    res.extend_from_slice(b"\r\n");
                }
                res.extend_from_slice(b"0\r\n\r\n");
            } else {
                res.extend_from_slice(&body);
            }
            let pieces = (e.response_pieces as usize % 6).max(1);
            let size = res.len().div_ceil(pieces);
            let mut any_lost = false;
            for (p, piece) in res.chunks(size).enumerate() {
                let lost = e.lost & (1 << (2 + p)) != 0;
                any_lost |= lost;
                w.send(true, 0, piece, !lost);
            }
            w.send(false, 0, b"", e.lost & (1 << 15) == 0);
            truth.push((status, (head + body.len()) as u64, any_lost));
        }
    }
    let first_captured = c.close & 0x80 == 0;
    match c.close % 3 {
        0 => {
            w.send(true, FIN, b"", first_captured);
            w.send(false, FIN, b"", true);
        }
        1 => w.send(false, RST, b"", first_captured),
        _ => w.send(false, 0, b"", true),
    }
    w.flows.sweep(w.time + 1_000_000_000, &mut w.out);
    let mut seen = vec![false; truth.len()];
    for t in &w.out {
        let Some(Value::Str(path)) = t.get("path") else { panic!("no path: {t:?}") };
        let k: usize = path[2..].parse().unwrap();
        assert!(!seen[k], "{path} reported twice");
        seen[k] = true;
        let (status, bytes, lost) = truth[k];
        let gap = t.get("gap") == Some(&Value::Bool(true));
        let error = t.get("error").is_some();
        match t.get("status") {
            Some(Value::Null) | None => assert!(!lost || gap, "a lost answer reported as none: {t:?}"),
            Some(s) => {
                assert_eq!(*s, Value::from(u64::from(status)), "another request's answer: {t:?}");
                if !gap && !error {
                    assert_eq!(t.get("response_bytes"), Some(&Value::from(bytes)), "{t:?}");
                }
            }
        }
    }
}
