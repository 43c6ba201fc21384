use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hostwatch::cli::main(hostwatch::cli::Cli::parse())
}
