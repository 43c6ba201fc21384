//! `/metrics` read by Prometheus's own parser (`promtool check metrics`,
//! Debian's `prometheus` package): with two components of every type, each
//! metric family is written once, whatever number of components add to it.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{Agent, Mode, Receiver, free_port};

/// Two of every component type that runs on loopback (sniffing needs root,
/// which the tests have).
fn config(dir: &std::path::Path, url: &str) -> String {
    let d = dir.display();
    let mut sources = String::new();
    let mut transforms = String::new();
    let mut sinks = String::new();
    for i in 1..=2 {
        // Where nothing listens: the agent takes ports of its choosing.
        let upstream = free_port();
        sources.push_str(&format!(
            "  agent{i}: {{type: agent}}\n\
             \x20 file{i}: {{type: file, include: [\"{d}/{i}.log\"]}}\n\
             \x20 fs{i}: {{type: fs_watch, paths: [\"{d}\"]}}\n\
             \x20 gen{i}: {{type: generator, rate: 10}}\n\
             \x20 host{i}: {{type: host, interval: 1s}}\n\
             \x20 sniff{i}: {{type: http_capture, mode: sniff, interface: lo, ports: [{upstream}]}}\n\
             \x20 proxy{i}: {{type: http_capture, mode: proxy, listen: \"127.0.0.1:0\", upstream: \"127.0.0.1:{upstream}\"}}\n\
             \x20 ingest{i}: {{type: ingest, address: \"127.0.0.1:0\"}}\n"
        ));
        transforms.push_str(&format!(
            "  dedupe{i}: {{type: dedupe, inputs: [file{i}], fields: [data.message]}}\n\
             \x20 filter{i}: {{type: filter, inputs: [dedupe{i}], condition: 'type != \"x\"'}}\n\
             \x20 parse{i}: {{type: parse, inputs: [filter{i}], format: json}}\n\
             \x20 remap{i}: {{type: remap, inputs: [parse{i}], set: {{data.n: '1'}}}}\n\
             \x20 route{i}: {{type: route, inputs: [remap{i}], routes: {{all: 'true'}}}}\n\
             \x20 sample{i}: {{type: sample, inputs: [route{i}.all], rate: 1}}\n\
             \x20 throttle{i}: {{type: throttle, inputs: [sample{i}], limit: 100, window: 1s}}\n"
        ));
        let all = format!(
            "[agent{i}, throttle{i}, route{i}._unmatched, fs{i}, gen{i}, host{i}, sniff{i}, proxy{i}, ingest{i}]"
        );
        sinks.push_str(&format!(
            "  console{i}: {{type: console, inputs: {all}}}\n\
             \x20 file{i}_out: {{type: file, inputs: {all}, path: \"{{data_dir}}/out{i}.ndjson\"}}\n\
             \x20 http{i}: {{type: http, inputs: {all}, url: \"{url}\"}}\n\
             \x20 kafka{i}: {{type: kafka, inputs: {all}, brokers: [\"127.0.0.1:9092\"], topic: metrics-test}}\n\
             \x20 amqp{i}: {{type: amqp, inputs: {all}, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\", exchange: \"\", routing_key: metrics-test}}\n\
             \x20 nats{i}: {{type: nats, inputs: {all}, url: \"nats://127.0.0.1:4222\", subject: metrics-test, jetstream: false}}\n\
             \x20 mqtt{i}: {{type: mqtt, inputs: {all}, url: \"mqtt://127.0.0.1:1883\", topic: metrics-test}}\n\
             \x20 redis{i}: {{type: redis, inputs: {all}, url: \"redis://127.0.0.1:6379/0\", key: metrics-test, maxlen: 100}}\n"
        ));
    }
    format!(
        "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n{sources}transforms:\n{transforms}sinks:\n{sinks}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_two_of_every_component_type_parse_strictly() {
    let promtool = std::process::Command::new("promtool").arg("--version").output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is missing: `apt-get install prometheus` (scripts/test installs it)"
    );
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=2 {
        std::fs::write(dir.path().join(format!("{i}.log")), "{\"a\": 1}\n").unwrap();
    }
    let config = config(dir.path(), &receiver.url());
    let (code, stderr) = common::validate(&config.replace("{data_dir}", &dir.path().display().to_string()));
    assert_eq!(code, 0, "{stderr}\n{config}");
    let mut agent = Agent::start(&config);
    let api = agent.ready();

    // Every component has registered its own metrics once both file
    // sources and both sniffers report theirs.
    let url = format!("http://127.0.0.1:{api}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = common::get(&url).await.text().await.unwrap();
        let both = |name: &str| text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).count() == 2;
        if both("hostwatch_files_watched") && both("hostwatch_http_capture_packets_total") {
            break text;
        }
        assert!(Instant::now() < deadline, "not every component reports:\n{text}\n{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool refuses /metrics: {said}\n{text}");
}
