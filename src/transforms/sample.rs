//! `sample`: keeps a share of the events.
//!
//! With `key`, the choice follows a hash of that field: every event with the
//! same value is kept, or every one dropped, on every host, so a sampled
//! request keeps all its events. The hash is FNV-1a (64 bits) of the field's
//! text, mixed by the MurmurHash3 64-bit finalizer (FNV alone barely moves
//! its high bits for values that differ in their last characters, such as
//! IP addresses); an event is kept when `hash < rate × 2^64`. Without `key` the choice
//! is random (`rate`) or every Nth event (`one_in`).
//!
//! Kept events carry the CloudEvents `sampledrate` extension attribute (1 in
//! how many were kept), so consumers can scale counts back up. Events for
//! which `keep_if` holds are never sampled away (and carry no rate).

use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::path::FieldPath;
use crate::event::{EventBatch, Str, Value};
use crate::pipeline::metrics::DropReason;
use crate::transforms::common::Outputs;
use crate::util::hash::stable_hash;

/// `type: sample`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The share of events kept, from 0 to 1 (`0.1` keeps 10 %). Give this or
    /// `one_in`. Default: none.
    #[serde(default)]
    pub rate: Option<Spanned<f64>>,
    /// Keep one event in N. Give this or `rate`. Default: none.
    #[serde(default)]
    pub one_in: Option<Spanned<u64>>,
    /// A field (`data.client`, `subject`) whose value decides, so that equal
    /// values are kept or dropped together. Default: none, each event on its own.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// A CEL condition: events for which it holds are always kept (errors
    /// count as false, and are counted). Default: none.
    #[serde(default)]
    pub keep_if: Option<Spanned<String>>,
}

pub struct Sample {
    keep_if: Option<crate::expr::Expr>,
    /// Kept when the 64-bit hash (or random number) is below this.
    threshold: u64,
    one_in: Option<u64>,
    key: Option<FieldPath>,
    sampledrate: Value,
    counter: u64,
    rng: fastrand::Rng,
    scratch: String,
}

impl Sample {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let (rate, one_in) = match (&config.rate, &config.one_in) {
            (Some(r), None) => {
                if !(r.value > 0.0 && r.value <= 1.0) {
                    return Err(BuildError::at(r.pos, "`rate` must be more than 0 and at most 1"));
                }
                (r.value, None)
            }
            (None, Some(n)) => {
                if n.value == 0 {
                    return Err(BuildError::at(n.pos, "`one_in` must be at least 1"));
                }
                (1.0 / n.value as f64, Some(n.value))
            }
            (Some(r), Some(_)) => return Err(BuildError::at(r.pos, "give `rate` or `one_in`, not both")),
            (None, None) => return Err(BuildError::new("give `rate` (0 to 1) or `one_in` (N)")),
        };
        let key = match &config.key {
            Some(k) => Some(FieldPath::parse(&k.value).map_err(|e| BuildError::at(k.pos, e))?),
            None => None,
        };
        let threshold = if rate >= 1.0 { u64::MAX } else { (rate * u64::MAX as f64) as u64 };
        Ok(Sample {
            keep_if: config.keep_if.as_ref().map(super::common::compile).transpose()?,
            threshold,
            one_in,
            key,
            sampledrate: Value::Int((1.0 / rate).round() as i64),
            counter: 0,
            rng: fastrand::Rng::new(),
            scratch: String::new(),
        })
    }

    pub fn process(&mut self, mut batch: EventBatch, out: &mut Outputs) {
        if self.threshold == u64::MAX {
            out.push(batch);
            return;
        }
        const DROP: u8 = 0;
        const SAMPLED: u8 = 1;
        const SAVED: u8 = 2;
        // Decide first, looking only; then keep, copying only the kept
        // events if the batch is shared.
        let mut decisions = Vec::with_capacity(batch.len());
        for event in batch.events() {
            let saved = match &self.keep_if {
                Some(cond) => match cond.test(event) {
                    Ok(b) => b,
                    Err(e) => {
                        out.error(&e);
                        false
                    }
                },
                None => false,
            };
            decisions.push(if saved {
                SAVED
            } else if self.sampled(event) {
                SAMPLED
            } else {
                DROP
            });
        }
        let mut i = 0;
        batch.retain(|_| {
            i += 1;
            decisions[i - 1] != DROP
        });
        let dropped = decisions.iter().filter(|d| **d == DROP).count();
        out.metrics.add_dropped(DropReason::Filtered, dropped);
        if decisions.contains(&SAMPLED) {
            let rate = &self.sampledrate;
            let mut kept = decisions.iter().filter(|d| **d != DROP);
            batch.update(|events| {
                for e in events.iter_mut() {
                    if kept.next() == Some(&SAMPLED) {
                        e.attrs.insert(Str::from_static("sampledrate"), rate.clone());
                    }
                }
            });
        }
        out.push(batch);
    }

    /// Whether the sampler keeps an event (not counting `keep_if`).
    fn sampled(&mut self, event: &crate::event::Event) -> bool {
        match &self.key {
            Some(path) => {
                self.scratch.clear();
                if let Some(field) = path.get(event) {
                    field.write_to(&mut self.scratch);
                }
                stable_hash(self.scratch.as_bytes()) < self.threshold
            }
            None => match self.one_in {
                Some(n) => {
                    self.counter += 1;
                    self.counter % n == 1 % n
                }
                None => self.rng.u64(..) < self.threshold,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::tests::{batch_of, refused, run0};

    fn clients(n: usize) -> EventBatch {
        let data: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"client":"10.0.0.{}","status":{}}}"#,
                    i % 50,
                    if i % 100 == 7 { 503 } else { 200 }
                )
            })
            .collect();
        batch_of(&data.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn one_in_keeps_exactly_every_nth_and_marks_the_rate() {
        let (kept, metrics) = run0("sample", "one_in: 10", clients(1000));
        assert_eq!(kept.len(), 100);
        assert_eq!(metrics.dropped(DropReason::Filtered), 900);
        assert_eq!(kept[0].attrs.get("sampledrate"), Some(&Value::Int(10)));
    }

    #[test]
    fn a_key_keeps_or_drops_all_events_of_a_value() {
        let (kept, _) = run0("sample", "rate: 0.3\nkey: data.client", clients(5000));
        let mut by_client = std::collections::HashMap::new();
        for e in &kept {
            let c = e.data.as_object().unwrap().get("client").unwrap().as_str().unwrap().to_string();
            *by_client.entry(c).or_insert(0) += 1;
        }
        // Each of the 50 clients appears 100 times: kept whole or not at all.
        assert!(by_client.values().all(|n| *n == 100), "{by_client:?}");
        assert!(!by_client.is_empty() && by_client.len() < 50);
    }

    #[test]
    fn keep_if_is_never_sampled_away_and_carries_no_rate() {
        let (kept, _) = run0("sample", "one_in: 1000000\nkeep_if: 'data.status >= 500'", clients(1000));
        // The first event (1 in N keeps the first) and the ten 503s.
        assert_eq!(kept.len(), 11);
        let errors: Vec<_> = kept
            .iter()
            .filter(|e| e.data.as_object().unwrap().get("status") == Some(&Value::Int(503)))
            .collect();
        assert_eq!(errors.len(), 10);
        assert!(errors.iter().all(|e| e.attrs.get("sampledrate").is_none()));
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            "rate: 1.5",
            "rate: 0",
            "one_in: 0",
            "{}",
            "rate: 0.5\none_in: 2",
            "rate: 0.5\nkey: data..x",
            "rate: 0.5\nkeep_if: '('",
        ] {
            let _ = refused("sample", bad);
        }
    }
}
