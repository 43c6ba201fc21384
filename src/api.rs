//! The agent's HTTP API: `GET /health`, `GET /metrics`, and `POST /reload`
//! (as SIGHUP: read the config again).
//!
//! With `auth`, `POST /reload` needs the bearer token: it changes what the
//! agent does. `/health` and `/metrics` stay open, for local monitoring.
//! Connections are capped and must send their request heads in time, as on
//! the ingest endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::metrics::{ComponentMetrics, Registry, State};
use crate::util::auth::Verifier;
use crate::util::http_server::Server;
use crate::util::redact::scrub;

/// How long a client has to send a request head; idle connections are
/// closed after it too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once: monitoring needs a few.
const MAX_CONNECTIONS: usize = 32;

/// Binds the API's address; serving starts with [`serve`].
pub async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    let listener =
        TcpListener::bind(address).await.map_err(|e| format!("the API cannot listen on {address}: {e}"))?;
    // The port bound, which differs from the configured one for port 0.
    tracing::info!(component = "api", address = %listener.local_addr().unwrap_or(address), "listening");
    Ok(listener)
}

/// Serves until `stop` fires. `POST /reload` sends on `reload`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    started: Instant,
    stop: CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
    auth: Option<Verifier>,
) {
    let server = Server::new(HEADER_TIMEOUT, MAX_CONNECTIONS, None, None);
    let auth = Arc::new(auth);
    let handler = move |req: Request<hyper::body::Incoming>| {
        let answer = handle(&req, &registry, started, &reload, auth.as_ref().as_ref());
        async move { answer }
    };
    server.run(listener, stop, handler).await;
}

fn handle(
    req: &Request<hyper::body::Incoming>,
    registry: &Registry,
    started: Instant,
    reload: &tokio::sync::mpsc::Sender<()>,
    auth: Option<&Verifier>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/reload" {
        if req.method() != Method::POST {
            return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n".to_string());
        }
        if let Some(auth) = auth
            && !auth.allows(req.headers())
        {
            let mut r = respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "send the token set in `api.auth` as `Authorization: Bearer <token>`\n".to_string(),
            );
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return r;
        }
        // One reload waiting is enough: a second request joins it.
        let _ = reload.try_send(());
        return respond(
            StatusCode::ACCEPTED,
            "text/plain",
            "reloading; the log says whether the new config was taken\n".to_string(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_string());
    }
    match req.uri().path() {
        "/health" => health(registry, started),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            scrub(&registry.render(started.elapsed())).into_owned(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found; try /health or /metrics\n".to_string()),
    }
}

/// 200 while every component runs; a sink that retries, or whose
/// destination refuses the agent's credentials, or a config on disk that a
/// reload could not take, makes the status `degraded`, still with 200: a
/// health check (systemd, Kubernetes) asks whether the process works, and
/// restarting it would not fix a token.
/// 503 while the sources start, and once a component has failed.
fn health(registry: &Registry, started: Instant) -> Response<Full<Bytes>> {
    let components = registry.components();
    let all_started = registry.started.load(std::sync::atomic::Ordering::Relaxed);
    let failed = components.iter().any(|c| c.state() == State::Failed);
    let degraded = components.iter().any(|c| matches!(c.state(), State::Retrying | State::AuthFailed));
    // The config on disk is not the one that runs: a restart would not start.
    let reload_error = registry.reload_error();
    let status = if !all_started {
        "starting"
    } else if failed {
        "failed"
    } else if degraded || reload_error.is_some() {
        "degraded"
    } else {
        "ok"
    };
    let state = |c: &ComponentMetrics| {
        serde_json::json!({
            "state": c.state().as_str(),
            "since": rfc3339_millis(c.state_since()),
            "last_error": c.last_error().map(|e| scrub(&e).into_owned()),
        })
    };
    let list: Vec<serde_json::Value> = components
        .iter()
        .map(|c| {
            let mut v = state(c);
            v["id"] = c.id.clone().into();
            v["kind"] = c.kind.into();
            v["type"] = c.ty.clone().into();
            v
        })
        .collect();
    let sinks: serde_json::Map<String, serde_json::Value> =
        components.iter().filter(|c| c.kind == "sink").map(|c| (c.id.clone(), state(c))).collect();
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": started.elapsed().as_secs(),
        "components": list,
        "reload_error": reload_error.map(|e| scrub(&e).into_owned()),
        "sinks": sinks,
    });
    let code = if failed || !all_started { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    respond(code, "application/json", body.to_string())
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC.
fn rfc3339_millis(ms: u64) -> String {
    let mut out = Vec::with_capacity(32);
    crate::event::time::format_rfc3339(ms as i64 * 1_000, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
