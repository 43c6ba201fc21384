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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpListener;

use super::SourceContext;
use crate::config::{BuildError, ByteSize, Duration as ConfigDuration};
use crate::event::decode::{self, Defaults};
use crate::event::id::IdGen;
use crate::event::{AckSet, BatchStatus, Event, EventBatch, Map, Str, Value, ack, time};
use crate::pipeline::fanout::{Fanout, SendError};
use crate::pipeline::metrics::{ComponentMetrics, DropReason};

/// `type: ingest`
#[derive(Clone, Debug, Deserialize)]
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
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
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

pub struct Ingest {
    config: Config,
}

impl Ingest {
    pub fn new(config: Config) -> Result<Self, BuildError> {
        if !config.path.starts_with('/') {
            return Err(BuildError::new(format!("`path` must start with `/`, found {:?}", config.path)));
        }
        if config.max_body_bytes.0 == 0 {
            return Err(BuildError::new("`max_body_bytes` must be more than 0"));
        }
        Ok(Ingest { config })
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
        tracing::info!(component = %cx.id, address = %self.config.address, path = %self.config.path, "accepting events");
        cx.ready(Ok(()));

        let shared = Arc::new(Shared {
            config: self.config,
            source: cx.source_uri.clone(),
            host: cx.host.clone(),
            metrics: cx.metrics.clone(),
        });
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(component = %cx.id, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = cx.shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let out = cx.out.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let mut out = out.clone();
                async move { Ok::<_, Infallible>(shared.handle(req, &mut out).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        // Requests under way finish (each is bounded by its own timeouts);
        // idle keep-alive connections are closed.
        graceful.shutdown().await;
        Ok(())
    }
}

// === impl Shared ===

struct Shared {
    config: Config,
    source: Str,
    host: Str,
    metrics: Arc<ComponentMetrics>,
}

type Body = Full<Bytes>;

impl Shared {
    async fn handle(&self, req: Request<Incoming>, out: &mut Fanout) -> Response<Body> {
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
        let body = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return self.too_large(),
            Err(e) => return answer(StatusCode::BAD_REQUEST, format!("could not read the body: {e}")),
        };
        self.metrics.bytes_in.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);

        let mut ids = IdGen::new();
        let now = time::now_micros();
        ids.set_time((now / 1000) as u64);
        let mut defaults = Defaults { source: &self.source, host: &self.host, time: now, ids: &mut ids };
        let events = match decode_body(&parts.headers, body, &mut defaults) {
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

// === decoding ===

/// Decodes a whole request body into events, or the reason it cannot be.
fn decode_body(headers: &HeaderMap, body: Bytes, d: &mut Defaults<'_>) -> Result<Vec<Event>, String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    if headers.contains_key("ce-specversion") || headers.contains_key("ce-type") {
        return binary_mode(headers, &content_type, body, d).map(|e| vec![e]);
    }
    match content_type.as_str() {
        "application/cloudevents+json" => {
            let v = parse_json(&body)?;
            if matches!(v, Value::Array(_)) {
                return Err("application/cloudevents+json takes one event; send an array as \
                            application/cloudevents-batch+json"
                    .to_string());
            }
            Ok(vec![decode::from_json(v, d)?])
        }
        "application/cloudevents-batch+json" => match parse_json(&body)? {
            Value::Array(items) => decode_all(items, d),
            other => Err(format!(
                "application/cloudevents-batch+json takes a JSON array of events, not {}",
                other.kind()
            )),
        },
        "" | "application/json" => match parse_json(&body)? {
            Value::Array(items) => decode_all(items, d),
            one => Ok(vec![decode::from_json(one, d).map_err(|e| format!("event 0: {e}"))?]),
        },
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            let mut events = Vec::new();
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v = parse_json(line).map_err(|e| format!("line {}: {e}", i + 1))?;
                events.push(decode::from_json(v, d).map_err(|e| format!("line {}: {e}", i + 1))?);
            }
            Ok(events)
        }
        other => Err(format!(
            "unsupported Content-Type `{other}`: send application/cloudevents+json, \
             application/cloudevents-batch+json, application/json or application/x-ndjson"
        )),
    }
}

fn decode_all(items: Vec<Value>, d: &mut Defaults<'_>) -> Result<Vec<Event>, String> {
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        events.push(decode::from_json(item, d).map_err(|e| format!("event {i}: {e}"))?);
    }
    Ok(events)
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// The CloudEvents HTTP binding, binary mode: attributes in `ce-*` headers,
/// the body is the data, `Content-Type` its `datacontenttype`.
fn binary_mode(
    headers: &HeaderMap,
    content_type: &str,
    body: Bytes,
    d: &mut Defaults<'_>,
) -> Result<Event, String> {
    let mut map = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else { continue };
        let value = value.to_str().map_err(|_| format!("header `{name}` is not valid text"))?;
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("header `{name}` is not valid UTF-8 once decoded"))?;
        map.insert(Str::from(attr), Value::from(value.into_owned()));
    }
    if let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        map.insert(Str::from_static("datacontenttype"), Value::from(ct.to_string()));
    }
    if !body.is_empty() {
        let json = content_type == "application/json" || content_type.ends_with("+json");
        if json {
            map.insert(Str::from_static("data"), parse_json(&body)?);
        } else if content_type.starts_with("text/") {
            let text =
                String::from_utf8(body.to_vec()).map_err(|_| "the text body is not UTF-8".to_string())?;
            map.insert(Str::from_static("data"), Value::from(text));
        } else {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
            map.insert(Str::from_static("data_base64"), Value::from(encoded));
        }
    }
    decode::from_json(Value::Object(map), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(content_type: &str, body: &str) -> Result<Vec<Event>, String> {
        let mut headers = HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        }
        let mut ids = IdGen::new();
        let s = Str::from_static("hostwatch://h/apps");
        let h = Str::from_static("h");
        let mut d = Defaults { source: &s, host: &h, time: 1, ids: &mut ids };
        decode_body(&headers, Bytes::from(body.to_string()), &mut d)
    }

    #[test]
    fn content_types() {
        assert_eq!(decode("application/cloudevents+json", r#"{"type":"A"}"#).unwrap().len(), 1);
        assert_eq!(
            decode("application/cloudevents-batch+json", r#"[{"type":"A"},{"type":"B"}]"#).unwrap().len(),
            2
        );
        assert_eq!(decode("application/json; charset=utf-8", r#"{"type":"A","data":{}}"#).unwrap().len(), 1);
        assert_eq!(decode("", r#"[{"type":"A"}]"#).unwrap().len(), 1);
        assert_eq!(
            decode("application/x-ndjson", "{\"type\":\"A\"}\r\n\n{\"type\":\"B\"}\n").unwrap().len(),
            2
        );
        assert!(decode("text/csv", "a,b").unwrap_err().contains("unsupported Content-Type"));
    }

    #[test]
    fn one_bad_event_refuses_the_request_and_says_which() {
        let err = decode("application/json", r#"[{"type":"A"},{"data":1}]"#).unwrap_err();
        assert_eq!(err, "event 1: missing `type`");
        let err = decode("application/x-ndjson", "{\"type\":\"A\"}\n{oops\n").unwrap_err();
        assert!(err.starts_with("line 2: invalid JSON"), "{err}");
        let err = decode("application/cloudevents-batch+json", r#"{"type":"A"}"#).unwrap_err();
        assert!(err.contains("JSON array"));
    }

    #[test]
    fn binary_mode_reads_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-type", HeaderValue::from_static("OrderCreated"));
        headers.insert("ce-id", HeaderValue::from_static("o-1"));
        headers.insert("ce-traceparent", HeaderValue::from_static("00%2Dx"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut ids = IdGen::new();
        let s = Str::from_static("src");
        let h = Str::from_static("h");
        let mut d = Defaults { source: &s, host: &h, time: 1, ids: &mut ids };
        let e = decode_body(&headers, Bytes::from_static(b"{\"n\":1}"), &mut d).unwrap().remove(0);
        assert_eq!(e.ty, "OrderCreated");
        assert_eq!(e.attrs.get("traceparent"), Some(&Value::from("00-x")));
        assert_eq!(e.data.as_object().unwrap().get("n"), Some(&Value::Int(1)));

        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let e = decode_body(&headers, Bytes::from_static(b"\x00\x01"), &mut d).unwrap().remove(0);
        assert_eq!(e.attrs.get("data_base64"), Some(&Value::from("AAE=")));
    }
}
