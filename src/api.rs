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

use crate::pipeline::metrics::{Registry, State};
use crate::util::redact::scrub;

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
            scrub(&registry.render(started.elapsed())).into_owned(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found; try /health or /metrics\n".to_string()),
    }
}

/// 200 while every component runs (a sink that retries, or a config on disk
/// that a reload could not take, is `degraded`);
/// 503 while the sources start, and once a component has failed.
fn health(registry: &Registry, started: Instant) -> Response<Full<Bytes>> {
    let components = registry.components();
    let all_started = registry.started.load(std::sync::atomic::Ordering::Relaxed);
    let failed = components.iter().any(|c| c.state() == State::Failed);
    let retrying = components.iter().any(|c| c.state() == State::Retrying);
    // The config on disk is not the one that runs: a restart would not start.
    let reload_error = registry.reload_error();
    let status = if !all_started {
        "starting"
    } else if failed {
        "failed"
    } else if retrying || reload_error.is_some() {
        "degraded"
    } else {
        "ok"
    };
    let list: Vec<serde_json::Value> = components
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "kind": c.kind,
                "type": c.ty,
                "state": c.state().as_str(),
                "last_error": c.last_error().map(|e| scrub(&e).into_owned()),
            })
        })
        .collect();
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": started.elapsed().as_secs(),
        "components": list,
        "reload_error": reload_error,
    });
    let code = if failed || !all_started { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    respond(code, "application/json", body.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
