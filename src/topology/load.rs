//! A config file loaded and its topology built, with every problem found on
//! the way (errors first) as a line with file, line and column: what
//! `validate`, `run` and a reload all start with.

use std::path::Path;

use super::Topology;
use super::config::{self, Config};
use crate::config::{Diagnostic, Severity};

/// Loads a config and builds its pipeline; every problem (errors first) as
/// a line with file, line and column, if any is an error.
pub fn load_and_build(path: &Path) -> Result<(Config, Topology, Vec<Diagnostic>), Vec<String>> {
    let (config, warnings) = match config::load(path) {
        Ok(x) => x,
        Err(e) => {
            let mut lines: Vec<String> =
                e.diagnostics.iter().map(|d| d.display(&e.path).to_string()).collect();
            let errors = e.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
            lines.push(format!("{}: {errors} error(s); nothing was started", path.display()));
            return Err(lines);
        }
    };
    let mut problems = warnings.clone();
    // `log.level` itself is checked with the rest of the file.
    if let Ok(level) = std::env::var("HOSTWATCH_LOG")
        && let Err(e) = crate::config::log::filter(&level)
    {
        problems.push(Diagnostic::error(None, "$HOSTWATCH_LOG", e));
    }
    if let Err(e) = writable(&config.data_dir) {
        problems.push(Diagnostic::error(None, "data_dir", e));
    }
    let topology = match super::build(&config) {
        Ok(t) => Some(t),
        Err(errors) => {
            problems.extend(errors);
            None
        }
    };
    match topology {
        Some(t) if problems.iter().all(|d| d.severity != Severity::Error) => Ok((config, t, warnings)),
        _ => {
            problems.sort_by_key(|d| (d.severity != Severity::Error, d.pos.is_none(), d.pos));
            Err(problems.iter().map(|d| d.display(path).to_string()).collect())
        }
    }
}

/// Checks that the agent can make `dir` and write in it: checkpoints and
/// disk buffers live there. Permission bits are not enough to tell (root
/// passes them everywhere, and /proc or a read-only mount still refuse), so
/// it tries: makes the directory and a file in it, and removes what it made.
fn writable(dir: &Path) -> Result<(), String> {
    let mut made = Vec::new();
    let mut at = dir;
    while !at.exists() {
        made.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    if at.exists() && !at.is_dir() {
        return Err(format!("data_dir {}: {} is not a directory", dir.display(), at.display()));
    }
    let probe = dir.join(format!(".hostwatch-write-check-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .map_err(|e| format!("data_dir {} is not writable: it cannot be created ({e})", dir.display()))
        .and_then(|()| {
            std::fs::File::create_new(&probe)
                .map_err(|e| format!("data_dir {} is not writable ({e})", dir.display()))
        })
        .map(|_| {
            let _ = std::fs::remove_file(&probe);
        });
    // Deepest first: each is empty once the one below it is gone.
    for d in made {
        let _ = std::fs::remove_dir(d);
    }
    result
}
