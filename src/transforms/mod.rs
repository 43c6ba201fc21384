//! Transforms: take a batch of events, give zero or more batches. One module
//! per `type`. A transform is synchronous: no I/O, no waiting.

pub mod sample;

use std::sync::Arc;

use crate::config::BuildError;
use crate::config::yaml::{self, Node};
use crate::event::{BatchStatus, EventBatch};
use crate::pipeline::channel::Receiver;
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::{ComponentMetrics, State};

/// Every transform type, with its documented example.
pub const TYPES: &[(&str, &str)] = &[("sample", include_str!("sample.yaml"))];

/// The settings of one transform, by `type`.
#[derive(Debug, Clone)]
pub enum TransformConfig {
    Sample(sample::Config),
}

impl TransformConfig {
    /// Reads the settings of a transform of type `ty`; `None` for an unknown type.
    pub fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
        Ok(Some(match ty {
            "sample" => TransformConfig::Sample(yaml::from_node(node)?),
            _ => return Ok(None),
        }))
    }

    pub fn build(&self) -> Result<Transform, BuildError> {
        Ok(match self {
            TransformConfig::Sample(c) => Transform::Sample(sample::Sample::new(c)?),
        })
    }
}

/// A built transform.
pub enum Transform {
    Sample(sample::Sample),
}

/// Where a transform puts what it gives.
pub struct Outputs {
    batches: Vec<EventBatch>,
    pub metrics: Arc<ComponentMetrics>,
}

impl Outputs {
    pub fn push(&mut self, batch: EventBatch) {
        if batch.is_empty() {
            // Everything was dropped on purpose: done, for the source.
            batch.acks.settle(BatchStatus::Delivered);
        } else {
            self.batches.push(batch);
        }
    }
}

impl Transform {
    fn process(&mut self, batch: EventBatch, out: &mut Outputs) {
        match self {
            Transform::Sample(t) => t.process(batch, out),
        }
    }

    /// Runs until every input has stopped.
    pub async fn run(
        mut self,
        mut input: Receiver,
        mut out: Fanout,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<(), String> {
        metrics.set_state(State::Running);
        let mut outputs = Outputs { batches: Vec::new(), metrics: metrics.clone() };
        while let Some(batch) = input.recv().await {
            metrics.add_in(batch.len());
            self.process(batch, &mut outputs);
            for batch in outputs.batches.drain(..) {
                if out.send(batch).await.is_err() {
                    metrics.set_state(State::Stopped);
                    return Ok(());
                }
            }
        }
        metrics.set_state(State::Stopped);
        Ok(())
    }
}
