//! The bounded channel on every edge of the pipeline.
//!
//! Bounded in events and in estimated bytes rather than in batches, so that
//! memory stays bounded whatever the batch sizes. Many senders, one receiver.
//! A sender can first reserve room and push later: fan-out reserves on every
//! downstream before it pushes to any, so a batch reaches all of them or none
//! (an `ingest` request answered 503 has not been half-delivered).
//!
//! Locking is per batch, never per event.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use tokio::sync::Notify;

use super::metrics::{ComponentMetrics, DropReason};
use crate::event::{BatchStatus, EventBatch};

/// What a full channel does with a new batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: the pressure reaches the sources, which slow down.
    #[default]
    Block,
    /// Drop the new batch and count it.
    DropNewest,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub when_full: WhenFull,
}

struct State {
    queue: VecDeque<EventBatch>,
    /// Queued plus reserved.
    events: usize,
    bytes: usize,
    senders: usize,
    receiver_alive: bool,
    /// Closed by its owner ([`Handle::close`]): senders get [`Closed`], the
    /// receiver ends once what was queued or reserved is through.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    limits: Limits,
    /// Wakes the receiver when a batch arrives or the last sender leaves.
    readable: Notify,
    /// Wakes senders when room is made.
    writable: Notify,
    /// Gauges of the owning component (sinks report their buffer).
    metrics: Option<Arc<ComponentMetrics>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-changed
        // (every change is a single push or pop), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, st: &State) {
        if let Some(m) = &self.metrics {
            m.buffer_events.store(st.events as u64, Relaxed);
            m.buffer_bytes.store(st.bytes as u64, Relaxed);
        }
    }
}

/// Creates a channel with the given limits.
pub fn channel(limits: Limits, metrics: Option<Arc<ComponentMetrics>>) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            events: 0,
            bytes: 0,
            senders: 1,
            receiver_alive: true,
            closed: false,
        }),
        limits,
        readable: Notify::new(),
        writable: Notify::new(),
        metrics,
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

/// The receiver is gone: the downstream component stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

pub struct Sender {
    shared: Arc<Shared>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender { shared: self.shared.clone() }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.readable.notify_one();
        }
    }
}

/// The pipeline's own hold on a channel, which does not keep it open: it
/// makes senders for new upstreams and closes the channel for a component
/// that a reload replaces, whichever upstreams still hold senders.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// A new sender, or `None` once the channel is closed.
    pub fn sender(&self) -> Option<Sender> {
        let mut st = self.shared.lock();
        if st.closed || !st.receiver_alive {
            return None;
        }
        st.senders += 1;
        Some(Sender { shared: self.shared.clone() })
    }

    /// Closes the channel for writing.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.readable.notify_one();
        self.shared.writable.notify_waiters();
    }
}

/// Room reserved in a channel for one batch.
pub struct Permit {
    shared: Arc<Shared>,
    events: usize,
    bytes: usize,
    /// The channel was full and drops: the batch will be counted and dropped.
    drop: bool,
}

impl Sender {
    /// The channel's [`Handle`], which does not count as a sender.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Reserves room for `events` events of `bytes` bytes, waiting while the
    /// channel is full (or not, with `when_full: drop_newest`). A batch larger
    /// than the whole channel is let in when the channel is empty.
    pub async fn reserve(&self, events: usize, bytes: usize) -> Result<Permit, Closed> {
        let limits = self.shared.limits;
        loop {
            let notified = self.shared.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if !st.receiver_alive || st.closed {
                    return Err(Closed);
                }
                let fits = st.events + events <= limits.max_events && st.bytes + bytes <= limits.max_bytes;
                if fits || st.events == 0 {
                    st.events += events;
                    st.bytes += bytes;
                    return Ok(Permit { shared: self.shared.clone(), events, bytes, drop: false });
                }
                if limits.when_full == WhenFull::DropNewest {
                    return Ok(Permit { shared: self.shared.clone(), events: 0, bytes: 0, drop: true });
                }
            }
            notified.await;
        }
    }

    /// Reserves and sends.
    pub async fn send(&self, batch: EventBatch) -> Result<(), Closed> {
        let permit = self.reserve(batch.len(), batch.size()).await?;
        permit.send(batch);
        Ok(())
    }
}

impl Permit {
    /// Pushes the batch into the reserved room.
    pub fn send(mut self, batch: EventBatch) {
        if self.drop {
            if let Some(m) = &self.shared.metrics {
                m.add_dropped(DropReason::BufferFull, batch.len());
            }
            // The operator chose to drop rather than wait: for the source the
            // events are done with.
            batch.acks.settle(BatchStatus::Delivered);
            return;
        }
        {
            let mut st = self.shared.lock();
            // The reservation becomes the queued batch; sizes may differ a
            // little if the batch changed between reserve and send.
            st.events = st.events - self.events + batch.len();
            st.bytes = st.bytes - self.bytes + batch.size();
            st.queue.push_back(batch);
            self.shared.publish(&st);
        }
        self.events = 0;
        self.bytes = 0;
        self.shared.readable.notify_one();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.events > 0 || self.bytes > 0 {
            {
                let mut st = self.shared.lock();
                st.events -= self.events;
                st.bytes -= self.bytes;
            }
            self.shared.writable.notify_waiters();
            // A closed channel's receiver waits for reservations to end.
            self.shared.readable.notify_one();
        }
    }
}

pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next batch, or `None` once the queue is empty and every sender is
    /// gone, or the channel is closed and no room is reserved any more.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        loop {
            let notified = self.shared.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if let Some(batch) = st.queue.pop_front() {
                    st.events -= batch.len();
                    st.bytes -= batch.size();
                    self.shared.publish(&st);
                    drop(st);
                    self.shared.writable.notify_waiters();
                    return Some(batch);
                }
                if st.senders == 0 || (st.closed && st.events == 0) {
                    return None;
                }
            }
            notified.await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let queued: Vec<EventBatch> = {
            let mut st = self.shared.lock();
            st.receiver_alive = false;
            st.queue.drain(..).collect()
        };
        // Queued batches were not delivered: dropping them marks their
        // acknowledgements failed, so their sources send them again.
        drop(queued);
        self.shared.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AckSet, Event, EventId, Map, Str, Value, ack};
    use std::time::Duration;

    fn batch(n: usize) -> EventBatch {
        let e = Event {
            id: EventId::Generated(1),
            time: 0,
            ty: Str::from_static("t"),
            source: Str::from_static("s"),
            subject: None,
            host: Str::from_static("h"),
            attrs: Map::new(),
            data: Value::Null,
        };
        EventBatch::new(vec![e; n], AckSet::new())
    }

    fn limits(max_events: usize, when_full: WhenFull) -> Limits {
        Limits { max_events, max_bytes: usize::MAX, when_full }
    }

    #[tokio::test]
    async fn blocks_when_full_until_room_is_made() {
        let (tx, mut rx) = channel(limits(10, WhenFull::Block), None);
        tx.send(batch(8)).await.unwrap();
        let tx2 = tx.clone();
        let blocked = tokio::spawn(async move { tx2.send(batch(5)).await });
        // One thread (the test runtime's): yielding lets the sender run
        // until it waits for room.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!blocked.is_finished());
        assert_eq!(rx.recv().await.unwrap().len(), 8);
        blocked.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 5);
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn an_oversized_batch_enters_an_empty_channel() {
        let (tx, mut rx) = channel(limits(10, WhenFull::Block), None);
        tx.send(batch(50)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn drop_newest_drops_counts_and_acknowledges() {
        let m = Arc::new(ComponentMetrics::new("s", "sink", "console"));
        let (tx, mut rx) = channel(limits(10, WhenFull::DropNewest), Some(m.clone()));
        tx.send(batch(8)).await.unwrap();
        let (share, ack_rx) = ack::token();
        let mut b = batch(5);
        b.acks = AckSet::one(share);
        tx.send(b).await.unwrap();
        assert_eq!(ack_rx.await, BatchStatus::Delivered);
        assert_eq!(m.dropped(DropReason::BufferFull), 5);
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().len(), 8);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn unused_permits_give_room_back() {
        let (tx, _rx) = channel(limits(10, WhenFull::Block), None);
        let p = tx.reserve(10, 0).await.unwrap();
        drop(p);
        let p = tokio::time::timeout(Duration::from_millis(100), tx.reserve(10, 0)).await;
        assert!(p.is_ok());
    }

    #[tokio::test]
    async fn a_closed_channel_ends_after_what_was_queued_or_reserved() {
        let (tx, mut rx) = channel(limits(10, WhenFull::Block), None);
        let handle = tx.handle();
        tx.send(batch(2)).await.unwrap();
        let permit = tx.reserve(3, 0).await.unwrap();
        handle.close();
        assert_eq!(tx.send(batch(1)).await, Err(Closed));
        assert!(handle.sender().is_none());
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        permit.send(batch(3));
        assert_eq!(rx.recv().await.unwrap().len(), 3);
        // The sender is still there, yet the receiver ends.
        assert!(rx.recv().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn a_handle_makes_senders_that_keep_the_channel_open() {
        let (tx, mut rx) = channel(limits(10, WhenFull::Block), None);
        let extra = tx.handle().sender().unwrap();
        drop(tx);
        extra.send(batch(1)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        drop(extra);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_receiver_fails_queued_acknowledgements() {
        let (tx, rx) = channel(limits(10, WhenFull::Block), None);
        let (share, ack_rx) = ack::token();
        let mut b = batch(1);
        b.acks = AckSet::one(share);
        tx.send(b).await.unwrap();
        drop(rx);
        assert_eq!(ack_rx.await, BatchStatus::Errored);
        assert_eq!(tx.send(batch(1)).await, Err(Closed));
    }
}
