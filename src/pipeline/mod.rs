//! The pipeline: components wired by their `inputs` into a graph, started,
//! watched and stopped.
//!
//! Every edge is a bounded [`channel`]; a component's output is a [`Fanout`]
//! over the channels of the components that read it. Stopping works from the
//! front: sources stop, each transform ends when all its inputs have ended,
//! and each sink ends once it has delivered everything it was given, all
//! within `shutdown_timeout`.

pub mod channel;
pub mod fanout;
pub mod metrics;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::channel::{Limits, Receiver, Sender, WhenFull};
use self::fanout::Fanout;
use self::metrics::{Registry, State};
use crate::config::{Config, Diagnostic};
use crate::event::Str;
use crate::sinks::BuiltSink;
use crate::sources::{Source, SourceContext};
use crate::transforms::Transform;

/// The channel in front of a transform: enough for a few batches in flight.
const TRANSFORM_INPUT: Limits = Limits { max_events: 2048, max_bytes: 8 << 20, when_full: WhenFull::Block };

/// Every component built from a config, not yet running.
pub struct Topology {
    sources: Vec<Part<Source>>,
    transforms: Vec<Part<Transform>>,
    sinks: Vec<Part<BuiltSink>>,
}

impl Topology {
    /// The sinks with a disk buffer: id and the buffer's directory.
    pub fn disk_buffers(&self, data_dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
        self.sinks
            .iter()
            .filter(|p| p.built.disk.is_some())
            .map(|p| (p.id.clone(), buffer_dir(data_dir, &p.id)))
            .collect()
    }

    /// Each sink's id and whether its destination answers within `timeout`.
    pub async fn healthchecks(&self, timeout: std::time::Duration) -> Vec<(String, Result<(), String>)> {
        let checks = self.sinks.iter().map(|p| async move {
            let result = match tokio::time::timeout(timeout, p.built.sink.healthcheck(timeout)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
            };
            (p.id.clone(), result)
        });
        futures_util::future::join_all(checks).await
    }
}

/// Where the disk buffer of sink `id` lives.
fn buffer_dir(data_dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    data_dir.join("buffer").join(id)
}

/// A built component and where it sits in the graph.
struct Part<T> {
    id: String,
    ty: String,
    inputs: Vec<String>,
    /// Named outputs (`route` branches); empty for a single output.
    outputs: Vec<String>,
    built: T,
}

/// Builds every component, checking what can be checked before anything
/// runs. Returns every problem found.
pub fn build(config: &Config) -> Result<Topology, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut topology = Topology { sources: Vec::new(), transforms: Vec::new(), sinks: Vec::new() };
    let inputs = |c: &[crate::config::Spanned<String>]| c.iter().map(|i| i.value.clone()).collect::<Vec<_>>();
    for c in &config.sources {
        match c.config.build() {
            Ok(s) => topology.sources.push(Part {
                id: c.id.clone(),
                ty: c.ty.clone(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                built: s,
            }),
            Err(e) => {
                errors.push(Diagnostic::error(e.pos.or(Some(c.pos)), format!("sources.{}", c.id), e.message))
            }
        }
    }
    for c in &config.transforms {
        match c.config.build() {
            Ok(t) => topology.transforms.push(Part {
                id: c.id.clone(),
                ty: c.ty.clone(),
                inputs: inputs(&c.inputs),
                outputs: c.config.outputs(),
                built: t,
            }),
            Err(e) => errors.push(Diagnostic::error(
                e.pos.or(Some(c.pos)),
                format!("transforms.{}", c.id),
                e.message,
            )),
        }
    }
    for c in &config.sinks {
        match c.config.build(&c.id, &config.data_dir) {
            Ok(s) => topology.sinks.push(Part {
                id: c.id.clone(),
                ty: c.ty.clone(),
                inputs: inputs(&c.inputs),
                outputs: Vec::new(),
                built: s,
            }),
            Err(e) => {
                errors.push(Diagnostic::error(e.pos.or(Some(c.pos)), format!("sinks.{}", c.id), e.message))
            }
        }
    }
    if errors.is_empty() { Ok(topology) } else { Err(errors) }
}

type TaskResult = (String, &'static str, Result<(), String>);

/// A pipeline that runs.
pub struct Running {
    stop_sources: CancellationToken,
    tasks: JoinSet<TaskResult>,
    registry: Arc<Registry>,
}

/// Wires and starts a topology. Returns once every source has started (its
/// sockets bound), or the first source that could not, after stopping the rest.
pub async fn start(
    topology: Topology,
    data_dir: &Path,
    host: &Str,
    config_hash: &str,
    registry: Arc<Registry>,
) -> Result<Running, String> {
    let config_hash = Str::interned(config_hash);
    let mut inputs: HashMap<String, Sender> = HashMap::new();
    let mut receivers: HashMap<String, Receiver> = HashMap::new();
    let mut outputs: HashMap<String, Vec<(String, Sender)>> = HashMap::new();

    let mut sink_metrics = HashMap::new();
    let mut disk_buffers = HashMap::new();
    for p in &topology.sinks {
        let m = registry.register(&p.id, "sink", &p.ty);
        // A disk buffer reports its own size; the channel in front of it is
        // a small memory stage that waits for it (the disk buffer is the one
        // that drops, and counts, under `drop_newest`).
        let (limits, gauges) = match p.built.disk {
            Some(_) => (Limits { when_full: WhenFull::Block, ..p.built.buffer }, None),
            None => (p.built.buffer, Some(m.clone())),
        };
        let (tx, rx) = channel::channel(limits, gauges);
        let rx = match p.built.disk {
            Some(d) => {
                let settings = crate::buffer::disk::Settings {
                    dir: buffer_dir(data_dir, &p.id),
                    max_size: d.max_size,
                    when_full: d.when_full,
                    sync_interval: d.sync_interval,
                    segment_size: (d.max_size / 8).clamp(1 << 20, 64 << 20),
                };
                let (rx, acker) = crate::buffer::disk::start(settings, rx, m.clone())?;
                disk_buffers.insert(p.id.clone(), acker);
                rx
            }
            None => rx,
        };
        inputs.insert(p.id.clone(), tx);
        receivers.insert(p.id.clone(), rx);
        sink_metrics.insert(p.id.clone(), m);
    }
    for p in &topology.transforms {
        let (tx, rx) = channel::channel(TRANSFORM_INPUT, None);
        inputs.insert(p.id.clone(), tx);
        receivers.insert(p.id.clone(), rx);
    }
    let wiring = topology
        .transforms
        .iter()
        .map(|p| (&p.id, &p.inputs))
        .chain(topology.sinks.iter().map(|p| (&p.id, &p.inputs)));
    for (id, ins) in wiring {
        if let Some(tx) = inputs.get(id) {
            for input in ins {
                outputs.entry(input.clone()).or_default().push((id.clone(), tx.clone()));
            }
        }
    }
    // Only the upstreams hold senders now: a channel closes when they all end.
    drop(inputs);

    let mut tasks = JoinSet::new();
    for Part { id, built: sink, .. } in topology.sinks {
        let (Some(rx), Some(m)) = (receivers.remove(&id), sink_metrics.remove(&id)) else { continue };
        let disk = disk_buffers.remove(&id);
        tasks.spawn(async move {
            let result = sink.run(rx, m).await;
            // What was delivered is saved before the sink counts as stopped.
            if let Some(acker) = disk {
                let _ = acker.await;
            }
            (id, "sink", result)
        });
    }
    for Part { id, ty, outputs: named, built: transform, .. } in topology.transforms {
        let Some(rx) = receivers.remove(&id) else { continue };
        let m = registry.register(&id, "transform", &ty);
        // One fan-out per output: `id`, or `id.<name>` for each named one.
        let outs = if named.is_empty() {
            vec![Fanout::new(outputs.remove(&id).unwrap_or_default(), m.clone())]
        } else {
            named
                .iter()
                .map(|n| Fanout::new(outputs.remove(&format!("{id}.{n}")).unwrap_or_default(), m.clone()))
                .collect()
        };
        tasks.spawn(async move { (id, "transform", transform.run(rx, outs, m).await) });
    }
    let stop_sources = CancellationToken::new();
    let mut ready = Vec::new();
    for Part { id, ty, built: source, .. } in topology.sources {
        let m = registry.register(&id, "source", &ty);
        let out = Fanout::new(outputs.remove(&id).unwrap_or_default(), m.clone());
        let (tx, rx) = oneshot::channel();
        let cx = SourceContext::new(
            id.clone(),
            out,
            stop_sources.clone(),
            data_dir.to_path_buf(),
            m.clone(),
            registry.clone(),
            host.clone(),
            config_hash.clone(),
            tx,
        );
        ready.push((id.clone(), m.clone(), rx));
        tasks.spawn(async move {
            m.set_state(State::Running);
            let result = source.run(cx).await;
            m.set_state(if result.is_ok() { State::Stopped } else { State::Failed });
            (id, "source", result)
        });
    }
    let mut running = Running { stop_sources, tasks, registry };
    for (id, _m, rx) in ready {
        // A source that returned without saying has started (and finished).
        if let Ok(Err(e)) = rx.await {
            running.shutdown(Duration::from_secs(5)).await;
            return Err(format!("source `{id}` could not start: {e}"));
        }
    }
    Ok(running)
}

impl Running {
    /// Waits until every component has ended on its own (sources that
    /// finish, such as a generator with a `count`).
    pub async fn finished(&mut self) {
        while let Some(done) = self.tasks.join_next().await {
            self.report(done);
        }
    }

    /// Stops the sources and waits up to `timeout` for everything in flight
    /// to be delivered. Returns whether it all was.
    pub async fn shutdown(&mut self, timeout: Duration) -> bool {
        self.stop_sources.cancel();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(done)) => self.report(done),
                Ok(None) => return true,
                Err(_) => {
                    let waiting: u64 = self
                        .registry
                        .components()
                        .iter()
                        .map(|c| c.buffer_events.load(std::sync::atomic::Ordering::Relaxed))
                        .sum();
                    tracing::error!(
                        timeout = %humantime::format_duration(timeout),
                        buffered_events = waiting,
                        "shutdown_timeout reached; stopping with events undelivered (their sources \
                         were not told they were delivered)"
                    );
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    return false;
                }
            }
        }
    }

    fn report(&self, done: Result<TaskResult, tokio::task::JoinError>) {
        match done {
            Ok((id, kind, Ok(()))) => tracing::debug!(component = %id, kind, "stopped"),
            Ok((id, kind, Err(e))) => {
                self.mark_failed(&id, &e);
                tracing::error!(component = %id, kind, "failed: {e}");
            }
            Err(e) if e.is_panic() => tracing::error!("a component crashed: {e}"),
            Err(_) => {}
        }
    }

    fn mark_failed(&self, id: &str, error: &str) {
        if let Some(c) = self.registry.components().iter().find(|c| c.id == id) {
            c.set_state(State::Failed);
            c.set_error(Some(error.to_string()));
        }
    }
}

/// The host name: the config's `hostname`, or the kernel's.
pub fn hostname(config: &Config) -> String {
    if let Some(h) = &config.hostname {
        return h.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
