//! `host`: a `host.metrics` event every `interval` with the state of the
//! machine, and `host.threshold.crossed` / `host.threshold.cleared` when a
//! metric passes a configured threshold.
//!
//! Memory, swap, load and uptime come from the `sysinfo` crate. The rest
//! is read by hand: CPU time by kind (iowait, steal), disk operation
//! counts, filesystem free blocks and inodes (`statvfs`), network drops
//! and interface states, which `sysinfo` does not give; the process counts
//! and the heaviest processes, from one `stat` file per process where
//! `sysinfo` reads three (`status`, `stat`, `statm`) every interval; and
//! processes starting and exiting, from a scan that reads only
//! new pids, with start times to the clock tick and exit statuses from the
//! kernel's process events connector. Counters (CPU time, disk and network
//! traffic) are turned into percentages and rates per second between two
//! samples; the first event comes one interval after the start, when there
//! are two.

mod connector;
mod interfaces;
mod proc;
mod processes;
mod services;
mod system;
mod threshold;

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::context::SourceContext;
use crate::config::BuildError;
use crate::event::id::IdGen;
use crate::event::{AckSet, EventBatch, Map, Str, Value, time};

use self::proc::Sample;
use self::processes::{ProcessMatch, Processes};
use self::services::{ServiceConfig, Services};
use self::threshold::{Threshold, ThresholdConfig};

/// `type: host`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between two `host.metrics` events. Default: `10s`.
    #[serde(default = "default_interval")]
    pub interval: crate::config::Duration,
    /// The groups to collect: `cpu`, `load`, `memory`, `filesystem`, `disk`,
    /// `network`, `processes`, `uptime`. Default: all.
    #[serde(default = "all_groups")]
    pub collect: Vec<Group>,
    /// Which mount points to report. Default: every real filesystem
    /// (pseudo filesystems such as proc, sysfs, tmpfs, overlay are left out).
    #[serde(default)]
    pub mounts: MountsConfig,
    /// Report the N processes using the most CPU and the most memory in
    /// each `host.metrics` (`top_processes.by_cpu`, `.by_memory`); `0`
    /// turns it off. Default: `5`.
    #[serde(default = "default_top")]
    pub top_processes: usize,
    /// Thresholds over any metric path (`memory.used_percent`,
    /// `filesystem./.used_percent`, `cpu.total.iowait`). Default: none.
    #[serde(default)]
    pub thresholds: Vec<ThresholdConfig>,
    /// Processes to report starting and exiting (`process.started`,
    /// `process.exited`): names, or `{name, cmdline: regex, user}`. Default: none.
    #[serde(default)]
    pub processes: Vec<ProcessMatch>,
    /// Report every process starting and exiting. Default: `false`.
    #[serde(default)]
    pub all_processes: bool,
    /// Time between two scans for processes. Default: `1s`.
    #[serde(default = "default_process_interval")]
    pub process_interval: crate::config::Duration,
    /// The most process events of one scan; the rest are counted as
    /// dropped. Default: `100`.
    #[serde(default = "default_process_events_limit")]
    pub process_events_limit: usize,
    /// Services checked every `interval`: `{name, tcp: host:port}`, `{name,
    /// http: url, expect_status}`, `{name, unit: nginx.service}` or `{name,
    /// process: regex}` → `service.up` / `service.down`. Default: none.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Report network interfaces going up or down or changing addresses
    /// (`net.interface.up`, `net.interface.down`), looked at every `interval`.
    /// Default: `true`.
    #[serde(default = "yes")]
    pub interfaces: bool,
}

fn yes() -> bool {
    true
}

fn default_process_interval() -> crate::config::Duration {
    crate::config::Duration::from_secs(1)
}

fn default_process_events_limit() -> usize {
    100
}

fn default_top() -> usize {
    5
}

fn default_interval() -> crate::config::Duration {
    crate::config::Duration::from_secs(10)
}

fn all_groups() -> Vec<Group> {
    Group::ALL.to_vec()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Cpu,
    Load,
    Memory,
    Filesystem,
    Disk,
    Network,
    Processes,
    Uptime,
}

impl Group {
    const ALL: [Group; 8] = [
        Group::Cpu,
        Group::Load,
        Group::Memory,
        Group::Filesystem,
        Group::Disk,
        Group::Network,
        Group::Processes,
        Group::Uptime,
    ];
}

/// `mounts:` on a host source.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountsConfig {
    /// Mount points to report (globs); pseudo filesystems too when named
    /// here. Default: every real filesystem.
    #[serde(default)]
    pub include: Vec<String>,
    /// Mount points to leave out (globs). Default: none.
    #[serde(default)]
    pub exclude: Vec<String>,
}

pub struct Host {
    interval: Duration,
    groups: Vec<Group>,
    mounts: proc::MountFilter,
    thresholds: Vec<Threshold>,
    processes: Processes,
    process_interval: Duration,
    services: Services,
    interfaces: Option<interfaces::Interfaces>,
    top: usize,
    /// Kept across ticks, refreshed for the groups collected.
    figures: system::Figures,
}

impl Host {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if config.interval.0 < Duration::from_millis(100) {
            return Err(BuildError::new("`interval` must be at least 100ms"));
        }
        let thresholds =
            config.thresholds.iter().map(Threshold::new).collect::<Result<Vec<_>, BuildError>>()?;
        if config.process_interval.0 < Duration::from_millis(100) {
            return Err(BuildError::new("`process_interval` must be at least 100ms"));
        }
        Ok(Host {
            interval: config.interval.0,
            groups: config.collect.clone(),
            mounts: proc::MountFilter::new(&config.mounts)?,
            thresholds,
            processes: Processes::new(&config.processes, config.all_processes, config.process_events_limit)?,
            process_interval: config.process_interval.0,
            services: Services::new(&config.services)?,
            interfaces: config.interfaces.then(interfaces::Interfaces::default),
            top: config.top_processes,
            figures: system::Figures::new(&config.collect)?,
        })
    }

    pub async fn run(mut self, mut cx: SourceContext) -> Result<(), String> {
        cx.ready(Ok(()));
        let mut ids = IdGen::new();
        let mut previous = Sample::read(&self.groups, self.top);
        self.figures.refresh();
        let mut tick = tokio::time::interval_at((Instant::now() + self.interval).into(), self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scan = tokio::time::interval(self.process_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let scanning = self.processes.is_active();
        if let Some(i) = &mut self.interfaces {
            i.check();
        }
        if !self.services.is_empty() {
            // The first state of each service at once, not an interval later.
            let changes = self.services.check().await;
            if !emit(&mut cx, &mut ids, None, changes).await {
                return Ok(());
            }
        }
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = scan.tick(), if scanning => {
                    let (changes, over) = self.processes.scan();
                    if over > 0 {
                        cx.metrics.add_dropped(crate::pipeline::metrics::DropReason::Filtered, over);
                    }
                    if !emit(&mut cx, &mut ids, None, changes).await {
                        return Ok(());
                    }
                    continue;
                }
                _ = cx.shutdown.cancelled() => return Ok(()),
            }
            let sample = Sample::read(&self.groups, self.top);
            self.figures.refresh();
            let mut metrics = sample.metrics(&previous, &self.figures, &self.groups, &self.mounts, self.top);
            previous = sample;
            let mut changes = Vec::new();
            if !self.services.is_empty() {
                changes = self.services.check().await;
                metrics.push(Str::from_static("services"), self.services.states());
            }
            if let Some(i) = &mut self.interfaces {
                changes.extend(i.check());
            }
            let at = Instant::now();
            changes.extend(self.thresholds.iter_mut().filter_map(|t| t.observe(&metrics, at)));
            if !emit(&mut cx, &mut ids, Some(metrics), changes).await {
                return Ok(());
            }
        }
    }
}

/// Sends `host.metrics` (if given) and the change events in one batch;
/// `false` once the pipeline is gone.
async fn emit(
    cx: &mut SourceContext,
    ids: &mut IdGen,
    metrics: Option<Map>,
    changes: Vec<(&'static str, Map)>,
) -> bool {
    if metrics.is_none() && changes.is_empty() {
        return true;
    }
    let now = time::now_micros();
    let mut events = Vec::with_capacity(1 + changes.len());
    if let Some(m) = metrics {
        events.push(cx.event(ids, now, Str::from_static("host.metrics"), None, m));
    }
    for (ty, data) in changes {
        events.push(cx.event(ids, now, Str::from_static(ty), None, data));
    }
    cx.metrics.add_in(events.len());
    cx.out.send(EventBatch::new(events, AckSet::new())).await.is_ok()
}

/// Finds a metric by its path in the `host.metrics` data: dot-separated,
/// where a key may itself hold dots or slashes (`filesystem./var/lib.used_percent`):
/// at each level the longest key that matches wins.
pub fn lookup<'a>(data: &'a Map, path: &str) -> Option<&'a Value> {
    let mut map = data;
    let mut rest = path;
    loop {
        let (key, value) = map
            .iter()
            .filter(|(k, _)| rest == k.as_str() || rest.starts_with(&format!("{}.", k.as_str())))
            .max_by_key(|(k, _)| k.len())?;
        if rest.len() == key.len() {
            return Some(value);
        }
        rest = &rest[key.len() + 1..];
        map = value.as_object()?;
    }
}
