//! The subcommands besides `run` (which is [`crate::daemon`]): one module
//! each, and what they share: exit codes, and loading a config with every
//! problem printed.

pub mod buffer;
pub mod dead_letters;
pub mod example;
pub mod validate;

use std::path::Path;
use std::process::ExitCode;

use crate::config::Diagnostic;
use crate::topology::Topology;
use crate::topology::config::Config;
use crate::topology::load::load_and_build;
use crate::util::redact::scrub;

/// sysexits(3) EX_CONFIG: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 78;
/// sysexits(3) EX_USAGE.
pub const EXIT_USAGE: u8 = 64;
/// `validate --connect` when a destination does not answer (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// Prints warnings (or errors) with their file, line and column.
pub fn print_diagnostics(path: &Path, diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{}", scrub(&d.display(path).to_string()));
    }
}

/// Loads a config and builds its pipeline, listing every problem.
pub fn check(path: &Path) -> Result<(Config, Topology, Vec<Diagnostic>), ExitCode> {
    load_and_build(path).map_err(|problems| {
        for p in &problems {
            eprintln!("{}", scrub(p));
        }
        ExitCode::from(EXIT_CONFIG)
    })
}
