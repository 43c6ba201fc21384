//! The writer: takes batches from the sink's input channel and, as the
//! pass-through policy (`policy`) decides, either holds their source,
//! hands them to the reader in memory ("passed": acknowledged to the
//! source once the sink delivers them, as with a memory buffer), or
//! appends each as one record (`record`) to the current segment. It syncs
//! the file every `sync_interval` and only then acknowledges what it wrote
//! to the sources: from there on the disk holds them. Passed batches the
//! sink still holds get copies on disk (`shadow`) before anything else is
//! written, and when the sink holds one for long. A full disk makes the
//! sources wait (`block`) or drops (`drop_newest`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{self, Decision, Facts, Policy};
use super::segment::create_segment;
use super::{Position, Settings, Shared, lock};
use crate::buffer::record;
use crate::event::ack::{AckReceiver, token};
use crate::event::{AckSet, BatchStatus, EventBatch};
use crate::pipeline::channel::{Receiver, WhenFull};
use crate::pipeline::metrics::{ComponentMetrics, DropReason};

pub(super) struct Writer {
    settings: Settings,
    shared: Arc<Shared>,
    metrics: Arc<ComponentMetrics>,
    file: File,
    at: Position,
    buf: Vec<u8>,
    /// Acknowledgements of batches written since the last sync.
    unsynced: Vec<AckSet>,
    /// Whether a batch passes, is written or waits.
    policy: Policy,
    /// Batches passed in memory whose delivery is not settled yet, oldest
    /// first.
    passed: VecDeque<Passed>,
}

/// A batch passed to the reader in memory: its events (shared, not
/// copied), its source's acknowledgements, and the outcome of its delivery.
struct Passed {
    events: EventBatch,
    acks: AckSet,
    delivered: AckReceiver,
    since: Instant,
}

/// The outcome of the oldest passed batch's delivery; never, if none waits.
async fn first_delivered(passed: &mut VecDeque<Passed>) -> BatchStatus {
    match passed.front_mut() {
        Some(p) => (&mut p.delivered).await,
        None => std::future::pending().await,
    }
}

impl Writer {
    /// A writer that appends to `file`, which ends at `at`.
    pub(super) fn new(
        settings: Settings,
        shared: Arc<Shared>,
        metrics: Arc<ComponentMetrics>,
        file: File,
        at: Position,
    ) -> Self {
        Writer {
            settings,
            shared,
            metrics,
            file,
            at,
            buf: Vec::new(),
            unsynced: Vec::new(),
            policy: Policy::default(),
            passed: VecDeque::new(),
        }
    }

    pub(super) async fn run(mut self, mut input: Receiver) {
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
                    if self.policy.shadow_due(self.passed.front().map(|p| p.since), Instant::now()) {
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
        let mut since_sync = Instant::now();
        loop {
            let taken = self.shared.taken.notified();
            let facts = self.facts(batch.size());
            match self.policy.decide(batch.replay, &facts) {
                Decision::Pass => {
                    drop(taken);
                    match self.pass(batch) {
                        Ok(()) => return,
                        Err(back) => {
                            batch = back;
                            break;
                        }
                    }
                }
                Decision::Write => break,
                // The source goes at the pace of the sink, and its batch,
                // once the reader has room, to the reader without touching
                // the disk.
                Decision::Wait(nap) => {
                    tokio::select! {
                        _ = taken => {}
                        // A passed batch delivered: its source hears now,
                        // and its events are freed.
                        status = first_delivered(&mut self.passed) => {
                            self.settle_first(status);
                            self.policy.delivered(Instant::now());
                        }
                        _ = tokio::time::sleep(nap) => {}
                    }
                    if self.settle_delivered() {
                        self.policy.delivered(Instant::now());
                    }
                    // What is written is acknowledged while waiting.
                    if since_sync.elapsed() >= self.settings.sync_interval {
                        self.sync().await;
                        since_sync = Instant::now();
                    }
                }
            }
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
        policy::passed_room(self.passed.len(), held, size)
    }

    /// What the policy needs to know about a batch of `size`.
    fn facts(&self, size: usize) -> Facts {
        Facts {
            now: Instant::now(),
            window_room: lock(&self.shared.recent).has_room(size),
            passed_room: self.passed_room(size),
            handed: self.shared.handed.load(Relaxed),
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
