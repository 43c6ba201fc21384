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
//!   rather than run ahead only for its events to be read back (see
//!   `policy`); and its batches that the reader has room for go to it
//!   from memory without touching the disk ("passed"): they
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
//!
//! The files: `segment` (the segment files and their frames), `writer`,
//! `policy` (what the writer does with a batch: pass, write or wait),
//! `reader`, `ledger` (the acker and the file `acked`) and `inspect`
//! (`hostwatch buffer inspect|repair`).

mod inspect;
mod ledger;
mod policy;
mod reader;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

pub use inspect::{Damage, Report, cut, inspect};
pub use ledger::load_acked;
pub use segment::{scan, segment_path, segments};

use crate::event::EventBatch;
use crate::pipeline::channel::{self, Limits, Receiver, WhenFull};
use crate::pipeline::metrics::ComponentMetrics;
use segment::{create_segment, newer_record};
use writer::Writer;

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
    records: VecDeque<(Position, Position, EventBatch)>,
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
    shadows: Mutex<VecDeque<(Position, Position, u64)>>,
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
    let writer =
        Writer::new(settings.clone(), shared.clone(), metrics.clone(), file, Position::segment(first_new));
    let writer = tokio::spawn(writer.run(input));
    let reader = tokio::spawn(reader::read(
        settings.dir.clone(),
        start,
        shared.clone(),
        out,
        acks_tx,
        metrics.clone(),
    ));
    let acker = tokio::spawn(ledger::ack(settings.dir.clone(), start, shared, acks_rx, metrics));
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

/// The lock of the shared state, also after a task panicked with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
