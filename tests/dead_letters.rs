//! Refusals against a real HTTP receiver: refused credentials hold the data
//! until they are fixed; batches refused for their content become dead
//! letters, bounded in size and age, listed and sent again by
//! `hostwatch dead-letters`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Agent, BIN, Extra, LogWriter, Mode, Receiver, file_to_http, free_port, metrics, wait_until};
use serde_json::Value;

/// A file source over `dir/app.log` to the receiver, with extra sink settings.
fn config(dir: &Path, receiver: &Receiver, sink_extra: &str) -> String {
    let include = format!("{}/app.log", dir.display());
    file_to_http(&include, &receiver.url(), Extra { sink: sink_extra, ..Extra::default() })
}

async fn health(api: u16) -> (u16, Value) {
    let r = common::get(&format!("http://127.0.0.1:{api}/health")).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

const DEAD_LETTERED: &str =
    r#"hostwatch_events_dead_lettered_total{component_id="out",component_kind="sink",component_type="http"}"#;

fn dead_dir(agent: &Agent) -> PathBuf {
    agent.data_dir().join("dead").join("out")
}

/// The dead letters' body files, oldest first.
fn letters(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".meta.json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let (stem, _) = name.split_once('.').unwrap();
            let (ms, n) = stem.split_once('-').unwrap();
            (ms.parse().unwrap(), n.parse().unwrap(), p)
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, _, p)| p).collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// The events of an NDJSON dead letter.
fn events_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn seq(e: &Value) -> u64 {
    let m = e["data"]["message"].as_str().unwrap();
    m.rsplit("seq=").next().unwrap().parse().unwrap()
}

fn dead_letters_cmd(agent: &Agent, action: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["dead-letters", action, "--sink", "out", "--config"])
        .arg(agent.dir.path().join("agent.yaml"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_hold_the_data_until_fixed() {
    let receiver = Receiver::start(Mode::Unauthorized).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    LogWriter::new(&dir.path().join("app.log")).write(0, 5000);
    let sink = "    batch: {max_events: 100, timeout: 100ms}\n    \
                request: {retry_initial_backoff: 20ms, retry_max_backoff: 200ms}\n";
    let mut agent = Agent::start(&config(dir.path(), &receiver, sink));
    let api = agent.api();

    // Many refusals: each batch is tried again and again.
    wait_until("50 refused requests", Duration::from_secs(30), async || receiver.failed() >= 50).await;
    let (code, body) = health(api).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let out = &body["sinks"]["out"];
    assert_eq!(out["state"], "auth_failed", "{body}");
    assert!(out["last_error"].as_str().unwrap().contains("credentials (401)"), "{body}");
    assert!(out["since"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(!dead_dir(&agent).exists(), "nothing is dead-lettered: {:?}", letters(&dead_dir(&agent)));
    let logs = agent.logs();
    let errors = logs.lines().filter(|l| l.contains("ERROR")).count();
    assert!((1..=2).contains(&errors), "{errors} ERROR lines for {} refusals:\n{logs}", receiver.failed());
    assert!(logs.contains("check the sink's auth/headers"), "{logs}");

    // The credentials are fixed: every line arrives, none lost.
    receiver.set_mode(Mode::Accept);
    receiver.wait_for_unique(5000, Duration::from_secs(60)).await;
    receiver.assert_exactly_once(5000);
    wait_until("running again", Duration::from_secs(10), async || {
        health(api).await.1["sinks"]["out"]["state"] == "running"
    })
    .await;
    assert!(agent.logs().contains("accepts the agent's credentials again"), "{}", agent.logs());
    assert!(!dead_dir(&agent).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_stay_within_max_size_the_oldest_deleted_first() {
    let receiver = Receiver::start(Mode::Refuse).await;
    let dir = tempfile::tempdir().unwrap();
    LogWriter::new(&dir.path().join("app.log")).write(0, 400);
    // One batch in flight at a time, so that letters are written in the
    // order of the lines; each letter is about 3 KB.
    let sink = "    batch: {max_events: 10, timeout: 50ms}\n    \
                request: {concurrency: 1}\n    dead_letter: {max_size: 16KiB}\n";
    let mut agent = Agent::start(&config(dir.path(), &receiver, sink));
    let api = agent.api();
    wait_until("400 events dead-lettered", Duration::from_secs(60), async || {
        common::metric(&metrics(api).await, DEAD_LETTERED) == Some(400.0)
    })
    .await;

    let dead = dead_dir(&agent);
    assert!(dir_bytes(&dead) <= 16 << 10, "{} bytes", dir_bytes(&dead));
    let kept = letters(&dead);
    assert!(!kept.is_empty() && kept.len() < 40, "{} letters kept", kept.len());
    // What is left is the newest: the last lines, in order, up to 399.
    let seqs: Vec<u64> = kept.iter().flat_map(|p| events_in(p)).map(|e| seq(&e)).collect();
    let first = 400 - seqs.len() as u64;
    assert_eq!(seqs, (first..400).collect::<Vec<_>>());
    let text = metrics(api).await;
    let deleted = common::metric(
        &text,
        r#"hostwatch_dead_letters_deleted_total{component_id="out",component_kind="sink",component_type="http",reason="size"}"#,
    );
    // Each refused request was one letter.
    assert_eq!(deleted, Some((receiver.requests() as usize - kept.len()) as f64), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_older_than_max_age_are_deleted() {
    let receiver = Receiver::start(Mode::Refuse).await;
    let dir = tempfile::tempdir().unwrap();
    LogWriter::new(&dir.path().join("app.log")).write(0, 30);
    let sink = "    batch: {max_events: 10, timeout: 50ms}\n    dead_letter: {max_age: 1s}\n";
    let mut agent = Agent::start(&config(dir.path(), &receiver, sink));
    let api = agent.api();
    let dead = dead_dir(&agent);
    wait_until("a dead letter", Duration::from_secs(30), async || !letters(&dead).is_empty()).await;
    wait_until("30 events dead-lettered", Duration::from_secs(30), async || {
        common::metric(&metrics(api).await, DEAD_LETTERED) == Some(30.0)
    })
    .await;
    let age = r#"hostwatch_dead_letters_deleted_total{component_id="out",component_kind="sink",component_type="http",reason="age"}"#;
    wait_until("every letter expired", Duration::from_secs(30), async || {
        common::metric(&metrics(api).await, age) == Some(receiver.requests() as f64)
    })
    .await;
    assert_eq!(std::fs::read_dir(&dead).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_with_their_ids() {
    let receiver = Receiver::start(Mode::Refuse).await;
    let dir = tempfile::tempdir().unwrap();
    LogWriter::new(&dir.path().join("app.log")).write(0, 50);
    let sink = "    batch: {max_events: 10, timeout: 50ms}\n    compression: gzip\n    encoding: json\n";
    let mut agent = Agent::start(&config(dir.path(), &receiver, sink));
    let api = agent.api();
    let dead = dead_dir(&agent);
    wait_until("50 events dead-lettered", Duration::from_secs(30), async || {
        common::metric(&metrics(api).await, DEAD_LETTERED) == Some(50.0)
    })
    .await;
    let n = letters(&dead).len();

    let (code, out, err) = dead_letters_cmd(&agent, "list");
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), n + 1, "{out}");
    let mut listed = 0;
    for l in &lines[..n] {
        assert!(l.contains("status 400"), "{l}");
        listed += l.split("  ").nth(1).unwrap().strip_suffix(" events").unwrap().parse::<u64>().unwrap();
    }
    assert_eq!(listed, 50, "{out}");
    assert!(lines[n].starts_with(&format!("{n} dead letters")), "{out}");

    // Still refused: each letter is kept, and the exit code says so.
    let (code, out, err) = dead_letters_cmd(&agent, "replay");
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("400"), "{err}");
    assert_eq!(letters(&dead).len(), n);

    let mut ids: Vec<String> = Vec::new();
    for p in letters(&dead) {
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()),
            &mut text,
        )
        .unwrap();
        let batch: Vec<Value> = serde_json::from_slice(&text).unwrap();
        ids.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(ids.len(), 50);

    // The cause is fixed: the agent is stopped and the letters go again.
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    receiver.set_mode(Mode::Accept);
    let (code, out, err) = dead_letters_cmd(&agent, "replay");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{n} dead letters sent (50 events), 0 kept")), "{out}");
    let events = receiver.events();
    common::assert_exactly_once(
        &events.iter().map(|e| serde_json::json!({"data": {"seq": seq(e)}})).collect::<Vec<_>>(),
        50,
    );
    let mut got: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    assert_eq!(std::fs::read_dir(&dead).unwrap().count(), 0);
}

/// A broker's refusal of the credentials (Redis `WRONGPASS` for an ACL user
/// that does not exist, RabbitMQ `ACCESS_REFUSED`, Mosquitto's CONNACK "not
/// authorized", NATS "authorization violation") holds the data too, and is
/// logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_the_credentials_holds_the_data() {
    // A Mosquitto of the test's own that wants a password.
    let mosquitto_dir = tempfile::tempdir().unwrap();
    let passwords = mosquitto_dir.path().join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["agent", "right"])
        .status()
        .unwrap();
    assert!(made.success());
    let mqtt_port = free_port();
    let conf = mosquitto_dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {mqtt_port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    )
    .unwrap();
    let _mosquitto = Killed(Command::new("mosquitto").arg("-c").arg(&conf).spawn().unwrap());
    wait_until("mosquitto", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).is_ok()
    })
    .await;
    // And a NATS server that wants one.
    let nats_port = free_port();
    let _nats = Killed(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &nats_port.to_string(), "--user", "agent", "--pass", "right"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("nats-server", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_ok()
    })
    .await;
    let nats = format!(
        "    type: nats\n    url: \"nats://agent:wrong@127.0.0.1:{nats_port}\"\n    subject: hostwatch-auth-test\n    jetstream: false\n"
    );
    let mqtt = format!(
        "    type: mqtt\n    url: \"mqtt://agent:wrong@127.0.0.1:{mqtt_port}\"\n    topic: hostwatch-auth-test\n"
    );
    for sink in [
        nats.as_str(),
        mqtt.as_str(),
        "    type: redis\n    url: \"redis://hostwatch-nobody:wrong@127.0.0.1:6379/0\"\n    key: hostwatch-auth-test\n",
        "    type: amqp\n    url: \"amqp://hostwatch-nobody:wrong@127.0.0.1:5672/%2f\"\n    exchange: \"\"\n    routing_key: hostwatch-auth-test\n",
    ] {
        let config = format!(
            r#"
data_dir: {{data_dir}}
api:
  address: 127.0.0.1:0
sources:
  gen:
    type: generator
    rate: 0
    count: 100
sinks:
  out:
    inputs: [gen]
    request: {{timeout: 2s, retry_initial_backoff: 20ms, retry_max_backoff: 100ms}}
{sink}"#
        );
        let mut agent = Agent::start(&config);
        let api = agent.api();
        wait_until("auth_failed", Duration::from_secs(30), async || {
            let r = common::client().get(format!("http://127.0.0.1:{api}/health")).send().await;
            match r {
                Ok(r) => r.json::<Value>().await.unwrap()["sinks"]["out"]["state"] == "auth_failed",
                Err(_) => false,
            }
        })
        .await;
        wait_until("10 attempts", Duration::from_secs(30), async || {
            common::metric(&metrics(api).await, "hostwatch_retries_total{component_id=\"out\"").unwrap_or(0.0)
                >= 10.0
        })
        .await;
        let logs = agent.logs();
        assert_eq!(logs.lines().filter(|l| l.contains("ERROR")).count(), 1, "{logs}");
        assert!(logs.contains("check the sink's user, password or token"), "{logs}");
        assert!(!dead_dir(&agent).exists());
        let text = metrics(api).await;
        assert_eq!(
            common::metric(&text, "hostwatch_events_sent_total{component_id=\"out\"").unwrap_or(-1.0),
            0.0,
            "{text}"
        );
    }
}

/// A process of the test's own, stopped when the test ends (or fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
