//! Small helpers shared by components.
//!
//! - [`auth`]: bearer-token checks for `ingest` and the API.
//! - [`hash`]: the stable hash (sampling by key, file fingerprints).
//! - [`http_server`]: the bounded HTTP server of `ingest` and the API.
//! - [`redact`]: secrets out of logs, `/health`, `/metrics`, dead letters and `validate`.
//! - [`sys`]: figures of the system several sources read (clock ticks, user names).
//! - [`tls`]: the process-wide TLS crypto provider.

pub mod auth;
pub mod hash;
pub mod http_server;
pub mod redact;
pub mod sys;
pub mod tls;
