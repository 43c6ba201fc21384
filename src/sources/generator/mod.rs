//! `generator`: synthetic events at a steady rate, for examples, tests and
//! benchmarks. Each event's data is `{"message": "<message> seq=N", "seq": N}`
//! with `N` counting from 0, so a receiver can check that none is missing.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::context::SourceContext;
use crate::config::BuildError;
use crate::event::id::IdGen;
use crate::event::{AckSet, Event, EventBatch, EventId, Map, Str, Value, time};

/// `type: generator`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Events per second; `0` sends as fast as the pipeline takes them. Default: `1`.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Stop after this many events. Default: none, run until the agent stops.
    #[serde(default)]
    pub count: Option<u64>,
    /// The events' `type`. Default: `hostwatch.generated`.
    #[serde(default = "default_event_type")]
    pub event_type: String,
    /// The events' message, to which ` seq=N` is appended. Default: `hello from hostwatch`.
    #[serde(default = "default_message")]
    pub message: String,
    /// The most events sent in one batch. Default: `1000`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_rate() -> f64 {
    1.0
}
fn default_event_type() -> String {
    "hostwatch.generated".to_string()
}
fn default_message() -> String {
    "hello from hostwatch".to_string()
}
fn default_batch_size() -> usize {
    1000
}

pub struct Generator {
    config: Config,
    ty: Str,
}

impl Generator {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if !(config.rate >= 0.0 && config.rate.is_finite()) {
            return Err(BuildError::new("`rate` must be a number of events per second, 0 or more"));
        }
        if config.batch_size == 0 {
            return Err(BuildError::new("`batch_size` must be at least 1"));
        }
        let ty = Str::interned(&config.event_type);
        Ok(Generator { config: config.clone(), ty })
    }

    pub async fn run(self, mut cx: SourceContext) -> Result<(), String> {
        cx.ready(Ok(()));
        let key_message = Str::from_static("message");
        let key_seq = Str::from_static("seq");
        let mut ids = IdGen::new();
        let start = Instant::now();
        let mut seq: u64 = 0;
        let limit = self.config.count.unwrap_or(u64::MAX);
        while seq < limit && !cx.shutdown.is_cancelled() {
            // How many events are due by now at the configured rate.
            let due = if self.config.rate == 0.0 {
                limit - seq
            } else {
                let by_now = (start.elapsed().as_secs_f64() * self.config.rate) as u64 + 1;
                by_now.min(limit).saturating_sub(seq)
            };
            if due == 0 {
                let next = Duration::from_secs_f64((seq as f64) / self.config.rate);
                tokio::select! {
                    _ = tokio::time::sleep_until((start + next).into()) => {}
                    _ = cx.shutdown.cancelled() => break,
                }
                continue;
            }
            let n = due.min(self.config.batch_size as u64) as usize;
            let now = time::now_micros();
            ids.set_time((now / 1000) as u64);
            let mut events = Vec::with_capacity(n);
            for _ in 0..n {
                let mut data = Map::with_capacity(2);
                data.push(key_message.clone(), Value::from(format!("{} seq={seq}", self.config.message)));
                data.push(key_seq.clone(), Value::from(seq));
                events.push(Event {
                    id: EventId::Generated(ids.next_id()),
                    time: now,
                    ty: self.ty.clone(),
                    source: cx.source_uri.clone(),
                    subject: None,
                    host: cx.host.clone(),
                    attrs: Map::new(),
                    data: Value::Object(data),
                });
                seq += 1;
            }
            cx.metrics.add_in(n);
            tokio::select! {
                sent = cx.out.send(EventBatch::new(events, AckSet::new())) => {
                    if sent.is_err() {
                        break;
                    }
                }
                _ = cx.shutdown.cancelled() => break,
            }
        }
        Ok(())
    }
}
