//! Acknowledgements: how a source learns that its events were delivered.
//!
//! A source that cares (a file source moving a checkpoint, `ingest` answering
//! only after delivery) creates one token ([`token`]) per batch it sends and keeps
//! the receiving half. The batch carries [`AckShare`]s: every fan-out, split
//! or copy of the batch clones a share, every sink that delivers its part
//! settles its share, and a transform that drops events on purpose settles
//! theirs. When the last share is gone the source gets the outcome.
//!
//! A share dropped without being settled (a sink stopped before it could
//! deliver) counts as a failure, and a failure anywhere wins: the source hears
//! `Errored` and must not move past the batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::oneshot;

/// The outcome of a batch, from best to worst; the worst of all shares wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum BatchStatus {
    /// Every sink delivered its events, or a transform dropped them on purpose.
    Delivered = 0,
    /// A sink refused them for good; they went to the dead-letter directory.
    Rejected = 1,
    /// They were not delivered (the agent stopped first): send them again.
    Errored = 2,
}

impl BatchStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => BatchStatus::Delivered,
            1 => BatchStatus::Rejected,
            _ => BatchStatus::Errored,
        }
    }
}

struct Inner {
    status: AtomicU8,
    tx: Option<oneshot::Sender<BatchStatus>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The source may have stopped listening; nothing to do then.
            let _ = tx.send(BatchStatus::from_u8(self.status.load(Ordering::Acquire)));
        }
    }
}

/// Creates a token for one batch: the share to attach to it, and the
/// receiver that resolves once every share is settled.
pub fn token() -> (AckShare, AckReceiver) {
    let (tx, rx) = oneshot::channel();
    let inner = Arc::new(Inner { status: AtomicU8::new(0), tx: Some(tx) });
    (AckShare(Some(inner)), AckReceiver(rx))
}

/// One holder's part of a batch's acknowledgement.
pub struct AckShare(Option<Arc<Inner>>);

impl AckShare {
    /// Settles this share with an outcome.
    pub fn settle(mut self, status: BatchStatus) {
        if let Some(inner) = self.0.take()
            && status != BatchStatus::Delivered
        {
            inner.status.fetch_max(status as u8, Ordering::AcqRel);
        }
    }
}

impl Clone for AckShare {
    fn clone(&self) -> Self {
        AckShare(self.0.clone())
    }
}

impl Drop for AckShare {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.status.fetch_max(BatchStatus::Errored as u8, Ordering::AcqRel);
        }
    }
}

impl std::fmt::Debug for AckShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckShare")
    }
}

/// The source's side of a token.
pub struct AckReceiver(oneshot::Receiver<BatchStatus>);

impl std::future::Future for AckReceiver {
    type Output = BatchStatus;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<BatchStatus> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(BatchStatus::Errored))
    }
}

/// The shares a batch carries: usually none (nobody waits) or one.
#[derive(Clone, Debug, Default)]
pub struct AckSet(Vec<AckShare>);

impl AckSet {
    pub fn new() -> Self {
        AckSet(Vec::new())
    }

    pub fn one(share: AckShare) -> Self {
        AckSet(vec![share])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Takes over the shares of another set.
    pub fn append(&mut self, other: AckSet) {
        let mut other = other;
        self.0.append(&mut other.0);
    }

    /// Adds a copy of every share of `other`, which keeps its own.
    pub fn extend_from(&mut self, other: &AckSet) {
        self.0.extend(other.0.iter().cloned());
    }

    pub fn settle(self, status: BatchStatus) {
        for share in self.0 {
            share.settle(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_last_share_settles() {
        let (share, mut rx) = token();
        let copy = share.clone();
        share.settle(BatchStatus::Delivered);
        assert!(futures_util::poll!(&mut rx).is_pending());
        copy.settle(BatchStatus::Delivered);
        assert_eq!(rx.await, BatchStatus::Delivered);
    }

    #[tokio::test]
    async fn failure_wins_and_unsettled_drop_is_errored() {
        let (share, rx) = token();
        let copy = share.clone();
        share.settle(BatchStatus::Rejected);
        copy.settle(BatchStatus::Delivered);
        assert_eq!(rx.await, BatchStatus::Rejected);

        let (share, rx) = token();
        let copy = share.clone();
        share.settle(BatchStatus::Delivered);
        drop(copy);
        assert_eq!(rx.await, BatchStatus::Errored);
    }
}
