//! What every transform type uses: where its batches go ([`Outputs`]), what
//! an expression that cannot be evaluated does ([`OnError`]), and how a
//! config's expression is compiled with its position ([`compile`]).

use std::sync::Arc;

use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::{BatchStatus, EventBatch};
use crate::expr::{EvalError, Expr};
use crate::pipeline::metrics::ComponentMetrics;

/// Where a transform puts what it gives: batches for its outputs (0 is the
/// only output of most transforms).
pub struct Outputs {
    pub(super) batches: Vec<(usize, EventBatch)>,
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
