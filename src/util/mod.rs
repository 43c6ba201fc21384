//! Small helpers shared by components.
//!
//! - [`redact`]: secrets out of logs, `/health`, `/metrics`, dead letters and `validate`.

pub mod redact;
