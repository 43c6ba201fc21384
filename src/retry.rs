//! Requests and retries, shared by every sink.
//!
//! A batch is kept until it is delivered: retryable failures (a refused
//! connection, a timeout, 429, 5xx) are retried without limit, with
//! exponential backoff and jitter, or after the delay the server asked for in
//! `Retry-After`. A sink stuck retrying stops taking new batches, and the
//! pressure reaches the sources. Permanent failures (a 400 for a malformed
//! batch) are not retried: the batch goes to the dead-letter directory.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{BuildError, Duration as ConfigDuration};

/// `request:` on a sink.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// How long one request may take before it is abandoned and retried. Default: `30s`.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Requests in flight at once. Default: `4` for network sinks, `1` for
    /// sinks that write in order (console, file). The http sink's
    /// single-event encodings send the events of a batch one after the other
    /// and this many batches at once; their default is `32`.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// The first delay before a retry; it doubles each time, with jitter. Default: `200ms`.
    #[serde(default)]
    pub retry_initial_backoff: Option<ConfigDuration>,
    /// The longest delay between two retries. Default: `30s`.
    #[serde(default)]
    pub retry_max_backoff: Option<ConfigDuration>,
}

#[derive(Clone, Copy, Debug)]
pub struct RequestSettings {
    pub timeout: Duration,
    pub concurrency: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RequestConfig {
    /// The request timeout, before the rest is checked.
    pub fn timeout_or_default(&self) -> Duration {
        self.timeout.map_or(Duration::from_secs(30), |d| d.0)
    }

    /// Resolves the settings; `max_concurrency` is what the sink type allows.
    pub fn resolve(
        &self,
        default_concurrency: usize,
        max_concurrency: usize,
    ) -> Result<RequestSettings, BuildError> {
        let s = RequestSettings {
            timeout: self.timeout_or_default(),
            concurrency: self.concurrency.unwrap_or(default_concurrency),
            initial_backoff: self.retry_initial_backoff.map_or(Duration::from_millis(200), |d| d.0),
            max_backoff: self.retry_max_backoff.map_or(Duration::from_secs(30), |d| d.0),
        };
        if s.concurrency == 0 {
            return Err(BuildError::new("`request.concurrency` must be at least 1"));
        }
        if s.concurrency > max_concurrency {
            return Err(BuildError::new(format!(
                "`request.concurrency` can be at most {max_concurrency} for this sink: it writes in order"
            )));
        }
        if s.timeout.is_zero() {
            return Err(BuildError::new("`request.timeout` must be more than 0"));
        }
        if s.initial_backoff.is_zero() || s.initial_backoff > s.max_backoff {
            return Err(BuildError::new(
                "`request.retry_initial_backoff` must be more than 0 and at most `retry_max_backoff`",
            ));
        }
        Ok(s)
    }
}

/// How a sink's attempt to send a batch failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// Worth trying again: after `after` if the other side said so.
    Retry { after: Option<Duration>, reason: String },
    /// Will never succeed: dead-letter the batch.
    Permanent(String),
}

impl SendError {
    pub fn retry(reason: impl Into<String>) -> Self {
        SendError::Retry { after: None, reason: reason.into() }
    }
}

/// The longest `Retry-After` honoured; a larger one is taken as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Exponential backoff with "equal jitter": each delay is between half and
/// all of the exponential step, so retries of many agents spread out but
/// still back off.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(settings: &RequestSettings) -> Self {
        Backoff { next: settings.initial_backoff, max: settings.max_backoff }
    }

    /// The delay before the next attempt; `asked` is a server's `Retry-After`.
    pub fn delay(&mut self, asked: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        if let Some(asked) = asked {
            return asked.min(MAX_RETRY_AFTER);
        }
        let half = step / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let settings = RequestConfig::default().resolve(4, 4).unwrap();
        let mut b = Backoff::new(&settings);
        let mut steps = Vec::new();
        for _ in 0..12 {
            steps.push(b.delay(None));
        }
        assert!(steps[0] >= Duration::from_millis(100) && steps[0] <= Duration::from_millis(200));
        assert!(steps[3] >= Duration::from_millis(800) && steps[3] <= Duration::from_millis(1600));
        assert!(steps[11] >= Duration::from_secs(15) && steps[11] <= Duration::from_secs(30));
        assert_eq!(b.delay(Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(b.delay(Some(Duration::from_secs(9999))), MAX_RETRY_AFTER);
    }

    #[test]
    fn concurrency_is_bounded_by_the_sink() {
        let c = RequestConfig { concurrency: Some(4), ..Default::default() };
        assert!(c.resolve(1, 1).unwrap_err().message.contains("at most 1"));
    }
}
