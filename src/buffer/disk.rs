//! The disk buffer: events wait for their sink in an append-only log of
//! segment files under `data_dir/buffer/<sink id>/`, so that they survive a
//! crash, a restart and a sink that is down for hours.
//!
//! Three tasks share a buffer:
//! - the writer takes batches from the sink's input channel, appends each as
//!   one record (`record`), and syncs the file every `sync_interval`; only
//!   then are the batches acknowledged to their sources (a file source moves
//!   its checkpoint): from there on the disk holds them;
//! - the reader reads records in order, from where the last run stopped,
//!   and hands them to the sink's driver through a small memory channel;
//!   the records written last it takes from memory instead (see `Recent`),
//!   so that a sink that keeps up costs no read and no decoding; a source
//!   that loses nothing by waiting (a file source) is held to the reader's
//!   pace while the sink delivers, rather than run ahead only for its
//!   events to be read back (`Writer::wait_for_reader`);
//! - the acker waits for the driver to settle each record in order, keeps
//!   the position of the first one not delivered in the file `acked`, and
//!   deletes segments once every record in them is delivered.
//!
//! A record that fails its checksum or does not decode (a torn write, a
//! flipped bit) is skipped with the rest of its segment, logged with the
//! segment's name and counted (`hostwatch_component_errors_total{reason=
//! "buffer_corrupt"}`); the agent goes on with the next segment.
//! The writer always starts a new segment, so it never appends after a torn
//! tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use super::record;
use crate::event::ack::{AckReceiver, token};
use crate::event::{AckSet, BatchStatus, EventBatch};
use crate::pipeline::channel::{self, Limits, Receiver, WhenFull};
use crate::pipeline::metrics::{ComponentMetrics, DropReason};

/// Settings of a disk buffer.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: PathBuf,
    pub max_size: u64,
    pub when_full: WhenFull,
    pub sync_interval: Duration,
    /// A segment is closed and a new one started past this size.
    pub segment_size: u64,
}

/// A position in the log: segment number and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The records written last, still in memory, for the reader: when it has
/// caught up with the writer (a sink that keeps up, the usual case) it takes
/// them from here instead of reading and decoding them again. At most
/// `RECENT_RECORDS` records and `RECENT_BYTES` of events, or a single
/// record of any size (a reader that keeps up needs one or two): the
/// reader of a sink that is slow or down takes the rest from disk, and
/// memory stays flat however far behind it is. Every record is on disk all
/// the same: a crash loses nothing.
#[derive(Default)]
struct Recent {
    /// Each record's start and end in the log, and its events.
    records: std::collections::VecDeque<(Position, Position, EventBatch)>,
    bytes: usize,
}

const RECENT_RECORDS: usize = 16;
const RECENT_BYTES: usize = 1 << 20;

impl Recent {
    /// Would a record of `size` bytes of events be kept?
    fn has_room(&self, size: usize) -> bool {
        // An empty window takes a record however large: a file source
        // hands over a megabyte at a time when it reads fast, and a window
        // that refused those was never used at all.
        self.records.is_empty() || self.records.len() < RECENT_RECORDS && self.bytes + size <= RECENT_BYTES
    }
}

/// What the three tasks share.
struct Shared {
    recent: Mutex<Recent>,
    /// How far the writer has written: the reader reads up to here.
    written: Mutex<Position>,
    /// The writer has stopped (its input closed): the reader stops at the end.
    closed: AtomicBool,
    /// Wakes the reader when more is written or the writer stops.
    more: Notify,
    /// Bytes of records written and not yet delivered (the segment files
    /// hold up to a segment more: they go whole once delivered).
    bytes: AtomicU64,
    /// Wakes a blocked writer when segments are deleted.
    freed: Notify,
    /// Events written and not yet delivered.
    events: AtomicU64,
    /// Records the reader has handed to the driver, and a wake-up for a
    /// writer that waits for it (see `Writer::wait_for_reader`).
    handed: AtomicU64,
    taken: Notify,
}

/// A reader that hands nothing to the driver for this long is stalled (a
/// sink that is down or stuck): the writer stops waiting for it. Longer
/// than a slow sink's request takes, short enough that an outage costs a
/// file source only a moment's pause before the disk takes over.
const READER_STALL: Duration = Duration::from_secs(1);

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// The segment numbers in `dir`, in order.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok()) {
            all.push(n);
        }
    }
    all.sort_unstable();
    Ok(all)
}

/// The position of the first record not yet delivered, as last saved.
pub fn load_acked(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("acked")).ok()?;
    let (s, o) = text.trim().split_once(' ')?;
    Some(Position { segment: s.parse().ok()?, offset: o.parse().ok()? })
}

fn save_acked(dir: &Path, p: Position) -> io::Result<()> {
    let tmp = dir.join("acked.tmp");
    fs::write(&tmp, format!("{} {}\n", p.segment, p.offset))?;
    fs::rename(tmp, dir.join("acked"))
}

/// What a segment holds from `offset` on, read from the record headers and
/// event counts alone: (records, events, bytes), and where it stops being
/// readable (a torn or damaged frame), if it does.
pub fn scan(path: &Path, offset: u64) -> io::Result<(u64, u64, u64, Option<u64>)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let (mut records, mut events, mut at) = (0, 0, offset);
    f.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; record::HEADER + 4];
    while at < size {
        if at + head.len() as u64 > size || f.read_exact(&mut head).is_err() {
            return Ok((records, events, at - offset, Some(at)));
        }
        let (len, _) = record::header(head[..record::HEADER].try_into().unwrap_or(&[0; record::HEADER]));
        let n = record::count(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
        if !(4..=record::MAX_PAYLOAD).contains(&len) || at + (record::HEADER + len) as u64 > size {
            return Ok((records, events, at - offset, Some(at)));
        }
        records += 1;
        events += u64::from(n);
        at += (record::HEADER + len) as u64;
        f.seek(SeekFrom::Start(at))?;
    }
    Ok((records, events, at - offset, None))
}

/// Opens the buffer in `settings.dir` and starts its tasks: `input` is the
/// sink's input channel; the returned receiver is what the sink's driver
/// reads, and the task ends once the position of what the driver delivered
/// is saved (after the driver has stopped).
pub fn start(
    settings: Settings,
    input: Receiver,
    metrics: Arc<ComponentMetrics>,
) -> Result<(Receiver, tokio::task::JoinHandle<()>), String> {
    let dir = &settings.dir;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create the disk buffer {}: {e}", dir.display()))?;
    let existing =
        segments(dir).map_err(|e| format!("cannot read the disk buffer {}: {e}", dir.display()))?;
    let first_new = existing.last().map_or(1, |n| n + 1);
    // Segments before the saved position were delivered; one whose deletion
    // was cut short by a crash goes now.
    let saved = load_acked(dir);
    let mut existing = existing;
    if let Some(p) = saved {
        for n in existing.iter().filter(|n| **n < p.segment) {
            let _ = fs::remove_file(segment_path(dir, *n));
        }
        existing.retain(|n| *n >= p.segment);
    }
    let start = match saved {
        Some(p) if existing.contains(&p.segment) => p,
        // Its segment was deleted (all delivered): the next one on.
        Some(p) => Position {
            segment: existing.iter().copied().find(|n| *n > p.segment).unwrap_or(first_new),
            offset: 0,
        },
        None => Position { segment: existing.first().copied().unwrap_or(first_new), offset: 0 },
    };
    // What waits from the last run, for the gauges.
    let (mut waiting, mut bytes) = (0, 0);
    for n in existing.iter().filter(|n| **n >= start.segment) {
        let from = if *n == start.segment { start.offset } else { 0 };
        let path = segment_path(dir, *n);
        waiting += scan(&path, from).map_or(0, |s| s.1);
        bytes += fs::metadata(&path).map_or(0, |m| m.len()).saturating_sub(from);
    }
    let shared = Arc::new(Shared {
        recent: Mutex::default(),
        written: Mutex::new(Position { segment: first_new, offset: 0 }),
        closed: AtomicBool::new(false),
        more: Notify::new(),
        bytes: AtomicU64::new(bytes),
        freed: Notify::new(),
        events: AtomicU64::new(waiting),
        handed: AtomicU64::new(0),
        taken: Notify::new(),
    });
    metrics.buffer_bytes.store(bytes, Relaxed);
    metrics.buffer_events.store(waiting, Relaxed);
    let file = create_segment(dir, first_new)
        .map_err(|e| format!("cannot write the disk buffer {}: {e}", dir.display()))?;
    if !existing.is_empty() {
        tracing::info!(component = %metrics.id, segments = existing.len(), bytes, "resuming the disk buffer");
    }
    // The driver's own memory channel: a few batches, enough to keep it busy.
    let (out, driver_input) =
        channel::channel(Limits { max_events: 2048, max_bytes: 8 << 20, when_full: WhenFull::Block }, None);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let writer = Writer {
        settings: settings.clone(),
        shared: shared.clone(),
        metrics: metrics.clone(),
        file,
        at: Position { segment: first_new, offset: 0 },
        buf: Vec::new(),
        unsynced: Vec::new(),
        stalled_at: None,
        impatient: None,
    };
    tokio::spawn(writer.run(input));
    tokio::spawn(read(settings.dir.clone(), start, shared.clone(), out, acks_tx, metrics.clone()));
    let acker = tokio::spawn(ack(settings.dir.clone(), start, shared, acks_rx, metrics));
    Ok((driver_input, acker))
}

fn create_segment(dir: &Path, n: u64) -> io::Result<File> {
    let file = OpenOptions::new().create_new(true).append(true).open(segment_path(dir, n))?;
    // The new name must survive a crash as well as the data in it.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

// === the writer ===

struct Writer {
    settings: Settings,
    shared: Arc<Shared>,
    metrics: Arc<ComponentMetrics>,
    file: File,
    at: Position,
    buf: Vec<u8>,
    /// Acknowledgements of batches written since the last sync.
    unsynced: Vec<AckSet>,
    /// The reader's count of records handed when it was last found stalled:
    /// no waiting for it until it moves again.
    stalled_at: Option<u64>,
    /// When a batch from a source that cannot wait last came.
    impatient: Option<Instant>,
}

/// How long after a batch from a source that cannot wait (ingest, capture)
/// no source is held to the reader's pace.
const IMPATIENT_HOLD: Duration = Duration::from_secs(10);

impl Writer {
    async fn run(mut self, mut input: Receiver) {
        let mut tick = tokio::time::interval(self.settings.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => self.append(batch).await,
                    None => break,
                },
                _ = tick.tick(), if !self.unsynced.is_empty() => self.sync().await,
            }
        }
        self.sync().await;
        self.shared.closed.store(true, Relaxed);
        self.shared.more.notify_one();
    }

    async fn append(&mut self, mut batch: EventBatch) {
        self.buf.clear();
        record::encode(batch.events(), &mut self.buf);
        let len = self.buf.len() as u64;
        // Room on disk: wait for the sink (block) or drop (drop_newest).
        loop {
            let used = self.shared.bytes.load(Relaxed);
            if used == 0 || used + len <= self.settings.max_size {
                break;
            }
            if self.settings.when_full == WhenFull::DropNewest {
                self.metrics.add_dropped(DropReason::BufferFull, batch.len());
                batch.acks.settle(BatchStatus::Delivered);
                return;
            }
            // What is written is acknowledged before waiting.
            self.sync().await;
            let freed = self.shared.freed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(500), freed).await;
        }
        if self.at.offset > 0 && self.at.offset + len > self.settings.segment_size {
            self.rotate().await;
        }
        let mut failures = 0u32;
        while let Err(e) = self.file.write_all(&self.buf) {
            // A full or failing disk: the events wait in memory, the sources
            // slow down, nothing is lost.
            if failures == 0 {
                tracing::error!(component = %self.metrics.id, "cannot write the disk buffer, retrying: {e}");
                self.metrics.add_error("buffer_write", 1);
            }
            failures += 1;
            // What a partial write left goes, so that the retry appends the
            // record where it belongs.
            let _ = self.file.set_len(self.at.offset);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let start = self.at;
        self.at.offset += len;
        self.shared.bytes.fetch_add(len, Relaxed);
        self.shared.events.fetch_add(batch.len() as u64, Relaxed);
        self.publish_gauges();
        self.unsynced.push(std::mem::take(&mut batch.acks));
        // A sink fed by sources that cannot wait as well: theirs would
        // queue behind the held ones, so none are held for a while.
        if !batch.may_wait {
            self.impatient = Some(Instant::now());
        }
        if batch.may_wait && self.impatient.is_none_or(|t| t.elapsed() >= IMPATIENT_HOLD) {
            self.wait_for_reader(batch.size()).await;
        }
        {
            let mut recent = lock(&self.shared.recent);
            // Full: the reader is behind, and finds this one on disk.
            if recent.has_room(batch.size()) {
                recent.bytes += batch.size();
                recent.records.push_back((start, self.at, batch));
            }
        }
        *lock(&self.shared.written) = self.at;
        self.shared.more.notify_one();
    }

    /// Waits, for a source that loses nothing by it, until the reader has
    /// room in memory for the record just written (it is on disk, not yet
    /// announced): the source goes at the pace of the sink, and the reader
    /// takes every record from memory. Without the wait a file source that
    /// reads faster than the sink delivers runs ahead, and every record is
    /// read back and decoded: half again the work of a memory buffer.
    /// A reader that is stalled (the sink down) is not waited for: the
    /// disk takes what comes, as it does for sources that cannot wait. One
    /// that is far behind (draining what an outage left) is: the file
    /// source waits until the backlog is delivered, oldest first.
    async fn wait_for_reader(&mut self, size: usize) {
        let mut seen = self.shared.handed.load(Relaxed);
        if self.stalled_at == Some(seen) {
            return;
        }
        self.stalled_at = None;
        let mut since_sync = Instant::now();
        loop {
            let taken = self.shared.taken.notified();
            if lock(&self.shared.recent).has_room(size) {
                return;
            }
            if tokio::time::timeout(READER_STALL, taken).await.is_err() {
                let now = self.shared.handed.load(Relaxed);
                if now == seen {
                    self.stalled_at = Some(now);
                    return;
                }
                seen = now;
            }
            // What is written is acknowledged while waiting.
            if since_sync.elapsed() >= self.settings.sync_interval {
                self.sync().await;
                since_sync = Instant::now();
            }
        }
    }

    /// Makes what was written durable, then acknowledges it.
    async fn sync(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let file = self.file.try_clone();
        let synced = match file {
            Ok(f) => tokio::task::spawn_blocking(move || f.sync_data())
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e))),
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => {
                for acks in self.unsynced.drain(..) {
                    acks.settle(BatchStatus::Delivered);
                }
            }
            Err(e) => {
                // Not acknowledged: the sources keep their positions and
                // read the events again after a restart.
                tracing::error!(component = %self.metrics.id, "cannot sync the disk buffer: {e}");
                self.metrics.add_error("buffer_sync", 1);
            }
        }
    }

    async fn rotate(&mut self) {
        self.sync().await;
        let next = self.at.segment + 1;
        loop {
            match create_segment(&self.settings.dir, next) {
                Ok(f) => {
                    self.file = f;
                    self.at = Position { segment: next, offset: 0 };
                    return;
                }
                Err(e) => {
                    tracing::error!(component = %self.metrics.id, "cannot start a disk buffer segment, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn publish_gauges(&self) {
        self.metrics.buffer_bytes.store(self.shared.bytes.load(Relaxed), Relaxed);
        self.metrics.buffer_events.store(self.shared.events.load(Relaxed), Relaxed);
    }
}

// === the reader ===

/// One record handed to the driver, for the acker.
struct Handed {
    end: Position,
    events: u64,
    bytes: u64,
    status: AckReceiver,
}

/// One record read back: its events, the memory they hold (an estimate,
/// for the driver's channel) and the record's length on disk.
struct Record {
    events: Vec<crate::event::Event>,
    size: usize,
    len: u64,
}

/// Reads one record at `offset` of `file`: `Ok(None)` at the end of the
/// segment; `Err` for a record that is torn or corrupt.
fn read_record(file: &mut File, path: &Path, offset: u64) -> Result<Option<Record>, String> {
    let mut header = [0u8; record::HEADER];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(format!("{}: a record torn at byte {offset}", path.display())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let (len, crc) = record::header(&header);
    if len > record::MAX_PAYLOAD {
        return Err(format!("{}: a record of {len} bytes at byte {offset}: corrupt", path.display()));
    }
    // Read into spare capacity: no zeroing of what the read overwrites.
    let mut payload = Vec::with_capacity(len);
    let got = Read::by_ref(file)
        .take(len as u64)
        .read_to_end(&mut payload)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if got < len {
        return Err(format!("{}: a record torn at byte {offset}", path.display()));
    }
    if !record::intact(&payload, crc) {
        return Err(format!("{}: a record that fails its checksum at byte {offset}", path.display()));
    }
    let (events, size) = record::decode_sized(bytes::Bytes::from(payload))
        .map_err(|e| format!("{}: a record that does not decode at byte {offset}: {e}", path.display()))?;
    Ok(Some(Record { events, size, len: (record::HEADER + len) as u64 }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The record at `at`, if it is still in memory; records before it (the
/// reader went past them on disk) go.
fn take_recent(shared: &Shared, at: Position) -> Option<(Position, EventBatch)> {
    let mut recent = lock(&shared.recent);
    while let Some((start, ..)) = recent.records.front() {
        if *start > at {
            return None;
        }
        let (start, end, batch) = recent.records.pop_front()?;
        recent.bytes -= batch.size();
        if start == at {
            return Some((end, batch));
        }
    }
    None
}

async fn read(
    dir: PathBuf,
    start: Position,
    shared: Arc<Shared>,
    out: channel::Sender,
    acks: mpsc::UnboundedSender<Handed>,
    metrics: Arc<ComponentMetrics>,
) {
    let mut at = start;
    // The open segment, and where the next read from it starts.
    let mut file: Option<(File, Position)> = None;
    loop {
        let more = shared.more.notified();
        let written = *lock(&shared.written);
        if at >= written {
            if shared.closed.load(Relaxed) && at >= *lock(&shared.written) {
                return;
            }
            more.await;
            continue;
        }
        if let Some((end, mut batch)) = take_recent(&shared, at) {
            // Room in the window for a writer that waits.
            shared.taken.notify_one();
            let (share, status) = token();
            batch.acks = AckSet::one(share);
            let (n, bytes) = (batch.len() as u64, end.offset - at.offset);
            if out.send(batch).await.is_err() {
                return;
            }
            at = end;
            let _ = acks.send(Handed { end: at, events: n, bytes, status });
            shared.handed.fetch_add(1, Relaxed);
            continue;
        }
        let path = segment_path(&dir, at.segment);
        let f = match file.take() {
            Some((f, pos)) if pos == at => Some(f),
            // After records taken from memory: on from there.
            Some((mut f, pos)) if pos.segment == at.segment => {
                f.seek(SeekFrom::Start(at.offset)).is_ok().then_some(f)
            }
            _ => File::open(&path).ok().and_then(|mut f| {
                (at.offset == 0 || f.seek(SeekFrom::Start(at.offset)).is_ok()).then_some(f)
            }),
        };
        let Some(mut f) = f else {
            // Gone (never written, or deleted by hand): the next one.
            at = Position { segment: at.segment + 1, offset: 0 };
            continue;
        };
        match read_record(&mut f, &path, at.offset) {
            Ok(Some(Record { events, size, len })) => {
                at.offset += len;
                file = Some((f, at));
                let (share, status) = token();
                let n = events.len() as u64;
                // The size the decoder counted: no walk over every event.
                let batch = EventBatch::with_size(events, AckSet::one(share), size);
                if out.send(batch).await.is_err() {
                    return;
                }
                let _ = acks.send(Handed { end: at, events: n, bytes: len, status });
                shared.handed.fetch_add(1, Relaxed);
                shared.taken.notify_one();
            }
            Ok(None) if at.segment < written.segment => {
                at = Position { segment: at.segment + 1, offset: 0 };
                file = None;
            }
            // The writer's segment, shorter than it said (cut by hand?):
            // look again shortly.
            Ok(None) => {
                file = Some((f, at));
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => {
                // The events the skipped part held, as far as its frames tell.
                let lost = scan(&path, at.offset).map_or(0, |s| s.1).max(1);
                let size = fs::metadata(&path).map_or(0, |m| m.len());
                let skipped = if at.segment < written.segment { size.saturating_sub(at.offset) } else { 0 };
                tracing::error!(component = %metrics.id, lost, "disk buffer: {e}; the rest of the segment is skipped");
                metrics.add_error("buffer_corrupt", 1);
                metrics.add_dropped(DropReason::Corrupted, lost as usize);
                if at.segment < written.segment {
                    at = Position { segment: at.segment + 1, offset: 0 };
                } else {
                    at = written;
                }
                file = None;
                // The skipped part counts as settled for the acker.
                let (share, status) = token();
                share.settle(BatchStatus::Delivered);
                let _ = acks.send(Handed { end: at, events: lost, bytes: skipped, status });
            }
        }
    }
}

// === the acker ===

async fn ack(
    dir: PathBuf,
    start: Position,
    shared: Arc<Shared>,
    mut handed: mpsc::UnboundedReceiver<Handed>,
    metrics: Arc<ComponentMetrics>,
) {
    let mut acked = start;
    let mut saved = start;
    let mut stalled = false;
    let mut last_save = Instant::now();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), handed.recv()).await;
        let idle = next.is_err();
        match next {
            Ok(Some(h)) => {
                // Records settle in any order; the position moves over them
                // in order.
                let status = h.status.await;
                if stalled || status == BatchStatus::Errored {
                    // Not settled (the agent stops): read again next time.
                    stalled = true;
                    continue;
                }
                acked = h.end;
                shared.events.fetch_sub(h.events.min(shared.events.load(Relaxed)), Relaxed);
                shared.bytes.fetch_sub(h.bytes.min(shared.bytes.load(Relaxed)), Relaxed);
                shared.freed.notify_one();
            }
            Ok(None) => {
                persist(&dir, acked, &mut saved, &shared, &metrics);
                return;
            }
            Err(_) => {}
        }
        // Saving the position writes a small file and renames it over the
        // last one, which ext4 also flushes to the disk: done after every
        // record, that was a file created and a disk write per record, a
        // good part of what the buffer cost the kernel. Every `SAVE_EVERY`
        // is enough: after a crash, at most that much is delivered again
        // (at-least-once allows it). A segment delivered whole still goes
        // at once, and an idle buffer saves at once.
        if idle || acked.segment != saved.segment || last_save.elapsed() >= SAVE_EVERY {
            persist(&dir, acked, &mut saved, &shared, &metrics);
            last_save = Instant::now();
        }
    }
}

/// How often the acker saves the delivered position while records flow.
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// Saves the position and deletes the segments before it.
fn persist(dir: &Path, acked: Position, saved: &mut Position, shared: &Shared, metrics: &ComponentMetrics) {
    if acked == *saved {
        return;
    }
    if let Err(e) = save_acked(dir, acked) {
        tracing::warn!(component = %metrics.id, "cannot save the disk buffer's position: {e}");
        return;
    }
    for n in saved.segment..acked.segment {
        let _ = fs::remove_file(segment_path(dir, n));
    }
    *saved = acked;
    metrics.buffer_bytes.store(shared.bytes.load(Relaxed), Relaxed);
    metrics.buffer_events.store(shared.events.load(Relaxed), Relaxed);
}

// === inspect and repair ===

/// A segment that stops being readable at `offset`.
#[derive(Debug)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub error: String,
}

/// What a disk buffer holds, for `hostwatch buffer inspect`.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub bytes: u64,
    /// Records and events not yet delivered.
    pub records: u64,
    pub events: u64,
    /// The time of the oldest event waiting (microseconds since the epoch).
    pub oldest: Option<i64>,
    /// Where delivery resumes.
    pub acked: Option<Position>,
    pub damage: Vec<Damage>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  segments: {}, {} bytes", self.segments, self.bytes)?;
        writeln!(f, "  waiting: {} events in {} records", self.events, self.records)?;
        if let Some(t) = self.oldest {
            let mut s = Vec::new();
            crate::event::time::format_rfc3339(t, &mut s);
            writeln!(f, "  oldest event: {}", String::from_utf8_lossy(&s))?;
        }
        if let Some(p) = self.acked {
            writeln!(f, "  delivered up to: segment {} byte {}", p.segment, p.offset)?;
        }
        for d in &self.damage {
            writeln!(f, "  DAMAGED: {} from byte {}: {}", d.path.display(), d.offset, d.error)?;
        }
        if self.damage.is_empty() {
            writeln!(f, "  no damage")?;
        }
        Ok(())
    }
}

/// Reads every record waiting in `dir`, checking each.
pub fn inspect(dir: &Path) -> io::Result<Report> {
    let mut report = Report::default();
    if !dir.exists() {
        return Ok(report);
    }
    let all = segments(dir)?;
    report.segments = all.len();
    report.acked = load_acked(dir);
    let start = report.acked.unwrap_or_default();
    for n in all {
        let path = segment_path(dir, n);
        report.bytes += fs::metadata(&path)?.len();
        if n < start.segment {
            continue;
        }
        let mut f = File::open(&path)?;
        let mut at = if n == start.segment { start.offset } else { 0 };
        f.seek(SeekFrom::Start(at))?;
        loop {
            match read_record(&mut f, &path, at) {
                Ok(Some(Record { events, len, .. })) => {
                    report.records += 1;
                    report.events += events.len() as u64;
                    if let Some(t) = events.iter().map(|e| e.time).min() {
                        report.oldest = Some(report.oldest.map_or(t, |o| o.min(t)));
                    }
                    at += len;
                }
                Ok(None) => break,
                Err(error) => {
                    report.damage.push(Damage { path: path.clone(), offset: at, error });
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Cuts a segment at `offset`: what follows a damaged record goes.
pub fn cut(path: &Path, offset: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(offset)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
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
        save_acked(dir.path(), Position { segment: 1, offset: first_record }).unwrap();
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
}
