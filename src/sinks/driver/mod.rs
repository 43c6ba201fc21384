//! The shared sink machinery: everything a sink does but sending.
//!
//! A sink type implements [`Transport`]: it sends one encoded batch and says
//! whether it was accepted. The driver does the rest, the same way for every
//! type: batching and encoding ([`batch`]), concurrent requests, retries
//! ([`retry`]), dead letters ([`dead_letter`], sent again by [`redeliver`]),
//! acknowledgements, and destinations that depend on the event
//! ([`template`]). Sink types import this module, never each other.

pub mod batch;
pub mod dead_letter;
pub mod redeliver;
pub mod retry;
pub mod template;
mod throttle;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use self::batch::{BatchConfig, BatchLimits, Batcher, Compression, EncodedBatch, Framing, Partitioner};
use self::dead_letter::{DeadLetterConfig, DeadLetters};
use self::retry::{Backoff, RequestConfig, RequestSettings, SendError};
use self::throttle::Throttle;
use crate::buffer::BufferConfig;
use crate::config::yaml::{self, Node};
use crate::config::{BuildError, Spanned};
use crate::event::BatchStatus;
use crate::event::encode::Codec;
use crate::pipeline::channel::{Limits, Receiver};
use crate::pipeline::metrics::{ComponentMetrics, DropReason, State};

/// What the driver needs of a sink: every sink type has these two, with
/// these signatures, and the `Sink` enum dispatches them.
#[allow(async_fn_in_trait)] // implemented and called with concrete types only
pub trait Transport {
    /// Sends one encoded batch and classifies the outcome.
    async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError>;

    /// Whether the destination answers within `timeout` (brokers: a
    /// connection, or the cluster's metadata). Sinks without a remote end
    /// are always healthy.
    async fn healthcheck(&self, timeout: Duration) -> Result<(), String>;
}

/// What every sink has besides its type's own settings.
#[derive(Debug, Clone, schemars::JsonSchema)]
pub struct Common {
    /// How events are grouped into one request or write. Default: the sink
    /// type's limits.
    pub batch: BatchConfig,
    /// Where events wait for the sink: memory or disk. Default: `{type: memory}`.
    pub buffer: BufferConfig,
    /// Requests in flight, their timeout and retries. Default: the sink
    /// type's.
    pub request: RequestConfig,
    /// How much of the batches the destination refuses for good is kept
    /// (under `data_dir`), and for how long. Default: `{max_size: 100MiB, max_age: 7d}`.
    pub dead_letter: DeadLetterConfig,
}

impl Common {
    /// Takes `batch`, `buffer`, `request` and `dead_letter` out of a sink's
    /// settings; what is left is the type's own.
    pub fn take(node: &mut Node) -> Result<Self, yaml::Error> {
        let mut common = |key: &str| -> Option<Node> { node.take(key).map(|(_, v)| v) };
        let batch = common("batch");
        let buffer = common("buffer");
        let request = common("request");
        let dead_letter = common("dead_letter");
        fn part<T: serde::de::DeserializeOwned + Default>(
            n: &Option<Node>,
            key: &str,
        ) -> Result<T, yaml::Error> {
            match n {
                Some(n) => yaml::from_node(n).map_err(|e| e.within(key.to_string())),
                None => Ok(T::default()),
            }
        }
        Ok(Common {
            batch: part(&batch, "batch")?,
            buffer: part(&buffer, "buffer")?,
            request: part(&request, "request")?,
            dead_letter: part(&dead_letter, "dead_letter")?,
        })
    }

    /// Puts a built sink type and its machinery together.
    pub fn build<S>(
        &self,
        sink: S,
        parts: Parts,
        id: &str,
        data_dir: &Path,
    ) -> Result<BuiltSink<S>, BuildError> {
        let limits = self.batch.resolve(parts.batch)?;
        let request = self.request.resolve(parts.concurrency, parts.max_concurrency)?;
        Ok(BuiltSink {
            sink,
            batcher: match parts.framing {
                Some(f) => Batcher::new(limits, parts.codec, parts.compression).with_messages(f),
                None => Batcher::new(limits, parts.codec, parts.compression),
            },
            partitioner: parts.partitioner,
            buffer: self.buffer.limits()?,
            disk: self.buffer.disk()?,
            request,
            dead_letters: DeadLetters::new(dead_letter_dir(data_dir, id), self.dead_letter.resolve()?),
        })
    }
}

/// What a sink type's `build` is given besides its own settings.
pub struct BuildContext<'a> {
    /// The sink's id.
    pub id: &'a str,
    /// `request.timeout`, or its default.
    pub request_timeout: Duration,
}

/// Where the dead letters of sink `id` are kept.
pub fn dead_letter_dir(data_dir: &Path, id: &str) -> std::path::PathBuf {
    data_dir.join("dead").join(id)
}

/// Where a sink sends: one fixed place, or a template rendered per event
/// (the batcher then keeps one batch per rendered destination).
pub struct Destination {
    fixed: Option<String>,
}

impl Destination {
    /// Parses a destination template; with it, the partitioner for `Parts`
    /// when the destination depends on the event. Field values pass
    /// through `clean` (see `Template::render`).
    pub fn new(
        spec: &Spanned<String>,
        clean: fn(&str, &mut String),
    ) -> Result<(Self, Option<Box<Partitioner>>), BuildError> {
        let mut tpl = template::Template::parse(&spec.value).map_err(|e| BuildError::at(spec.pos, e))?;
        if tpl.is_constant() {
            return Ok((Destination { fixed: Some(spec.value.clone()) }, None));
        }
        let partitioner: Box<Partitioner> =
            Box::new(move |event, out: &mut String| tpl.render(event, out, clean));
        Ok((Destination { fixed: None }, Some(partitioner)))
    }

    /// Where `batch` goes.
    pub fn of<'a>(&'a self, batch: &'a EncodedBatch) -> Result<&'a str, SendError> {
        self.fixed
            .as_deref()
            .or(batch.partition.as_deref())
            .ok_or_else(|| SendError::Permanent("the batch has no destination".to_string()))
    }
}

/// What a sink type's build tells the shared machinery.
pub struct Parts {
    pub codec: Codec,
    pub compression: Compression,
    /// Batch limits unless the config says otherwise.
    pub batch: BatchLimits,
    pub concurrency: usize,
    pub max_concurrency: usize,
    pub partitioner: Option<Box<Partitioner>>,
    /// Set by sinks that publish each event as a message of its own.
    pub framing: Option<Framing>,
}

impl Parts {
    /// A broker sink's: each event a message of its own, four batches in
    /// flight unless the config says otherwise.
    pub fn messages(framing: Framing, partitioner: Option<Box<Partitioner>>) -> Parts {
        Parts {
            codec: Codec::Ndjson,
            compression: Compression::None,
            batch: BatchLimits::DEFAULT,
            concurrency: 4,
            max_concurrency: 64,
            partitioner,
            framing: Some(framing),
        }
    }
}

/// Counts a broker sink's published, unconfirmed messages in its metrics;
/// whatever is left when it is dropped (a cancelled request) is taken back.
pub struct Unconfirmed<'a> {
    gauge: &'a AtomicU64,
    left: u64,
}

impl<'a> Unconfirmed<'a> {
    pub fn new(gauge: &'a AtomicU64, n: usize) -> Self {
        gauge.fetch_add(n as u64, Relaxed);
        Unconfirmed { gauge, left: n as u64 }
    }

    pub fn confirmed(&mut self, n: u64) {
        let n = n.min(self.left);
        self.left -= n;
        self.gauge.fetch_sub(n, Relaxed);
    }
}

impl Drop for Unconfirmed<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.left, Relaxed);
    }
}

/// A sink with its machinery, ready to run.
pub struct BuiltSink<S> {
    pub sink: S,
    batcher: Batcher,
    partitioner: Option<Box<Partitioner>>,
    /// The limits of the sink's input channel: its memory buffer.
    pub buffer: Limits,
    /// A disk buffer behind the input channel.
    pub disk: Option<crate::buffer::DiskLimits>,
    request: RequestSettings,
    dead_letters: DeadLetters,
}

/// What the requests of one sink share: its settings, and how often it has
/// already said that it is in trouble.
struct Shared<'a, S> {
    sink: &'a S,
    request: RequestSettings,
    metrics: &'a ComponentMetrics,
    dead_letters: &'a DeadLetters,
    auth: Throttle,
    refused: Throttle,
}

impl<S: Transport> BuiltSink<S> {
    /// Runs until the input is closed and everything taken in has been
    /// delivered or dead-lettered.
    pub async fn run(self, mut input: Receiver, metrics: Arc<ComponentMetrics>) -> Result<(), String> {
        let BuiltSink { sink, mut batcher, mut partitioner, request, dead_letters, .. } = self;
        let shared = Shared {
            sink: &sink,
            request,
            metrics: &metrics,
            dead_letters: &dead_letters,
            auth: Throttle::default(),
            refused: Throttle::default(),
        };
        let mut inflight = FuturesUnordered::new();
        let mut input_open = true;
        // Letters that expired while the agent was stopped go now, and the
        // rest as they expire.
        dead_letters.enforce_in_background(&metrics, true).await;
        let mut sweep = tokio::time::interval(dead_letters.sweep_interval());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.reset();
        metrics.set_state(State::Running);
        // Say so at once if the destination is not there; the events wait.
        if let Err(e) = sink.healthcheck(Duration::from_secs(5)).await {
            tracing::warn!(component = %metrics.id, "not reachable at start, events wait for it: {e}");
            metrics.set_error(Some(e));
        }
        loop {
            while inflight.len() < request.concurrency {
                let Some(batch) = batcher.pop() else { break };
                inflight.push(deliver(&shared, batch));
            }
            if !input_open && batcher.is_empty() && inflight.is_empty() {
                break;
            }
            let deadline = batcher.next_deadline();
            tokio::select! {
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                // Take no more input while closed batches wait for a request
                // slot: the buffer fills and the sources slow down.
                batch = input.recv(), if input_open && batcher.ready_len() == 0 => match batch {
                    Some(batch) => {
                        metrics.add_in(batch.len());
                        batcher.push(batch, partitioner.as_deref_mut());
                    }
                    None => {
                        input_open = false;
                        batcher.flush_all();
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => batcher.flush_due(Instant::now()),
                _ = sweep.tick() => dead_letters.enforce_in_background(&metrics, true).await,
            }
        }
        metrics.set_state(State::Stopped);
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

/// Sends one batch until it is delivered or refused for good, and settles
/// its acknowledgements accordingly.
async fn deliver<S: Transport>(shared: &Shared<'_, S>, batch: EncodedBatch) {
    let Shared { sink, request, metrics, .. } = shared;
    let mut backoff = Backoff::new(request);
    let mut failures = 0u32;
    loop {
        metrics.requests.fetch_add(1, Relaxed);
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(request.timeout, sink.send(&batch, metrics)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::retry(format!(
                "no answer within {}",
                humantime::format_duration(request.timeout)
            ))),
        };
        metrics.observe_request(started.elapsed());
        match result {
            Ok(()) => {
                metrics.add_out(batch.events);
                metrics.bytes_out.fetch_add(batch.body.len() as u64, Relaxed);
                if shared.auth.recovered() {
                    throttle::auth_recovered(&metrics.id);
                }
                if failures > 0 {
                    tracing::info!(component = %metrics.id, attempts = failures + 1, "delivered after retrying");
                    metrics.set_state(State::Running);
                    metrics.set_error(None);
                }
                batch.acks.settle(BatchStatus::Delivered);
                return;
            }
            Err(SendError::Retry { after, reason }) => {
                failures += 1;
                metrics.retries.fetch_add(1, Relaxed);
                metrics.set_state(State::Retrying);
                let delay = backoff.delay(after);
                let retry_in = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
                if metrics.set_error(Some(reason.clone())) {
                    tracing::warn!(component = %metrics.id, events = batch.events, attempt = failures, %retry_in, "{reason}");
                } else {
                    tracing::debug!(component = %metrics.id, events = batch.events, attempt = failures, %retry_in, "{reason}");
                }
                tokio::time::sleep(delay).await;
            }
            // The batch is fine: it waits (and the sources with it) until
            // the credentials are fixed.
            Err(SendError::Auth(reason)) => {
                failures += 1;
                metrics.retries.fetch_add(1, Relaxed);
                metrics.set_state(State::AuthFailed);
                let delay = backoff.for_auth();
                throttle::auth_failed(&metrics.id, shared.auth.failed(), batch.events, delay, &reason);
                metrics.set_error(Some(reason));
                tokio::time::sleep(delay).await;
            }
            Err(SendError::Permanent(reason)) => {
                metrics.add_dropped(DropReason::DeadLettered, batch.events);
                let written = shared
                    .dead_letters
                    .write(&batch, &reason, metrics)
                    .await
                    .map(|p| p.display().to_string())
                    .map_err(|e| format!("{}: {e}", shared.dead_letters.dir.display()));
                throttle::dead_lettered(
                    &metrics.id,
                    shared.refused.failed(),
                    batch.events,
                    &reason,
                    &written,
                );
                metrics.set_error(Some(reason));
                batch.acks.settle(BatchStatus::Rejected);
                return;
            }
        }
    }
}
