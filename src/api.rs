//! The agent's HTTP API: `GET /health`, `GET /metrics`, and `POST /reload`
//! (as SIGHUP: read the config again).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::metrics::{ComponentMetrics, Registry, State};

/// Binds the API's address; serving starts with [`serve`].
pub async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|e| format!("the API cannot listen on {address}: {e}"))
}

/// Serves until `stop` fires. `POST /reload` sends on `reload`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    started: Instant,
    stop: CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let registry = registry.clone();
        let reload = reload.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let registry = registry.clone();
            let reload = reload.clone();
            async move { Ok::<_, Infallible>(handle(&req, &registry, started, &reload)) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn handle(
    req: &Request<hyper::body::Incoming>,
    registry: &Registry,
    started: Instant,
    reload: &tokio::sync::mpsc::Sender<()>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/reload" {
        if req.method() != Method::POST {
            return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n".to_string());
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
            registry.render(started.elapsed()),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found; try /health or /metrics\n".to_string()),
    }
}

/// 200 while every component runs; a sink that retries, or whose
/// destination refuses the agent's credentials, makes the status
/// `degraded`, still with 200: a health check (systemd, Kubernetes) asks
/// whether the process works, and restarting it would not fix a token.
/// 503 while the sources start, and once a component has failed.
fn health(registry: &Registry, started: Instant) -> Response<Full<Bytes>> {
    let components = registry.components();
    let all_started = registry.started.load(std::sync::atomic::Ordering::Relaxed);
    let failed = components.iter().any(|c| c.state() == State::Failed);
    let degraded = components.iter().any(|c| matches!(c.state(), State::Retrying | State::AuthFailed));
    let status = if !all_started {
        "starting"
    } else if failed {
        "failed"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    let state = |c: &ComponentMetrics| {
        serde_json::json!({
            "state": c.state().as_str(),
            "since": rfc3339_millis(c.state_since()),
            "last_error": c.last_error(),
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
