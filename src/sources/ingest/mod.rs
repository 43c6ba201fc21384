//! `ingest`: an HTTP endpoint where local applications publish their own
//! events.
//!
//! `POST /events` takes, by `Content-Type`:
//! - `application/cloudevents+json`: one structured CloudEvent;
//! - `application/cloudevents-batch+json`: a JSON array of them;
//! - `application/json` (or none): one object `{"type": …, "data": …}` or an array;
//! - `application/x-ndjson`: one such object a line;
//! - any type with `ce-specversion`/`ce-type` headers: one CloudEvent in
//!   binary mode, the body being its data.
//!
//! A request is all or nothing: one malformed event refuses the whole request
//! with 400 and the reason, and nothing of it enters the pipeline. The answer
//! is 202 once the events are in the pipeline, or with `ack: delivered` 200
//! once every sink has delivered them. A pipeline that stays full for
//! `backpressure_timeout` answers 503 with `Retry-After`; nothing is ever
//! dropped silently.

mod decode;
mod limits;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;

use self::limits::{BodyError, Budget, Reservation};
use super::context::SourceContext;
use crate::config::{BuildError, ByteSize, Duration as ConfigDuration};
use crate::event::decode::Defaults;
use crate::event::id::IdGen;
use crate::event::{AckSet, BatchStatus, EventBatch, Str, ack, time};
use crate::pipeline::fanout::{Fanout, SendError};
use crate::pipeline::metrics::{ComponentMetrics, DropReason, Families};
use crate::util::auth;
use crate::util::http_server::Server;

/// `type: ingest`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default: `127.0.0.1:8687` (loopback only).
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// The path that takes events. Default: `/events`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The largest request body; a larger one is answered 413. Default: `10MiB`.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: ByteSize,
    /// When a request is answered: `accepted` (202, once the events are in the
    /// pipeline) or `delivered` (200, once every sink has delivered them).
    /// Default: `accepted`.
    #[serde(default)]
    pub ack: AckMode,
    /// How long a request waits for room in a full pipeline before it is
    /// answered 503. Default: `1s`.
    #[serde(default = "default_backpressure_timeout")]
    pub backpressure_timeout: ConfigDuration,
    /// With `ack: delivered`, how long a request waits for delivery before it
    /// is answered 504 (the events stay in the pipeline). Default: `30s`.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: ConfigDuration,
    /// Requests must carry `Authorization: Bearer <token>`; others are
    /// answered 401. Write `{bearer: "${NAME}"}` to keep the token out of the
    /// file. Default: none (any local process may publish).
    #[serde(default)]
    pub auth: Option<auth::Auth>,
    /// Serve HTTPS with this certificate and key. Default: none (plain HTTP).
    #[serde(default)]
    pub tls: Option<tls::TlsConfig>,
    /// How long a client has to send a request head, from its connection
    /// (and TLS handshake) or from its previous request; an idle keep-alive
    /// connection is closed after it too. Default: `10s`.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: ConfigDuration,
    /// How long a client has to send a whole body once its head is in;
    /// a slower one is answered 408 and nothing of it is accepted. Default: `30s`.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: ConfigDuration,
    /// Connections open at once; one more is answered 503 (closed at once
    /// with `tls`). Default: `256`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The memory all request bodies being received may hold together; a
    /// body that would need more is answered 503 with `Retry-After`. At
    /// least twice `max_body_bytes`. Default: `64MiB`.
    #[serde(default = "default_max_buffered")]
    pub max_buffered_bytes: ByteSize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    #[default]
    Accepted,
    Delivered,
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8687))
}
fn default_path() -> String {
    "/events".to_string()
}
fn default_max_body() -> ByteSize {
    ByteSize::mib(10)
}
fn default_backpressure_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_ack_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_header_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_body_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_max_connections() -> usize {
    256
}
fn default_max_buffered() -> ByteSize {
    ByteSize::mib(64)
}

pub struct Ingest {
    config: Config,
    auth: Option<auth::Verifier>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Ingest {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if !config.path.starts_with('/') {
            return Err(BuildError::new(format!("`path` must start with `/`, found {:?}", config.path)));
        }
        if config.max_body_bytes.0 == 0 {
            return Err(BuildError::new("`max_body_bytes` must be more than 0"));
        }
        if config.max_buffered_bytes.0 < config.max_body_bytes.0.saturating_mul(2) {
            return Err(BuildError::new(format!(
                "`max_buffered_bytes` ({}) must be at least twice `max_body_bytes` ({}): a body is joined \
                 into one piece once received, which needs twice its size for a moment",
                config.max_buffered_bytes, config.max_body_bytes
            )));
        }
        if config.max_connections == 0 {
            return Err(BuildError::new("`max_connections` must be more than 0"));
        }
        if config.header_timeout.is_zero() || config.body_timeout.is_zero() {
            return Err(BuildError::new("`header_timeout` and `body_timeout` must be more than 0"));
        }
        let auth = config.auth.as_ref().map(auth::Auth::verifier).transpose().map_err(BuildError::new)?;
        let tls = config.tls.as_ref().map(tls::TlsConfig::acceptor).transpose()?;
        Ok(Ingest { config: config.clone(), auth, tls })
    }

    pub async fn run(self, mut cx: SourceContext) -> Result<(), String> {
        let listener = match TcpListener::bind(self.config.address).await {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("cannot listen on {}: {e}", self.config.address);
                cx.ready(Err(msg.clone()));
                return Err(msg);
            }
        };
        let bound = listener.local_addr().unwrap_or(self.config.address);
        tracing::info!(component = %cx.id, address = %bound, "listening");
        tracing::info!(
            component = %cx.id,
            address = %self.config.address,
            path = %self.config.path,
            tls = self.tls.is_some(),
            auth = self.auth.is_some(),
            "accepting events"
        );
        cx.ready(Ok(()));

        let server = Server::new(
            *self.config.header_timeout,
            self.config.max_connections,
            self.tls,
            Some(cx.metrics.clone()),
        );
        let shared = Arc::new(Shared {
            budget: Budget::new(self.config.max_buffered_bytes.0.try_into().unwrap_or(usize::MAX)),
            config: self.config,
            auth: self.auth,
            source: cx.source_uri.clone(),
            host: cx.host.clone(),
            metrics: cx.metrics.clone(),
        });
        register_metrics(&cx, server.open_connections(), shared.clone());
        let out = cx.out.clone();
        let handler = move |req| {
            let shared = shared.clone();
            let mut out = out.clone();
            async move { shared.handle(req, &mut out).await }
        };
        server.run(listener, cx.shutdown.clone(), handler).await;
        Ok(())
    }
}

fn register_metrics(
    cx: &SourceContext,
    connections: impl Fn() -> usize + Send + Sync + 'static,
    shared: Arc<Shared>,
) {
    cx.registry.add_collector(
        &cx.id,
        Arc::new(move |families: &mut Families| {
            families.gauge(
                "hostwatch_ingest_connections",
                "Connections open to an ingest source.",
                connections() as u64,
            );
            families.gauge(
                "hostwatch_ingest_buffered_body_bytes",
                "Memory held by the request bodies an ingest source is receiving.",
                shared.budget.used() as u64,
            );
        }),
    );
}

// === impl Shared ===

struct Shared {
    config: Config,
    auth: Option<auth::Verifier>,
    /// What the bodies being received hold together.
    budget: Budget,
    source: Str,
    host: Str,
    metrics: Arc<ComponentMetrics>,
}

type Body = Full<Bytes>;

impl Shared {
    async fn handle(&self, req: Request<Incoming>, out: &mut Fanout) -> Response<Body> {
        if let Some(auth) = &self.auth
            && !auth.allows(req.headers())
        {
            self.metrics.add_error("unauthorized", 1);
            return unauthorized();
        }
        if req.uri().path() != self.config.path {
            return answer(
                StatusCode::NOT_FOUND,
                format!("not found; events go to POST {}", self.config.path),
            );
        }
        if req.method() != Method::POST {
            let mut r = answer(StatusCode::METHOD_NOT_ALLOWED, "use POST".to_string());
            r.headers_mut().insert("allow", HeaderValue::from_static("POST"));
            return r;
        }
        let limit = self.config.max_body_bytes.0 as usize;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return self.too_large();
        }
        let (parts, body) = req.into_parts();
        let mut reservation = Reservation::new(&self.budget);
        let body_timeout = *self.config.body_timeout;
        let body = match limits::read_body(body, limit, &mut reservation, body_timeout).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return self.too_large(),
            Err(BodyError::OverBudget) => {
                self.metrics.add_error("body_memory", 1);
                let mut r = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many bodies are being received (max_buffered_bytes); nothing was accepted, \
                     send again later"
                        .to_string(),
                );
                r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                // The rest of the body is not read: the connection cannot go on.
                r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            Err(BodyError::Timeout) => {
                self.metrics.add_error("body_timeout", 1);
                let mut r = answer(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the body did not arrive within body_timeout ({})", self.config.body_timeout),
                );
                r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            Err(BodyError::Read(e)) => {
                return answer(StatusCode::BAD_REQUEST, format!("could not read the body: {e}"));
            }
        };
        self.metrics.bytes_in.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);

        let mut ids = IdGen::new();
        let now = time::now_micros();
        ids.set_time((now / 1000) as u64);
        let mut defaults = Defaults { source: &self.source, host: &self.host, time: now, ids: &mut ids };
        let decoded = decode::decode_body(&parts.headers, body, &mut defaults);
        // The body is gone once decoded: its share of the budget goes back
        // before the request waits for room in the pipeline.
        drop(reservation);
        let events = match decoded {
            Ok(events) => events,
            Err(reason) => {
                self.metrics.add_dropped(DropReason::Malformed, 1);
                tracing::debug!(component = %self.metrics.id, %reason, "refused a malformed request");
                return answer(StatusCode::BAD_REQUEST, reason);
            }
        };
        let n = events.len();
        if n == 0 {
            return accepted(StatusCode::ACCEPTED, "accepted", 0);
        }
        let (acks, receiver) = match self.config.ack {
            AckMode::Accepted => (AckSet::new(), None),
            AckMode::Delivered => {
                let (share, rx) = ack::token();
                (AckSet::one(share), Some(rx))
            }
        };
        match out.try_send_for(EventBatch::new(events, acks), *self.config.backpressure_timeout).await {
            Ok(()) => self.metrics.add_in(n),
            Err(SendError::Full) => {
                let mut r = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the pipeline is full; nothing was accepted, send again later".to_string(),
                );
                r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                return r;
            }
            Err(SendError::Closed) => {
                return answer(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping".to_string());
            }
        }
        let Some(receiver) = receiver else {
            return accepted(StatusCode::ACCEPTED, "accepted", n);
        };
        match tokio::time::timeout(*self.config.ack_timeout, receiver).await {
            Ok(BatchStatus::Delivered) => accepted(StatusCode::OK, "delivered", n),
            Ok(BatchStatus::Rejected) => answer(
                StatusCode::BAD_GATEWAY,
                "a sink refused the events for good; they were written to the dead-letter directory"
                    .to_string(),
            ),
            Ok(BatchStatus::Errored) => {
                let mut r = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the events could not be delivered (the agent is stopping); send again".to_string(),
                );
                r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                r
            }
            Err(_) => answer(
                StatusCode::GATEWAY_TIMEOUT,
                "not delivered yet; the events stay in the pipeline and will be delivered".to_string(),
            ),
        }
    }

    fn too_large(&self) -> Response<Body> {
        self.metrics.add_dropped(DropReason::Malformed, 1);
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than max_body_bytes ({})", self.config.max_body_bytes),
        )
    }
}

fn unauthorized() -> Response<Body> {
    let mut r = answer(
        StatusCode::UNAUTHORIZED,
        "send the token set in `auth` as `Authorization: Bearer <token>`".to_string(),
    );
    r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

fn answer(status: StatusCode, error: String) -> Response<Body> {
    let body = serde_json::json!({ "error": error }).to_string();
    json_response(status, body)
}

fn accepted(status: StatusCode, word: &str, n: usize) -> Response<Body> {
    json_response(status, format!("{{\"{word}\":{n}}}"))
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
