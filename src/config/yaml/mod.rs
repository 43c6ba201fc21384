//! YAML with positions: a tree whose every node knows its line and column,
//! and a serde deserializer over it.
//!
//! Deserializing from a tree instead of a stream lets the loader check each
//! component on its own (one broken component does not hide the errors of the
//! next) and lets every error carry the position of the innermost node it is
//! about. Environment variables are substituted inside scalar values after
//! parsing, so positions stay those of the file and a value can never inject
//! YAML structure.
//!
//! `tree` is the node model and what the loader does with nodes, `parse`
//! builds it from text (anchors, merge keys), `interpolate` substitutes
//! variables and secrets inside scalars, `de` reads a node with serde, and
//! `spanned` keeps a value's position through deserialization.

mod de;
mod interpolate;
mod parse;
mod spanned;
#[cfg(test)]
mod tests;
mod tree;

use std::fmt;

pub use self::de::{NodeDe, from_node};
pub use self::interpolate::interpolate;
pub use self::parse::parse;
pub use self::spanned::Spanned;
pub use self::tree::{Kind, Node};

/// A position in the config file, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// An error with the position it is about and the path of keys leading there.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub pos: Option<Pos>,
    /// Keys from the outermost in, e.g. `["batch", "timeout"]`.
    pub path: Vec<String>,
    pub message: String,
    /// A key refused as such (an unknown setting), whose mapping `path`
    /// leads to.
    pub key: Option<String>,
}

impl Error {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Error { pos: Some(pos), path: Vec::new(), message: message.into(), key: None }
    }

    /// Sets the position unless an inner node already set it.
    fn or_at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }

    /// Prefixes the path with an outer key.
    pub fn within(mut self, key: String) -> Self {
        self.path.insert(0, key);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error { pos: None, path: Vec::new(), message: msg.to_string(), key: None }
    }
}
