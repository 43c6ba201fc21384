//! The http sink's options against a real server: encodings, compression,
//! headers and authentication, HTTPS with an extra CA, timeouts.

mod common;

use std::time::Duration;

use common::{Agent, Mode, Receiver, TestPki, assert_exactly_once};

fn generator_to(url: &str, count: u64, sink_options: &str) -> String {
    format!(
        "data_dir: {{data_dir}}
api:
  address: 127.0.0.1:{api}
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
{sink_options}",
        api = common::free_port()
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), 0);
    let logs = agent.logs();
    assert!(logs.contains("certificate") || logs.contains("Certificate"), "{logs}");
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receiver.set_delay(Duration::ZERO);
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    assert!(agent.logs().contains("no answer within 300ms"), "{}", agent.logs());
    // At least once: every event arrived; a request abandoned by the agent
    // but completed by the server may have delivered some twice.
    let events = receiver.events();
    let mut seen: Vec<u64> = events.iter().map(|e| e["data"]["seq"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}
