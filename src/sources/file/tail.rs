//! The reader: one thread that finds files, follows them through rotation,
//! reads them and sends their lines.
//!
//! It blocks where a reader should: on `read` (from the page cache, fast), on
//! sending when the pipeline is full (so a file is simply read later), and,
//! with nothing to do, on the next inotify event or the next timer.
//!
//! Files are known by their fingerprint (see [`super::fingerprint`]), and by
//! device and inode while they exist (the [`Index`] keeps both):
//! - the same inode under another path is the same file, renamed;
//! - a new inode with the fingerprint of a file that was truncated is the
//!   copy that `copytruncate` made of it: reading goes on there from where it
//!   stopped, and the truncated file is a new file read from 0;
//! - a new inode with a known fingerprint from the checkpoints (or of a file
//!   read before) continues from its checkpoint;
//! - anything else is a new file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Progress, Saved, Update, parse_fingerprint};
use super::discovery::Scanner;
use super::events::Events;
use super::fingerprint::fingerprint;
use super::index::{Index, State, Tracked};
use super::lines::Line;
use super::multiline::Multiline;
use super::{FileMetrics, Settings};

mod read;
use crate::event::Str;
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::ComponentMetrics;

/// How much of a file one turn reads before the next file gets its turn.
const TURN_BYTES: usize = 4 << 20;
/// Stat every closed file this often, in case inotify missed a change.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct Tailer {
    settings: Arc<Settings>,
    scanner: Scanner,
    out: Fanout,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    updates: UnboundedSender<Update>,
    metrics: Arc<ComponentMetrics>,
    file_metrics: Arc<FileMetrics>,
    progress: Progress,
    notify: std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    /// Checkpoints of files not (yet) being read, by fingerprint.
    saved: HashMap<u64, Saved>,
    index: Index,
    queue: VecDeque<u64>,
    events: Events,
    open: usize,
    /// Runs at every scan (watches directories that appeared).
    tick_hook: Option<Box<dyn FnMut() + Send>>,
    /// Reused from read to read.
    lines_buf: Vec<Line>,
}

impl Tailer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        scanner: Scanner,
        out: Fanout,
        runtime: tokio::runtime::Handle,
        shutdown: CancellationToken,
        updates: UnboundedSender<Update>,
        metrics: Arc<ComponentMetrics>,
        file_metrics: Arc<FileMetrics>,
        progress: Progress,
        source: Str,
        host: Str,
        notify: std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
        saved: Vec<Saved>,
    ) -> Self {
        let saved = saved.into_iter().filter_map(|s| Some((parse_fingerprint(&s.fingerprint)?, s))).collect();
        let events = Events::new(source, host, settings.encoding);
        Tailer {
            settings,
            scanner,
            out,
            runtime,
            shutdown,
            updates,
            metrics,
            file_metrics,
            progress,
            notify,
            saved,
            index: Index::new(),
            queue: VecDeque::new(),
            events,
            open: 0,
            tick_hook: None,
            lines_buf: Vec::new(),
        }
    }

    pub fn set_tick_hook(&mut self, hook: Box<dyn FnMut() + Send>) {
        self.tick_hook = Some(hook);
    }

    /// Runs until shutdown; `started` hears once the first scan is done.
    pub fn run(mut self, started: tokio::sync::oneshot::Sender<()>) {
        self.scan(true, true);
        let _ = self.updates.send(Update::Scanned);
        let _ = started.send(());
        let mut next_tick = Instant::now() + self.settings.glob_interval;
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        while !self.shutdown.is_cancelled() {
            let mut rescan = false;
            while let Ok(event) = self.notify.try_recv() {
                rescan |= self.on_notify(event);
            }
            let now = Instant::now();
            if rescan || now >= next_tick {
                if let Some(hook) = self.tick_hook.as_mut() {
                    hook();
                }
                self.scan(false, false);
                self.poll_open();
                self.recheck_duplicates();
                self.publish_gauges();
                next_tick = now + self.settings.glob_interval;
            }
            if now >= next_sweep {
                self.sweep_closed();
                let keep = self.settings.remove_after.as_secs();
                let unix = super::checkpoint::unix_now();
                self.saved.retain(|_, s| unix.saturating_sub(s.seen) < keep);
                next_sweep = now + SWEEP_EVERY;
            }
            let worked = self.read_turn();
            self.timers(Instant::now());
            if worked || !self.queue.is_empty() {
                continue;
            }
            // Nothing to read: sleep until an event, the next scan or timer.
            let wake = self.next_deadline().map_or(next_tick, |d| d.min(next_tick));
            let wait = wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(250));
            match self.notify.recv_timeout(wait) {
                Ok(event) => {
                    if self.on_notify(event) {
                        next_tick = Instant::now();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    // === discovery ===

    /// Handles an inotify event; returns whether a scan is due.
    fn on_notify(&mut self, event: notify::Result<notify::Event>) -> bool {
        use notify::EventKind;
        let Ok(event) = event else { return true };
        if event.need_rescan() {
            return true;
        }
        match event.kind {
            EventKind::Modify(notify::event::ModifyKind::Data(_))
            | EventKind::Modify(notify::event::ModifyKind::Any) => {
                for path in &event.paths {
                    if let Some(id) = self.index.by_path(path) {
                        self.enqueue(id);
                    } else if self.index.is_duplicate(path) {
                        return true;
                    }
                }
                false
            }
            EventKind::Access(_) => false,
            EventKind::Modify(notify::event::ModifyKind::Metadata(_)) => false,
            _ => true,
        }
    }

    /// Looks for new, renamed and vanished files. `full` lists every
    /// directory; `startup` applies `read_from` to files never seen.
    fn scan(&mut self, full: bool, startup: bool) {
        let changes = self.scanner.scan(full);
        if changes.present.is_empty() && changes.gone.is_empty() {
            return;
        }
        let mut seen: HashSet<u64> = HashSet::new();
        for path in &changes.present {
            let Ok(meta) = std::fs::metadata(path) else { continue };
            if let Some(id) = self.index.by_inode((meta.dev(), meta.ino())) {
                seen.insert(id);
                self.moved(id, path);
                continue;
            }
            self.discovered(path, startup, &mut seen);
        }
        // Files whose path vanished or now names another file, and that
        // were not found under another name.
        let changed: HashSet<&Path> =
            changes.gone.iter().chain(changes.present.iter()).map(PathBuf::as_path).collect();
        let lost: Vec<u64> = self
            .index
            .iter()
            .filter(|(id, t)| t.state == State::Live && !seen.contains(id) && changed.contains(t.path()))
            .map(|(id, _)| id)
            .collect();
        for path in &changes.gone {
            self.index.drop_duplicate(path);
        }
        for id in lost {
            if let Some(t) = self.index.get_mut(id) {
                tracing::debug!(file = %t.path().display(), "file rotated away or deleted; reading it to its end");
                t.last_data = Instant::now();
                self.index.gone(id);
                self.file_metrics.rotations.fetch_add(1, Relaxed);
            }
            self.enqueue(id);
        }
    }

    /// A known inode found at `path`.
    fn moved(&mut self, id: u64, path: &Path) {
        let Some(t) = self.index.get(id) else { return };
        let renamed = t.path() != path;
        if renamed {
            tracing::debug!(from = %t.path().display(), to = %path.display(), "file renamed");
        }
        self.index.found_at(id, path);
        if renamed {
            self.track(id);
        }
        self.enqueue(id);
    }

    /// An inode not being followed, found at `path`.
    fn discovered(&mut self, path: &Path, startup: bool, seen: &mut HashSet<u64>) {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                if self.file_metrics.note_unreadable(path) {
                    tracing::warn!(file = %path.display(), "cannot open: {e}");
                }
                return;
            }
        };
        // What was opened, not what the path named a moment before: a
        // rotation may have renamed a new file into place in between.
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(_) => return,
        };
        let key = (meta.dev(), meta.ino());
        if let Some(id) = self.index.by_inode(key) {
            seen.insert(id);
            self.moved(id, path);
            return;
        }
        let fp = match fingerprint(&file, self.settings.fingerprint_bytes) {
            Ok(fp) => fp,
            Err(e) => {
                if self.file_metrics.note_unreadable(path) {
                    tracing::warn!(file = %path.display(), "cannot read: {e}");
                }
                return;
            }
        };
        if let Some(fp) = fp
            && let Some(id) = self.index.by_fp(fp)
        {
            if self.index.get(id).is_some_and(Tracked::is_ghost) {
                // The copy of a file that was truncated: go on reading it there.
                tracing::debug!(file = %path.display(), "the copy of a truncated file; reading on from where it was");
                self.adopt(id, path, key, file);
                seen.insert(id);
            } else if self.index.add_duplicate(path, fp) {
                let other = self.index.get(id).map(|t| t.path().display().to_string()).unwrap_or_default();
                tracing::debug!(
                    file = %path.display(),
                    other = %other,
                    "begins like a file being read (same fingerprint): taken for its copy, not read"
                );
            }
            return;
        }
        let start = match fp.and_then(|fp| self.saved.remove(&fp)) {
            // Known from before: continue from its checkpoint, unless it is
            // shorter now (truncated meanwhile: read it again).
            Some(saved) if saved.offset <= meta.len() => saved.offset,
            Some(_) => 0,
            None if startup && self.settings.read_from_end => meta.len(),
            None => 0,
        };
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            tracing::warn!(file = %path.display(), "cannot seek: {e}");
            return;
        }
        let mut t = Tracked::new(&self.settings, path, key, fp, start);
        t.file = Some(file);
        t.size = meta.len();
        self.open += 1;
        let id = self.index.insert(t);
        self.track(id);
        seen.insert(id);
        self.enqueue(id);
        self.limit_open(id);
    }

    /// Continues a ghost in its copy.
    fn adopt(&mut self, id: u64, path: &Path, key: (u64, u64), mut file: File) {
        let Some(t) = self.index.get_mut(id) else { return };
        if file.seek(SeekFrom::Start(t.lines.position())).is_err() {
            return;
        }
        t.file = Some(file);
        t.last_data = Instant::now();
        self.open += 1;
        // It may still be included under its new name: then it is live.
        let included = self.scanner.globs().matches(path);
        self.index.adopt(id, path, key, included);
        self.track(id);
        self.enqueue(id);
    }

    /// Copies waiting for their original to be truncated (copytruncate
    /// copies first), or for it to be let go.
    fn recheck_duplicates(&mut self) {
        for (path, fp) in self.index.duplicates() {
            let still_taken =
                self.index.by_fp(fp).and_then(|id| self.index.get(id)).is_some_and(|t| !t.is_ghost());
            // It may have changed itself: the original of a copy that was
            // found first, truncated since and written again.
            let same = File::open(&path)
                .ok()
                .and_then(|f| fingerprint(&f, self.settings.fingerprint_bytes).ok().flatten())
                == Some(fp);
            if still_taken && same {
                continue;
            }
            self.index.drop_duplicate(&path);
            let mut seen = HashSet::new();
            self.discovered(&path, false, &mut seen);
        }
    }

    /// Tells the checkpointer who file `id` is (once it has a fingerprint).
    fn track(&self, id: u64) {
        if let Some(update) = self.index.get(id).and_then(|t| t.track(id)) {
            let _ = self.updates.send(update);
        }
    }

    // === letting go ===

    /// File `id` is shorter than what was read of it: truncated in place.
    fn truncated(&mut self, id: u64) {
        let Some(t) = self.index.get(id) else { return };
        tracing::debug!(file = %t.path().display(), "file truncated; reading it again from its start");
        self.file_metrics.truncations.fetch_add(1, Relaxed);
        let path = t.path().to_path_buf();
        // The old content keeps its identity, waiting for the copy that
        // copytruncate made of it; the file itself starts over as a new one.
        self.close(id);
        self.index.ghost(id, Instant::now());
        let mut seen = HashSet::new();
        self.discovered(&path, false, &mut seen);
        // The copy may be there already, waiting as a duplicate.
        self.recheck_duplicates();
    }

    /// Stops following file `id`; `gone` when its content no longer exists.
    fn release(&mut self, id: u64, gone: bool) {
        let Some(mut t) = self.index.remove(id) else { return };
        if t.file.take().is_some() {
            self.open -= 1;
        }
        if let Some(fp) = t.fp()
            && !gone
        {
            // A copy found later continues from here.
            self.saved.insert(
                fp,
                Saved {
                    fingerprint: super::checkpoint::fingerprint_text(fp),
                    dev: t.dev(),
                    inode: t.ino(),
                    path: t.path().to_path_buf(),
                    offset: t.lines.consumed(),
                    seen: super::checkpoint::unix_now(),
                },
            );
        }
        let _ = self.updates.send(Update::Release { id });
        if let Ok(mut p) = self.progress.lock() {
            p.remove(&id);
        }
    }

    /// Gives out a file's last, unfinished line and waiting group, and lets
    /// it go: it will not grow any more.
    fn finish(&mut self, id: u64) {
        let Some(t) = self.index.get_mut(id) else { return };
        let mut lines = Vec::new();
        t.lines.finish(&mut |l| lines.push(l));
        let now = Instant::now();
        let mut batch = self.events.batch(t.path(), lines.len() + 1);
        for line in lines {
            batch.line(line, t.multiline.as_mut(), now);
        }
        if let Some(group) = t.multiline.as_mut().and_then(Multiline::flush) {
            batch.group(group);
        }
        let events = batch.into_events();
        let end = t.lines.consumed();
        self.send(id, events, end, None);
        self.release(id, false);
    }

    // === timers ===

    fn timers(&mut self, now: Instant) {
        let wait = self.settings.rotate_wait;
        let idle = self.settings.idle_timeout;
        let mut finish = Vec::new();
        let mut flush = Vec::new();
        let mut close = Vec::new();
        for (id, t) in self.index.iter() {
            match t.state {
                State::Gone if !t.queued && now.duration_since(t.last_data) >= wait => finish.push(id),
                State::Ghost { since } if now.duration_since(since) >= wait => finish.push(id),
                State::Live => {
                    if t.multiline.as_ref().and_then(Multiline::deadline).is_some_and(|d| d <= now) {
                        flush.push(id);
                    }
                    if t.file.is_some() && !t.queued && now.duration_since(t.last_data) >= idle {
                        close.push(id);
                    }
                }
                _ => {}
            }
        }
        for id in finish {
            self.finish(id);
        }
        for id in flush {
            let Some(t) = self.index.get_mut(id) else { continue };
            let Some(group) = t.multiline.as_mut().and_then(|m| m.flush_due(now)) else { continue };
            let end = t.lines.consumed();
            let mut batch = self.events.batch(t.path(), 1);
            batch.group(group);
            let events = batch.into_events();
            self.send(id, events, end, None);
        }
        for id in close {
            self.close(id);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let (wait, idle) = (self.settings.rotate_wait, self.settings.idle_timeout);
        self.index.iter().filter_map(|(_, t)| t.deadline(wait, idle)).min()
    }

    /// Open files that grew without an inotify event (it can miss some,
    /// e.g. through symlinks): read them.
    fn poll_open(&mut self) {
        let grown: Vec<u64> = self
            .index
            .iter()
            .filter(|(_, t)| !t.queued)
            .filter_map(|(id, t)| {
                let meta = t.file.as_ref()?.metadata().ok()?;
                (meta.len() != t.lines.position() || meta.nlink() == 0).then_some(id)
            })
            .collect();
        for id in grown {
            self.enqueue(id);
        }
    }

    /// Closed files that grew without an inotify event: read them.
    fn sweep_closed(&mut self) {
        let grown: Vec<u64> = self
            .index
            .iter()
            .filter(|(_, t)| t.file.is_none() && t.state == State::Live)
            .filter_map(|(id, t)| {
                let meta = std::fs::metadata(t.path()).ok()?;
                (meta.len() != t.lines.position() || meta.ino() != t.ino()).then_some(id)
            })
            .collect();
        for id in grown {
            self.enqueue(id);
        }
    }

    fn publish_gauges(&mut self) {
        self.file_metrics.watched.store(self.index.len() as u64, Relaxed);
        self.file_metrics.open.store(self.open as u64, Relaxed);
        if let Ok(mut p) = self.progress.lock() {
            for (id, t) in self.index.iter() {
                if t.fp().is_some() {
                    let slot = p.entry(id).or_insert_with(|| (String::new(), 0, t.announced));
                    if slot.0.as_bytes() != t.path().as_os_str().as_encoded_bytes() {
                        slot.0 = t.path().to_string_lossy().into_owned();
                    }
                    slot.1 = t.size.max(t.lines.position());
                }
            }
        }
    }
}
