//! `filter`: keeps the events for which a condition holds; the others are
//! dropped and counted.

use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::EventBatch;
use crate::expr::Expr;
use crate::pipeline::metrics::DropReason;
use crate::transforms::common::{OnError, Outputs};

/// `type: filter`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A CEL condition over the event (`type`, `source`, `subject`, `time`,
    /// `host`, `data`, `ext`); events for which it is false are dropped.
    /// Required.
    pub condition: Spanned<String>,
    /// When the condition cannot be evaluated on an event (a missing field):
    /// `keep` it or `drop` it. Errors are counted by reason. Default: `keep`.
    #[serde(default)]
    pub on_error: OnError,
}

pub struct Filter {
    condition: Expr,
    on_error: OnError,
}

impl Filter {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        Ok(Filter { condition: super::common::compile(&config.condition)?, on_error: config.on_error })
    }

    pub fn process(&mut self, mut batch: EventBatch, out: &mut Outputs) {
        let before = batch.len();
        let (condition, on_error) = (&self.condition, self.on_error);
        batch.retain(|e| match condition.test(e) {
            Ok(keep) => keep,
            Err(err) => {
                out.error(&err);
                on_error == OnError::Keep
            }
        });
        out.metrics.add_dropped(DropReason::Filtered, before - batch.len());
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::tests::{batch_of, refused, run0};

    #[test]
    fn keeps_what_matches_and_counts_errors() {
        let config = "condition: 'data.path != \"/health\"'";
        let events = batch_of(&[r#"{"path":"/a"}"#, r#"{"path":"/health"}"#, r#"{}"#]);
        let (kept, metrics) = run0("filter", config, events);
        assert_eq!(kept.len(), 2, "the event without a path is kept by default");
        assert_eq!(metrics.dropped(DropReason::Filtered), 1);
        assert_eq!(metrics.errors(), vec![("no_such_field", 1)]);

        let config = "condition: 'data.path != \"/health\"'\non_error: drop";
        let (kept, _) = run0("filter", config, batch_of(&[r#"{"path":"/a"}"#, r#"{}"#]));
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn a_broken_condition_is_refused_with_its_position() {
        let msg = refused("filter", "condition: 'data.status >='");
        assert!(msg.contains("line 1, column") && msg.contains("of the expression"), "{msg}");
    }
}
