//! `file`: tails log files, through rotation, restarts and crashes, without
//! losing or repeating a line.
//!
//! One thread per source reads (see [`tail`]); the source's task keeps the
//! checkpoints (see [`checkpoint`]). Each line (or multiline group) becomes a
//! `log.line` event: `data.message`, `data.file`, `data.offset` (where the
//! line starts in the file), `subject` the path.

mod checkpoint;

/// Problems with the checkpoints saved under `data_dir` (for `validate`).
pub fn checkpoint_problems(data_dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("checkpoints")) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| checkpoint::readable(&p).err())
        .collect()
}

// The parts: `discovery` finds files by their globs, `fingerprint` says
// which file is which, `index` holds the files followed, `lines` and
// `multiline` cut their bytes into lines, `events` makes the events, `tail`
// runs it all, and `checkpoint` keeps where each file stands.
mod discovery;
mod events;
mod fingerprint;
mod index;
mod lines;
mod multiline;
mod tail;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use self::checkpoint::Checkpointer;
use self::discovery::{Globs, Scanner};
use self::lines::Newline;
use self::multiline::Multiline;
use super::context::SourceContext;
use crate::config::{BuildError, ByteSize, Duration as ConfigDuration, Spanned};
use crate::pipeline::metrics::Families;

/// `type: file`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Absolute globs of the files to read: `*`, `?`, `[ab]`, `{a,b}`, and
    /// `**` for any depth. Symlinks are followed. Required.
    pub include: Vec<Spanned<String>>,
    /// Globs of files to leave out; one without `/` is matched against the
    /// file name (`*.gz`). Default: none.
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    /// Where a file found at startup without a checkpoint starts: `beginning`
    /// or `end`. Files with a checkpoint resume from it, and files created
    /// while the agent runs are read from their beginning. Default: `beginning`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How often to look for new, renamed and deleted files, besides what
    /// inotify reports. Default: `1s`.
    #[serde(default = "default_glob_interval")]
    pub glob_interval: ConfigDuration,
    /// Identify files by a checksum of their first this-many bytes instead of
    /// their first line (a file is read once it is that long). Default: the
    /// first line.
    #[serde(default)]
    pub fingerprint_bytes: Option<ByteSize>,
    /// A file renamed out of `include`, deleted, or truncated by
    /// copytruncate is read to its end and let go once it has not grown for
    /// this long. Default: `5s`.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait: ConfigDuration,
    /// Checkpoints are written at most this often (and when the source
    /// stops), only while lines are delivered. Short keeps what a crash
    /// repeats small; each write is one small file and one fsync. Default: `10ms`.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: ConfigDuration,
    /// Checkpoints of files gone for this long are forgotten. Default: `24h`.
    #[serde(default = "default_remove_after")]
    pub remove_after: ConfigDuration,
    /// Longer lines are cut here (and counted); the rest is skipped. Default: `100KiB`.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// The files' encoding: `utf-8`, `utf-16le`, `utf-16be`, `latin1`, or
    /// another WHATWG label. Invalid bytes are replaced, never dropped.
    /// Default: `utf-8`.
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    /// Join lines into one event (stack traces). Default: off, one event a line.
    #[serde(default)]
    pub multiline: Option<multiline::Config>,
    /// The most files open at once; the idlest are closed beyond it.
    /// Default: `512`.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// A file that has not changed for this long is closed (and reopened
    /// when it changes). Default: `60s`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

fn default_glob_interval() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_rotate_wait() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}
fn default_checkpoint_interval() -> ConfigDuration {
    ConfigDuration::from_millis(10)
}
fn default_remove_after() -> ConfigDuration {
    ConfigDuration::from_secs(24 * 3600)
}
fn default_max_line_bytes() -> ByteSize {
    ByteSize::kib(100)
}
fn default_max_open_files() -> usize {
    512
}
fn default_idle_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

/// The resolved settings the reader works with.
pub struct Settings {
    pub read_from_end: bool,
    pub glob_interval: Duration,
    pub fingerprint_bytes: Option<usize>,
    pub rotate_wait: Duration,
    pub remove_after: Duration,
    pub idle_timeout: Duration,
    pub max_open_files: usize,
    pub max_line_bytes: usize,
    /// How much one read takes.
    pub read_chunk: usize,
    pub newline: Newline,
    /// `None` for UTF-8.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    pub multiline: Option<Multiline>,
}

pub struct FileSource {
    config: Config,
    settings: Arc<Settings>,
}

impl FileSource {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        Globs::new(&config.include, &config.exclude)?;
        let encoding = match &config.encoding {
            None => None,
            Some(label) => match encoding_rs::Encoding::for_label(label.value.trim().as_bytes()) {
                Some(e) if e == encoding_rs::UTF_8 => None,
                Some(e) if e == encoding_rs::REPLACEMENT => {
                    return Err(BuildError::at(label.pos, format!("`{}` cannot be read", label.value)));
                }
                Some(e) => Some(e),
                None => {
                    return Err(BuildError::at(
                        label.pos,
                        format!(
                            "unknown encoding `{}`; use a WHATWG label such as utf-8, utf-16le, latin1",
                            label.value
                        ),
                    ));
                }
            },
        };
        if config.max_open_files == 0 {
            return Err(BuildError::new("`max_open_files` must be at least 1"));
        }
        if config.max_line_bytes.0 == 0 {
            return Err(BuildError::new("`max_line_bytes` must be more than 0"));
        }
        if config.glob_interval.is_zero() {
            return Err(BuildError::new("`glob_interval` must be more than 0"));
        }
        let multiline = config.multiline.as_ref().map(Multiline::new).transpose()?;
        let max_line_bytes = config.max_line_bytes.0 as usize;
        let settings = Settings {
            read_from_end: config.read_from == ReadFrom::End,
            glob_interval: *config.glob_interval,
            fingerprint_bytes: config.fingerprint_bytes.map(|b| b.0.max(1) as usize),
            rotate_wait: *config.rotate_wait,
            remove_after: *config.remove_after,
            idle_timeout: *config.idle_timeout,
            max_open_files: config.max_open_files,
            max_line_bytes,
            read_chunk: (256 << 10).max(max_line_bytes.min(4 << 20)),
            newline: Newline::for_encoding(encoding),
            encoding,
            multiline,
        };
        Ok(FileSource { config: config.clone(), settings: Arc::new(settings) })
    }

    pub async fn run(self, mut cx: SourceContext) -> Result<(), String> {
        let checkpoints = cx.data_dir.join("checkpoints").join(format!("{}.json", cx.id));
        if let Err(e) = prepare_dir(&checkpoints) {
            cx.ready(Err(e.clone()));
            return Err(e);
        }
        let saved = match checkpoint::load(&checkpoints) {
            Ok(s) => s,
            Err(e) => {
                cx.ready(Err(e.clone()));
                return Err(e);
            }
        };
        let globs = Globs::new(&self.config.include, &self.config.exclude).map_err(|e| e.message)?;
        let (notify_tx, notify_rx) = std::sync::mpsc::channel();
        let mut watcher = match notify::recommended_watcher(notify_tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(component = %cx.id, "inotify is not available ({e}); looking for changes every glob_interval");
                None
            }
        };
        let roots = globs.roots();
        let file_metrics = Arc::new(FileMetrics::default());
        let progress: checkpoint::Progress = Arc::new(Mutex::new(Default::default()));
        register_metrics(&cx, file_metrics.clone(), progress.clone());

        let (updates_tx, updates_rx) = tokio::sync::mpsc::unbounded_channel();
        let checkpointer = Checkpointer::new(
            checkpoints,
            saved.clone(),
            *self.config.checkpoint_interval,
            *self.config.remove_after,
            progress.clone(),
        );
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let ready = cx.take_ready();
        let SourceContext { id, out, shutdown, metrics, host, source_uri, .. } = cx;
        let tailer = tail::Tailer::new(
            self.settings.clone(),
            Scanner::new(globs),
            out,
            tokio::runtime::Handle::current(),
            shutdown.clone(),
            updates_tx,
            metrics,
            file_metrics,
            progress,
            source_uri,
            host,
            notify_rx,
            saved,
        );
        let reader = std::thread::Builder::new()
            .name(format!("file:{id}"))
            .spawn(move || {
                // The watcher lives with the reader; directories that do not
                // exist yet are watched once they do.
                let mut watched = HashSet::new();
                let mut tailer = tailer;
                watch(&mut watcher, &roots, &mut watched);
                tailer.set_tick_hook(Box::new(move || watch(&mut watcher, &roots, &mut watched)));
                tailer.run(started_tx);
            })
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        // Started once the files present now are found (and `read_from`
        // applied to them).
        let _ = started_rx.await;
        if let Some(ready) = ready {
            let _ = ready.send(Ok(()));
        }
        tracing::info!(component = %id, "tailing {}", self.config.include.iter().map(|i| i.value.as_str()).collect::<Vec<_>>().join(", "));
        checkpointer.run(updates_rx).await;
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        Ok(())
    }
}

fn prepare_dir(checkpoints: &Path) -> Result<(), String> {
    let dir = checkpoints.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e} (check data_dir)", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"")
        .map_err(|e| format!("cannot write in {}: {e} (check data_dir)", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn watch(
    watcher: &mut Option<notify::RecommendedWatcher>,
    roots: &[(PathBuf, bool)],
    watched: &mut HashSet<PathBuf>,
) {
    use notify::Watcher as _;
    let Some(w) = watcher.as_mut() else { return };
    for (root, recursive) in roots {
        if watched.contains(root) || !root.is_dir() {
            continue;
        }
        let mode =
            if *recursive { notify::RecursiveMode::Recursive } else { notify::RecursiveMode::NonRecursive };
        match w.watch(root, mode) {
            Ok(()) => {
                watched.insert(root.clone());
            }
            Err(e) => tracing::debug!(dir = %root.display(), "cannot watch yet: {e}"),
        }
    }
}

/// The file source's own metrics.
#[derive(Default)]
pub struct FileMetrics {
    pub watched: AtomicU64,
    pub open: AtomicU64,
    pub lines_truncated: AtomicU64,
    pub rotations: AtomicU64,
    pub truncations: AtomicU64,
    pub unreadable: AtomicU64,
    warned: Mutex<HashSet<PathBuf>>,
}

impl FileMetrics {
    /// Counts a file that cannot be read; true the first time for a path
    /// (log it once, not at every attempt).
    pub fn note_unreadable(&self, path: &Path) -> bool {
        let first = self.warned.lock().map(|mut w| w.insert(path.to_path_buf())).unwrap_or(false);
        if first {
            self.unreadable.fetch_add(1, Relaxed);
        }
        first
    }
}

fn register_metrics(cx: &SourceContext, m: Arc<FileMetrics>, progress: checkpoint::Progress) {
    cx.registry.add_collector(
        &cx.id,
        Arc::new(move |families: &mut Families| {
            families.gauge(
                "hostwatch_files_watched",
                "Files a file source follows.",
                m.watched.load(Relaxed),
            );
            families.gauge("hostwatch_files_open", "Files a file source holds open.", m.open.load(Relaxed));
            families.counter(
                "hostwatch_lines_truncated_total",
                "Lines cut at max_line_bytes.",
                m.lines_truncated.load(Relaxed),
            );
            families.counter(
                "hostwatch_file_rotations_total",
                "Files renamed away or deleted while read.",
                m.rotations.load(Relaxed),
            );
            families.counter(
                "hostwatch_file_truncations_total",
                "Files truncated while read.",
                m.truncations.load(Relaxed),
            );
            families.counter(
                "hostwatch_files_unreadable_total",
                "Files that could not be opened or read.",
                m.unreadable.load(Relaxed),
            );
            let Ok(p) = progress.lock() else { return };
            let mut total = 0;
            for (path, size, acked) in p.values() {
                let behind = size.saturating_sub(*acked);
                total += behind;
                if behind > 0 {
                    families.gauge_with(
                        "hostwatch_file_bytes_behind",
                        "Bytes of a file not yet delivered (size minus checkpoint).",
                        ("file", path),
                        behind,
                    );
                }
            }
            let help = "Bytes of all the files of a file source not yet delivered.";
            families.gauge("hostwatch_file_source_bytes_behind", help, total);
        }),
    );
}
