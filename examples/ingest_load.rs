//! A load generator for the `ingest` source: publishes N sequence-numbered
//! events over C connections, K per request (NDJSON), sends again what is
//! answered 503, and reports the rate. With `--sinkhole URL` (the `/stats`
//! of `../shared/tools/benchkit`'s sinkhole behind an http sink) it waits
//! until every event has arrived there and reports the end-to-end rate.
//!
//! cargo run --release --example ingest_load -- \
//!     --url http://127.0.0.1:8687/events --events 1000000 --per-request 1000 \
//!     --connections 4 --sinkhole http://127.0.0.1:9900/stats

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let mut url = "http://127.0.0.1:8687/events".to_string();
    let mut events: u64 = 1_000_000;
    let mut per_request: u64 = 1000;
    let mut connections: u64 = 4;
    let mut sinkhole: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = value(),
            "--events" => events = value().parse().expect("--events N"),
            "--per-request" => per_request = value().parse().expect("--per-request K"),
            "--connections" => connections = value().parse().expect("--connections C"),
            "--sinkhole" => sinkhole = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    hostwatch::util::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let per_connection = events / connections;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let first = c * per_connection;
            let mut busy = 0u64;
            let mut seq = first;
            let mut body = String::with_capacity(per_request as usize * 120);
            while seq < first + per_connection {
                let n = per_request.min(first + per_connection - seq);
                body.clear();
                for s in seq..seq + n {
                    body.push_str(&format!(
                        "{{\"type\":\"bench.event\",\"data\":{{\"message\":\"GET /api/v1/items 200 seq={s}\",\"n\":{s}}}}}\n"
                    ));
                }
                loop {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) if r.status() == 503 => busy += 1,
                        Ok(r) => panic!("ingest answered {}", r.status()),
                        Err(e) => panic!("POST failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seq += n;
            }
            busy
        }));
    }
    let mut busy = 0;
    for t in tasks {
        busy += t.await.expect("publisher");
    }
    let accepted = started.elapsed();
    let total = per_connection * connections;
    println!(
        "accepted {total} events in {:.3}s: {:.0} events/s ({busy} requests answered 503 and sent again)",
        accepted.as_secs_f64(),
        total as f64 / accepted.as_secs_f64()
    );
    if let Some(stats) = sinkhole {
        loop {
            let s: serde_json::Value =
                client.get(&stats).send().await.expect("stats").json().await.expect("json");
            if s["unique"].as_u64().unwrap_or(0) >= total {
                let secs = s["last_unix"].as_f64().unwrap_or(0.0)
                    - (std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64()
                        - started.elapsed().as_secs_f64());
                println!(
                    "delivered {} events to the sink in {secs:.3}s: {:.0} events/s end to end (missing {}, duplicates {})",
                    s["unique"],
                    total as f64 / secs,
                    s["missing"],
                    s["duplicates"]
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
