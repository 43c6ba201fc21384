//! The files being followed, and the ways to find one: by its id, its
//! fingerprint, its device and inode, and the path it is read under; with
//! the files left unread because they begin like one that is (duplicates).
//!
//! One type holds all the maps so that they cannot disagree: a file's
//! identity (path, device and inode, fingerprint) and its state change only
//! through [`Index`]'s methods, which keep every map in step. What holds
//! where a file is listed:
//! - by fingerprint: once it has one (a file too short to tell has none);
//! - by device and inode: unless it is a ghost (truncated in place: its old
//!   content lives on only in a copy, if one turns up);
//! - by path: while it is found under that path (not once it is gone).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Settings;
use super::checkpoint::Update;
use super::lines::Lines;
use super::multiline::Multiline;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    /// Found under its path.
    Live,
    /// Renamed out of the globs, or deleted: read to its end, then let go
    /// once it has not grown for `rotate_wait`.
    Gone,
    /// Truncated in place: what it held lives on in a copy, if one turns up
    /// within `rotate_wait`.
    Ghost { since: Instant },
}

/// A file being followed.
pub struct Tracked {
    // Its identity: changed only by the index, which lists it by it.
    path: PathBuf,
    dev: u64,
    ino: u64,
    fp: Option<u64>,
    /// Read freely; changed only by the index (`found_at`, `gone`, `ghost`,
    /// `adopt`), since where the file is listed follows from it.
    pub state: State,
    pub file: Option<File>,
    pub lines: Lines,
    pub multiline: Option<Multiline>,
    /// Last time data was read (or the file was found).
    pub last_data: Instant,
    /// The end of what was announced to the checkpointer.
    pub announced: u64,
    /// Size at the last look.
    pub size: u64,
    /// Waiting in the read queue.
    pub queued: bool,
}

impl Tracked {
    /// A file found at `path`, read from `start`.
    pub fn new(settings: &Settings, path: &Path, key: (u64, u64), fp: Option<u64>, start: u64) -> Self {
        Tracked {
            path: path.to_path_buf(),
            dev: key.0,
            ino: key.1,
            fp,
            state: State::Live,
            file: None,
            lines: Lines::new(settings.newline, settings.max_line_bytes, settings.read_chunk, start),
            multiline: settings.multiline.clone(),
            last_data: Instant::now(),
            announced: start,
            size: 0,
            queued: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dev(&self) -> u64 {
        self.dev
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn fp(&self) -> Option<u64> {
        self.fp
    }

    pub fn is_ghost(&self) -> bool {
        matches!(self.state, State::Ghost { .. })
    }

    /// What tells the checkpointer who file `id` is, once it has a fingerprint.
    pub fn track(&self, id: u64) -> Option<Update> {
        Some(Update::Track {
            id,
            fp: self.fp?,
            dev: self.dev,
            ino: self.ino,
            path: self.path.clone(),
            start: self.lines.consumed(),
        })
    }

    /// When its next timer fires: let go after `rotate_wait` once gone or a
    /// ghost; for a live file, its multiline group's timeout, or closing it
    /// after `idle_timeout`.
    pub fn deadline(&self, rotate_wait: Duration, idle_timeout: Duration) -> Option<Instant> {
        match self.state {
            State::Gone => Some(self.last_data + rotate_wait),
            State::Ghost { since } => Some(since + rotate_wait),
            State::Live => {
                let m = self.multiline.as_ref().and_then(Multiline::deadline);
                let c = self.file.as_ref().map(|_| self.last_data + idle_timeout);
                match (m, c) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }
}

/// Every file followed, by id, and the maps that find them.
pub struct Index {
    files: HashMap<u64, Tracked>,
    by_fp: HashMap<u64, u64>,
    by_inode: HashMap<(u64, u64), u64>,
    by_path: HashMap<PathBuf, u64>,
    /// Files with the fingerprint of another, not read: copies in the
    /// making, or files that begin alike.
    duplicates: HashMap<PathBuf, u64>,
    next_id: u64,
}

impl Index {
    pub fn new() -> Self {
        Index {
            files: HashMap::new(),
            by_fp: HashMap::new(),
            by_inode: HashMap::new(),
            by_path: HashMap::new(),
            duplicates: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn get(&self, id: u64) -> Option<&Tracked> {
        self.files.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Tracked> {
        self.files.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Tracked)> {
        self.files.iter().map(|(id, t)| (*id, t))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn by_fp(&self, fp: u64) -> Option<u64> {
        self.by_fp.get(&fp).copied()
    }

    pub fn by_inode(&self, key: (u64, u64)) -> Option<u64> {
        self.by_inode.get(&key).copied()
    }

    pub fn by_path(&self, path: &Path) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Follows a new file, listed under its path, inode and fingerprint;
    /// returns its id.
    pub fn insert(&mut self, t: Tracked) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(fp) = t.fp {
            self.by_fp.insert(fp, id);
        }
        self.by_inode.insert((t.dev, t.ino), id);
        self.by_path.insert(t.path.clone(), id);
        self.files.insert(id, t);
        id
    }

    /// Stops following file `id`, wherever it is listed.
    pub fn remove(&mut self, id: u64) -> Option<Tracked> {
        let t = self.files.remove(&id)?;
        if self.by_inode.get(&(t.dev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.dev, t.ino));
        }
        if self.by_path.get(&t.path) == Some(&id) {
            self.by_path.remove(&t.path);
        }
        if let Some(fp) = t.fp
            && self.by_fp.get(&fp) == Some(&id)
        {
            self.by_fp.remove(&fp);
        }
        Some(t)
    }

    /// File `id` is found at `path`, where it was or renamed there: listed
    /// there, and no longer under a path it left. Renamed, a gone file is
    /// live again.
    pub fn found_at(&mut self, id: u64, path: &Path) {
        let Some(t) = self.files.get_mut(&id) else { return };
        if t.path != path {
            if self.by_path.get(&t.path) == Some(&id) {
                self.by_path.remove(&t.path);
            }
            t.path = path.to_path_buf();
            if t.state == State::Gone {
                t.state = State::Live;
            }
        }
        self.by_path.insert(path.to_path_buf(), id);
    }

    /// File `id` is no longer under its path (renamed away or deleted).
    pub fn gone(&mut self, id: u64) {
        let Some(t) = self.files.get_mut(&id) else { return };
        t.state = State::Gone;
        if self.by_path.get(&t.path) == Some(&id) {
            self.by_path.remove(&t.path);
        }
    }

    /// File `id` was truncated in place: its content waits, known by its
    /// fingerprint only, for the copy that copytruncate made of it. The file
    /// itself is a new one now.
    pub fn ghost(&mut self, id: u64, since: Instant) {
        let Some(t) = self.files.get_mut(&id) else { return };
        t.state = State::Ghost { since };
        if self.by_inode.get(&(t.dev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.dev, t.ino));
        }
        if self.by_path.get(&t.path) == Some(&id) {
            self.by_path.remove(&t.path);
        }
    }

    /// Ghost `id` continues in its copy, the file `key` at `path`: listed
    /// there while `included` (the copy is under the globs, so live), else
    /// gone (read to its end, then let go).
    pub fn adopt(&mut self, id: u64, path: &Path, key: (u64, u64), included: bool) {
        let Some(t) = self.files.get_mut(&id) else { return };
        t.path = path.to_path_buf();
        t.dev = key.0;
        t.ino = key.1;
        self.by_inode.insert(key, id);
        self.duplicates.remove(path);
        if included {
            t.state = State::Live;
            self.by_path.insert(path.to_path_buf(), id);
        } else {
            t.state = State::Gone;
        }
    }

    /// File `id` has a fingerprint now.
    pub fn set_fp(&mut self, id: u64, fp: u64) {
        let Some(t) = self.files.get_mut(&id) else { return };
        t.fp = Some(fp);
        self.by_fp.insert(fp, id);
    }

    /// Notes the file at `path` as a duplicate of fingerprint `fp`; true
    /// if it was not one already.
    pub fn add_duplicate(&mut self, path: &Path, fp: u64) -> bool {
        self.duplicates.insert(path.to_path_buf(), fp).is_none()
    }

    pub fn is_duplicate(&self, path: &Path) -> bool {
        self.duplicates.contains_key(path)
    }

    pub fn drop_duplicate(&mut self, path: &Path) {
        self.duplicates.remove(path);
    }

    /// The duplicates and their fingerprints, to look at them again.
    pub fn duplicates(&self) -> Vec<(PathBuf, u64)> {
        self.duplicates.iter().map(|(p, f)| (p.clone(), *f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            read_from_end: false,
            glob_interval: Duration::from_secs(1),
            fingerprint_bytes: None,
            rotate_wait: Duration::from_secs(5),
            remove_after: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_open_files: 8,
            max_line_bytes: 1024,
            read_chunk: 4096,
            newline: super::super::lines::Newline::Byte,
            encoding: None,
            multiline: None,
        }
    }

    fn tracked(path: &str, ino: u64, fp: Option<u64>) -> Tracked {
        Tracked::new(&settings(), Path::new(path), (1, ino), fp, 0)
    }

    #[test]
    fn a_file_is_found_by_each_of_its_keys_until_removed() {
        let mut index = Index::new();
        let id = index.insert(tracked("/a.log", 10, Some(7)));
        assert_eq!(index.by_path(Path::new("/a.log")), Some(id));
        assert_eq!(index.by_inode((1, 10)), Some(id));
        assert_eq!(index.by_fp(7), Some(id));
        assert!(index.remove(id).is_some());
        assert_eq!(
            (index.by_path(Path::new("/a.log")), index.by_inode((1, 10)), index.by_fp(7)),
            (None, None, None)
        );
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn removing_a_file_leaves_what_now_names_another() {
        let mut index = Index::new();
        let old = index.insert(tracked("/a.log", 10, Some(7)));
        index.gone(old);
        let new = index.insert(tracked("/a.log", 11, None));
        index.remove(old);
        assert_eq!(index.by_path(Path::new("/a.log")), Some(new));
        assert_eq!(index.by_inode((1, 11)), Some(new));
    }

    #[test]
    fn a_renamed_file_moves_its_path_and_is_live_again() {
        let mut index = Index::new();
        let id = index.insert(tracked("/a.log", 10, Some(7)));
        index.gone(id);
        assert_eq!(index.by_path(Path::new("/a.log")), None);
        assert_eq!(index.get(id).map(|t| t.state), Some(State::Gone));
        index.found_at(id, Path::new("/a.log.1"));
        assert_eq!(index.by_path(Path::new("/a.log.1")), Some(id));
        assert_eq!(index.get(id).map(|t| t.state), Some(State::Live));
        assert_eq!(index.get(id).map(|t| t.path().to_path_buf()), Some("/a.log.1".into()));
    }

    #[test]
    fn a_ghost_is_known_by_its_fingerprint_only_until_a_copy_adopts_it() {
        let mut index = Index::new();
        let id = index.insert(tracked("/a.log", 10, Some(7)));
        index.ghost(id, Instant::now());
        assert!(index.get(id).is_some_and(Tracked::is_ghost));
        assert_eq!((index.by_path(Path::new("/a.log")), index.by_inode((1, 10))), (None, None));
        assert_eq!(index.by_fp(7), Some(id));
        assert!(index.add_duplicate(Path::new("/a.log.1"), 7));
        assert!(!index.add_duplicate(Path::new("/a.log.1"), 7));
        index.adopt(id, Path::new("/a.log.1"), (1, 12), true);
        assert!(!index.is_duplicate(Path::new("/a.log.1")));
        assert_eq!(index.by_path(Path::new("/a.log.1")), Some(id));
        assert_eq!(index.by_inode((1, 12)), Some(id));
        assert_eq!(index.get(id).map(|t| t.state), Some(State::Live));
    }

    #[test]
    fn a_copy_outside_the_globs_is_read_to_its_end_unlisted() {
        let mut index = Index::new();
        let id = index.insert(tracked("/a.log", 10, Some(7)));
        index.ghost(id, Instant::now());
        index.adopt(id, Path::new("/old/a.log.1"), (1, 12), false);
        assert_eq!(index.by_path(Path::new("/old/a.log.1")), None);
        assert_eq!(index.by_inode((1, 12)), Some(id));
        assert_eq!(index.get(id).map(|t| t.state), Some(State::Gone));
    }

    #[test]
    fn a_fingerprint_found_later_is_listed() {
        let mut index = Index::new();
        let id = index.insert(tracked("/a.log", 10, None));
        assert!(index.get(id).and_then(|t| t.track(id)).is_none(), "not tracked without a fingerprint");
        index.set_fp(id, 9);
        assert_eq!(index.by_fp(9), Some(id));
        assert!(index.get(id).and_then(|t| t.track(id)).is_some());
    }
}
