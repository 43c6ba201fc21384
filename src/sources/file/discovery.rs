//! Which files to read: `include` and `exclude` globs, and scanning the
//! directories they name.
//!
//! A scan lists only the directories that changed since the last one (their
//! modification time moves whenever an entry is created, removed or renamed),
//! so a tree of thousands of idle files costs one `stat` per directory per
//! scan, not one per file.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::config::{BuildError, Spanned};

/// One include pattern: the directory it starts in and how deep it reaches.
#[derive(Debug)]
struct Include {
    base: PathBuf,
    /// `None` with `**`: any depth.
    depth: Option<usize>,
    matcher: GlobMatcher,
}

#[derive(Debug)]
pub struct Globs {
    includes: Vec<Include>,
    /// Patterns with a `/`, matched against the whole path.
    exclude_paths: GlobSet,
    /// Patterns without one, matched against the file name (`*.gz`).
    exclude_names: GlobSet,
}

fn glob(text: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(text).literal_separator(true).backslash_escape(true).build()
}

impl Globs {
    pub fn new(include: &[Spanned<String>], exclude: &[Spanned<String>]) -> Result<Self, BuildError> {
        if include.is_empty() {
            return Err(BuildError::new(
                "`include` is empty: list the files to read, e.g. /var/log/app/*.log",
            ));
        }
        let mut includes = Vec::new();
        for pattern in include {
            let text = pattern.value.as_str();
            if !text.starts_with('/') {
                return Err(BuildError::at(pattern.pos, format!("`{text}` must be an absolute path")));
            }
            let matcher =
                glob(text).map_err(|e| BuildError::at(pattern.pos, format!("invalid glob: {e}")))?;
            let mut base = PathBuf::from("/");
            let mut rest = Vec::new();
            for c in Path::new(text).components() {
                let Component::Normal(part) = c else { continue };
                let part = part.to_string_lossy();
                if rest.is_empty() && !part.contains(['*', '?', '[', '{']) {
                    base.push(part.as_ref());
                } else {
                    rest.push(part.into_owned());
                }
            }
            if rest.is_empty() {
                // A plain path: its directory is the base, the file the one entry.
                let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                base.pop();
                rest.push(name);
            }
            let depth = if rest.iter().any(|p| p.contains("**")) { None } else { Some(rest.len()) };
            includes.push(Include { base, depth, matcher: matcher.compile_matcher() });
        }
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for pattern in exclude {
            let g = glob(&pattern.value)
                .map_err(|e| BuildError::at(pattern.pos, format!("invalid glob: {e}")))?;
            if pattern.value.contains('/') {
                paths.add(g);
            } else {
                names.add(g);
            }
        }
        let build =
            |b: GlobSetBuilder| b.build().map_err(|e| BuildError::new(format!("invalid exclude: {e}")));
        Ok(Globs { includes, exclude_paths: build(paths)?, exclude_names: build(names)? })
    }

    pub fn matches(&self, path: &Path) -> bool {
        if self.exclude_paths.is_match(path) {
            return false;
        }
        if let Some(name) = path.file_name()
            && self.exclude_names.is_match(name)
        {
            return false;
        }
        self.includes.iter().any(|i| i.matcher.is_match(path))
    }

    /// The directories to watch, and whether below them too.
    pub fn roots(&self) -> Vec<(PathBuf, bool)> {
        let mut roots: Vec<(PathBuf, bool)> = Vec::new();
        for i in &self.includes {
            let recursive = i.depth != Some(1);
            match roots.iter_mut().find(|(p, _)| *p == i.base) {
                Some(r) => r.1 |= recursive,
                None => roots.push((i.base.clone(), recursive)),
            }
        }
        roots
    }
}

/// What a directory held at the last scan.
struct Listing {
    mtime: SystemTime,
    /// When it was listed: a change within the file system's time
    /// granularity of that moment could hide behind an equal mtime.
    listed: SystemTime,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

/// What changed since the last scan, in the directories that changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Matching files in changed directories (new or not): worth a `stat`.
    pub present: Vec<PathBuf>,
    /// Matching files that were listed before and are gone now.
    pub gone: Vec<PathBuf>,
}

/// Scans the trees the globs name, remembering what it saw.
pub struct Scanner {
    globs: Globs,
    listings: HashMap<PathBuf, Listing>,
}

/// A directory modified this recently is listed again even if its mtime
/// looks unchanged (coarse time stamps on some file systems).
const MTIME_SLACK: Duration = Duration::from_secs(2);

impl Scanner {
    pub fn new(globs: Globs) -> Self {
        Scanner { globs, listings: HashMap::new() }
    }

    pub fn globs(&self) -> &Globs {
        &self.globs
    }

    /// Lists the directories that changed (all of them with `full`).
    pub fn scan(&mut self, full: bool) -> Changes {
        let mut changes = Changes::default();
        let mut visited = HashSet::new();
        let includes: Vec<(PathBuf, Option<usize>)> =
            self.globs.includes.iter().map(|i| (i.base.clone(), i.depth)).collect();
        let mut seen_dirs = HashSet::new();
        for (base, depth) in includes {
            self.walk(&base, depth, full, &mut changes, &mut visited, &mut seen_dirs);
        }
        // Directories that disappeared: everything listed in them is gone.
        let vanished: Vec<PathBuf> =
            self.listings.keys().filter(|d| !seen_dirs.contains(*d)).cloned().collect();
        for dir in vanished {
            if let Some(l) = self.listings.remove(&dir) {
                changes.gone.extend(l.files);
            }
        }
        changes
    }

    fn walk(
        &mut self,
        dir: &Path,
        depth: Option<usize>,
        full: bool,
        changes: &mut Changes,
        visited: &mut HashSet<(u64, u64)>,
        seen_dirs: &mut HashSet<PathBuf>,
    ) {
        let Ok(meta) = std::fs::metadata(dir) else { return };
        // Symlinked directories are followed, each real directory once.
        if !meta.is_dir() || !visited.insert((meta.dev(), meta.ino())) {
            return;
        }
        seen_dirs.insert(dir.to_path_buf());
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let unchanged = !full
            && self.listings.get(dir).is_some_and(|l| {
                l.mtime == mtime && l.listed.duration_since(mtime).is_ok_and(|age| age > MTIME_SLACK)
            });
        if !unchanged {
            let listed = SystemTime::now();
            let (files, dirs) = self.list(dir);
            let before = self.listings.remove(dir);
            if let Some(before) = &before {
                let now: HashSet<&PathBuf> = files.iter().collect();
                changes.gone.extend(before.files.iter().filter(|f| !now.contains(f)).cloned());
            }
            changes.present.extend(files.iter().cloned());
            self.listings.insert(dir.to_path_buf(), Listing { mtime, listed, files, dirs });
        }
        if depth == Some(1) {
            return;
        }
        let subdirs = self.listings.get(dir).map(|l| l.dirs.clone()).unwrap_or_default();
        for sub in subdirs {
            self.walk(&sub, depth.map(|d| d - 1), full, changes, visited, seen_dirs);
        }
    }

    /// The matching files and the subdirectories of a directory.
    fn list(&self, dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return (files, dirs) };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ty) = entry.file_type() else { continue };
            let (is_dir, is_file) = if ty.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) => (m.is_dir(), m.is_file()),
                    Err(_) => continue,
                }
            } else {
                (ty.is_dir(), ty.is_file())
            };
            if is_dir {
                dirs.push(path);
            } else if is_file && self.globs.matches(&path) {
                files.push(path);
            }
        }
        files.sort();
        (files, dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(include: &[&str], exclude: &[&str]) -> Globs {
        let s = |v: &[&str]| {
            v.iter().map(|t| Spanned { pos: Default::default(), value: t.to_string() }).collect::<Vec<_>>()
        };
        Globs::new(&s(include), &s(exclude)).unwrap()
    }

    #[test]
    fn matching() {
        let g = globs(&["/var/log/app/*.log", "/srv/**/access.log"], &["*.gz", "/var/log/app/skip.log"]);
        assert!(g.matches(Path::new("/var/log/app/a.log")));
        assert!(!g.matches(Path::new("/var/log/app/sub/a.log")), "* stays within a directory");
        assert!(!g.matches(Path::new("/var/log/app/skip.log")));
        assert!(g.matches(Path::new("/srv/a/b/c/access.log")));
        assert!(g.matches(Path::new("/srv/access.log")));
        let g = globs(&["/var/log/app/*"], &["*.gz"]);
        assert!(!g.matches(Path::new("/var/log/app/a.log.1.gz")));
        assert_eq!(g.roots(), vec![(PathBuf::from("/var/log/app"), false)]);
    }

    #[test]
    fn relative_patterns_are_refused() {
        let s = vec![Spanned { pos: Default::default(), value: "logs/*.log".to_string() }];
        assert!(Globs::new(&s, &[]).is_err());
    }

    #[test]
    fn scans_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/x.log"), "1\n").unwrap();
        std::fs::write(root.join("a/b/y.log"), "1\n").unwrap();
        std::fs::write(root.join("a/b/z.txt"), "1\n").unwrap();
        let pattern = format!("{}/**/*.log", root.display());
        let mut s = Scanner::new(globs(&[&pattern], &[]));
        let mut first = s.scan(false).present;
        first.sort();
        assert_eq!(first, vec![root.join("a/b/y.log"), root.join("a/x.log")]);
        // Pretend the listings are old, so that equal mtimes mean unchanged.
        for l in s.listings.values_mut() {
            l.listed += MTIME_SLACK * 10;
        }
        let again = s.scan(false);
        assert!(again.present.is_empty() && again.gone.is_empty(), "{again:?}");
        std::fs::remove_file(root.join("a/b/y.log")).unwrap();
        std::fs::write(root.join("a/b/w.log"), "1\n").unwrap();
        let changed = s.scan(false);
        assert_eq!(changed.present, vec![root.join("a/b/w.log")]);
        assert_eq!(changed.gone, vec![root.join("a/b/y.log")]);
    }
}
