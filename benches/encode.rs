//! Encoding plus batching per event: what every sink does to every event.
//!
//! `cargo bench --bench encode`; the figure is per event (throughput counts
//! elements), for log-line-shaped events as the file source makes them.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hostwatch::event::encode::Codec;
use hostwatch::event::id::IdGen;
use hostwatch::event::{AckSet, Event, EventBatch, EventId, Map, Str, Value};
use hostwatch::sinks::driver::batch::{BatchLimits, Batcher, Compression};

fn log_events(n: usize) -> Vec<Event> {
    let mut ids = IdGen::new();
    ids.set_time(1_795_751_400_123);
    let file = Str::from_static("/var/log/nginx/access.log");
    (0..n)
        .map(|i| {
            let line = format!(
                "10.0.{}.{} - - [27/Nov/2026:03:50:00 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"curl/8.5.0\" seq={i}",
                i % 200,
                i % 250,
                512 + i % 4096
            );
            let mut data = Map::with_capacity(3);
            data.push(Str::from_static("message"), Value::from(line));
            data.push(Str::from_static("file"), Value::Str(file.clone()));
            data.push(Str::from_static("offset"), Value::Int(i as i64 * 120));
            Event {
                id: EventId::Generated(ids.next_id()),
                time: 1_795_751_400_123_456,
                ty: Str::from_static("log.line"),
                source: Str::from_static("hostwatch://web-01/nginx"),
                subject: Some(file.clone()),
                host: Str::from_static("web-01"),
                attrs: Map::new(),
                data: Value::Object(data),
            }
        })
        .collect()
}

fn encode_and_batch(c: &mut Criterion) {
    let input = log_events(1000);
    let mut group = c.benchmark_group("encode_and_batch");
    group.throughput(Throughput::Elements(input.len() as u64));
    for (name, codec, compression) in [
        ("ndjson", Codec::Ndjson, Compression::None),
        ("cloudevents_batch", Codec::CloudeventsBatch, Compression::None),
        ("ndjson_gzip", Codec::Ndjson, Compression::Gzip),
        ("ndjson_zstd", Codec::Ndjson, Compression::Zstd),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            let batch = EventBatch::new(input.clone(), AckSet::new());
            let mut batcher = Batcher::new(BatchLimits::DEFAULT, codec, compression);
            b.iter(|| {
                // A clone of a batch shares its events: this measures the batcher.
                batcher.push(batch.clone(), None);
                batcher.flush_all();
                let mut bytes = 0;
                while let Some(out) = batcher.pop() {
                    bytes += out.body.len();
                }
                bytes
            });
        });
    }
    group.finish();
}

/// The disk buffer's record format: what a disk-buffered sink adds per
/// event, once on the way to disk and once on the way back.
fn disk_record(c: &mut Criterion) {
    use hostwatch::buffer::record;
    let input = log_events(1000);
    let mut group = c.benchmark_group("disk_record");
    group.throughput(Throughput::Elements(input.len() as u64));
    let mut out = Vec::new();
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            record::encode(&input, &mut out);
            out.len()
        })
    });
    out.clear();
    record::encode(&input, &mut out);
    let payload = bytes::Bytes::copy_from_slice(&out[record::HEADER..]);
    group.bench_function("decode", |b| b.iter(|| record::decode(payload.clone()).map(|e| e.len())));
    group.finish();
}

criterion_group!(benches, encode_and_batch, escape_only, disk_record);
criterion_main!(benches);

fn escape_only(c: &mut Criterion) {
    let line = "10.0.1.2 - - [27/Nov/2026:03:50:00 +0000] \"GET /api/v1/items/123 HTTP/1.1\" 200 1234 \"-\" \"curl/8.5.0\" seq=123";
    let mut group = c.benchmark_group("write_str");
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("nginx_line", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            hostwatch::event::encode::write_str(&mut out, std::hint::black_box(line));
            out.len()
        })
    });
    group.bench_function("serde_json", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, std::hint::black_box(line)).unwrap();
            out.len()
        })
    });
    group.bench_function("memcpy", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            out.extend_from_slice(std::hint::black_box(line).as_bytes());
            out.len()
        })
    });
    group.finish();
}
