//! A stop that times out with the sink down: the log says exactly how many
//! events held in memory were not delivered.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Mode, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_times_out_counts_every_event_it_drops() {
    const EVENTS: u64 = 35;
    let receiver = Receiver::start(Mode::FailEvery(1)).await;
    // Events wait in the transform's input, the sink's buffer, a batch being
    // built and requests being retried.
    let config = format!(
        "data_dir: {{data_dir}}\nshutdown_timeout: 1s\napi: {{address: \"127.0.0.1:0\"}}\n\
         sources:\n  apps: {{type: ingest, address: \"127.0.0.1:0\"}}\n\
         transforms:\n  keep:\n    type: filter\n    inputs: [apps]\n    condition: 'type != \"x\"'\n\
         sinks:\n  out:\n    type: http\n    inputs: [keep]\n    url: {}\n    \
         batch: {{max_events: 4, timeout: 50ms}}\n    buffer: {{type: memory, max_events: 10}}\n",
        receiver.url()
    );
    let mut agent = Agent::start(&config);
    agent.ready();
    let url = agent.ingest_url("apps");
    let client = common::client();
    for seq in 0..EVENTS {
        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .body(common::test_event(seq).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 202, "event {seq}: {}", agent.logs());
    }
    // Every request slot is busy retrying before the stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.failed() < 4 {
        assert!(Instant::now() < deadline, "the sink was not retrying:\n{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let logs = agent.logs();
    let line =
        logs.lines().find(|l| l.contains("shutdown_timeout reached")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("ERROR") && line.contains(&format!("undelivered_events={EVENTS} ")), "{logs}");
    assert_eq!(receiver.unique(), 0);
}
