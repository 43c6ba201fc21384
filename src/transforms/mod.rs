//! Transforms: take a batch of events, give zero or more batches. One module
//! per `type`. A transform is synchronous: no I/O, no waiting.
//!
//! Events a transform drops on purpose (a filter, a sampler) are done with
//! for their source: the batch's acknowledgement goes on with the events
//! that remain, and a batch left empty is settled as delivered.

pub mod common;
pub mod dedupe;
pub mod filter;
pub mod parse;
pub mod remap;
pub mod route;
pub mod sample;
pub mod throttle;

use std::sync::Arc;

use crate::config::BuildError;
use crate::config::yaml::{self, Node};
use crate::event::{BatchStatus, EventBatch};
use crate::pipeline::channel::Receiver;
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::{ComponentMetrics, State};
use common::Outputs;

/// The list of transform types, written once: each line gives the type's
/// name, its documented example, its variant and its module with the
/// transform's type (made by `new(&Config)`). It makes [`TYPES`],
/// [`TransformConfig`], [`Transform`] and their dispatch.
macro_rules! transform_types {
    ($(($name:literal, $example:expr) => $variant:ident($module:ident::$built:ident),)*) => {
        /// Every transform type, with its documented example.
        pub const TYPES: &[(&str, &str)] = &[$(($name, $example)),*];

        /// The settings of one transform, by `type`.
        #[derive(Debug, Clone, schemars::JsonSchema)]
        #[schemars(rename_all = "snake_case")]
        pub enum TransformConfig {
            $($variant($module::Config),)*
        }

        /// A built transform.
        pub enum Transform {
            $($variant($module::$built),)*
        }

        impl TransformConfig {
            /// Reads the settings of a transform of type `ty`; `None` for an unknown type.
            pub fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
                Ok(Some(match ty {
                    $($name => TransformConfig::$variant(yaml::from_node(node)?),)*
                    _ => return Ok(None),
                }))
            }

            /// Checks what can be checked before anything runs, and builds the transform.
            pub fn build(&self) -> Result<Transform, BuildError> {
                Ok(match self {
                    $(TransformConfig::$variant(c) => Transform::$variant($module::$built::new(c)?),)*
                })
            }
        }

        impl Transform {
            fn process(&mut self, batch: EventBatch, out: &mut Outputs) {
                match self {
                    $(Transform::$variant(t) => t.process(batch, out),)*
                }
            }
        }
    };
}

transform_types! {
    ("dedupe", include_str!("dedupe.yaml")) => Dedupe(dedupe::Dedupe),
    ("filter", include_str!("filter.yaml")) => Filter(filter::Filter),
    ("parse", include_str!("parse.yaml")) => Parse(parse::Parse),
    ("remap", include_str!("remap.yaml")) => Remap(remap::Remap),
    ("route", include_str!("route.yaml")) => Route(route::Route),
    ("sample", include_str!("sample.yaml")) => Sample(sample::Sample),
    ("throttle", include_str!("throttle.yaml")) => Throttle(throttle::Throttle),
}

impl TransformConfig {
    /// The named outputs downstream components read as `id.name`; none for
    /// transforms with a single output.
    pub fn outputs(&self) -> Vec<String> {
        match self {
            TransformConfig::Route(c) => c.outputs(),
            _ => Vec::new(),
        }
    }
}

impl Transform {
    /// One batch, for benchmarks.
    #[doc(hidden)]
    pub fn process_for_bench(&mut self, batch: EventBatch, out: &mut Outputs) {
        self.process(batch, out)
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
