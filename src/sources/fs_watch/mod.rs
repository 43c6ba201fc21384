//! `fs_watch`: `file.created`, `file.modified`, `file.deleted` and
//! `file.renamed` for files under `paths`, through inotify (the `notify`
//! crate), with each file's size, mode, owner, mtime and, with `hash:
//! sha256`, its content hash (file integrity monitoring).
//!
//! A burst of changes to one file within `debounce` is one event: writes
//! in a row are one `file.modified`, a file created and written is one
//! `file.created`, one created and deleted again is one `file.deleted`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use serde::Deserialize;

use super::context::SourceContext;
use crate::config::BuildError;
use crate::event::id::IdGen;
use crate::event::{AckSet, Event, EventBatch, Map, Str, Value, time};

/// `type: fs_watch`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Files or directories to watch. Required.
    pub paths: Vec<PathBuf>,
    /// Watch the directories' subdirectories too. Default: `true`.
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Paths to leave out (globs over the full path, `**/*.swp`). Default: none.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `sha256`: add the content hash of regular files. Default: `none`.
    #[serde(default)]
    pub hash: HashKind,
    /// Files larger than this are not hashed (the event says so). Default: `64MiB`.
    #[serde(default = "default_hash_max")]
    pub hash_max_bytes: crate::config::ByteSize,
    /// Changes to one path within this time make one event. Default: `500ms`.
    #[serde(default = "default_debounce")]
    pub debounce: crate::config::Duration,
}

fn yes() -> bool {
    true
}

fn default_hash_max() -> crate::config::ByteSize {
    crate::config::ByteSize(64 << 20)
}

fn default_debounce() -> crate::config::Duration {
    crate::config::Duration::from_millis(500)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashKind {
    #[default]
    None,
    Sha256,
}

pub struct FsWatch {
    config: Config,
    exclude: GlobSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Created,
    Modified,
    Deleted,
    Renamed,
}

struct Pending {
    change: Change,
    /// For a rename: where it came from.
    from: Option<PathBuf>,
    last: Instant,
}

impl FsWatch {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if config.paths.is_empty() {
            return Err(BuildError::new("`paths` needs at least one file or directory"));
        }
        let mut b = GlobSetBuilder::new();
        for g in &config.exclude {
            b.add(Glob::new(g).map_err(|e| BuildError::new(format!("`exclude`: {e}")))?);
        }
        let exclude = b.build().map_err(|e| BuildError::new(format!("`exclude`: {e}")))?;
        Ok(FsWatch { config: config.clone(), exclude })
    }

    pub async fn run(self, mut cx: SourceContext) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<notify::Result<notify::Event>>(4096);
        let mut watcher = notify::recommended_watcher(move |e| {
            // Blocks the watcher's thread while the source is behind; the
            // kernel queues meanwhile.
            let _ = tx.blocking_send(e);
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
        let mode = if self.config.recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        for p in &self.config.paths {
            if let Err(e) = watcher.watch(p, mode) {
                let e = format!("cannot watch {}: {e}", p.display());
                cx.ready(Err(e.clone()));
                return Err(e);
            }
        }
        cx.ready(Ok(()));
        let debounce = self.config.debounce.0;
        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        let mut ids = IdGen::new();
        let mut owners = Owners::default();
        let mut tick = tokio::time::interval(debounce.max(Duration::from_millis(20)) / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(Ok(event)) => self.note(event, &mut pending),
                    Some(Err(e)) => tracing::warn!(component = %cx.id, "file watch: {e}"),
                    None => return Ok(()),
                },
                _ = tick.tick(), if !pending.is_empty() => {
                    let now = Instant::now();
                    let due: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, p)| now.duration_since(p.last) >= debounce)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if due.is_empty() {
                        continue;
                    }
                    let stamp = time::now_micros();
                    let mut events = Vec::with_capacity(due.len());
                    for path in due {
                        let Some(p) = pending.remove(&path) else { continue };
                        events.push(self.event(&cx, &mut ids, &mut owners, stamp, &path, p));
                    }
                    cx.metrics.add_in(events.len());
                    if cx.out.send(EventBatch::new(events, AckSet::new())).await.is_err() {
                        return Ok(());
                    }
                }
                _ = cx.shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Records a change, merged with what is pending for the same path.
    fn note(&self, event: notify::Event, pending: &mut HashMap<PathBuf, Pending>) {
        let now = Instant::now();
        let change = match event.kind {
            EventKind::Create(_) => Change::Created,
            EventKind::Remove(_) => Change::Deleted,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                let [from, to] = event.paths.as_slice() else { return };
                // The halves of the rename came first: the rename replaces them.
                pending.remove(from);
                let from = from.clone();
                if self.excluded(to) {
                    return;
                }
                pending.insert(to.clone(), Pending { change: Change::Renamed, from: Some(from), last: now });
                return;
            }
            // Moved out of sight, or in from elsewhere (a rename within the
            // watched paths also reports both halves together, above).
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Change::Deleted,
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Change::Created,
            EventKind::Modify(_) => Change::Modified,
            _ => return,
        };
        for path in event.paths {
            if self.excluded(&path) {
                continue;
            }
            match pending.get_mut(&path) {
                Some(p) => {
                    p.change = match (p.change, change) {
                        (Change::Created | Change::Renamed, Change::Modified) => p.change,
                        (Change::Deleted, Change::Created) => Change::Modified,
                        (_, c) => c,
                    };
                    if p.change != Change::Renamed {
                        p.from = None;
                    }
                    p.last = now;
                }
                None => {
                    pending.insert(path, Pending { change, from: None, last: now });
                }
            }
        }
    }

    fn excluded(&self, path: &Path) -> bool {
        self.exclude.is_match(path)
    }

    fn event(
        &self,
        cx: &SourceContext,
        ids: &mut IdGen,
        owners: &mut Owners,
        stamp: i64,
        path: &Path,
        p: Pending,
    ) -> Event {
        let ty = match p.change {
            Change::Created => "file.created",
            Change::Modified => "file.modified",
            Change::Deleted => "file.deleted",
            Change::Renamed => "file.renamed",
        };
        let text = path.to_string_lossy().into_owned();
        let mut data = Map::with_capacity(10);
        data.push(Str::from_static("path"), Value::from(text.clone()));
        if let Some(from) = &p.from {
            data.push(Str::from_static("from"), Value::from(from.to_string_lossy().into_owned()));
        }
        if p.change != Change::Deleted
            && let Ok(meta) = std::fs::symlink_metadata(path)
        {
            let kind = if meta.is_dir() {
                "directory"
            } else if meta.file_type().is_symlink() {
                "symlink"
            } else if meta.is_file() {
                "file"
            } else {
                "other"
            };
            data.push(Str::from_static("kind"), Value::from(kind));
            data.push(Str::from_static("size"), Value::from(meta.len()));
            data.push(Str::from_static("mode"), Value::from(format!("{:04o}", meta.mode() & 0o7777)));
            data.push(Str::from_static("uid"), Value::from(u64::from(meta.uid())));
            data.push(Str::from_static("gid"), Value::from(u64::from(meta.gid())));
            if let Some(owner) = owners.name(meta.uid()) {
                data.push(Str::from_static("owner"), Value::from(owner));
            }
            let mtime = meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1000;
            let mut buf = Vec::with_capacity(32);
            time::format_rfc3339(mtime, &mut buf);
            data.push(Str::from_static("mtime"), Value::from(String::from_utf8_lossy(&buf).into_owned()));
            if self.config.hash == HashKind::Sha256 && meta.is_file() {
                if meta.len() > self.config.hash_max_bytes.0 {
                    data.push(Str::from_static("sha256"), Value::Null);
                    data.push(Str::from_static("hash_skipped"), Value::from("larger than hash_max_bytes"));
                } else if let Some(h) = sha256(path) {
                    data.push(Str::from_static("sha256"), Value::from(h));
                }
            }
        }
        cx.event(ids, stamp, Str::from_static(ty), Some(Str::from(text)), data)
    }
}

fn sha256(path: &Path) -> Option<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// User names by uid, from /etc/passwd, read again when a uid is unknown.
#[derive(Default)]
struct Owners {
    names: HashMap<u32, String>,
    read: Option<Instant>,
}

impl Owners {
    fn name(&mut self, uid: u32) -> Option<String> {
        if !self.names.contains_key(&uid) && self.read.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            self.read = Some(Instant::now());
            self.names = crate::util::sys::read_users();
        }
        self.names.get(&uid).cloned()
    }
}
