//! hostwatch: a host agent that turns logs, host state, HTTP traffic and
//! application events into CloudEvents and ships them without losing any.
//!
//! The modules, bottom up; each imports only those above it in this list
//! (`tests/layers.rs` keeps it so), and no component imports another.
//!
//! - [`event`]: the CloudEvents event, its encodings, ids, times and acknowledgements.
//! - [`pipeline`]: the primitives of the graph: bounded channels, fan-out, the metrics registry.
//! - [`util`]: small shared helpers (redaction, TLS, bearer auth, the bounded HTTP server, system figures).
//! - [`config`]: the configuration's vocabulary: units, positions, errors, YAML loading, secrets.
//! - [`expr`]: the expression language of `filter`, `route`, `remap` and `sample`.
//! - [`buffer`]: the memory and disk buffers in front of each sink.
//! - [`sinks::driver`]: the shared sink machinery: batching, retries, dead letters, acknowledgements.
//! - [`sources`], [`transforms`], [`sinks`]: one module per component `type`, and each kind's list of types.
//! - [`topology`]: the whole config, the graph built and started, reload, shutdown.
//! - [`api`]: `/health`, `/metrics` and `/reload`.
//! - [`reference`]: the config's JSON Schema, and the reference made from it and the examples.
//! - [`notify`]: systemd notifications (ready, reloading, stopping) and the watchdog.
//! - [`commands`]: `validate`, `example`, `buffer`, `dead-letters`.
//! - [`daemon`]: `run`: start, signals, reload, stop.
//! - [`cli`]: the command line's arguments, and dispatch.

pub mod api;
pub mod buffer;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod event;
pub mod expr;
pub mod notify;
pub mod pipeline;
pub mod reference;
pub mod sinks;
pub mod sources;
pub mod topology;
pub mod transforms;
pub mod util;
