//! Reloading the config on SIGHUP or `POST /reload`: a sink's URL changed in
//! the middle of a stream loses nothing and repeats nothing; a config that
//! does not validate leaves the running pipeline as it was.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Agent, LogWriter, Mode, Receiver, free_port};

fn config(dir: &Path, url: &str, api: u16) -> String {
    format!(
        "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:{api}\"}}\nsources:\n  logs:\n    type: file\n    include: [\"{}/app.log*\"]\nsinks:\n  out:\n    type: http\n    inputs: [logs]\n    url: {url}\n",
        dir.display()
    )
}

fn config_path(agent: &Agent) -> std::path::PathBuf {
    agent.data_dir().parent().unwrap().join("agent.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_in_the_middle_of_a_stream_loses_and_repeats_nothing() {
    const LINES: u64 = 200_000;
    let a = Receiver::start(Mode::Accept).await;
    let b = Receiver::start(Mode::Accept).await;
    a.count_only();
    b.count_only();
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let mut agent = Agent::start(&config(dir.path(), &a.url(), api));
    agent.wait_ready(api);
    let writer = LogWriter { rate: 50_000.0, ..LogWriter::new(&dir.path().join("app.log")) };
    let writing = tokio::task::spawn_blocking(move || writer.write(0, LINES));
    tokio::time::sleep(Duration::from_millis(1500)).await;

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
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let api = free_port();
    let mut agent = Agent::start(&config(dir.path(), &a.url(), api));
    agent.wait_ready(api);
    let log = dir.path().join("app.log");
    LogWriter::new(&log).write(0, 1000);
    a.wait_for_unique(1000, Duration::from_secs(20)).await;

    let path = config_path(&agent);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("type: http", "type: htp")).unwrap();
    // Through the API this time.
    let answer = common::client().post(format!("http://127.0.0.1:{api}/reload")).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.logs().contains("the new config is refused") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The error names the line and column.
    assert!(agent.logs().contains("agent.yaml:"), "{}", agent.logs());
    LogWriter::new(&log).write(1000, 1000);
    a.wait_for_unique(2000, Duration::from_secs(20)).await;
    a.assert_exactly_once(2000);
    assert!(agent.child_alive());
}
