//! Small helpers shared by components.
//!
//! - [`auth`]: bearer-token checks for `ingest` and the API.
//! - [`hash`]: the stable hash (sampling by key, file fingerprints).
//! - [`http_server`]: the bounded HTTP server of `ingest` and the API.
//! - [`redact`]: secrets out of logs, `/health`, `/metrics`, dead letters and `validate`.

pub mod auth;
pub mod hash;
pub mod http_server;
pub mod redact;
