//! `agent`: events about hostwatch itself. `agent.started` (version, config
//! hash), `agent.heartbeat` every `heartbeat_interval` (uptime, events in,
//! out and dropped so far, memory and CPU), and `agent.stopping` when it
//! stops — so that downstream, a host whose heartbeats stop is a host that
//! is gone.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::context::SourceContext;
use crate::config::BuildError;
use crate::event::id::IdGen;
use crate::event::{AckSet, EventBatch, Map, Str, Value, time};
use crate::pipeline::metrics::DropReason;

/// `type: agent`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between two `agent.heartbeat` events. Default: `30s`.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: crate::config::Duration,
}

fn default_heartbeat_interval() -> crate::config::Duration {
    crate::config::Duration::from_secs(30)
}

pub struct Agent {
    interval: Duration,
}

impl Agent {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        if config.heartbeat_interval.0 < Duration::from_millis(100) {
            return Err(BuildError::new("`heartbeat_interval` must be at least 100ms"));
        }
        Ok(Agent { interval: config.heartbeat_interval.0 })
    }

    pub async fn run(self, mut cx: SourceContext) -> Result<(), String> {
        cx.ready(Ok(()));
        let started = Instant::now();
        let mut ids = IdGen::new();
        let mut data = Map::with_capacity(4);
        data.push(Str::from_static("version"), Value::from(env!("CARGO_PKG_VERSION")));
        data.push(Str::from_static("config_hash"), Value::Str(cx.config_hash.clone()));
        data.push(Str::from_static("pid"), Value::from(u64::from(std::process::id())));
        send(&mut cx, &mut ids, "agent.started", data).await;
        let mut tick = tokio::time::interval_at((started + self.interval).into(), self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let data = self.status(&cx, started);
                    send(&mut cx, &mut ids, "agent.heartbeat", data).await;
                }
                _ = cx.shutdown.cancelled() => break,
            }
        }
        let data = self.status(&cx, started);
        send(&mut cx, &mut ids, "agent.stopping", data).await;
        Ok(())
    }

    /// Uptime, the pipeline's totals and the process's own footprint.
    fn status(&self, cx: &SourceContext, started: Instant) -> Map {
        let (mut events_in, mut events_out, mut dropped) = (0u64, 0u64, 0u64);
        for c in cx.registry.components() {
            match c.kind {
                "source" => events_in += c.events_in.load(std::sync::atomic::Ordering::Relaxed),
                "sink" => events_out += c.events_out.load(std::sync::atomic::Ordering::Relaxed),
                _ => {}
            }
            dropped += DropReason::ALL.iter().map(|r| c.dropped(*r)).sum::<u64>();
        }
        let mut data = Map::with_capacity(8);
        data.push(Str::from_static("version"), Value::from(env!("CARGO_PKG_VERSION")));
        data.push(Str::from_static("uptime_seconds"), Value::from(started.elapsed().as_secs()));
        data.push(Str::from_static("events_in"), Value::from(events_in));
        data.push(Str::from_static("events_out"), Value::from(events_out));
        data.push(Str::from_static("events_dropped"), Value::from(dropped));
        let (rss, cpu) = own_usage();
        data.push(Str::from_static("rss_bytes"), Value::from(rss));
        data.push(Str::from_static("cpu_seconds"), Value::Float(cpu));
        data
    }
}

async fn send(cx: &mut SourceContext, ids: &mut IdGen, ty: &'static str, data: Map) {
    let event = cx.event(ids, time::now_micros(), Str::from_static(ty), None, data);
    cx.metrics.add_in(1);
    let _ = cx.out.send(EventBatch::new(vec![event], AckSet::new())).await;
}

/// The agent's resident memory (bytes) and CPU time (seconds), from /proc.
fn own_usage() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .map(|s| {
            let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / crate::util::sys::clock_ticks()
        })
        .unwrap_or(0.0);
    (rss, cpu)
}
