//! Batching and encoding, shared by every sink.
//!
//! Events are encoded as they arrive, straight into the body of the batch
//! they join, so `max_bytes` is the real size of what will be sent and no
//! event is touched twice. A batch closes when it reaches `max_events` or
//! `max_bytes`, or `timeout` after its first event; it is then compressed once
//! and handed to the sink. Sinks that write to several destinations (a file
//! path with `{type}` in it) keep one open batch per destination.

mod each;

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::{BuildError, ByteSize, Duration as ConfigDuration};
use crate::event::encode::{self, Codec, Encoder};
use crate::event::path::FieldPath;
use crate::event::{AckSet, BatchStatus, Event, EventBatch, EventId, Value, id, time};

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

// === messages ===

/// How a broker message carries an event (the CloudEvents protocol
/// bindings): the whole structured CloudEvent as the message body, or the
/// event's `data` as the body and its attributes as the message's headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Structured,
    Binary,
}

/// How a sink wants its events framed when it publishes each on its own.
#[derive(Clone, Debug)]
pub struct Framing {
    pub mode: Mode,
    /// A field whose text becomes each message's key.
    pub key: Option<FieldPath>,
}

/// The framing of a batch's messages. Values are concatenated in the body;
/// keys and attributes share one text buffer.
#[derive(Debug, Default)]
pub struct Messages {
    items: Vec<Item>,
    attrs: Vec<Attr>,
    text: String,
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    value_end: u32,
    key: Option<(u32, u32)>,
    attrs_end: u32,
}

/// An attribute: name and value as ranges of the text buffer.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    name: (u32, u32),
    value: (u32, u32),
}

/// One event as a message.
pub struct Message<'a> {
    pub value: &'a [u8],
    pub key: Option<&'a str>,
    attrs: &'a [Attr],
    text: &'a str,
}

impl<'a> Message<'a> {
    /// Binary mode: the CloudEvents attributes by their names (`id`,
    /// `source`, `specversion`, `type`, `time`, `subject`, `datacontenttype`,
    /// extensions), as text. Each sink adds its binding's prefix.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let text = self.text;
        self.attrs.iter().map(move |a| {
            (&text[a.name.0 as usize..a.name.1 as usize], &text[a.value.0 as usize..a.value.1 as usize])
        })
    }
}

/// The content type of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

impl Messages {
    fn mark(&self) -> (usize, usize, usize) {
        (self.items.len(), self.attrs.len(), self.text.len())
    }

    fn rollback(&mut self, (items, attrs, text): (usize, usize, usize)) {
        self.items.truncate(items);
        self.attrs.truncate(attrs);
        self.text.truncate(text);
    }

    fn attr(&mut self, name: &str, value: impl FnOnce(&mut String)) {
        let n0 = self.text.len() as u32;
        self.text.push_str(name);
        let n1 = self.text.len() as u32;
        value(&mut self.text);
        self.attrs.push(Attr { name: (n0, n1), value: (n1, self.text.len() as u32) });
    }

    /// Encodes one event: its value into `body`, the rest here.
    fn add(&mut self, framing: &Framing, encoder: &mut Encoder, event: &Event, body: &mut Vec<u8>) {
        match framing.mode {
            Mode::Structured => encoder.structured(event, body),
            Mode::Binary => {
                let base64_data = binary_data(event, body);
                self.binary_attributes(event, base64_data);
            }
        }
        let key = framing.key.as_ref().and_then(|path| {
            let field = path.get(event)?;
            let start = self.text.len() as u32;
            field.write_to(&mut self.text);
            Some((start, self.text.len() as u32))
        });
        self.items.push(Item { value_end: body.len() as u32, key, attrs_end: self.attrs.len() as u32 });
    }

    /// `base64_data`: the event's `data_base64` went into the body, decoded.
    fn binary_attributes(&mut self, e: &Event, base64_data: bool) {
        // The id and time are formatted as bytes; one buffer serves every event.
        let mut scratch = std::mem::take(&mut self.scratch);
        self.attr("specversion", |t| t.push_str("1.0"));
        self.attr("id", |t| match &e.id {
            EventId::Generated(n) => {
                scratch.clear();
                id::format_id(*n, &mut scratch);
                t.push_str(std::str::from_utf8(&scratch).unwrap_or_default());
            }
            EventId::Given(s) => t.push_str(s),
        });
        self.attr("source", |t| t.push_str(&e.source));
        self.attr("type", |t| t.push_str(&e.ty));
        self.attr("time", |t| {
            scratch.clear();
            time::format_rfc3339(e.time, &mut scratch);
            t.push_str(std::str::from_utf8(&scratch).unwrap_or_default());
        });
        self.scratch = scratch;
        if let Some(subject) = &e.subject {
            self.attr("subject", |t| t.push_str(subject));
        }
        self.attr("host", |t| t.push_str(&e.host));
        if e.attrs.get("datacontenttype").is_none() && !matches!(e.data, Value::Null) {
            self.attr("datacontenttype", |t| t.push_str("application/json"));
        }
        for (k, v) in e.attrs.iter() {
            if base64_data && k.as_str() == "data_base64" {
                continue;
            }
            self.attr(k, |t| match v {
                Value::Str(s) => t.push_str(s),
                other => t.push_str(&serde_json::to_string(other).unwrap_or_default()),
            });
        }
    }
}

/// Writes a binary-mode message's body: the event's data as its
/// `datacontenttype` says, so JSON data as JSON, text as the text itself,
/// and `data_base64` as the bytes it stands for. Returns whether the body
/// holds `data_base64`'s bytes.
fn binary_data(event: &Event, body: &mut Vec<u8>) -> bool {
    let json = match event.attrs.get("datacontenttype") {
        Some(Value::Str(ct)) => {
            let ct = ct.split(';').next().unwrap_or_default().trim();
            ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
        }
        _ => true,
    };
    match (&event.data, event.attrs.get("data_base64")) {
        (Value::Null, Some(Value::Str(b64))) => {
            use base64::Engine as _;
            let before = body.len();
            let ok = base64::engine::general_purpose::STANDARD.decode_vec(b64.as_bytes(), body).is_ok();
            if !ok {
                // Not base64 after all: it stays an attribute.
                body.truncate(before);
            }
            ok
        }
        (Value::Null, _) => false,
        (Value::Str(text), _) if !json => {
            body.extend_from_slice(text.as_bytes());
            false
        }
        (data, _) => {
            encode::write_value(body, data);
            false
        }
    }
}

/// Compresses each message of a batch on its own; the messages' ends move
/// to where they lie in the new body.
fn compress_each(each: &mut each::EachCompressor, m: &mut Messages, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    let mut ends = Vec::with_capacity(m.items.len());
    let mut start = 0usize;
    for item in &m.items {
        let end = item.value_end as usize;
        each.compress(&body[start..end], &mut out)?;
        start = end;
        ends.push(out.len() as u32);
    }
    // Only now: a failure above leaves the messages as they were, so that
    // the batch can go out uncompressed.
    for (item, end) in m.items.iter_mut().zip(ends) {
        item.value_end = end;
    }
    Ok(out)
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
mod tests {
    use std::collections::BTreeMap;

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
    fn messages_carry_values_keys_and_attributes_and_split_whole() {
        let framing = Framing { mode: Mode::Binary, key: Some(FieldPath::parse("data.n").unwrap()) };
        let mut b =
            Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, Compression::Zstd).with_messages(framing);
        b.push(batch(0..3).0, None);
        b.flush_all();
        let out = b.pop().unwrap();
        assert_eq!(out.content_encoding, Some("zstd"), "each message compressed on its own");
        let msgs: Vec<_> = out.messages().collect();
        for (n, m) in msgs.iter().enumerate() {
            assert_eq!(zstd::decode_all(m.value).unwrap(), format!("{{\"n\":{n}}}").as_bytes());
        }
        let framing = Framing { mode: Mode::Binary, key: Some(FieldPath::parse("data.n").unwrap()) };
        let mut b =
            Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, Compression::None).with_messages(framing);
        b.push(batch(0..3).0, None);
        b.flush_all();
        let out = b.pop().unwrap();
        assert_eq!(out.content_encoding, None);
        let msgs: Vec<_> = out.messages().collect();
        assert_eq!(msgs.len(), 3);
        for (n, m) in msgs.iter().enumerate() {
            assert_eq!(m.value, format!("{{\"n\":{n}}}").as_bytes());
            assert_eq!(m.key, Some(n.to_string().as_str()));
            let attrs: BTreeMap<&str, &str> = m.attributes().collect();
            assert_eq!(attrs["specversion"], "1.0");
            assert_eq!(attrs["type"], if n % 2 == 0 { "even" } else { "odd" });
            assert_eq!(attrs["datacontenttype"], "application/json");
            assert_eq!(attrs["time"], "1970-01-01T00:00:00.000000Z");
            assert_eq!(attrs["id"].len(), 36);
        }
        // Structured: each value is the whole event; a batch that would pass
        // max_bytes closes without the event, and no message is cut.
        let mut one = Vec::new();
        Encoder::new(Codec::Ndjson).structured(&event(1), &mut one);
        let limits = BatchLimits { max_bytes: one.len() * 2 + one.len() / 2, ..BatchLimits::DEFAULT };
        let framing = Framing { mode: Mode::Structured, key: None };
        let mut b = Batcher::new(limits, Codec::Ndjson, Compression::None).with_messages(framing);
        b.push(batch(0..5).0, None);
        b.flush_all();
        let mut seen = Vec::new();
        while let Some(out) = b.pop() {
            assert!(out.events <= 2);
            for m in out.messages() {
                let v: serde_json::Value = serde_json::from_slice(m.value).unwrap();
                assert_eq!(m.attributes().count(), 0);
                seen.push(v["data"]["n"].as_i64().unwrap());
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
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
    fn a_failed_compression_sends_the_events_uncompressed() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut b = Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, c);
            b.compress = |_, _| Err(std::io::Error::other("no memory for the compressor"));
            b.push(batch(0..10).0, None);
            b.flush_all();
            let out = b.pop().unwrap();
            assert_eq!(out.content_encoding, None);
            assert_eq!((out.events, lines(&out)), (10, 10));
            assert_eq!(out.body.len(), out.uncompressed_bytes);
        }
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
