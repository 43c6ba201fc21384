//! Stopping: sources first, then each transform and sink once its
//! upstreams have ended, all within a deadline; and what a component that
//! ended on its own leaves behind.

use std::collections::HashSet;
use std::time::Duration;

use super::{Running, TaskResult, upstream};
use crate::pipeline::metrics::State;

impl Running {
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
    pub(super) async fn stop(&mut self, ids: &HashSet<String>, timeout: Duration) -> bool {
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
}
