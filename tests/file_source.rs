//! The file source against real files: every line exactly once, through
//! rotation by rename and by copytruncate, restarts, kill -9, truncation,
//! inode reuse and bad input.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Agent, Extra, LogWriter, Mode, Receiver, Rotate, file_to_http};

/// A file source over `dir`'s `app.log*` to a receiver, with extra settings.
fn config(dir: &Path, receiver: &Receiver, source_extra: &str) -> String {
    let source = format!("    rotate_wait: 2s\n{source_extra}");
    let sink = "    batch: {max_events: 1000, timeout: 100ms}\n    \
                request: {retry_initial_backoff: 50ms, retry_max_backoff: 500ms}\n";
    file_to_http(
        &format!("{}/app.log*", dir.display()),
        &receiver.url(),
        Extra { source: &source, sink, top: "" },
    )
}

/// A data_dir that survives restarts of the agent.
fn with_data_dir(config: &str, data: &Path) -> String {
    config.replace("{data_dir}", &data.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_lines_from_the_beginning_arrive_exactly_once() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    LogWriter::new(&dir.path().join("app.log")).write(0, 1_000_000);
    let mut agent = Agent::start(&config(dir.path(), &receiver, ""));
    receiver.wait_for_unique(1_000_000, Duration::from_secs(120)).await;
    agent.stop();
    receiver.assert_exactly_once(1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_at_full_speed_loses_and_repeats_nothing() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let mut agent = Agent::start(&config(dir.path(), &receiver, ""));
    let api = agent.ready();
    let writer = LogWriter { rotate: Rotate::Rename, every: 10_000, ..LogWriter::new(&path) };
    tokio::task::spawn_blocking(move || writer.write(0, 200_000)).await.unwrap();
    receiver.wait_for_unique(200_000, Duration::from_secs(60)).await;
    let metrics = common::metrics(api).await;
    assert!(metrics.contains("hostwatch_files_watched"), "{metrics}");
    agent.stop();
    receiver.assert_exactly_once(200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_loses_and_repeats_nothing() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let mut agent = Agent::start(&config(dir.path(), &receiver, ""));
    agent.ready();
    let writer = LogWriter { rotate: Rotate::CopyTruncate, every: 10_000, ..LogWriter::new(&path) };
    tokio::task::spawn_blocking(move || writer.write(0, 200_000)).await.unwrap();
    receiver.wait_for_unique(200_000, Duration::from_secs(60)).await;
    agent.stop();
    receiver.assert_exactly_once(200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_twice_while_stopped_loses_and_repeats_nothing() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let text = with_data_dir(&config(dir.path(), &receiver, ""), data.path());
    let writer = LogWriter { rotate: Rotate::Rename, every: 3_000, ..LogWriter::new(&path) };
    writer.write(0, 5_000);
    let mut agent = Agent::start(&text);
    receiver.wait_for_unique(5_000, Duration::from_secs(30)).await;
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(20)).success(), "{}", agent.logs());

    // While stopped: more lines, and two rotations (5,000 + 6,000 → app.log
    // holds 5,000..6,000 at the first rotation, then two more files).
    writer.write(5_000, 1_000);
    for (first, rotation) in [(6_000, 1), (8_000, 2)] {
        std::fs::rename(&path, common::numbered(&path, 0)).unwrap();
        for n in (0..rotation + 5).rev() {
            let from = common::numbered(&path, n);
            if from.exists() {
                std::fs::rename(&from, common::numbered(&path, n + 1)).unwrap();
            }
        }
        LogWriter::new(&path).write(first, 2_000);
    }
    let mut agent = Agent::start(&text);
    receiver.wait_for_unique(10_000, Duration::from_secs(30)).await;
    agent.stop();
    receiver.assert_exactly_once(10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_on_a_reused_inode_is_read_from_its_start() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let text = with_data_dir(&config(dir.path(), &receiver, ""), data.path());
    LogWriter::new(&path).write(0, 2_000);
    let mut agent = Agent::start(&text);
    receiver.wait_for_unique(2_000, Duration::from_secs(30)).await;
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(20)).success());

    // Delete it and write a new, shorter file until one gets the same inode
    // (file systems hand freed inodes out again quickly).
    use std::os::unix::fs::MetadataExt;
    let old = std::fs::metadata(&path).unwrap().ino();
    std::fs::remove_file(&path).unwrap();
    let mut reused = false;
    for attempt in 0..200 {
        let candidate = dir.path().join(format!("tmp{attempt}"));
        std::fs::write(&candidate, "").unwrap();
        if std::fs::metadata(&candidate).unwrap().ino() == old {
            std::fs::rename(&candidate, &path).unwrap();
            reused = true;
            break;
        }
    }
    if !reused {
        std::fs::write(&path, "").unwrap();
    }
    for attempt in 0..200 {
        let _ = std::fs::remove_file(dir.path().join(format!("tmp{attempt}")));
    }
    LogWriter::new(&path).write(2_000, 500);
    let mut agent = Agent::start(&text);
    receiver.wait_for_unique(2_500, Duration::from_secs(30)).await;
    agent.stop();
    receiver.assert_exactly_once(2_500);
    eprintln!("inode reused: {reused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_long_lines_garbage_and_unreadable_files_are_handled() {
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "    max_line_bytes: 64KiB\n";
    let text = config(dir.path(), &receiver, extra).replace("app.log*", "*.log");
    // Runs as an unprivileged user when the tests run as root, so that
    // permissions mean something.
    let data = tempfile::tempdir().unwrap();
    let unprivileged = nix_is_root();
    if unprivileged {
        for d in [dir.path(), data.path()] {
            std::process::Command::new("chmod").arg("777").arg(d).status().unwrap();
        }
    }
    let text = with_data_dir(&text, data.path());
    std::fs::write(dir.path().join("secret.log"), LogWriter::line(900_000)).unwrap();
    std::process::Command::new("chmod").arg("000").arg(dir.path().join("secret.log")).status().unwrap();
    let mut agent = if unprivileged { Agent::start_as_nobody(&text) } else { Agent::start(&text) };
    let api = agent.ready();

    // A file truncated in place, then written again.
    let trunc = dir.path().join("trunc.log");
    LogWriter::new(&trunc).write(0, 100);
    receiver.wait_for_unique(100, Duration::from_secs(30)).await;
    std::fs::OpenOptions::new().write(true).open(&trunc).unwrap().set_len(0).unwrap();
    // Written again once the agent has seen it shrink.
    common::wait_until("the truncation seen", Duration::from_secs(30), async || {
        common::metric(&common::metrics(api).await, "hostwatch_file_truncations_total").unwrap_or(0.0) >= 1.0
    })
    .await;
    LogWriter::new(&trunc).write(100, 50);
    receiver.wait_for_unique(150, Duration::from_secs(30)).await;

    // A 1 MiB line between two ordinary ones, and binary garbage.
    let mut big = LogWriter::line(150).trim_end().as_bytes().to_vec();
    big.push(b' ');
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    big.push(b'\n');
    big.extend_from_slice(LogWriter::line(151).as_bytes());
    std::fs::write(dir.path().join("big.log"), &big).unwrap();
    let mut garbage: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    garbage.extend_from_slice(b"\n\xff\xfe invalid utf-8 seq=152\n");
    std::fs::write(dir.path().join("garbage.log"), &garbage).unwrap();
    receiver.wait_for_unique(153, Duration::from_secs(30)).await;
    let metrics = common::metrics(api).await;
    assert!(agent.child.try_wait().unwrap().is_none(), "still running:\n{}", agent.logs());
    agent.stop();
    receiver.assert_exactly_once(153);

    let events = receiver.events();
    let long =
        events.iter().find(|e| e["data"]["message"].as_str().is_some_and(|m| m.contains("seq=150"))).unwrap();
    assert_eq!(long["data"]["message"].as_str().unwrap().len(), 64 * 1024, "cut at max_line_bytes");
    let bad =
        events.iter().find(|e| e["data"]["message"].as_str().is_some_and(|m| m.contains("seq=152"))).unwrap();
    assert!(bad["data"]["message"].as_str().unwrap().starts_with("\u{fffd}\u{fffd} invalid"), "{bad}");
    assert!(common::metric(&metrics, "hostwatch_lines_truncated_total").unwrap() >= 1.0, "{metrics}");
    assert!(common::metric(&metrics, "hostwatch_file_truncations_total").unwrap() >= 1.0, "{metrics}");
    if unprivileged {
        assert_eq!(common::metric(&metrics, "hostwatch_files_unreadable_total"), Some(1.0), "{metrics}");
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_files_keep_handles_bounded() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5_000u64 {
        let sub = dir.path().join(format!("d{}", i % 50));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}.log")), LogWriter::line(i)).unwrap();
    }
    let text = config(dir.path(), &receiver, "    max_open_files: 100\n    idle_timeout: 2s\n")
        .replace("app.log*", "**/*.log");
    let mut agent = Agent::start(&text);
    agent.ready();
    let pid = agent.child.id();
    let mut most_fds = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.unique() < 5_000 {
        most_fds = most_fds.max(common::open_fds(pid));
        assert!(Instant::now() < deadline, "only {} of 5000 files read", receiver.unique());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.assert_exactly_once(5_000);
    // A handful of descriptors besides the files: sockets, inotify, logs.
    assert!(most_fds <= 100 + 40, "{most_fds} descriptors open");

    // Idle: files closed after idle_timeout. (What the agent costs while
    // idle is measured by benches/idle_files.sh.)
    common::wait_until("files closed while idle", Duration::from_secs(30), async || {
        common::open_fds(pid) <= 40
    })
    .await;

    // A change to one of them is still seen.
    std::fs::write(dir.path().join("d7/f7.log"), format!("{}{}", LogWriter::line(7), LogWriter::line(5_000)))
        .unwrap();
    receiver.wait_for_unique(5_001, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiline_stack_traces_are_one_event() {
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "    multiline:\n      continuation_pattern: '^\\s'\n      timeout: 300ms\n";
    let mut agent = Agent::start(&config(dir.path(), &receiver, extra));
    let mut text = String::new();
    for seq in 0..20 {
        text.push_str(&LogWriter::line(seq));
        if seq % 5 == 0 {
            text.push_str("    at com.example.Handler.serve(Handler.java:42)\n    ... 12 more\n");
        }
    }
    std::fs::write(dir.path().join("app.log"), text).unwrap();
    receiver.wait_for_unique(20, Duration::from_secs(30)).await;
    receiver.assert_exactly_once(20);
    let events = receiver.events();
    assert_eq!(events.len(), 20, "{}", agent.logs());
    let traced = events
        .iter()
        .find(|e| e["data"]["message"].as_str().unwrap().contains("seq=5 "))
        .unwrap_or(&events[5]);
    let message = traced["data"]["message"].as_str().unwrap();
    assert!(message.ends_with("Handler.java:42)\n    ... 12 more"), "{message:?}");
    assert_eq!(traced["type"], "log.line");
    assert!(traced["subject"].as_str().unwrap().ends_with("app.log"));
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_late_directories_read_from_end_and_encodings() {
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // Before the start: a file read from its end, and a symlink to a file
    // outside the tree.
    LogWriter::new(&dir.path().join("old.log")).write(900_000, 10);
    LogWriter::new(&elsewhere.path().join("target.txt")).write(0, 5);
    std::os::unix::fs::symlink(elsewhere.path().join("target.txt"), dir.path().join("linked.log")).unwrap();
    let text = config(dir.path(), &receiver, "    read_from: end\n    encoding: ${ENC:-utf-8}\n")
        .replace(r#"include: [""#, r#"include: ["/nonexistent-hostwatch-test/*.log", ""#)
        .replace("app.log*", "**/*.log");
    let mut agent = Agent::start(&text);
    agent.ready();
    // read_from: end applies to files found at startup without a checkpoint:
    // the symlinked file too. New lines are read.
    LogWriter::new(&dir.path().join("old.log")).write(5, 5);
    // A directory that did not exist at startup.
    LogWriter::new(&dir.path().join("later/new.log")).write(10, 5);
    // Lines added to the symlinked file.
    LogWriter::new(&elsewhere.path().join("target.txt")).write(15, 5);
    receiver.wait_for_unique(15, Duration::from_secs(30)).await;
    agent.stop();
    let (missing, repeated, beyond) = receiver.seq_report(20);
    assert_eq!(missing, vec![0, 1, 2, 3, 4], "what was there at startup is skipped, the rest read");
    assert_eq!((repeated, beyond), (0, 0));

    // UTF-16LE with a byte order mark, and Latin-1.
    for (encoding, bytes) in [
        ("utf-16le", {
            let mut b = vec![0xFF, 0xFE];
            b.extend("hé seq=0\r\nwörld seq=1\n".encode_utf16().flat_map(|u| u.to_le_bytes()));
            b
        }),
        ("latin1", b"caf\xe9 seq=0\nna\xefve seq=1\n".to_vec()),
    ] {
        let receiver = Receiver::start(Mode::Accept).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), &bytes).unwrap();
        let text = config(dir.path(), &receiver, &format!("    encoding: {encoding}\n"));
        let _agent = Agent::start(&text);
        receiver.wait_for_unique(2, Duration::from_secs(30)).await;
        let mut messages: Vec<String> =
            receiver.events().iter().map(|e| e["data"]["message"].as_str().unwrap().to_string()).collect();
        messages.sort();
        let expected = if encoding == "latin1" {
            vec!["café seq=0", "naïve seq=1"]
        } else {
            vec!["hé seq=0", "wörld seq=1"]
        };
        assert_eq!(messages, expected, "{encoding}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_with_only_the_live_name_included() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    // Only `app.log`: a rotated file is read to its end through the open
    // handle, then let go.
    let text = config(dir.path(), &receiver, "")
        .replace("app.log*", "app.log")
        .replace("rotate_wait: 2s", "rotate_wait: 500ms");
    let mut agent = Agent::start(&text);
    let api = agent.ready();
    let writer = LogWriter { rotate: Rotate::Rename, every: 5_000, rate: 20_000.0, ..LogWriter::new(&path) };
    tokio::task::spawn_blocking(move || writer.write(0, 30_000)).await.unwrap();
    receiver.wait_for_unique(30_000, Duration::from_secs(60)).await;
    // The rotated files are let go after rotate_wait: one file followed.
    common::wait_until("the rotated files let go", Duration::from_secs(30), async || {
        common::metric(&common::metrics(api).await, "hostwatch_files_watched") == Some(1.0)
    })
    .await;
    let metrics = common::metrics(api).await;
    assert!(common::metric(&metrics, "hostwatch_file_rotations_total").unwrap() >= 5.0, "{metrics}");
    agent.stop();
    receiver.assert_exactly_once(30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_of_a_copytruncate() {
    let receiver = Receiver::start(Mode::Accept).await;
    receiver.count_only();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let text = with_data_dir(&config(dir.path(), &receiver, ""), data.path());
    LogWriter::new(&path).write(0, 1_000);
    let mut agent = Agent::start(&text);
    receiver.wait_for_unique(1_000, Duration::from_secs(30)).await;
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(20)).success());

    // Stopped between the copy and the truncation of a copytruncate.
    LogWriter::new(&path).write(1_000, 200);
    std::fs::copy(&path, common::numbered(&path, 1)).unwrap();
    let mut agent = Agent::start(&text);
    agent.ready();
    receiver.wait_for_unique(1_200, Duration::from_secs(30)).await;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    LogWriter::new(&path).write(1_200, 100);
    receiver.wait_for_unique(1_300, Duration::from_secs(30)).await;
    agent.stop();
    receiver.assert_exactly_once(1_300);
}
