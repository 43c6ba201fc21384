//! Local clients that misbehave on purpose cannot exhaust the agent: slow
//! bodies and slow heads are cut off, connections and body memory are
//! capped, and meanwhile other clients are served and nothing accepted is
//! lost. Also: bearer authentication on ingest and on `POST /reload`, HTTPS
//! on ingest, and the warning `validate` gives for open endpoints.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Agent, Extra, Mode, Receiver, ingest_to_http, publish};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// The agent's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

/// The agent with an `ingest` source; its port and the API's. `api_extra`
/// goes into the `api` settings (indented two spaces).
fn start(receiver: &Receiver, ingest_extra: &str, api_extra: &str) -> (Agent, u16, u16) {
    let extra = Extra {
        top: api_extra,
        source: ingest_extra,
        sink: "    batch: {max_events: 500, timeout: 100ms}\n",
    };
    let mut agent = Agent::start(&ingest_to_http(&receiver.url(), extra));
    let port = agent.listening("apps").port();
    let api = agent.api();
    (agent, port, api)
}

/// Whether the peer has closed: a read that ends or fails.
async fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The status of the first answer on a connection, if one comes.
async fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
}

const SLOW_HEAD: &[u8] =
    b"POST /events HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nx-padding: ";

/// 40 clients each declare a 10 MiB body, send 8 MiB of it at once and then
/// a byte every 100 ms, never finishing (without limits they pinned 400 MiB
/// for as long as they liked). The agent holds at most `max_buffered_bytes`
/// (64 MiB) of their bodies, cuts each off (503 over the budget, 408 after
/// `body_timeout`), serves a well-behaved publisher all along, loses none
/// of its events, and gives the memory back once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_are_bounded_in_memory_and_time() {
    let receiver = Receiver::start(Mode::Accept).await;
    let (mut agent, port, api) = start(&receiver, "    body_timeout: 5s\n", "");
    let url = format!("http://127.0.0.1:{port}/events");
    let pid = agent.child.id();

    // Warm up (connection pools, buffers, the sink's first batches) before
    // the baseline is read.
    publish(&url, 0, 200, 100).await;
    receiver.wait_for(200, Duration::from_secs(30)).await;
    let baseline = rss_bytes(pid);
    // The budget (max_buffered_bytes), and as much again for the pages the
    // bodies refused along the way freed: jemalloc gives them back to the
    // system over its dirty_decay_ms (10 s), not at once.
    let bound = baseline + 64 * MIB + 64 * MIB;

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let rss = rss_bytes(pid);
                peak.fetch_max(rss, Ordering::SeqCst);
                assert!(rss < bound, "RSS {} MiB went past {} MiB", rss / MIB, bound / MIB);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut attackers = Vec::new();
    for _ in 0..40 {
        attackers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let head = format!(
                "POST /events HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                10 * MIB
            );
            if s.write_all(head.as_bytes()).await.is_err() {
                return None;
            }
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..128 {
                if s.write_all(&chunk).await.is_err() {
                    return status_of(&mut s, Duration::from_secs(5)).await;
                }
            }
            // Then a byte every 100 ms, for a minute at most, until the agent answers or closes.
            for _ in 0..600 {
                let mut buf = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(100), s.peek(&mut buf)).await {
                    Ok(_) => return status_of(&mut s, Duration::from_secs(5)).await,
                    Err(_) => {
                        if s.write_all(b" ").await.is_err() {
                            return status_of(&mut s, Duration::from_secs(5)).await;
                        }
                    }
                }
            }
            Some(0)
        }));
    }

    // A well-behaved publisher all along: everything it was told was
    // accepted arrives (it sends again what got 503).
    tokio::time::timeout(Duration::from_secs(120), publish(&url, 200, 1000, 100))
        .await
        .expect("the publisher was served during the attack");

    let started = Instant::now();
    let mut answers = Vec::new();
    for a in attackers {
        answers.push(a.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    sampler.await.expect("RSS stayed under the bound");
    assert!(
        !answers.contains(&Some(0)),
        "every slow body was cut off by the agent: {answers:?} after {:?}",
        started.elapsed()
    );
    assert!(!answers.contains(&Some(202)), "{answers:?}");
    let during = peak.load(Ordering::SeqCst);

    receiver.wait_for(1200, Duration::from_secs(30)).await;
    receiver.assert_exactly_once(1200);

    let metrics = common::get(&format!("http://127.0.0.1:{api}/metrics")).await.text().await.unwrap();
    let count = |reason: &str| {
        common::metric(
            &metrics,
            &format!(
                "hostwatch_component_errors_total{{component_id=\"apps\",component_kind=\"source\",component_type=\"ingest\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(count("body_memory") + count("body_timeout") >= 40.0, "{metrics}");

    // The memory goes back once they are gone.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut after = rss_bytes(pid);
    while after > baseline + 16 * MIB {
        assert!(
            Instant::now() < deadline,
            "RSS {} MiB did not fall back near the baseline of {} MiB (peak {} MiB)",
            after / MIB,
            baseline / MIB,
            during / MIB
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = rss_bytes(pid);
    }
    eprintln!(
        "RSS: baseline {} MiB, peak during the attack {} MiB, after {} MiB (answers: {} x 503, {} x 408, {} closed)",
        baseline / MIB,
        during / MIB,
        after / MIB,
        answers.iter().filter(|a| **a == Some(503)).count(),
        answers.iter().filter(|a| **a == Some(408)).count(),
        answers.iter().filter(|a| a.is_none()).count(),
    );
    assert!(agent.child_alive());
}

/// A client trickling its request head is closed after `header_timeout`,
/// one that sends nothing too, and others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_closed_after_header_timeout() {
    let receiver = Receiver::start(Mode::Accept).await;
    let (_agent, port, _) = start(&receiver, "    header_timeout: 1s\n", "");
    let url = format!("http://127.0.0.1:{port}/events");

    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let trickler = tokio::spawn(async move {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let started = Instant::now();
        let mut head = SLOW_HEAD.iter().chain(std::iter::repeat(&b'a'));
        // A byte every 100 ms for 30 s, unless the agent closes first.
        while started.elapsed() < Duration::from_secs(30) {
            let Some(b) = head.next() else { break };
            if s.write_all(&[*b]).await.is_err() || closed_by_peer(&mut s, Duration::from_millis(100)).await {
                return Some(started.elapsed());
            }
        }
        None
    });

    publish(&url, 0, 100, 10).await;
    let closed_after = trickler.await.unwrap();
    assert!(closed_after.is_some(), "the agent kept a trickling head open for 30 s");
    assert!(closed_by_peer(&mut silent, Duration::from_secs(10)).await, "a silent connection stays open");
    receiver.wait_for(100, Duration::from_secs(30)).await;
    receiver.assert_exactly_once(100);
}

/// Beyond `max_connections`, a connection gets 503 and is closed; the ones
/// inside the limit are served, and room comes back when one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_503() {
    let receiver = Receiver::start(Mode::Accept).await;
    let (_agent, port, api) = start(&receiver, "    max_connections: 4\n    header_timeout: 30s\n", "");
    let url = format!("http://127.0.0.1:{port}/events");

    // The connection that saw the agent listen has gone.
    wait_for_connections(api, 0).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(SLOW_HEAD).await.unwrap();
        held.push(s);
    }
    wait_for_connections(api, 4).await;
    let client = common::client();
    let r = client.post(&url).body(r#"{"type":"x","data":{"seq":99}}"#).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");

    // The ones inside are served.
    let mut first = held.remove(0);
    let body = r#"{"type":"test.event","data":{"seq":0,"message":"seq=0"}}"#;
    let rest = format!("x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    first.write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(status_of(&mut first, Duration::from_secs(10)).await, Some(202));
    drop(first);

    // Its place is free again (once the agent has seen it close).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .post(&url)
            .body(r#"{"type":"test.event","data":{"seq":1,"message":"seq=1"}}"#)
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "no connection was served after one closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.wait_for(2, Duration::from_secs(30)).await;
    receiver.assert_exactly_once(2);
}

/// Waits until the agent reports `n` open ingest connections.
async fn wait_for_connections(api: u16, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = common::get(&format!("http://127.0.0.1:{api}/metrics")).await.text().await.unwrap();
        let open = common::metric(&text, "hostwatch_ingest_connections{");
        if open == Some(n as f64) {
            return;
        }
        assert!(Instant::now() < deadline, "{open:?} connections open, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `auth: {bearer}`: 401 without the token or with a wrong one, accepted
/// with it; the same for `POST /reload` on the API, while `/health` stays
/// open. The tokens never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_ingest_and_reload() {
    let receiver = Receiver::start(Mode::Accept).await;
    let (mut agent, port, api) =
        start(&receiver, "    auth: {bearer: ingest-T0ken}\n", "  auth: {bearer: api-S3cret}\n");
    let url = format!("http://127.0.0.1:{port}/events");
    let client = common::client();
    let body = r#"{"type":"test.event","data":{"seq":0,"message":"seq=0"}}"#;

    let r = client.post(&url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = client.post(&url).bearer_auth("ingest-T0ke").body(body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.post(&url).bearer_auth("api-S3cret").body(body).send().await.unwrap();
    assert_eq!(r.status(), 401, "the API's token is not the ingest's");
    let r = client.post(&url).bearer_auth("ingest-T0ken").body(body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    receiver.wait_for(1, Duration::from_secs(30)).await;
    receiver.assert_exactly_once(1);

    let reload = format!("http://127.0.0.1:{api}/reload");
    let r = client.post(&reload).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = client.post(&reload).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(common::get(&format!("http://127.0.0.1:{api}/health")).await.status(), 200);
    assert_eq!(common::get(&format!("http://127.0.0.1:{api}/metrics")).await.status(), 200);
    let r = client.post(&reload).bearer_auth("api-S3cret").send().await.unwrap();
    assert_eq!(r.status(), 202);
    agent.wait_log(&["the config did not change"], Duration::from_secs(20));
    let logs = agent.logs();
    assert!(!logs.contains("T0ken") && !logs.contains("S3cret"), "{logs}");
}

/// `tls: {cert, key}`: curl publishes over HTTPS, trusting the test's CA;
/// plain HTTP and a silent client get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_curl() {
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let extra =
        format!("    header_timeout: 1s\n    tls: {{cert: {}, key: {}}}\n", cert.display(), key.display());
    let (_agent, port, _) = start(&receiver, &extra, "");

    let curl = |scheme: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert"])
            .arg(&cert)
            .args(["-H", "content-type: application/json", "--data"])
            .arg(r#"{"type":"test.event","data":{"seq":0,"message":"seq=0"}}"#)
            .arg(format!("{scheme}://127.0.0.1:{port}/events"))
            .output()
            .expect("curl")
    };
    let out = curl("https");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202", "{}", String::from_utf8_lossy(&out.stderr));
    let out = curl("http");
    assert_ne!(String::from_utf8_lossy(&out.stdout), "202");

    // No handshake within header_timeout: closed.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(closed_by_peer(&mut silent, Duration::from_secs(10)).await, "a silent TLS client stays open");

    receiver.wait_for(1, Duration::from_secs(30)).await;
    receiver.assert_exactly_once(1);
}

/// `validate` warns (exit 0) of an ingest endpoint or an API that other
/// hosts reach without `auth`, and refuses TLS files that do not load.
#[test]
fn validate_warns_of_open_endpoints() {
    let config = |ingest: &str, api: &str| {
        format!(
            "api:\n  address: {api}\nsources:\n  apps:\n    type: ingest\n    address: {ingest}\nsinks:\n  out:\n    type: console\n    inputs: [apps]\n"
        )
    };
    let (code, stderr) = common::validate(&config("0.0.0.0:8687", "'[::]:8686'"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: sources.apps: listens on 0.0.0.0:8687, beyond this host, without `auth`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: api: listens on [::]:8686, beyond this host, without `auth`"),
        "{stderr}"
    );

    let (code, stderr) = common::validate(&config("127.0.0.1:8687", "127.0.0.1:8686"));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let guarded = config(
        "0.0.0.0:8687\n    auth: {bearer: tok-ingest-9x}",
        "0.0.0.0:8686\n  auth: {bearer: tok-api-7y}",
    );
    let (code, stderr) = common::validate(&guarded);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!stderr.contains("tok-ingest-9x") && !stderr.contains("tok-api-7y"));

    let (code, stderr) =
        common::validate(&config("127.0.0.1:8687\n    auth: {bearer: ''}", "127.0.0.1:8686"));
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("`auth.bearer` is empty"), "{stderr}");

    let missing = config(
        "127.0.0.1:8687\n    tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}",
        "127.0.0.1:8686",
    );
    let (code, stderr) = common::validate(&missing);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("cannot read /nonexistent/cert.pem"), "{stderr}");
}
