//! What the integration tests share: the real agent binary started with a
//! real config, an HTTP receiver that records what arrives and misbehaves on
//! command, and a publisher for the ingest endpoint.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::task::JoinSet;

pub const BIN: &str = env!("CARGO_BIN_EXE_hostwatch");

/// A port nobody listens on right now, for an address where nothing should
/// answer, or for a server of another program that cannot be told to take
/// port 0. Anything the test or the agent can bind itself binds port 0
/// instead: a port chosen here can be taken by a test running beside.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

// === the agent ===

pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub stdout: PathBuf,
    /// The API's port, once read from the log.
    api: Option<u16>,
}

impl Agent {
    /// Starts `hostwatch run` with a config; `{data_dir}` in it is replaced
    /// by a fresh directory.
    pub fn start(config: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let text = config.replace("{data_dir}", data.to_str().expect("utf-8 path"));
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text).expect("write config");
        let log = dir.path().join("agent.log");
        let stdout = dir.path().join("stdout.log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("HOSTWATCH_LOG", "info")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start hostwatch");
        Agent { child, dir, log, stdout, api: None }
    }

    /// Starts the agent as the unprivileged user `nobody` (the test must
    /// run as root, and the config's directories be open to everyone).
    pub fn start_as_nobody(config: &str) -> Agent {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        std::process::Command::new("chmod").arg("755").arg(dir.path()).status().expect("chmod");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, config).expect("write config");
        std::process::Command::new("chmod").arg("644").arg(&path).status().expect("chmod");
        let log = dir.path().join("agent.log");
        let stdout = dir.path().join("stdout.log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("HOSTWATCH_LOG", "info")
            .uid(65534)
            .gid(65534)
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start hostwatch");
        Agent { child, dir, log, stdout, api: None }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The events a file sink wrote to `name` in the data directory so far.
    pub fn file_events(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.data_dir().join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for the first log line that contains every one of `parts`,
    /// and returns it.
    pub fn wait_log(&mut self, parts: &[&str], within: Duration) -> String {
        self.wait_logs(parts, 1, within).pop().expect("one line")
    }

    /// Waits until `n` log lines contain every one of `parts`, and returns
    /// them all (there may be more than `n`).
    pub fn wait_logs(&mut self, parts: &[&str], n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let logs = self.logs();
            let found: Vec<String> =
                logs.lines().filter(|l| parts.iter().all(|p| l.contains(p))).map(str::to_string).collect();
            if found.len() >= n {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("hostwatch exited with {status} before logging {n} × {parts:?}:\n{logs}");
            }
            assert!(
                Instant::now() < deadline,
                "hostwatch did not log {n} × {parts:?} within {within:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address `component` listens on (`api` for the API), from the
    /// last `listening` line it logged: configs give port 0, the agent
    /// picks a free one, so that tests running side by side cannot take
    /// each other's ports.
    pub fn listening(&mut self, component: &str) -> SocketAddr {
        listening_in(&self.log, component, &mut self.child)
    }

    /// The API's port, read from the log the first time.
    pub fn api(&mut self) -> u16 {
        if let Some(port) = self.api {
            return port;
        }
        let port = self.listening("api").port();
        self.api = Some(port);
        port
    }

    /// Waits until the agent is ready (see [`wait_ready`](Self::wait_ready))
    /// and returns its API port.
    pub fn ready(&mut self) -> u16 {
        let api = self.api();
        self.wait_ready(api);
        api
    }

    /// The URL of the `ingest` source `component`, once it listens.
    pub fn ingest_url(&mut self, component: &str) -> String {
        format!("http://{}/events", self.listening(component))
    }

    /// Waits until `/health` on the API port answers 200: every source has
    /// started (a file source has found the files present at startup).
    pub fn wait_ready(&mut self, api: u16) {
        use std::io::{Read as _, Write as _};
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("hostwatch exited with {status} before it was ready:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "hostwatch was not ready:\n{}", self.logs());
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", api)) {
                let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent still runs.
    pub fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -s {signal} failed");
    }

    /// Stops the agent with SIGTERM and checks that it exits 0: what it
    /// sends has arrived then.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "hostwatch exited with {status}:\n{}", self.logs());
    }

    /// Waits for the agent to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hostwatch did not exit within {within:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address `component` listens on, from the last `listening` line in
/// the log file `log` of the agent `child` (see [`Agent::listening`]).
pub fn listening_in(log: &Path, component: &str, child: &mut Child) -> SocketAddr {
    // Text logs write an id bare and a name quoted; JSON logs quote both.
    let text = format!("component={component} ");
    let quoted = format!("component=\"{component}\" ");
    let json = format!("\"component\":\"{component}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = std::fs::read_to_string(log).unwrap_or_default();
        let line = logs.lines().rfind(|l| {
            l.contains("listening") && [&text, &quoted, &json].iter().any(|c| l.contains(c.as_str()))
        });
        if let Some(address) = line.and_then(address_in) {
            return address;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hostwatch exited with {status} before `{component}` listened:\n{logs}");
        }
        assert!(Instant::now() < deadline, "`{component}` did not listen:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `address=` of a log line, in text or JSON format.
fn address_in(line: &str) -> Option<SocketAddr> {
    let at = line
        .find("address=")
        .map(|i| i + "address=".len())
        .or_else(|| line.find("\"address\":\"").map(|i| i + "\"address\":\"".len()))?;
    let rest = &line[at..];
    let end = rest.find([' ', '"']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A config of a file source `logs` over `include` into an http sink `out`
/// that posts to `url`, with the API on a port the agent picks (see
/// [`Agent::ready`]) and `{data_dir}` as the data directory.
pub fn file_to_http(include: &str, url: &str, extra: Extra) -> String {
    format!(
        "data_dir: {{data_dir}}\napi:\n  address: 127.0.0.1:0\n{top}sources:\n  logs:\n    type: file\n    \
         include: [\"{include}\"]\n{source}sinks:\n  out:\n    type: http\n    inputs: [logs]\n    url: {url}\n{sink}",
        top = extra.top,
        source = extra.source,
        sink = extra.sink,
    )
}

/// A config of an `ingest` source `apps` on a port the agent picks (see
/// [`Agent::ingest_url`]) into an http sink `out` that posts to `url`, with
/// the API on a port the agent picks too.
pub fn ingest_to_http(url: &str, extra: Extra) -> String {
    format!(
        "data_dir: {{data_dir}}\napi:\n  address: 127.0.0.1:0\n{top}sources:\n  apps:\n    type: ingest\n    \
         address: 127.0.0.1:0\n{source}sinks:\n  out:\n    type: http\n    inputs: [apps]\n    url: {url}\n{sink}",
        top = extra.top,
        source = extra.source,
        sink = extra.sink,
    )
}

/// Lines added to a config of [`file_to_http`] or [`ingest_to_http`]: at
/// the top level (not indented), to the source's and to the sink's settings
/// (indented four spaces). Each line ends with a newline.
#[derive(Clone, Copy, Default)]
pub struct Extra<'a> {
    pub top: &'a str,
    pub source: &'a str,
    pub sink: &'a str,
}

/// The config file an agent was started with.
pub fn config_path(agent: &Agent) -> PathBuf {
    agent.dir.path().join("agent.yaml")
}

/// The agent's `/metrics` page.
pub async fn metrics(api: u16) -> String {
    get(&format!("http://127.0.0.1:{api}/metrics")).await.text().await.expect("metrics text")
}

/// Polls `check` every 20 ms until it holds, or panics after `within`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `hostwatch validate` on a config text; returns the exit code and stderr.
pub fn validate(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, config).expect("write config");
    validate_file(&path)
}

pub fn validate_file(path: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run validate");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

// === the receiver ===

/// What the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Accept,
    /// 503 to every `n`-th request.
    FailEvery(u64),
    /// 400 to every request.
    Refuse,
    /// 401 to every request: the agent's credentials are wrong.
    Unauthorized,
}

struct Shared {
    events: Mutex<Vec<Value>>,
    /// Keep every event (small tests), or only count sequence numbers.
    keep: AtomicBool,
    /// How often each `seq=N` arrived.
    seqs: Mutex<Vec<u8>>,
    /// The highest `seq=N` so far, and how many arrived for the first time
    /// after a higher one (out of order).
    highest: AtomicU64,
    out_of_order: AtomicU64,
    requests: AtomicU64,
    requests_events: AtomicU64,
    failed: AtomicU64,
    mode: Mutex<Mode>,
    delay: Mutex<Duration>,
    content_types: Mutex<HashMap<String, u64>>,
    /// The headers of the last request.
    headers: Mutex<hyper::HeaderMap>,
    /// Going down: answer 503 and record nothing.
    refusing: AtomicBool,
}

/// An HTTP server that records every event it accepts.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// The server's task, and what stops it.
    server: Option<(tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken)>,
    up: Arc<AtomicBool>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// A certificate authority and a server certificate it signed for
/// `localhost` and 127.0.0.1, made fresh for a test.
pub struct TestPki {
    pub ca_pem: String,
    server: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "hostwatch test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        hostwatch::util::tls::install_crypto_provider();
        let server = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        TestPki { ca_pem: ca.pem(), server: Arc::new(server) }
    }
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        Self::start_with(mode, None).await
    }

    /// A receiver that speaks HTTPS with a certificate of `pki`.
    pub async fn start_tls(mode: Mode, pki: &TestPki) -> Receiver {
        Self::start_with(mode, Some(pki.server.clone())).await
    }

    async fn start_with(mode: Mode, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Receiver {
        // Port 0 and the listener kept: no other test can take the port
        // between choosing and binding it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            events: Mutex::new(Vec::new()),
            keep: AtomicBool::new(true),
            seqs: Mutex::new(Vec::new()),
            highest: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            requests_events: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            mode: Mutex::new(mode),
            delay: Mutex::new(Duration::ZERO),
            content_types: Mutex::new(HashMap::new()),
            headers: Mutex::new(hyper::HeaderMap::new()),
            refusing: AtomicBool::new(false),
        });
        let mut r = Receiver { addr, shared, server: None, up: Arc::new(AtomicBool::new(false)), tls };
        r.serve(listener);
        r
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/ingest", self.addr.port()),
            None => format!("http://{}/ingest", self.addr),
        }
    }

    /// The headers of the last request.
    pub fn last_headers(&self) -> hyper::HeaderMap {
        self.shared.headers.lock().unwrap().clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Answers each request only after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Stops listening and closes every connection: the agent sees
    /// "connection refused" until [`up`](Self::up).
    ///
    /// Requests under way are answered first, and their connections closed
    /// after: cutting a connection between recording a batch and answering
    /// for it would make the agent send it again (at least once), and the
    /// tests count exactly. Requests that arrive meanwhile get 503.
    pub async fn down(&mut self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        if let Some((server, stop)) = self.server.take() {
            stop.cancel();
            let _ = server.await;
        }
        self.up.store(false, Ordering::SeqCst);
    }

    pub async fn up(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = stopped.cancelled() => break,
                };
                let shared = shared.clone();
                let tls = tls.clone();
                let stopped = stopped.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let accepted = tokio::select! {
                                a = acceptor.accept(stream) => a,
                                _ = stopped.cancelled() => return,
                            };
                            if let Ok(stream) = accepted {
                                serve_connection(stream, shared, stopped).await;
                            }
                        }
                        None => serve_connection(stream, shared, stopped).await,
                    }
                });
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        self.server = Some((server, stop));
        self.up.store(true, Ordering::SeqCst);
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    pub fn events(&self) -> Vec<Value> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Counts sequence numbers only, without keeping events (for millions).
    pub fn count_only(&self) {
        self.shared.keep.store(false, Ordering::SeqCst);
    }

    /// Events received (with a `seq=N` or not, kept or not).
    pub fn count(&self) -> usize {
        self.shared.requests_events.load(Ordering::SeqCst) as usize
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.shared.seqs.lock().unwrap().iter().filter(|c| **c > 0).count() as u64
    }

    /// How often each sequence number arrived.
    pub fn seq_counts(&self) -> Vec<u8> {
        self.shared.seqs.lock().unwrap().clone()
    }

    /// How many sequence numbers arrived for the first time after a higher one.
    pub fn out_of_order(&self) -> u64 {
        self.shared.out_of_order.load(Ordering::SeqCst)
    }

    /// Which of `0..n` are missing, and how many arrived more than once (in all).
    pub fn seq_report(&self, n: u64) -> (Vec<u64>, u64, u64) {
        let seqs = self.shared.seqs.lock().unwrap();
        let count = |s: u64| seqs.get(s as usize).copied().unwrap_or(0) as u64;
        let missing: Vec<u64> = (0..n).filter(|s| count(*s) == 0).collect();
        let repeated: u64 = seqs.iter().map(|c| (*c as u64).saturating_sub(1)).sum();
        let beyond = seqs.iter().skip(n as usize).filter(|c| **c > 0).count() as u64;
        (missing, repeated, beyond)
    }

    /// Every one of `0..n` arrived exactly once, and nothing else.
    pub fn assert_exactly_once(&self, n: u64) {
        let (missing, repeated, beyond) = self.seq_report(n);
        assert!(
            missing.is_empty(),
            "{} of {n} missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert_eq!(repeated, 0, "{repeated} repeated");
        assert_eq!(beyond, 0, "sequence numbers beyond {n}");
    }

    /// Waits until `n` distinct sequence numbers arrived.
    pub async fn wait_for_unique(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.unique() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} distinct lines arrived within {within:?}",
                self.unique()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    pub fn content_types(&self) -> HashMap<String, u64> {
        self.shared.content_types.lock().unwrap().clone()
    }

    /// Waits until at least `n` events arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events arrived within {within:?}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Serves one connection until the peer closes it or `stop` fires; then the
/// request under way is answered before the connection closes.
async fn serve_connection<S>(stream: S, shared: Arc<Shared>, stop: tokio_util::sync::CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, &shared).await) }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

async fn handle(req: Request<hyper::body::Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    *shared.headers.lock().unwrap() = req.headers().clone();
    let delay = *shared.delay.lock().unwrap();
    let mode = *shared.mode.lock().unwrap();
    let content_type =
        req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let encoding =
        req.headers().get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match mode {
        Mode::FailEvery(k) if n.is_multiple_of(k) => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            return reply(StatusCode::SERVICE_UNAVAILABLE);
        }
        Mode::Refuse => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            return reply(StatusCode::BAD_REQUEST);
        }
        Mode::Unauthorized => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            return reply(StatusCode::UNAUTHORIZED);
        }
        _ => {}
    }
    let plain = match encoding.as_str() {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).expect("gzip body");
            out
        }
        "zstd" => zstd::decode_all(&body[..]).expect("zstd body"),
        _ => body.to_vec(),
    };
    let keep = shared.keep.load(Ordering::SeqCst);
    let mut events: Vec<Value> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    let mut n = 0u64;
    if content_type.contains("ndjson") {
        for line in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            n += 1;
            seqs.extend(find_seq(line));
            if keep {
                events.push(serde_json::from_slice(line).expect("an NDJSON line is JSON"));
            }
        }
    } else {
        let all = match serde_json::from_slice(&plain).expect("the body is JSON") {
            Value::Array(a) => a,
            other => vec![other],
        };
        for e in &all {
            n += 1;
            seqs.extend(find_seq(e.to_string().as_bytes()));
        }
        if keep {
            events = all;
        }
    }
    let mut recorded = shared.events.lock().unwrap();
    if shared.refusing.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE);
    }
    recorded.extend(events);
    {
        let mut counts = shared.seqs.lock().unwrap();
        for s in seqs {
            let s = s as usize;
            if s >= counts.len() {
                counts.resize(s + 1 + s / 2, 0);
            }
            if counts[s] == 0 && (s as u64) < shared.highest.load(Ordering::SeqCst) {
                shared.out_of_order.fetch_add(1, Ordering::SeqCst);
            }
            shared.highest.fetch_max(s as u64, Ordering::SeqCst);
            counts[s] = counts[s].saturating_add(1);
        }
    }
    shared.requests_events.fetch_add(n, Ordering::SeqCst);
    drop(recorded);
    *shared.content_types.lock().unwrap().entry(content_type).or_default() += 1;
    reply(StatusCode::OK)
}

/// The number after the first `seq=` in an event's text.
fn find_seq(text: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(text, b"seq=")? + 4;
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits]).ok()?.parse().ok()
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

// === publishing ===

/// An HTTP client (rustls needs its crypto provider installed first).
pub fn client() -> reqwest::Client {
    hostwatch::util::tls::install_crypto_provider();
    reqwest::Client::new()
}

pub async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("GET")
}

/// Publishes events `first..first+count` to an ingest endpoint in requests of
/// `per_request`, each event `{"type": "test.event", "data": {"seq": N}}`.
/// A request answered 503 (or not answered) is sent again, whole: the
/// endpoint accepts a request entirely or not at all.
pub async fn publish(url: &str, first: u64, count: u64, per_request: u64) -> u64 {
    let retried = AtomicU64::new(0);
    publish_counting(url, first, count, per_request, &retried).await;
    retried.into_inner()
}

/// [`publish`], counting requests sent again in `retried` as they happen.
pub async fn publish_counting(url: &str, first: u64, count: u64, per_request: u64, retried: &AtomicU64) {
    let client = client();
    let mut seq = first;
    let mut i = 0u64;
    while seq < first + count {
        let n = per_request.min(first + count - seq);
        // Alternate the body formats the endpoint takes.
        let (content_type, body) = match i % 3 {
            0 => (
                "application/json",
                serde_json::to_string(&(seq..seq + n).map(test_event).collect::<Vec<_>>()).unwrap(),
            ),
            1 => (
                "application/x-ndjson",
                (seq..seq + n).map(|s| test_event(s).to_string() + "\n").collect::<String>(),
            ),
            _ => (
                "application/cloudevents-batch+json",
                serde_json::to_string(
                    &(seq..seq + n)
                        .map(|s| {
                            let mut e = test_event(s);
                            e["specversion"] = "1.0".into();
                            e
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
            ),
        };
        loop {
            let r = client.post(url).header("content-type", content_type).body(body.clone()).send().await;
            match r {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {}
                Ok(r) => panic!("ingest answered {}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(_) => {}
            }
            retried.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seq += n;
        i += 1;
    }
}

pub fn test_event(seq: u64) -> Value {
    serde_json::json!({"type": "test.event", "data": {"seq": seq, "message": format!("event seq={seq}")}})
}

/// Checks that every sequence number in `0..n` arrived exactly once, and
/// returns the events by sequence number.
pub fn assert_exactly_once(events: &[Value], n: u64) -> Vec<&Value> {
    let mut by_seq: Vec<Option<&Value>> = vec![None; n as usize];
    let mut duplicates = Vec::new();
    for e in events {
        let seq = e["data"]["seq"].as_u64().unwrap_or_else(|| panic!("event without data.seq: {e}"));
        assert!(seq < n, "unexpected seq {seq}");
        match by_seq[seq as usize] {
            Some(_) => duplicates.push(seq),
            None => by_seq[seq as usize] = Some(e),
        }
    }
    let missing: Vec<usize> =
        by_seq.iter().enumerate().filter(|(_, e)| e.is_none()).map(|(i, _)| i).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        duplicates.is_empty(),
        "{} duplicates, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(10)]
    );
    by_seq.into_iter().flatten().collect()
}

/// Checks the CloudEvents attributes hostwatch fills in.
pub fn assert_cloudevent(e: &Value, source: &str, host: &str) {
    assert_eq!(e["specversion"], "1.0", "{e}");
    let id = e["id"].as_str().expect("id");
    let uuid = uuid::Uuid::parse_str(id).expect("id is a UUID");
    assert_eq!(uuid.get_version_num(), 7, "id is a UUIDv7: {id}");
    assert_eq!(e["source"], source, "{e}");
    assert_eq!(e["host"], host, "{e}");
    let time = e["time"].as_str().expect("time");
    assert_eq!(time.len(), 27, "RFC 3339 UTC with microseconds: {time}");
    assert!(time.ends_with('Z'));
    chrono::DateTime::parse_from_rfc3339(time).expect("time is RFC 3339");
    assert_eq!(e["datacontenttype"], "application/json");
    assert!(e["type"].is_string());
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

// === writing logs ===

/// How a log file is rotated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rotate {
    None,
    /// `app.log` becomes `app.log.1` (older ones shift up) and a new `app.log` starts.
    Rename,
    /// `app.log` is copied to `app.log.1` and emptied in place.
    CopyTruncate,
}

/// Writes lines `<n> INFO request served seq=N` to a file, at a rate (0:
/// as fast as it can), rotating every `every` lines, keeping `keep` rotated
/// files (older ones are deleted, as logrotate does).
pub struct LogWriter {
    pub path: PathBuf,
    pub rotate: Rotate,
    pub every: u64,
    pub keep: u32,
    pub rate: f64,
}

impl LogWriter {
    pub fn new(path: &Path) -> LogWriter {
        LogWriter { path: path.to_path_buf(), rotate: Rotate::None, every: 0, keep: 100, rate: 0.0 }
    }

    pub fn line(seq: u64) -> String {
        format!("{} INFO request served path=/api/v1/items status=200 seq={seq}\n", 1_795_751_400 + seq)
    }

    /// Writes lines `first..first+count`.
    pub fn write(&self, first: u64, count: u64) {
        use std::io::Write as _;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let open = |p: &Path| {
            std::io::BufWriter::with_capacity(
                1 << 16,
                std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap(),
            )
        };
        let mut w = open(&self.path);
        let started = Instant::now();
        let mut flushed = Instant::now();
        for i in 0..count {
            w.write_all(Self::line(first + i).as_bytes()).unwrap();
            if self.rate > 0.0 {
                let due = started + Duration::from_secs_f64((i + 1) as f64 / self.rate);
                let now = Instant::now();
                if due > now {
                    w.flush().unwrap();
                    std::thread::sleep(due - now);
                    flushed = Instant::now();
                }
            }
            if flushed.elapsed() >= Duration::from_millis(20) {
                w.flush().unwrap();
                flushed = Instant::now();
            }
            if self.rotate != Rotate::None && (i + 1) % self.every == 0 && i + 1 < count {
                w.flush().unwrap();
                let f = w.into_inner().unwrap();
                self.shift();
                match self.rotate {
                    Rotate::Rename => {
                        drop(f);
                        std::fs::rename(&self.path, numbered(&self.path, 1)).unwrap();
                    }
                    Rotate::CopyTruncate => {
                        std::fs::copy(&self.path, numbered(&self.path, 1)).unwrap();
                        f.set_len(0).unwrap();
                    }
                    Rotate::None => {}
                }
                w = open(&self.path);
            }
        }
        w.flush().unwrap();
    }

    /// Moves `app.log.N` to `app.log.N+1`, the oldest away.
    fn shift(&self) {
        let _ = std::fs::remove_file(numbered(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1)).unwrap();
            }
        }
    }
}

pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Reads a metric value from Prometheus text.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
