//! The command line: `run`, `validate`, `buffer`, `dead-letters`, `example`, `schema`, `reference`, `--version`.
//! Arguments and dispatch only: `run` is [`crate::daemon`], the others are in [`crate::commands`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::buffer::{BufferAction, buffer};
use crate::commands::dead_letters::{DeadLetterAction, dead_letters};
use crate::commands::example::example;
use crate::commands::validate::validate;
use crate::config;
use crate::daemon::run;

#[derive(Debug, Parser)]
#[command(
    name = "hostwatch",
    version,
    about = "A host agent: logs, host state, HTTP traffic and application events, shipped as CloudEvents."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Run {
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Build the pipeline, check that each sink's destination answers,
        /// and exit (0, 78 for a bad config, 69 for a sink that does not
        /// answer) without running: for use before a restart.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a config file and its pipeline; exit 0, or 78 after listing every error.
    Validate {
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Also check that each sink's destination answers (exit 69 if one does not).
        #[arg(long)]
        connect: bool,
    },
    /// Show the disk buffers of a config (`inspect`), or cut their damaged
    /// tails (`repair`, with the agent stopped).
    Buffer {
        #[arg(value_enum)]
        action: BufferAction,
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// List a sink's dead letters (`list`), or send them again and delete
    /// the ones accepted (`replay`; exit 0 if all went, 1 otherwise).
    DeadLetters {
        #[arg(value_enum)]
        action: DeadLetterAction,
        /// The sink's id.
        #[arg(long)]
        sink: String,
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Print a documented example of a component type, or list the types.
    /// `file` is both a source and a sink: `example source file` and
    /// `example sink file` print one of them, `example file` both.
    Example {
        /// `source`, `transform` or `sink` (optional), then a type, e.g. `http`.
        #[arg(value_name = "[KIND] TYPE", num_args = 0..=2)]
        args: Vec<String>,
    },
    /// Print the configuration reference (docs/reference.md): every option
    /// of the agent and of each component type, with its type and default.
    #[command(hide = true)]
    Reference,
    /// Print the config file's JSON Schema, for editors that check and
    /// complete YAML (`hostwatch schema > hostwatch.schema.json`).
    Schema,
}

/// Runs a parsed command line; the returned code is the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    crate::util::redact::scrub_panics();
    if matches!(cli.command, Command::Example { .. } | Command::Reference | Command::Schema) {
        printing_only();
    }
    match cli.command {
        // A dry run is what `validate --connect` does.
        Command::Run { config, dry_run: true } => validate(&config, true),
        Command::Run { config, dry_run: false } => run(&config),
        Command::Validate { config, connect } => validate(&config, connect),
        Command::Example { args } => example(&args),
        Command::Reference => {
            print!("{}", crate::reference::render());
            ExitCode::SUCCESS
        }
        Command::Schema => match serde_json::to_string_pretty(&crate::reference::schema()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write the schema: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Buffer { action, config } => buffer(action, &config),
        Command::DeadLetters { action, sink, config } => dead_letters(action, &sink, &config),
    }
}

/// Commands that only print end quietly when their reader goes away
/// (`hostwatch schema | head`), as other Unix tools do, instead of
/// panicking on a closed stdout. Not for commands that open sockets: a
/// write to a peer that closed would then kill them.
fn printing_only() {
    // SAFETY: called before any thread is started; it only restores the
    // default action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
