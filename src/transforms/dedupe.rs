//! `dedupe`: drops an event whose `fields` equal those of an event seen
//! among the last `cache_size` (and, with `window`, within that time).
//!
//! Events are compared by a 64-bit hash of their fields' values (see
//! `sample`'s stable hash), so the cache costs a few bytes an event.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde::Deserialize;

use crate::config::{BuildError, Duration as ConfigDuration, Spanned};
use crate::event::EventBatch;
use crate::event::path::FieldPath;
use crate::pipeline::metrics::DropReason;
use crate::transforms::common::Outputs;
use crate::util::hash::stable_hash;

/// `type: dedupe`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The fields that make two events the same. Default: `[data]`, the whole payload.
    #[serde(default = "default_fields")]
    pub fields: Vec<Spanned<String>>,
    /// How many recent events to remember. Default: `5000`.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Forget an event after this long, too. Default: none.
    #[serde(default)]
    pub window: Option<ConfigDuration>,
}

fn default_fields() -> Vec<Spanned<String>> {
    vec![Spanned { pos: Default::default(), value: "data".to_string() }]
}
fn default_cache_size() -> usize {
    5000
}

pub struct Dedupe {
    fields: Vec<FieldPath>,
    cache_size: usize,
    window: Option<std::time::Duration>,
    /// Hash → how many entries of `order` hold it.
    seen: HashMap<u64, u32>,
    order: VecDeque<(u64, Instant)>,
    scratch: String,
}

impl Dedupe {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if config.fields.is_empty() {
            return Err(BuildError::new("`fields` is empty: list what makes events the same"));
        }
        if config.cache_size == 0 {
            return Err(BuildError::new("`cache_size` must be at least 1"));
        }
        let fields = config
            .fields
            .iter()
            .map(|f| FieldPath::parse(&f.value).map_err(|e| BuildError::at(f.pos, e)))
            .collect::<Result<_, _>>()?;
        Ok(Dedupe {
            fields,
            cache_size: config.cache_size,
            window: config.window.map(|w| w.0),
            seen: HashMap::new(),
            order: VecDeque::new(),
            scratch: String::new(),
        })
    }

    pub fn process(&mut self, mut batch: EventBatch, out: &mut Outputs) {
        let now = Instant::now();
        if let Some(window) = self.window {
            while let Some(&(h, at)) = self.order.front() {
                if now.duration_since(at) < window {
                    break;
                }
                self.order.pop_front();
                self.forget(h);
            }
        }
        let before = batch.len();
        let Dedupe { fields, seen, order, scratch, .. } = self;
        batch.retain(|event| {
            scratch.clear();
            for path in fields.iter() {
                match path.get(event) {
                    Some(f) => f.write_to(scratch),
                    None => scratch.push('\u{0}'),
                }
                scratch.push('\u{1f}');
            }
            let h = stable_hash(scratch.as_bytes());
            if seen.contains_key(&h) {
                return false;
            }
            *seen.entry(h).or_insert(0) += 1;
            order.push_back((h, now));
            true
        });
        while self.order.len() > self.cache_size {
            if let Some((h, _)) = self.order.pop_front() {
                self.forget(h);
            }
        }
        out.metrics.add_dropped(DropReason::Filtered, before - batch.len());
        out.push(batch);
    }

    fn forget(&mut self, h: u64) {
        if let Some(n) = self.seen.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.seen.remove(&h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::tests::{batch_of, run0};

    #[test]
    fn drops_repeats_within_the_cache() {
        let batch =
            batch_of(&[r#"{"a":1,"b":1}"#, r#"{"a":1,"b":2}"#, r#"{"a":2,"b":1}"#, r#"{"a":1,"b":1}"#]);
        let (kept, metrics) = run0("dedupe", "{}", batch);
        assert_eq!(kept.len(), 3);
        assert_eq!(metrics.dropped(DropReason::Filtered), 1);
        let batch = batch_of(&[r#"{"a":1,"b":1}"#, r#"{"a":1,"b":2}"#, r#"{"a":2,"b":1}"#]);
        let (kept, _) = run0("dedupe", "fields: [data.a]", batch);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn the_cache_forgets_the_oldest() {
        let node = crate::config::yaml::parse("cache_size: 2\nfields: [data.a]", &|_| None).unwrap();
        let mut d = Dedupe::new(&crate::config::yaml::from_node(&node).unwrap()).unwrap();
        let metrics =
            std::sync::Arc::new(crate::pipeline::metrics::ComponentMetrics::new("d", "transform", "dedupe"));
        let mut out = Outputs::new(metrics);
        d.process(batch_of(&[r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#]), &mut out);
        // 1 was forgotten: it passes again; 3 is still known.
        d.process(batch_of(&[r#"{"a":1}"#, r#"{"a":3}"#]), &mut out);
        let batches = out.take();
        assert_eq!(batches[1].1.len(), 1);
    }
}
