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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use self::channel::{Handle, Limits, Receiver, Sender, WhenFull};
use self::fanout::{Fanout, Wiring};
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
    fingerprint: u64,
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
                fingerprint: c.fingerprint,
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
                fingerprint: c.fingerprint,
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
                fingerprint: c.fingerprint,
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

/// A component that runs, with what a reload needs to know of it.
struct Node {
    kind: &'static str,
    ty: String,
    fingerprint: u64,
    inputs: Vec<String>,
    /// The input channel of a transform or sink, and the pipeline's own
    /// sender on it, which keeps it open while upstreams come and go: it is
    /// closed on purpose (`close_ready`), not when the last upstream leaves.
    input: Option<(Handle, Option<Sender>)>,
    /// Stops a source.
    stop: Option<CancellationToken>,
    /// Each output (`id`, or `id.<name>` for a named one) and where it goes.
    outputs: Vec<(String, Arc<Wiring>)>,
    task: AbortHandle,
    /// A sink with a disk buffer: what it has not delivered at a stop waits
    /// on disk for the next start.
    durable: bool,
}

/// The component an input names: `route` for `route.errors`.
fn upstream(input: &str) -> &str {
    input.split_once('.').map_or(input, |(id, _)| id)
}

/// A pipeline that runs.
pub struct Running {
    stop_sources: CancellationToken,
    tasks: JoinSet<TaskResult>,
    registry: Arc<Registry>,
    nodes: HashMap<String, Node>,
    data_dir: PathBuf,
    host: Str,
    config_hash: Str,
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
    let mut running = Running {
        stop_sources: CancellationToken::new(),
        tasks: JoinSet::new(),
        registry,
        nodes: HashMap::new(),
        data_dir: data_dir.to_path_buf(),
        host: host.clone(),
        config_hash: Str::interned(config_hash),
    };
    if let Err(e) = running.launch(topology).await {
        running.shutdown(Duration::from_secs(5)).await;
        return Err(e);
    }
    Ok(running)
}

impl Running {
    /// Starts the components of `topology` next to those that run, and wires
    /// every output, old and new, to the components that read it now.
    async fn launch(&mut self, topology: Topology) -> Result<(), String> {
        let mut receivers: HashMap<String, Receiver> = HashMap::new();
        let mut inputs: HashMap<String, (Handle, Sender)> = HashMap::new();
        let mut sink_metrics = HashMap::new();
        let mut disk_buffers = HashMap::new();
        for p in &topology.sinks {
            let m = self.registry.register(&p.id, "sink", &p.ty);
            // A disk buffer reports its own size; the channel in front of it
            // is a small memory stage that waits for it (the disk buffer is
            // the one that drops, and counts, under `drop_newest`).
            let (limits, gauges) = match p.built.disk {
                Some(_) => (Limits { when_full: WhenFull::Block, ..p.built.buffer }, None),
                None => (p.built.buffer, Some(m.clone())),
            };
            let (tx, rx) = channel::channel(limits, gauges);
            let rx = match p.built.disk {
                Some(d) => {
                    let settings = crate::buffer::disk::Settings {
                        dir: buffer_dir(&self.data_dir, &p.id),
                        max_size: d.max_size,
                        when_full: d.when_full,
                        sync_interval: d.sync_interval,
                        segment_size: (d.max_size / 8).clamp(1 << 20, 64 << 20),
                    };
                    let (rx, tasks) = crate::buffer::disk::start(settings, rx, m.clone()).await?;
                    disk_buffers.insert(p.id.clone(), tasks);
                    rx
                }
                None => rx,
            };
            inputs.insert(p.id.clone(), (tx.handle(), tx));
            receivers.insert(p.id.clone(), rx);
            sink_metrics.insert(p.id.clone(), m);
        }
        for p in &topology.transforms {
            // The channel's gauges count what waits in it, for a stop that
            // times out to say how many events it held.
            let m = self.registry.register(&p.id, "transform", &p.ty);
            let (tx, rx) = channel::channel(TRANSFORM_INPUT, Some(m));
            inputs.insert(p.id.clone(), (tx.handle(), tx));
            receivers.insert(p.id.clone(), rx);
        }

        // Who reads each output now: the running components and the new ones.
        let mut readers: HashMap<String, Vec<(String, Handle)>> = HashMap::new();
        let running = self.nodes.iter().filter_map(|(id, n)| Some((id, &n.inputs, &n.input.as_ref()?.0)));
        let new = (topology.transforms.iter().map(|p| (&p.id, &p.inputs)))
            .chain(topology.sinks.iter().map(|p| (&p.id, &p.inputs)))
            .filter_map(|(id, ins)| Some((id, ins, &inputs.get(id)?.0)));
        for (id, ins, handle) in running.chain(new) {
            for input in ins {
                readers.entry(input.clone()).or_default().push((id.clone(), handle.clone()));
            }
        }
        // Sorted, so that every fan-out reserves in the same order.
        readers.values_mut().for_each(|r| r.sort_by(|a, b| a.0.cmp(&b.0)));
        for node in self.nodes.values() {
            for (name, wiring) in &node.outputs {
                wiring.set(readers.get(name).cloned().unwrap_or_default());
            }
        }
        let wiring = |name: String| {
            let w = Wiring::new(readers.get(&name).cloned().unwrap_or_default());
            (name, w)
        };

        for Part { id, ty, inputs: ins, fingerprint, built: sink, .. } in topology.sinks {
            let (Some(rx), Some(m), Some((handle, keep))) =
                (receivers.remove(&id), sink_metrics.remove(&id), inputs.remove(&id))
            else {
                continue;
            };
            let disk = disk_buffers.remove(&id);
            let durable = disk.is_some();
            let name = id.clone();
            let task = self.tasks.spawn(async move {
                let result = sink.run(rx, m).await;
                // What was delivered is saved before the sink counts as stopped.
                if let Some(tasks) = disk {
                    tasks.finish().await;
                }
                (name, "sink", result)
            });
            let node = Node {
                kind: "sink",
                ty,
                fingerprint,
                inputs: ins,
                input: Some((handle, Some(keep))),
                stop: None,
                outputs: Vec::new(),
                task,
                durable,
            };
            self.nodes.insert(id, node);
        }
        for Part { id, ty, inputs: ins, outputs: named, fingerprint, built: transform } in topology.transforms
        {
            let (Some(rx), Some((handle, keep))) = (receivers.remove(&id), inputs.remove(&id)) else {
                continue;
            };
            let m = self.registry.register(&id, "transform", &ty);
            // One fan-out per output: `id`, or `id.<name>` for each named one.
            let outputs: Vec<(String, Arc<Wiring>)> = if named.is_empty() {
                vec![wiring(id.clone())]
            } else {
                named.iter().map(|n| wiring(format!("{id}.{n}"))).collect()
            };
            let outs = outputs.iter().map(|(_, w)| Fanout::new(w.clone(), m.clone())).collect();
            let name = id.clone();
            let task = self.tasks.spawn(async move { (name, "transform", transform.run(rx, outs, m).await) });
            let node = Node {
                kind: "transform",
                ty,
                fingerprint,
                inputs: ins,
                input: Some((handle, Some(keep))),
                stop: None,
                outputs,
                task,
                durable: false,
            };
            self.nodes.insert(id, node);
        }
        let mut ready = Vec::new();
        for Part { id, ty, fingerprint, built: source, .. } in topology.sources {
            let m = self.registry.register(&id, "source", &ty);
            let outputs = vec![wiring(id.clone())];
            let out = Fanout::new(outputs[0].1.clone(), m.clone());
            let stop = self.stop_sources.child_token();
            let (tx, rx) = oneshot::channel();
            let cx = SourceContext::new(
                id.clone(),
                out,
                stop.clone(),
                self.data_dir.clone(),
                m.clone(),
                self.registry.clone(),
                self.host.clone(),
                self.config_hash.clone(),
                tx,
            );
            ready.push((id.clone(), rx));
            let name = id.clone();
            let task = self.tasks.spawn(async move {
                m.set_state(State::Running);
                let result = source.run(cx).await;
                m.set_state(if result.is_ok() { State::Stopped } else { State::Failed });
                (name, "source", result)
            });
            let node = Node {
                kind: "source",
                ty,
                fingerprint,
                inputs: Vec::new(),
                input: None,
                stop: Some(stop),
                outputs,
                task,
                durable: false,
            };
            self.nodes.insert(id, node);
        }
        for (id, rx) in ready {
            // A source that returned without saying has started (and finished).
            if let Ok(Err(e)) = rx.await {
                return Err(format!("source `{id}` could not start: {e}"));
            }
        }
        Ok(())
    }

    /// Waits until every component has ended on its own (sources that
    /// finish, such as a generator with a `count`).
    pub async fn finished(&mut self) {
        while let Some(done) = self.tasks.join_next_with_id().await {
            self.ended(done);
            self.close_ready(None);
        }
    }

    /// Stops the sources and waits up to `timeout` for everything in flight
    /// to be delivered. Returns whether it all was.
    pub async fn shutdown(&mut self, timeout: Duration) -> bool {
        self.stop_sources.cancel();
        let all: HashSet<String> = self.nodes.keys().cloned().collect();
        self.stop(&all, timeout).await
    }

    /// Stops the components in `ids`, each the way a shutdown does: sources
    /// first; then each transform and sink once those of its upstreams that
    /// stop too have ended, so that it drains what they sent. Upstreams that
    /// go on running must already be paused. Returns whether all ended
    /// within `timeout`; those that did not are aborted.
    async fn stop(&mut self, ids: &HashSet<String>, timeout: Duration) -> bool {
        for id in ids {
            if let Some(stop) = self.nodes.get(id).and_then(|n| n.stop.as_ref()) {
                stop.cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.close_ready(Some(ids));
            if !ids.iter().any(|id| self.nodes.contains_key(id)) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.ended(done),
                Ok(None) => return true,
                Err(_) => {
                    // Counted once the components have stopped, so that
                    // nothing is delivered between the count and the stop.
                    let durable: HashSet<String> = ids
                        .iter()
                        .filter(|id| self.nodes.get(*id).is_some_and(|n| n.durable))
                        .cloned()
                        .collect();
                    for id in ids {
                        if let Some(node) = self.nodes.get(id) {
                            node.task.abort();
                        }
                    }
                    while ids.iter().any(|id| self.nodes.contains_key(id)) {
                        match self.tasks.join_next_with_id().await {
                            Some(done) => self.ended(done),
                            None => break,
                        }
                    }
                    let (mut on_disk, mut in_memory) = (0u64, 0u64);
                    let mut holders = Vec::new();
                    for c in self.registry.components().iter().filter(|c| ids.contains(&c.id)) {
                        if durable.contains(&c.id) {
                            on_disk += c.buffer_events.load(std::sync::atomic::Ordering::Relaxed);
                        } else if c.kind != "source" {
                            let n = c.abandon();
                            in_memory += n;
                            if n > 0 {
                                holders.push(format!("{}={n}", c.id));
                            }
                        }
                    }
                    let timeout = humantime::format_duration(timeout);
                    if on_disk > 0 {
                        // Nothing is lost: a warning, not an error.
                        tracing::warn!(
                            %timeout,
                            buffered_events = on_disk,
                            "shutdown_timeout reached; the events not yet delivered stay in the disk \
                             buffers and are delivered after the next start"
                        );
                    }
                    if in_memory > 0 || on_disk == 0 {
                        tracing::error!(
                            %timeout,
                            undelivered_events = in_memory,
                            held_by = %holders.join(","),
                            "shutdown_timeout reached; events held in memory were not delivered and are \
                             dropped: a file source reads its lines again at the next start, the events \
                             of other sources are lost"
                        );
                    }
                    return false;
                }
            }
        }
    }

    /// Closes the input of each transform and sink (of `only`, or all) whose
    /// upstreams have all ended, or, with `only`, are outside it and paused.
    fn close_ready(&mut self, only: Option<&HashSet<String>>) {
        let nodes = &self.nodes;
        let ready: Vec<String> = nodes
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o.contains(*id)))
            .filter(|(_, n)| matches!(n.input, Some((_, Some(_)))))
            .filter(|(_, n)| {
                n.inputs.iter().all(|i| match nodes.get(upstream(i)) {
                    None => true,
                    Some(_) => only.is_some_and(|o| !o.contains(upstream(i))),
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            if let Some((handle, keep)) = self.nodes.get_mut(&id).and_then(|n| n.input.as_mut()) {
                keep.take();
                handle.close();
            }
        }
    }

    /// The running sources, outside `ids`, that feed any of `ids`.
    fn sources_upstream_of(&self, ids: &HashSet<String>) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut todo: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut sources = HashSet::new();
        while let Some(id) = todo.pop() {
            let Some(node) = self.nodes.get(id) else { continue };
            if node.kind == "source" && !ids.contains(id) {
                sources.insert(id.to_string());
            }
            for input in &node.inputs {
                if seen.insert(upstream(input)) {
                    todo.push(upstream(input));
                }
            }
        }
        sources
    }

    fn ended(&mut self, done: Result<(tokio::task::Id, TaskResult), tokio::task::JoinError>) {
        let task = match &done {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let id = self.nodes.iter().find(|(_, n)| n.task.id() == task).map(|(id, _)| id.clone());
        if let Some(id) = &id {
            self.nodes.remove(id);
        }
        match done {
            Ok((_, (id, kind, Ok(())))) => tracing::debug!(component = %id, kind, "stopped"),
            Ok((_, (id, kind, Err(e)))) => {
                self.mark_failed(&id, &e);
                tracing::error!(component = %id, kind, "failed: {e}");
            }
            Err(e) if e.is_panic() => {
                if let Some(id) = &id {
                    self.mark_failed(id, "crashed");
                }
                tracing::error!(component = ?id, "a component crashed: {e}");
            }
            Err(_) => {}
        }
    }

    fn mark_failed(&self, id: &str, error: &str) {
        if let Some(c) = self.registry.components().iter().find(|c| c.id == id) {
            c.set_state(State::Failed);
            c.set_error(Some(error.to_string()));
        }
    }

    /// Moves to a new config's topology, rebuilding only what changed: the
    /// components whose settings, type or inputs changed, or that are new or
    /// gone (all of them when `data_dir` or the host name changed, which
    /// every component uses). The others keep running.
    ///
    /// The order keeps every event: first the sources that go stop, the way
    /// they do at shutdown, while everything downstream of them still runs
    /// (so a file source saves the checkpoint of all it sent). Then the
    /// outputs that feed a transform or sink that goes are paused (their
    /// senders wait), and those transforms and sinks drain and stop. Then
    /// the new ones start, the paused outputs are pointed at them, and last
    /// the new sources start. Returns the ids rebuilt.
    pub async fn reload(
        &mut self,
        topology: Topology,
        data_dir: &Path,
        host: &Str,
        config_hash: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let everything = data_dir != self.data_dir || *host != self.host;
        self.config_hash = Str::interned(config_hash);
        let mut new: HashMap<&str, (&'static str, u64)> = HashMap::new();
        new.extend(topology.sources.iter().map(|p| (p.id.as_str(), ("source", p.fingerprint))));
        new.extend(topology.transforms.iter().map(|p| (p.id.as_str(), ("transform", p.fingerprint))));
        new.extend(topology.sinks.iter().map(|p| (p.id.as_str(), ("sink", p.fingerprint))));
        let stopping: HashSet<String> = (self.nodes.iter())
            .filter(|(id, n)| {
                // `agent` reports the config's hash: it starts again, and
                // `agent.stopping`, `agent.started` tell of the reload.
                everything || n.ty == "agent" || new.get(id.as_str()) != Some(&(n.kind, n.fingerprint))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let keep = |id: &String| self.nodes.contains_key(id) && !stopping.contains(id);
        // The running sources upstream of what stops, with their new parts:
        // should a stop run out of time, they start again (below).
        let upstream_sources = self.sources_upstream_of(&stopping);
        let (kept_sources, sources): (Vec<_>, Vec<_>) =
            topology.sources.into_iter().partition(|p| keep(&p.id));
        let topology = Topology {
            sources,
            transforms: topology.transforms.into_iter().filter(|p| !keep(&p.id)).collect(),
            sinks: topology.sinks.into_iter().filter(|p| !keep(&p.id)).collect(),
        };
        let mut delivered = true;
        let sources: HashSet<String> = stopping
            .iter()
            .filter(|id| self.nodes.get(*id).is_some_and(|n| n.kind == "source"))
            .cloned()
            .collect();
        delivered &= self.stop(&sources, timeout).await;
        for id in &stopping {
            let Some(node) = self.nodes.get(id) else { continue };
            for input in &node.inputs {
                let from = upstream(input);
                if stopping.contains(from) {
                    continue;
                }
                let outputs = self.nodes.get(from).map(|n| n.outputs.as_slice()).unwrap_or_default();
                for (_, wiring) in outputs.iter().filter(|(name, _)| name == input) {
                    wiring.pause();
                }
            }
        }
        delivered &= self.stop(&stopping, timeout).await;
        if !delivered {
            tracing::warn!("not everything in flight was delivered before the reload; sources read it again");
        }
        self.data_dir = data_dir.to_path_buf();
        self.host = host.clone();
        let mut rebuilt: Vec<String> = (topology.sources.iter().map(|p| p.id.clone()))
            .chain(topology.transforms.iter().map(|p| p.id.clone()))
            .chain(topology.sinks.iter().map(|p| p.id.clone()))
            .collect();
        rebuilt.sort();
        self.launch(topology).await?;
        if !delivered {
            // What the aborted components held was not acknowledged, and a
            // source that runs on does not send again what failed (a file
            // source stops its checkpoint before it). Started again now that
            // the pipeline flows, they read it again from their checkpoints.
            let again: HashSet<String> =
                upstream_sources.into_iter().filter(|id| self.nodes.contains_key(id)).collect();
            if !again.is_empty() {
                tracing::warn!(
                    sources = %again.iter().cloned().collect::<Vec<_>>().join(", "),
                    "restarting the sources upstream so that they read again what was not delivered"
                );
                self.stop(&again, timeout).await;
                let sources: Vec<_> = kept_sources.into_iter().filter(|p| again.contains(&p.id)).collect();
                rebuilt.extend(sources.iter().map(|p| p.id.clone()));
                rebuilt.sort();
                self.launch(Topology { sources, transforms: Vec::new(), sinks: Vec::new() }).await?;
            }
        }
        Ok(rebuilt)
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
