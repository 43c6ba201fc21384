//! `http_capture`: the HTTP traffic of local services as `http.transaction`
//! events, one per request/response pair, without changing the services.
//!
//! `mode: proxy` listens on `listen` and forwards every connection to
//! `upstream`, byte for byte except for an `X-Forwarded-For` header added
//! to each request; both directions pass through the same streaming
//! parser, which frames messages (keep-alive, pipelining, chunked bodies,
//! 1xx, HEAD and 304) and counts bodies without holding them. After a
//! protocol switch (WebSocket) the bytes pass through untouched.

mod parser;
mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::SourceContext;
use crate::config::{BuildError, Spanned};
use crate::event::id::IdGen;
use crate::event::{AckSet, Event, EventBatch, Map, Str, Value, time};

/// `type: http_capture`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `proxy`: listen and forward to `upstream`. Required.
    pub mode: Mode,
    /// Proxy: the address to listen on (`127.0.0.1:8081`). Required in proxy mode.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Proxy: the service's address (`127.0.0.1:8080`). Required in proxy mode.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Proxy,
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

pub struct HttpCapture {
    listen: SocketAddr,
    upstream: String,
    recording: std::sync::Arc<Recording>,
}

impl HttpCapture {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let (Some(listen), Some(upstream)) = (&config.listen, &config.upstream) else {
            return Err(BuildError::new("`mode: proxy` needs `listen` and `upstream`"));
        };
        let listen: SocketAddr = listen
            .value
            .parse()
            .map_err(|e| BuildError::at(listen.pos, format!("`listen` is an address:port ({e})")))?;
        if upstream.value.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
            return Err(BuildError::at(upstream.pos, "`upstream` is host:port"));
        }
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        Ok(HttpCapture {
            listen,
            upstream: upstream.value.clone(),
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
        let listener = match tokio::net::TcpListener::bind(self.listen).await {
            Ok(l) => l,
            Err(e) => {
                let e = format!("cannot listen on {}: {e}", self.listen);
                cx.ready(Err(e.clone()));
                return Err(e);
            }
        };
        cx.ready(Ok(()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Map>(4096);
        let mut ids = IdGen::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        let _ = client.set_nodelay(true);
                        tokio::spawn(proxy::connection(
                            client,
                            peer,
                            self.upstream.clone(),
                            self.recording.clone(),
                            tx.clone(),
                            cx.metrics.clone(),
                        ));
                    }
                    Err(e) => tracing::warn!(component = %cx.id, "accept: {e}"),
                },
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
    pub started: std::time::Instant,
    pub body_bytes: u64,
    /// Sent whole (its body too).
    pub done: bool,
    /// Reported as unanswered already (its timeout passed).
    pub reported: bool,
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
        let ms = req.started.elapsed().as_secs_f64() * 1000.0;
        m.push(k("duration_ms"), Value::Float((ms * 1000.0).round() / 1000.0));
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
