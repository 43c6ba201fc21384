//! The reader: reads the log's records in order from where the last run
//! stopped and hands them to the sink's driver through a small memory
//! channel. The records written last it takes from memory instead (the
//! window, `Recent`), so that a sink that keeps up costs no read and no
//! decoding; copies of batches it handed from memory already (shadows) it
//! steps over. Each record handed goes to the acker (`ledger`) with the
//! token the driver settles. A record that is torn or damaged is skipped
//! with the rest of its segment, logged and counted.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ledger::Handed;
use super::segment::{Record, read_record, scan, segment_path};
use super::{Position, Shared, lock};
use crate::event::ack::token;
use crate::event::{AckSet, BatchStatus, EventBatch};
use crate::pipeline::channel;
use crate::pipeline::metrics::{ComponentMetrics, DropReason};

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

pub(super) async fn read(
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
