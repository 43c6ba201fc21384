//! A reload: the components whose settings changed stop, in the order that
//! keeps every event, and their new versions start; the others run on.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::{Running, Topology, upstream};
use crate::event::Str;

impl Running {
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
}
