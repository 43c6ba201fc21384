//! Batching and encoding, shared by every sink.
//!
//! Events are encoded as they arrive, straight into the body of the batch
//! they join, so `max_bytes` is the real size of what will be sent and no
//! event is touched twice. A batch closes when it reaches `max_events` or
//! `max_bytes`, or `timeout` after its first event; it is then compressed once
//! and handed to the sink. Sinks that write to several destinations (a file
//! path with `{type}` in it) keep one open batch per destination.

mod each;
mod messages;

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::{BuildError, ByteSize, Duration as ConfigDuration};
use crate::event::encode::{Codec, Encoder};
use crate::event::{AckSet, BatchStatus, Event, EventBatch};
use messages::compress_each;
pub use messages::{Attr, Framing, Message, Messages, Mode, STRUCTURED_CONTENT_TYPE};

/// `batch:` on a sink. Unset values take the sink type's defaults.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The most events in one batch. Default: `1000` (the sink type may say otherwise).
    #[serde(default)]
    pub max_events: Option<usize>,
    /// The most bytes in one batch, before compression. Default: `1MiB`.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// How long a batch may wait for more events after its first. Default: `1s`.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BatchLimits {
    pub const DEFAULT: BatchLimits =
        BatchLimits { max_events: 1000, max_bytes: 1 << 20, timeout: Duration::from_secs(1) };
}

impl BatchConfig {
    pub fn resolve(&self, defaults: BatchLimits) -> Result<BatchLimits, BuildError> {
        let limits = BatchLimits {
            max_events: self.max_events.unwrap_or(defaults.max_events),
            max_bytes: self.max_bytes.map_or(defaults.max_bytes, |b| b.0 as usize),
            timeout: self.timeout.map_or(defaults.timeout, |t| t.0),
        };
        if limits.max_events == 0 {
            return Err(BuildError::new("`batch.max_events` must be at least 1"));
        }
        if limits.max_bytes == 0 {
            return Err(BuildError::new("`batch.max_bytes` must be more than 0"));
        }
        Ok(limits)
    }
}

/// Compression of a batch body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The `Content-Encoding` of a body compressed this way.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    /// The compressed copy of `body` (never called for `None`).
    fn compress(self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(body.to_vec()),
            Compression::Gzip => {
                let out = Vec::with_capacity(body.len() / 4);
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                gz.write_all(body)?;
                gz.finish()
            }
            Compression::Zstd => zstd::bulk::compress(body, 3),
        }
    }
}

/// Compresses a closed batch's body. If compression fails the encoded body
/// is sent as it is, without `Content-Encoding`: its events are all there,
/// only larger.
fn compressed(
    compression: Compression,
    body: Vec<u8>,
    compress: Compress,
) -> (Vec<u8>, Option<&'static str>) {
    if compression == Compression::None {
        return (body, None);
    }
    match compress(compression, &body) {
        Ok(c) => (c, compression.content_encoding()),
        Err(e) => {
            tracing::error!(error = %e, "compression failed; sending the batch uncompressed");
            (body, None)
        }
    }
}

/// How a batch is compressed: [`Compression::compress`], but a test can
/// make it fail.
type Compress = fn(Compression, &[u8]) -> std::io::Result<Vec<u8>>;

/// A closed batch: its encoded (and compressed) body and what it carries.
#[derive(Debug)]
pub struct EncodedBatch {
    pub body: Bytes,
    pub events: usize,
    /// The body's size before compression.
    pub uncompressed_bytes: usize,
    /// Where it goes, for sinks that write to several destinations.
    pub partition: Option<String>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    pub acks: AckSet,
    /// For sinks that publish each event as a message of its own: where each
    /// one's value lies in `body`, and its key and attributes.
    pub messages: Option<Messages>,
    /// Which messages a broker confirmed, so that a retry sends only the
    /// others (bit `i` for message `i`).
    confirmed: std::sync::Mutex<Vec<u64>>,
}

impl EncodedBatch {
    /// A batch read back from where it was kept (a dead letter), to be sent
    /// as it was. Nobody waits for its acknowledgement.
    pub fn stored(
        body: Bytes,
        events: usize,
        content_type: &'static str,
        content_encoding: Option<&'static str>,
        partition: Option<String>,
    ) -> Self {
        EncodedBatch {
            uncompressed_bytes: body.len(),
            body,
            events,
            partition,
            content_type,
            content_encoding,
            acks: AckSet::new(),
            messages: None,
            confirmed: Default::default(),
        }
    }

    /// Whether the broker confirmed message `i` on an earlier attempt.
    pub fn is_confirmed(&self, i: usize) -> bool {
        let done = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        done.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn confirm(&self, i: usize) {
        let mut done = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        if done.len() <= i / 64 {
            done.resize(i / 64 + 1, 0);
        }
        done[i / 64] |= 1 << (i % 64);
    }

    /// The batch's events as messages (empty unless the sink asked for them).
    pub fn messages(&self) -> impl Iterator<Item = Message<'_>> {
        let m = self.messages.as_ref();
        let items = m.map_or(&[][..], |m| &m.items[..]);
        let mut start = 0usize;
        let mut attrs_start = 0usize;
        items.iter().map(move |item| {
            let m = m.expect("items come from messages");
            let value = &self.body[start..item.value_end as usize];
            let attrs = &m.attrs[attrs_start..item.attrs_end as usize];
            start = item.value_end as usize;
            attrs_start = item.attrs_end as usize;
            Message {
                value,
                key: item.key.map(|(a, b)| &m.text[a as usize..b as usize]),
                attrs,
                text: &m.text,
            }
        })
    }
}

/// Renders the destination of an event into the string it is given.
pub type Partitioner = dyn FnMut(&Event, &mut String) + Send;

struct Open {
    key: String,
    body: Vec<u8>,
    events: usize,
    acks: AckSet,
    deadline: Instant,
    /// The input batch whose shares this batch last took.
    generation: u64,
    messages: Option<Messages>,
}

/// Turns a sink's incoming event batches into encoded batches.
pub struct Batcher {
    limits: BatchLimits,
    encoder: Encoder,
    compression: Compression,
    open: Vec<Open>,
    ready: VecDeque<EncodedBatch>,
    generation: u64,
    key: String,
    /// The usual size of a closed batch (a moving average), to allocate
    /// bodies once at about the right size: growing by doubling copies, and
    /// allocating `max_bytes` for every batch holds memory that small
    /// batches never use.
    typical: usize,
    /// Set for sinks that publish each event on its own.
    framing: Option<Framing>,
    compress: Compress,
    /// Compresses each message on its own, when they are to be compressed.
    each: Option<each::EachCompressor>,
}

/// The most destinations with a batch open at once; past it the oldest is sent.
const MAX_OPEN: usize = 256;

impl Batcher {
    pub fn new(limits: BatchLimits, codec: Codec, compression: Compression) -> Self {
        Batcher {
            limits,
            encoder: Encoder::new(codec),
            compression,
            open: Vec::new(),
            ready: VecDeque::new(),
            generation: 0,
            key: String::new(),
            typical: 64 << 10,
            framing: None,
            compress: Compression::compress,
            each: None,
        }
    }

    /// Frames each event as a message of its own, without batch framing.
    /// With compression, each message is compressed on its own (broker
    /// sinks ask for none: their clients compress).
    pub fn with_messages(mut self, framing: Framing) -> Self {
        self.framing = Some(framing);
        if self.compression != Compression::None {
            self.each = Some(each::EachCompressor::new(self.compression));
        }
        self
    }

    /// Adds the events of a batch, closing batches that fill up.
    pub fn push(&mut self, batch: EventBatch, mut partition: Option<&mut Partitioner>) {
        self.generation += 1;
        let generation = self.generation;
        let acks = &batch.acks;
        let mut slot: Option<usize> = None;
        for event in batch.events() {
            if let Some(render) = partition.as_mut() {
                self.key.clear();
                render(event, &mut self.key);
            }
            // Most consecutive events go where the previous one went. Without
            // a partition every key is empty: no comparison (glibc's
            // AVX-512 `memcmp` of an empty `String`'s dangling pointer takes
            // a slow microcode assist, a tenth of the whole agent's time).
            let i = match slot {
                Some(i) if partition.is_none() || self.open[i].key == self.key => i,
                _ => self.find_or_open(),
            };
            let i = self.add(i, event, acks, generation);
            slot = Some(i);
            if self.open[i].events >= self.limits.max_events {
                self.close(i);
                slot = None;
            }
        }
        // Every batch that took an event holds copies of the shares now.
        batch.acks.settle(BatchStatus::Delivered);
    }

    fn find_or_open(&mut self) -> usize {
        if let Some(i) = self.open.iter().position(|o| o.key == self.key) {
            return i;
        }
        if self.open.len() >= MAX_OPEN {
            self.close(0);
        }
        let room = (self.typical + self.typical / 4 + 4096).min(self.limits.max_bytes + 4096);
        let mut body = Vec::with_capacity(room);
        let messages = self.framing.as_ref().map(|_| Messages::default());
        if messages.is_none() {
            self.encoder.begin(&mut body);
        }
        self.open.push(Open {
            key: self.key.clone(),
            body,
            events: 0,
            acks: AckSet::new(),
            deadline: Instant::now() + self.limits.timeout,
            generation: 0,
            messages,
        });
        self.open.len() - 1
    }

    /// Encodes an event into open batch `i`; returns the index of the batch
    /// that holds it (another one if it did not fit).
    fn add(&mut self, i: usize, event: &Event, acks: &AckSet, generation: u64) -> usize {
        let open = &mut self.open[i];
        let before = open.body.len();
        let mark = open.messages.as_ref().map(Messages::mark);
        self.encode(i, event);
        let open = &mut self.open[i];
        let size = open.body.len() + open.messages.as_ref().map_or(0, |m| m.text.len());
        if size > self.limits.max_bytes && open.events > 0 {
            // This event does not fit: send the batch without it and start
            // the next one with it.
            open.body.truncate(before);
            if let (Some(m), Some(mark)) = (open.messages.as_mut(), mark) {
                m.rollback(mark);
            }
            self.close(i);
            let j = self.find_or_open();
            self.encode(j, event);
            let open = &mut self.open[j];
            open.events = 1;
            open.acks.extend_from(acks);
            open.generation = generation;
            return j;
        }
        open.events += 1;
        if open.generation != generation {
            open.acks.extend_from(acks);
            open.generation = generation;
        }
        i
    }

    fn encode(&mut self, i: usize, event: &Event) {
        let open = &mut self.open[i];
        match (&self.framing, open.messages.as_mut()) {
            (Some(framing), Some(m)) => m.add(framing, &mut self.encoder, event, &mut open.body),
            _ => self.encoder.event(event, open.events == 0, &mut open.body),
        }
    }

    fn close(&mut self, i: usize) {
        let open = self.open.swap_remove(i);
        let mut body = open.body;
        if open.messages.is_none() {
            self.encoder.end(&mut body);
        }
        let uncompressed_bytes = body.len();
        self.typical = (self.typical * 7 + uncompressed_bytes) / 8;
        let mut messages = open.messages;
        let (body, content_encoding) = match (messages.as_mut(), self.each.as_mut()) {
            (Some(m), Some(each)) => match compress_each(each, m, &body) {
                Ok(c) => (c, self.compression.content_encoding()),
                Err(e) => {
                    tracing::error!(error = %e, "compression failed; sending the batch uncompressed");
                    (body, None)
                }
            },
            (Some(_), None) => (body, None),
            (None, _) => compressed(self.compression, body, self.compress),
        };
        self.ready.push_back(EncodedBatch {
            body: Bytes::from(body),
            events: open.events,
            uncompressed_bytes,
            partition: (!open.key.is_empty()).then_some(open.key),
            content_type: self.encoder.codec().content_type(),
            content_encoding,
            acks: open.acks,
            messages,
            confirmed: Default::default(),
        });
    }

    /// When the oldest open batch must be closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.iter().map(|o| o.deadline).min()
    }

    /// Closes the batches whose time is up.
    pub fn flush_due(&mut self, now: Instant) {
        while let Some(i) = self.open.iter().position(|o| o.deadline <= now) {
            self.close(i);
        }
    }

    /// Closes every open batch (the input has ended).
    pub fn flush_all(&mut self) {
        while !self.open.is_empty() {
            self.close(0);
        }
    }

    pub fn pop(&mut self) -> Option<EncodedBatch> {
        self.ready.pop_front()
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests;
