//! `hostwatch buffer inspect|repair`: the disk buffers of a config's sinks,
//! shown, or their damaged tails cut (with the agent stopped).

use std::path::Path;
use std::process::ExitCode;

use super::check;
use crate::util::redact::scrub;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BufferAction {
    /// Size, records, events waiting, the oldest event's time, damage.
    Inspect,
    /// Cut each damaged segment before its first damaged record.
    Repair,
}

/// `hostwatch buffer inspect|repair`.
pub fn buffer(action: BufferAction, path: &Path) -> ExitCode {
    let (config, topology, _) = match check(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut damaged = false;
    // Records of a newer format, which neither repair nor the agent touch.
    let mut left = false;
    let mut any = false;
    for (id, dir) in topology.disk_buffers(&config.data_dir) {
        any = true;
        let report = match crate::buffer::disk::inspect(&dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sink `{id}`: cannot read {}: {e}", dir.display());
                damaged = true;
                continue;
            }
        };
        println!("sink `{id}`: {}", dir.display());
        print!("{}", scrub(&report.to_string()));
        for d in &report.damage {
            damaged = true;
            if d.newer {
                // Events, not damage: cutting them would lose them.
                if let BufferAction::Repair = action {
                    println!("  left as it is: {} (written by a newer hostwatch)", d.path.display());
                }
                left = true;
                continue;
            }
            if let BufferAction::Repair = action {
                match crate::buffer::disk::cut(&d.path, d.offset) {
                    Ok(()) => println!("  repaired: {} cut at byte {}", d.path.display(), d.offset),
                    Err(e) => eprintln!("  cannot cut {}: {e}", d.path.display()),
                }
            }
        }
    }
    if !any {
        println!("{}: no sink has a disk buffer", path.display());
    }
    match (action, damaged) {
        (BufferAction::Inspect, true) => ExitCode::FAILURE,
        (BufferAction::Repair, _) if left => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}
