//! `console`: events on standard output, for trying things out and for
//! running under a supervisor that collects stdout.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::config::BuildError;
use crate::event::encode::Codec;
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{BatchLimits, Compression, EncodedBatch};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts};

/// `type: console`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `ndjson` (one CloudEvent a line) or `text` (each event's message).
    /// Default: `ndjson`.
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Ndjson,
    Text,
}

pub struct Sink {
    out: Mutex<tokio::io::Stdout>,
}

pub fn build(config: &Config, _cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    let codec = match config.encoding {
        Encoding::Ndjson => Codec::Ndjson,
        Encoding::Text => Codec::Text,
    };
    let sink = Sink { out: Mutex::new(tokio::io::stdout()) };
    let parts = Parts {
        codec,
        compression: Compression::None,
        // Small batches, sent soon: someone is watching.
        batch: BatchLimits { timeout: std::time::Duration::from_millis(100), ..BatchLimits::DEFAULT },
        concurrency: 1,
        max_concurrency: 1,
        partitioner: None,
        framing: None,
    };
    Ok((sink, parts))
}

impl Sink {
    /// Always healthy: there is no remote end.
    pub async fn healthcheck(&self, _timeout: std::time::Duration) -> Result<(), String> {
        Ok(())
    }

    pub async fn send(&self, batch: &EncodedBatch, _metrics: &ComponentMetrics) -> Result<(), SendError> {
        let mut out = self.out.lock().await;
        let result = async {
            out.write_all(&batch.body).await?;
            out.flush().await
        }
        .await;
        result.map_err(|e| match e.kind() {
            // Nobody reads standard output any more: retrying cannot help.
            std::io::ErrorKind::BrokenPipe => SendError::Permanent(format!("standard output is closed: {e}")),
            _ => SendError::retry(format!("cannot write to standard output: {e}")),
        })
    }
}
