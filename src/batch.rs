//! Batching and encoding, shared by every sink.
//!
//! Events are encoded as they arrive, straight into the body of the batch
//! they join, so `max_bytes` is the real size of what will be sent and no
//! event is touched twice. A batch closes when it reaches `max_events` or
//! `max_bytes`, or `timeout` after its first event; it is then compressed once
//! and handed to the sink. Sinks that write to several destinations (a file
//! path with `{type}` in it) keep one open batch per destination.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::{BuildError, ByteSize, Duration as ConfigDuration};
use crate::event::encode::{Codec, Encoder};
use crate::event::{AckSet, BatchStatus, Event, EventBatch};

/// `batch:` on a sink. Unset values take the sink type's defaults.
#[derive(Clone, Debug, Default, Deserialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
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

    fn compress(self, body: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(body),
            Compression::Gzip => {
                let out = Vec::with_capacity(body.len() / 4);
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                gz.write_all(&body)?;
                gz.finish()
            }
            Compression::Zstd => zstd::bulk::compress(&body, 3),
        }
    }
}

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
        }
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
            // Most consecutive events go where the previous one went.
            let i = match slot {
                Some(i) if self.open[i].key == self.key => i,
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
        self.encoder.begin(&mut body);
        self.open.push(Open {
            key: self.key.clone(),
            body,
            events: 0,
            acks: AckSet::new(),
            deadline: Instant::now() + self.limits.timeout,
            generation: 0,
        });
        self.open.len() - 1
    }

    /// Encodes an event into open batch `i`; returns the index of the batch
    /// that holds it (another one if it did not fit).
    fn add(&mut self, i: usize, event: &Event, acks: &AckSet, generation: u64) -> usize {
        let open = &mut self.open[i];
        let before = open.body.len();
        self.encoder.event(event, open.events == 0, &mut open.body);
        if open.body.len() > self.limits.max_bytes && open.events > 0 {
            // This event does not fit: send the batch without it and start
            // the next one with it.
            open.body.truncate(before);
            self.close(i);
            let j = self.find_or_open();
            let open = &mut self.open[j];
            self.encoder.event(event, true, &mut open.body);
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

    fn close(&mut self, i: usize) {
        let open = self.open.swap_remove(i);
        let mut body = open.body;
        self.encoder.end(&mut body);
        let uncompressed_bytes = body.len();
        self.typical = (self.typical * 7 + uncompressed_bytes) / 8;
        let (body, content_encoding) = match self.compression.compress(body) {
            Ok(b) => (b, self.compression.content_encoding()),
            Err(e) => {
                // Cannot happen when writing to memory; if it ever does, the
                // events still go out, uncompressed.
                tracing::error!(error = %e, "compression failed; sending uncompressed");
                let mut body = Vec::new();
                self.encoder.begin(&mut body);
                (body, None)
            }
        };
        self.ready.push_back(EncodedBatch {
            body: Bytes::from(body),
            events: open.events,
            uncompressed_bytes,
            partition: (!open.key.is_empty()).then_some(open.key),
            content_type: self.encoder.codec().content_type(),
            content_encoding,
            acks: open.acks,
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
mod tests {
    use super::*;
    use crate::event::{EventId, Map, Str, Value, ack};

    fn event(n: i64) -> Event {
        let mut data = Map::new();
        data.push(Str::from_static("n"), Value::Int(n));
        Event {
            id: EventId::Generated(n as u128),
            time: 0,
            ty: Str::from_static(if n % 2 == 0 { "even" } else { "odd" }),
            source: Str::from_static("s"),
            subject: None,
            host: Str::from_static("h"),
            attrs: Map::new(),
            data: Value::Object(data),
        }
    }

    fn batch(range: std::ops::Range<i64>) -> (EventBatch, crate::event::ack::AckReceiver) {
        let (share, rx) = ack::token();
        (EventBatch::new(range.map(event).collect(), AckSet::one(share)), rx)
    }

    fn lines(b: &EncodedBatch) -> usize {
        b.body.iter().filter(|c| **c == b'\n').count()
    }

    #[tokio::test]
    async fn splits_by_max_events_and_shares_acks() {
        let limits = BatchLimits { max_events: 3, ..BatchLimits::DEFAULT };
        let mut b = Batcher::new(limits, Codec::Ndjson, Compression::None);
        let (input, mut rx) = batch(0..7);
        b.push(input, None);
        let first = b.pop().unwrap();
        let second = b.pop().unwrap();
        assert!(b.pop().is_none());
        assert_eq!((first.events, lines(&first)), (3, 3));
        assert_eq!(second.events, 3);
        b.flush_all();
        let third = b.pop().unwrap();
        assert_eq!(third.events, 1);
        first.acks.settle(BatchStatus::Delivered);
        second.acks.settle(BatchStatus::Delivered);
        assert!(futures_util::poll!(&mut rx).is_pending());
        third.acks.settle(BatchStatus::Delivered);
        assert_eq!(rx.await, BatchStatus::Delivered);
    }

    #[test]
    fn max_bytes_is_never_exceeded_by_more_than_one_event() {
        let mut one = Vec::new();
        Encoder::new(Codec::Json).event(&event(1), false, &mut one);
        let limits = BatchLimits { max_bytes: one.len() * 2 + 2, ..BatchLimits::DEFAULT };
        let mut b = Batcher::new(limits, Codec::Json, Compression::None);
        b.push(batch(0..5).0, None);
        b.flush_all();
        let mut total = 0;
        while let Some(out) = b.pop() {
            let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
            assert_eq!(v.as_array().unwrap().len(), out.events);
            assert!(out.body.len() <= limits.max_bytes);
            total += out.events;
        }
        assert_eq!(total, 5);
    }

    #[test]
    fn partitions_keep_their_own_batches() {
        let mut b = Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, Compression::None);
        let mut by_type = |e: &Event, out: &mut String| out.push_str(&e.ty);
        b.push(batch(0..10).0, Some(&mut by_type));
        b.flush_all();
        let mut got: Vec<(String, usize)> =
            std::iter::from_fn(|| b.pop()).map(|o| (o.partition.unwrap(), o.events)).collect();
        got.sort();
        assert_eq!(got, vec![("even".to_string(), 5), ("odd".to_string(), 5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_closes_a_batch() {
        let limits = BatchLimits { timeout: Duration::from_millis(200), ..BatchLimits::DEFAULT };
        let mut b = Batcher::new(limits, Codec::Ndjson, Compression::None);
        b.push(batch(0..2).0, None);
        let deadline = b.next_deadline().unwrap();
        b.flush_due(Instant::now());
        assert!(b.pop().is_none());
        tokio::time::sleep_until(deadline).await;
        b.flush_due(Instant::now());
        assert_eq!(b.pop().unwrap().events, 2);
    }

    #[test]
    fn gzip_and_zstd_round_trip() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut b = Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, c);
            b.push(batch(0..100).0, None);
            b.flush_all();
            let out = b.pop().unwrap();
            let plain = match c {
                Compression::Gzip => {
                    let mut s = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out.body[..]), &mut s)
                        .unwrap();
                    s
                }
                _ => zstd::decode_all(&out.body[..]).unwrap(),
            };
            assert_eq!(plain.len(), out.uncompressed_bytes);
            assert_eq!(plain.iter().filter(|c| **c == b'\n').count(), 100);
        }
    }
}
