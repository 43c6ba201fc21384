//! Events per second and peak memory of each broker sink: the release
//! binary sends N small generator events to one sink as fast as the broker
//! confirms them, and exits once all are delivered. The brokers are the
//! ones `scripts/brokers` runs on loopback (Kafka: a fresh tansu on another
//! port, so that a million messages do not stay in the shared one).
//!
//! cargo build --release && cargo run --release --example sink_throughput -- \
//!     --events 1000000 [kafka amqp nats mqtt redis http-structured http-binary]

use std::time::{Duration, Instant};

const BIN: &str = "target/release/hostwatch";

#[tokio::main]
async fn main() {
    let mut events: u64 = 1_000_000;
    let mut sinks = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = args.next().and_then(|v| v.parse().ok()).expect("--events N"),
            other => sinks.push(other.to_string()),
        }
    }
    if sinks.is_empty() {
        sinks = ["kafka", "amqp", "nats", "mqtt", "redis"].map(String::from).to_vec();
    }
    println!("| sink | events | seconds | events/s | peak RSS MiB | CPU s |");
    println!("|---|---|---|---|---|---|");
    for sink in sinks {
        let (yaml, cleanup) = prepare(&sink).await;
        // The runtime's other workers keep serving the http receiver.
        let (seconds, rss, cpu) = tokio::task::block_in_place(|| run(events, &yaml));
        cleanup.await;
        println!(
            "| {sink} | {events} | {seconds:.2} | {:.0} | {:.1} | {cpu:.2} |",
            events as f64 / seconds,
            rss as f64 / 1024.0
        );
    }
}

type Cleanup = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// The sink's config, with the destination made ready, and how to clean up.
async fn prepare(sink: &str) -> (String, Cleanup) {
    match sink {
        "kafka" => {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("hostwatch-bench-tansu-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            let listener = format!("tcp://127.0.0.1:{port}");
            let tansu = std::env::var("HOSTWATCH_TANSU")
                .unwrap_or_else(|_| "/var/cache/hostwatch-test/tansu/bin/tansu".to_string());
            let mut child = std::process::Command::new(tansu)
                .current_dir(&dir)
                .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start tansu");
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", format!("127.0.0.1:{port}"))
                .create()
                .unwrap();
            admin
                .create_topics(&[NewTopic::new("bench", 1, TopicReplication::Fixed(1))], &AdminOptions::new())
                .await
                .unwrap();
            let yaml = format!(
                "  k:\n    type: kafka\n    inputs: [gen]\n    brokers: [\"127.0.0.1:{port}\"]\n    topic: bench\n"
            );
            (
                yaml,
                Box::pin(async move {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(dir);
                }),
            )
        }
        "amqp" => {
            let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
            let conn = lapin::Connection::connect(url, Default::default()).await.unwrap();
            let ch = conn.create_channel().await.unwrap();
            let options = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
            ch.queue_declare("hostwatch-bench".into(), options, Default::default()).await.unwrap();
            let yaml = format!(
                "  a:\n    type: amqp\n    inputs: [gen]\n    url: \"{url}\"\n    routing_key: hostwatch-bench\n"
            );
            (
                yaml,
                Box::pin(async move {
                    let _ = ch.queue_delete("hostwatch-bench".into(), Default::default()).await;
                }),
            )
        }
        "nats" => {
            let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
            let js = async_nats::jetstream::new(client);
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "HWBENCH".to_string(),
                subjects: vec!["hwbench.>".to_string()],
                ..Default::default()
            })
            .await
            .unwrap();
            let yaml = "  n:\n    type: nats\n    inputs: [gen]\n    url: \"nats://127.0.0.1:4222\"\n    subject: hwbench.events\n".to_string();
            (
                yaml,
                Box::pin(async move {
                    let _ = js.delete_stream("HWBENCH").await;
                }),
            )
        }
        "mqtt" => (
            "  m:\n    type: mqtt\n    inputs: [gen]\n    url: \"mqtt://127.0.0.1:1883\"\n    topic: hwbench/events\n"
                .to_string(),
            Box::pin(async {}),
        ),
        "redis" => (
            "  r:\n    type: redis\n    inputs: [gen]\n    url: \"redis://127.0.0.1:6379/0\"\n    key: hwbench\n"
                .to_string(),
            Box::pin(async {
                let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let _: Result<(), _> = redis::cmd("DEL").arg("hwbench").query_async(&mut conn).await;
            }),
        ),
        // The http sink's single-event encodings, to a local hyper server
        // that reads each request and answers 200.
        "http-structured" | "http-binary" => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                                use http_body_util::BodyExt as _;
                                let _ = req.into_body().collect().await;
                                let empty = http_body_util::Full::new(bytes::Bytes::new());
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(empty))
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            let encoding = &sink["http-".len()..];
            (
                format!(
                    "  out:\n    type: http\n    inputs: [gen]\n    url: http://127.0.0.1:{port}/\n    encoding: {encoding}\n"
                ),
                Box::pin(async move { server.abort() }),
            )
        }
        other => panic!("unknown sink {other}: kafka, amqp, nats, mqtt, redis, http-structured or http-binary"),
    }
}

/// Runs the agent to the end; wall seconds, peak RSS in KiB, CPU seconds.
fn run(events: u64, sink: &str) -> (f64, u64, f64) {
    let dir = std::env::temp_dir().join(format!("hostwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\nlog: {{level: warn}}\nsources:\n  gen:\n    type: generator\n    rate: 0\n    count: {events}\nsinks:\n{sink}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child =
        std::process::Command::new(BIN).args(["run", "--config"]).arg(&config).spawn().expect(BIN);
    let status_path = format!("/proc/{}/status", child.id());
    let stat_path = format!("/proc/{}/stat", child.id());
    let (mut hwm, mut cpu) = (0, 0.0);
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            for line in s.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    hwm = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(hwm);
                }
            }
        }
        if let Ok(s) = std::fs::read_to_string(&stat_path) {
            let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            cpu = (t(11) + t(12)) / 100.0;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the agent failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    (seconds, hwm, cpu)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
