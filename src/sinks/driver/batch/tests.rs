//! Tests of batching: limits, deadlines, destinations, compression and acknowledgements.

use std::collections::BTreeMap;

use super::*;
use crate::event::path::FieldPath;
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
    let mut b = Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, Compression::Zstd).with_messages(framing);
    b.push(batch(0..3).0, None);
    b.flush_all();
    let out = b.pop().unwrap();
    assert_eq!(out.content_encoding, Some("zstd"), "each message compressed on its own");
    let msgs: Vec<_> = out.messages().collect();
    for (n, m) in msgs.iter().enumerate() {
        assert_eq!(zstd::decode_all(m.value).unwrap(), format!("{{\"n\":{n}}}").as_bytes());
    }
    let framing = Framing { mode: Mode::Binary, key: Some(FieldPath::parse("data.n").unwrap()) };
    let mut b = Batcher::new(BatchLimits::DEFAULT, Codec::Ndjson, Compression::None).with_messages(framing);
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
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out.body[..]), &mut s).unwrap();
                s
            }
            _ => zstd::decode_all(&out.body[..]).unwrap(),
        };
        assert_eq!(plain.len(), out.uncompressed_bytes);
        assert_eq!(plain.iter().filter(|c| **c == b'\n').count(), 100);
    }
}
