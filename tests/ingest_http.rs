//! Events published to `ingest` reach a real HTTP server exactly once, with
//! their CloudEvents attributes, also while that server misbehaves.

mod common;

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Agent, Extra, Mode, Receiver, assert_cloudevent, assert_exactly_once, metric, publish};

struct Setup {
    agent: Agent,
    ingest: String,
    api: u16,
}

fn start(receiver: &Receiver, extra_source: &str, extra_sink: &str) -> Setup {
    let sink = format!(
        "    batch:\n      max_events: 500\n      timeout: 200ms\n    request:\n      \
         retry_initial_backoff: 100ms\n      retry_max_backoff: 1s\n{extra_sink}"
    );
    let extra = Extra { top: "hostname: test-host\n", source: extra_source, sink: &sink };
    let mut agent = Agent::start(&common::ingest_to_http(&receiver.url(), extra));
    let ingest = agent.ingest_url("apps");
    let api = agent.api();
    Setup { agent, ingest, api }
}

/// Publishes `total` events from `publishers` tasks at once; requests sent
/// again are counted in `retried`.
async fn publish_concurrently(url: &str, total: u64, publishers: u64, retried: Arc<AtomicU64>) {
    let per = total / publishers;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let url = url.to_string();
        let retried = retried.clone();
        tasks.push(tokio::spawn(
            async move { common::publish_counting(&url, p * per, per, 100, &retried).await },
        ));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_arrive_exactly_once_as_cloudevents() {
    let receiver = Receiver::start(Mode::Accept).await;
    let mut setup = start(&receiver, "", "");
    publish_concurrently(&setup.ingest, 10_000, 4, Arc::default()).await;
    receiver.wait_for(10_000, Duration::from_secs(60)).await;
    let sent =
        r#"hostwatch_events_sent_total{component_id="out",component_kind="sink",component_type="http"}"#;
    common::wait_until("10,000 counted as sent", Duration::from_secs(10), async || {
        metric(&common::metrics(setup.api).await, sent).unwrap_or(0.0) >= 10_000.0
    })
    .await;
    let metrics = common::metrics(setup.api).await;
    let health: serde_json::Value =
        common::get(&format!("http://127.0.0.1:{}/health", setup.api)).await.json().await.unwrap();
    setup.agent.stop();

    let events = receiver.events();
    for e in assert_exactly_once(&events, 10_000) {
        assert_cloudevent(e, "hostwatch://test-host/apps", "test-host");
        assert_eq!(e["type"], "test.event");
    }
    // Batched: far fewer requests than events.
    assert!(receiver.requests() < 1_000, "{} requests", receiver.requests());
    assert_eq!(receiver.content_types().keys().collect::<Vec<_>>(), vec!["application/x-ndjson"]);

    assert!(metrics.contains(&format!("{sent} 10000")), "{metrics}");
    assert!(metrics.contains(r#"hostwatch_events_received_total{component_id="apps",component_kind="source",component_type="ingest"} 10000"#));
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_while_a_third_of_the_requests_get_503() {
    let receiver = Receiver::start(Mode::FailEvery(3)).await;
    let mut setup = start(&receiver, "", "");
    publish_concurrently(&setup.ingest, 10_000, 4, Arc::default()).await;
    receiver.wait_for(10_000, Duration::from_secs(90)).await;
    // Every 503 was retried: the retries counted reach the failures seen.
    let retries = async || {
        metric(&common::metrics(setup.api).await, "hostwatch_retries_total{component_id=\"out\"")
            .unwrap_or(0.0) as u64
    };
    let failed = receiver.failed();
    common::wait_until("every 503 counted as retried", Duration::from_secs(10), async || {
        retries().await >= failed
    })
    .await;
    setup.agent.stop();
    assert_exactly_once(&receiver.events(), 10_000);
    let (requests, failed) = (receiver.requests(), receiver.failed());
    assert!(failed >= requests / 3, "{failed} of {requests} requests failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_while_the_server_is_down_until_publishers_are_pushed_back() {
    let mut receiver = Receiver::start(Mode::Accept).await;
    // A small buffer, so the outage pushes back to the publishers as 503.
    let mut setup = start(&receiver, "", "    buffer:\n      max_events: 2000\n");
    let url = setup.ingest.clone();
    let retried = Arc::new(AtomicU64::new(0));
    let counted = retried.clone();
    let publisher = tokio::spawn(async move { publish_concurrently(&url, 10_000, 2, counted).await });

    receiver.wait_for(1_000, Duration::from_secs(30)).await;
    receiver.down().await;
    let during = receiver.count();
    // Down until the pipeline is full and pushes back: a full pipeline
    // answers 503, and the publisher sends again.
    common::wait_until("the publishers pushed back", Duration::from_secs(60), async || {
        retried.load(Ordering::SeqCst) > 0
    })
    .await;
    assert_eq!(receiver.count(), during, "nothing arrives while the server is down");
    receiver.up().await;

    publisher.await.expect("publisher");
    receiver.wait_for(10_000, Duration::from_secs(60)).await;
    setup.agent.stop();
    assert_exactly_once(&receiver.events(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_everything_in_flight_and_exits_0() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.set_delay(Duration::from_millis(200));
    let config = format!(
        r#"
data_dir: {{data_dir}}
shutdown_timeout: 30s
sources:
  apps:
    type: ingest
    address: 127.0.0.1:0
sinks:
  out:
    type: http
    inputs: [apps]
    url: {url}
    # Batches that would wait a minute: only shutdown sends them now.
    batch: {{max_events: 100000, max_bytes: 64MiB, timeout: 60s}}
"#,
        url = receiver.url()
    );
    let mut agent = Agent::start(&config);
    let url = agent.ingest_url("apps");
    publish(&url, 0, 5_000, 250).await;
    assert_eq!(receiver.count(), 0, "the events are still in flight");

    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}:\n{}", agent.logs());
    assert_exactly_once(&receiver.events(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_and_nothing_of_them_is_accepted() {
    let receiver = Receiver::start(Mode::Accept).await;
    let mut setup = start(&receiver, "    max_body_bytes: 4KiB\n", "");
    let client = common::client();
    let post = |ct: &'static str, body: String| {
        client.post(&setup.ingest).header("content-type", ct).body(body).send()
    };

    let r = post("application/json", "{not json".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let msg: serde_json::Value = r.json().await.unwrap();
    assert!(msg["error"].as_str().unwrap().contains("invalid JSON"), "{msg}");

    // One bad event refuses the whole request.
    let r = post("application/json", r#"[{"type":"ok","data":{"seq":0}},{"data":{"seq":1}}]"#.into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg: serde_json::Value = r.json().await.unwrap();
    assert_eq!(msg["error"], "event 1: missing `type`");

    let r = post("application/x-ndjson", "{\"type\":\"a\"}\n\u{0}\u{1}binary\n".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post("application/cloudevents+json", r#"{"type":"a","specversion":"0.3"}"#.into()).await.unwrap();
    assert_eq!(r.status(), 400);

    // Over the limit: 413, whether announced by Content-Length or streamed.
    let big = format!("[{}]", vec![r#"{"type":"a"}"#; 400].join(","));
    let r = post("application/json", big.clone()).await.unwrap();
    assert_eq!(r.status(), 413);
    let chunks: Vec<Result<String, std::io::Error>> =
        big.as_bytes().chunks(512).map(|c| Ok(String::from_utf8_lossy(c).into_owned())).collect();
    let r = client
        .post(&setup.ingest)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Other paths and methods.
    assert_eq!(common::get(setup.ingest.as_str()).await.status(), 405);
    let other = setup.ingest.replace("/events", "/nope");
    assert_eq!(client.post(other).body("{}").send().await.unwrap().status(), 404);

    // The endpoint still serves, and only the good request arrives.
    let r = post("application/json", r#"{"type":"ok","data":{"seq":0}}"#.into()).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["accepted"], 1);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let metrics = common::metrics(setup.api).await;
    setup.agent.stop();
    assert_exactly_once(&receiver.events(), 1);
    assert!(metrics.contains(r#"hostwatch_events_dropped_total{component_id="apps",component_kind="source",component_type="ingest",reason="malformed"} 6"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_delivered_answers_only_after_delivery() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.set_delay(Duration::from_millis(300));
    let setup = start(&receiver, "    ack: delivered\n", "");
    let client = common::client();
    let r = client
        .post(&setup.ingest)
        .header("content-type", "application/cloudevents+json")
        .body(
            r#"{"specversion":"1.0","type":"OrderCreated","id":"order-1","source":"/shop","data":{"seq":0}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["delivered"], 1);
    // Already there when the answer came.
    let events = receiver.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "order-1");
    assert_eq!(events[0]["source"], "/shop");
    assert_eq!(events[0]["host"], "test-host");

    // A sink that refuses for good: 502, and the batch is in the dead-letter directory.
    receiver.set_mode(Mode::Refuse);
    let r = client.post(&setup.ingest).body(r#"{"type":"Rejected","data":{"seq":1}}"#).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let dead = setup.agent.data_dir().join("dead").join("out");
    let files: Vec<_> = std::fs::read_dir(&dead).unwrap().map(|e| e.unwrap().path()).collect();
    let body = files.iter().find(|p| p.extension().is_some_and(|e| e == "ndjson")).expect("dead letter body");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(body).unwrap().trim()).unwrap();
    assert_eq!(line["type"], "Rejected");
    let meta = files.iter().find(|p| p.to_string_lossy().ends_with(".meta.json")).expect("dead letter meta");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(meta).unwrap()).unwrap();
    assert!(meta["reason"].as_str().unwrap().contains("400"), "{meta}");
    let metrics = common::get(&format!("http://127.0.0.1:{}/metrics", setup.api)).await.text().await.unwrap();
    assert!(metrics.contains(r#"hostwatch_events_dead_lettered_total{component_id="out",component_kind="sink",component_type="http"} 1"#), "{metrics}");
}

/// With two sinks, `ack: delivered` waits for the slower one; an event a
/// transform drops on purpose counts as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_wait_for_every_sink_and_count_deliberate_drops() {
    let fast = Receiver::start(Mode::Accept).await;
    let slow = Receiver::start(Mode::Accept).await;
    slow.set_delay(Duration::from_millis(1500));
    let config = format!(
        r#"
data_dir: {{data_dir}}
sources:
  apps:
    type: ingest
    address: 127.0.0.1:0
    ack: delivered
transforms:
  none:
    type: sample
    inputs: [apps]
    one_in: 1000000
sinks:
  fast:
    type: http
    inputs: [apps]
    url: {fast}
    batch: {{timeout: 10ms}}
  slow:
    type: http
    inputs: [apps]
    url: {slow}
    batch: {{timeout: 10ms}}
  sampled:
    type: http
    inputs: [none]
    url: {fast}
"#,
        fast = fast.url(),
        slow = slow.url()
    );
    let mut agent = Agent::start(&config);
    let url = agent.ingest_url("apps");
    let client = common::client();
    let started = std::time::Instant::now();
    // Two events: the sampler keeps the first (1 in N keeps the first of
    // each N) and drops the second on purpose.
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"[{"type":"a","data":{"seq":0}},{"type":"a","data":{"seq":1}}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", agent.logs());
    assert!(started.elapsed() >= Duration::from_millis(1500), "answered before the slow sink delivered");
    assert_eq!(slow.count(), 2);
    // `fast` got both from `apps` and the one the sampler kept.
    assert_eq!(fast.count(), 3);

    // Now the sampler drops the whole request: still delivered.
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"[{"type":"a","data":{"seq":2}},{"type":"a","data":{"seq":3}}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", agent.logs());
    assert_eq!(slow.count(), 4);
    assert_eq!(fast.count(), 5);

    agent.signal("INT");
    assert!(agent.wait_exit(Duration::from_secs(20)).success(), "SIGINT stops cleanly too");
}
