//! `hostwatch dead-letters list|replay --sink ID`: a sink's dead letters,
//! listed or sent again (see `sinks::driver::redeliver`).

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_USAGE, check};
use crate::sinks::driver::{dead_letter_dir, redeliver};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeadLetterAction {
    /// One line per dead letter: time, events, bytes, status, reason.
    List,
    /// Send each again through the sink's destination; delete those accepted.
    Replay,
}

/// `hostwatch dead-letters list|replay --sink ID`.
pub fn dead_letters(action: DeadLetterAction, id: &str, path: &Path) -> ExitCode {
    let (config, _, _) = match check(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(sink) = config.sinks.iter().find(|s| s.id == id) else {
        eprintln!("{}: no sink `{id}`", path.display());
        return ExitCode::from(EXIT_USAGE);
    };
    let dir = dead_letter_dir(&config.data_dir, id);
    if let DeadLetterAction::List = action {
        return match redeliver::list(&dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let built = match sink.config.build(id, &config.data_dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sinks.{id}: {}", e.message);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(redeliver::replay(id, &built, &config.data_dir)) {
        Ok(outcome) => {
            for (name, why) in &outcome.kept {
                eprintln!("kept {name}: {why}");
            }
            println!(
                "sinks.{id}: {} dead letters sent ({} events), {} kept",
                outcome.sent,
                outcome.events,
                outcome.kept.len()
            );
            if outcome.kept.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
