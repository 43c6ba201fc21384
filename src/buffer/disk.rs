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
//!   so that a sink that keeps up costs no read and no decoding;
//! - a source that loses nothing by waiting (a file source: its lines stay
//!   in their file) is held to the reader's pace while the sink delivers,
//!   rather than run ahead only for its events to be read back
//!   (`Writer::wait_for_room`); and its batches that the reader has room
//!   for go to it from memory without touching the disk ("passed"): they
//!   are acknowledged to the source once the sink delivers them, as with a
//!   memory buffer, so that a crash makes the source read them again.
//!   The disk takes what the sink cannot take yet: every batch of a source
//!   that cannot wait, and a file source's once the reader is a window
//!   behind or stalled (the sink down), with copies of the passed batches
//!   the sink still holds (as it does when the sink holds one for long);
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

/// A position in the log: segment number and byte offset in it, and the
/// passed records (in memory only) since that byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub passed: u64,
}

impl Position {
    /// The start of segment `n`.
    fn segment(n: u64) -> Self {
        Position { segment: n, offset: 0, passed: 0 }
    }

    /// The same byte: a position saved or compared on disk.
    fn same_byte(&self, other: &Position) -> bool {
        (self.segment, self.offset) == (other.segment, other.offset)
    }
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
    /// The buffer's lock (see `lock_dir`), held while any task runs.
    _lock: File,
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
    /// writer that waits for it (see `Writer::wait_for_room`).
    handed: AtomicU64,
    taken: Notify,
    /// Copies of passed batches that the writer put on disk once the sink
    /// fell behind (see `Writer::shadow`): each run's start, end and bytes. The
    /// reader steps over them, since it hands the batches from memory; a
    /// reader after a restart reads them.
    shadows: Mutex<std::collections::VecDeque<(Position, Position, u64)>>,
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
    Some(Position { segment: s.parse().ok()?, offset: o.parse().ok()?, passed: 0 })
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
    let (mut records, mut events) = (0, 0);
    let (bytes, stop) = frames(path, offset, |_, _, _, word| {
        records += 1;
        events += u64::from(record::count(word));
        Ok(true)
    })?;
    Ok((records, events, bytes, stop))
}

/// Calls `each(file, offset, length, first word)` for each frame of a
/// segment from `offset` on, until it returns false or a frame is torn or
/// damaged. Returns the bytes walked, and where a damaged frame stopped it.
fn frames(
    path: &Path,
    offset: u64,
    mut each: impl FnMut(&mut File, u64, usize, u32) -> io::Result<bool>,
) -> io::Result<(u64, Option<u64>)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut at = offset;
    f.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; record::HEADER + 4];
    while at < size {
        if at + head.len() as u64 > size || f.read_exact(&mut head).is_err() {
            return Ok((at - offset, Some(at)));
        }
        let (len, _) = record::header(head[..record::HEADER].try_into().unwrap_or(&[0; record::HEADER]));
        let word = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if !(4..=record::MAX_PAYLOAD).contains(&len) || at + (record::HEADER + len) as u64 > size {
            return Ok((at - offset, Some(at)));
        }
        if !each(&mut f, at, len, word)? {
            return Ok((at - offset, None));
        }
        at += (record::HEADER + len) as u64;
        f.seek(SeekFrom::Start(at))?;
    }
    Ok((at - offset, None))
}

/// The first intact record of `path` from `offset` on in a format newer
/// than this version reads, and that format. Such records were written by
/// a newer hostwatch (rolled back since): they are not damage to skip but
/// events to leave for it.
fn newer_record(path: &Path, offset: u64) -> io::Result<Option<(u64, u32)>> {
    let mut found = None;
    frames(path, offset, |f, at, len, word| {
        let format = record::format(word);
        if format <= record::FORMAT {
            return Ok(true);
        }
        let mut frame = vec![0; record::HEADER + len];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut frame)?;
        let (_, crc) = record::header(frame[..record::HEADER].try_into().unwrap_or(&[0; record::HEADER]));
        if record::intact(&frame[record::HEADER..], crc) {
            found = Some((at, format));
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Opens the buffer in `settings.dir` and starts its tasks: `input` is the
/// sink's input channel; the returned receiver is what the sink's driver
/// reads, and the task ends once the position of what the driver delivered
/// is saved (after the driver has stopped).
pub async fn start(
    settings: Settings,
    input: Receiver,
    metrics: Arc<ComponentMetrics>,
) -> Result<(Receiver, Tasks), String> {
    let dir = &settings.dir;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create the disk buffer {}: {e}", dir.display()))?;
    let lock = lock_dir(dir).await?;
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
        Some(p) => Position::segment(existing.iter().copied().find(|n| *n > p.segment).unwrap_or(first_new)),
        None => Position::segment(existing.first().copied().unwrap_or(first_new)),
    };
    // What waits from the last run, for the gauges.
    let (mut waiting, mut bytes) = (0, 0);
    for n in existing.iter().filter(|n| **n >= start.segment) {
        let from = if *n == start.segment { start.offset } else { 0 };
        let path = segment_path(dir, *n);
        // Only this process writes here while it runs (the lock): records
        // of a newer format can only be there at its start.
        if let Ok(Some((at, format))) = newer_record(&path, from) {
            return Err(format!(
                "the disk buffer {} holds events written by a newer hostwatch (record format {format} \
                 at byte {at} of {}), which this version cannot read: run the newer version until the \
                 buffer is empty, or move the directory away",
                dir.display(),
                path.display()
            ));
        }
        waiting += scan(&path, from).map_or(0, |s| s.1);
        bytes += fs::metadata(&path).map_or(0, |m| m.len()).saturating_sub(from);
    }
    let shared = Arc::new(Shared {
        _lock: lock,
        recent: Mutex::default(),
        written: Mutex::new(Position::segment(first_new)),
        closed: AtomicBool::new(false),
        more: Notify::new(),
        bytes: AtomicU64::new(bytes),
        freed: Notify::new(),
        events: AtomicU64::new(waiting),
        handed: AtomicU64::new(0),
        taken: Notify::new(),
        shadows: Mutex::default(),
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
        at: Position::segment(first_new),
        buf: Vec::new(),
        unsynced: Vec::new(),
        stalled_at: None,
        impatient: None,
        passed: std::collections::VecDeque::new(),
    };
    let writer = tokio::spawn(writer.run(input));
    let reader =
        tokio::spawn(read(settings.dir.clone(), start, shared.clone(), out, acks_tx, metrics.clone()));
    let acker = tokio::spawn(ack(settings.dir.clone(), start, shared, acks_rx, metrics));
    Ok((driver_input, Tasks { writer, reader, acker }))
}

/// A disk buffer's writer, reader and acker. Dropped before `finish` (the
/// sink's task aborted at `shutdown_timeout`), it stops them: a buffer
/// started again on the same directory must be its only writer. What they
/// held is not acknowledged, and its sources send it again.
pub struct Tasks {
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    acker: tokio::task::JoinHandle<()>,
}

impl Tasks {
    /// Waits, once the sink has stopped, until what it delivered is saved
    /// and the writer has done.
    pub async fn finish(mut self) {
        let _ = (&mut self.acker).await;
        let _ = (&mut self.writer).await;
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
        self.acker.abort();
    }
}

/// How long a buffer waits for its directory to be let go.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the buffer's directory for this instance alone: one whose sink
/// was just aborted may still be stopping (it lets go within moments), and
/// another agent on the same `data_dir` must not write it too.
async fn lock_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(format!("the disk buffer {} is in use by another process", dir.display()));
            }
            Err(fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
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
    /// Batches passed in memory whose delivery is not settled yet, oldest
    /// first.
    passed: std::collections::VecDeque<Passed>,
}

/// A batch passed to the reader in memory: its events (shared, not
/// copied), its source's acknowledgements, and the outcome of its delivery.
struct Passed {
    events: EventBatch,
    acks: AckSet,
    delivered: AckReceiver,
    since: Instant,
}

/// How long a passed batch may wait for its delivery before the writer
/// puts a copy on disk (see `Writer::shadow`).
const PASSED_HOLD: Duration = Duration::from_secs(2);

/// At most this many passed batches, holding about this many bytes of
/// events, wait for their delivery: a sink holds its requests encoded,
/// and these events are kept besides, for the copies. A file source waits
/// for room while the sink delivers; once none is delivered for
/// `PASSED_WAIT`, the batch goes to disk with copies of those passed: a
/// sink that fills its requests slowly (a slow file, or many small
/// batches), or retries one, would hold the source back. Two pass however
/// large they are (see `passed_room`).
const PASSED_MAX: usize = 1024;
const PASSED_MIN: usize = 2;
const PASSED_BYTES: usize = 4 << 20;
const PASSED_WAIT: Duration = Duration::from_millis(100);

/// The outcome of the oldest passed batch's delivery; never, if none waits.
async fn first_delivered(passed: &mut std::collections::VecDeque<Passed>) -> BatchStatus {
    match passed.front_mut() {
        Some(p) => (&mut p.delivered).await,
        None => std::future::pending().await,
    }
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
                _ = tick.tick() => {
                    self.settle_delivered();
                    // A sink that holds passed batches this long may be
                    // down, and the source quiet (nothing comes that
                    // would write them): their copies go to disk, so that
                    // the source's checkpoint moves on.
                    if self.passed.front().is_some_and(|p| p.since.elapsed() >= PASSED_HOLD) {
                        self.shadow(true).await;
                    }
                    self.sync().await;
                }
                status = first_delivered(&mut self.passed) => self.settle_first(status),
            }
        }
        // What the sink has not delivered yet is kept on disk: the agent
        // may stop before it is. Tried once: a full disk must not hold up
        // the stop.
        self.settle_delivered();
        self.shadow(false).await;
        self.sync().await;
        self.shared.closed.store(true, Relaxed);
        self.shared.more.notify_one();
        // Copies the disk did not take: their sources hear the sink's
        // outcome (or, should the agent stop first, read them again).
        while let Some(p) = self.passed.pop_front() {
            let status = p.delivered.await;
            p.acks.settle(status);
        }
    }

    async fn append(&mut self, mut batch: EventBatch) {
        self.settle_delivered();
        if batch.may_wait {
            if self.impatient.is_none_or(|t| t.elapsed() >= IMPATIENT_HOLD) {
                self.wait_for_room(batch.size(), batch.rereadable).await;
            }
            if batch.rereadable {
                match self.pass(batch) {
                    Ok(()) => return,
                    Err(back) => batch = back,
                }
            }
        } else {
            // A sink fed by sources that cannot wait as well: theirs would
            // queue behind the held ones, so none are held for a while.
            self.impatient = Some(Instant::now());
        }
        // The passed batches not yet delivered go to disk first, in their
        // place (see `shadow`).
        self.shadow(true).await;
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
            self.settle_delivered();
        }
        let before = self.at;
        self.write(true).await;
        // Where the batch's record starts: in a new segment, if it took one.
        let start = if self.at.segment == before.segment {
            before
        } else {
            Position { segment: self.at.segment, offset: self.at.offset - len, passed: 0 }
        };
        self.shared.events.fetch_add(batch.len() as u64, Relaxed);
        self.publish_gauges();
        self.unsynced.push(std::mem::take(&mut batch.acks));
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

    /// Appends the record in `buf` to the log, in a new segment if the
    /// current one is full. A full or failing disk is retried until it
    /// takes it, if `retry` (the events wait in memory, the sources slow
    /// down, nothing is lost); if not, returns whether it did.
    async fn write(&mut self, retry: bool) -> bool {
        let len = self.buf.len() as u64;
        if self.at.offset > 0 && self.at.offset + len > self.settings.segment_size {
            self.rotate().await;
        }
        let mut failures = 0u32;
        while let Err(e) = self.file.write_all(&self.buf) {
            if failures == 0 {
                tracing::error!(component = %self.metrics.id, "cannot write the disk buffer, retrying: {e}");
                self.metrics.add_error("buffer_write", 1);
            }
            failures += 1;
            // What a partial write left goes, so that the retry appends the
            // record where it belongs.
            let _ = self.file.set_len(self.at.offset);
            if !retry {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The sink goes on delivering what passed meanwhile.
            self.settle_delivered();
        }
        self.at = Position { offset: self.at.offset + len, passed: 0, ..self.at };
        self.shared.bytes.fetch_add(len, Relaxed);
        true
    }

    /// Settles the source's acknowledgements of the passed batches whose
    /// delivery is settled, in any order: a source keeps its own order of
    /// checkpoints, and one batch that the sink retries must not keep the
    /// events of those delivered after it in memory.
    /// Returns whether any was.
    fn settle_delivered(&mut self) -> bool {
        let before = self.passed.len();
        self.passed.retain_mut(|p| match futures_util::FutureExt::now_or_never(&mut p.delivered) {
            Some(status) => {
                std::mem::take(&mut p.acks).settle(status);
                false
            }
            None => true,
        });
        self.passed.len() < before
    }

    /// The oldest passed batch is delivered (`status`, from
    /// `first_delivered`): its source hears, and so do those of any others
    /// delivered meanwhile.
    fn settle_first(&mut self, status: BatchStatus) {
        if let Some(p) = self.passed.pop_front() {
            p.acks.settle(status);
        }
        self.settle_delivered();
    }

    /// The copies of the passed batches were written from `start` (where
    /// the reader finds them) to `end`: the reader is told to step over
    /// them, and their sources' acknowledgements wait for the next sync.
    fn shadowed(&mut self, start: Position, end: Position, bytes: u64) {
        lock(&self.shared.shadows).push_back((start, end, bytes));
        for p in self.passed.drain(..) {
            self.unsynced.push(p.acks);
        }
    }

    /// Writes copies of the passed batches not yet delivered, before the
    /// disk takes anything else: the sink has fallen behind, and held in
    /// memory they would hold back their source (a file source's
    /// checkpoint) for as long as the sink is down. On disk they are
    /// acknowledged at the next sync, and read after a restart; the reader
    /// of this run steps over them, as it hands the batches from memory.
    /// They are written even past `max_size` (they are at most
    /// `PASSED_BYTES` of events): refused, they would hold the source's
    /// checkpoint, and its shutdown, until the sink is back. A disk that
    /// fails is retried if `retry`; if not, they stay in memory.
    async fn shadow(&mut self, retry: bool) {
        if self.passed.is_empty() {
            return;
        }
        self.buf.clear();
        for p in &self.passed {
            record::encode(p.events.events(), &mut self.buf);
        }
        let len = self.buf.len() as u64;
        // Where the reader is once it has taken the passed batches; a new
        // segment's start is stepped over with them.
        let start = self.at;
        if !self.write(retry).await {
            return;
        }
        self.shadowed(start, self.at, len);
        self.publish_gauges();
        *lock(&self.shared.written) = self.at;
        self.shared.more.notify_one();
    }

    /// Hands a batch of a source that loses nothing by waiting to the
    /// reader in memory, if it has room: the disk is not touched, and the
    /// batch keeps its acknowledgements, which the sink settles. Until
    /// then the source keeps its events (a file source its checkpoint), so
    /// a crash loses none of them. Gives the batch back if there is no room.
    fn pass(&mut self, mut batch: EventBatch) -> Result<(), EventBatch> {
        let start = self.at;
        {
            let mut recent = lock(&self.shared.recent);
            if !(recent.has_room(batch.size()) && self.passed_room(batch.size())) {
                return Err(batch);
            }
            self.at.passed += 1;
            self.shared.events.fetch_add(batch.len() as u64, Relaxed);
            // The sink settles a token of the writer's; the source's
            // acknowledgements wait here, for its outcome or for a copy
            // on disk (`shadow`), whichever comes first.
            let (share, delivered) = token();
            let acks = std::mem::replace(&mut batch.acks, AckSet::one(share));
            let events = batch.share_events();
            self.passed.push_back(Passed { events, acks, delivered, since: Instant::now() });
            recent.bytes += batch.size();
            recent.records.push_back((start, self.at, batch));
        }
        self.publish_gauges();
        *lock(&self.shared.written) = self.at;
        self.shared.more.notify_one();
        Ok(())
    }

    /// Whether the passed batches the sink holds leave room for one of
    /// `size`.
    fn passed_room(&self, size: usize) -> bool {
        let held: usize = self.passed.iter().map(|p| p.events.size()).sum();
        // Two, however large: the sink may hold the tail of one in a
        // request it fills with the next (a batch larger than the sink's
        // requests, parsed lines say), and delivers it only then.
        self.passed.len() < PASSED_MIN || self.passed.len() < PASSED_MAX && held + size <= PASSED_BYTES
    }

    /// Waits, for a source that loses nothing by it, until the reader has
    /// room in memory for its batch: the source goes at the pace of the
    /// sink, and the batch goes to the reader without touching the disk.
    /// Without the wait a file source that reads faster than the sink
    /// delivers runs ahead, and every batch is written, read back and
    /// decoded: half again the work of a memory buffer.
    /// A reader that is stalled (the sink down) is not waited for: the
    /// disk takes what comes, as it does for sources that cannot wait. One
    /// that is far behind (draining what an outage left) is: the file
    /// source waits until the backlog is delivered, oldest first.
    async fn wait_for_room(&mut self, size: usize, passing: bool) {
        let mut seen = self.shared.handed.load(Relaxed);
        if self.stalled_at == Some(seen) {
            return;
        }
        self.stalled_at = None;
        let mut since_sync = Instant::now();
        let mut since_seen = Instant::now();
        let mut since_delivered = Instant::now();
        loop {
            let taken = self.shared.taken.notified();
            if lock(&self.shared.recent).has_room(size) {
                // The passed batches leave room as the sink delivers them;
                // one that fills its requests slowly, or retries one, is
                // not waited for: the batch goes to disk, with copies.
                if !passing || self.passed_room(size) || since_delivered.elapsed() >= PASSED_WAIT {
                    return;
                }
            }
            // Woken now and then to settle passed batches delivered out of
            // order.
            let stall = READER_STALL.saturating_sub(since_seen.elapsed());
            let nap = tokio::time::sleep(stall.min(PASSED_WAIT));
            tokio::select! {
                _ = taken => {}
                // A passed batch delivered: its source hears now, and its
                // events are freed.
                status = first_delivered(&mut self.passed) => {
                    self.settle_first(status);
                    since_delivered = Instant::now();
                }
                _ = nap => {}
            }
            if self.settle_delivered() {
                since_delivered = Instant::now();
            }
            let now = self.shared.handed.load(Relaxed);
            if now != seen {
                (seen, since_seen) = (now, Instant::now());
            } else if since_seen.elapsed() >= READER_STALL {
                self.stalled_at = Some(now);
                return;
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
        // The sync failed: what the segment holds may not be on disk, and
        // a sync of the next one would not make it so. Its sources read it
        // again after a restart.
        for acks in self.unsynced.drain(..) {
            acks.settle(BatchStatus::Errored);
        }
        let next = self.at.segment + 1;
        loop {
            match create_segment(&self.settings.dir, next) {
                Ok(f) => {
                    self.file = f;
                    self.at = Position::segment(next);
                    return;
                }
                Err(e) => {
                    tracing::error!(component = %self.metrics.id, "cannot start a disk buffer segment, retrying: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.settle_delivered();
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

/// The driver is gone (the sink stopped or was aborted): the passed
/// batches in the window will not be delivered, and their sources hear so.
fn forsake(shared: &Shared) {
    let mut recent = lock(&shared.recent);
    recent.records.clear();
    recent.bytes = 0;
    lock(&shared.shadows).clear();
}

/// The end of the shadow run that starts at `at`, if one does; runs the
/// reader went past (a damaged segment skipped) go.
fn take_shadow(shared: &Shared, at: Position) -> Option<(Position, u64)> {
    let mut shadows = lock(&shared.shadows);
    while let Some((start, end, bytes)) = shadows.front().copied() {
        if start > at {
            return None;
        }
        shadows.pop_front();
        if start == at {
            return Some((end, bytes));
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
        if let Some((end, bytes)) = take_shadow(&shared, at) {
            // Copies of batches handed from memory already: stepped over,
            // settled once those are (the acker takes them in order).
            let (share, status) = token();
            share.settle(BatchStatus::Delivered);
            let _ = acks.send(Handed { end, events: 0, bytes, status });
            at = end;
            continue;
        }
        if let Some((end, mut batch)) = take_recent(&shared, at) {
            // Room in the window for a writer that waits.
            shared.taken.notify_one();
            let (share, status) = token();
            if end.passed > 0 {
                // Passed in memory: the source's own acknowledgements go
                // with it, settled by the sink.
                batch.acks.append(AckSet::one(share));
            } else {
                batch.acks = AckSet::one(share);
            }
            let (n, bytes) = (batch.len() as u64, end.offset - at.offset);
            if out.send(batch).await.is_err() {
                return forsake(&shared);
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
            at = Position::segment(at.segment + 1);
            continue;
        };
        match read_record(&mut f, &path, at.offset) {
            Ok(Some(Record { events, size, len })) => {
                at = Position { offset: at.offset + len, passed: 0, ..at };
                file = Some((f, at));
                let (share, status) = token();
                let n = events.len() as u64;
                // The size the decoder counted: no walk over every event.
                let batch = EventBatch::with_size(events, AckSet::one(share), size);
                if out.send(batch).await.is_err() {
                    return forsake(&shared);
                }
                let _ = acks.send(Handed { end: at, events: n, bytes: len, status });
                shared.handed.fetch_add(1, Relaxed);
                shared.taken.notify_one();
            }
            Ok(None) if at.segment < written.segment => {
                at = Position::segment(at.segment + 1);
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
                    at = Position::segment(at.segment + 1);
                } else {
                    // On from the records still in memory, which are
                    // intact (a passed one is nowhere else), or the end.
                    let front = lock(&shared.recent).records.front().map(|r| r.0);
                    at = front.filter(|f| *f > at && *f < written).unwrap_or(written);
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
    if acked.same_byte(saved) {
        *saved = acked;
        metrics.buffer_events.store(shared.events.load(Relaxed), Relaxed);
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
    /// Not damage: an intact record a newer hostwatch wrote. The agent
    /// refuses to start with it, and `repair` leaves it.
    pub newer: bool,
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
            if d.newer {
                writeln!(
                    f,
                    "  WRITTEN BY A NEWER HOSTWATCH: {} from byte {}: {}; run that version until the \
                     buffer is empty",
                    d.path.display(),
                    d.offset,
                    d.error
                )?;
            } else {
                writeln!(f, "  DAMAGED: {} from byte {}: {}", d.path.display(), d.offset, d.error)?;
            }
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
                    let newer = newer_record(&path, at).ok().flatten().is_some_and(|(n, _)| n == at);
                    report.damage.push(Damage { path: path.clone(), offset: at, error, newer });
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
        batch.may_wait = true;
        batch.rereadable = true;
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
            let acked = tokio::time::timeout(Duration::from_secs(5), status).await;
            assert_eq!(acked.ok(), Some(BatchStatus::Delivered), "batch {} was not acknowledged", i + 1);
        }
        // The agent stops with the sink still stuck: what the driver held
        // is not delivered.
        drop(tx);
        drop(driver);
        tasks.finish().await;

        let (_tx, mut driver, _tasks) = open(dir.path()).await;
        for i in 1..=40 {
            let b = tokio::time::timeout(Duration::from_secs(5), driver.recv()).await.unwrap().unwrap();
            assert_eq!((b.events()[0].time, b.len()), (1000 * i, 100), "out of order");
            b.acks.settle(BatchStatus::Delivered);
        }
    }

    /// Batches larger than the sink's requests (lines a transform parsed
    /// into many fields): the sink delivers the tail of one only with the
    /// head of the next, so the next passes although the first, on its own,
    /// fills the room for passed batches. Nothing goes to disk.
    #[tokio::test]
    async fn a_large_batch_passes_while_the_sink_holds_the_tail_of_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut driver, tasks) = open(dir.path()).await;
        let large = |base: i64| {
            let (share, status) = token();
            let mut batch = EventBatch::with_size(events(100, base), AckSet::one(share), PASSED_BYTES + 1);
            batch.may_wait = true;
            batch.rereadable = true;
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
    #[tokio::test]
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
    #[tokio::test]
    async fn a_batch_its_source_cannot_read_again_goes_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut driver, _tasks) = open(dir.path()).await;
        let (mut batch, status) = file_batch(10, 0);
        batch.rereadable = false;
        tx.send(batch).await.unwrap();
        let _held = driver.recv().await.unwrap();
        assert_eq!(tokio::time::timeout(PASSED_HOLD / 2, status).await.ok(), Some(BatchStatus::Delivered));
        assert!(bytes_on_disk(dir.path()) > 0);
    }

    /// Copies go to disk even past `max_size`: refused, they would hold
    /// their source's checkpoint for as long as the sink is down.
    #[tokio::test]
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
    #[tokio::test]
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
        assert!(
            futures_util::poll!(&mut first_status).is_pending(),
            "the first was acknowledged undelivered"
        );
        first.acks.settle(BatchStatus::Delivered);
        assert_eq!(first_status.await, BatchStatus::Delivered);
        assert_eq!(bytes_on_disk(dir.path()), 0);
    }

    /// A sink that gathers many small batches into one request before it
    /// delivers any (a slow file, one line at a time) does not hold the
    /// source back: past a bound, the batches go to disk with copies of
    /// those passed, instead of waiting for deliveries that wait for them.
    #[tokio::test]
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
        let Err(e) = start(settings(dir.path()), rx, metrics).await else {
            panic!("a newer buffer was opened")
        };
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
}
