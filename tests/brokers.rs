//! The broker sinks against the real brokers on loopback (started by
//! `scripts/brokers`), read back with each broker's own client: Kafka
//! (tansu), RabbitMQ, NATS JetStream, Mosquitto and Redis.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, LogWriter, free_port, metric, metrics, wait_until};
use serde_json::Value;

const KAFKA: &str = "127.0.0.1:9092";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS: &str = "nats://127.0.0.1:4222";
const MQTT: &str = "mqtt://127.0.0.1:1883";
const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    format!("{prefix}{}x{now}x{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// One message as a broker's own client read it.
#[derive(Debug, Clone)]
struct Msg {
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.value)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.value)))
    }
}

/// The sequence numbers of structured-mode messages, checked to be
/// CloudEvents from the generator.
fn structured_seqs(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| {
            let e = m.json();
            assert_eq!(e["specversion"], "1.0", "{e}");
            assert_eq!(e["type"], "hostwatch.generated", "{e}");
            assert!(e["source"].as_str().unwrap().starts_with("hostwatch://"), "{e}");
            assert_eq!(e["id"].as_str().map(str::len), Some(36), "{e}");
            assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
            e["data"]["seq"].as_u64().unwrap()
        })
        .collect()
}

/// The same for binary mode: attributes in headers named with `prefix`,
/// the value the event's data.
fn binary_seqs(msgs: &[Msg], prefix: &str, content_type: &str) -> Vec<u64> {
    msgs.iter()
        .map(|m| {
            let h = |name: &str| m.headers.get(&format!("{prefix}{name}")).cloned();
            assert_eq!(h("specversion").as_deref(), Some("1.0"), "{:?}", m.headers);
            assert_eq!(h("type").as_deref(), Some("hostwatch.generated"), "{:?}", m.headers);
            assert!(h("source").unwrap().starts_with("hostwatch://"), "{:?}", m.headers);
            assert_eq!(h("id").map(|s| s.len()), Some(36), "{:?}", m.headers);
            assert!(h("time").unwrap().ends_with('Z'));
            assert_eq!(
                m.headers.get(content_type).map(String::as_str),
                Some("application/json"),
                "{:?}",
                m.headers
            );
            let data = m.json();
            assert!(data.get("specversion").is_none(), "the value is the data only: {data}");
            data["seq"].as_u64().unwrap()
        })
        .collect()
}

fn assert_exactly(seqs: &[u64], n: u64) {
    let set: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(set.len(), seqs.len(), "{} duplicates", seqs.len() - set.len());
    let missing: Vec<u64> = (0..n).filter(|s| !set.contains(s)).collect();
    assert!(missing.is_empty(), "{} missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert_eq!(set.len() as u64, n);
}

fn assert_none_lost(seqs: &[u64], n: u64) {
    let set: HashSet<u64> = seqs.iter().copied().collect();
    eprintln!("{} of {n} events, {} repeated", set.len(), seqs.len() - set.len());
    let missing: Vec<u64> = (0..n).filter(|s| !set.contains(s)).collect();
    assert!(missing.is_empty(), "{} missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
}

/// The generator: `count` events as fast as the sinks take them; the agent
/// exits once every one is delivered.
fn generator_config(count: u64, sinks: &str) -> String {
    format!(
        "data_dir: {{data_dir}}\nsources:\n  gen:\n    type: generator\n    rate: 0\n    count: {count}\nsinks:\n{sinks}"
    )
}

fn run_to_completion(config: &str) {
    let mut agent = Agent::start(config);
    let status = agent.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{}", agent.logs());
}

// === Kafka ===

async fn kafka_create_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = admin
            .create_topics(&[NewTopic::new(topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await;
        match result {
            Ok(r) if r.iter().all(|t| t.is_ok()) => return,
            other => {
                assert!(Instant::now() < deadline, "cannot create topic {topic}: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn kafka_read(brokers: &str, topic: &str, n: usize, within: Duration) -> Vec<Msg> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers as _;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    // Past `n`, on until nothing more comes: a retry may have repeated some.
    let mut idle = 0;
    while (out.len() < n || idle < 2) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers.insert(
                            header.key.to_string(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                if let Some(k) = m.key() {
                    headers.insert("kafka-key".to_string(), String::from_utf8_lossy(k).into_owned());
                }
                out.push(Msg { value: m.payload().unwrap_or_default().to_vec(), headers });
                idle = 0;
            }
            Ok(Err(e)) => eprintln!("kafka reader: {e}"),
            Err(_) => idle += 1,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delivers_exactly_once_structured_and_binary() {
    let (structured, binary) = (unique("hw-s-"), unique("hw-b-"));
    kafka_create_topic(KAFKA, &structured).await;
    kafka_create_topic(KAFKA, &binary).await;
    let n = 10_000;
    run_to_completion(&generator_config(
        n,
        &format!(
            "  s:\n    type: kafka\n    inputs: [gen]\n    brokers: [\"{KAFKA}\"]\n    topic: {structured}\n    key: data.seq\n    compression: zstd\n  b:\n    type: kafka\n    inputs: [gen]\n    brokers: [\"{KAFKA}\"]\n    topic: {binary}\n    mode: binary\n"
        ),
    ));
    let msgs = kafka_read(KAFKA, &structured, n as usize, Duration::from_secs(60)).await;
    assert_exactly(&structured_seqs(&msgs), n);
    for m in &msgs {
        assert_eq!(m.headers["content-type"], "application/cloudevents+json; charset=utf-8");
        assert_eq!(m.headers["kafka-key"], m.json()["data"]["seq"].to_string());
    }
    let msgs = kafka_read(KAFKA, &binary, n as usize, Duration::from_secs(60)).await;
    assert_exactly(&binary_seqs(&msgs, "ce_", "content-type"), n);
}

// === RabbitMQ ===

async fn amqp_channel(url: &str) -> lapin::Channel {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
    conn.create_channel().await.unwrap()
}

async fn amqp_declare(url: &str, queue: &str) {
    let ch = amqp_channel(url).await;
    let options = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), options, Default::default()).await.unwrap();
}

async fn amqp_read(url: &str, queue: &str, n: usize, within: Duration) -> Vec<Msg> {
    let ch = amqp_channel(url).await;
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut empty = false;
    while (out.len() < n || !empty) && Instant::now() < deadline {
        let options = lapin::options::BasicGetOptions { no_ack: true };
        match ch.basic_get(queue.into(), options).await.unwrap() {
            Some(m) => {
                let d = m.delivery;
                let mut headers = BTreeMap::new();
                if let Some(t) = d.properties.headers() {
                    for (k, v) in t.inner() {
                        let v = match v {
                            lapin::types::AMQPValue::LongString(s) => s.to_string(),
                            other => format!("{other:?}"),
                        };
                        headers.insert(k.to_string(), v);
                    }
                }
                if let Some(ct) = d.properties.content_type() {
                    headers.insert("content-type".to_string(), ct.to_string());
                }
                if let Some(mode) = d.properties.delivery_mode() {
                    headers.insert("delivery-mode".to_string(), mode.to_string());
                }
                out.push(Msg { value: d.data, headers });
                empty = false;
            }
            None => {
                empty = true;
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_delivers_exactly_once_structured_and_binary() {
    let (structured, binary) = (unique("hw-s-"), unique("hw-b-"));
    amqp_declare(AMQP, &structured).await;
    amqp_declare(AMQP, &binary).await;
    let n = 10_000;
    run_to_completion(&generator_config(
        n,
        &format!(
            "  s:\n    type: amqp\n    inputs: [gen]\n    url: \"{AMQP}\"\n    routing_key: {structured}\n  b:\n    type: amqp\n    inputs: [gen]\n    url: \"{AMQP}\"\n    routing_key: {binary}\n    mode: binary\n"
        ),
    ));
    let msgs = amqp_read(AMQP, &structured, n as usize, Duration::from_secs(60)).await;
    assert_exactly(&structured_seqs(&msgs), n);
    assert!(msgs.iter().all(|m| m.headers["delivery-mode"] == "2"), "persistent");
    assert!(msgs.iter().all(|m| m.headers["content-type"] == "application/cloudevents+json; charset=utf-8"));
    let msgs = amqp_read(AMQP, &binary, n as usize, Duration::from_secs(60)).await;
    assert_exactly(&binary_seqs(&msgs, "cloudEvents:", "content-type"), n);
}

// === NATS JetStream ===

/// Creates the stream, retrying while a server that has just started
/// does not answer yet.
async fn nats_stream(url: &str, name: &str, subjects: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = async {
            let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
            let js = async_nats::jetstream::new(client);
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![subjects.to_string()],
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        .await;
        match created {
            Ok(()) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot create the stream {name} on {url}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every message of a stream on `subject`, by sequence.
async fn nats_read(url: &str, stream: &str, subject: &str, n: usize, within: Duration) -> Vec<Msg> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + within;
    let mut stream = js.get_stream(stream).await.unwrap();
    loop {
        let info = stream.info().await.unwrap();
        if info.state.messages as usize >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else { continue };
        if m.subject.as_str() != subject {
            continue;
        }
        let mut headers = BTreeMap::new();
        for (k, values) in m.headers.iter() {
            headers.insert(k.to_string(), values.first().map(|v| v.to_string()).unwrap_or_default());
        }
        out.push(Msg { value: m.payload.to_vec(), headers });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_delivers_exactly_once_structured_and_binary() {
    let name = unique("HW");
    let subjects = format!("{name}.>");
    nats_stream(NATS, &name, &subjects).await;
    let n = 10_000;
    run_to_completion(&generator_config(
        n,
        &format!(
            "  s:\n    type: nats\n    inputs: [gen]\n    url: \"{NATS}\"\n    subject: {name}.s\n  b:\n    type: nats\n    inputs: [gen]\n    url: \"{NATS}\"\n    subject: {name}.b\n    mode: binary\n"
        ),
    ));
    let msgs = nats_read(NATS, &name, &format!("{name}.s"), 2 * n as usize, Duration::from_secs(60)).await;
    assert_exactly(&structured_seqs(&msgs), n);
    assert!(msgs.iter().all(|m| m.headers["content-type"] == "application/cloudevents+json; charset=utf-8"));
    let msgs = nats_read(NATS, &name, &format!("{name}.b"), 2 * n as usize, Duration::from_secs(60)).await;
    assert_exactly(&binary_seqs(&msgs, "ce-", "content-type"), n);
}

// === MQTT ===

/// A persistent QoS 1 subscriber: collects what arrives on `filter`.
struct MqttReader {
    got: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
    client: rumqttc::AsyncClient,
    /// A topic under the filter, for the marker that ends a read.
    marker_topic: String,
}

impl MqttReader {
    async fn start(port: u16, filter: &str, client_id: &str) -> MqttReader {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(false).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let sink = got.clone();
        client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock()
                            .unwrap()
                            .push(Msg { value: p.payload.to_vec(), headers: BTreeMap::new() });
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), subscribed).await.unwrap().unwrap();
        let marker_topic = format!("{}/end-of-read", filter.trim_end_matches('#').trim_end_matches('/'));
        MqttReader { got, task, client, marker_topic }
    }

    /// What arrived once `n` messages have, or `within` has passed: then
    /// a marker of the reader's own is published, and what arrives before
    /// it (a copy sent again, say) is counted too.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Msg> {
        let deadline = Instant::now() + within;
        while self.got.lock().unwrap().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let marker = unique("end-of-read-");
        self.client
            .publish(&self.marker_topic, rumqttc::QoS::AtLeastOnce, false, marker.clone().into_bytes())
            .await
            .unwrap();
        let is_marker = |m: &Msg| m.value == marker.as_bytes();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.got.lock().unwrap().iter().any(is_marker) {
            assert!(Instant::now() < deadline, "the reader's own marker did not come back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got.lock().unwrap().iter().filter(|m| !is_marker(m)).cloned().collect()
    }
}

impl Drop for MqttReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_delivers_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = own_mosquitto(dir.path());
    broker.start().await;
    let topic = unique("hw/");
    let reader = MqttReader::start(port, &format!("{topic}/#"), &unique("reader-")).await;
    let n = 10_000;
    run_to_completion(&generator_config(
        n,
        &format!(
            "  m:\n    type: mqtt\n    inputs: [gen]\n    url: \"mqtt://127.0.0.1:{port}\"\n    topic: \"{topic}/{{type}}\"\n"
        ),
    ));
    let msgs = reader.wait_for(n as usize, Duration::from_secs(60)).await;
    assert_exactly(&structured_seqs(&msgs), n);
}

// === Redis ===

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap()
}

async fn redis_stream(url: &str, key: &str) -> Vec<Msg> {
    let mut conn = redis_connection(url).await;
    let entries: Vec<(String, Vec<Vec<u8>>)> =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let mut headers = BTreeMap::new();
            let mut value = Vec::new();
            for pair in fields.chunks(2) {
                let k = String::from_utf8_lossy(&pair[0]).into_owned();
                if k == "event" || k == "data" {
                    value = pair[1].clone();
                } else {
                    headers.insert(k, String::from_utf8_lossy(&pair[1]).into_owned());
                }
            }
            Msg { value, headers }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_and_list_deliver_exactly_once() {
    let (structured, binary, list) = (unique("hw:s:"), unique("hw:b:"), unique("hw:l:"));
    let n = 10_000;
    run_to_completion(&generator_config(
        n,
        &format!(
            "  s:\n    type: redis\n    inputs: [gen]\n    url: \"{REDIS}\"\n    key: \"{structured}\"\n  b:\n    type: redis\n    inputs: [gen]\n    url: \"{REDIS}\"\n    key: \"{binary}\"\n    encoding: binary\n  l:\n    type: redis\n    inputs: [gen]\n    url: \"{REDIS}\"\n    key: \"{list}\"\n    mode: list\n"
        ),
    ));
    assert_exactly(&structured_seqs(&redis_stream(REDIS, &structured).await), n);
    assert_exactly(&binary_seqs(&redis_stream(REDIS, &binary).await, "", "datacontenttype"), n);
    let mut conn = redis_connection(REDIS).await;
    let items: Vec<Vec<u8>> =
        redis::cmd("LRANGE").arg(&list).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    let msgs: Vec<Msg> = items.into_iter().map(|value| Msg { value, headers: BTreeMap::new() }).collect();
    assert_exactly(&structured_seqs(&msgs), n);
    let _: () =
        redis::cmd("DEL").arg(&structured).arg(&binary).arg(&list).query_async(&mut conn).await.unwrap();
}

// === a file source while the broker is down, and kill -9 ===

/// Lines written while the sink's broker cannot be reached must not move
/// the file checkpoint; after kill -9 and a restart with the broker there,
/// every line arrives.
async fn file_checkpoint_waits_for_the_broker(sink: impl Fn(&str) -> String, down: &str, up: &str) -> String {
    let logs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = |target: &str| {
        format!(
            "data_dir: {}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  logs:\n    type: file\n    include: [\"{}/*.log\"]\nsinks:\n{}",
            data.path().display(),
            logs.path().display(),
            sink(target)
        )
    };
    LogWriter::new(&logs.path().join("app.log")).write(0, 2_000);
    let mut agent = Agent::start(&config(down));
    let api = agent.ready();
    // Every line read, and the sink failing: a checkpoint that did not wait
    // for the broker would have moved.
    wait_until("the lines read and the sink retrying", Duration::from_secs(60), async || {
        let m = metrics(api).await;
        metric(&m, "hostwatch_events_received_total{component_id=\"logs\"").unwrap_or(0.0) >= 2_000.0
            && metric(&m, "hostwatch_retries_total{").unwrap_or(0.0) >= 2.0
    })
    .await;
    let checkpoint = data.path().join("checkpoints/logs.json");
    let offset = |path: &std::path::Path| -> u64 {
        let saved: Value =
            serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or_default();
        saved["files"][0]["offset"].as_u64().unwrap_or(0)
    };
    assert_eq!(offset(&checkpoint), 0, "the checkpoint moved while the broker was down:\n{}", agent.logs());
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));
    let mut agent = Agent::start(&config(up));
    agent.ready();
    let file_len = std::fs::metadata(logs.path().join("app.log")).unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while offset(&checkpoint) < file_len {
        assert!(Instant::now() < deadline, "the checkpoint never reached the end:\n{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.logs()
}

/// The seq of a `log.line` event.
fn line_seqs(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| {
            let e = m.json();
            let text = e["data"]["message"].as_str().unwrap().to_string();
            text.rsplit("seq=").next().unwrap().trim().parse().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_holds_the_file_checkpoint() {
    let topic = unique("hw-f-");
    kafka_create_topic(KAFKA, &topic).await;
    let down = format!("127.0.0.1:{}", free_port());
    let sink = |brokers: &str| {
        format!(
            "  k:\n    type: kafka\n    inputs: [logs]\n    brokers: [\"{brokers}\"]\n    topic: {topic}\n"
        )
    };
    file_checkpoint_waits_for_the_broker(sink, &down, KAFKA).await;
    assert_none_lost(&line_seqs(&kafka_read(KAFKA, &topic, 2_000, Duration::from_secs(30)).await), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_down_holds_the_file_checkpoint() {
    let queue = unique("hw-f-");
    amqp_declare(AMQP, &queue).await;
    let down = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let sink = |url: &str| {
        format!("  a:\n    type: amqp\n    inputs: [logs]\n    url: \"{url}\"\n    routing_key: {queue}\n")
    };
    file_checkpoint_waits_for_the_broker(sink, &down, AMQP).await;
    assert_none_lost(&line_seqs(&amqp_read(AMQP, &queue, 2_000, Duration::from_secs(30)).await), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_holds_the_file_checkpoint() {
    let name = unique("HWF");
    nats_stream(NATS, &name, &format!("{name}.>")).await;
    let down = format!("nats://127.0.0.1:{}", free_port());
    let sink = |url: &str| {
        format!(
            "  n:\n    type: nats\n    inputs: [logs]\n    url: \"{url}\"\n    subject: {name}.lines\n    request: {{timeout: 5s}}\n"
        )
    };
    file_checkpoint_waits_for_the_broker(sink, &down, NATS).await;
    let msgs = nats_read(NATS, &name, &format!("{name}.lines"), 2_000, Duration::from_secs(30)).await;
    assert_none_lost(&line_seqs(&msgs), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_down_holds_the_file_checkpoint() {
    let topic = unique("hwf/");
    let reader = MqttReader::start(1883, &format!("{topic}/#"), &unique("reader-")).await;
    let down = format!("mqtt://127.0.0.1:{}", free_port());
    let sink = |url: &str| {
        format!(
            "  m:\n    type: mqtt\n    inputs: [logs]\n    url: \"{url}\"\n    topic: {topic}/lines\n    request: {{timeout: 5s}}\n"
        )
    };
    file_checkpoint_waits_for_the_broker(sink, &down, MQTT).await;
    assert_none_lost(&line_seqs(&reader.wait_for(2_000, Duration::from_secs(30)).await), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_holds_the_file_checkpoint() {
    let key = unique("hw:f:");
    let down = format!("redis://127.0.0.1:{}/0", free_port());
    let sink = |url: &str| {
        format!("  r:\n    type: redis\n    inputs: [logs]\n    url: \"{url}\"\n    key: \"{key}\"\n")
    };
    file_checkpoint_waits_for_the_broker(sink, &down, REDIS).await;
    assert_none_lost(&line_seqs(&redis_stream(REDIS, &key).await), 2_000);
}

// === outages: a broker of the test's own, down at start and for 10 s ===

/// A broker process the test starts, stops and starts again on its own port.
struct Instance {
    name: &'static str,
    port: u16,
    command: Box<dyn Fn() -> std::process::Command + Send>,
    /// How to stop it when a signal to its process group does not
    /// (rabbitmq-server runs its node under another user and session).
    stop_command: Option<Box<dyn Fn() -> std::process::Command + Send>>,
    child: Option<std::process::Child>,
}

impl Instance {
    fn new(
        name: &'static str,
        port: u16,
        command: impl Fn() -> std::process::Command + Send + 'static,
    ) -> Self {
        Instance { name, port, command: Box::new(command), stop_command: None, child: None }
    }

    fn stopped_by(mut self, command: impl Fn() -> std::process::Command + Send + 'static) -> Self {
        self.stop_command = Some(Box::new(command));
        self
    }

    async fn start(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = (self.command)();
        cmd.process_group(0).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name)));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen on {}", self.name, self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = std::process::Command::new("kill")
                .args(["-s", signal, "--", &format!("-{}", c.id())])
                .status();
        }
    }

    /// Stops it the way a service manager does (SIGTERM), and waits.
    async fn stop(&mut self) {
        if let Some(stop) = &self.stop_command {
            let _ = stop().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
        }
        self.signal("TERM");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{} still listens on {} after it was stopped",
                self.name,
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop_command {
            let _ = stop().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
        }
        self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// 15,000 events at 1,000/s into `sink`, whose broker is down when the
/// agent starts, up until 3,000 more events were delivered,
/// then away again (stopped, or frozen with SIGSTOP when `freeze`) until the
/// sink has retried. `up` runs each time it has started.
async fn outage<F, Fut>(broker: &mut Instance, sink: &str, freeze: bool, up: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let n = 15_000;
    let config = format!(
        "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  gen:\n    type: generator\n    rate: 1000\n    count: {n}\nsinks:\n{sink}    request: {{timeout: 5s, retry_max_backoff: 1s}}\n"
    );
    let mut agent = Agent::start(&config);
    let api = agent.api();
    // The sink is the only one.
    let sink_metric = async |name: &str| {
        let text = metrics(api).await;
        let line = text.lines().find(|l| l.starts_with(name) && l.contains("component_kind=\"sink\""));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let retries = "hostwatch_retries_total";
    // Started, its sink tried the broker, which is down.
    agent.wait_log(&["hostwatch started"], Duration::from_secs(30));
    broker.start().await;
    up().await;
    let sent = sink_metric("hostwatch_events_sent_total").await;
    wait_until("delivery while the broker is up", Duration::from_secs(60), async || {
        sink_metric("hostwatch_events_sent_total").await >= sent + 3_000.0
    })
    .await;
    if freeze {
        broker.signal("STOP");
    } else {
        broker.stop().await;
    }
    let before = sink_metric(retries).await;
    wait_until("a retry while the broker is away", Duration::from_secs(60), async || {
        sink_metric(retries).await >= before + 1.0
    })
    .await;
    if freeze {
        broker.signal("CONT");
    } else {
        broker.start().await;
        up().await;
    }
    let status = agent.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{}", agent.logs());
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().to_path_buf();
    let mut broker = Instance::new("redis-server", port, move || {
        let mut c = std::process::Command::new("redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir"])
            .arg(&d);
        c
    });
    let url = format!("redis://127.0.0.1:{port}/0");
    let sink = format!("  r:\n    type: redis\n    inputs: [gen]\n    url: \"{url}\"\n    key: outage\n");
    let n = outage(&mut broker, &sink, false, || async {}).await;
    assert_none_lost(&structured_seqs(&redis_stream(&url, "outage").await), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().to_path_buf();
    let mut broker = Instance::new("nats-server", port, move || {
        let mut c = std::process::Command::new("nats-server");
        c.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]).arg(&d);
        c
    });
    let url = format!("nats://127.0.0.1:{port}");
    let sink =
        format!("  n:\n    type: nats\n    inputs: [gen]\n    url: \"{url}\"\n    subject: OUTAGE.events\n");
    let n = outage(&mut broker, &sink, false, || nats_stream(&url, "OUTAGE", "OUTAGE.>")).await;
    let msgs = nats_read(&url, "OUTAGE", "OUTAGE.events", n as usize, Duration::from_secs(30)).await;
    assert_none_lost(&structured_seqs(&msgs), n);
}

/// A Mosquitto of the test's own that queues any number of messages for a
/// slow subscriber: the shared one drops past 1,000 (its default
/// `max_queued_messages`) when the test's reader falls behind on a loaded
/// machine, which would look like a loss by the agent.
fn own_mosquitto(dir: &std::path::Path) -> (Instance, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nmax_queued_messages 0\n",
            dir.display()
        ),
    )
    .unwrap();
    let broker = Instance::new("mosquitto", port, move || {
        let mut c = std::process::Command::new("mosquitto");
        c.arg("-c").arg(&conf);
        c
    });
    (broker, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = own_mosquitto(dir.path());
    // The reader's persistent session exists before the agent publishes.
    broker.start().await;
    let reader = MqttReader::start(port, "outage/#", &unique("reader-")).await;
    broker.stop().await;
    let sink = format!(
        "  m:\n    type: mqtt\n    inputs: [gen]\n    url: \"mqtt://127.0.0.1:{port}\"\n    topic: outage/events\n"
    );
    let n = outage(&mut broker, &sink, false, || async {}).await;
    assert_none_lost(&structured_seqs(&reader.wait_for(n as usize, Duration::from_secs(60)).await), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (port, dist) = (free_port(), free_port());
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
    std::fs::write(d.join("enabled_plugins"), "").unwrap();
    std::fs::write(d.join("env.conf"), "").unwrap();
    // rabbitmq-server runs as the rabbitmq user.
    assert!(
        std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&d)
            .status()
            .unwrap()
            .success()
    );
    let node = unique("hwtest");
    let stop_node = node.clone();
    let mut broker = Instance::new("rabbitmq-server", port, move || {
        let mut c = std::process::Command::new("rabbitmq-server");
        c.current_dir(&d)
            .env("RABBITMQ_CONF_ENV_FILE", d.join("env.conf"))
            .env("RABBITMQ_NODENAME", format!("{node}@localhost"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        c
    })
    .stopped_by(move || {
        let mut c = std::process::Command::new("rabbitmqctl");
        c.args(["-n", &format!("{stop_node}@localhost"), "stop"]);
        c
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    // A durable queue, declared before the agent starts.
    broker.start().await;
    amqp_declare(&url, "outage").await;
    broker.stop().await;
    let sink =
        format!("  a:\n    type: amqp\n    inputs: [gen]\n    url: \"{url}\"\n    routing_key: outage\n");
    let n = outage(&mut broker, &sink, false, || async {}).await;
    let msgs = amqp_read(&url, "outage", n as usize, Duration::from_secs(30)).await;
    assert_none_lost(&structured_seqs(&msgs), n);
}

/// tansu keeps its data in memory here, so a stop would lose what it had
/// acknowledged: the broker is frozen (SIGSTOP) for the 10 s instead, which
/// the producer sees as a broker that stopped answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_loses_nothing() {
    let tansu = std::env::var("HOSTWATCH_TANSU")
        .unwrap_or_else(|_| "/var/cache/hostwatch-test/tansu/bin/tansu".to_string());
    assert!(
        std::path::Path::new(&tansu).is_file(),
        "no tansu at {tansu}: run scripts/brokers (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().to_path_buf();
    let mut broker = Instance::new("tansu", port, move || {
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut c = std::process::Command::new(&tansu);
        c.current_dir(&d)
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"]);
        c
    });
    let brokers = format!("127.0.0.1:{port}");
    let sink = format!(
        "  k:\n    type: kafka\n    inputs: [gen]\n    brokers: [\"{brokers}\"]\n    topic: outage\n"
    );
    let n = outage(&mut broker, &sink, true, || kafka_create_topic(&brokers, "outage")).await;
    let msgs = kafka_read(&brokers, "outage", n as usize, Duration::from_secs(60)).await;
    assert_none_lost(&structured_seqs(&msgs), n);
}

/// `validate --connect` asks every sink's broker; one that does not answer
/// is named and the exit code is 69.
#[test]
fn validate_connect_names_the_broker_that_does_not_answer() {
    let down = free_port();
    let config = format!(
        "sources:\n  gen:\n    type: generator\nsinks:\n  up:\n    type: redis\n    inputs: [gen]\n    url: \"{REDIS}\"\n    key: k\n  down:\n    type: nats\n    inputs: [gen]\n    url: \"nats://127.0.0.1:{down}\"\n    subject: s\n  kafka:\n    type: kafka\n    inputs: [gen]\n    brokers: [\"{KAFKA}\"]\n    topic: t\n  amqp:\n    type: amqp\n    inputs: [gen]\n    url: \"{AMQP}\"\n    routing_key: q\n  mqtt:\n    type: mqtt\n    inputs: [gen]\n    url: \"{MQTT}\"\n    topic: t\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["validate", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(69), "{stdout}\n{stderr}");
    for up in ["up", "kafka", "amqp", "mqtt"] {
        assert!(stdout.contains(&format!("sinks.{up}: reachable")), "{stdout}\n{stderr}");
    }
    assert!(stderr.contains("sinks.down: not reachable"), "{stderr}");
    // Without --connect nothing is asked.
    let out =
        std::process::Command::new(common::BIN).args(["validate", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}
