//! One proxied connection: client → upstream with `X-Forwarded-For` added
//! to each request head, upstream → client untouched, both directions
//! parsed to pair requests with responses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::parser::{Expect, Head, Item, Parser, Side};
use super::{Recording, Request};
use crate::event::{Map, Str, Value, time};
use crate::pipeline::metrics::{ComponentMetrics, DropReason};

/// What both directions of a connection share.
#[derive(Default)]
struct Shared {
    requests: VecDeque<Request>,
    expects: VecDeque<Expect>,
}

struct Conn {
    shared: Mutex<Shared>,
    /// Bytes pass through unparsed from here on (an upgrade, or input the
    /// parser could not follow: the service must not suffer from it).
    raw: AtomicBool,
    rec: Arc<Recording>,
    tx: mpsc::Sender<Map>,
    client: SocketAddr,
    server: SocketAddr,
    metrics: Arc<ComponentMetrics>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn emit(&self, data: Map) {
        let _ = self.tx.send(data).await;
    }

    fn malformed(&self, e: &str) {
        tracing::debug!(client = %self.client, "not following the HTTP on this connection: {e}");
        self.metrics.add_dropped(DropReason::Malformed, 1);
        self.raw.store(true, Ordering::Relaxed);
    }
}

pub async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    upstream: String,
    rec: Arc<Recording>,
    tx: mpsc::Sender<Map>,
    metrics: Arc<ComponentMetrics>,
) {
    let server = match TcpStream::connect(&upstream).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot reach the upstream {upstream}: {e}");
            tracing::warn!("{why}");
            bad_gateway(client, peer, &upstream, &why, &rec, &tx).await;
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let server_addr = server.peer_addr().unwrap_or(peer);
    let conn = Arc::new(Conn {
        shared: Mutex::new(Shared::default()),
        raw: AtomicBool::new(false),
        rec,
        tx,
        client: peer,
        server: server_addr,
        metrics,
    });
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(requests(cr, sw, conn.clone()));
    responses(sr, cw, conn.clone()).await;
    let _ = up.await;
}

/// Client to upstream: each request head gets `X-Forwarded-For`.
async fn requests(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, conn: Arc<Conn>) {
    let mut parser = Parser::new(Side::Request);
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let forwarded = format!("X-Forwarded-For: {}\r\n", conn.client.ip());
    let mut body: Option<super::Captured> = None;
    // When the oldest bytes still in `buf` arrived: a request starts at its
    // first byte, not when the wait for it began (a keep-alive connection
    // may sit idle for seconds between requests).
    let mut first_byte: Option<i64> = None;
    loop {
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let read_at = *first_byte.get_or_insert_with(time::now_micros);
        if conn.raw.load(Ordering::Relaxed) {
            if to.write_all(&buf).await.is_err() {
                break;
            }
            buf.clear();
            first_byte = None;
            continue;
        }
        let mut at = 0;
        let mut out: Vec<u8> = Vec::with_capacity(buf.len() + 64);
        loop {
            match parser.next(&buf[at..]) {
                Ok(Some((item, n))) => {
                    let span = &buf[at..at + n];
                    match item {
                        Item::Head(head) => {
                            // The head without its final CRLF, our header, the CRLF.
                            out.extend_from_slice(&span[..n - 2]);
                            out.extend_from_slice(forwarded.as_bytes());
                            out.extend_from_slice(b"\r\n");
                            body = conn.rec.capture(&head);
                            let mut s = conn.lock();
                            s.expects.push_back(Expect::of(&head));
                            s.requests.push_back(Request {
                                head,
                                started: read_at,
                                body_bytes: 0,
                                done: false,
                                reported: false,
                                gap: false,
                                body: None,
                            });
                        }
                        Item::End { body_bytes } => {
                            let mut s = conn.lock();
                            if let Some(r) = s.requests.iter_mut().rev().find(|r| !r.done) {
                                r.body_bytes = body_bytes;
                                r.done = true;
                                r.body = body.take();
                            }
                        }
                        Item::Body => {
                            if let Some(b) = body.as_mut() {
                                b.add(span, conn.rec.max_body());
                            }
                            out.extend_from_slice(span)
                        }
                    }
                    at += n;
                    if n == 0 && at >= buf.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.malformed(&e);
                    out.extend_from_slice(&buf[at..]);
                    at = buf.len();
                    break;
                }
            }
            if conn.raw.load(Ordering::Relaxed) {
                out.extend_from_slice(&buf[at..]);
                at = buf.len();
                break;
            }
        }
        buf.drain(..at);
        if buf.is_empty() {
            first_byte = None;
        }
        if to.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Upstream to client, untouched; each final response completes the oldest
/// request waiting.
async fn responses(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, conn: Arc<Conn>) {
    let mut parser = Parser::new(Side::Response);
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut head: Option<super::parser::Head> = None;
    let mut body: Option<super::Captured> = None;
    let timeout = conn.rec.timeout;
    let mut check = tokio::time::interval(timeout.min(std::time::Duration::from_secs(1)));
    loop {
        let read = tokio::select! {
            r = from.read_buf(&mut buf) => r,
            _ = check.tick() => {
                overdue(&conn).await;
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Forward first: the client should not wait for the bookkeeping.
        let start = buf.len() - n;
        if to.write_all(&buf[start..]).await.is_err() {
            break;
        }
        if conn.raw.load(Ordering::Relaxed) {
            buf.clear();
            continue;
        }
        let mut at = 0;
        loop {
            {
                let mut s = conn.lock();
                let expects: Vec<Expect> = s.expects.drain(..).collect();
                parser.expect.extend(expects);
            }
            match parser.next(&buf[at..]) {
                Ok(Some((item, n))) => {
                    at += n;
                    match item {
                        Item::Head(h) => {
                            if h.status == 101 || !(100..200).contains(&h.status) {
                                if h.status == 101 {
                                    complete(&conn, &h, 0, None).await;
                                    conn.raw.store(true, Ordering::Relaxed);
                                } else {
                                    body = conn.rec.capture(&h);
                                    head = Some(h);
                                }
                            }
                        }
                        Item::End { body_bytes } => {
                            if let Some(h) = head.take() {
                                complete(&conn, &h, body_bytes, body.take()).await;
                            }
                        }
                        Item::Body => {
                            if let Some(b) = body.as_mut() {
                                b.add(&buf[at - n..at], conn.rec.max_body());
                            }
                        }
                    }
                    if parser.upgraded() {
                        if let Some(h) = head.take() {
                            // A CONNECT tunnel is open.
                            complete(&conn, &h, 0, None).await;
                        }
                        conn.raw.store(true, Ordering::Relaxed);
                        at = buf.len();
                        break;
                    }
                    if n == 0 && at >= buf.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.malformed(&e);
                    at = buf.len();
                    break;
                }
            }
        }
        buf.drain(..at);
    }
    if let (Some(Item::End { body_bytes }), Some(h)) = (parser.close(), head.take()) {
        complete(&conn, &h, body_bytes, body.take()).await;
    }
    // Requests the connection closed on.
    let left: Vec<Request> = conn.lock().requests.drain(..).collect();
    for r in left.into_iter().filter(|r| !reported(r)) {
        let data =
            record(&conn.rec, &r, None, Some("no response"), conn.client, conn.server, time::now_micros());
        conn.emit(data).await;
    }
    let _ = to.shutdown().await;
}

/// A request already reported as unanswered (its timeout passed).
fn reported(r: &Request) -> bool {
    r.reported
}

/// The oldest request gets its response.
async fn complete(conn: &Conn, res: &super::parser::Head, body: u64, captured: Option<super::Captured>) {
    let req = conn.lock().requests.pop_front();
    if let Some(req) = req
        && !reported(&req)
    {
        let res = Some((res, body, captured.as_ref()));
        let data = record(&conn.rec, &req, res, None, conn.client, conn.server, time::now_micros());
        conn.emit(data).await;
    }
}

/// Reports requests that waited longer than the timeout; they stay queued
/// (marked) so that a late response still pairs with the right request.
async fn overdue(conn: &Conn) {
    let mut late = Vec::new();
    let now = time::now_micros();
    let timeout = conn.rec.timeout.as_micros() as i64;
    {
        let mut s = conn.lock();
        for r in s.requests.iter_mut() {
            if r.done && !reported(r) && now - r.started >= timeout {
                late.push(record(&conn.rec, r, None, Some("no response"), conn.client, conn.server, now));
                r.reported = true;
            }
        }
    }
    for data in late {
        conn.emit(data).await;
    }
}

/// The `http.transaction` of a proxied request. `gap` is always false here
/// (nothing is lost between two sockets), but sniffed transactions carry it,
/// and consumers see one schema either way.
fn record(
    rec: &Recording,
    req: &Request,
    res: Option<(&Head, u64, Option<&super::Captured>)>,
    error: Option<&str>,
    client: SocketAddr,
    server: SocketAddr,
    end: i64,
) -> Map {
    let mut data = rec.transaction(req, res, error, client, server, end);
    data.push(Str::from_static("gap"), Value::Bool(false));
    data
}

const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The upstream cannot be reached: the client's first request is read (for
/// the record), answered with 502, and recorded with that status and why.
async fn bad_gateway(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: &str,
    why: &str,
    rec: &Recording,
    tx: &mpsc::Sender<Map>,
) {
    // A client that connects and sends nothing gets its 502 after the
    // transaction timeout, and nothing is recorded.
    let request = tokio::time::timeout(rec.timeout, first_request(&mut client)).await.ok().flatten();
    let _ = client.write_all(BAD_GATEWAY).await;
    let _ = client.shutdown().await;
    let Some((head, started)) = request else { return };
    let server = match tokio::net::lookup_host(upstream).await.ok().and_then(|mut a| a.next()) {
        Some(addr) => addr,
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let req = Request { head, started, body_bytes: 0, done: true, reported: false, gap: false, body: None };
    let mut data = record(rec, &req, None, Some(why), peer, server, time::now_micros());
    data.insert(Str::from_static("status"), Value::from(502u64));
    data.insert(Str::from_static("reason"), Value::from("Bad Gateway"));
    data.insert(Str::from_static("response_bytes"), Value::from(BAD_GATEWAY.len() as u64));
    let _ = tx.send(data).await;
}

/// The head of the first request on a connection, and when its first byte
/// arrived; `None` if the connection ends first or is not HTTP.
async fn first_request(client: &mut TcpStream) -> Option<(Head, i64)> {
    let mut parser = Parser::new(Side::Request);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut started = None;
    loop {
        match client.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let started = *started.get_or_insert_with(time::now_micros);
        match parser.next(&buf) {
            Ok(Some((Item::Head(head), _))) => return Some((head, started)),
            Ok(None) if buf.len() <= super::parser::MAX_HEAD => {}
            _ => return None,
        }
    }
}

/// The address to connect to, from `upstream` written as `host:port` or as
/// the URL `http://host[:port]` (how nginx's `proxy_pass` has it).
pub fn upstream_address(spec: &str) -> Result<String, String> {
    let spec = spec.trim();
    let (rest, default_port) = match spec.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, Some(80)),
        Some((scheme, _)) => {
            return Err(format!(
                "the proxy speaks plain HTTP to the service: write `host:port` or \
                 `http://host:port`, not `{scheme}://`"
            ));
        }
        None => (spec, None),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{spec:?} has more than a host and port; requests keep the path the client sent"
        ));
    }
    let port = match authority.rsplit_once(':') {
        // `[::1]` alone: the colons are the address's.
        _ if authority.ends_with(']') => None,
        Some((host, port)) if !host.is_empty() => {
            Some(port.parse::<u16>().map_err(|_| format!("{port:?} in {spec:?} is not a TCP port"))?)
        }
        _ => None,
    };
    match (port, default_port) {
        (Some(_), _) => Ok(authority.to_string()),
        (None, Some(p)) if !authority.is_empty() => Ok(format!("{authority}:{p}")),
        _ => Err(format!("{spec:?} is not `host:port` or `http://host:port`")),
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_address;

    #[test]
    fn upstream_forms() {
        assert_eq!(upstream_address("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(upstream_address("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(upstream_address("HTTP://web:8080/").unwrap(), "web:8080");
        assert_eq!(upstream_address("http://web").unwrap(), "web:80");
        assert_eq!(upstream_address("[::1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(upstream_address("http://[::1]").unwrap(), "[::1]:80");
        assert!(upstream_address("https://127.0.0.1:8443").unwrap_err().contains("not `https://`"));
        assert!(upstream_address("127.0.0.1").is_err());
        assert!(upstream_address("http://127.0.0.1:8080/api").is_err());
        assert!(upstream_address("127.0.0.1:http").is_err());
        assert!(upstream_address("http://").is_err());
    }
}
