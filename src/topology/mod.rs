//! The running agent's graph: every component of a config built
//! ([`build`]), wired by its `inputs` and started ([`start`]), changed in
//! place by a reload, and stopped.
//!
//! Every edge is a bounded channel; a component's output is a fan-out over
//! the channels of the components that read it. Stopping works from the
//! front: sources stop, each transform ends when all its inputs have ended,
//! and each sink ends once it has delivered everything it was given, all
//! within `shutdown_timeout`. This is the only module that knows every
//! component type.
//!
//! - [`config`]: the whole config (sources, transforms, sinks) read and checked.
//! - [`load`]: a config file loaded and built, with every problem listed.
//! - `launch`: starting components and wiring their outputs.
//! - `shutdown`: stopping components in order, within a deadline.
//! - `reload`: moving to a new config, rebuilding only what changed.

pub mod config;
mod launch;
pub mod load;
mod reload;
mod shutdown;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use self::config::Config;
use crate::config::Diagnostic;
use crate::event::Str;
use crate::pipeline::channel::{Handle, Limits, Sender, WhenFull};
use crate::pipeline::fanout::Wiring;
use crate::pipeline::metrics::Registry;
use crate::sinks::Sink;
use crate::sinks::driver::{BuiltSink, Transport as _};
use crate::sources::Source;
use crate::transforms::Transform;

/// The channel in front of a transform: enough for a few batches in flight.
const TRANSFORM_INPUT: Limits = Limits { max_events: 2048, max_bytes: 8 << 20, when_full: WhenFull::Block };

/// Every component built from a config, not yet running.
pub struct Topology {
    sources: Vec<Part<Source>>,
    transforms: Vec<Part<Transform>>,
    sinks: Vec<Part<BuiltSink<Sink>>>,
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
