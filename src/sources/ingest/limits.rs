//! What keeps hostile or broken clients from exhausting the agent: a time
//! limit on request heads and on bodies, a cap on connections, and one
//! memory budget shared by every body being received.
//!
//! A body is read into memory whole before it is decoded (a request is
//! all or nothing), so without a shared budget 40 clients each sending most
//! of a 10 MiB body and never finishing hold 400 MiB. Each body reserves
//! what it holds from the budget as it grows (a chunked body announces
//! no length), and one that would take the budget past its limit is answered
//! 503: it was not accepted, and the client sends it again later.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;

/// The bytes all unfinished request bodies hold together.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Budget { used: AtomicUsize::new(0), max }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A body's share of the budget, given back when it is dropped.
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    pub fn new(budget: &'a Budget) -> Self {
        Reservation { budget, bytes: 0 }
    }

    /// Grows the share to `total` bytes, or leaves it as it is and returns
    /// false if the budget has no room.
    fn grow_to(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.bytes);
        let before = self.budget.used.fetch_add(more, Ordering::Relaxed);
        if before + more > self.budget.max {
            self.budget.used.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        self.bytes += more;
        true
    }

    /// Gives back what is held beyond `total` bytes.
    fn shrink_to(&mut self, total: usize) {
        let less = self.bytes.saturating_sub(total);
        self.budget.used.fetch_sub(less, Ordering::Relaxed);
        self.bytes -= less;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Why a body was not read.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// Larger than `max_body_bytes`.
    TooLarge,
    /// The shared budget is spent.
    OverBudget,
    /// Not received within `body_timeout`.
    Timeout,
    /// The connection failed or the framing was wrong.
    Read(String),
}

/// Reads a whole body within `within`, holding no more than `max` bytes
/// and no more than its `reservation` could take from the budget.
///
/// The frames are kept as they come and joined once at the end: a buffer
/// that doubles as it grows would leave behind freed blocks as large as
/// itself, which the allocator keeps for a while, so that refused bodies
/// would cost more memory than the budget says.
pub async fn read_body<B>(
    mut body: B,
    max: usize,
    reservation: &mut Reservation<'_>,
    within: Duration,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut frames: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing the endpoint uses.
        let Ok(data) = frame.into_data() else { continue };
        len += data.len();
        if len > max {
            return Err(BodyError::TooLarge);
        }
        if !reservation.grow_to(len) {
            return Err(BodyError::OverBudget);
        }
        frames.push(data);
    }
    if frames.len() <= 1 {
        return Ok(frames.pop().unwrap_or_default());
    }
    // The joined copy exists beside the frames until they are dropped.
    if !reservation.grow_to(2 * len) {
        return Err(BodyError::OverBudget);
    }
    let mut joined = Vec::with_capacity(len);
    for f in &frames {
        joined.extend_from_slice(f);
    }
    drop(frames);
    reservation.shrink_to(len);
    Ok(Bytes::from(joined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunks(
        sizes: &[usize],
    ) -> StreamBody<impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, String>>> {
        let frames: Vec<_> =
            sizes.iter().map(|n| Ok(hyper::body::Frame::data(Bytes::from(vec![7u8; *n])))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_budget_bounds_bodies_together_and_is_given_back() {
        let budget = Budget::new(100_000);
        let mut first = Reservation::new(&budget);
        let long = Duration::from_secs(10);
        let body = read_body(chunks(&[20_000, 20_000]), 1 << 20, &mut first, long).await.unwrap();
        assert_eq!(body.len(), 40_000);
        assert_eq!(budget.used(), 40_000);
        let mut second = Reservation::new(&budget);
        let refused = read_body(chunks(&[30_000, 40_000]), 1 << 20, &mut second, long).await;
        assert_eq!(refused, Err(BodyError::OverBudget));
        drop(second);
        drop(first);
        assert_eq!(budget.used(), 0);
        // A body in one frame is taken as it is.
        let mut r = Reservation::new(&budget);
        let body = Full::new(Bytes::from(vec![1u8; 70_000]));
        read_body(body, 1 << 20, &mut r, long).await.unwrap();
        assert_eq!(budget.used(), 70_000);
    }

    #[tokio::test]
    async fn too_large_and_too_slow() {
        let budget = Budget::new(1 << 20);
        let mut r = Reservation::new(&budget);
        let long = Duration::from_secs(10);
        assert_eq!(read_body(chunks(&[600, 600]), 1000, &mut r, long).await, Err(BodyError::TooLarge));
        let never =
            StreamBody::new(futures_util::stream::pending::<Result<hyper::body::Frame<Bytes>, String>>());
        let mut r = Reservation::new(&budget);
        let slow = read_body(never, 1000, &mut r, Duration::from_millis(50)).await;
        assert_eq!(slow, Err(BodyError::Timeout));
    }
}
