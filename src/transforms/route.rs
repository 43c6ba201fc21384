//! `route`: sends each event to the branches whose condition it meets;
//! downstream components read a branch as `<id>.<branch>`, and the events
//! that meet none as `<id>._unmatched`.

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::EventBatch;
use crate::expr::Expr;
use crate::transforms::common::Outputs;

/// The output of the events no branch takes.
pub const UNMATCHED: &str = "_unmatched";

/// `type: route`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Branch names and their CEL conditions. An event goes to every branch
    /// whose condition holds (an error counts as false, and is counted).
    /// Required.
    pub routes: IndexMap<String, Spanned<String>>,
}

impl Config {
    pub fn outputs(&self) -> Vec<String> {
        self.routes.keys().cloned().chain([UNMATCHED.to_string()]).collect()
    }
}

pub struct Route {
    routes: Vec<Expr>,
}

impl Route {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if config.routes.is_empty() {
            return Err(BuildError::new("`routes` is empty: name at least one branch and its condition"));
        }
        let mut routes = Vec::new();
        for (name, condition) in &config.routes {
            if name == UNMATCHED
                || name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(BuildError::at(
                    condition.pos,
                    format!("`{name}` cannot name a branch: letters, digits, `_` and `-`, not `_unmatched`"),
                ));
            }
            routes.push(super::common::compile(condition)?);
        }
        Ok(Route { routes })
    }

    pub fn process(&mut self, batch: EventBatch, out: &mut Outputs) {
        let n = self.routes.len();
        // For each event, the branches it goes to.
        let mut matches: Vec<Vec<bool>> = vec![Vec::with_capacity(batch.len()); n];
        let mut unmatched = Vec::with_capacity(batch.len());
        for event in batch.events() {
            let mut any = false;
            for (i, route) in self.routes.iter().enumerate() {
                let hit = match route.test(event) {
                    Ok(b) => b,
                    Err(e) => {
                        out.error(&e);
                        false
                    }
                };
                matches[i].push(hit);
                any |= hit;
            }
            unmatched.push(!any);
        }
        // Each branch gets its events (shared, not copied, where the whole
        // batch goes one way) and a copy of the acknowledgement.
        for (i, hits) in matches.iter().enumerate().chain([(n, &unmatched)]) {
            if !hits.contains(&true) {
                continue;
            }
            let mut part = batch.clone();
            if !hits.iter().all(|h| *h) {
                let mut k = 0;
                part.retain(|_| {
                    k += 1;
                    hits[k - 1]
                });
            }
            out.push_to(i, part);
        }
        batch.acks.settle(crate::event::BatchStatus::Delivered);
    }
}

#[cfg(test)]
mod tests {
    use crate::transforms::tests::{batch_of, refused, run};

    #[test]
    fn events_go_to_every_branch_they_match_and_the_rest_to_unmatched() {
        let settings = "routes:\n  errors: 'data.status >= 500'\n  slow: 'data.ms > 1000'\n";
        let batch = batch_of(&[
            r#"{"status":503,"ms":2000}"#,
            r#"{"status":200,"ms":10}"#,
            r#"{"status":500,"ms":1}"#,
            r#"{"status":200}"#,
        ]);
        let (events, metrics) = run("route", settings, batch);
        let by = |i| events.iter().filter(|(o, _)| *o == i).count();
        assert_eq!((by(0), by(1), by(2)), (2, 1, 1 + 1));
        // The last event has no `ms`: an error for `slow`, counted.
        assert_eq!(metrics.errors(), vec![("no_such_field", 1)]);
    }

    #[test]
    fn branch_names() {
        assert!(refused("route", "routes:\n  _unmatched: 'true'").contains("cannot name a branch"));
        assert!(refused("route", "routes: {}").contains("empty"));
    }
}
