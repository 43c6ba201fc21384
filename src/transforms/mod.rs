//! Transforms: take a batch of events, give zero or more batches. One module
//! per `type`. A transform is synchronous: no I/O, no waiting.
//!
//! Events a transform drops on purpose (a filter, a sampler) are done with
//! for their source: the batch's acknowledgement goes on with the events
//! that remain, and a batch left empty is settled as delivered.

pub mod dedupe;
pub mod filter;
pub mod parse;
pub mod remap;
pub mod route;
pub mod sample;
pub mod throttle;

use std::sync::Arc;

use serde::Deserialize;

use crate::config::yaml::{self, Node};
use crate::config::{BuildError, Spanned};
use crate::event::{BatchStatus, EventBatch};
use crate::expr::{EvalError, Expr};
use crate::pipeline::channel::Receiver;
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::{ComponentMetrics, State};

/// Every transform type, with its documented example.
pub const TYPES: &[(&str, &str)] = &[
    ("dedupe", include_str!("dedupe.yaml")),
    ("filter", include_str!("filter.yaml")),
    ("parse", include_str!("parse.yaml")),
    ("remap", include_str!("remap.yaml")),
    ("route", include_str!("route.yaml")),
    ("sample", include_str!("sample.yaml")),
    ("throttle", include_str!("throttle.yaml")),
];

/// The settings of one transform, by `type`.
#[derive(Debug, Clone, schemars::JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum TransformConfig {
    Dedupe(dedupe::Config),
    Filter(filter::Config),
    Parse(parse::Config),
    Remap(remap::Config),
    Route(route::Config),
    Sample(sample::Config),
    Throttle(throttle::Config),
}

impl TransformConfig {
    /// Reads the settings of a transform of type `ty`; `None` for an unknown type.
    pub fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
        Ok(Some(match ty {
            "dedupe" => TransformConfig::Dedupe(yaml::from_node(node)?),
            "filter" => TransformConfig::Filter(yaml::from_node(node)?),
            "parse" => TransformConfig::Parse(yaml::from_node(node)?),
            "remap" => TransformConfig::Remap(yaml::from_node(node)?),
            "route" => TransformConfig::Route(yaml::from_node(node)?),
            "sample" => TransformConfig::Sample(yaml::from_node(node)?),
            "throttle" => TransformConfig::Throttle(yaml::from_node(node)?),
            _ => return Ok(None),
        }))
    }

    /// The named outputs downstream components read as `id.name`; none for
    /// transforms with a single output.
    pub fn outputs(&self) -> Vec<String> {
        match self {
            TransformConfig::Route(c) => c.outputs(),
            _ => Vec::new(),
        }
    }

    pub fn build(&self) -> Result<Transform, BuildError> {
        Ok(match self {
            TransformConfig::Dedupe(c) => Transform::Dedupe(dedupe::Dedupe::new(c)?),
            TransformConfig::Filter(c) => Transform::Filter(filter::Filter::new(c)?),
            TransformConfig::Parse(c) => Transform::Parse(parse::Parse::new(c)?),
            TransformConfig::Remap(c) => Transform::Remap(remap::Remap::new(c)?),
            TransformConfig::Route(c) => Transform::Route(route::Route::new(c)?),
            TransformConfig::Sample(c) => Transform::Sample(sample::Sample::new(c)?),
            TransformConfig::Throttle(c) => Transform::Throttle(throttle::Throttle::new(c)?),
        })
    }
}

/// A built transform.
pub enum Transform {
    Dedupe(dedupe::Dedupe),
    Filter(filter::Filter),
    Parse(parse::Parse),
    Remap(remap::Remap),
    Route(route::Route),
    Sample(sample::Sample),
    Throttle(throttle::Throttle),
}

/// Where a transform puts what it gives: batches for its outputs (0 is the
/// only output of most transforms).
pub struct Outputs {
    batches: Vec<(usize, EventBatch)>,
    pub metrics: Arc<ComponentMetrics>,
}

impl Outputs {
    pub fn new(metrics: Arc<ComponentMetrics>) -> Self {
        Outputs { batches: Vec::new(), metrics }
    }

    pub fn push(&mut self, batch: EventBatch) {
        self.push_to(0, batch);
    }

    pub fn push_to(&mut self, output: usize, batch: EventBatch) {
        if batch.is_empty() {
            // Everything was dropped on purpose: done, for the source.
            batch.acks.settle(BatchStatus::Delivered);
        } else {
            self.batches.push((output, batch));
        }
    }

    /// Counts expression and parse failures by reason.
    pub fn error(&self, e: &EvalError) {
        self.metrics.add_error(e.reason, 1);
    }

    #[cfg(test)]
    pub fn take(&mut self) -> Vec<(usize, EventBatch)> {
        std::mem::take(&mut self.batches)
    }
}

impl Transform {
    /// One batch, for benchmarks.
    #[doc(hidden)]
    pub fn process_for_bench(&mut self, batch: EventBatch, out: &mut Outputs) {
        self.process(batch, out)
    }

    fn process(&mut self, batch: EventBatch, out: &mut Outputs) {
        match self {
            Transform::Dedupe(t) => t.process(batch, out),
            Transform::Filter(t) => t.process(batch, out),
            Transform::Parse(t) => t.process(batch, out),
            Transform::Remap(t) => t.process(batch, out),
            Transform::Route(t) => t.process(batch, out),
            Transform::Sample(t) => t.process(batch, out),
            Transform::Throttle(t) => t.process(batch, out),
        }
    }

    /// Runs until every input has stopped. `outs[i]` is output `i`.
    pub async fn run(
        mut self,
        mut input: Receiver,
        mut outs: Vec<Fanout>,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<(), String> {
        metrics.set_state(State::Running);
        let mut outputs = Outputs::new(metrics.clone());
        while let Some(batch) = input.recv().await {
            metrics.add_in(batch.len());
            self.process(batch, &mut outputs);
            for (i, batch) in outputs.batches.drain(..) {
                match outs.get_mut(i) {
                    // A downstream that stopped: the others go on.
                    Some(out) => {
                        let _ = out.send(batch).await;
                    }
                    None => batch.acks.settle(BatchStatus::Delivered),
                }
            }
        }
        metrics.set_state(State::Stopped);
        Ok(())
    }
}

/// What happens to an event an expression cannot be evaluated on (a
/// missing field, a wrong type).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// It goes on as if the expression did not apply.
    #[default]
    Keep,
    /// It is dropped (and counted).
    Drop,
}

/// Compiles a condition or value from the config, naming the YAML position
/// of the expression and the position inside it when it does not compile.
pub fn compile(source: &Spanned<String>) -> Result<Expr, BuildError> {
    Expr::compile(&source.value)
        .map_err(|e| BuildError::at(source.pos, format!("invalid expression {:?}: {e}", source.value)))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{AckSet, Event, EventId, Map, Str};

    pub fn event(data: &str) -> Event {
        Event {
            id: EventId::Generated(1),
            time: 1_795_751_400_000_000,
            ty: Str::from_static("log.line"),
            source: Str::from_static("hostwatch://h/src"),
            subject: Some(Str::from_static("/var/log/app.log")),
            host: Str::from_static("h"),
            attrs: Map::new(),
            data: serde_json::from_str(data).unwrap(),
        }
    }

    pub fn batch_of(data: &[&str]) -> EventBatch {
        EventBatch::new(data.iter().map(|d| event(d)).collect(), AckSet::new())
    }

    /// Builds a transform of type `ty` from YAML settings and runs one
    /// batch through it: the events given, by output, and the counters.
    pub fn run(ty: &str, settings: &str, batch: EventBatch) -> (Vec<(usize, Event)>, Arc<ComponentMetrics>) {
        let node = yaml::parse(settings, &|_| None).unwrap();
        let config = TransformConfig::from_node(ty, &node).unwrap().unwrap();
        let mut t = config.build().unwrap_or_else(|e| panic!("{}", e.message));
        let metrics = Arc::new(ComponentMetrics::new("t", "transform", ty));
        let mut out = Outputs::new(metrics.clone());
        t.process(batch, &mut out);
        let events = out
            .take()
            .into_iter()
            .flat_map(|(i, b)| b.into_parts().0.into_iter().map(move |e| (i, e)))
            .collect();
        (events, metrics)
    }

    /// The events of output 0, when a transform has only that one.
    pub fn run0(ty: &str, settings: &str, batch: EventBatch) -> (Vec<Event>, Arc<ComponentMetrics>) {
        let (events, m) = run(ty, settings, batch);
        assert!(events.iter().all(|(i, _)| *i == 0));
        (events.into_iter().map(|(_, e)| e).collect(), m)
    }

    /// A build error's message.
    pub fn refused(ty: &str, settings: &str) -> String {
        let node = yaml::parse(settings, &|_| None).unwrap();
        match TransformConfig::from_node(ty, &node) {
            Err(e) => e.message,
            Ok(Some(c)) => match c.build() {
                Err(e) => e.message,
                Ok(_) => panic!("`{settings}` was accepted"),
            },
            Ok(None) => panic!("unknown type {ty}"),
        }
    }
}
