//! Dead letters: batches a destination refused for their content (a 400, a
//! 413, a 422), kept in `data_dir/dead/<sink>/` to be looked at and sent
//! again (`hostwatch dead-letters list|replay`) once the cause is fixed.
//!
//! Each is two files named after the time it was written and a counter:
//! `<millis>-<n>.<ext>`, the body exactly as it was sent (`.ndjson`,
//! `.json`, `.txt`, with `.gz` or `.zst` when compressed), and
//! `<millis>-<n>.meta.json`, why and how to read it. The directory is
//! bounded: letters older than `max_age` are deleted (when the sink starts,
//! after each new letter, and periodically), then the oldest go until the
//! rest fit in `max_size`. Each deletion is counted. The sink keeps a list
//! of its letters so that a new one costs no listing of the directory; the
//! periodic sweep reads the directory again (`replay` deletes letters too).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::batch::EncodedBatch;
use crate::config::{BuildError, ByteSize, Duration as ConfigDuration};
use crate::pipeline::metrics::ComponentMetrics;

/// `dead_letter:` on a sink.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The most bytes of dead letters kept for the sink; past it the oldest
    /// are deleted. Default: `100MiB`.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// How long a dead letter is kept. Default: `7d`.
    #[serde(default)]
    pub max_age: Option<ConfigDuration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_size: u64,
    pub max_age: Duration,
}

impl DeadLetterConfig {
    pub fn resolve(&self) -> Result<Limits, BuildError> {
        let limits = Limits {
            max_size: self.max_size.map_or(100 << 20, |s| s.0),
            max_age: self.max_age.map_or(Duration::from_secs(7 * 24 * 3600), |d| d.0),
        };
        if limits.max_age.is_zero() {
            return Err(BuildError::new("`dead_letter.max_age` must be more than 0"));
        }
        Ok(limits)
    }
}

/// The dead-letter directory of one sink.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    pub dir: PathBuf,
    pub limits: Limits,
    /// The letters in the directory, oldest first, as far as the sink knows.
    known: Arc<Mutex<VecDeque<Letter>>>,
}

/// One dead letter, as `list` shows it.
#[derive(Debug, Clone)]
pub struct Letter {
    /// `<millis>-<n>`: the name both files start with.
    pub name: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub millis: u64,
    /// The body as it was sent; `None` if only the meta file is left.
    pub body: Option<PathBuf>,
    pub bytes: u64,
    pub meta: Meta,
}

/// What `<name>.meta.json` says.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Meta {
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub events: usize,
    /// The status the destination answered, for an HTTP sink.
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub destination: Option<String>,
    /// For sinks that publish each event as a message: one line of the body
    /// per message (replay does not take these).
    #[serde(default)]
    pub messages: bool,
}

/// How many letters `enforce` deleted, and why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub size: u64,
    pub age: u64,
}

impl DeadLetters {
    pub fn new(dir: PathBuf, limits: Limits) -> Self {
        DeadLetters { dir, limits, known: Arc::default() }
    }

    /// How often expired letters are looked for while the sink runs.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.max_age / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Writes a refused batch, then deletes what no longer fits. Returns the
    /// body's path.
    pub async fn write(
        &self,
        batch: &EncodedBatch,
        reason: &str,
        metrics: &ComponentMetrics,
    ) -> std::io::Result<PathBuf> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        tokio::fs::create_dir_all(&self.dir).await?;
        let millis = unix_millis();
        let base = match batch.content_type {
            ct if ct.contains("ndjson") => "ndjson",
            ct if ct.contains("json") => "json",
            _ => "txt",
        };
        let ext = match batch.content_encoding {
            Some("gzip") => format!("{base}.gz"),
            Some("zstd") => format!("{base}.zst"),
            _ => base.to_string(),
        };
        let name = format!("{millis}-{}", SEQ.fetch_add(1, Relaxed));
        let path = self.dir.join(format!("{name}.{ext}"));
        let messages = batch.messages.is_some();
        if messages {
            // The values of a broker sink's messages lie end to end: one a
            // line keeps them apart for whoever reads the file.
            let mut body = Vec::with_capacity(batch.body.len() + batch.events);
            for m in batch.messages() {
                body.extend_from_slice(m.value);
                body.push(b'\n');
            }
            tokio::fs::write(&path, body).await?;
        } else {
            tokio::fs::write(&path, &batch.body).await?;
        }
        let meta = Meta {
            reason: reason.to_string(),
            events: batch.events,
            status: http_status(reason),
            content_type: Some(batch.content_type.to_string()),
            content_encoding: batch.content_encoding.map(str::to_string),
            destination: batch.partition.clone(),
            messages,
        };
        let meta_text = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        tokio::fs::write(self.dir.join(format!("{name}.meta.json")), &meta_text).await?;
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len()) + meta_text.len() as u64;
        let letter = Letter { name, millis, body: Some(path.clone()), bytes, meta };
        self.known.lock().unwrap_or_else(|e| e.into_inner()).push_back(letter);
        self.enforce_in_background(metrics, false).await;
        Ok(path)
    }

    /// Runs [`enforce`](Self::enforce) off the async threads (reading the
    /// directory again if `rescan`) and counts what it deleted.
    pub async fn enforce_in_background(&self, metrics: &ComponentMetrics, rescan: bool) {
        let this = self.clone();
        let now = unix_millis();
        let run = move || if rescan { this.enforce(now) } else { Ok(this.enforce_known(now)) };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(deleted)) => count(metrics, deleted),
            Ok(Err(e)) => {
                tracing::warn!(component = %metrics.id, "cannot clean up {}: {e}", self.dir.display())
            }
            Err(e) => tracing::warn!(component = %metrics.id, "dead-letter clean-up failed: {e}"),
        }
    }

    /// Reads the directory, then deletes the letters older than `max_age`,
    /// then the oldest until the rest fit in `max_size`.
    pub fn enforce(&self, now_millis: u64) -> std::io::Result<Deleted> {
        let letters = match list(&self.dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = letters.into();
        Ok(self.enforce_known(now_millis))
    }

    /// [`enforce`](Self::enforce) over the letters the sink knows of.
    fn enforce_known(&self, now_millis: u64) -> Deleted {
        let mut letters = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut deleted = Deleted::default();
        let max_age = self.limits.max_age.as_millis() as u64;
        let mut total: u64 = letters.iter().map(|l| l.bytes).sum();
        // Oldest first: `list` sorts them, and new ones join at the back.
        letters.retain(|l| {
            if now_millis.saturating_sub(l.millis) < max_age {
                return true;
            }
            if remove(&self.dir, l) {
                deleted.age += 1;
            }
            total -= l.bytes;
            false
        });
        while total > self.limits.max_size {
            let Some(l) = letters.pop_front() else { break };
            if remove(&self.dir, &l) {
                deleted.size += 1;
            }
            // One that cannot be deleted is looked for again at the next sweep.
            total -= l.bytes;
        }
        deleted
    }
}

fn count(metrics: &ComponentMetrics, deleted: Deleted) {
    metrics.dead_letters_deleted_size.fetch_add(deleted.size, Relaxed);
    metrics.dead_letters_deleted_age.fetch_add(deleted.age, Relaxed);
}

/// Deletes both files of a letter; whether it is gone.
pub fn remove(dir: &Path, letter: &Letter) -> bool {
    let meta = dir.join(format!("{}.meta.json", letter.name));
    let gone =
        |r: std::io::Result<()>| r.is_ok() || r.is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    let body = letter.body.as_ref().is_none_or(|b| gone(std::fs::remove_file(b)));
    body && gone(std::fs::remove_file(meta))
}

/// The letters in `dir`, oldest first. A body without its meta file (the
/// agent stopped between the two writes) is listed with what its name says.
pub fn list(dir: &Path) -> std::io::Result<Vec<Letter>> {
    let mut letters: Vec<(u64, u64, Letter)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        // `<millis>-<n>.<ext>`: anything else is not ours.
        let Some((name, ext)) = file_name.split_once('.') else { continue };
        let Some((millis, n)) = name.split_once('-') else { continue };
        let (Ok(millis), Ok(n)) = (millis.parse::<u64>(), n.parse::<u64>()) else { continue };
        let bytes = entry.metadata().map_or(0, |m| m.len());
        let i = match letters.iter().position(|(_, _, l)| l.name == name) {
            Some(i) => i,
            None => {
                let letter =
                    Letter { name: name.to_string(), millis, body: None, bytes: 0, meta: Meta::default() };
                letters.push((millis, n, letter));
                letters.len() - 1
            }
        };
        let letter = &mut letters[i].2;
        letter.bytes += bytes;
        if ext == "meta.json" {
            let text = std::fs::read(entry.path())?;
            letter.meta = serde_json::from_slice(&text)
                .unwrap_or_else(|e| Meta { reason: format!("unreadable meta file: {e}"), ..Meta::default() });
        } else {
            letter.body = Some(entry.path());
        }
    }
    letters.sort_by_key(|(millis, n, _)| (*millis, *n));
    Ok(letters.into_iter().map(|(_, _, l)| l).collect())
}

/// The status in an HTTP sink's "… answered 400 Bad Request" reason.
fn http_status(reason: &str) -> Option<u16> {
    let at = reason.find(" answered ")? + " answered ".len();
    reason.get(at..at + 3)?.parse().ok()
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, for people.
pub fn format_millis(ms: u64) -> String {
    let mut out = Vec::with_capacity(32);
    crate::event::time::format_rfc3339(ms as i64 * 1_000, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(dir: &Path, millis: u64, n: u64, bytes: usize) {
        std::fs::write(dir.join(format!("{millis}-{n}.ndjson")), vec![b'x'; bytes]).unwrap();
        std::fs::write(dir.join(format!("{millis}-{n}.meta.json")), r#"{"events":1}"#).unwrap();
    }

    #[test]
    fn expired_go_then_the_oldest_until_the_rest_fit() {
        let dir = tempfile::tempdir().unwrap();
        letter(dir.path(), 1_000, 0, 100);
        letter(dir.path(), 50_000, 1, 100);
        letter(dir.path(), 60_000, 2, 100);
        letter(dir.path(), 60_000, 3, 100);
        std::fs::write(dir.path().join("README"), "not a letter").unwrap();
        let meta = r#"{"events":1}"#.len() as u64;
        let limits = Limits { max_size: 2 * (100 + meta), max_age: Duration::from_secs(30) };
        let dl = DeadLetters::new(dir.path().to_path_buf(), limits);
        assert_eq!(dl.enforce(61_000).unwrap(), Deleted { size: 1, age: 1 });
        let left: Vec<String> = list(dir.path()).unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(left, vec!["60000-2", "60000-3"]);
        assert_eq!(http_status("http://x/ answered 422 Unprocessable Entity: no"), Some(422));
        assert_eq!(http_status("routing key too long"), None);
    }
}
