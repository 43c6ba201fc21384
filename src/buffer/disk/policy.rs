//! The pass-through policy: what the writer does with a batch that comes,
//! given what it knows at that moment (`Facts`): hand it to the reader in
//! memory ("pass"), write it to disk, or hold its source a while longer.
//!
//! - A source that loses nothing by waiting (`Replay::Wait` or `Reread`,
//!   a file source) is held to the reader's pace while the sink delivers,
//!   rather than run ahead only for its events to be read back: the writer
//!   waits until the reader's window has room for the batch.
//! - A reader that hands nothing to the driver for `READER_STALL` is
//!   "stalled" (the sink down or stuck): the writer stops waiting for it,
//!   and waits again only once it moves.
//! - For `IMPATIENT_HOLD` after a batch of a source that cannot wait
//!   (`Replay::None`: ingest, capture) the sink is "impatient": no source is
//!   held, so that those batches do not queue behind held ones.
//! - A batch its source can read again (`Replay::Reread`) passes in memory
//!   when the window and the passed batches the sink still holds leave room
//!   (`passed_room`); while it waits for that room, a sink that delivers
//!   none of them for `PASSED_WAIT` is not waited for.
//! - Passed batches the sink holds get copies on disk ("shadow") before the
//!   disk takes anything else, and once the oldest has waited `PASSED_HOLD`
//!   for its delivery.
//!
//! The policy only decides: it reads no clock and touches no file, so that
//! its tests give it plain instants.

use std::time::Duration;

use tokio::time::Instant;

use crate::event::Replay;

/// A reader that hands nothing to the driver for this long is stalled (a
/// sink that is down or stuck): the writer stops waiting for it. Longer
/// than a slow sink's request takes, short enough that an outage costs a
/// file source only a moment's pause before the disk takes over.
pub(super) const READER_STALL: Duration = Duration::from_secs(1);

/// How long after a batch from a source that cannot wait (ingest, capture)
/// no source is held to the reader's pace.
pub(super) const IMPATIENT_HOLD: Duration = Duration::from_secs(10);

/// How long a passed batch may wait for its delivery before the writer
/// puts a copy on disk (see `Writer::shadow`).
pub(super) const PASSED_HOLD: Duration = Duration::from_secs(2);

/// At most this many passed batches, holding about this many bytes of
/// events, wait for their delivery: a sink holds its requests encoded,
/// and these events are kept besides, for the copies. A file source waits
/// for room while the sink delivers; once none is delivered for
/// `PASSED_WAIT`, the batch goes to disk with copies of those passed: a
/// sink that fills its requests slowly (a slow file, or many small
/// batches), or retries one, would hold the source back. Two pass however
/// large they are (see `passed_room`).
pub(super) const PASSED_MAX: usize = 1024;
pub(super) const PASSED_MIN: usize = 2;
pub(super) const PASSED_BYTES: usize = 4 << 20;
pub(super) const PASSED_WAIT: Duration = Duration::from_millis(100);

/// Whether `held` passed batches holding `bytes` of events leave room for
/// one more of `size`.
pub(super) fn passed_room(held: usize, bytes: usize, size: usize) -> bool {
    // Two, however large: the sink may hold the tail of one in a request
    // it fills with the next (a batch larger than the sink's requests,
    // parsed lines say), and delivers it only then.
    held < PASSED_MIN || held < PASSED_MAX && bytes + size <= PASSED_BYTES
}

/// What the writer knows when it decides about a batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Facts {
    pub now: Instant,
    /// The reader's window (`Recent`) has room for the batch.
    pub window_room: bool,
    /// The passed batches the sink holds leave room for it.
    pub passed_room: bool,
    /// Records the reader has handed to the driver so far.
    pub handed: u64,
}

/// What to do with the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Hand it to the reader in memory; the disk is not touched.
    Pass,
    /// Write it to disk, after copies of the passed batches.
    Write,
    /// Hold its source: wake at the latest after this long (sooner if the
    /// reader takes a record or a passed batch is delivered) and ask again.
    Wait(Duration),
}

/// The writer's policy, and what it remembers between batches.
#[derive(Debug, Default)]
pub(super) struct Policy {
    /// The reader's count of records handed when it was last found stalled:
    /// no waiting for it until it moves again.
    stalled_at: Option<u64>,
    /// When a batch from a source that cannot wait last came.
    impatient: Option<Instant>,
    /// The batch being held, if one is.
    waiting: Option<Waiting>,
}

/// A batch being held: the reader's count when it last moved, and when
/// the wait began or a passed batch was last delivered.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    seen: u64,
    seen_at: Instant,
    delivered_at: Instant,
}

impl Policy {
    /// Decides about a batch of a source that can do `replay`: asked when
    /// it comes, and again after every `Decision::Wait`, until it is passed
    /// or written.
    pub fn decide(&mut self, replay: Replay, f: &Facts) -> Decision {
        let Some(w) = self.waiting.as_mut() else {
            return self.first(replay, f);
        };
        if f.handed != w.seen {
            (w.seen, w.seen_at) = (f.handed, f.now);
        } else if f.now.saturating_duration_since(w.seen_at) >= READER_STALL {
            self.stalled_at = Some(f.handed);
            self.waiting = None;
            return place(replay, f);
        }
        self.wait_or_place(replay, f)
    }

    /// A passed batch was delivered: a held source waits for the next one
    /// from now on.
    pub fn delivered(&mut self, now: Instant) {
        if let Some(w) = &mut self.waiting {
            w.delivered_at = now;
        }
    }

    /// Whether the passed batches get their copies on disk now, the oldest
    /// having been passed at `oldest`: a sink that holds one this long may
    /// be down, and the source quiet (nothing comes that would write them).
    pub fn shadow_due(&self, oldest: Option<Instant>, now: Instant) -> bool {
        oldest.is_some_and(|t| now.saturating_duration_since(t) >= PASSED_HOLD)
    }

    fn first(&mut self, replay: Replay, f: &Facts) -> Decision {
        if !replay.may_wait() {
            // A sink fed by sources that cannot wait as well: theirs would
            // queue behind the held ones, so none are held for a while.
            self.impatient = Some(f.now);
            return Decision::Write;
        }
        let impatient = self.impatient.is_some_and(|t| f.now.saturating_duration_since(t) < IMPATIENT_HOLD);
        if impatient || self.stalled_at == Some(f.handed) {
            return place(replay, f);
        }
        self.stalled_at = None;
        self.waiting = Some(Waiting { seen: f.handed, seen_at: f.now, delivered_at: f.now });
        self.wait_or_place(replay, f)
    }

    fn wait_or_place(&mut self, replay: Replay, f: &Facts) -> Decision {
        let Some(w) = self.waiting else { return place(replay, f) };
        // The passed batches leave room as the sink delivers them; one that
        // fills its requests slowly, or retries one, is not waited for: the
        // batch goes to disk, with copies.
        let undelivered = f.now.saturating_duration_since(w.delivered_at) >= PASSED_WAIT;
        if f.window_room && (!replay.rereadable() || f.passed_room || undelivered) {
            self.waiting = None;
            return place(replay, f);
        }
        // Woken now and then to settle passed batches delivered out of
        // order.
        let stall = READER_STALL.saturating_sub(f.now.saturating_duration_since(w.seen_at));
        Decision::Wait(stall.min(PASSED_WAIT))
    }
}

/// Once the source is not held: a batch it can read again passes if there
/// is room for it, any other is written.
fn place(replay: Replay, f: &Facts) -> Decision {
    if replay.rereadable() && f.window_room && f.passed_room { Decision::Pass } else { Decision::Write }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moment `ms` milliseconds after `t0`.
    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn facts(now: Instant, window_room: bool, passed_room: bool, handed: u64) -> Facts {
        Facts { now, window_room, passed_room, handed }
    }

    #[test]
    fn a_source_that_cannot_wait_is_written_and_makes_the_sink_impatient() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        assert_eq!(p.decide(Replay::None, &facts(t0, true, true, 0)), Decision::Write);
        // A file source is not held meanwhile: it passes, or is written.
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 9_000), true, true, 0)), Decision::Pass);
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 9_500), false, true, 0)), Decision::Write);
        assert_eq!(p.decide(Replay::Wait, &facts(at(t0, 9_600), false, true, 0)), Decision::Write);
        // Once the hold is over, it is held again.
        assert!(matches!(
            p.decide(Replay::Reread, &facts(at(t0, 10_000), false, true, 0)),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn a_source_that_may_wait_is_held_until_the_window_has_room() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        let d = p.decide(Replay::Reread, &facts(t0, false, true, 5));
        assert_eq!(d, Decision::Wait(PASSED_WAIT));
        // The reader moves on, the window is still full.
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 50), false, true, 6)), Decision::Wait(PASSED_WAIT));
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 60), true, true, 7)), Decision::Pass);
        // One it cannot read again waits the same way, and is written.
        assert!(matches!(p.decide(Replay::Wait, &facts(at(t0, 70), false, true, 7)), Decision::Wait(_)));
        assert_eq!(p.decide(Replay::Wait, &facts(at(t0, 80), true, false, 8)), Decision::Write);
    }

    #[test]
    fn a_stalled_reader_is_not_waited_for_until_it_moves() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        assert_eq!(p.decide(Replay::Reread, &facts(t0, false, true, 3)), Decision::Wait(PASSED_WAIT));
        // Woken with the reader where it was: the nap shortens to the stall.
        assert_eq!(
            p.decide(Replay::Reread, &facts(at(t0, 950), false, true, 3)),
            Decision::Wait(Duration::from_millis(50))
        );
        // A second without a record handed: stalled; the batch is written.
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 1_000), false, true, 3)), Decision::Write);
        // The next is not held while the reader stays where it stalled;
        // with room in the window it passes.
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 5_000), false, true, 3)), Decision::Write);
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 5_001), true, true, 3)), Decision::Pass);
        // It moves: held again.
        assert!(matches!(p.decide(Replay::Reread, &facts(at(t0, 5_002), false, true, 4)), Decision::Wait(_)));
    }

    #[test]
    fn a_sink_that_delivers_no_passed_batch_for_a_while_is_not_waited_for() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        // Room in the window, none among the passed batches: held.
        assert_eq!(p.decide(Replay::Reread, &facts(t0, true, false, 1)), Decision::Wait(PASSED_WAIT));
        // A delivery restarts the wait.
        p.delivered(at(t0, 90));
        assert!(matches!(p.decide(Replay::Reread, &facts(at(t0, 120), true, false, 2)), Decision::Wait(_)));
        // None for `PASSED_WAIT`: written (with copies of those passed).
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 190), true, false, 3)), Decision::Write);
        // A delivery that leaves room: the next passes at once.
        assert_eq!(p.decide(Replay::Reread, &facts(at(t0, 200), true, true, 4)), Decision::Pass);
    }

    #[test]
    fn copies_are_due_once_the_oldest_passed_batch_waits_long() {
        let t0 = Instant::now();
        let p = Policy::default();
        assert!(!p.shadow_due(None, at(t0, 60_000)));
        assert!(!p.shadow_due(Some(t0), at(t0, 1_999)));
        assert!(p.shadow_due(Some(t0), at(t0, 2_000)));
    }

    #[test]
    fn two_passed_batches_fit_however_large_and_more_within_the_bounds() {
        assert!(passed_room(0, 0, PASSED_BYTES * 2));
        assert!(passed_room(1, PASSED_BYTES * 2, PASSED_BYTES * 2));
        assert!(!passed_room(2, PASSED_BYTES, 1));
        assert!(passed_room(2, PASSED_BYTES - 10, 10));
        assert!(!passed_room(PASSED_MAX, 0, 0));
    }
}
