//! Secrets never appear in any output. One config holds a secret in every
//! place one can be written (URL userinfo, `api_key`, `token` and `sig`
//! queries, a header, a bearer token, a basic password from an environment
//! variable, broker URLs, a SASL password, `${file:}` and `${credential:}`),
//! and runs against a port nobody listens on, servers that refuse (400 →
//! dead letters, 401 echoing the request, 503 → retries), the real brokers
//! with wrong credentials, and as invalid configs. Every channel is read:
//! standard error (text and JSON logs), standard output, `/health`,
//! `/metrics`, every file under `data_dir`, `buffer inspect`, `validate`,
//! `run --dry-run`.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, Mode, Receiver, free_port};

/// What every secret starts with; no output may hold it.
const SECRET: &str = "S3CR3T-xyz";

/// A server that answers every request 401 with a body that quotes the
/// request's target, query and all, as some servers do.
fn echoing_401() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let text = format!("unknown key in {target}");
                    let answer =
                        format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{text}", text.len());
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, hits)
}

/// A scratch directory with the secret files, the places the config names.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{SECRET}-file\n")).unwrap();
        std::fs::create_dir(dir.path().join("credentials")).unwrap();
        std::fs::write(dir.path().join("credentials/amqp"), format!("{SECRET}-cred")).unwrap();
        Setup { dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a config; `{data_dir}`, `{api}` (a port the agent picks) and
    /// `{dir}` are filled in.
    fn config(&self, text: &str) -> PathBuf {
        let text = text
            .replace("{data_dir}", self.data_dir().to_str().unwrap())
            .replace("{api}", "0")
            .replace("{dir}", self.dir.path().to_str().unwrap());
        let path = self.dir.path().join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, args: &[&str], config: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--config")
            .arg(config)
            .env("HW_API_TOKEN", format!("{SECRET}-env"))
            .env("CREDENTIALS_DIRECTORY", self.dir.path().join("credentials"))
            .env_remove("HOSTWATCH_LOG")
            .stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str], config: &Path) -> (Option<i32>, String) {
        let Output { status, stdout, stderr } = self.command(args, config).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        (status.code(), text)
    }
}

/// Every place a secret can be written, against endpoints that fail in
/// every way.
fn full_config(
    format: &str,
    dead: u16,
    refusing: &Receiver,
    failing: &Receiver,
    unauthorized: u16,
) -> String {
    format!(
        r#"data_dir: {{data_dir}}
shutdown_timeout: 2s
api: {{address: "127.0.0.1:{{api}}"}}
log: {{level: debug, format: {format}}}
sources:
  gen: {{type: generator, rate: 20, message: hello}}
sinks:
  dead:
    type: http
    inputs: [gen]
    url: "http://user:{SECRET}-a@127.0.0.1:{dead}/in?api_key={SECRET}-b&token={SECRET}-c"
    headers: {{X-Api-Key: "{SECRET}-d"}}
    auth: {{bearer: "${{file:{{dir}}/token}}"}}
    buffer: {{type: disk, max_size: 64MiB}}
    request: {{timeout: 2s, retry_initial_backoff: 100ms, retry_max_backoff: 500ms}}
  refused:
    type: http
    inputs: [gen]
    url: "http://user:{SECRET}-a@{refusing}/in?api_key={SECRET}-b"
    auth: {{basic: {{user: me, password: "${{HW_API_TOKEN}}"}}}}
  failing:
    type: http
    inputs: [gen]
    url: "http://user:{SECRET}-a@{failing}/in?token={SECRET}-c"
    headers: {{Authorization: "Bearer {SECRET}-e"}}
    request: {{retry_initial_backoff: 100ms, retry_max_backoff: 500ms}}
  unauthorized:
    type: http
    inputs: [gen]
    url: "http://127.0.0.1:{unauthorized}/in?api_key={SECRET}-b&sig={SECRET}-f"
    request: {{retry_initial_backoff: 100ms, retry_max_backoff: 500ms}}
  rabbit:
    type: amqp
    inputs: [gen]
    url: "amqp://guest:${{credential:amqp}}@127.0.0.1:5672/%2f"
    routing_key: hostwatch-secrets
    request: {{retry_initial_backoff: 100ms, retry_max_backoff: 500ms}}
  cache:
    type: redis
    inputs: [gen]
    url: "redis://:{SECRET}-g@127.0.0.1:6379/0"
    key: hostwatch-secrets
    request: {{retry_initial_backoff: 100ms, retry_max_backoff: 500ms}}
  nats:
    type: nats
    inputs: [gen]
    url: "nats://user:{SECRET}-h@127.0.0.1:4222"
    subject: hostwatch.secrets
    jetstream: false
  mqtt:
    type: mqtt
    inputs: [gen]
    url: "mqtt://user:{SECRET}-i@127.0.0.1:1883"
    topic: hostwatch/secrets
  kafka:
    type: kafka
    inputs: [gen]
    brokers: ["127.0.0.1:{dead}"]
    topic: secrets
    sasl: {{mechanism: PLAIN, username: me, password: "{SECRET}-j"}}
    librdkafka_options: {{ssl.key.password: "{SECRET}-k"}}
    request: {{timeout: 2s}}
"#,
        refusing = refusing.addr,
        failing = failing.addr,
    )
}

/// Each channel whose text holds the secret, with the lines that do.
fn leaks(channels: &[(String, String)]) -> Vec<String> {
    channels
        .iter()
        .filter(|(_, text)| text.contains(SECRET))
        .map(|(name, text)| {
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(SECRET)).take(5).collect();
            format!("{name}:\n  {}", lines.join("\n  "))
        })
        .collect()
}

/// Every file under `dir`, as text.
fn files(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
}

async fn get(url: &str) -> String {
    match common::client().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Runs the agent with the full config until every sink that must fail has
/// said so in `/health`, and reads every channel.
async fn run_everything(format: &str) -> Vec<(String, String)> {
    let setup = Setup::new();
    let refusing = Receiver::start(Mode::Refuse).await;
    let failing = Receiver::start(Mode::FailEvery(1)).await;
    let (unauthorized, hits) = echoing_401();
    let config = setup.config(&full_config(format, free_port(), &refusing, &failing, unauthorized));
    let mut channels = Vec::new();

    let (code, text) = setup.output(&["validate"], &config);
    assert_eq!(code, Some(0), "{text}");
    channels.push(("validate".to_string(), text));
    let (code, text) = setup.output(&["run", "--dry-run"], &config);
    assert_eq!(code, Some(69), "{text}");
    assert!(text.contains("sinks.dead: not reachable"), "{text}");
    channels.push(("run --dry-run".to_string(), text));

    let log = setup.dir.path().join("agent.log");
    let stdout = setup.dir.path().join("stdout.log");
    let mut child = setup
        .command(&["run"], &config)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let api = common::listening_in(&log, "api", &mut child);
    let health_url = format!("http://{api}/health");
    let must_fail = ["dead", "refused", "failing", "unauthorized", "rabbit", "cache", "kafka"];
    let deadline = Instant::now() + Duration::from_secs(90);
    let health = loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hostwatch exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        let health = get(&health_url).await;
        let failed: Vec<String> = match serde_json::from_str::<serde_json::Value>(&health) {
            Ok(h) => h["components"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| !c["last_error"].is_null())
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect(),
            Err(_) => Vec::new(),
        };
        let dead_letters = std::fs::read_dir(setup.data_dir().join("dead/refused")).map_or(0, |d| d.count());
        if must_fail.iter().all(|id| failed.iter().any(|f| f == id))
            && dead_letters >= 2
            && failing.failed() > 0
            && hits.load(Ordering::SeqCst) > 0
        {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "not every sink failed (errors so far: {failed:?}):\n{health}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    channels.push(("GET /health".to_string(), health));
    channels.push(("GET /metrics".to_string(), get(&format!("http://{api}/metrics")).await));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "hostwatch did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = std::fs::read_to_string(&log).unwrap();
    channels.push((format!("standard error ({format} logs)"), logs));
    channels.push(("standard output".to_string(), std::fs::read_to_string(&stdout).unwrap()));

    let (_, text) = setup.output(&["buffer", "inspect"], &config);
    assert!(text.contains("sink `dead`"), "{text}");
    channels.push(("buffer inspect".to_string(), text));
    let before = channels.len();
    files(&setup.data_dir(), &mut channels);
    assert!(
        channels[before..].iter().any(|(name, _)| name.ends_with(".meta.json")),
        "no dead letter in {}",
        setup.data_dir().display()
    );
    channels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_of_a_running_agent() {
    let mut channels = run_everything("text").await;
    channels.extend(run_everything("json").await);
    let leaks = leaks(&channels);
    assert!(leaks.is_empty(), "the secret appears in:\n{}", leaks.join("\n"));
    // The secrets were there to be hidden.
    for (name, text) in &channels {
        if name == "GET /health" || name.starts_with("standard error") {
            assert!(text.contains("[redacted]"), "{name}: {text}");
        }
    }
}

#[test]
fn no_secret_in_the_errors_of_an_invalid_config() {
    let setup = Setup::new();
    let mut channels = Vec::new();
    let mut check = |name: &str, text: String, want: &str| {
        let config = setup.config(&text);
        for args in [&["validate"][..], &["run"], &["run", "--dry-run"]] {
            let (code, out) = setup.output(args, &config);
            assert_eq!(code, Some(78), "{args:?}: {out}");
            assert!(out.contains(want), "{args:?}: {out}");
            channels.push((format!("{name}: {}", args.join(" ")), out));
        }
    };
    // Settings that cannot be built: invalid URLs.
    check(
        "invalid urls",
        format!(
            r#"data_dir: {{data_dir}}
sources:
  gen: {{type: generator}}
sinks:
  web:
    type: http
    inputs: [gen]
    url: "http://user:{SECRET}-a@[bad/in?api_key={SECRET}-b&token={SECRET}-c"
  cache:
    type: redis
    inputs: [gen]
    url: "redis://:{SECRET}-g@127.0.0.1:notaport/0"
    key: k
  mqtt:
    type: mqtt
    inputs: [gen]
    url: "mqtt://user:{SECRET}-i@127.0.0.1:99999"
    topic: t
"#
        ),
        "invalid url",
    );
    // Settings of the wrong type, whose errors quote the value: from a
    // file, from a variable named like a secret, from a credential.
    check(
        "wrong types",
        r#"data_dir: {data_dir}
sources:
  gen: {type: generator}
sinks:
  web:
    type: http
    inputs: [gen]
    url: http://127.0.0.1:1/in
    request: {concurrency: "${file:{dir}/token}"}
  web2:
    type: http
    inputs: [gen]
    url: http://127.0.0.1:1/in
    request: {timeout: "${HW_API_TOKEN}"}
  broker:
    type: amqp
    inputs: [gen]
    url: "amqp://guest:${credential:amqp}@127.0.0.1:5672/%2f"
    routing_key: k
    persistent: "${credential:amqp}"
"#
        .to_string(),
        "invalid type",
    );
    // A secret file that cannot be read: an error with its position, and
    // no content.
    check(
        "missing file",
        "data_dir: {data_dir}\nsources:\n  gen: {type: generator}\nsinks:\n  out:\n    type: http\n    \
         inputs: [gen]\n    url: http://127.0.0.1:1/\n    auth: {bearer: \"${file:{dir}/nonexistent}\"}\n"
            .to_string(),
        "agent.yaml:9:20: error: `${file:",
    );
    let leaks = leaks(&channels);
    assert!(leaks.is_empty(), "the secret appears in:\n{}", leaks.join("\n"));
}

/// A reload reads `${file:}` again: the same config text with a rotated
/// secret rebuilds the sink that uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_a_rotated_secret_file() {
    let receiver = Receiver::start(Mode::Accept).await;
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "token-one\n").unwrap();
    let mut agent = common::Agent::start(&format!(
        "data_dir: {{data_dir}}\nsources:\n  gen: {{type: generator, rate: 20}}\nsinks:\n  out:\n    \
         type: http\n    inputs: [gen]\n    url: {}\n    batch: {{timeout: 100ms}}\n    \
         auth: {{bearer: \"${{file:{}}}\"}}\n",
        receiver.url(),
        token.display()
    ));
    let bearer = |want: &'static str| {
        let receiver = &receiver;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let got = receiver.last_headers().get("authorization").map(|v| v.as_bytes().to_vec());
                if got.as_deref() == Some(want.as_bytes()) {
                    return;
                }
                assert!(Instant::now() < deadline, "never sent {want:?}, last {got:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    bearer("Bearer token-one").await;
    std::fs::write(&token, "token-two\n").unwrap();
    agent.signal("HUP");
    bearer("Bearer token-two").await;
    assert!(agent.child_alive(), "{}", agent.logs());
    assert!(!agent.logs().contains("token-"), "{}", agent.logs());
}
