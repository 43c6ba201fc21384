//! hostwatch: a host agent that turns logs, host state, HTTP traffic and
//! application events into CloudEvents and ships them without losing any.
//!
//! - [`cli`]: the command line (`run`, `validate`, `example`, `schema`).
//! - [`config`]: the YAML model, environment interpolation, validation with positions.
//! - [`event`]: the CloudEvents event, its encodings, ids, times and acknowledgements.
//! - [`pipeline`]: the component graph, its channels, fan-out, metrics and shutdown.
//! - [`sources`]: where events come from (`file`, `host`, `fs_watch`, `http_capture`, `ingest`, `agent`, `generator`).
//! - [`transforms`]: what happens to them on the way (`parse`, `filter`, `sample`, `throttle`, `dedupe`, `remap`, `route`).
//! - [`sinks`]: where they go (`console`, `file`, `http`, `kafka`, `amqp`, `nats`, `mqtt`, `redis`), with the shared sink driver.
//! - [`buffer`]: the buffer in front of each sink.
//! - [`batch`]: batching, encoding and compression for sinks.
//! - [`retry`]: request settings, backoff and the outcome of a send.
//! - [`template`]: destinations that depend on the event (`{type}`, `%Y-%m-%d`).
//! - [`api`]: `/health` and `/metrics`.
//! - [`reference`]: the config's JSON Schema and the reference made from it.
//! - [`notify`]: systemd notifications (ready, reloading, stopping) and the watchdog.
//! - [`util`]: small shared helpers (redacting secrets from what is printed or stored).

pub mod api;
pub mod batch;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod event;
pub mod expr;
pub mod notify;
pub mod pipeline;
pub mod reference;
pub mod retry;
pub mod sinks;
pub mod sources;
pub mod template;
pub mod transforms;
pub mod util;
