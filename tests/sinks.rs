//! The console and file sinks, fed by generators that stop after a count:
//! the agent delivers everything and exits 0 by itself.

mod common;

use std::time::Duration;

use common::{Agent, assert_exactly_once};

fn lines_of(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn console_prints_every_event_and_the_agent_exits_when_done() {
    let mut agent = Agent::start(
        "data_dir: {data_dir}\nhostname: h1\nsources:\n  gen:\n    type: generator\n    rate: 0\n    count: 2500\n    batch_size: 300\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n",
    );
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", agent.logs());
    let events = lines_of(&agent.output());
    for e in assert_exactly_once(&events, 2500) {
        common::assert_cloudevent(e, "hostwatch://h1/gen", "h1");
        assert_eq!(e["type"], "hostwatch.generated");
    }
}

#[test]
fn console_text_prints_messages() {
    let mut agent = Agent::start(
        "data_dir: {data_dir}\nsources:\n  gen:\n    type: generator\n    rate: 0\n    count: 3\n    message: hi\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n    encoding: text\n",
    );
    assert!(agent.wait_exit(Duration::from_secs(30)).success());
    assert_eq!(agent.output(), "hi seq=0\nhi seq=1\nhi seq=2\n");
}

#[test]
fn file_sink_writes_a_file_per_type_and_day() {
    let mut agent = Agent::start(
        "data_dir: {data_dir}
sources:
  a:
    type: generator
    rate: 0
    count: 1000
    event_type: kind.a
  b:
    type: generator
    rate: 0
    count: 700
    event_type: kind.b
sinks:
  files:
    type: file
    inputs: [a, b]
    path: '{data_dir}/out/%Y-%m-%d/{type}.ndjson'
    batch: {max_events: 128}
",
    );
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let dir = agent.data_dir().join("out").join(day);
    let a = lines_of(&std::fs::read_to_string(dir.join("kind.a.ndjson")).unwrap());
    let b = lines_of(&std::fs::read_to_string(dir.join("kind.b.ndjson")).unwrap());
    assert!(a.iter().all(|e| e["type"] == "kind.a"));
    assert!(b.iter().all(|e| e["type"] == "kind.b"));
    assert_exactly_once(&a, 1000);
    assert_exactly_once(&b, 700);
}

#[test]
fn sample_drops_on_purpose_and_marks_the_rate() {
    let mut agent = Agent::start(
        "data_dir: {data_dir}
sources:
  gen:
    type: generator
    rate: 0
    count: 1000
transforms:
  tenth:
    type: sample
    inputs: [gen]
    one_in: 10
sinks:
  out:
    type: file
    inputs: [tenth]
    path: '{data_dir}/sampled.ndjson'
",
    );
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    let events = lines_of(&std::fs::read_to_string(agent.data_dir().join("sampled.ndjson")).unwrap());
    assert_eq!(events.len(), 100);
    assert!(events.iter().all(|e| e["sampledrate"] == 10));
    let seqs: Vec<u64> = events.iter().map(|e| e["data"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..100).map(|i| i * 10).collect::<Vec<_>>());
}

#[test]
fn fan_out_delivers_to_every_sink() {
    let mut agent = Agent::start(
        "data_dir: {data_dir}
sources:
  gen:
    type: generator
    rate: 0
    count: 3000
sinks:
  one:
    type: file
    inputs: [gen]
    path: '{data_dir}/one.ndjson'
  two:
    type: file
    inputs: [gen]
    path: '{data_dir}/two.ndjson'
    batch: {max_events: 7}
",
    );
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    for name in ["one.ndjson", "two.ndjson"] {
        let events = lines_of(&std::fs::read_to_string(agent.data_dir().join(name)).unwrap());
        assert_exactly_once(&events, 3000);
    }
}
