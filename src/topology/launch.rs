//! Starting components next to those that run, and wiring every output to
//! the components that read it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Node, Part, Running, TRANSFORM_INPUT, Topology, buffer_dir};
use crate::pipeline::channel::{self, Handle, Limits, Receiver, Sender, WhenFull};
use crate::pipeline::fanout::{Fanout, Wiring};
use crate::pipeline::metrics::State;
use crate::sources::context::SourceContext;

impl Running {
    /// Starts the components of `topology` next to those that run, and wires
    /// every output, old and new, to the components that read it now.
    pub(super) async fn launch(&mut self, topology: Topology) -> Result<(), String> {
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
}
