//! The disk buffer's tests: its tasks together on a real directory, with a
//! sink's driver played by the test (it holds, delivers or drops what it
//! gets), restarts on the same directory, and `inspect`/`cut` on segments
//! written or damaged by hand. The pass-through policy alone is tested in
//! `policy`.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::ledger::save_acked;
use super::policy::{PASSED_BYTES, PASSED_HOLD, PASSED_MAX};
use super::*;
use crate::buffer::record;
use crate::event::ack::{AckReceiver, token};
use crate::event::{AckSet, BatchStatus, Replay};
use crate::event::{Event, EventId, Map, Str, Value};

fn events(n: usize, base: i64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            id: EventId::Generated(i as u128),
            time: base + i as i64,
            ty: Str::from("t"),
            source: Str::from("s"),
            subject: None,
            host: Str::from("h"),
            attrs: Map::new(),
            data: Value::Int(i as i64),
        })
        .collect()
}

fn settings(dir: &Path) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        max_size: 1 << 30,
        when_full: WhenFull::Block,
        sync_interval: Duration::from_millis(10),
        segment_size: 1 << 20,
    }
}

fn file_batch(n: usize, base: i64) -> (EventBatch, AckReceiver) {
    let (share, status) = token();
    let mut batch = EventBatch::new(events(n, base), AckSet::one(share));
    batch.replay = Replay::Reread;
    (batch, status)
}

/// A disk buffer in `dir`: its input, the driver's side and its tasks.
async fn open(dir: &Path) -> (channel::Sender, Receiver, Tasks) {
    open_with(settings(dir)).await
}

async fn open_with(settings: Settings) -> (channel::Sender, Receiver, Tasks) {
    let limits = Limits { max_events: 1 << 20, max_bytes: 1 << 30, when_full: WhenFull::Block };
    let metrics = Arc::new(ComponentMetrics::new("out", "sink", "http"));
    let (tx, rx) = channel::channel(limits, None);
    let (driver, tasks) = start(settings, rx, metrics).await.unwrap();
    (tx, driver, tasks)
}

fn bytes_on_disk(dir: &Path) -> u64 {
    segments(dir).unwrap().iter().map(|n| fs::metadata(segment_path(dir, *n)).unwrap().len()).sum()
}

/// A file source's batches that the sink takes at once pass in memory:
/// nothing is written, and the source hears of each only once the sink
/// has settled it. With the sink stuck, the disk takes them once the
/// reader is found stalled, those held in memory as well (a file
/// source's checkpoint would wait for them as long as the sink is
/// down), and each is acknowledged once synced. A restart finds them
/// all, in order.
// Real time: the spill waits for the reader to be found stalled, and the
// syncs that acknowledge are real I/O; the bounds below only guard a hang.
#[tokio::test]
async fn a_file_source_passes_in_memory_while_the_sink_takes_and_spills_when_it_stalls() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, tasks) = open(dir.path()).await;

    let (batch, mut status) = file_batch(100, 0);
    tx.send(batch).await.unwrap();
    let got = driver.recv().await.unwrap();
    assert_eq!(got.events()[99].data, Value::Int(99));
    // Handed over, not yet delivered: the source has not heard.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(futures_util::poll!(&mut status).is_pending());
    got.acks.settle(BatchStatus::Delivered);
    assert_eq!(status.await, BatchStatus::Delivered);
    assert_eq!(bytes_on_disk(dir.path()), 0, "a passed batch was written");

    // The sink stops taking: the driver's channel fills, the reader
    // stalls, and the disk takes everything.
    let mut statuses = Vec::new();
    for i in 1..=40 {
        let (batch, status) = file_batch(100, 1000 * i);
        tx.send(batch).await.unwrap();
        statuses.push(status);
    }
    for (i, status) in statuses.into_iter().enumerate() {
        let acked = tokio::time::timeout(Duration::from_secs(60), status).await;
        assert_eq!(acked.ok(), Some(BatchStatus::Delivered), "batch {} was not acknowledged", i + 1);
    }
    // The agent stops with the sink still stuck: what the driver held
    // is not delivered.
    drop(tx);
    drop(driver);
    tasks.finish().await;

    let (_tx, mut driver, _tasks) = open(dir.path()).await;
    for i in 1..=40 {
        let b = tokio::time::timeout(Duration::from_secs(60), driver.recv()).await.unwrap().unwrap();
        assert_eq!((b.events()[0].time, b.len()), (1000 * i, 100), "out of order");
        b.acks.settle(BatchStatus::Delivered);
    }
}

/// Batches larger than the sink's requests (lines a transform parsed
/// into many fields): the sink delivers the tail of one only with the
/// head of the next, so the next passes although the first, on its own,
/// fills the room for passed batches. Nothing goes to disk.
#[tokio::test(start_paused = true)]
async fn a_large_batch_passes_while_the_sink_holds_the_tail_of_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, tasks) = open(dir.path()).await;
    let large = |base: i64| {
        let (share, status) = token();
        let mut batch = EventBatch::with_size(events(100, base), AckSet::one(share), PASSED_BYTES + 1);
        batch.replay = Replay::Reread;
        (batch, status)
    };
    let (first, first_status) = large(0);
    tx.send(first).await.unwrap();
    let held = driver.recv().await.unwrap();
    let (second, second_status) = large(100);
    tx.send(second).await.unwrap();
    // Had it waited for the first's delivery, it would have gone to disk
    // after `PASSED_WAIT`, with a copy of the first.
    let next = tokio::time::timeout(PASSED_HOLD / 2, driver.recv()).await.unwrap().unwrap();
    assert_eq!(next.events()[0].time, 100);
    assert_eq!(bytes_on_disk(dir.path()), 0, "the second batch waited for the first's delivery");
    held.acks.settle(BatchStatus::Delivered);
    next.acks.settle(BatchStatus::Delivered);
    assert_eq!(first_status.await, BatchStatus::Delivered);
    assert_eq!(second_status.await, BatchStatus::Delivered);
    drop(tx);
    tasks.finish().await;
}

/// A sink that holds a passed batch while the file source goes quiet
/// (nothing more comes that the disk would take it with): its copy
/// goes to disk after a while and the source hears, so that its
/// checkpoint does not wait for the sink. A restart reads it.
#[tokio::test(start_paused = true)]
async fn a_passed_batch_the_sink_holds_goes_to_disk_when_the_source_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, tasks) = open(dir.path()).await;
    let (batch, status) = file_batch(10, 7);
    tx.send(batch).await.unwrap();
    let held = driver.recv().await.unwrap();
    let acked = tokio::time::timeout(PASSED_HOLD * 3, status).await;
    assert_eq!(acked.ok(), Some(BatchStatus::Delivered));
    assert!(bytes_on_disk(dir.path()) > 0);
    drop((tx, held, driver));
    tasks.finish().await;

    let (_tx, mut driver, _tasks) = open(dir.path()).await;
    let b = tokio::time::timeout(Duration::from_secs(5), driver.recv()).await.unwrap().unwrap();
    assert_eq!((b.events()[0].time, b.len()), (7, 10));
}

/// One buffer at a time writes a directory: a second waits for the
/// first to stop, and is refused if it does not.
#[tokio::test]
async fn a_directory_in_use_is_refused_until_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, driver, tasks) = open(dir.path()).await;
    let limits = Limits { max_events: 10, max_bytes: 1 << 20, when_full: WhenFull::Block };
    let metrics = Arc::new(ComponentMetrics::new("out", "sink", "http"));
    let second = start(settings(dir.path()), channel::channel(limits, None).1, metrics.clone()).await;
    assert!(second.err().is_some_and(|e| e.contains("in use")));
    // Aborted (its sink's task dropped it): the directory is free.
    drop(tasks);
    let third = start(settings(dir.path()), channel::channel(limits, None).1, metrics).await;
    assert!(third.is_ok());
    drop((tx, driver));
}

/// A batch the source cannot read again (of a file rotated away) is
/// not passed in memory: it is written, and acknowledged once synced,
/// while the sink still holds it.
#[tokio::test(start_paused = true)]
async fn a_batch_its_source_cannot_read_again_goes_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, _tasks) = open(dir.path()).await;
    let (mut batch, status) = file_batch(10, 0);
    batch.replay = Replay::Wait;
    tx.send(batch).await.unwrap();
    let _held = driver.recv().await.unwrap();
    assert_eq!(tokio::time::timeout(PASSED_HOLD / 2, status).await.ok(), Some(BatchStatus::Delivered));
    assert!(bytes_on_disk(dir.path()) > 0);
}

/// Copies go to disk even past `max_size`: refused, they would hold
/// their source's checkpoint for as long as the sink is down.
#[tokio::test(start_paused = true)]
async fn copies_go_to_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, _tasks) = open_with(Settings { max_size: 100, ..settings(dir.path()) }).await;
    // Over `max_size` at once: an empty disk takes a record of any size.
    tx.send(EventBatch::new(events(50, 0), AckSet::new())).await.unwrap();
    let (batch, status) = file_batch(10, 100);
    tx.send(batch).await.unwrap();
    let held = [driver.recv().await.unwrap(), driver.recv().await.unwrap()];
    assert_eq!(held[1].events()[0].time, 100);
    let acked = tokio::time::timeout(PASSED_HOLD * 3, status).await;
    assert_eq!(acked.ok(), Some(BatchStatus::Delivered));
}

/// Passed batches are acknowledged as the sink delivers them, in any
/// order: one that the sink retries does not hold back those after it.
#[tokio::test(start_paused = true)]
async fn passed_batches_are_acknowledged_as_delivered_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, _tasks) = open(dir.path()).await;
    let mut statuses = Vec::new();
    let mut got = Vec::new();
    for i in 0..3 {
        let (batch, status) = file_batch(10, 100 * i);
        tx.send(batch).await.unwrap();
        statuses.push(status);
        got.push(driver.recv().await.unwrap());
    }
    let first = got.remove(0);
    for b in got {
        b.acks.settle(BatchStatus::Delivered);
    }
    let mut first_status = statuses.remove(0);
    for status in statuses {
        assert_eq!(tokio::time::timeout(PASSED_HOLD, status).await.ok(), Some(BatchStatus::Delivered));
    }
    assert!(futures_util::poll!(&mut first_status).is_pending(), "the first was acknowledged undelivered");
    first.acks.settle(BatchStatus::Delivered);
    assert_eq!(first_status.await, BatchStatus::Delivered);
    assert_eq!(bytes_on_disk(dir.path()), 0);
}

/// A sink that gathers many small batches into one request before it
/// delivers any (a slow file, one line at a time) does not hold the
/// source back: past a bound, the batches go to disk with copies of
/// those passed, instead of waiting for deliveries that wait for them.
#[tokio::test(start_paused = true)]
async fn many_small_batches_the_sink_gathers_do_not_wait_for_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut driver, _tasks) = open(dir.path()).await;
    let gathered = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(b) = driver.recv().await {
            held.push(b);
        }
        held
    });
    let n = PASSED_MAX as i64 * 3;
    // Time is paused: the clock moves only while every task waits for a
    // timer, so the bound counts the buffer's own waits, however slow the
    // machine.
    let sent = tokio::time::timeout(PASSED_HOLD, async {
        for i in 0..n {
            tx.send(file_batch(1, i).0).await.unwrap();
        }
    })
    .await;
    assert!(sent.is_ok(), "the source waited for deliveries");
    drop(tx);
    let held = gathered.await.unwrap();
    let times: Vec<i64> = held.iter().map(|b| b.events()[0].time).collect();
    assert_eq!(times, (0..n).collect::<Vec<_>>());
}

#[test]
fn inspect_counts_what_waits_and_finds_damage_that_repair_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    for i in 0..3 {
        record::encode(&events(10, 1000 * i), &mut buf);
    }
    let first_record = {
        let mut one = Vec::new();
        record::encode(&events(10, 0), &mut one);
        one.len() as u64
    };
    fs::write(segment_path(dir.path(), 1), &buf).unwrap();
    fs::write(segment_path(dir.path(), 2), &buf).unwrap();
    save_acked(dir.path(), Position { segment: 1, offset: first_record, passed: 0 }).unwrap();
    let r = inspect(dir.path()).unwrap();
    assert_eq!((r.segments, r.records, r.events, r.oldest), (2, 5, 50, Some(0)));
    assert!(r.damage.is_empty());
    // A flipped byte in the second segment's second record.
    let mut bad = buf.clone();
    bad[first_record as usize + 20] ^= 1;
    fs::write(segment_path(dir.path(), 2), &bad).unwrap();
    let r = inspect(dir.path()).unwrap();
    assert_eq!(r.damage.len(), 1);
    assert_eq!(r.damage[0].offset, first_record);
    assert!(r.to_string().contains("DAMAGED"), "{r}");
    cut(&r.damage[0].path, r.damage[0].offset).unwrap();
    let r = inspect(dir.path()).unwrap();
    assert_eq!((r.records, r.events), (3, 30));
    assert!(r.damage.is_empty());
    // The frame scan agrees with the full read.
    assert_eq!(
        scan(&segment_path(dir.path(), 1), first_record).unwrap(),
        (2, 20, buf.len() as u64 - first_record, None)
    );
}

/// Records a newer hostwatch wrote (rolled back since) are not damage:
/// the buffer is refused at start, naming them, and left as it is. A
/// record of an unknown format that fails its checksum is damage.
#[tokio::test]
async fn records_of_a_newer_format_are_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    record::encode(&events(10, 0), &mut buf);
    let newer_at = buf.len();
    record::encode(&events(10, 10), &mut buf);
    let payload = newer_at + record::HEADER;
    let word = u32::from_le_bytes(buf[payload..payload + 4].try_into().unwrap());
    let word = (record::FORMAT + 1) << 28 | record::count(word);
    buf[payload..payload + 4].copy_from_slice(&word.to_le_bytes());
    let crc = crc32c::crc32c(&buf[payload..]);
    buf[newer_at + 4..payload].copy_from_slice(&crc.to_le_bytes());
    let segment = segment_path(dir.path(), 1);
    fs::write(&segment, &buf).unwrap();

    let limits = Limits { max_events: 1 << 20, max_bytes: 1 << 30, when_full: WhenFull::Block };
    let metrics = Arc::new(ComponentMetrics::new("out", "sink", "http"));
    let (_tx, rx) = channel::channel(limits, None);
    let Err(e) = start(settings(dir.path()), rx, metrics).await else { panic!("a newer buffer was opened") };
    assert!(e.contains("newer hostwatch") && e.contains(&format!("byte {newer_at}")), "{e}");
    assert_eq!(fs::read(&segment).unwrap(), buf, "the buffer was changed");
    let r = inspect(dir.path()).unwrap();
    assert_eq!((r.records, r.damage.len()), (1, 1));
    assert!(r.damage[0].newer && r.damage[0].offset == newer_at as u64, "{r}");
    assert!(r.to_string().contains("NEWER HOSTWATCH"), "{r}");

    // The same record damaged: read up to it, the rest skipped.
    buf[payload + 6] ^= 1;
    fs::write(&segment, &buf).unwrap();
    assert!(!inspect(dir.path()).unwrap().damage[0].newer);
    let (tx, mut driver, tasks) = open(dir.path()).await;
    let first = driver.recv().await.unwrap();
    assert_eq!(first.len(), 10);
    drop(first);
    drop(tx);
    tasks.finish().await;
}
