//! Transforms per event, on one core: `cargo bench --bench transforms`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hostwatch::config::yaml;
use hostwatch::event::{AckSet, Event, EventBatch, EventId, Map, Str, Value};
use hostwatch::expr::Expr;
use hostwatch::pipeline::metrics::ComponentMetrics;
use hostwatch::transforms::TransformConfig;
use hostwatch::transforms::common::Outputs;
use std::sync::Arc;

fn line_event(message: String, data: Option<Value>) -> Event {
    let mut map = Map::with_capacity(3);
    map.push(Str::from_static("message"), Value::from(message));
    map.push(Str::from_static("file"), Value::from("/var/log/nginx/access.log"));
    map.push(Str::from_static("offset"), Value::Int(0));
    let data = match data {
        Some(Value::Object(m)) => {
            let mut map = map;
            for (k, v) in m {
                map.push(k, v);
            }
            Value::Object(map)
        }
        _ => Value::Object(map),
    };
    Event {
        id: EventId::Generated(1),
        time: 0,
        ty: Str::from_static("log.line"),
        source: Str::from_static("hostwatch://web-01/nginx"),
        subject: Some(Str::from_static("/var/log/nginx/access.log")),
        host: Str::from_static("web-01"),
        attrs: Map::new(),
        data,
    }
}

fn nginx(i: usize) -> String {
    format!(
        "10.0.{}.{} - - [27/Nov/2026:03:50:00 +0000] \"GET /api/v1/items/{i}?page=2 HTTP/1.1\" {} {} \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
        i % 200,
        i % 250,
        if i.is_multiple_of(10) { 503 } else { 200 },
        512 + i % 4096
    )
}

fn run(c: &mut Criterion, name: &str, ty: &str, settings: &str, events: Vec<Event>) {
    let node = yaml::parse(settings, &|_| None).unwrap();
    let config = TransformConfig::from_node(ty, &node).unwrap().unwrap();
    let mut t = config.build().map_err(|e| e.message).unwrap();
    let metrics = Arc::new(ComponentMetrics::new("t", "transform", ty));
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_batched(
            || EventBatch::new(events.clone(), AckSet::new()),
            |batch| {
                let mut out = Outputs::new(metrics.clone());
                t.process_for_bench(batch, &mut out);
                out
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn transforms(c: &mut Criterion) {
    let access: Vec<Event> = (0..1000).map(|i| line_event(nginx(i), None)).collect();
    run(c, "parse_nginx_combined", "parse", "format: nginx_combined", access.clone());
    let json: Vec<Event> = (0..1000)
        .map(|i| {
            line_event(
                format!(r#"{{"ts":"2026-11-27T03:50:00Z","level":"info","client":"10.0.{}.{}","path":"/api/v1/items/{i}","status":200,"ms":{}}}"#, i % 200, i % 250, i % 97),
                None,
            )
        })
        .collect();
    run(c, "parse_json", "parse", "format: json", json);
    let parsed: Vec<Event> = (0..1000)
        .map(|i| {
            let data: Value = serde_json::from_str(&format!(
                r#"{{"client":"10.0.{}.{}","path":"/api/v1/items/{i}","status":{}}}"#,
                i % 200,
                i % 250,
                if i % 10 == 0 { 503 } else { 200 }
            ))
            .unwrap();
            line_event(String::new(), Some(data))
        })
        .collect();
    run(
        c,
        "filter_two_clauses",
        "filter",
        r#"condition: 'data.status >= 500 && data.path != "/health"'"#,
        parsed.clone(),
    );
    run(c, "sample_by_key", "sample", "rate: 0.1\nkey: data.client", parsed.clone());

    // The same condition: compiled here, and the `cel` crate's interpreter
    // (the reference) with a prebuilt context.
    let expr = Expr::compile(r#"data.status >= 500 && data.path != "/health""#).unwrap();
    let mut group = c.benchmark_group("condition");
    group.throughput(Throughput::Elements(parsed.len() as u64));
    group.bench_function("compiled", |b| {
        b.iter(|| parsed.iter().filter(|e| expr.test(e) == Ok(true)).count())
    });
    let program = cel::Program::compile(r#"data.status >= 500 && data.path != "/health""#).unwrap();
    let contexts: Vec<cel::Context> = parsed
        .iter()
        .map(|e| {
            let mut ctx = cel::Context::default();
            let json = serde_json::to_value(&e.data).unwrap();
            ctx.add_variable("data", json).unwrap();
            ctx
        })
        .collect();
    group.bench_function("cel_interpreter", |b| {
        b.iter(|| contexts.iter().filter(|ctx| program.execute(ctx) == Ok(cel::Value::Bool(true))).count())
    });
    group.finish();
}

criterion_group!(benches, transforms);
criterion_main!(benches);
