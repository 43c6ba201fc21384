//! The configuration's vocabulary: units, positions, errors, YAML loading,
//! secrets, and the agent's own `api:` and `log:` settings.
//!
//! A leaf: every component imports it, and it imports no component. The
//! whole config (its sources, transforms and sinks) is read in
//! `topology::config`, which knows every component type.

pub mod every;
pub mod log;
pub mod schema;
pub mod secrets;
pub mod units;
pub mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::units::{ByteSize, Duration};
pub use self::yaml::{Kind, Node, Pos, Spanned};

/// Where the config is read from when neither `--config` nor
/// `$HOSTWATCH_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/hostwatch/agent.yaml";

/// `api:` — the agent's HTTP API.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on. Default: `127.0.0.1:8686` (loopback only).
    #[serde(default = "default_api_address")]
    pub address: SocketAddr,
    /// `POST /reload` must carry `Authorization: Bearer <token>`; `/health`
    /// and `/metrics` stay open to local monitoring. Write the token as
    /// `${NAME}`. Default: none.
    #[serde(default)]
    pub auth: Option<crate::util::auth::Auth>,
}

fn default_api_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8686))
}

/// `log:` — the agent's own logs.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn` (or `warning`), `info`, `debug`, `trace` or `off`, or
    /// a filter such as `info,hostwatch::sinks=debug`; any other word is an
    /// error. `$HOSTWATCH_LOG` overrides it. Default: `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`. Default: `text`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_log_level(), format: LogFormat::Text }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

// === diagnostics ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem found in the config, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub pos: Option<Pos>,
    /// What it is about: `sinks.out.batch.timeout`, or empty for the file.
    pub at: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(pos: Option<Pos>, at: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, pos, at: at.into(), message: message.into() }
    }

    pub fn warning(pos: Option<Pos>, at: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, pos, at: at.into(), message: message.into() }
    }

    /// A YAML error of the setting at `at` (`sinks.out`), with its path below it.
    pub fn from_yaml(at: &str, e: yaml::Error) -> Self {
        let mut path = at.to_string();
        for key in &e.path {
            if !key.starts_with('[') && !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
        Diagnostic::error(e.pos, path, e.message)
    }

    /// Formats as `file:line:col: error: at: message`.
    pub fn display<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Diagnostic, &'a Path);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let d = self.0;
                write!(f, "{}", self.1.display())?;
                if let Some(pos) = d.pos {
                    write!(f, ":{}:{}", pos.line, pos.col)?;
                }
                let level = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                write!(f, ": {level}: ")?;
                if !d.at.is_empty() {
                    write!(f, "{}: ", d.at)?;
                }
                f.write_str(&d.message)
            }
        }
        D(self, file)
    }
}

/// A config that cannot be used, with everything wrong in it.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", d.display(&self.path))?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// A component setting that deserialized but cannot work (an invalid URL, a
/// CA file that does not exist), found when the component is built.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl BuildError {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        BuildError { pos: Some(pos), message: message.into() }
    }

    pub fn new(message: impl Into<String>) -> Self {
        BuildError { pos: None, message: message.into() }
    }
}
