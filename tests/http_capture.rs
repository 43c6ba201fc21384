//! `http_capture`: a real HTTP server and real clients on loopback, every
//! request one `http.transaction`, whether the agent sits in front of the
//! server (proxy) or captures the packets on `lo` (sniff).

mod common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Agent, free_port};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The service: /ok 200, /missing 404, /fail 500, /chunked a chunked body,
/// /big 10 MiB, /slow after 300ms, /echo the request body's size, /never
/// no answer. Behind the proxy, a request without X-Forwarded-For gets 400.
async fn serve(listener: tokio::net::TcpListener, behind_proxy: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let forwarded = req.headers().get("x-forwarded-for").is_some() || !behind_proxy;
                    let full = |status: u16, body: Vec<u8>| {
                        let mut r = hyper::Response::new(Full::new(Bytes::from(body)).boxed());
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        r
                    };
                    let response: hyper::Response<Body> = match path.as_str() {
                        _ if !forwarded => full(400, b"no x-forwarded-for".to_vec()),
                        "/ok" => {
                            let mut r = full(200, b"fine".to_vec());
                            r.headers_mut()
                                .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
                            r
                        }
                        "/missing" => full(404, b"no".to_vec()),
                        "/fail" => full(500, b"broken".to_vec()),
                        "/big" => full(200, vec![b'x'; 10 << 20]),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            full(200, b"late".to_vec())
                        }
                        "/echo" => {
                            let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                            full(200, n.to_string().into_bytes())
                        }
                        "/chunked" => {
                            let frames = futures_util::stream::iter(
                                ["one ", "two ", "three"]
                                    .map(|s| Ok(Frame::data(Bytes::from_static(s.as_bytes())))),
                            );
                            hyper::Response::new(BodyExt::boxed(StreamBody::new(frames)))
                        }
                        "/never" => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            full(200, Vec::new())
                        }
                        _ => full(404, Vec::new()),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn events(agent: &Agent) -> Vec<Value> {
    agent.file_events("events.ndjson")
}

fn wait_for(agent: &Agent, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let e = events(agent);
        if e.len() >= n {
            return e;
        }
        assert!(Instant::now() < deadline, "{} of {n} transactions:\n{}", e.len(), agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_records_every_transaction_once() {
    every_transaction_once(true).await;
}

/// Sniffing needs CAP_NET_RAW: the suite runs as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniff_records_every_transaction_once() {
    every_transaction_once(false).await;
}

const RECORDING: &str = "    headers: [user-agent, content-type, authorization, x-request-id]\n    transaction_timeout: 3s\n    max_body_bytes: 64\nsinks:\n  out:\n    type: file\n    inputs: [web]\n    path: \"{data_dir}/events.ndjson\"\n    batch: {timeout: 50ms}\n";

async fn every_transaction_once(proxy: bool) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(serve(upstream, proxy));
    let (agent, port) = if proxy {
        proxy_to(&upstream_addr.to_string())
    } else {
        let server = upstream_addr.port();
        let mut agent = Agent::start(&format!(
            "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  web:\n    type: http_capture\n    mode: sniff\n    interface: lo\n    ports: [{server}]\n{RECORDING}"
        ));
        agent.ready();
        (agent, server)
    };
    let base = format!("http://127.0.0.1:{port}");

    // 1,000 requests over keep-alive connections: mixed methods and answers.
    hostwatch::util::tls::install_crypto_provider();
    let client = reqwest::Client::builder().pool_max_idle_per_host(4).build().unwrap();
    let paths = ["/ok", "/missing", "/fail", "/chunked", "/echo"];
    let mut expected = std::collections::HashMap::new();
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let path = paths[(i % 5) as usize];
        let url = format!("{base}{path}?n={i}&token=s3cret");
        let client = client.clone();
        expected.insert(i, path);
        tasks.push(tokio::spawn(async move {
            let req = if path == "/echo" {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(vec![b'y'; 1000 + i as usize])
            } else if i.is_multiple_of(7) {
                client.head(&url)
            } else {
                client.get(&url)
            };
            let res = req
                .header("authorization", "Bearer hunter2")
                .header("x-request-id", i.to_string())
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body = res.bytes().await.unwrap();
            (status, body.len())
        }));
        if i % 50 == 49 {
            for t in tasks.drain(..) {
                let (status, _) = t.await.unwrap();
                assert_ne!(status, 400, "the service saw no X-Forwarded-For");
            }
        }
    }
    // A 10 MiB body, a slow answer, pipelined requests, one never answered.
    let big = client.get(format!("{base}/big")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(big.len(), 10 << 20);
    let slow = client.get(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(slow.status(), 200);
    let pipelined = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /ok?p=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /missing?p=2 HTTP/1.1\r\nHost: a\r\n\r\nGET /ok?p=3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer.matches("HTTP/1.1 ").count()
    })
    .await
    .unwrap();
    assert_eq!(pipelined, 3);
    // Held open until the agent has given up on it (transaction_timeout).
    let mut never = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    never.write_all(b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();

    // 1,000, /big, /slow, three pipelined, /never.
    let total = 1000 + 2 + 3 + 1;
    let agent = tokio::task::spawn_blocking(move || {
        wait_for(&agent, total, Duration::from_secs(30));
        agent
    })
    .await
    .unwrap();
    let mut agent = agent;
    drop(never);
    // Stopped, the agent has written all it will: a transaction recorded
    // twice would be there.
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let all = events(&agent);
    assert_eq!(all.len(), total, "one transaction per request, no more");
    // Exactly one transaction per request.
    let mut seen = std::collections::HashMap::new();
    for e in all.iter().filter(|e| e["data"]["query"].as_str().is_some_and(|q| q.contains("token="))) {
        let n: u32 = e["data"]["query"].as_str().unwrap().split('&').next().unwrap()[2..].parse().unwrap();
        *seen.entry(n).or_insert(0) += 1;
        let d = &e["data"];
        let path = expected[&n];
        assert_eq!(d["path"], path, "{e}");
        assert_eq!(e["subject"], path);
        assert_eq!(e["type"], "http.transaction");
        let status = d["status"].as_u64().unwrap();
        assert_eq!(
            status,
            match path {
                "/missing" => 404,
                "/fail" => 500,
                _ => 200,
            },
            "{e}"
        );
        assert!(d["query"].as_str().unwrap().ends_with("token=[masked]"), "{e}");
        assert_eq!(d["headers"]["request.authorization"], "[redacted]");
        assert_eq!(d["headers"]["request.x-request-id"], n.to_string());
        assert_eq!(d["client_address"], "127.0.0.1");
        assert_eq!(d["server_port"], upstream_addr.port() as u64);
        if !proxy {
            assert_eq!(d["gap"], false, "{e}");
        }
        assert!(d["duration_ms"].as_f64().unwrap() >= 0.0);
        let method = d["method"].as_str().unwrap();
        // Bodies of the asked-for content types, cut at max_body_bytes.
        match path {
            "/ok" if method == "GET" => {
                assert_eq!(d["response_body"], "fine", "{e}");
                assert_eq!(d["response_body_truncated"], false);
            }
            // HEAD: the type is text, the body empty.
            "/ok" => assert_eq!(d["response_body"], "", "{e}"),
            "/echo" => {
                assert_eq!(d["request_body"], "y".repeat(64), "{e}");
                assert_eq!(d["request_body_truncated"], true);
            }
            _ => assert!(d.get("response_body").is_none(), "{e}"),
        }
        if path == "/echo" {
            assert_eq!(method, "POST");
            assert!(d["request_bytes"].as_u64().unwrap() >= 1000 + n as u64, "{e}");
        } else if n.is_multiple_of(7) {
            assert_eq!(method, "HEAD");
        }
        if path == "/chunked" && method == "GET" {
            assert!(d["response_bytes"].as_u64().unwrap() > "one two three".len() as u64, "{e}");
        }
    }
    assert_eq!(seen.len(), 1000, "every request recorded");
    assert!(seen.values().all(|c| *c == 1), "none twice");
    let by_path = |p: &str| all.iter().filter(|e| e["data"]["path"] == p).collect::<Vec<_>>();
    let big = by_path("/big");
    assert_eq!(big.len(), 1);
    assert!(big[0]["data"]["response_bytes"].as_u64().unwrap() > 10 << 20);
    let slow = by_path("/slow");
    assert!(slow[0]["data"]["duration_ms"].as_f64().unwrap() >= 300.0, "{}", slow[0]);
    let pipelined: Vec<_> =
        all.iter().filter(|e| e["data"]["query"].as_str().is_some_and(|q| q.starts_with("p="))).collect();
    let order: Vec<(&str, u64)> = pipelined
        .iter()
        .map(|e| (e["data"]["query"].as_str().unwrap(), e["data"]["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(order, [("p=1", 200), ("p=2", 404), ("p=3", 200)]);
    let never = by_path("/never");
    assert_eq!(never.len(), 1, "{never:?}");
    assert_eq!(never[0]["data"]["status"], Value::Null);
    assert_eq!(never[0]["data"]["error"], "no response");
    // The redacted header's value is nowhere.
    let text = std::fs::read_to_string(agent.data_dir().join("events.ndjson")).unwrap();
    assert!(!text.contains("hunter2"));
    assert!(!text.contains("s3cret"));
}

#[test]
fn sniffing_without_cap_net_raw_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    std::process::Command::new("chmod").arg("777").arg(data.path()).status().unwrap();
    let mut agent = Agent::start_as_nobody(&format!(
        "data_dir: {}\nsources:\n  web:\n    type: http_capture\n    mode: sniff\n    interface: lo\n    ports: [8080]\nsinks:\n  out:\n    type: console\n    inputs: [web]\n",
        data.path().display()
    ));
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let logs = agent.logs();
    assert!(logs.contains("CAP_NET_RAW"), "{logs}");
    assert!(logs.contains("cannot capture on `lo`"), "{logs}");
}

/// A WebSocket upgrade: one transaction (101), then the bytes of the new
/// protocol pass through and are never taken for HTTP.
fn upgrade_then_echo(proxy: bool) {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    // The first connection is upgraded and echoes; later ones get 204.
    std::thread::spawn(move || {
        for (n, s) in server.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read_exact(&mut byte).is_err() {
                    break;
                }
                head.push(byte[0]);
            }
            if n > 0 {
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                continue;
            }
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        }
    });
    let (mut agent, port) = if proxy {
        let mut agent = Agent::start(&format!(
            "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  web:\n    type: http_capture\n    mode: proxy\n    listen: \"127.0.0.1:0\"\n    upstream: \"{server_addr}\"\n{RECORDING}"
        ));
        let port = agent.listening("web").port();
        (agent, port)
    } else {
        let port = server_addr.port();
        let agent = Agent::start(&format!(
            "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  web:\n    type: http_capture\n    mode: sniff\n    interface: lo\n    ports: [{port}]\n{RECORDING}"
        ));
        (agent, port)
    };
    agent.ready();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&answer[..n]));
    // Frames of the new protocol that happen to look like HTTP.
    for frame in [&b"GET /not-http HTTP/1.1\r\n\r\n"[..], b"HTTP/1.1 200 OK\r\n\r\n", b"\x81\x05hello"] {
        s.write_all(frame).unwrap();
        let mut echo = vec![0u8; frame.len()];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(echo, frame);
    }
    drop(s);
    wait_for(&agent, 1, Duration::from_secs(10));
    // An ordinary request after it: recorded after anything the frames
    // would have caused, were they taken for HTTP.
    let mut after = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    after.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut answer = String::new();
    after.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer:?}");
    wait_for(&agent, 2, Duration::from_secs(10));
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let events = self::events(&agent);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["data"]["path"], "/ws");
    assert_eq!(events[0]["data"]["status"], 101);
    assert_eq!(events[1]["data"]["path"], "/after");
}

#[test]
fn proxy_passes_an_upgraded_connection_through() {
    upgrade_then_echo(true);
}

#[test]
fn sniff_reports_an_upgrade_and_ignores_what_follows() {
    upgrade_then_echo(false);
}

/// A proxy in front of the test service on `upstream` (as written in the
/// config), recording to a file; returns the agent and its port.
fn proxy_to(upstream: &str) -> (Agent, u16) {
    let mut agent = Agent::start(&format!(
        "data_dir: {{data_dir}}\nsources:\n  web:\n    type: http_capture\n    mode: proxy\n    listen: \"127.0.0.1:0\"\n    upstream: \"{upstream}\"\n{RECORDING}"
    ));
    let port = agent.listening("web").port();
    (agent, port)
}

/// `upstream` as nginx's `proxy_pass` writes it; a keep-alive request sent
/// after the connection sat idle is timed from its first byte, not from the
/// start of the wait; proxied events carry `gap` like sniffed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_takes_an_http_url_and_times_requests_from_their_first_byte() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(serve(upstream, true));
    let (agent, port) = proxy_to(&format!("http://{upstream_addr}"));
    // Python's http.client: one connection, two requests, 2 s of idle between.
    let script = format!(
        "import http.client, time\n\
         c = http.client.HTTPConnection('127.0.0.1', {port})\n\
         for path in ('/ok?first', '/ok?after-idle'):\n    \
             c.request('GET', path)\n    \
             r = c.getresponse()\n    \
             assert r.status == 200, r.status\n    \
             r.read()\n    \
             if path == '/ok?first': time.sleep(2)\n\
         c.close()\n"
    );
    let out = tokio::process::Command::new("python3").args(["-c", &script]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events =
        tokio::task::spawn_blocking(move || wait_for(&agent, 2, Duration::from_secs(20))).await.unwrap();
    for e in &events {
        assert_eq!(e["data"]["status"], 200, "{e}");
        assert_eq!(e["data"]["gap"], false, "{e}");
        assert_eq!(e["data"]["server_port"], upstream_addr.port() as u64, "{e}");
    }
    let idle = events.iter().find(|e| e["data"]["query"] == "after-idle").unwrap();
    // The service answers at once: the 2 s the connection sat idle before
    // the request are not part of it.
    let ms = idle["data"]["duration_ms"].as_f64().unwrap();
    assert!(ms < 2000.0, "{idle}");
}

/// An upstream that does not answer: the client gets 502, and the request
/// is recorded with that status and the reason.
#[test]
fn proxy_records_a_502_when_the_upstream_cannot_be_reached() {
    let down = free_port();
    let (agent, port) = proxy_to(&format!("127.0.0.1:{down}"));
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/orders?id=7"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    let events = wait_for(&agent, 1, Duration::from_secs(20));
    let d = &events[0]["data"];
    assert_eq!(d["status"], 502, "{d}");
    assert_eq!(d["method"], "GET");
    assert_eq!(d["path"], "/orders");
    assert_eq!(d["gap"], false);
    let error = d["error"].as_str().unwrap();
    assert!(error.contains(&format!("cannot reach the upstream 127.0.0.1:{down}")), "{d}");
    assert!(error.contains("refused"), "{d}");
}

/// Only plain HTTP goes upstream: another scheme is refused by `validate`,
/// with the line and column of the value.
#[test]
fn proxy_upstream_of_another_scheme_is_refused() {
    let (code, stderr) = common::validate(
        "sources:\n  web:\n    type: http_capture\n    mode: proxy\n    listen: 127.0.0.1:8081\n    upstream: https://127.0.0.1:8443\nsinks:\n  out:\n    type: console\n    inputs: [web]\n",
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("agent.yaml:6:15: error: sources.web"), "{stderr}");
    assert!(stderr.contains("not `https://`"), "{stderr}");
    let (code, stderr) = common::validate(
        "sources:\n  web:\n    type: http_capture\n    mode: proxy\n    listen: 127.0.0.1:8081\n    upstream: http://127.0.0.1:8080\nsinks:\n  out:\n    type: console\n    inputs: [web]\n",
    );
    assert_eq!(code, 0, "{stderr}");
}
