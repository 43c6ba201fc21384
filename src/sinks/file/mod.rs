//! `file`: events appended to a file, one per line. The path may depend on
//! the event (`%Y-%m-%d` of its time, `{type}`), so one sink can keep a file
//! per day or per event type.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::config::{BuildError, Spanned};
use crate::event::encode::Codec;
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{BatchLimits, Compression, EncodedBatch};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::template;
use crate::sinks::driver::{BuildContext, Parts};

/// `type: file`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file to append to. May contain strftime sequences (`%Y-%m-%d`),
    /// taken from each event's time in UTC, and fields in braces (`{type}`,
    /// `{host}`, `{data.app}`); a field value cannot leave its directory (`/`
    /// becomes `_`). Required.
    pub path: Spanned<String>,
    /// `ndjson` (one CloudEvent a line) or `text` (each event's message).
    /// Default: `ndjson`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Flush each batch to the disk (fsync) before it counts as delivered,
    /// so that it survives a power loss, not only a crash of the agent.
    /// Default: `false`.
    #[serde(default)]
    pub fsync: bool,
    /// Close a file not written to for this long. Default: `30s`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: crate::config::Duration,
}

fn default_idle_timeout() -> crate::config::Duration {
    crate::config::Duration::from_secs(30)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Ndjson,
    Text,
}

struct Open {
    file: tokio::fs::File,
    /// Device and inode when opened: if the path now names another file
    /// (log rotation moved ours away), the next batch opens the new one.
    id: (u64, u64),
    used: Instant,
}

pub struct Sink {
    /// The path when it does not depend on the event.
    destination: crate::sinks::driver::Destination,
    fsync: bool,
    idle: Duration,
    files: Mutex<HashMap<PathBuf, Open>>,
}

pub fn build(config: &Config, _cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    if config.path.value.ends_with('/') {
        return Err(BuildError::at(config.path.pos, "`path` names a directory; give a file name"));
    }
    let (destination, partitioner) =
        crate::sinks::driver::Destination::new(&config.path, template::path_component)?;
    let codec = match config.encoding {
        Encoding::Ndjson => Codec::Ndjson,
        Encoding::Text => Codec::Text,
    };
    let sink = Sink {
        destination,
        fsync: config.fsync,
        idle: *config.idle_timeout,
        files: Mutex::new(HashMap::new()),
    };
    let parts = Parts {
        codec,
        compression: Compression::None,
        batch: BatchLimits::DEFAULT,
        concurrency: 1,
        max_concurrency: 1,
        partitioner,
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
        let path = PathBuf::from(self.destination.of(batch)?);
        let mut files = self.files.lock().await;
        let now = Instant::now();
        files.retain(|p, f| *p == path || now.duration_since(f.used) < self.idle);

        let current = tokio::fs::metadata(&path).await.ok().map(|m| (m.dev(), m.ino()));
        let reopen = match files.get(&path) {
            Some(open) => current != Some(open.id),
            None => true,
        };
        if reopen {
            files.remove(&path);
            let open = open(&path)
                .await
                .map_err(|e| SendError::retry(format!("cannot open {}: {e}", path.display())))?;
            files.insert(path.clone(), open);
        }
        let Some(open) = files.get_mut(&path) else {
            return Err(SendError::retry("file handle lost"));
        };
        open.used = now;
        let written = async {
            open.file.write_all(&batch.body).await?;
            open.file.flush().await?;
            if self.fsync {
                open.file.sync_data().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = written {
            // A partial write may have left part of the batch in the file; the
            // retry writes it whole (at-least-once). Reopen next time.
            files.remove(&path);
            return Err(SendError::retry(format!("cannot write to {}: {e}", path.display())));
        }
        Ok(())
    }
}

async fn open(path: &PathBuf) -> std::io::Result<Open> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
    let m = file.metadata().await?;
    Ok(Open { file, id: (m.dev(), m.ino()), used: Instant::now() })
}
