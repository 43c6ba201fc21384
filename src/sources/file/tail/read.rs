//! Reading: the queue of files with something to read, a turn of reading
//! each, the lines read sent as one batch per read, and the open handles
//! kept within `max_open_files`.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::super::checkpoint::Update;
use super::super::fingerprint::fingerprint;
use super::super::index::State;
use super::super::lines::Line;
use super::super::multiline::Multiline;
use super::{TURN_BYTES, Tailer};
use crate::event::{AckSet, Event, EventBatch, ack};

impl Tailer {
    pub(super) fn enqueue(&mut self, id: u64) {
        if let Some(t) = self.index.get_mut(id)
            && !t.queued
        {
            t.queued = true;
            self.queue.push_back(id);
        }
    }

    /// Reads the next file in the queue for one turn. Returns whether
    /// anything was read.
    pub(super) fn read_turn(&mut self) -> bool {
        let Some(id) = self.queue.pop_front() else { return false };
        if let Some(t) = self.index.get_mut(id) {
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
        let Some(t) = self.index.get_mut(id) else { return (0, false) };
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
        let no_fp = t.fp().is_none();
        if meta.nlink() == 0 && t.state == State::Live {
            // Deleted while open: read to the end, then let go.
            self.index.gone(id);
        }
        if no_fp {
            self.try_fingerprint(id);
        }
        let mut total = 0;
        let mut more = false;
        while total < TURN_BYTES {
            match self.read_chunk(id) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    if let Some(t) = self.index.get(id)
                        && self.file_metrics.note_unreadable(t.path())
                    {
                        tracing::warn!(file = %t.path().display(), "read failed: {e}");
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
            && let Some(t) = self.index.get_mut(id)
        {
            t.last_data = Instant::now();
        }
        (total, more)
    }

    /// A file with no fingerprint yet (no complete first line) may have one now.
    fn try_fingerprint(&mut self, id: u64) {
        let Some(t) = self.index.get(id) else { return };
        let Some(file) = t.file.as_ref() else { return };
        let Ok(Some(fp)) = fingerprint(file, self.settings.fingerprint_bytes) else { return };
        if let Some(other) = self.index.by_fp(fp)
            && other != id
        {
            // Began like another file after all: a copy made in pieces. Let
            // the other one be read; this one waits as a duplicate.
            let path = t.path().to_path_buf();
            self.release(id, false);
            self.index.add_duplicate(&path, fp);
            return;
        }
        self.index.set_fp(id, fp);
        self.track(id);
    }

    /// Reads one chunk of file `id` and sends its lines.
    fn read_chunk(&mut self, id: u64) -> std::io::Result<usize> {
        let fingerprint_bytes = self.settings.fingerprint_bytes;
        let Some(t) = self.index.get_mut(id) else { return Ok(0) };
        let fp = t.fp();
        let Some(file) = t.file.as_mut() else { return Ok(0) };
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
        if let Some(fp) = fp
            && fingerprint(file, fingerprint_bytes).ok().flatten() != Some(fp)
        {
            t.lines = before;
            self.truncated(id);
            return Ok(0);
        }
        let now = Instant::now();
        let mut batch = self.events.batch(t.path(), lines_in.len());
        for line in lines_in.drain(..) {
            batch.line(line, t.multiline.as_mut(), now);
        }
        let path_len = batch.path().len();
        let events = batch.into_events();
        self.lines_buf = lines_in;
        if truncated > 0 {
            self.file_metrics.lines_truncated.fetch_add(truncated, Relaxed);
        }
        self.metrics.bytes_in.fetch_add(n as u64, Relaxed);
        let end =
            t.multiline.as_ref().and_then(Multiline::pending_offset).unwrap_or_else(|| t.lines.consumed());
        // What the events hold: the text read, and per event the event, its
        // data map and the path (shared, counted for each all the same).
        let size = n + events.len() * (std::mem::size_of::<Event>() + 3 * 80 + path_len);
        self.send(id, events, end, Some(size));
        Ok(n)
    }

    /// Sends a file's events as one batch and tells the checkpointer where
    /// it ends.
    pub(super) fn send(&mut self, id: u64, events: Vec<Event>, end: u64, size: Option<usize>) {
        let Some(t) = self.index.get_mut(id) else { return };
        if end < t.announced {
            return;
        }
        if events.is_empty() {
            if end > t.announced {
                t.announced = end;
                if t.fp().is_some() {
                    let _ = self.updates.send(Update::Advance { id, end });
                }
            }
            return;
        }
        t.announced = end;
        let tracked = t.fp().is_some();
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
        batch.replay = if tracked && t.state == State::Live {
            crate::event::Replay::Reread
        } else {
            crate::event::Replay::Wait
        };
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
        let Some(t) = self.index.get(id) else { return false };
        if t.file.is_some() {
            return true;
        }
        if t.is_ghost() {
            return false;
        }
        let mut file = match File::open(t.path()) {
            Ok(f) => f,
            Err(_) => {
                // Gone while closed: a scan will tell where.
                return false;
            }
        };
        if file.seek(SeekFrom::Start(t.lines.position())).is_err() {
            return false;
        }
        let same = file.metadata().is_ok_and(|m| m.dev() == t.dev() && m.ino() == t.ino());
        // While it was closed, the inode may have been freed and reused by
        // another file: the fingerprint tells.
        let same = same
            && (t.fp().is_none()
                || fingerprint(&file, self.settings.fingerprint_bytes).ok().flatten() == t.fp());
        if !same {
            self.release(id, true);
            return false;
        }
        if let Some(t) = self.index.get_mut(id) {
            t.file = Some(file);
            self.open += 1;
        }
        self.limit_open(id);
        true
    }

    /// Keeps open handles within `max_open_files`, closing the idlest.
    pub(super) fn limit_open(&mut self, keep: u64) {
        while self.open > self.settings.max_open_files {
            let idlest = self
                .index
                .iter()
                .filter(|(id, t)| *id != keep && t.file.is_some() && t.state == State::Live)
                .min_by_key(|(_, t)| t.last_data)
                .map(|(id, _)| id);
            let Some(id) = idlest else { break };
            self.close(id);
        }
    }

    /// Closes file `id`'s handle, if it is open.
    pub(super) fn close(&mut self, id: u64) {
        if let Some(t) = self.index.get_mut(id)
            && t.file.take().is_some()
        {
            self.open -= 1;
        }
    }
}
