//! Requests and retries, shared by every sink.
//!
//! A batch is kept until it is delivered: retryable failures (a refused
//! connection, a timeout, 429, 5xx) are retried without limit, with
//! exponential backoff and jitter, or after the delay the server asked for in
//! `Retry-After`. A sink stuck retrying stops taking new batches, and the
//! pressure reaches the sources. Refused credentials (401, 403, 407, a
//! broker's authentication error) are the agent's problem, not the batch's:
//! they are retried too, the data held, with a backoff of at most
//! [`AUTH_MAX_BACKOFF`]. Permanent failures (a 400 for a malformed batch) are
//! not retried: the batch goes to the dead-letter directory.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{BuildError, Duration as ConfigDuration};

/// `request:` on a sink.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
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
    /// The destination refused the agent's credentials: the batch is
    /// fine, and is retried until the credentials are fixed.
    Auth(String),
    /// Will never succeed: dead-letter the batch.
    Permanent(String),
}

impl SendError {
    /// A failure worth retrying. The broker clients report refused
    /// credentials only as text, so a reason that carries one of their
    /// authentication errors is an [`SendError::Auth`].
    pub fn retry(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        if is_auth_failure(&reason) {
            return SendError::Auth(format!(
                "the broker refused the agent's credentials: check the sink's user, password or token; {reason}"
            ));
        }
        SendError::Retry { after: None, reason }
    }

    /// The same error, its reason without secrets: reasons are logged,
    /// shown in `/health` and written next to dead letters, and a client
    /// library's message often holds the URL it was given.
    pub fn scrubbed(self) -> Self {
        use crate::util::redact::scrub;
        match self {
            SendError::Retry { after, reason } => {
                SendError::Retry { after, reason: scrub(&reason).into_owned() }
            }
            SendError::Auth(reason) => SendError::Auth(scrub(&reason).into_owned()),
            SendError::Permanent(reason) => SendError::Permanent(scrub(&reason).into_owned()),
        }
    }
}

/// The words with which the broker clients say that the credentials were
/// refused: AMQP `ACCESS_REFUSED`, NATS "authorization violation" and
/// "authentication expired", Redis `NOAUTH` and `WRONGPASS`, MQTT's CONNACK
/// codes, librdkafka's SASL and authentication failures.
fn is_auth_failure(reason: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "access_refused",
        "authorization violation",
        "authentication expired",
        "noauth",
        "wrongpass",
        "notauthorized",
        "badusernamepassword",
        "authentication failed",
        "authentication failure",
    ];
    // Once per failed attempt, not per event: the copy costs nothing.
    let reason = reason.to_ascii_lowercase();
    MARKERS.iter().any(|m| reason.contains(m))
}

/// The longest delay between two attempts while the credentials are refused:
/// fixing them should not wait long for the agent to notice.
pub const AUTH_MAX_BACKOFF: Duration = Duration::from_secs(60);

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

    /// Backs off while the credentials are refused: up to `retry_max_backoff`
    /// or [`AUTH_MAX_BACKOFF`], whichever is shorter.
    pub fn for_auth(&mut self) -> Duration {
        let max = self.max;
        self.max = max.min(AUTH_MAX_BACKOFF);
        self.next = self.next.min(self.max);
        let delay = self.delay(None);
        self.max = max;
        delay
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
    fn auth_failures_back_off_to_at_most_a_minute() {
        let c = RequestConfig {
            retry_max_backoff: Some(ConfigDuration(Duration::from_secs(600))),
            ..Default::default()
        };
        let mut b = Backoff::new(&c.resolve(4, 4).unwrap());
        let longest = (0..20).map(|_| b.for_auth()).max().unwrap();
        assert!(longest >= AUTH_MAX_BACKOFF / 2 && longest <= AUTH_MAX_BACKOFF, "{longest:?}");
        assert!(matches!(SendError::retry("NOAUTH Authentication required."), SendError::Auth(_)));
        assert!(matches!(SendError::retry("connection refused"), SendError::Retry { .. }));
    }

    #[test]
    fn concurrency_is_bounded_by_the_sink() {
        let c = RequestConfig { concurrency: Some(4), ..Default::default() };
        assert!(c.resolve(1, 1).unwrap_err().message.contains("at most 1"));
    }
}
