//! `hostwatch dead-letters list|replay --sink ID`: the dead letters of a
//! sink, and sending them again once the cause of their refusal is fixed.
//!
//! Replay sends each letter's body as it was stored (the same encoding and
//! compression, so the events keep their ids) through the sink built from
//! the config (the same destination and headers), deletes each one that is
//! accepted and keeps the others. It can run while the agent runs: the
//! agent only adds letters and deletes expired ones, and a letter the agent
//! is still writing (its meta file not there yet) is left for later.

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;

use super::batch::EncodedBatch;
use super::dead_letter::{self, Letter};
use super::retry::SendError;
use super::{BuiltSink, Transport};
use crate::event::encode::Codec;
use crate::pipeline::metrics::ComponentMetrics;

/// One line per letter, oldest first: time, events, bytes, status, reason.
pub fn list(dir: &Path) -> Result<String, String> {
    let letters = read(dir)?;
    let mut out = String::new();
    for l in &letters {
        let status = l.meta.status.map_or("-".to_string(), |s| s.to_string());
        let _ = writeln!(
            out,
            "{}  {} events  {} bytes  status {status}  {}  {}",
            dead_letter::format_millis(l.millis),
            l.meta.events,
            l.bytes,
            l.name,
            l.meta.reason
        );
    }
    let total: u64 = letters.iter().map(|l| l.bytes).sum();
    let _ = writeln!(out, "{} dead letters, {total} bytes in {}", letters.len(), dir.display());
    Ok(out)
}

fn read(dir: &Path) -> Result<Vec<Letter>, String> {
    match dead_letter::list(dir) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: usize,
    pub events: usize,
    /// Each letter kept, and why.
    pub kept: Vec<(String, String)>,
}

/// Sends every dead letter of sink `id` again through `built`, the sink
/// built from the config.
pub async fn replay<S: Transport>(
    id: &str,
    built: &BuiltSink<S>,
    data_dir: &Path,
) -> Result<Outcome, String> {
    let dir = super::dead_letter_dir(data_dir, id);
    let metrics = ComponentMetrics::new(id, "sink", "replay");
    let timeout = built.request.timeout;
    let mut outcome = Outcome::default();
    for letter in read(&dir)? {
        let batch = match load(&letter) {
            Ok(b) => b,
            Err(why) => {
                outcome.kept.push((letter.name, why));
                continue;
            }
        };
        let result = match tokio::time::timeout(timeout, built.sink.send(&batch, &metrics)).await {
            Ok(r) => r,
            Err(_) => {
                Err(SendError::retry(format!("no answer within {}", humantime::format_duration(timeout))))
            }
        };
        match result {
            Ok(()) => {
                outcome.sent += 1;
                outcome.events += batch.events;
                if !dead_letter::remove(&dir, &letter) {
                    outcome.kept.push((letter.name, "sent, but could not be deleted".to_string()));
                }
            }
            Err(SendError::Retry { reason, .. } | SendError::Auth(reason) | SendError::Permanent(reason)) => {
                outcome.kept.push((letter.name, reason))
            }
        }
    }
    Ok(outcome)
}

/// A letter as the batch it was.
fn load(letter: &Letter) -> Result<EncodedBatch, String> {
    let meta = &letter.meta;
    let Some(path) = &letter.body else { return Err("its body is missing".to_string()) };
    let Some(content_type) = meta.content_type.as_deref() else {
        return Err("its meta file is missing or incomplete (still being written?)".to_string());
    };
    if meta.messages {
        return Err("written by a sink that publishes messages one by one; replay sends whole bodies \
                    (the file holds one message a line)"
            .to_string());
    }
    let content_type = [Codec::Ndjson, Codec::Json, Codec::CloudeventsBatch, Codec::Text]
        .into_iter()
        .map(Codec::content_type)
        .find(|ct| *ct == content_type)
        .ok_or_else(|| format!("unknown content type {content_type:?}"))?;
    let content_encoding = match meta.content_encoding.as_deref() {
        None => None,
        Some("gzip") => Some("gzip"),
        Some("zstd") => Some("zstd"),
        Some(other) => return Err(format!("unknown content encoding {other:?}")),
    };
    let body = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(EncodedBatch::stored(
        Bytes::from(body),
        meta.events,
        content_type,
        content_encoding,
        meta.destination.clone(),
    ))
}
