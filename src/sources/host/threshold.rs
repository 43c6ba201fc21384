//! Thresholds over `host.metrics`: crossed once the condition has held for
//! `for`, cleared when the value passes back beyond the clearing level
//! (hysteresis: a value hovering at the threshold does not flap).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::BuildError;
use crate::event::{Map, Str, Value};

/// One entry of `thresholds:`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// A name for the events. Required.
    pub name: String,
    /// The metric's path in `host.metrics` (`memory.used_percent`). Required.
    pub metric: String,
    /// Crossed when the value is above this. Give this or `below`. Default: none.
    #[serde(default)]
    pub above: Option<f64>,
    /// Crossed when the value is below this. Give this or `above`. Default: none.
    #[serde(default)]
    pub below: Option<f64>,
    /// With `above`: cleared when the value is below this. Default: `above`.
    #[serde(default)]
    pub clear_below: Option<f64>,
    /// With `below`: cleared when the value is above this. Default: `below`.
    #[serde(default)]
    pub clear_above: Option<f64>,
    /// How long the condition must hold before it counts. Default: `0s`.
    #[serde(default, rename = "for")]
    pub hold: Option<crate::config::Duration>,
}

pub struct Threshold {
    name: String,
    metric: String,
    /// `true`: crossed above `level`, cleared below `clear`.
    upward: bool,
    level: f64,
    clear: f64,
    hold: Duration,
    since: Option<Instant>,
    crossed: bool,
}

impl Threshold {
    pub fn new(c: &ThresholdConfig) -> Result<Self, BuildError> {
        let bad = |m: &str| BuildError::new(format!("threshold `{}`: {m}", c.name));
        let (upward, level, clear) = match (c.above, c.below) {
            (Some(a), None) => {
                if c.clear_above.is_some() {
                    return Err(bad("`clear_above` goes with `below`"));
                }
                let clear = c.clear_below.unwrap_or(a);
                if clear > a {
                    return Err(bad("`clear_below` must be at most `above`"));
                }
                (true, a, clear)
            }
            (None, Some(b)) => {
                if c.clear_below.is_some() {
                    return Err(bad("`clear_below` goes with `above`"));
                }
                let clear = c.clear_above.unwrap_or(b);
                if clear < b {
                    return Err(bad("`clear_above` must be at least `below`"));
                }
                (false, b, clear)
            }
            _ => return Err(bad("give either `above` or `below`")),
        };
        if c.metric.is_empty() {
            return Err(bad("`metric` is empty"));
        }
        Ok(Threshold {
            name: c.name.clone(),
            metric: c.metric.clone(),
            upward,
            level,
            clear,
            hold: c.hold.map_or(Duration::ZERO, |d| d.0),
            since: None,
            crossed: false,
        })
    }

    /// Looks at a new sample; the event to send when the state changed.
    pub fn observe(&mut self, metrics: &Map, now: Instant) -> Option<(&'static str, Map)> {
        let value = match super::lookup(metrics, &self.metric)? {
            Value::Int(n) => *n as f64,
            Value::Float(f) => *f,
            _ => return None,
        };
        let beyond = if self.upward { value > self.level } else { value < self.level };
        let back = if self.upward { value < self.clear } else { value > self.clear };
        if !self.crossed {
            if !beyond {
                self.since = None;
                return None;
            }
            let since = *self.since.get_or_insert(now);
            if now.duration_since(since) < self.hold {
                return None;
            }
            self.crossed = true;
            Some(("host.threshold.crossed", self.data(value, self.level)))
        } else if back {
            self.crossed = false;
            self.since = None;
            Some(("host.threshold.cleared", self.data(value, self.clear)))
        } else {
            None
        }
    }

    fn data(&self, value: f64, threshold: f64) -> Map {
        let mut m = Map::with_capacity(5);
        m.push(Str::from_static("name"), Value::from(self.name.clone()));
        m.push(Str::from_static("metric"), Value::from(self.metric.clone()));
        m.push(Str::from_static("value"), Value::Float(value));
        m.push(Str::from_static("threshold"), Value::Float(threshold));
        m.push(Str::from_static("direction"), Value::from(if self.upward { "above" } else { "below" }));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(v: f64) -> Map {
        let mut inner = Map::new();
        inner.push(Str::from_static("used_percent"), Value::Float(v));
        let mut fs = Map::new();
        fs.push(Str::from("/var/lib".to_string()), Value::Object(inner));
        let mut m = Map::new();
        m.push(Str::from_static("filesystem"), Value::Object(fs));
        m
    }

    fn config(yaml: &str) -> ThresholdConfig {
        let node = crate::config::yaml::parse(yaml, &|_| None).unwrap();
        crate::config::yaml::from_node(&node).unwrap()
    }

    #[test]
    fn crosses_after_for_and_clears_with_hysteresis() {
        let c = config(
            "{name: disk, metric: filesystem./var/lib.used_percent, above: 90, clear_below: 80, for: 10s}",
        );
        let mut t = Threshold::new(&c).unwrap();
        let t0 = Instant::now();
        assert!(t.observe(&metrics(95.0), t0).is_none(), "not yet held for 10s");
        assert!(t.observe(&metrics(95.0), t0 + Duration::from_secs(5)).is_none());
        let (ty, data) = t.observe(&metrics(96.0), t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(ty, "host.threshold.crossed");
        assert_eq!(data.get("value"), Some(&Value::Float(96.0)));
        // Between the levels: no flapping.
        assert!(t.observe(&metrics(85.0), t0 + Duration::from_secs(20)).is_none());
        assert!(t.observe(&metrics(91.0), t0 + Duration::from_secs(30)).is_none());
        let (ty, _) = t.observe(&metrics(79.0), t0 + Duration::from_secs(40)).unwrap();
        assert_eq!(ty, "host.threshold.cleared");
        // A dip resets the `for` clock.
        assert!(t.observe(&metrics(95.0), t0 + Duration::from_secs(50)).is_none());
        assert!(t.observe(&metrics(50.0), t0 + Duration::from_secs(55)).is_none());
        assert!(t.observe(&metrics(95.0), t0 + Duration::from_secs(61)).is_none());
    }

    #[test]
    fn settings_are_checked() {
        for bad in [
            "{name: x, metric: m, above: 1, below: 2}",
            "{name: x, metric: m}",
            "{name: x, metric: m, above: 50, clear_below: 60}",
            "{name: x, metric: m, below: 50, clear_above: 40}",
            "{name: x, metric: m, above: 50, clear_above: 60}",
        ] {
            assert!(Threshold::new(&config(bad)).is_err(), "{bad}");
        }
    }
}
