//! Inspect and repair, for `hostwatch buffer inspect|repair` and
//! `hostwatch validate`: what a disk buffer holds (segments, records and
//! events waiting, the oldest event, where delivery resumes), every record
//! read and checked the way the agent reads it, and where a segment stops
//! being readable; `cut` drops what follows a damaged record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::Position;
use super::ledger::load_acked;
use super::segment::{Record, newer_record, read_record, segment_path, segments};

/// A segment that stops being readable at `offset`.
#[derive(Debug)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub error: String,
    /// Not damage: an intact record a newer hostwatch wrote. The agent
    /// refuses to start with it, and `repair` leaves it.
    pub newer: bool,
}

/// What a disk buffer holds, for `hostwatch buffer inspect`.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub bytes: u64,
    /// Records and events not yet delivered.
    pub records: u64,
    pub events: u64,
    /// The time of the oldest event waiting (microseconds since the epoch).
    pub oldest: Option<i64>,
    /// Where delivery resumes.
    pub acked: Option<Position>,
    pub damage: Vec<Damage>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  segments: {}, {} bytes", self.segments, self.bytes)?;
        writeln!(f, "  waiting: {} events in {} records", self.events, self.records)?;
        if let Some(t) = self.oldest {
            let mut s = Vec::new();
            crate::event::time::format_rfc3339(t, &mut s);
            writeln!(f, "  oldest event: {}", String::from_utf8_lossy(&s))?;
        }
        if let Some(p) = self.acked {
            writeln!(f, "  delivered up to: segment {} byte {}", p.segment, p.offset)?;
        }
        for d in &self.damage {
            if d.newer {
                writeln!(
                    f,
                    "  WRITTEN BY A NEWER HOSTWATCH: {} from byte {}: {}; run that version until the \
                     buffer is empty",
                    d.path.display(),
                    d.offset,
                    d.error
                )?;
            } else {
                writeln!(f, "  DAMAGED: {} from byte {}: {}", d.path.display(), d.offset, d.error)?;
            }
        }
        if self.damage.is_empty() {
            writeln!(f, "  no damage")?;
        }
        Ok(())
    }
}

/// Reads every record waiting in `dir`, checking each.
pub fn inspect(dir: &Path) -> io::Result<Report> {
    let mut report = Report::default();
    if !dir.exists() {
        return Ok(report);
    }
    let all = segments(dir)?;
    report.segments = all.len();
    report.acked = load_acked(dir);
    let start = report.acked.unwrap_or_default();
    for n in all {
        let path = segment_path(dir, n);
        report.bytes += fs::metadata(&path)?.len();
        if n < start.segment {
            continue;
        }
        let mut f = File::open(&path)?;
        let mut at = if n == start.segment { start.offset } else { 0 };
        f.seek(SeekFrom::Start(at))?;
        loop {
            match read_record(&mut f, &path, at) {
                Ok(Some(Record { events, len, .. })) => {
                    report.records += 1;
                    report.events += events.len() as u64;
                    if let Some(t) = events.iter().map(|e| e.time).min() {
                        report.oldest = Some(report.oldest.map_or(t, |o| o.min(t)));
                    }
                    at += len;
                }
                Ok(None) => break,
                Err(error) => {
                    let newer = newer_record(&path, at).ok().flatten().is_some_and(|(n, _)| n == at);
                    report.damage.push(Damage { path: path.clone(), offset: at, error, newer });
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Cuts a segment at `offset`: what follows a damaged record goes.
pub fn cut(path: &Path, offset: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(offset)?;
    f.sync_all()
}
