//! `http_capture`: the HTTP traffic of local services as `http.transaction`
//! events, one per request/response pair, without changing the services.
//!
//! `mode: proxy` listens on `listen` and forwards every connection to
//! `upstream`, byte for byte except for an `X-Forwarded-For` header added
//! to each request; both directions pass through the same streaming
//! parser, which frames messages (keep-alive, pipelining, chunked bodies,
//! 1xx, HEAD and 304) and counts bodies without holding them. After a
//! protocol switch (WebSocket) the bytes pass through untouched.
//!
//! `mode: sniff` changes nothing in the path: it captures the segments of
//! the service's `ports` on `interface` (`sniff`), puts each connection's
//! two streams back in order (`reassembly`), and runs the same parser over
//! them (`flows`).

pub mod flows;
pub mod parser;
mod proxy;
pub mod reassembly;
mod sniff;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Deserialize;

use super::context::SourceContext;
use crate::config::{BuildError, Spanned};
use crate::event::id::IdGen;
use crate::event::{AckSet, Event, EventBatch, Map, Str, Value, time};

/// `type: http_capture`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sniff`: capture the traffic of `ports` on `interface` (needs
    /// CAP_NET_RAW); `proxy`: listen and forward to `upstream`. Required.
    pub mode: Mode,
    /// Sniff: the network interface to capture on (`lo`, `eth0`), or `any`.
    /// Default: `any`.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Sniff: the TCP ports the services listen on (at most 64). Default:
    /// none (required in sniff mode).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Sniff: the most connections followed at once; more are not followed
    /// (`hostwatch_http_capture_flows_refused_total`). Default: `10000`.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Sniff: the most bytes held for one direction of a connection while a
    /// segment before them is missing; past it the missing bytes are
    /// reported as a gap. Default: `256KiB`.
    #[serde(default = "default_max_flow_bytes")]
    pub max_flow_bytes: crate::config::ByteSize,
    /// Sniff: the most bytes held that way for all connections together.
    /// Default: `16MiB`.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: crate::config::ByteSize,
    /// Sniff: the size of the capture ring the kernel fills (in blocks of
    /// 1 MiB), memory the kernel holds for as long as the source runs. The
    /// default dropped no packet of about 15,000 requests/s on two shared
    /// cores (4MiB dropped 0.09 %); raise it if
    /// `hostwatch_http_capture_kernel_drops_total` grows (drops are also
    /// logged, at most once a minute). Default: `64MiB`.
    #[serde(default = "default_ring_size")]
    pub ring_size: crate::config::ByteSize,
    /// Proxy: the address to listen on (`127.0.0.1:8081`). Default: none
    /// (required in proxy mode).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Proxy: the service's address, `host:port` or `http://host:port`
    /// (`127.0.0.1:8080`); the proxy speaks plain HTTP to it. Default: none
    /// (required in proxy mode).
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// Query parameters whose values are masked. Default: `token`,
    /// `password`, `key`, `secret`.
    #[serde(default = "default_secret_params")]
    pub secret_params: Vec<String>,
    /// Headers copied into the event (request and response). Default:
    /// `user-agent`, `content-type`, `content-length`, `x-request-id`.
    #[serde(default = "default_headers")]
    pub headers: Vec<String>,
    /// Headers whose values never appear: `[redacted]` if captured.
    /// Default: `authorization`, `proxy-authorization`, `cookie`, `set-cookie`.
    #[serde(default = "default_redact")]
    pub redact: Vec<String>,
    /// Capture request and response bodies up to this size (`request_body`,
    /// `response_body`, and `*_body_truncated` when cut); `0` captures none.
    /// Default: `0`.
    #[serde(default)]
    pub max_body_bytes: crate::config::ByteSize,
    /// The content types whose bodies are captured (`application/json`,
    /// `text/*`). Default: `application/json`, `text/*`.
    #[serde(default = "default_body_content_types")]
    pub body_content_types: Vec<String>,
    /// A request without a response for this long is reported with `status:
    /// null` and `error: "no response"`. Default: `30s`.
    #[serde(default = "default_transaction_timeout")]
    pub transaction_timeout: crate::config::Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sniff,
    Proxy,
}

fn default_interface() -> String {
    "any".into()
}
fn default_max_flows() -> usize {
    10_000
}
fn default_max_flow_bytes() -> crate::config::ByteSize {
    crate::config::ByteSize(256 << 10)
}
fn default_max_buffered_bytes() -> crate::config::ByteSize {
    crate::config::ByteSize(16 << 20)
}
fn default_ring_size() -> crate::config::ByteSize {
    crate::config::ByteSize(64 << 20)
}

fn default_secret_params() -> Vec<String> {
    ["token", "password", "key", "secret"].map(String::from).to_vec()
}
fn default_headers() -> Vec<String> {
    ["user-agent", "content-type", "content-length", "x-request-id"].map(String::from).to_vec()
}
fn default_redact() -> Vec<String> {
    ["authorization", "proxy-authorization", "cookie", "set-cookie"].map(String::from).to_vec()
}
fn default_body_content_types() -> Vec<String> {
    ["application/json", "text/*"].map(String::from).to_vec()
}
fn default_transaction_timeout() -> crate::config::Duration {
    crate::config::Duration::from_secs(30)
}

/// What the event builder needs, shared by every connection.
#[derive(Debug)]
pub struct Recording {
    secret_params: Vec<String>,
    headers: Vec<String>,
    redact: Vec<String>,
    timeout: Duration,
    max_body: usize,
    body_types: Vec<String>,
}

/// Where transactions come from.
enum Capture {
    Proxy { listen: SocketAddr, upstream: String },
    Sniff { interface: String, ports: Vec<u16>, limits: flows::Limits, ring_size: usize },
}

pub struct HttpCapture {
    capture: Capture,
    recording: std::sync::Arc<Recording>,
}

impl HttpCapture {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let capture = match config.mode {
            Mode::Proxy => {
                let (Some(listen), Some(upstream)) = (&config.listen, &config.upstream) else {
                    return Err(BuildError::new("`mode: proxy` needs `listen` and `upstream`"));
                };
                let addr: SocketAddr = listen
                    .value
                    .parse()
                    .map_err(|e| BuildError::at(listen.pos, format!("`listen` is an address:port ({e})")))?;
                let upstream = proxy::upstream_address(&upstream.value)
                    .map_err(|e| BuildError::at(upstream.pos, format!("`upstream`: {e}")))?;
                Capture::Proxy { listen: addr, upstream }
            }
            Mode::Sniff => {
                if config.ports.is_empty() || config.ports.len() > 64 {
                    return Err(BuildError::new("`mode: sniff` needs `ports`: 1 to 64 TCP ports"));
                }
                if config.listen.is_some() || config.upstream.is_some() {
                    return Err(BuildError::new("`listen` and `upstream` are for `mode: proxy`"));
                }
                Capture::Sniff {
                    interface: config.interface.clone(),
                    ports: config.ports.clone(),
                    limits: flows::Limits {
                        max_flows: config.max_flows.max(1),
                        max_flow_bytes: config.max_flow_bytes.0 as usize,
                        max_buffered_bytes: config.max_buffered_bytes.0 as usize,
                    },
                    ring_size: config.ring_size.0 as usize,
                }
            }
        };
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        Ok(HttpCapture {
            capture,
            recording: std::sync::Arc::new(Recording {
                secret_params: config.secret_params.clone(),
                headers: lower(&config.headers),
                redact: lower(&config.redact),
                timeout: config.transaction_timeout.0,
                max_body: config.max_body_bytes.0 as usize,
                body_types: lower(&config.body_content_types),
            }),
        })
    }

    pub async fn run(self, mut cx: SourceContext) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Map>(4096);
        let started = match &self.capture {
            Capture::Proxy { listen, upstream } => match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => {
                    tracing::info!(component = %cx.id, address = %l.local_addr().unwrap_or(*listen), "listening");
                    tokio::spawn(accept(l, upstream.clone(), self.recording.clone(), tx, cx.metrics.clone()));
                    Ok(())
                }
                Err(e) => Err(format!("cannot listen on {listen}: {e}")),
            },
            Capture::Sniff { interface, ports, limits, ring_size } => {
                match sniff::Ring::open(interface, ports, *ring_size) {
                    Ok(ring) => {
                        let flows = flows::Flows::new(ports.clone(), self.recording.clone(), *limits);
                        let stats = std::sync::Arc::new(SniffStats::default());
                        stats.register(&cx);
                        let stop = cx.shutdown.clone();
                        let id = cx.id.clone();
                        std::thread::Builder::new()
                            .name("http-capture".into())
                            .spawn(move || capture(ring, flows, tx, stop, stats, id))
                            .map(|_| ())
                            .map_err(|e| format!("cannot start the capture thread: {e}"))
                    }
                    Err(e) => Err(format!("cannot capture on `{interface}`: {e}")),
                }
            }
        };
        if let Err(e) = started {
            cx.ready(Err(e.clone()));
            return Err(e);
        }
        cx.ready(Ok(()));
        let mut ids = IdGen::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                Some(data) = rx.recv() => {
                    batch.push(self.event(&cx, &mut ids, data));
                    if batch.len() >= 1000 && !send(&mut cx, &mut batch).await {
                        return Ok(());
                    }
                }
                _ = flush.tick(), if !batch.is_empty() => {
                    if !send(&mut cx, &mut batch).await {
                        return Ok(());
                    }
                }
                _ = cx.shutdown.cancelled() => {
                    while let Ok(data) = rx.try_recv() {
                        batch.push(self.event(&cx, &mut ids, data));
                    }
                    send(&mut cx, &mut batch).await;
                    return Ok(());
                }
            }
        }
    }

    fn event(&self, cx: &SourceContext, ids: &mut IdGen, data: Map) -> Event {
        let subject = match data.get("path") {
            Some(Value::Str(p)) => Some(p.clone()),
            _ => None,
        };
        cx.event(ids, time::now_micros(), Str::from_static("http.transaction"), subject, data)
    }
}

/// Proxy mode: each client connection is forwarded on a task of its own.
async fn accept(
    listener: tokio::net::TcpListener,
    upstream: String,
    rec: std::sync::Arc<Recording>,
    tx: tokio::sync::mpsc::Sender<Map>,
    metrics: std::sync::Arc<crate::pipeline::metrics::ComponentMetrics>,
) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let _ = client.set_nodelay(true);
                tokio::spawn(proxy::connection(
                    client,
                    peer,
                    upstream.clone(),
                    rec.clone(),
                    tx.clone(),
                    metrics.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

// === sniff mode ===

/// Sniff mode's counters, for the metrics endpoint.
#[derive(Default)]
struct SniffStats {
    packets: AtomicU64,
    kernel_drops: AtomicU64,
    flows: AtomicU64,
    flows_refused: AtomicU64,
    gaps: AtomicU64,
    malformed: AtomicU64,
}

impl SniffStats {
    fn register(self: &std::sync::Arc<Self>, cx: &SourceContext) {
        let s = self.clone();
        cx.registry.add_collector(
            &cx.id,
            std::sync::Arc::new(move |families: &mut crate::pipeline::metrics::Families| {
                families.counter(
                    "hostwatch_http_capture_packets_total",
                    "TCP segments captured.",
                    s.packets.load(Relaxed),
                );
                families.counter(
                    "hostwatch_http_capture_kernel_drops_total",
                    "Segments the kernel dropped because the capture ring was full.",
                    s.kernel_drops.load(Relaxed),
                );
                families.gauge(
                    "hostwatch_http_capture_flows",
                    "Connections followed.",
                    s.flows.load(Relaxed),
                );
                families.counter(
                    "hostwatch_http_capture_flows_refused_total",
                    "Connections not followed because max_flows were.",
                    s.flows_refused.load(Relaxed),
                );
                families.counter(
                    "hostwatch_http_capture_gaps_total",
                    "Holes in captured streams.",
                    s.gaps.load(Relaxed),
                );
                families.counter(
                    "hostwatch_http_capture_malformed_total",
                    "Streams that could not be parsed as HTTP/1.",
                    s.malformed.load(Relaxed),
                );
            }),
        );
    }
}

/// The capture thread: blocks of packets from the ring through the flows;
/// transactions to the source's task.
fn capture(
    mut ring: sniff::Ring,
    mut flows: flows::Flows,
    tx: tokio::sync::mpsc::Sender<Map>,
    stop: tokio_util::sync::CancellationToken,
    stats: std::sync::Arc<SniffStats>,
    id: impl std::fmt::Display,
) {
    let mut out = Vec::new();
    let mut drop_warning = sniff::DropWarning::default();
    let mut swept = time::now_micros();
    while !stop.is_cancelled() {
        ring.next_block(100, |p| {
            if let Some(s) = sniff::decode(&p) {
                flows.segment(&s, &mut out);
            }
        });
        let now = time::now_micros();
        if now - swept >= 250_000 {
            swept = now;
            flows.sweep(now, &mut out);
            let (packets, drops) = ring.stats();
            stats.packets.fetch_add(packets, Relaxed);
            stats.kernel_drops.fetch_add(drops, Relaxed);
            if let Some(n) = drop_warning.note(drops, std::time::Instant::now()) {
                tracing::warn!(
                    component = %id,
                    "the kernel dropped {n} captured packets (capture ring full); transactions they \
                     carried are reported with gap: true or not at all; raise ring_size"
                );
            }
            stats.flows.store(flows.count() as u64, Relaxed);
            stats.flows_refused.store(flows.counts.flows_refused, Relaxed);
            stats.gaps.store(flows.counts.gaps, Relaxed);
            stats.malformed.store(flows.counts.malformed, Relaxed);
        }
        for data in out.drain(..) {
            if tx.blocking_send(data).is_err() {
                return;
            }
        }
    }
}

async fn send(cx: &mut SourceContext, batch: &mut Vec<Event>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let events = std::mem::take(batch);
    cx.metrics.add_in(events.len());
    cx.out.send(EventBatch::new(events, AckSet::new())).await.is_ok()
}

// === the event ===

/// A request on its way: what the event needs from it.
pub struct Request {
    pub head: parser::Head,
    /// When its first byte was seen, microseconds since the epoch.
    pub started: i64,
    pub body_bytes: u64,
    /// Sent whole (its body too).
    pub done: bool,
    /// Reported as unanswered already (its timeout passed).
    pub reported: bool,
    /// Part of it was lost in capture.
    pub gap: bool,
    /// The captured start of its body, if asked for.
    pub body: Option<Captured>,
}

/// The start of a body, up to `max_body_bytes`.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Captured {
    pub fn add(&mut self, data: &[u8], max: usize) {
        let room = max.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..room.min(data.len())]);
        self.truncated |= data.len() > room;
    }
}

impl Default for Recording {
    /// The defaults of `Config`, bodies captured up to 64 bytes.
    fn default() -> Self {
        Recording {
            secret_params: default_secret_params(),
            headers: default_headers(),
            redact: default_redact(),
            timeout: default_transaction_timeout().0,
            max_body: 64,
            body_types: default_body_content_types(),
        }
    }
}

impl Recording {
    /// A buffer for the body of a message with this head, if its body is
    /// to be captured.
    pub fn capture(&self, head: &parser::Head) -> Option<Captured> {
        if self.max_body == 0 {
            return None;
        }
        let ct = head.header("content-type")?.split(';').next()?.trim().to_ascii_lowercase();
        let wanted = self.body_types.iter().any(|t| match t.strip_suffix("/*") {
            Some(prefix) => ct.split('/').next() == Some(prefix),
            None => *t == ct,
        });
        wanted.then(Captured::default)
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The `http.transaction` data for a request and its response (or the
    /// lack of one).
    pub fn transaction(
        &self,
        req: &Request,
        res: Option<(&parser::Head, u64, Option<&Captured>)>,
        error: Option<&str>,
        client: SocketAddr,
        server: SocketAddr,
        end: i64,
    ) -> Map {
        let h = &req.head;
        let (path, query) = match h.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (h.target.as_str(), None),
        };
        let query = query.map(|q| self.mask(q));
        let mut m = Map::with_capacity(20);
        let k = Str::from_static;
        m.push(k("method"), Value::from(h.method.clone()));
        let url = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        m.push(k("url"), Value::from(url));
        m.push(k("path"), Value::from(path.to_string()));
        m.push(k("query"), query.map_or(Value::Null, Value::from));
        m.push(k("host"), h.header("host").map_or(Value::Null, |v| Value::from(v.to_string())));
        m.push(k("http_version"), Value::from(if h.version == 0 { "1.0" } else { "1.1" }));
        match res {
            Some((r, body, _)) => {
                m.push(k("status"), Value::from(u64::from(r.status)));
                m.push(k("reason"), Value::from(r.reason.clone()));
                m.push(k("response_bytes"), Value::from(r.bytes as u64 + body));
            }
            None => {
                m.push(k("status"), Value::Null);
                m.push(k("reason"), Value::Null);
                m.push(k("response_bytes"), Value::from(0u64));
            }
        }
        m.push(k("request_bytes"), Value::from(h.bytes as u64 + req.body_bytes));
        // Microseconds, as milliseconds with three decimals.
        let micros = (end - req.started).max(0);
        m.push(k("duration_ms"), Value::Float(micros as f64 / 1000.0));
        m.push(k("client_address"), Value::from(client.ip().to_string()));
        m.push(k("client_port"), Value::from(u64::from(client.port())));
        m.push(k("server_address"), Value::from(server.ip().to_string()));
        m.push(k("server_port"), Value::from(u64::from(server.port())));
        let mut headers = Map::new();
        for (prefix, head) in [("request", Some(h)), ("response", res.map(|r| r.0))] {
            let Some(head) = head else { continue };
            for (name, value) in &head.headers {
                let redacted = self.redact.iter().any(|r| r == name);
                if self.headers.iter().any(|w| w == name) || redacted {
                    if redacted && !self.headers.iter().any(|w| w == name) {
                        continue;
                    }
                    let v = if redacted { "[redacted]".to_string() } else { value.clone() };
                    headers.push(Str::from(format!("{prefix}.{name}")), Value::from(v));
                }
            }
        }
        m.push(k("headers"), Value::Object(headers));
        for (name, captured) in [("request", req.body.as_ref()), ("response", res.and_then(|r| r.2))] {
            if let Some(c) = captured {
                let text = String::from_utf8_lossy(&c.bytes).into_owned();
                m.push(Str::from(format!("{name}_body")), Value::from(text));
                m.push(Str::from(format!("{name}_body_truncated")), Value::Bool(c.truncated));
            }
        }
        if let Some(e) = error {
            m.push(k("error"), Value::from(e.to_string()));
        }
        m
    }

    /// The query string with the values of secret parameters masked.
    fn mask(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if self.secret_params.iter().any(|s| s.eq_ignore_ascii_case(name)) => {
                    format!("{name}=[masked]")
                }
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}
