//! A component's output: the channels of every component that lists it in
//! its `inputs`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::channel::{Closed, Handle, Permit, Sender};
use super::metrics::{ComponentMetrics, DropReason};
use crate::event::{BatchStatus, EventBatch};

/// Where one output goes, as the pipeline wires it now. Every clone of the
/// output's [`Fanout`] shares it; a reload pauses it while the components
/// it feeds are replaced, then points it at the new ones. Senders check its
/// version once per batch (one atomic load).
pub struct Wiring {
    version: AtomicU64,
    state: Mutex<WiringState>,
    changed: Notify,
}

struct WiringState {
    outputs: Vec<(String, Handle)>,
    paused: bool,
}

impl Wiring {
    pub fn new(outputs: Vec<(String, Handle)>) -> Arc<Self> {
        Arc::new(Wiring {
            version: AtomicU64::new(0),
            state: Mutex::new(WiringState { outputs, paused: false }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WiringState> {
        // Every change is one assignment: a poisoned lock holds a whole state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds every batch sent from now on until [`Wiring::set`].
    pub fn pause(&self) {
        self.lock().paused = true;
        self.version.fetch_add(1, Release);
        self.changed.notify_waiters();
    }

    /// Sends from now on to `outputs`, and lets held batches go.
    pub fn set(&self, outputs: Vec<(String, Handle)>) {
        *self.lock() = WiringState { outputs, paused: false };
        self.version.fetch_add(1, Release);
        self.changed.notify_waiters();
    }
}

/// Sends each batch to every downstream. Downstreams share the events (an
/// `Arc`), and each gets its own acknowledgement shares.
#[derive(Clone)]
pub struct Fanout {
    wiring: Arc<Wiring>,
    /// The version of `wiring` that `outputs` was made from.
    seen: u64,
    /// How many downstreams the wiring had then: none means the output
    /// feeds nothing, which differs from feeding only closed downstreams.
    wired: usize,
    outputs: Vec<(String, Sender)>,
    metrics: Arc<ComponentMetrics>,
}

/// Sending did not happen in time; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Every downstream has stopped.
    Closed,
    /// No room within the deadline.
    Full,
}

impl Fanout {
    pub fn new(wiring: Arc<Wiring>, metrics: Arc<ComponentMetrics>) -> Self {
        let mut f = Fanout { wiring, seen: u64::MAX, wired: 0, outputs: Vec::new(), metrics };
        f.refresh();
        f
    }

    /// Takes the wiring's current downstreams if it changed. Returns whether
    /// it is paused.
    fn refresh(&mut self) -> bool {
        let version = self.wiring.version.load(Acquire);
        if version == self.seen {
            return false;
        }
        let st = self.wiring.lock();
        // Read again under the lock: the state and its version go together.
        self.seen = self.wiring.version.load(Acquire);
        self.outputs = st.outputs.iter().filter_map(|(id, h)| Some((id.clone(), h.sender()?))).collect();
        self.wired = st.outputs.len();
        if st.paused {
            // Forces the next call to look again.
            self.seen = u64::MAX;
        }
        st.paused
    }

    /// Waits while the wiring is paused, up to `deadline`.
    async fn wait_unpaused(&mut self, deadline: Option<tokio::time::Instant>) -> Result<(), SendError> {
        if self.wiring.version.load(Acquire) == self.seen {
            return Ok(());
        }
        loop {
            let wiring = self.wiring.clone();
            let changed = wiring.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.refresh() {
                return Ok(());
            }
            match deadline {
                None => changed.await,
                Some(d) => tokio::time::timeout_at(d, changed).await.map_err(|_| SendError::Full)?,
            }
        }
    }

    /// Sends a batch, waiting for room in every downstream.
    pub async fn send(&mut self, batch: EventBatch) -> Result<(), Closed> {
        match self.send_within(batch, None).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Closed),
        }
    }

    /// Sends a batch if every downstream has room within `wait`; otherwise
    /// sends nothing.
    pub async fn try_send_for(&mut self, batch: EventBatch, wait: Duration) -> Result<(), SendError> {
        self.send_within(batch, Some(wait)).await
    }

    async fn send_within(&mut self, batch: EventBatch, wait: Option<Duration>) -> Result<(), SendError> {
        if batch.is_empty() {
            batch.acks.settle(BatchStatus::Delivered);
            return Ok(());
        }
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let (events, bytes) = (batch.len(), batch.size());
        loop {
            self.wait_unpaused(deadline).await?;
            if self.wired == 0 {
                self.metrics.add_dropped(DropReason::NoOutput, batch.len());
                batch.acks.settle(BatchStatus::Delivered);
                return Ok(());
            }
            if self.outputs.is_empty() {
                return Err(SendError::Closed);
            }
            // Reserve everywhere first, in a fixed order (no two senders can
            // wait on each other), then push: all downstreams get the batch or
            // none does.
            let mut permits: Vec<Permit> = Vec::with_capacity(self.outputs.len());
            let mut closed = Vec::new();
            for (i, (_, tx)) in self.outputs.iter().enumerate() {
                let reserve = tx.reserve(events, bytes);
                let result = match deadline {
                    None => reserve.await,
                    Some(d) => match tokio::time::timeout_at(d, reserve).await {
                        Ok(r) => r,
                        Err(_) => return Err(SendError::Full),
                    },
                };
                match result {
                    Ok(p) => permits.push(p),
                    Err(Closed) => closed.push(i),
                }
            }
            if !closed.is_empty() {
                // A downstream stopped (it failed, the agent is stopping, or
                // a reload replaces it and the wiring says where to now):
                // leave it out and try again.
                drop(permits);
                for i in closed.into_iter().rev() {
                    let (id, _) = self.outputs.remove(i);
                    tracing::debug!(component = %self.metrics.id, downstream = %id, "downstream closed");
                }
                continue;
            }
            let last = permits.pop();
            for permit in permits {
                permit.send(batch.clone());
            }
            if let Some(permit) = last {
                permit.send(batch);
            }
            self.metrics.add_out(events);
            return Ok(());
        }
    }
}
