//! A component's output: the channels of every component that lists it in
//! its `inputs`.

use std::sync::Arc;
use std::time::Duration;

use super::channel::{Closed, Permit, Sender};
use super::metrics::{ComponentMetrics, DropReason};
use crate::event::{BatchStatus, EventBatch};

/// Sends each batch to every downstream. Downstreams share the events (an
/// `Arc`), and each gets its own acknowledgement shares.
#[derive(Clone)]
pub struct Fanout {
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
    pub fn new(outputs: Vec<(String, Sender)>, metrics: Arc<ComponentMetrics>) -> Self {
        Fanout { outputs, metrics }
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
        if self.outputs.is_empty() {
            self.metrics.add_dropped(DropReason::NoOutput, batch.len());
            batch.acks.settle(BatchStatus::Delivered);
            return Ok(());
        }
        let (events, bytes) = (batch.len(), batch.size());
        loop {
            // Reserve everywhere first, in a fixed order (no two senders can
            // wait on each other), then push: all downstreams get the batch or
            // none does.
            let mut permits: Vec<Permit> = Vec::with_capacity(self.outputs.len());
            let mut closed = Vec::new();
            for (i, (_, tx)) in self.outputs.iter().enumerate() {
                let reserve = tx.reserve(events, bytes);
                let result = match wait {
                    None => reserve.await,
                    Some(wait) => match tokio::time::timeout(wait, reserve).await {
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
                // A downstream stopped (it failed, or the agent is stopping):
                // leave it out and try again with the others.
                for i in closed.into_iter().rev() {
                    let (id, _) = self.outputs.remove(i);
                    tracing::debug!(component = %self.metrics.id, downstream = %id, "downstream closed");
                }
                if self.outputs.is_empty() {
                    return Err(SendError::Closed);
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
