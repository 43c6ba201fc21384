use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hostwatch::cli::main(hostwatch::cli::Cli::parse())
}

// Events are made on one thread and freed on another; mimalloc handles that
// (and small allocations in general) much faster than the system allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
