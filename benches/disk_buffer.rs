//! The disk buffer end to end, per event: batches of 1000 log-line events
//! go in, a sink that takes and delivers each at once drains it.
//!
//! `cargo bench --bench disk_buffer`. `pass`: a file source's batches
//! (`Replay::Reread`), which a sink that keeps up gets from memory without
//! the disk; `write`: a source that cannot wait (`Replay::None`), each
//! batch encoded, written and synced (the sink gets it from memory too);
//! `small_batches`: a file source's one-line batches, the pass-through
//! bookkeeping per batch. Measured from the first batch sent to the last
//! one taken by the sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hostwatch::buffer::disk;
use hostwatch::event::id::IdGen;
use hostwatch::event::{AckSet, BatchStatus, Event, EventBatch, EventId, Map, Replay, Str, Value};
use hostwatch::pipeline::channel::{self, Limits, WhenFull};
use hostwatch::pipeline::metrics::ComponentMetrics;

fn log_events(n: usize) -> Vec<Event> {
    let mut ids = IdGen::new();
    ids.set_time(1_795_751_400_123);
    let file = Str::from_static("/var/log/nginx/access.log");
    (0..n)
        .map(|i| {
            let line = format!(
                "10.0.{}.{} - - [27/Nov/2026:03:50:00 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"curl/8.5.0\"",
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
                time: 1_795_751_400_123_456 + i as i64,
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

/// Sends `iters` copies of `template` (sharing its events) through a disk
/// buffer opened on a fresh directory; the time until the sink took the
/// last one.
async fn run(template: &EventBatch, iters: u64) -> Duration {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = disk::Settings {
        dir: dir.path().join("buffer"),
        max_size: 1 << 30,
        when_full: WhenFull::Block,
        sync_interval: Duration::from_millis(100),
        segment_size: 64 << 20,
    };
    let metrics = Arc::new(ComponentMetrics::new("bench", "sink", "blackhole"));
    let limits = Limits { max_events: 2048, max_bytes: 8 << 20, when_full: WhenFull::Block };
    let (tx, rx) = channel::channel(limits, None);
    let (mut driver, tasks) = disk::start(settings, rx, metrics).await.expect("the buffer opens");
    let sink = tokio::spawn(async move {
        while let Some(batch) = driver.recv().await {
            batch.acks.settle(BatchStatus::Delivered);
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        tx.send(template.share_events()).await.expect("the buffer takes the batch");
    }
    drop(tx);
    sink.await.expect("the sink runs to the end");
    let elapsed = start.elapsed();
    tasks.finish().await;
    elapsed
}

fn disk_buffer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut group = c.benchmark_group("disk_buffer");
    for (name, events, replay) in
        [("pass", 1000, Replay::Reread), ("write", 1000, Replay::None), ("small_batches", 1, Replay::Reread)]
    {
        let mut template = EventBatch::new(log_events(events), AckSet::new());
        template.replay = replay;
        group.throughput(Throughput::Elements(events as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &template, |b, template| {
            b.iter_custom(|iters| rt.block_on(run(template, iters)))
        });
    }
    group.finish();
}

criterion_group!(benches, disk_buffer);
criterion_main!(benches);
