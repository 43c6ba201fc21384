//! The acknowledgement ledger: the acker task waits for the sink's driver
//! to settle each record in order, keeps the position of the first one not
//! delivered in the file `acked`, lowers the gauges, wakes a writer that
//! waits for room, and deletes segments once every record in them is
//! delivered.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::segment::segment_path;
use super::{Position, Shared};
use crate::event::BatchStatus;
use crate::event::ack::AckReceiver;
use crate::pipeline::metrics::ComponentMetrics;

/// The position of the first record not yet delivered, as last saved.
pub fn load_acked(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("acked")).ok()?;
    let (s, o) = text.trim().split_once(' ')?;
    Some(Position { segment: s.parse().ok()?, offset: o.parse().ok()?, passed: 0 })
}

pub(super) fn save_acked(dir: &Path, p: Position) -> io::Result<()> {
    let tmp = dir.join("acked.tmp");
    fs::write(&tmp, format!("{} {}\n", p.segment, p.offset))?;
    fs::rename(tmp, dir.join("acked"))
}

/// One record handed to the driver, for the acker.
pub(super) struct Handed {
    pub end: Position,
    pub events: u64,
    pub bytes: u64,
    pub status: AckReceiver,
}

pub(super) async fn ack(
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
