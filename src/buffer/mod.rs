//! Sink buffers: where events wait for their sink.
//!
//! A memory buffer is the sink's input channel with the limits set here: it
//! holds at most `max_events` events and about `max_bytes` bytes, and when
//! full either makes the sources wait (`block`) or drops and counts
//! (`drop_newest`).

use serde::Deserialize;

use crate::config::{BuildError, ByteSize};
use crate::pipeline::channel::{Limits, WhenFull};

/// `buffer:` on a sink.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory`. Default: `memory`.
    #[serde(default, rename = "type")]
    pub kind: BufferType,
    /// The most events held. Default: `2048` (two batches' worth: enough to
    /// keep the sink busy; a full buffer makes the sources wait, it loses
    /// nothing).
    #[serde(default)]
    pub max_events: Option<usize>,
    /// The most bytes held (an estimate of the events' memory). Default: `8MiB`.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// `block` (the sources wait) or `drop_newest` (new events are dropped
    /// and counted). Default: `block`.
    #[serde(default)]
    pub when_full: WhenFull,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    #[default]
    Memory,
}

impl BufferConfig {
    pub fn limits(&self) -> Result<Limits, BuildError> {
        let limits = Limits {
            max_events: self.max_events.unwrap_or(2048),
            max_bytes: self.max_bytes.map_or(8 << 20, |b| b.0 as usize),
            when_full: self.when_full,
        };
        if limits.max_events == 0 || limits.max_bytes == 0 {
            return Err(BuildError::new("`buffer.max_events` and `buffer.max_bytes` must be more than 0"));
        }
        Ok(limits)
    }
}
