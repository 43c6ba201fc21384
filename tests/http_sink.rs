//! The http sink's options against a real server: encodings, compression,
//! headers and authentication, HTTPS with an extra CA, timeouts.

mod common;

use std::time::Duration;

use common::{Agent, Mode, Receiver, TestPki, assert_exactly_once};

fn generator_to(url: &str, count: u64, sink_options: &str) -> String {
    format!(
        "data_dir: {{data_dir}}
api:
  address: 127.0.0.1:0
sources:
  gen:
    type: generator
    rate: 0
    count: {count}
    batch_size: 250
sinks:
  out:
    type: http
    inputs: [gen]
    url: {url}
    request: {{retry_initial_backoff: 100ms, retry_max_backoff: 1s}}
{sink_options}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_compression_headers_and_auth() {
    for (options, content_type, encoding) in [
        ("    encoding: json\n    compression: gzip\n", "application/json", "gzip"),
        (
            "    encoding: cloudevents_batch\n    compression: zstd\n",
            "application/cloudevents-batch+json",
            "zstd",
        ),
        ("    encoding: ndjson\n", "application/x-ndjson", ""),
    ] {
        let receiver = Receiver::start(Mode::Accept).await;
        let sink = format!(
            "{options}    headers:\n      X-Team: ops\n    auth:\n      basic: {{user: agent, password: s3cret}}\n"
        );
        let mut agent = Agent::start(&generator_to(&receiver.url(), 1200, &sink));
        assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
        assert_exactly_once(&receiver.events(), 1200);
        assert_eq!(receiver.content_types().keys().collect::<Vec<_>>(), vec![content_type]);
        let headers = receiver.last_headers();
        assert_eq!(headers.get("content-encoding").map(|v| v.to_str().unwrap()).unwrap_or(""), encoding);
        assert_eq!(headers["x-team"], "ops");
        // base64("agent:s3cret")
        assert_eq!(headers["authorization"], "Basic YWdlbnQ6czNjcmV0");
        assert!(headers["user-agent"].to_str().unwrap().starts_with("hostwatch/"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_an_extra_ca_file() {
    let pki = TestPki::new();
    let receiver = Receiver::start_tls(Mode::Accept, &pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let sink = format!("    auth:\n      bearer: t0ken\n    tls:\n      ca_file: {}\n", ca.display());
    let mut agent = Agent::start(&generator_to(&receiver.url(), 500, &sink));
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    assert_exactly_once(&receiver.events(), 500);
    assert_eq!(receiver.last_headers()["authorization"], "Bearer t0ken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_certificate_is_retried_not_delivered() {
    let pki = TestPki::new();
    let receiver = Receiver::start_tls(Mode::Accept, &pki).await;
    let mut agent = Agent::start(&generator_to(&receiver.url(), 10, ""));
    agent.wait_log(&["ertificate"], Duration::from_secs(30));
    assert_eq!(receiver.count(), 0);
    assert!(agent.child.try_wait().unwrap().is_none(), "it keeps retrying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_is_retried() {
    let receiver = Receiver::start(Mode::Accept).await;
    // Answers only after 2s, while the sink gives each request 300ms.
    receiver.set_delay(Duration::from_secs(2));
    let sink = "    request: {timeout: 300ms, retry_initial_backoff: 100ms, retry_max_backoff: 200ms}\n";
    let config = generator_to(&receiver.url(), 100, "")
        .replace("    request: {retry_initial_backoff: 100ms, retry_max_backoff: 1s}\n", sink);
    let mut agent = Agent::start(&config);
    agent.wait_log(&["no answer within 300ms"], Duration::from_secs(30));
    receiver.set_delay(Duration::ZERO);
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    // At least once: every event arrived; a request abandoned by the agent
    // but completed by the server may have delivered some twice.
    let events = receiver.events();
    let mut seen: Vec<u64> = events.iter().map(|e| e["data"]["seq"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

/// `tests/cloudevents_receiver.py`: every request parsed by the official
/// CloudEvents SDK for Python.
struct SdkReceiver {
    child: std::process::Child,
    port: u16,
}

impl SdkReceiver {
    /// `None` when python3 is missing (the test is then skipped).
    fn start(fail_every: u64) -> Option<SdkReceiver> {
        use std::io::BufRead as _;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloudevents_receiver.py");
        let mut child = match std::process::Command::new("python3")
            .args([script, "--fail-every", &fail_every.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("python3: {e}"),
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the receiver did not start");
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| {
            panic!("the receiver did not start ({line:?}): is the `cloudevents` package installed? scripts/brokers installs it")
        });
        Some(SdkReceiver { port: port.parse().unwrap(), child })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    async fn counts(&self) -> serde_json::Value {
        common::get(&format!("http://127.0.0.1:{}/counts", self.port)).await.json().await.unwrap()
    }
}

impl Drop for SdkReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `encoding: structured` and `binary`: one event per request, as the
/// CloudEvents HTTP binding has it, read by the official SDK without one
/// rejection; a request answered 503 is sent again alone, so every event
/// arrives exactly once; attributes that need percent-encoding, text and
/// base64 data come through as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_event_modes_are_read_by_the_cloudevents_sdk() {
    for (encoding, compression) in [("structured", "none"), ("binary", "none"), ("binary", "gzip")] {
        let Some(receiver) = SdkReceiver::start(7) else {
            eprintln!("skipped: python3 is missing");
            return;
        };
        let count = 1000;
        let config = format!(
            "data_dir: {{data_dir}}
api:
  address: 127.0.0.1:0
sources:
  gen:
    type: generator
    rate: 0
    count: {count}
    batch_size: 250
  apps:
    type: ingest
    address: 127.0.0.1:0
sinks:
  out:
    type: http
    inputs: [gen, apps]
    url: {url}
    encoding: {encoding}
    compression: {compression}
    headers: {{X-Team: ops}}
    request: {{retry_initial_backoff: 50ms, retry_max_backoff: 200ms}}
",
            url = receiver.url()
        );
        let mut agent = Agent::start(&config);
        agent.ready();
        let ingest = agent.ingest_url("apps");
        let special = serde_json::json!([
            {"type": "note", "subject": "café au lait 100% \"fresh\"", "traceparent": "00-abc-01",
             "data": {"n": 1}},
            {"type": "note", "subject": "text", "datacontenttype": "text/plain", "data": "plain words"},
            {"type": "note", "subject": "bytes", "datacontenttype": "application/octet-stream",
             "data_base64": "AAEC/w=="},
        ]);
        let r = common::client()
            .post(&ingest)
            .header("content-type", "application/cloudevents-batch+json")
            .body(special.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let counts = loop {
            let c = receiver.counts().await;
            if c["accepted"].as_u64().unwrap() + c["rejected"].as_u64().unwrap() >= count + 3 {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "{encoding}: {c}\n{}", agent.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(counts["rejected"], 0, "{encoding}: {}", counts["errors"]);
        assert_eq!(counts["accepted"], count + 3, "{encoding}: {counts}");
        assert!(counts["failed_on_purpose"].as_u64().unwrap() > 0);
        assert_eq!(counts["modes"][encoding], count + 3, "{counts}");
        let seqs = counts["seqs"].as_object().unwrap();
        assert_eq!(seqs.len() as u64, count, "every event");
        assert!(seqs.values().all(|n| *n == 1), "none twice: {seqs:?}");
        let others = counts["others"].as_array().unwrap();
        let by_subject = |s: &str| {
            others
                .iter()
                .find(|o| o["attributes"]["subject"] == s)
                .unwrap_or_else(|| panic!("{s}: {others:?}"))
        };
        let subject = "café au lait 100% \"fresh\"";
        // SDK 1.x reads binary-mode headers without percent-decoding them.
        let coffee = if encoding == "binary" && counts["sdk_decodes"] == false {
            by_subject("caf%C3%A9%20au%20lait%20100%25%20%22fresh%22")
        } else {
            by_subject(subject)
        };
        assert_eq!(coffee["attributes"]["traceparent"], "00-abc-01", "{coffee}");
        assert_eq!(coffee["attributes"]["host"], common::hostname());
        assert_eq!(coffee["data"]["n"], 1);
        if encoding == "binary" {
            assert_eq!(by_subject("text")["data"]["raw"], "plain words");
            assert_eq!(by_subject("text")["content_type"], "text/plain");
            assert_eq!(by_subject("bytes")["data"]["raw"], "\u{0}\u{1}\u{2}\u{ff}");
        }
        agent.signal("TERM");
        assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    }
}
