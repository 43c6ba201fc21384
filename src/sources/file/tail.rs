//! The reader: one thread that finds files, follows them through rotation,
//! reads them and sends their lines.
//!
//! It blocks where a reader should: on `read` (from the page cache, fast), on
//! sending when the pipeline is full (so a file is simply read later), and,
//! with nothing to do, on the next inotify event or the next timer.
//!
//! Files are known by their fingerprint (see [`fingerprint`]), and by device
//! and inode while they exist:
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
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Progress, Saved, Update, parse_fingerprint};
use super::discovery::Scanner;
use super::lines::{Line, Lines, Newline};
use super::multiline::Multiline;
use super::{FileMetrics, Settings};
use crate::event::id::IdGen;
use crate::event::{AckSet, Event, EventBatch, EventId, Map, Str, Value, ack, time};
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::ComponentMetrics;

/// How much of a file one turn reads before the next file gets its turn.
const TURN_BYTES: usize = 4 << 20;
/// Stat every closed file this often, in case inotify missed a change.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// A file's fingerprint: a checksum of its first line (at most 4 KiB of it),
/// or of its first `bytes` bytes. `None` while the file is too short to tell.
pub fn fingerprint(file: &File, bytes: Option<usize>) -> std::io::Result<Option<u64>> {
    let want = bytes.unwrap_or(4096);
    let mut stack = [0u8; 4096];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if want <= stack.len() {
        &mut stack[..want]
    } else {
        heap.resize(want, 0);
        &mut heap
    };
    let mut got = 0;
    while got < want {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &buf[..got];
    let prefix = match bytes {
        Some(n) if got < n => return Ok(None),
        Some(_) => head,
        None => match memchr::memchr(b'\n', head) {
            Some(i) => &head[..=i],
            None if got == want => head,
            None => return Ok(None),
        },
    };
    Ok(Some(crate::util::hash::stable_hash(prefix)))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Found under its path.
    Live,
    /// Renamed out of the globs, or deleted: read to its end, then let go
    /// once it has not grown for `rotate_wait`.
    Gone,
    /// Truncated in place: what it held lives on in a copy, if one turns up
    /// within `rotate_wait`.
    Ghost { since: Instant },
}

struct Tracked {
    path: PathBuf,
    dev: u64,
    ino: u64,
    fp: Option<u64>,
    file: Option<File>,
    lines: Lines,
    multiline: Option<Multiline>,
    state: State,
    /// Last time data was read (or the file was found).
    last_data: Instant,
    /// The end of what was announced to the checkpointer.
    announced: u64,
    /// Size at the last look.
    size: u64,
    /// Waiting in the read queue.
    queued: bool,
}

pub struct Tailer {
    pub settings: Arc<Settings>,
    pub scanner: Scanner,
    pub out: Fanout,
    pub runtime: tokio::runtime::Handle,
    pub shutdown: CancellationToken,
    pub updates: UnboundedSender<Update>,
    pub metrics: Arc<ComponentMetrics>,
    pub file_metrics: Arc<FileMetrics>,
    pub progress: Progress,
    pub source: Str,
    pub host: Str,
    pub notify: std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    /// Checkpoints of files not (yet) being read, by fingerprint.
    pub saved: HashMap<u64, Saved>,
    files: HashMap<u64, Tracked>,
    by_fp: HashMap<u64, u64>,
    by_inode: HashMap<(u64, u64), u64>,
    by_path: HashMap<PathBuf, u64>,
    /// Files with the fingerprint of another, not read: copies in the
    /// making, or files that begin alike.
    duplicates: HashMap<PathBuf, u64>,
    queue: VecDeque<u64>,
    next_id: u64,
    ids: IdGen,
    open: usize,
    /// Runs at every scan (watches directories that appeared).
    tick_hook: Option<Box<dyn FnMut() + Send>>,
    /// Reused from read to read.
    lines_buf: Vec<Line>,
}

static LOG_LINE: Str = Str::from_static("log.line");

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
            source,
            host,
            notify,
            saved,
            files: HashMap::new(),
            by_fp: HashMap::new(),
            by_inode: HashMap::new(),
            by_path: HashMap::new(),
            duplicates: HashMap::new(),
            queue: VecDeque::new(),
            next_id: 1,
            ids: IdGen::new(),
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
                    if let Some(&id) = self.by_path.get(path) {
                        self.enqueue(id);
                    } else if self.duplicates.contains_key(path) {
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
            let key = (meta.dev(), meta.ino());
            if let Some(&id) = self.by_inode.get(&key) {
                seen.insert(id);
                self.moved(id, path);
                continue;
            }
            self.discovered(path, startup, &mut seen);
        }
        // Files whose path vanished or now names another file, and that
        // were not found under another name.
        let changed: HashSet<&PathBuf> = changes.gone.iter().chain(changes.present.iter()).collect();
        let lost: Vec<u64> = self
            .files
            .iter()
            .filter(|(id, t)| t.state == State::Live && !seen.contains(*id) && changed.contains(&t.path))
            .map(|(id, _)| *id)
            .collect();
        for path in &changes.gone {
            self.duplicates.remove(path);
        }
        for id in lost {
            if let Some(t) = self.files.get_mut(&id) {
                tracing::debug!(file = %t.path.display(), "file rotated away or deleted; reading it to its end");
                if self.by_path.get(&t.path) == Some(&id) {
                    self.by_path.remove(&t.path);
                }
                t.state = State::Gone;
                t.last_data = Instant::now();
                self.file_metrics.rotations.fetch_add(1, Relaxed);
            }
            self.enqueue(id);
        }
    }

    /// A known inode found at `path`.
    fn moved(&mut self, id: u64, path: &Path) {
        let Some(t) = self.files.get_mut(&id) else { return };
        if t.path != path {
            if self.by_path.get(&t.path) == Some(&id) {
                self.by_path.remove(&t.path);
            }
            tracing::debug!(from = %t.path.display(), to = %path.display(), "file renamed");
            t.path = path.to_path_buf();
            if t.state == State::Gone {
                t.state = State::Live;
            }
            if let Some(fp) = t.fp {
                let _ = self.updates.send(Update::Track {
                    id,
                    fp,
                    dev: t.dev,
                    ino: t.ino,
                    path: t.path.clone(),
                    start: t.lines.consumed(),
                });
            }
        }
        self.by_path.insert(path.to_path_buf(), id);
        self.enqueue(id);
    }

    /// An inode not being followed, found at `path`.
    fn discovered(&mut self, path: &Path, startup: bool, seen: &mut HashSet<u64>) {
        let file = match File::open(path) {
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
        if let Some(&id) = self.by_inode.get(&(meta.dev(), meta.ino())) {
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
        let key = (meta.dev(), meta.ino());
        if let Some(fp) = fp
            && let Some(&id) = self.by_fp.get(&fp)
        {
            let ghost = self.files.get(&id).is_some_and(|t| matches!(t.state, State::Ghost { .. }));
            if ghost {
                // The copy of a file that was truncated: go on reading it there.
                tracing::debug!(file = %path.display(), "the copy of a truncated file; reading on from where it was");
                self.adopt(id, path, key, file);
                seen.insert(id);
            } else if self.duplicates.insert(path.to_path_buf(), fp).is_none() {
                let other = self.files.get(&id).map(|t| t.path.display().to_string()).unwrap_or_default();
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
        let id = self.next_id;
        self.next_id += 1;
        let mut t = self.tracked(path, key, fp, start);
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            tracing::warn!(file = %path.display(), "cannot seek: {e}");
            return;
        }
        t.file = Some(file);
        self.open += 1;
        if let Some(fp) = fp {
            self.by_fp.insert(fp, id);
            let _ = self.updates.send(Update::Track {
                id,
                fp,
                dev: key.0,
                ino: key.1,
                path: path.to_path_buf(),
                start,
            });
        }
        t.size = meta.len();
        self.files.insert(id, t);
        self.by_inode.insert(key, id);
        self.by_path.insert(path.to_path_buf(), id);
        seen.insert(id);
        self.enqueue(id);
        self.limit_open(id);
    }

    fn tracked(&self, path: &Path, key: (u64, u64), fp: Option<u64>, start: u64) -> Tracked {
        let s = &self.settings;
        Tracked {
            path: path.to_path_buf(),
            dev: key.0,
            ino: key.1,
            fp,
            file: None,
            lines: Lines::new(s.newline, s.max_line_bytes, s.read_chunk, start),
            multiline: s.multiline.clone(),
            state: State::Live,
            last_data: Instant::now(),
            announced: start,
            size: 0,
            queued: false,
        }
    }

    /// Continues a ghost in its copy.
    fn adopt(&mut self, id: u64, path: &Path, key: (u64, u64), mut file: File) {
        let Some(t) = self.files.get_mut(&id) else { return };
        if file.seek(SeekFrom::Start(t.lines.position())).is_err() {
            return;
        }
        t.path = path.to_path_buf();
        t.dev = key.0;
        t.ino = key.1;
        t.file = Some(file);
        t.state = State::Gone;
        t.last_data = Instant::now();
        self.open += 1;
        self.by_inode.insert(key, id);
        self.by_path.insert(path.to_path_buf(), id);
        self.duplicates.remove(path);
        if let Some(fp) = t.fp {
            let _ = self.updates.send(Update::Track {
                id,
                fp,
                dev: key.0,
                ino: key.1,
                path: path.to_path_buf(),
                start: t.lines.consumed(),
            });
        }
        // It may still be included under its new name: then it is live.
        if self.scanner.globs().matches(path) {
            if let Some(t) = self.files.get_mut(&id) {
                t.state = State::Live;
            }
        } else {
            self.by_path.remove(path);
        }
        self.enqueue(id);
    }

    /// Copies waiting for their original to be truncated (copytruncate
    /// copies first), or for it to be let go.
    fn recheck_duplicates(&mut self) {
        if self.duplicates.is_empty() {
            return;
        }
        let waiting: Vec<(PathBuf, u64)> = self.duplicates.iter().map(|(p, f)| (p.clone(), *f)).collect();
        for (path, fp) in waiting {
            let still_taken = self
                .by_fp
                .get(&fp)
                .and_then(|id| self.files.get(id))
                .is_some_and(|t| !matches!(t.state, State::Ghost { .. }));
            // It may have changed itself: the original of a copy that was
            // found first, truncated since and written again.
            let same = File::open(&path)
                .ok()
                .and_then(|f| fingerprint(&f, self.settings.fingerprint_bytes).ok().flatten())
                == Some(fp);
            if still_taken && same {
                continue;
            }
            self.duplicates.remove(&path);
            let mut seen = HashSet::new();
            self.discovered(&path, false, &mut seen);
        }
    }

    // === reading ===

    fn enqueue(&mut self, id: u64) {
        if let Some(t) = self.files.get_mut(&id)
            && !t.queued
        {
            t.queued = true;
            self.queue.push_back(id);
        }
    }

    /// Reads the next file in the queue for one turn. Returns whether
    /// anything was read.
    fn read_turn(&mut self) -> bool {
        let Some(id) = self.queue.pop_front() else { return false };
        if let Some(t) = self.files.get_mut(&id) {
            t.queued = false;
        }
        let (read, more) = self.read_file(id);
        if more {
            self.enqueue(id);
        }
        read > 0
    }

    /// Reads up to a turn's worth; returns the bytes read and whether more
    /// is waiting.
    fn read_file(&mut self, id: u64) -> (usize, bool) {
        if !self.ensure_open(id) {
            return (0, false);
        }
        let Some(t) = self.files.get_mut(&id) else { return (0, false) };
        let Some(file) = t.file.as_ref() else { return (0, false) };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(_) => return (0, false),
        };
        t.size = meta.len();
        if meta.len() < t.lines.position() {
            self.truncated(id);
            return (0, false);
        }
        if meta.nlink() == 0 && t.state == State::Live {
            // Deleted while open: read to the end, then let go.
            t.state = State::Gone;
            self.by_path.remove(&t.path);
        }
        if t.fp.is_none() {
            self.try_fingerprint(id);
        }
        let mut total = 0;
        let mut more = false;
        while total < TURN_BYTES {
            match self.read_chunk(id) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    if let Some(t) = self.files.get(&id)
                        && self.file_metrics.note_unreadable(&t.path)
                    {
                        tracing::warn!(file = %t.path.display(), "read failed: {e}");
                    }
                    break;
                }
            }
            if self.shutdown.is_cancelled() {
                return (total, false);
            }
            if total >= TURN_BYTES {
                more = true;
            }
        }
        if total > 0
            && let Some(t) = self.files.get_mut(&id)
        {
            t.last_data = Instant::now();
        }
        (total, more)
    }

    /// A file with no fingerprint yet (no complete first line) may have one now.
    fn try_fingerprint(&mut self, id: u64) {
        let Some(t) = self.files.get(&id) else { return };
        let Some(file) = t.file.as_ref() else { return };
        let Ok(Some(fp)) = fingerprint(file, self.settings.fingerprint_bytes) else { return };
        let (dev, ino, path, start) = (t.dev, t.ino, t.path.clone(), t.lines.consumed());
        if let Some(&other) = self.by_fp.get(&fp)
            && other != id
        {
            // Began like another file after all: a copy made in pieces. Let
            // the other one be read; this one waits as a duplicate.
            self.release(id, false);
            self.duplicates.insert(path, fp);
            return;
        }
        if let Some(t) = self.files.get_mut(&id) {
            t.fp = Some(fp);
        }
        self.by_fp.insert(fp, id);
        let _ = self.updates.send(Update::Track { id, fp, dev, ino, path, start });
    }

    /// Reads one chunk of file `id` and sends its lines.
    fn read_chunk(&mut self, id: u64) -> std::io::Result<usize> {
        let settings = self.settings.clone();
        let Some(t) = self.files.get_mut(&id) else { return Ok(0) };
        let Some(file) = t.file.as_mut() else { return Ok(0) };
        let now_us = time::now_micros();
        self.ids.set_time((now_us / 1000) as u64);
        let path = Str::from(t.path.to_string_lossy().as_ref());
        let mut truncated = 0u64;
        let mut lines_in = std::mem::take(&mut self.lines_buf);
        let before = t.lines.clone();
        let n = t.lines.read(file, &mut |line: Line| {
            truncated += line.truncated as u64;
            lines_in.push(line);
        })?;
        if n == 0 {
            return Ok(0);
        }
        // Truncated and written again (copytruncate) since the last look,
        // perhaps past where reading stands: the first line tells. What was
        // just read may be new content at an old offset, so it is put back,
        // to be read again from the copy.
        if let Some(fp) = t.fp
            && fingerprint(file, settings.fingerprint_bytes).ok().flatten() != Some(fp)
        {
            t.lines = before;
            self.truncated(id);
            return Ok(0);
        }
        let now = Instant::now();
        let mut events = Vec::with_capacity(lines_in.len());
        let make = &mut |offset: u64, message: Str, ids: &mut IdGen, events: &mut Vec<Event>| {
            events.push(log_event(ids.next_id(), now_us, &self.source, &self.host, &path, offset, message));
        };
        for line in lines_in.drain(..) {
            let text = decode(&settings, line.bytes);
            match t.multiline.as_mut() {
                Some(m) => {
                    if let Some((offset, group)) = m.push(line.offset, &text, now) {
                        make(offset, Str::from(group), &mut self.ids, &mut events);
                    }
                }
                None => make(line.offset, text, &mut self.ids, &mut events),
            }
        }
        self.lines_buf = lines_in;
        if truncated > 0 {
            self.file_metrics.lines_truncated.fetch_add(truncated, Relaxed);
        }
        self.metrics.bytes_in.fetch_add(n as u64, Relaxed);
        let end =
            t.multiline.as_ref().and_then(Multiline::pending_offset).unwrap_or_else(|| t.lines.consumed());
        // What the events hold: the text read, and per event the event, its
        // data map and the path (shared, counted for each all the same).
        let size = n + events.len() * (std::mem::size_of::<Event>() + 3 * 80 + path.len());
        self.send(id, events, end, Some(size));
        Ok(n)
    }

    /// Sends a file's events as one batch and tells the checkpointer where
    /// it ends.
    fn send(&mut self, id: u64, events: Vec<Event>, end: u64, size: Option<usize>) {
        let Some(t) = self.files.get_mut(&id) else { return };
        if end < t.announced {
            return;
        }
        if events.is_empty() {
            if end > t.announced {
                t.announced = end;
                if t.fp.is_some() {
                    let _ = self.updates.send(Update::Advance { id, end });
                }
            }
            return;
        }
        t.announced = end;
        let tracked = t.fp.is_some();
        let n = events.len();
        self.metrics.add_in(n);
        let (share, receiver) = ack::token();
        let mut batch = match size {
            Some(size) => EventBatch::with_size(events, AckSet::one(share), size),
            None => EventBatch::new(events, AckSet::one(share)),
        };
        // What is not read yet waits in the file; and what is read, in a
        // file still under its path, is read again after a restart until
        // it is acknowledged (a rotated file may be gone by then).
        batch.may_wait = true;
        batch.rereadable = tracked && t.state == State::Live;
        let out = &mut self.out;
        let shutdown = &self.shutdown;
        let sent = self.runtime.block_on(async {
            tokio::select! {
                r = out.send(batch) => r.is_ok(),
                _ = shutdown.cancelled() => false,
            }
        });
        if sent && tracked {
            let _ = self.updates.send(Update::Sent { id, end, ack: receiver });
        }
    }

    fn ensure_open(&mut self, id: u64) -> bool {
        let Some(t) = self.files.get(&id) else { return false };
        if t.file.is_some() {
            return true;
        }
        if matches!(t.state, State::Ghost { .. }) {
            return false;
        }
        let path = t.path.clone();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                // Gone while closed: a scan will tell where.
                return false;
            }
        };
        if file.seek(SeekFrom::Start(t.lines.position())).is_err() {
            return false;
        }
        let same = file.metadata().is_ok_and(|m| m.dev() == t.dev && m.ino() == t.ino);
        // While it was closed, the inode may have been freed and reused by
        // another file: the fingerprint tells.
        let same = same
            && (t.fp.is_none() || fingerprint(&file, self.settings.fingerprint_bytes).ok().flatten() == t.fp);
        if !same {
            self.release(id, true);
            return false;
        }
        if let Some(t) = self.files.get_mut(&id) {
            t.file = Some(file);
            self.open += 1;
        }
        self.limit_open(id);
        true
    }

    /// Keeps open handles within `max_open_files`, closing the idlest.
    fn limit_open(&mut self, keep: u64) {
        while self.open > self.settings.max_open_files {
            let idlest = self
                .files
                .iter()
                .filter(|(id, t)| **id != keep && t.file.is_some() && t.state == State::Live)
                .min_by_key(|(_, t)| t.last_data)
                .map(|(id, _)| *id);
            let Some(id) = idlest else { break };
            if let Some(t) = self.files.get_mut(&id) {
                t.file = None;
                self.open -= 1;
            }
        }
    }

    /// File `id` is shorter than what was read of it: truncated in place.
    fn truncated(&mut self, id: u64) {
        let Some(t) = self.files.get_mut(&id) else { return };
        tracing::debug!(file = %t.path.display(), "file truncated; reading it again from its start");
        self.file_metrics.truncations.fetch_add(1, Relaxed);
        let (path, dev, ino) = (t.path.clone(), t.dev, t.ino);
        // The old content keeps its identity, waiting for the copy that
        // copytruncate made of it; the file itself starts over as a new one.
        if t.file.take().is_some() {
            self.open -= 1;
        }
        t.state = State::Ghost { since: Instant::now() };
        self.by_inode.remove(&(dev, ino));
        if self.by_path.get(&path) == Some(&id) {
            self.by_path.remove(&path);
        }
        let mut seen = HashSet::new();
        self.discovered(&path, false, &mut seen);
        // The copy may be there already, waiting as a duplicate.
        self.recheck_duplicates();
    }

    /// Stops following file `id`; `gone` when its content no longer exists.
    fn release(&mut self, id: u64, gone: bool) {
        let Some(mut t) = self.files.remove(&id) else { return };
        if t.file.take().is_some() {
            self.open -= 1;
        }
        if self.by_inode.get(&(t.dev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.dev, t.ino));
        }
        if self.by_path.get(&t.path) == Some(&id) {
            self.by_path.remove(&t.path);
        }
        if let Some(fp) = t.fp {
            if self.by_fp.get(&fp) == Some(&id) {
                self.by_fp.remove(&fp);
            }
            if !gone {
                // A copy found later continues from here.
                self.saved.insert(
                    fp,
                    Saved {
                        fingerprint: super::checkpoint::fingerprint_text(fp),
                        dev: t.dev,
                        inode: t.ino,
                        path: t.path.clone(),
                        offset: t.lines.consumed(),
                        seen: super::checkpoint::unix_now(),
                    },
                );
            }
        }
        let _ = self.updates.send(Update::Release { id });
        if let Ok(mut p) = self.progress.lock() {
            p.remove(&id);
        }
    }

    /// Gives out a file's last, unfinished line and waiting group, and lets
    /// it go: it will not grow any more.
    fn finish(&mut self, id: u64) {
        let Some(t) = self.files.get_mut(&id) else { return };
        let mut lines = Vec::new();
        t.lines.finish(&mut |l| lines.push(l));
        let path = Str::from(t.path.to_string_lossy().as_ref());
        let now_us = time::now_micros();
        self.ids.set_time((now_us / 1000) as u64);
        let mut events = Vec::new();
        let mut groups: Vec<(u64, Str)> = Vec::new();
        for line in lines {
            let text = decode(&self.settings, line.bytes);
            match t.multiline.as_mut() {
                Some(m) => {
                    groups.extend(m.push(line.offset, &text, Instant::now()).map(|(o, g)| (o, Str::from(g))))
                }
                None => groups.push((line.offset, text)),
            }
        }
        if let Some((o, g)) = t.multiline.as_mut().and_then(Multiline::flush) {
            groups.push((o, Str::from(g)));
        }
        for (offset, message) in groups {
            events.push(log_event(
                self.ids.next_id(),
                now_us,
                &self.source,
                &self.host,
                &path,
                offset,
                message,
            ));
        }
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
        for (id, t) in &self.files {
            match t.state {
                State::Gone if !t.queued && now.duration_since(t.last_data) >= wait => finish.push(*id),
                State::Ghost { since } if now.duration_since(since) >= wait => finish.push(*id),
                State::Live => {
                    if t.multiline.as_ref().and_then(Multiline::deadline).is_some_and(|d| d <= now) {
                        flush.push(*id);
                    }
                    if t.file.is_some() && !t.queued && now.duration_since(t.last_data) >= idle {
                        close.push(*id);
                    }
                }
                _ => {}
            }
        }
        for id in finish {
            self.finish(id);
        }
        for id in flush {
            let Some(t) = self.files.get_mut(&id) else { continue };
            let Some((offset, group)) = t.multiline.as_mut().and_then(|m| m.flush_due(now)) else { continue };
            let path = Str::from(t.path.to_string_lossy().as_ref());
            let end = t.lines.consumed();
            let now_us = time::now_micros();
            self.ids.set_time((now_us / 1000) as u64);
            let event = log_event(
                self.ids.next_id(),
                now_us,
                &self.source,
                &self.host,
                &path,
                offset,
                Str::from(group),
            );
            self.send(id, vec![event], end, None);
        }
        for id in close {
            if let Some(t) = self.files.get_mut(&id)
                && t.file.take().is_some()
            {
                self.open -= 1;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let wait = self.settings.rotate_wait;
        let idle = self.settings.idle_timeout;
        self.files
            .values()
            .filter_map(|t| match t.state {
                State::Gone => Some(t.last_data + wait),
                State::Ghost { since } => Some(since + wait),
                State::Live => {
                    let m = t.multiline.as_ref().and_then(Multiline::deadline);
                    let c = t.file.as_ref().map(|_| t.last_data + idle);
                    match (m, c) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
            })
            .min()
    }

    /// Open files that grew without an inotify event (it can miss some,
    /// e.g. through symlinks): read them.
    fn poll_open(&mut self) {
        let grown: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, t)| !t.queued)
            .filter_map(|(id, t)| {
                let meta = t.file.as_ref()?.metadata().ok()?;
                (meta.len() != t.lines.position() || meta.nlink() == 0).then_some(*id)
            })
            .collect();
        for id in grown {
            self.enqueue(id);
        }
    }

    /// Closed files that grew without an inotify event: read them.
    fn sweep_closed(&mut self) {
        let grown: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, t)| t.file.is_none() && t.state == State::Live)
            .filter_map(|(id, t)| {
                let meta = std::fs::metadata(&t.path).ok()?;
                (meta.len() != t.lines.position() || meta.ino() != t.ino).then_some(*id)
            })
            .collect();
        for id in grown {
            self.enqueue(id);
        }
    }

    fn publish_gauges(&mut self) {
        self.file_metrics.watched.store(self.files.len() as u64, Relaxed);
        self.file_metrics.open.store(self.open as u64, Relaxed);
        if let Ok(mut p) = self.progress.lock() {
            for (id, t) in &self.files {
                if t.fp.is_some() {
                    let slot = p.entry(*id).or_insert_with(|| (String::new(), 0, t.announced));
                    if slot.0.as_bytes() != t.path.as_os_str().as_encoded_bytes() {
                        slot.0 = t.path.to_string_lossy().into_owned();
                    }
                    slot.1 = t.size.max(t.lines.position());
                }
            }
        }
    }
}

/// A line's text: UTF-8 as it is (invalid sequences replaced, without a
/// copy when there are none), other encodings decoded.
fn decode(settings: &Settings, bytes: bytes::Bytes) -> Str {
    match settings.encoding {
        None => Str::from_utf8_lossy(bytes),
        Some(enc) => {
            let (text, _) = enc.decode_without_bom_handling(&bytes);
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            Str::from(text)
        }
    }
}

fn log_event(id: u128, time: i64, source: &Str, host: &Str, path: &Str, offset: u64, message: Str) -> Event {
    static MESSAGE: Str = Str::from_static("message");
    static FILE: Str = Str::from_static("file");
    static OFFSET: Str = Str::from_static("offset");
    let mut data = Map::with_capacity(3);
    data.push(MESSAGE.clone(), Value::Str(message));
    data.push(FILE.clone(), Value::Str(path.clone()));
    data.push(OFFSET.clone(), Value::from(offset));
    Event {
        id: EventId::Generated(id),
        time,
        ty: LOG_LINE.clone(),
        source: source.clone(),
        subject: Some(path.clone()),
        host: host.clone(),
        attrs: Map::new(),
        data: Value::Object(data),
    }
}

impl Newline {
    pub fn for_encoding(encoding: Option<&'static encoding_rs::Encoding>) -> Newline {
        match encoding {
            Some(e) if e == encoding_rs::UTF_16LE => Newline::Utf16Le,
            Some(e) if e == encoding_rs::UTF_16BE => Newline::Utf16Be,
            _ => Newline::Byte,
        }
    }
}
