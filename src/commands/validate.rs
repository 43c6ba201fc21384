//! `hostwatch validate [--connect]` (and `run --dry-run`): a config and its
//! pipeline checked, with what earlier runs left in `data_dir`, and with
//! `--connect` each sink's destination asked whether it answers.

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_CONFIG, EXIT_UNAVAILABLE, check, print_diagnostics};
use crate::util::redact::scrub;

/// `hostwatch validate [--connect]`, and `run --dry-run`.
pub fn validate(path: &Path, connect: bool) -> ExitCode {
    match check(path) {
        Ok((config, topology, warnings)) => {
            print_diagnostics(path, &warnings);
            // What earlier runs left in data_dir: checkpoints and disk
            // buffers the agent will read.
            let mut state = crate::sources::file::checkpoint_problems(&config.data_dir);
            for (id, dir) in topology.disk_buffers(&config.data_dir) {
                match crate::buffer::disk::inspect(&dir) {
                    Ok(r) => {
                        for d in r.damage {
                            if d.newer {
                                state.push(format!(
                                    "sink `{id}`: the disk buffer {} holds events written by a newer hostwatch \
                                     from byte {} ({}); the agent will not start with it: run that version \
                                     until the buffer is empty, or move the directory away",
                                    d.path.display(),
                                    d.offset,
                                    d.error
                                ));
                                continue;
                            }
                            eprintln!(
                                "warning: sink `{id}`: disk buffer {} damaged from byte {} ({}): the agent will skip it and count the loss; `hostwatch buffer repair` cuts it",
                                d.path.display(),
                                d.offset,
                                d.error
                            );
                        }
                    }
                    Err(e) => {
                        state.push(format!("sink `{id}`: cannot read the disk buffer {}: {e}", dir.display()))
                    }
                }
            }
            if !state.is_empty() {
                for p in &state {
                    eprintln!("error: {p}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            println!(
                "{}: valid ({} sources, {} transforms, {} sinks)",
                path.display(),
                config.sources.len(),
                config.transforms.len(),
                config.sinks.len()
            );
            if !connect {
                return ExitCode::SUCCESS;
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let results = runtime.block_on(topology.healthchecks(std::time::Duration::from_secs(10)));
            let mut down = 0;
            for (id, result) in results {
                match result {
                    Ok(()) => println!("sinks.{id}: reachable"),
                    Err(e) => {
                        down += 1;
                        eprintln!("sinks.{id}: not reachable: {}", scrub(&e));
                    }
                }
            }
            if down == 0 { ExitCode::SUCCESS } else { ExitCode::from(EXIT_UNAVAILABLE) }
        }
        Err(code) => code,
    }
}
