//! The HTTP server of `ingest` and of the agent's API: connections are
//! capped, each must send its first request head within `header_timeout` of
//! being accepted (the TLS handshake included), and later heads, and idle
//! keep-alive connections, are held to the same time by hyper.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::pipeline::metrics::ComponentMetrics;

/// The largest request head (request line and headers); a larger one is
/// answered 431. It also caps what a connection's read buffer holds.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub struct Server {
    header_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where refused connections are counted, if anywhere.
    metrics: Option<Arc<ComponentMetrics>>,
    /// A permit per open connection.
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Server {
    pub fn new(
        header_timeout: Duration,
        max_connections: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
        metrics: Option<Arc<ComponentMetrics>>,
    ) -> Self {
        let connections = Arc::new(Semaphore::new(max_connections));
        Server { header_timeout, tls, metrics, connections, max_connections }
    }

    /// Tells how many connections are open, for a metric.
    pub fn open_connections(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let (connections, max) = (self.connections.clone(), self.max_connections);
        move || max.saturating_sub(connections.available_permits())
    }

    /// Serves until `stop` fires, then lets the requests under way finish.
    pub async fn run<H, F>(&self, listener: TcpListener, stop: CancellationToken, handler: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        // Pings find HTTP/2 peers that went away without closing.
        builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => break,
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                if let Some(m) = &self.metrics {
                    m.add_error("connection_limit", 1);
                }
                refuse(stream, self.tls.is_none());
                continue;
            };
            let _ = stream.set_nodelay(true);
            // Told when the first request head has arrived.
            let started = Arc::new(tokio::sync::Notify::new());
            let service = {
                let started = started.clone();
                let handler = handler.clone();
                hyper::service::service_fn(move |req| {
                    started.notify_one();
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                })
            };
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = self.tls.clone();
            let metrics = self.metrics.clone();
            let deadline = tokio::time::Instant::now() + self.header_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let served = async {
                    match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        Some(tls) => {
                            let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, tls.accept(stream)).await
                            else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                    }
                };
                let first_head = tokio::time::timeout_at(deadline, started.notified());
                tokio::pin!(served, first_head);
                // Closed (dropped) if no request head came in time: a
                // client trickling its first bytes holds nothing for long.
                tokio::select! {
                    _ = &mut served => return,
                    arrived = &mut first_head => if arrived.is_err() {
                        if let Some(m) = &metrics {
                            m.add_error("header_timeout", 1);
                        }
                        return;
                    },
                }
                served.await;
            });
        }
        drop(listener);
        // Requests under way finish (each is bounded by its own timeouts);
        // idle keep-alive connections are closed.
        graceful.shutdown().await;
    }
}

/// How long a refused connection is given to send its request and read
/// the 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// At most this many refused connections linger at once; beyond, they are
/// closed at once without an answer, so that a flood costs nothing either.
const MAX_LINGERING: usize = 64;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Answers a connection beyond `max_connections` with 503 and closes it,
/// without reading its request. With `answer: false` (TLS, where an answer
/// would need a handshake first) it is just closed.
fn refuse(stream: TcpStream, answer: bool) {
    if !answer || LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        if answer {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        }
        drop(stream);
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, linger(stream)).await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn linger(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error":"too many connections (max_connections); nothing was accepted, send again later"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    // Answer once the request has begun: a client takes an answer that
    // comes before it has sent anything as a broken connection.
    let mut sink = [0u8; 4096];
    if !matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {
        return;
    }
    if stream.write_all(head.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Closing with the request unread would reset the connection, and the
    // client could lose the answer: read (and drop) until it closes.
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}
