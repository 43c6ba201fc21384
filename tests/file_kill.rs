//! kill -9 while a log is written and rotated: nothing is lost, and what is
//! repeated is only what was delivered but not yet checkpointed. A test
//! binary of its own, so that other tests do not load the machine while it
//! counts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Agent, Extra, LogWriter, Mode, Receiver, Rotate, file_to_http};

/// The file source with its default settings over `app.log*`, and an http
/// sink with its default batching.
fn config(dir: &Path, receiver: &Receiver) -> String {
    let sink = "    request: {retry_initial_backoff: 50ms, retry_max_backoff: 500ms}\n";
    file_to_http(&format!("{}/app.log*", dir.display()), &receiver.url(), Extra { sink, ..Extra::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_while_rotating_loses_nothing_and_repeats_little() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let text = config(dir.path(), &receiver).replace("{data_dir}", &data.path().display().to_string());
    let mut agent = Agent::start(&text);
    agent.ready();
    let writer = LogWriter { rotate: Rotate::Rename, every: 25_000, rate: 40_000.0, ..LogWriter::new(&path) };
    let writing = tokio::task::spawn_blocking(move || writer.write(0, 300_000));
    // The last line written so far (0 just after a rotation).
    let written = || -> u64 {
        let text = std::fs::read(&path).unwrap_or_default();
        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(256)..]).into_owned();
        tail.rsplit("seq=").nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };
    for _ in 0..5 {
        // Killed once it has delivered 20,000 more lines and caught up with
        // the writer (within a quarter of a second of lines): a kill while
        // it catches up after a restart would repeat more than one at a
        // steady pace, and how much more depends on the machine's speed.
        let before = receiver.unique();
        common::wait_until("20,000 more lines, caught up", Duration::from_secs(60), async || {
            let got = receiver.unique();
            got >= (before + 20_000).min(300_000) && got + 10_000 >= written()
        })
        .await;
        agent.signal("KILL");
        agent.wait_exit(Duration::from_secs(10));
        eprintln!("after kill: {} repeated so far", receiver.seq_report(300_000).1);
        agent = Agent::start(&text);
        agent.ready();
    }
    writing.await.unwrap();
    receiver.wait_for_unique(300_000, Duration::from_secs(60)).await;
    agent.stop();
    let (missing, repeated, beyond) = receiver.seq_report(300_000);
    assert!(missing.is_empty(), "{} lines lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert_eq!(beyond, 0);
    // What a kill repeats is what was delivered since the last checkpoint
    // write (10 ms apart, each an fsync): about a batch of 1,000 on an idle
    // machine, several thousand when fsyncs are slow on a loaded one. A
    // quarter of the lines over five kills still tells checkpoints written
    // only at a stop (each kill would repeat everything read since the
    // start) from these, whatever the machine's speed.
    assert!(repeated < 75_000, "{repeated} lines repeated over five kills");
    eprintln!("kill -9 x5: {repeated} lines repeated");
}
