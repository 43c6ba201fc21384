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

use super::parser::{Expect, Item, Parser, Side};
use super::{Recording, Request};
use crate::event::{Map, time};
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
            tracing::warn!("cannot reach the upstream {upstream}: {e}");
            let mut client = client;
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
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
    loop {
        let read_at = time::now_micros();
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.raw.load(Ordering::Relaxed) {
            if to.write_all(&buf).await.is_err() {
                break;
            }
            buf.clear();
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
            conn.rec.transaction(&r, None, Some("no response"), conn.client, conn.server, time::now_micros());
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
        let data = conn.rec.transaction(&req, res, None, conn.client, conn.server, time::now_micros());
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
                late.push(conn.rec.transaction(r, None, Some("no response"), conn.client, conn.server, now));
                r.reported = true;
            }
        }
    }
    for data in late {
        conn.emit(data).await;
    }
}
