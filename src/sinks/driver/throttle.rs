//! Errors that repeat at every attempt, logged at most once a minute.
//!
//! A sink whose credentials are refused, or whose batches are all refused,
//! fails at each request: thousands of times a minute under load. The first
//! failure is logged at once, saying what to fix; then at most one line a
//! minute, with the number of failures since; and one line when it stops.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The shortest time between two lines about the same trouble.
const EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<State>,
    /// Set while in trouble: every delivered batch asks, without the lock.
    troubled: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line was logged; `None` while all is well.
    logged: Option<Instant>,
    /// Failures since that line.
    since: u64,
}

/// What to do about one failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it: the first failure (`0`), or the first after a minute, with
    /// the failures that were not logged.
    Log(u64),
    Quiet,
}

impl Throttle {
    /// Counts a failure; says whether to log it.
    pub fn failed(&self) -> Verdict {
        self.failed_at(Instant::now())
    }

    fn failed_at(&self, now: Instant) -> Verdict {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.troubled.store(true, Relaxed);
        match s.logged {
            Some(at) if now.duration_since(at) < EVERY => {
                s.since += 1;
                Verdict::Quiet
            }
            _ => {
                let quiet = s.since;
                s.logged = Some(now);
                s.since = 0;
                Verdict::Log(quiet)
            }
        }
    }

    /// The trouble is over; true once (to log the recovery), false if there
    /// was none.
    pub fn recovered(&self) -> bool {
        if !self.troubled.load(Relaxed) {
            return false;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was = s.logged.take().is_some();
        s.since = 0;
        self.troubled.store(false, Relaxed);
        was
    }
}

/// The log lines of a sink's delivery troubles, in one place.
pub fn auth_failed(component: &str, verdict: Verdict, events: usize, retry_in: Duration, reason: &str) {
    let retry_in = humantime::format_duration(Duration::from_millis(retry_in.as_millis() as u64));
    match verdict {
        Verdict::Log(0) => tracing::error!(
            component, events, %retry_in,
            "{reason}; the events wait and are retried until the credentials are accepted"
        ),
        Verdict::Log(n) => tracing::error!(
            component, events, %retry_in, attempts_since_last_report = n,
            "still refused: {reason}"
        ),
        Verdict::Quiet => tracing::debug!(component, events, %retry_in, "{reason}"),
    }
}

pub fn auth_recovered(component: &str) {
    tracing::info!(component, "the destination accepts the agent's credentials again; delivering");
}

pub fn dead_lettered(
    component: &str,
    verdict: Verdict,
    events: usize,
    reason: &str,
    written: &Result<String, String>,
) {
    let (file, error) = match written {
        Ok(file) => (file.as_str(), ""),
        Err(e) => ("", e.as_str()),
    };
    match verdict {
        Verdict::Log(n) if error.is_empty() => tracing::error!(
            component,
            events,
            file,
            refused_since_last_report = n,
            "refused for good, written to the dead-letter directory (`hostwatch dead-letters list`): {reason}"
        ),
        Verdict::Log(n) => tracing::error!(
            component,
            events,
            refused_since_last_report = n,
            "refused for good ({reason}), and could not be written to the dead-letter directory: {error}"
        ),
        Verdict::Quiet => tracing::debug!(component, events, file, "refused for good: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_at_once_then_once_a_minute_with_a_count() {
        let t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.failed_at(start), Verdict::Log(0));
        for s in 1..60 {
            assert_eq!(t.failed_at(start + Duration::from_secs(s)), Verdict::Quiet);
        }
        assert_eq!(t.failed_at(start + Duration::from_secs(61)), Verdict::Log(59));
        assert!(t.recovered());
        assert!(!t.recovered());
        assert_eq!(t.failed_at(start + Duration::from_secs(62)), Verdict::Log(0));
    }
}
