//! The disk buffer: what it holds survives kill -9 and a sink that is down;
//! a damaged segment costs what is in it, never the agent.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Agent, Extra, LogWriter, Mode, Receiver, file_to_http, metric, metrics};

/// A file source over `dir`'s `app.log*` into an http sink with a disk
/// buffer of `max_size`, in the data directory `data`.
fn config(dir: &Path, data: &Path, receiver: &Receiver, max_size: &str) -> String {
    let sink = format!(
        "    request: {{retry_initial_backoff: 50ms, retry_max_backoff: 200ms}}\n    \
         buffer: {{type: disk, max_size: {max_size}}}\n"
    );
    let extra = Extra { top: "shutdown_timeout: 1s\n", sink: &sink, ..Extra::default() };
    file_to_http(&format!("{}/app.log*", dir.display()), &receiver.url(), extra)
        .replace("{data_dir}", &data.display().to_string())
}

/// Waits until the events waiting in the disk buffer satisfy `done`;
/// returns the metrics then.
async fn wait_buffer(api: u16, done: impl Fn(f64) -> bool, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let m = metrics(api).await;
        if metric(&m, "hostwatch_buffer_events{").is_some_and(&done) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "the disk buffer never got there:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn segment_files(buffer: &Path) -> Vec<std::path::PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(buffer)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    all.sort();
    all
}

/// 1,000,000 lines; the receiver refuses everything while the agent is
/// killed twice, so that what was read lives only in the disk buffer (the
/// file source's checkpoint has moved past it); then it accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_sink_is_down_loses_nothing() {
    const LINES: u64 = 1_000_000;
    let receiver = Receiver::start(Mode::FailEvery(1)).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let text = config(dir.path(), data.path(), &receiver, "1GiB");
    let mut agent = Agent::start(&text);
    let mut api = agent.ready();
    let writer = LogWriter { rate: 200_000.0, ..LogWriter::new(&dir.path().join("app.log")) };
    let writing = tokio::task::spawn_blocking(move || writer.write(0, LINES));
    let buffer_bytes = || -> u64 {
        std::fs::read_dir(data.path().join("buffer/out"))
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    for round in 0..3 {
        // Each round kills the agent after it has taken more lines: into
        // the disk buffer while the sink refuses, to the receiver after.
        if round == 2 {
            receiver.set_mode(Mode::Accept);
            let before = receiver.unique();
            common::wait_until("delivery after the sink came back", Duration::from_secs(60), async || {
                receiver.unique() > before
            })
            .await;
        } else {
            let before = buffer_bytes();
            common::wait_until("more in the disk buffer", Duration::from_secs(60), async || {
                buffer_bytes() > before
            })
            .await;
        }
        agent.signal("KILL");
        agent.wait_exit(Duration::from_secs(10));
        let buffered = buffer_bytes();
        eprintln!(
            "killed in round {round}: {buffered} bytes in the disk buffer, {} lines received",
            receiver.unique()
        );
        if round == 0 {
            assert!(buffered > 0, "nothing in the disk buffer while the sink was down");
        }
        agent = Agent::start(&text);
        api = agent.ready();
    }
    writing.await.unwrap();
    receiver.wait_for_unique(LINES, Duration::from_secs(120)).await;
    let (missing, repeated, beyond) = receiver.seq_report(LINES);
    assert!(missing.is_empty(), "{} lines lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert_eq!(beyond, 0);
    eprintln!("kill -9 x3 with a disk buffer: {repeated} lines repeated");
    // Delivered, and the segments before the saved position deleted: what
    // is left is the segment delivery stopped in and the writer's.
    wait_buffer(api, |n| n == 0.0, Duration::from_secs(10)).await;
    let buffer = data.path().join("buffer/out");
    common::wait_until("delivered segments deleted", Duration::from_secs(10), async || {
        segment_files(&buffer).len() <= 2
    })
    .await;
}

/// Lines held on disk while the sink is down, then one segment damaged in
/// the middle and the last one cut in the middle of a record: the agent
/// starts, counts both, and delivers everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_costs_its_records_not_the_agent() {
    const LINES: u64 = 150_000;
    let receiver = Receiver::start(Mode::FailEvery(1)).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // Segments of 3 MiB (max_size / 8, at least 1 MiB): several.
    let text = config(dir.path(), data.path(), &receiver, "24MiB");
    let mut agent = Agent::start(&text);
    let api = agent.ready();
    LogWriter::new(&dir.path().join("app.log")).write(0, LINES);
    wait_buffer(api, |n| n >= LINES as f64, Duration::from_secs(30)).await;
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));

    let segments = segment_files(&data.path().join("buffer/out"));
    assert!(segments.len() >= 3, "{segments:?}");
    // Flipped bytes in the middle of the first segment.
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(first, &bytes).unwrap();
    // The last segment with data cut in the middle of a record.
    let last = segments.iter().rev().find(|p| std::fs::metadata(p).unwrap().len() > 0).unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(len / 2 + 3).unwrap();

    // `buffer inspect` finds the damage and names the segment.
    let config_file = data.path().join("agent.yaml");
    std::fs::write(&config_file, &text).unwrap();
    let inspect = std::process::Command::new(common::BIN)
        .args(["buffer", "inspect", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(inspect.status.code(), Some(1), "{report}");
    assert_eq!(report.matches("DAMAGED").count(), 2, "{report}");
    assert!(report.contains(first.file_name().unwrap().to_str().unwrap()), "{report}");
    // `validate` warns about it (the agent copes), and is still 0.
    let (code, stderr) = common::validate_file(&config_file);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("damaged from byte").count(), 2, "{stderr}");

    receiver.set_mode(Mode::Accept);
    let mut agent = Agent::start(&text);
    let api = agent.ready();
    // Everything readable delivered: the buffer holds nothing more.
    let m = wait_buffer(api, |n| n == 0.0, Duration::from_secs(30)).await;
    let corrupt = metric(
        &m,
        "hostwatch_component_errors_total{component_id=\"out\",component_kind=\"sink\",component_type=\"http\",reason=\"buffer_corrupt\"}",
    );
    assert_eq!(corrupt, Some(2.0), "{m}");
    let logs = agent.logs();
    let first_name = first.file_name().unwrap().to_str().unwrap();
    assert!(logs.contains(first_name), "the log names the damaged segment:\n{logs}");
    // Everything but the two damaged stretches arrived.
    let (missing, _, beyond) = receiver.seq_report(LINES);
    assert_eq!(beyond, 0);
    let dropped = metric(
        &m,
        "hostwatch_events_dropped_total{component_id=\"out\",component_kind=\"sink\",component_type=\"http\",reason=\"corrupted\"}",
    );
    // What the damaged segment held is counted; what was cut off the end of
    // a file left no trace to count.
    let dropped = dropped.unwrap_or(0.0);
    assert!(
        dropped >= 1.0 && dropped <= missing.len() as f64,
        "{dropped} counted, {} missing",
        missing.len()
    );
    assert!(!missing.is_empty() && missing.len() < LINES as usize / 2, "{} missing", missing.len());
    let stretches = missing.windows(2).filter(|w| w[1] != w[0] + 1).count() + 1;
    assert_eq!(stretches, 2, "the losses are the rest of the damaged segment and the torn tail");
    assert!(agent.child_alive());
}

#[test]
fn a_data_dir_that_cannot_be_written_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    // Root's, not writable by the user the agent runs as.
    std::process::Command::new("chmod").arg("755").arg(data.path()).status().unwrap();
    let mut agent = Agent::start_as_nobody(&format!(
        "data_dir: {}/state\nsources:\n  gen: {{type: generator, rate: 1}}\nsinks:\n  out: {{type: console, inputs: [gen]}}\n",
        data.path().display()
    ));
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", agent.logs());
    assert!(agent.logs().contains("is not writable"), "{}", agent.logs());
}

/// A full disk buffer with `block`: the file source stops reading until the
/// sink takes events again; nothing is lost. With `drop_newest`: what the
/// metrics count as dropped is what the receiver misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_buffer_blocks_or_drops_and_counts() {
    for when_full in ["block", "drop_newest"] {
        const LINES: u64 = 40_000;
        let receiver = Receiver::start(Mode::FailEvery(1)).await;
        receiver.count_only();
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let text = config(dir.path(), data.path(), &receiver, "1MiB")
            .replace("max_size: 1MiB}", &format!("max_size: 1MiB, when_full: {when_full}}}"));
        let mut agent = Agent::start(&text);
        let api = agent.ready();
        LogWriter::new(&dir.path().join("app.log")).write(0, LINES);
        // Wait until the agent is stuck (block) or has read everything (drop).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let m = metrics(api).await;
            let read = metric(&m, "hostwatch_events_received_total{component_id=\"logs\"").unwrap_or(0.0);
            let bytes = metric(&m, "hostwatch_buffer_bytes{").unwrap_or(0.0);
            // Over `max_size` by one record at most, and by the copies of
            // what the sink held in memory when it stopped.
            assert!(bytes <= (4 << 20) as f64, "{bytes} bytes on disk, far over max_size");
            if when_full == "drop_newest" && read == LINES as f64 {
                break;
            }
            if when_full == "block" && read < LINES as f64 && last == Some(read) {
                break; // paused: nothing more read
            }
            last = Some(read);
            assert!(std::time::Instant::now() < deadline, "{m}");
        }
        receiver.set_mode(Mode::Accept);
        let m = if when_full == "block" {
            receiver.wait_for_unique(LINES, Duration::from_secs(60)).await;
            metrics(api).await
        } else {
            // Everything kept is delivered: the buffer empties.
            wait_buffer(api, |n| n == 0.0, Duration::from_secs(30)).await
        };
        let (missing, _, _) = receiver.seq_report(LINES);
        let dropped = metric(
            &m,
            "hostwatch_events_dropped_total{component_id=\"out\",component_kind=\"sink\",component_type=\"http\",reason=\"buffer_full\"}",
        )
        .unwrap_or(0.0);
        if when_full == "block" {
            assert!(missing.is_empty(), "{} lost with block", missing.len());
            assert_eq!(dropped, 0.0);
        } else {
            assert!(dropped > 0.0, "nothing dropped: the test did not fill the buffer");
            assert_eq!(dropped, missing.len() as f64, "dropped as counted, missing as seen");
        }
        agent.signal("TERM");
        agent.wait_exit(Duration::from_secs(10));
    }
}

/// Sinks slower than their sources: a file source waits for its sink (its
/// lines wait in the file) instead of filling the disk buffer ahead of it,
/// while events that applications push, which cannot wait, are taken at
/// once and wait on disk. Everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_back_a_file_source_but_not_pushed_events() {
    const LINES: u64 = 100_000;
    const PUSHED: u64 = 20_000;
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    receiver.set_delay(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // 20 ms a request: the file's sink takes 5,000 events a second, the
    // pushed events' 500, until the delay ends.
    let sink = |name: &str, input: &str, per_request: u32| {
        format!(
            "  {name}:\n    type: http\n    inputs: [{input}]\n    url: {url}\n    \
             request: {{concurrency: 1}}\n    batch: {{max_events: {per_request}}}\n    \
             buffer: {{type: disk}}\n",
            url = receiver.url()
        )
    };
    let text = format!(
        "data_dir: {data}\nshutdown_timeout: 1s\napi:\n  address: 127.0.0.1:0\nsources:\n  \
         logs:\n    type: file\n    include: [\"{dir}/app.log\"]\n  \
         apps:\n    type: ingest\n    address: 127.0.0.1:0\nsinks:\n{files}{pushed}",
        data = data.path().display(),
        dir = dir.path().display(),
        files = sink("files", "logs", 100),
        pushed = sink("pushed", "apps", 10),
    );
    // Lines 0..LINES from the file; PUSHED more, numbered after them, pushed.
    LogWriter::new(&dir.path().join("app.log")).write(0, LINES);
    let mut agent = Agent::start(&text);
    let api = agent.ready();
    let ingest = agent.ingest_url("apps");
    // Without the wait, the whole file would be read and on disk within a
    // second; with it, the file source reads a batch (some 3,700 lines) as
    // the sink takes one, and a few wait on the way.
    let mut most = 0f64;
    let mut read = 0f64;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = metrics(api).await;
        most = most.max(metric(&m, "hostwatch_buffer_events{component_id=\"files\"").unwrap_or(0.0));
        read = metric(&m, "hostwatch_events_received_total{component_id=\"logs\"").unwrap_or(0.0);
    }
    assert!(
        most < 40_000.0 && read < (LINES / 2) as f64,
        "{read} lines read and up to {most} waiting on disk in 2 s: the file source ran ahead of its sink"
    );
    let retried = common::publish(&ingest, LINES, PUSHED, 500).await;
    assert_eq!(retried, 0, "pushed events were refused although the disk had room");
    let pushed =
        metric(&metrics(api).await, "hostwatch_buffer_events{component_id=\"pushed\"").unwrap_or(0.0);
    eprintln!("{read} lines read, up to {most} waiting on disk; pushed events waiting on disk: {pushed}");
    assert!(pushed > (PUSHED / 2) as f64, "only {pushed} pushed events waited on disk: were they held back?");
    receiver.set_delay(Duration::ZERO);
    receiver.wait_for_unique(LINES + PUSHED, Duration::from_secs(120)).await;
    let (missing, _, beyond) = receiver.seq_report(LINES + PUSHED);
    assert!(missing.is_empty() && beyond == 0, "{} lost", missing.len());
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The receiver down for 60 s under a steady load: the events wait on disk,
/// memory stays where it was, and everything arrives afterwards, in the
/// order of the file (with one request in flight at a time, which is what
/// keeps order across retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_for_a_minute_costs_disk_not_memory() {
    const RATE: f64 = 5_000.0;
    const LINES: u64 = 400_000; // 80 s at RATE
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = config(dir.path(), data.path(), &receiver, "1GiB")
        .replace("retry_max_backoff: 200ms}", "retry_max_backoff: 200ms, concurrency: 1}");
    let mut agent = Agent::start(&config);
    let api = agent.ready();
    let pid = agent.child.id();
    let writer = LogWriter { rate: RATE, ..LogWriter::new(&dir.path().join("app.log")) };
    let writing = tokio::task::spawn_blocking(move || writer.write(0, LINES));
    // Steady state first: 8 s of lines delivered.
    receiver.wait_for_unique(40_000, Duration::from_secs(60)).await;
    let before = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            rss_kib(pid)
        })
        .max()
        .unwrap();
    receiver.set_mode(Mode::FailEvery(1));
    // The outage lasts until 250,000 lines (50 s at RATE) wait on disk, or
    // the writer is done.
    let mut peak = 0;
    let mut waiting = 0.0;
    while waiting < 250_000.0 && !writing.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss_kib(pid));
        waiting = metric(&metrics(api).await, "hostwatch_buffer_events{").unwrap_or(0.0);
    }
    receiver.set_mode(Mode::Accept);
    writing.await.unwrap();
    receiver.wait_for_unique(LINES, Duration::from_secs(60)).await;
    let (missing, _, beyond) = receiver.seq_report(LINES);
    assert!(missing.is_empty() && beyond == 0, "{} lost", missing.len());
    assert_eq!(receiver.out_of_order(), 0, "lines arrived out of the file's order");
    eprintln!(
        "RSS before the outage {before} KiB, peak during it {peak} KiB; {waiting} events waited on disk"
    );
    assert!(waiting > 100_000.0, "only {waiting} events waited: the outage did not hold them");
    assert!(peak as f64 <= before as f64 * 1.2, "RSS grew from {before} KiB to {peak} KiB during the outage");
}

#[test]
fn validate_refuses_checkpoints_it_cannot_read() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("checkpoints")).unwrap();
    std::fs::write(data.path().join("checkpoints/logs.json"), "{\"files\": [tru").unwrap();
    let config = data.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\nsources:\n  logs: {{type: file, include: [/tmp/none/*.log]}}\nsinks:\n  out: {{type: console, inputs: [logs]}}\n",
            data.path().display()
        ),
    )
    .unwrap();
    let (code, stderr) = common::validate_file(&config);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("checkpoints") && stderr.contains("damaged"), "{stderr}");
}

/// A stop while the sink is down: the agent gives up after
/// `shutdown_timeout` instead of retrying for ever, and what it could not
/// deliver arrives after the next start — from the disk buffer, or, with a
/// memory buffer, from the file again, since its source was never told it
/// was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_the_sink_down_keeps_what_was_not_delivered() {
    const LINES: u64 = 50_000;
    for disk in [false, true] {
        let receiver = Receiver::start(Mode::FailEvery(1)).await;
        receiver.count_only();
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut text = config(dir.path(), data.path(), &receiver, "1GiB");
        if !disk {
            text = text.replace("    buffer: {type: disk, max_size: 1GiB}\n", "");
            assert!(!text.contains("disk"));
        }
        LogWriter::new(&dir.path().join("app.log")).write(0, LINES);
        let mut agent = Agent::start(&text);
        agent.ready();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while receiver.failed() < 3 {
            assert!(std::time::Instant::now() < deadline, "the sink was never asked:\n{}", agent.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.signal("TERM");
        // shutdown_timeout is 1 s; an agent that waited for the sink would
        // not exit at all.
        agent.wait_exit(Duration::from_secs(8));
        assert!(agent.logs().contains("shutdown_timeout reached"), "{}", agent.logs());
        assert_eq!(receiver.unique(), 0);
        if disk {
            let held: u64 = segment_files(&data.path().join("buffer/out"))
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum();
            assert!(held > 0, "nothing was left in the disk buffer");
        }
        receiver.set_mode(Mode::Accept);
        let mut agent = Agent::start(&text);
        agent.ready();
        receiver.wait_for_unique(LINES, Duration::from_secs(60)).await;
        // Stopped, the agent has sent all it will: any repeat has arrived.
        agent.signal("TERM");
        agent.wait_exit(Duration::from_secs(10));
        let (missing, repeated, beyond) = receiver.seq_report(LINES);
        assert!(missing.is_empty() && beyond == 0, "disk buffer {disk}: {} lost", missing.len());
        if disk {
            // Copies of the batches the stalled sink held go to disk after
            // a second; when the timeout aborts the agent after they are
            // written but before the file source has saved a checkpoint
            // past them (likely on a loaded machine, as both take a
            // second here), the file source reads those lines again.
            eprintln!("disk buffer: {repeated} lines delivered twice after the forced stop");
        } else {
            assert_eq!(repeated, 0, "lines delivered twice");
        }
    }
}
