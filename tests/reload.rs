//! Reloading the config on SIGHUP or `POST /reload`: a sink's URL changed in
//! the middle of a stream loses nothing and repeats nothing; only what
//! changed is rebuilt, the rest runs on; a config that does not validate
//! leaves the running pipeline as it was.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Agent, Extra, LogWriter, Mode, Receiver, config_path, file_to_http};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn config(dir: &Path, url: &str) -> String {
    file_to_http(&format!("{}/app.log*", dir.display()), url, Extra::default())
}

/// The `ingest` source `apps` into an http sink, with the API, all on ports
/// the agent picks; `sources` and `sinks` add components.
fn ingest_config(url: &str, sources: &str, sinks: &str) -> String {
    format!(
        "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  apps:\n    type: ingest\n    address: \"127.0.0.1:0\"\n{sources}sinks:\n  out:\n    type: http\n    inputs: [apps]\n    url: {url}\n    batch: {{timeout: 50ms}}\n{sinks}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_in_the_middle_of_a_stream_loses_and_repeats_nothing() {
    const LINES: u64 = 200_000;
    let a = Receiver::start(Mode::Accept).await;
    let b = Receiver::start(Mode::Accept).await;
    a.count_only();
    b.count_only();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&config(dir.path(), &a.url()));
    agent.ready();
    let writer = LogWriter { rate: 50_000.0, ..LogWriter::new(&dir.path().join("app.log")) };
    let writing = tokio::task::spawn_blocking(move || writer.write(0, LINES));
    // The stream flows to A.
    a.wait_for_unique(1000, Duration::from_secs(30)).await;

    // The sink now sends to B.
    let path = config_path(&agent);
    let text = std::fs::read_to_string(&path).unwrap().replace(&a.url(), &b.url());
    std::fs::write(&path, text).unwrap();
    agent.signal("HUP");
    writing.await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while a.unique() + b.unique() < LINES {
        assert!(
            std::time::Instant::now() < deadline,
            "{} + {} of {LINES}:\n{}",
            a.unique(),
            b.unique(),
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped, the agent has sent all it will: any repeat has arrived.
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(20));
    let (ca, cb) = (a.seq_counts(), b.seq_counts());
    let count = |v: &Vec<u8>, i: usize| u64::from(v.get(i).copied().unwrap_or(0));
    let lost: Vec<usize> = (0..LINES as usize).filter(|i| count(&ca, *i) + count(&cb, *i) == 0).collect();
    let twice = (0..LINES as usize).filter(|i| count(&ca, *i) + count(&cb, *i) > 1).count();
    assert!(lost.is_empty(), "{} lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    assert_eq!(twice, 0, "lines delivered twice across the reload");
    assert!(
        a.unique() > 0 && b.unique() > 0,
        "A got {}, B got {}: the reload did not fall mid-stream",
        a.unique(),
        b.unique()
    );
    assert!(agent.logs().contains("reloaded"), "{}", agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_validate_is_refused_and_the_pipeline_runs_on() {
    let a = Receiver::start(Mode::Accept).await;
    a.count_only();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&config(dir.path(), &a.url()));
    let api = agent.ready();
    let log = dir.path().join("app.log");
    LogWriter::new(&log).write(0, 1000);
    a.wait_for_unique(1000, Duration::from_secs(20)).await;

    let path = config_path(&agent);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("type: http", "type: htp")).unwrap();
    // Through the API this time.
    let answer = common::client().post(format!("http://127.0.0.1:{api}/reload")).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    agent.wait_log(&["the new config is refused"], Duration::from_secs(10));
    // The error names the line and column.
    assert!(agent.logs().contains("agent.yaml:"), "{}", agent.logs());
    LogWriter::new(&log).write(1000, 1000);
    a.wait_for_unique(2000, Duration::from_secs(20)).await;
    a.assert_exactly_once(2000);
    assert!(agent.child_alive());
}

/// Posts one event on an open HTTP/1.1 connection and returns the status.
async fn post_on(conn: &mut tokio::net::TcpStream, seq: u64) -> u16 {
    let body = common::test_event(seq).to_string();
    let head = format!(
        "POST /events HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all((head + &body).as_bytes()).await.expect("the connection is open");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Head, then as much body as Content-Length says.
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "the connection was closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text[9..12].parse().expect("status");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rebuilds_what_changed_and_the_rest_runs_on() {
    let a = Receiver::start(Mode::Accept).await;
    let b = Receiver::start(Mode::Accept).await;
    // The connection waits idle while 20,000 events are published on
    // others: longer than the default `header_timeout` on a slow machine.
    let config = |url: &str, cache: u32| {
        ingest_config(url, "    header_timeout: 10m\n", "").replace("inputs: [apps]", "inputs: [once]").replace(
            "sinks:\n",
            &format!(
                "transforms:\n  once:\n    type: dedupe\n    inputs: [apps]\n    fields: [data.seq]\n    cache_size: {cache}\nsinks:\n"
            ),
        )
    };
    let mut agent = Agent::start(&config(&a.url(), 1000));
    let api = agent.ready();
    let ingest = agent.listening("apps");
    let path = config_path(&agent);
    let wait_reloads = |agent: &mut Agent, n: usize| {
        agent.wait_logs(&["reloaded"], n, Duration::from_secs(30));
    };
    let dropped_by_dedupe = async || {
        common::metric(&common::metrics(api).await, "hostwatch_events_dropped_total{component_id=\"once\"")
            .unwrap_or(0.0)
    };

    // A connection to the ingest source, kept open across the reload.
    let mut conn = tokio::net::TcpStream::connect(ingest).await.unwrap();
    assert_eq!(post_on(&mut conn, 0).await, 202);
    a.wait_for_unique(1, Duration::from_secs(10)).await;

    // Only the sink changes.
    std::fs::write(&path, config(&b.url(), 1000).replace("{data_dir}", agent.data_dir().to_str().unwrap()))
        .unwrap();
    agent.signal("HUP");
    wait_reloads(&mut agent, 1);
    // The source kept its connection: it was not rebuilt. The dedupe kept
    // its memory: event 0 again is a duplicate and goes nowhere.
    assert_eq!(post_on(&mut conn, 0).await, 202);
    assert_eq!(post_on(&mut conn, 1).await, 202);
    b.wait_for_unique(1, Duration::from_secs(10)).await;
    common::wait_until("the dedupe dropped event 0", Duration::from_secs(10), async || {
        dropped_by_dedupe().await >= 1.0
    })
    .await;
    assert_eq!(b.seq_report(2), (vec![0], 0, 0), "B should have event 1 only");
    a.assert_exactly_once(1);

    // Now the transform changes while events stream in: the source waits
    // (ingest answers 503, which the publisher retries) and nothing is lost.
    let url = format!("http://{ingest}/events");
    let publishing = tokio::spawn(async move { common::publish(&url, 2, 20_000, 20).await });
    b.wait_for_unique(100, Duration::from_secs(30)).await;
    std::fs::write(&path, config(&b.url(), 2000).replace("{data_dir}", agent.data_dir().to_str().unwrap()))
        .unwrap();
    agent.signal("HUP");
    wait_reloads(&mut agent, 2);
    publishing.await.unwrap();
    b.wait_for_unique(20_001, Duration::from_secs(30)).await;
    // The open connection still works: the source ran on through both.
    assert_eq!(post_on(&mut conn, 30_000).await, 202);
    let logs = agent.logs();
    assert!(logs.contains("rebuilt=out") && logs.contains("rebuilt=once"), "{logs}");

    // A sink added next to the running ones gets what comes next.
    let added = format!("  copy:\n    type: http\n    inputs: [once]\n    url: {}\n", a.url());
    let text = config(&b.url(), 2000).replace("{data_dir}", agent.data_dir().to_str().unwrap()) + &added;
    std::fs::write(&path, text).unwrap();
    agent.signal("HUP");
    wait_reloads(&mut agent, 3);
    assert_eq!(post_on(&mut conn, 30_001).await, 202);
    a.wait_for_unique(2, Duration::from_secs(10)).await;
    b.wait_for_unique(20_003, Duration::from_secs(10)).await;
    assert!(agent.logs().contains("rebuilt=copy"), "{}", agent.logs());
    // Stopped, the agent has sent all it will: any repeat has arrived. B
    // has every event but the duplicate 0, once, and the two sent later.
    drop(conn);
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(20));
    let (missing, repeated, _) = b.seq_report(20_002);
    assert_eq!(missing, vec![0]);
    assert_eq!(repeated, 0);
    let counts = b.seq_counts();
    let beyond: Vec<usize> = (20_002..counts.len()).filter(|s| counts[*s] > 0).collect();
    assert_eq!(beyond, [30_000, 30_001]);
}

/// The usual reason to change a sink's URL: the old endpoint is down. Its
/// sink cannot drain within `shutdown_timeout`, so what it holds was never
/// acknowledged; the file source upstream starts again and reads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_away_from_a_sink_that_is_down_loses_nothing() {
    let a = Receiver::start(Mode::FailEvery(1)).await;
    let b = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!("shutdown_timeout: 1s\n{}", config(dir.path(), &a.url()));
    let mut agent = Agent::start(&text);
    agent.ready();
    LogWriter::new(&dir.path().join("app.log")).write(0, 5000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.failed() < 3 {
        assert!(std::time::Instant::now() < deadline, "A was never asked:\n{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = config_path(&agent);
    let text = std::fs::read_to_string(&path).unwrap().replace(&a.url(), &b.url());
    std::fs::write(&path, text).unwrap();
    agent.signal("HUP");
    b.wait_for_unique(5000, Duration::from_secs(30)).await;
    // Stopped, the agent has sent all it will: any repeat has arrived.
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(20));
    b.assert_exactly_once(5000);
    assert_eq!(a.unique(), 0);
    assert!(agent.logs().contains("read again what was not delivered"), "{}", agent.logs());
}

/// A config that validates but whose new `ingest` port is taken: refused
/// before anything stops, so the running source keeps even its open
/// connection; the log and `/health` say why, and the agent still stops
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_a_port_that_is_taken_keeps_the_running_pipeline() {
    let a = Receiver::start(Mode::Accept).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let config = |port: u16| {
        ingest_config(&a.url(), "", "").replace("127.0.0.1:0\"\nsinks", &format!("127.0.0.1:{port}\"\nsinks"))
    };
    let mut agent = Agent::start(&config(0));
    let api = agent.ready();
    let mut conn = tokio::net::TcpStream::connect(agent.listening("apps")).await.unwrap();
    assert_eq!(post_on(&mut conn, 0).await, 202);
    a.wait_for_unique(1, Duration::from_secs(10)).await;

    let path = config_path(&agent);
    std::fs::write(&path, config(taken_port).replace("{data_dir}", agent.data_dir().to_str().unwrap()))
        .unwrap();
    agent.signal("HUP");
    agent.wait_log(&["the new config is refused, the running pipeline goes on"], Duration::from_secs(30));
    assert!(agent.logs().contains(&format!("cannot listen on 127.0.0.1:{taken_port}")), "{}", agent.logs());
    let health: serde_json::Value =
        common::get(&format!("http://127.0.0.1:{api}/health")).await.json().await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let why = health["reload_error"].as_str().unwrap_or_default();
    assert!(why.contains("could not start") && why.contains(&taken_port.to_string()), "{health}");

    // The running source was not touched: the same connection goes on.
    assert_eq!(post_on(&mut conn, 1).await, 202);
    a.wait_for_unique(2, Duration::from_secs(10)).await;
    a.assert_exactly_once(2);
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", agent.logs());
    drop(taken);
}

/// A config that validates but fails as it starts (a capture on an
/// interface that does not exist): the agent goes back to the config that
/// ran instead of ending, says why, and delivers on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_to_start_goes_back_to_the_previous_config() {
    let a = Receiver::start(Mode::Accept).await;
    let config = |extra: &str| ingest_config(&a.url(), extra, "");
    let mut agent = Agent::start(&config(""));
    let api = agent.ready();
    let url = agent.ingest_url("apps");
    common::publish(&url, 0, 10, 5).await;
    a.wait_for_unique(10, Duration::from_secs(10)).await;

    let path = config_path(&agent);
    let broken = config(
        "  web:\n    type: http_capture\n    mode: sniff\n    interface: hostwatch-none0\n    ports: [9]\n",
    )
    .replace("inputs: [apps]", "inputs: [apps, web]");
    std::fs::write(&path, broken.replace("{data_dir}", agent.data_dir().to_str().unwrap())).unwrap();
    agent.signal("HUP");
    agent.wait_log(&["the previous config runs again"], Duration::from_secs(30));
    let health: serde_json::Value =
        common::get(&format!("http://127.0.0.1:{api}/health")).await.json().await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let why = health["reload_error"].as_str().unwrap_or_default();
    assert!(why.contains("could not start") && why.contains("hostwatch-none0"), "{health}");

    // The previous pipeline takes and delivers events (on the port it
    // listens on now, should it have listened again).
    let url = agent.ingest_url("apps");
    common::publish(&url, 10, 10, 5).await;
    a.wait_for_unique(20, Duration::from_secs(10)).await;
    a.assert_exactly_once(20);
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", agent.logs());
}
