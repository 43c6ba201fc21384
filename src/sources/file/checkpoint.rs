//! Checkpoints: how far each file has been delivered.
//!
//! The reader announces every batch it sends with the offset the batch ends
//! at; the checkpointer waits for the batches' acknowledgements, in order per
//! file, and moves a file's checkpoint only past batches every sink has
//! delivered. The checkpoint file is rewritten (write, fsync, rename) at most
//! every `checkpoint_interval`, whenever an offset moved, and once more when
//! the source stops. A kill -9 therefore repeats at most what was delivered
//! since the last write, and loses nothing.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::event::BatchStatus;
use crate::event::ack::AckReceiver;

/// One file's checkpoint, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The file's fingerprint, 16 hex digits.
    pub fingerprint: String,
    pub dev: u64,
    pub inode: u64,
    pub path: PathBuf,
    /// Every line before this byte offset has been delivered.
    pub offset: u64,
    /// When the file was last seen (Unix seconds).
    pub seen: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: Vec<Saved>,
}

pub fn fingerprint_text(fp: u64) -> String {
    format!("{fp:016x}")
}

pub fn parse_fingerprint(text: &str) -> Option<u64> {
    u64::from_str_radix(text, 16).ok()
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a checkpoints file can be read (for `validate`; changes nothing).
pub fn readable(path: &Path) -> Result<(), String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read the checkpoints {}: {e}", path.display()))?;
    serde_json::from_slice::<Stored>(&text)
        .map(|_| ())
        .map_err(|e| format!("the checkpoints {} are damaged ({e}); the agent will set them aside and read its files from where `start_at` says", path.display()))
}

/// Reads the checkpoints of a source. A file that cannot be read as
/// checkpoints is set aside (renamed `.corrupt`) and reported, so that the
/// agent starts instead of failing in a loop.
pub fn load(path: &Path) -> Result<Vec<Saved>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the checkpoints {}: {e}", path.display())),
    };
    match serde_json::from_slice::<Stored>(&text) {
        Ok(stored) => Ok(stored.files),
        Err(e) => {
            let aside = path.with_extension(format!("corrupt-{}", unix_now()));
            let _ = std::fs::rename(path, &aside);
            tracing::error!(
                file = %path.display(),
                moved_to = %aside.display(),
                "checkpoints unreadable ({e}); starting without them"
            );
            Ok(Vec::new())
        }
    }
}

/// Writes checkpoints atomically: a temporary file, fsync, rename. (The
/// directory is not synced: if a power loss undoes the rename, the previous
/// checkpoint is back, which repeats a little and loses nothing.)
pub fn save(path: &Path, files: &[Saved]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let body =
        serde_json::to_vec(&Stored { version: 1, files: files.to_vec() }).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// What the reader tells the checkpointer.
pub enum Update {
    /// File `id` is known under this identity; `start` is where its
    /// checkpoint stands if it has none yet.
    Track { id: u64, fp: u64, dev: u64, ino: u64, path: PathBuf, start: u64 },
    /// A batch of file `id` ending at `end` is on its way.
    Sent { id: u64, end: u64, ack: AckReceiver },
    /// File `id` moved to `end` without sending anything (skipped bytes).
    Advance { id: u64, end: u64 },
    /// File `id` is no longer read; its checkpoint stays until `remove_after`.
    Release { id: u64 },
    /// The first scan is done: checkpoints of files it did not find may be
    /// forgotten once they are old enough (not before: a file not yet
    /// found again is not a file gone).
    Scanned,
}

struct Entry {
    saved: Saved,
    /// The file is being read: its `seen` time is kept current.
    live: bool,
    /// Batches in order: (sequence number, end offset, outcome once known).
    queue: VecDeque<(u64, u64, Option<BatchStatus>)>,
    next_seq: u64,
    /// A batch failed: the checkpoint stays before it until the agent restarts.
    stuck: bool,
}

/// Per-file figures the metrics report: path, size and checkpoint.
pub type Progress = Arc<Mutex<HashMap<u64, (String, u64, u64)>>>;

pub struct Checkpointer {
    path: PathBuf,
    interval: Duration,
    remove_after: Duration,
    /// By fingerprint.
    entries: HashMap<u64, Entry>,
    /// File id → fingerprint.
    ids: HashMap<u64, u64>,
    /// Released files whose batches are still under way.
    released: std::collections::HashSet<u64>,
    dirty: bool,
    /// Forgetting old checkpoints is allowed (after the first scan).
    scanned: bool,
    progress: Progress,
}

impl Checkpointer {
    pub fn new(
        path: PathBuf,
        saved: Vec<Saved>,
        interval: Duration,
        remove_after: Duration,
        progress: Progress,
    ) -> Self {
        let entries = saved
            .into_iter()
            .filter_map(|s| {
                let fp = parse_fingerprint(&s.fingerprint)?;
                Some((fp, Entry { saved: s, live: false, queue: VecDeque::new(), next_seq: 0, stuck: false }))
            })
            .collect();
        Checkpointer {
            path,
            interval,
            remove_after,
            entries,
            ids: HashMap::new(),
            released: Default::default(),
            dirty: false,
            scanned: false,
            progress,
        }
    }

    /// Runs until the reader has stopped and every batch it sent is settled.
    pub async fn run(mut self, mut updates: mpsc::UnboundedReceiver<Update>) {
        let mut acks = FuturesUnordered::new();
        let mut next_write = tokio::time::Instant::now();
        let mut open = true;
        while open || !acks.is_empty() {
            tokio::select! {
                update = updates.recv(), if open => match update {
                    Some(Update::Sent { id, end, ack }) => {
                        if let Some(seq) = self.enqueue(id, end, None) {
                            acks.push(async move { (id, seq, ack.await) });
                        }
                    }
                    Some(update) => self.apply(update),
                    None => open = false,
                },
                Some((id, seq, status)) = acks.next(), if !acks.is_empty() => self.settle(id, seq, status),
                _ = tokio::time::sleep_until(next_write), if self.dirty => {
                    self.write().await;
                    next_write = tokio::time::Instant::now() + self.interval;
                }
            }
        }
        self.write().await;
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Track { id, fp, dev, ino, path, start } => {
                if let Some(old) = self.ids.insert(id, fp)
                    && old != fp
                    && let Some(e) = self.entries.get_mut(&old)
                {
                    e.live = false;
                }
                let entry = self.entries.entry(fp).or_insert_with(|| Entry {
                    saved: Saved {
                        fingerprint: fingerprint_text(fp),
                        dev,
                        inode: ino,
                        path: path.clone(),
                        offset: start,
                        seen: unix_now(),
                    },
                    live: true,
                    queue: VecDeque::new(),
                    next_seq: 0,
                    stuck: false,
                });
                entry.saved.dev = dev;
                entry.saved.inode = ino;
                entry.saved.path = path;
                entry.live = true;
                self.dirty = true;
            }
            Update::Advance { id, end } => {
                let _ = self.enqueue(id, end, Some(BatchStatus::Delivered));
                self.advance(id);
            }
            Update::Release { id } => {
                if let Some(e) = self.ids.get(&id).and_then(|fp| self.entries.get_mut(fp)) {
                    e.live = false;
                    e.saved.seen = unix_now();
                    self.dirty = true;
                }
                // Its last batches may still be under way: the id is dropped
                // once they are settled.
                self.released.insert(id);
                self.advance(id);
                if let Ok(mut p) = self.progress.lock() {
                    p.remove(&id);
                }
            }
            Update::Scanned => {
                self.scanned = true;
                self.dirty = true;
            }
            Update::Sent { .. } => {}
        }
    }

    fn enqueue(&mut self, id: u64, end: u64, status: Option<BatchStatus>) -> Option<u64> {
        let fp = self.ids.get(&id)?;
        let e = self.entries.get_mut(fp)?;
        let seq = e.next_seq;
        e.next_seq += 1;
        e.queue.push_back((seq, end, status));
        Some(seq)
    }

    fn settle(&mut self, id: u64, seq: u64, status: BatchStatus) {
        let Some(e) = self.ids.get(&id).and_then(|fp| self.entries.get_mut(fp)) else { return };
        if let Some(slot) = e.queue.iter_mut().find(|(s, _, _)| *s == seq) {
            slot.2 = Some(status);
        }
        self.advance(id);
    }

    /// Moves the checkpoint past the settled batches at the front.
    fn advance(&mut self, id: u64) {
        let Some(e) = self.ids.get(&id).and_then(|fp| self.entries.get_mut(fp)) else { return };
        while let Some(&(_, end, Some(status))) = e.queue.front() {
            e.queue.pop_front();
            if e.stuck {
                continue;
            }
            if status == BatchStatus::Errored {
                // Not delivered (the agent is stopping, or a sink went away):
                // the checkpoint must stay before these lines.
                e.stuck = true;
                continue;
            }
            if end > e.saved.offset {
                e.saved.offset = end;
                self.dirty = true;
            }
        }
        let offset = e.saved.offset;
        if e.queue.is_empty() && self.released.remove(&id) {
            self.ids.remove(&id);
            return;
        }
        if let Ok(mut p) = self.progress.lock()
            && let Some(slot) = p.get_mut(&id)
        {
            slot.2 = offset;
        }
    }

    async fn write(&mut self) {
        let now = unix_now();
        let keep = self.remove_after.as_secs();
        if self.scanned {
            self.entries.retain(|_, e| e.live || now.saturating_sub(e.saved.seen) < keep);
        }
        let files: Vec<Saved> = self
            .entries
            .values_mut()
            .map(|e| {
                if e.live {
                    e.saved.seen = now;
                }
                e.saved.clone()
            })
            .collect();
        self.dirty = false;
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || save(&path, &files)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(file = %self.path.display(), "cannot write checkpoints: {e}");
                self.dirty = true;
            }
            Err(e) => tracing::error!("checkpoint writer failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ack;

    fn saved(fp: u64, offset: u64, seen: u64) -> Saved {
        Saved { fingerprint: fingerprint_text(fp), dev: 1, inode: 2, path: "/x".into(), offset, seen }
    }

    #[test]
    fn save_and_load_round_trip_and_corrupt_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp/src.json");
        let files = vec![saved(0xabc, 10, 5)];
        save(&path, &files).unwrap();
        assert_eq!(load(&path).unwrap(), files);
        std::fs::write(&path, b"{\"version\":1,\"fil").unwrap();
        assert_eq!(load(&path).unwrap(), vec![]);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path().join("cp")).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn moves_only_past_delivered_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.json");
        let cp = Checkpointer::new(
            path.clone(),
            vec![],
            Duration::from_millis(1),
            Duration::from_secs(60),
            Default::default(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(cp.run(rx));
        tx.send(Update::Track { id: 1, fp: 7, dev: 1, ino: 2, path: "/a".into(), start: 0 }).unwrap();
        let (s1, r1) = ack::token();
        let (s2, r2) = ack::token();
        let (s3, r3) = ack::token();
        tx.send(Update::Sent { id: 1, end: 100, ack: r1 }).unwrap();
        tx.send(Update::Sent { id: 1, end: 200, ack: r2 }).unwrap();
        tx.send(Update::Sent { id: 1, end: 300, ack: r3 }).unwrap();
        let offset = || load(&path).ok().and_then(|f| f.first().map(|s| s.offset));
        let wait_for = |want: u64| async move {
            for _ in 0..500 {
                if offset() == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the checkpoint did not reach {want}: {:?}", offset());
        };
        // The second is delivered first: nothing moves until the first is.
        wait_for(0).await;
        s2.settle(BatchStatus::Delivered);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(offset(), Some(0));
        s1.settle(BatchStatus::Delivered);
        wait_for(200).await;
        // Not delivered: the checkpoint stays.
        drop(s3);
        drop(tx);
        task.await.unwrap();
        assert_eq!(load(&path).unwrap()[0].offset, 200);
    }

    #[tokio::test]
    async fn forgets_files_gone_longer_than_remove_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.json");
        let old = saved(1, 5, unix_now() - 3600);
        let recent = saved(2, 5, unix_now() - 10);
        let cp = Checkpointer::new(
            path.clone(),
            vec![old, recent.clone()],
            Duration::from_millis(1),
            Duration::from_secs(60),
            Default::default(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Update::Scanned).unwrap();
        drop(tx);
        cp.run(rx).await;
        let left = load(&path).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].fingerprint, recent.fingerprint);
    }
}
