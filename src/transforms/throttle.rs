//! `throttle`: at most `limit` events per `window` for each value of `key`
//! (a token bucket: `limit` may come at once, then they refill evenly over
//! the window); the excess is dropped and counted.

use std::collections::HashMap;
use std::time::Instant;

use serde::Deserialize;

use crate::config::{BuildError, Duration as ConfigDuration, Spanned};
use crate::event::EventBatch;
use crate::event::path::FieldPath;
use crate::pipeline::metrics::DropReason;
use crate::transforms::common::Outputs;

/// `type: throttle`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Events allowed per window (per key). Required.
    pub limit: u64,
    /// The window the limit is for. Default: `1s`.
    #[serde(default = "default_window")]
    pub window: ConfigDuration,
    /// A field (`data.client`) whose values get a limit each. Default: none,
    /// one limit for all events.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// The most keys tracked; the idlest are forgotten beyond it. Default: `100000`.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_window() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_max_keys() -> usize {
    100_000
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct Throttle {
    limit: f64,
    /// Tokens per second.
    refill: f64,
    key: Option<FieldPath>,
    max_keys: usize,
    buckets: HashMap<String, Bucket>,
    scratch: String,
    dropped: usize,
}

impl Throttle {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if config.limit == 0 {
            return Err(BuildError::new("`limit` must be at least 1"));
        }
        if config.window.is_zero() {
            return Err(BuildError::new("`window` must be more than 0"));
        }
        let key = match &config.key {
            Some(k) => Some(FieldPath::parse(&k.value).map_err(|e| BuildError::at(k.pos, e))?),
            None => None,
        };
        Ok(Throttle {
            limit: config.limit as f64,
            refill: config.limit as f64 / config.window.as_secs_f64(),
            key,
            max_keys: config.max_keys.max(1),
            buckets: HashMap::new(),
            scratch: String::new(),
            dropped: 0,
        })
    }

    pub fn process(&mut self, mut batch: EventBatch, out: &mut Outputs) {
        self.process_at(&mut batch, Instant::now());
        let dropped = self.dropped;
        self.dropped = 0;
        out.metrics.add_dropped(DropReason::Filtered, dropped);
        out.push(batch);
    }
}

impl Throttle {
    fn process_at(&mut self, batch: &mut EventBatch, now: Instant) {
        let mut dropped = 0;
        if self.buckets.len() > self.max_keys {
            // Forget the buckets that are full again (idle keys) first.
            let (limit, refill) = (self.limit, self.refill);
            self.buckets.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * refill < limit);
            if self.buckets.len() > self.max_keys {
                self.buckets.clear();
            }
        }
        let Throttle { limit, refill, key, buckets, scratch, .. } = self;
        batch.retain(|event| {
            scratch.clear();
            if let Some(path) = key
                && let Some(field) = path.get(event)
            {
                field.write_to(scratch);
            }
            let bucket = match buckets.get_mut(scratch.as_str()) {
                Some(b) => b,
                None => buckets.entry(scratch.clone()).or_insert(Bucket { tokens: *limit, last: now }),
            };
            bucket.tokens =
                (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * *refill).min(*limit);
            bucket.last = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                true
            } else {
                dropped += 1;
                false
            }
        });
        self.dropped += dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::tests::{batch_of, run0};
    use std::time::Duration;

    #[test]
    fn limits_each_key() {
        let data: Vec<String> = (0..100).map(|i| format!(r#"{{"client":"c{}"}}"#, i % 2)).collect();
        let batch = batch_of(&data.iter().map(String::as_str).collect::<Vec<_>>());
        let (kept, metrics) = run0("throttle", "limit: 10\nwindow: 1m\nkey: data.client", batch);
        assert_eq!(kept.len(), 20);
        assert_eq!(metrics.dropped(DropReason::Filtered), 80);
    }

    #[test]
    fn tokens_come_back_over_the_window() {
        let node = crate::config::yaml::parse("limit: 10\nwindow: 10s", &|_| None).unwrap();
        let mut t = Throttle::new(&crate::config::yaml::from_node(&node).unwrap()).unwrap();
        let start = Instant::now();
        let mut batch = batch_of(&[r#"{}"#; 15]);
        t.process_at(&mut batch, start);
        assert_eq!(batch.len(), 10);
        let mut batch = batch_of(&[r#"{}"#; 15]);
        // 5 seconds later: half the window, half the limit back.
        t.process_at(&mut batch, start + Duration::from_secs(5));
        assert_eq!(batch.len(), 5);
    }
}
