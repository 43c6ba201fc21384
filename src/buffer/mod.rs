//! Sink buffers: where events wait for their sink.
//!
//! A memory buffer is the sink's input channel with the limits set here: it
//! holds at most `max_events` events and about `max_bytes` bytes, and when
//! full either makes the sources wait (`block`) or drops and counts
//! (`drop_newest`).
//!
//! A disk buffer (`disk`) keeps them in files under
//! `data_dir/buffer/<sink id>/` instead, up to `max_size`: they survive a
//! crash and a sink that is down for long, and the sources are acknowledged
//! once the events are on disk. A file source's batches that the sink has
//! room for go to it from memory instead, and are acknowledged once
//! delivered: the file holds them until then (see `disk`).

pub mod disk;
pub mod record;

use std::time::Duration;

use serde::Deserialize;

use crate::config::{BuildError, ByteSize};
use crate::pipeline::channel::{Limits, WhenFull};

/// `buffer:` on a sink.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` or `disk`. Default: `memory`.
    #[serde(default, rename = "type")]
    pub kind: BufferType,
    /// Disk: the most bytes of events waiting on disk (the files hold up
    /// to one segment, an eighth of this, more, and, when the sink stops,
    /// copies of the events it held in memory). Default: `1GiB`.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Disk: how often written events are synced to disk (and then
    /// acknowledged to their sources). Default: `100ms`.
    #[serde(default)]
    pub sync_interval: Option<crate::config::Duration>,
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    #[default]
    Memory,
    Disk,
}

/// A disk buffer's settings, once checked.
#[derive(Clone, Copy, Debug)]
pub struct DiskLimits {
    pub max_size: u64,
    pub when_full: WhenFull,
    pub sync_interval: Duration,
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

    /// The disk buffer's settings, for `type: disk`.
    pub fn disk(&self) -> Result<Option<DiskLimits>, BuildError> {
        match self.kind {
            BufferType::Memory => {
                if self.max_size.is_some() || self.sync_interval.is_some() {
                    return Err(BuildError::new(
                        "`buffer.max_size` and `buffer.sync_interval` are for `type: disk`",
                    ));
                }
                Ok(None)
            }
            BufferType::Disk => {
                let max_size = self.max_size.map_or(1 << 30, |b| b.0);
                if max_size < 1 << 20 {
                    return Err(BuildError::new("`buffer.max_size` must be at least 1MiB"));
                }
                Ok(Some(DiskLimits {
                    max_size,
                    when_full: self.when_full,
                    sync_interval: self.sync_interval.map_or(Duration::from_millis(100), |d| d.0),
                }))
            }
        }
    }
}
