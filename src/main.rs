use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hostwatch::cli::main(hostwatch::cli::Cli::parse())
}

// Events are made on one thread and freed on another; jemalloc handles that
// (and small allocations in general) much faster than the system allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (`_RJEM_MALLOC_CONF` still overrides them).
/// One arena: with an arena per thread, the pages an event's thread freed
/// stay dirty in the arena of the thread that made it, and a pipeline of
/// reader, transform and sink threads held three times the memory it uses
/// (118 MiB against 37 MiB parsing nginx logs), for no gain in speed: the
/// thread caches already take the contention away.
/// A background thread gives freed pages back to the system as they age
/// (`dirty_decay_ms`, 10 s): without it pages are only given back when the
/// agent allocates again, and an agent that went idle after a burst (40
/// clients sending large bodies to ingest) kept twice its memory for good.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: ConfPtr = ConfPtr(c"narenas:1,background_thread:true".as_ptr());

#[repr(transparent)]
struct ConfPtr(*const std::ffi::c_char);

// SAFETY: it points at a constant string that nothing writes.
unsafe impl Sync for ConfPtr {}
