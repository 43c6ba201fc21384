//! Transforms with the real binary: an nginx access log parsed, filtered
//! and sampled, and the set of events that arrives is exactly the one the
//! rules predict; routing to named outputs.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Agent, Mode, Receiver};

/// FNV-1a (64 bits) then the MurmurHash3 finalizer, as `sample` documents it.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

struct Line {
    seq: u64,
    client: String,
    path: &'static str,
    status: u16,
}

fn access_line(l: &Line) -> String {
    format!(
        "{} - - [27/Nov/2026:03:50:{:02} +0000] \"GET {}?seq={} HTTP/1.1\" {} {} \"-\" \"curl/8.5.0\"\n",
        l.client,
        l.seq % 60,
        l.path,
        l.seq,
        l.status,
        100 + l.seq
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_filter_sample_deliver_exactly_what_the_rules_predict() {
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let paths = ["/api/items", "/health", "/api/orders", "/login"];
    let lines: Vec<Line> = (0..3_000u64)
        .map(|seq| Line {
            seq,
            client: format!("10.1.{}.{}", seq % 7, seq % 31),
            path: paths[(seq % 4) as usize],
            status: match seq % 13 {
                0 => 503,
                1 => 500,
                2 => 404,
                _ => 200,
            },
        })
        .collect();
    // A malformed line among them: counted and dropped (`on_error: drop`).
    let mut text: String = lines.iter().map(access_line).collect();
    text.push_str("this is not an access log line\n");
    std::fs::write(dir.path().join("access.log"), text).unwrap();

    let config = format!(
        r#"
data_dir: {{data_dir}}
api: {{address: "127.0.0.1:0"}}
sources:
  access:
    type: file
    include: ["{dir}/*.log"]
transforms:
  parsed:
    type: parse
    inputs: [access]
    format: nginx_combined
    time_field: time
    on_error: drop
  no_health:
    type: filter
    inputs: [parsed]
    condition: 'data.path.split("?")[0] != "/health"'
  sampled:
    type: sample
    inputs: [no_health]
    rate: 0.25
    key: data.client
    keep_if: 'data.status >= 500'
sinks:
  out:
    type: http
    inputs: [sampled]
    url: {url}
    batch: {{timeout: 100ms}}
"#,
        dir = dir.path().display(),
        url = receiver.url()
    );
    // `split` is not in the language: the broken config is refused first.
    let (code, stderr) = common::validate(&config.replace("{data_dir}", "/tmp"));
    assert_eq!(code, 78);
    assert!(
        stderr.contains("transforms.no_health") && stderr.contains("unknown function `split`"),
        "{stderr}"
    );
    // A syntax error names the component, the YAML line and the position
    // in the expression.
    let (code, stderr) = common::validate(
        &config.replace("{data_dir}", "/tmp").replace("'data.status >= 500'", "'data.status >= && true'"),
    );
    assert_eq!(code, 78);
    assert!(
        stderr.contains("agent.yaml:24:14: error: transforms.sampled")
            && stderr.contains("line 1, column 16 of the expression: Syntax error"),
        "{stderr}"
    );
    let config =
        config.replace(r#"data.path.split("?")[0] != "/health""#, r#"!data.path.startsWith("/health")"#);

    let threshold = (0.25 * u64::MAX as f64) as u64;
    let expected: HashSet<u64> = lines
        .iter()
        .filter(|l| l.path != "/health")
        .filter(|l| l.status >= 500 || stable_hash(l.client.as_bytes()) < threshold)
        .map(|l| l.seq)
        .collect();
    assert!(expected.len() > 300 && expected.len() < 2_000, "{} expected", expected.len());

    let mut agent = Agent::start(&config);
    let api = agent.ready();
    receiver.wait_for_unique(expected.len() as u64, Duration::from_secs(30)).await;
    // Dropped events acknowledge their source: the checkpoint reaches the
    // end of the file, past the /health lines and the malformed last line.
    let file_len = std::fs::metadata(dir.path().join("access.log")).unwrap().len();
    let checkpoint = agent.data_dir().join("checkpoints/access.json");
    let offset = || {
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&checkpoint).unwrap_or_default()).unwrap_or_default();
        saved["files"][0]["offset"].as_u64().unwrap_or(0)
    };
    common::wait_until("the checkpoint moved past every dropped line", Duration::from_secs(30), async || {
        offset() == file_len
    })
    .await;
    let metrics = common::metrics(api).await;
    // Stopped, the agent has sent all it will: any repeat has arrived.
    agent.stop();
    let events = receiver.events();
    let got: HashSet<u64> = events
        .iter()
        .map(|e| e["data"]["message"].as_str().unwrap())
        .map(|m| m.split("seq=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got.len(), events.len(), "no event twice");
    assert_eq!(got, expected);
    for e in &events {
        let status = e["data"]["status"].as_i64().unwrap();
        assert!(e["data"]["method"] == "GET" && e["data"]["user_agent"] == "curl/8.5.0");
        // Sampled events carry the rate; the ones keep_if saved do not.
        if status >= 500 {
            assert!(e.get("sampledrate").is_none(), "{e}");
        } else {
            assert_eq!(e["sampledrate"], 4, "{e}");
        }
        // The event's time is the log line's.
        assert!(e["time"].as_str().unwrap().starts_with("2026-11-27T03:50:"), "{e}");
    }
    assert!(metrics.contains(r#"component_id="parsed",component_kind="transform",component_type="parse",reason="parse_failed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"hostwatch_events_dropped_total{component_id="no_health",component_kind="transform",component_type="filter",reason="filtered"} 750"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_remap_throttle_and_dedupe_with_named_outputs() {
    let config = r#"
data_dir: {data_dir}
sources:
  gen:
    type: generator
    rate: 0
    count: 300
transforms:
  shaped:
    type: remap
    inputs: [gen]
    set:
      data.level: 'data.seq % 10 == 0 ? "error" : "info"'
      data.bucket: 'data.seq % 3'
  router:
    type: route
    inputs: [shaped]
    routes:
      errors: 'data.level == "error"'
      thirds: 'data.bucket == 0'
  once:
    type: dedupe
    inputs: [router.thirds]
    fields: [data.bucket]
  calm:
    type: throttle
    inputs: [router._unmatched]
    limit: 50
    window: 1h
sinks:
  errors:
    type: file
    inputs: [router.errors]
    path: '{data_dir}/errors.ndjson'
  thirds:
    type: file
    inputs: [once]
    path: '{data_dir}/thirds.ndjson'
  rest:
    type: file
    inputs: [calm]
    path: '{data_dir}/rest.ndjson'
"#;
    let mut agent = Agent::start(config);
    assert!(agent.wait_exit(Duration::from_secs(30)).success(), "{}", agent.logs());
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(agent.data_dir().join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let errors = read("errors.ndjson");
    assert_eq!(errors.len(), 30);
    assert!(errors.iter().all(|e| e["data"]["level"] == "error"));
    // Events with seq % 3 == 0: one kept by dedupe on `bucket`.
    assert_eq!(read("thirds.ndjson").len(), 1);
    // Neither error nor third: 300 - 30 - 100 + 10 (both) = 180, throttled to 50.
    assert_eq!(read("rest.ndjson").len(), 50);

    // A route read without naming an output is refused.
    let (code, stderr) = common::validate(&config.replace("inputs: [router.errors]", "inputs: [router]"));
    assert_eq!(code, 78);
    assert!(
        stderr.contains(
            "`router` has several outputs; name one: `router.errors`, `router.thirds`, `router._unmatched`"
        ),
        "{stderr}"
    );
    let (code, stderr) =
        common::validate(&config.replace("inputs: [router.errors]", "inputs: [router.oops]"));
    assert_eq!(code, 78);
    assert!(stderr.contains("`router` has no output `oops`"), "{stderr}");
}

/// nginx logs the referrer and the user agent alike (`\x22` for a quote,
/// `-` for a header not sent); `parse` reads them alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_referrer_and_user_agent_are_read_alike() {
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"::1 - - [27/Nov/2026:03:50:00 +0000] "GET /a HTTP/1.1" 200 5 "http://x/?q=\x22a\x22" "-""#,
        r#"::1 - - [27/Nov/2026:03:50:01 +0000] "GET /b HTTP/1.1" 200 5 "-" "ua \x22b\x22""#,
    ];
    std::fs::write(dir.path().join("access.log"), lines.join("\n") + "\n").unwrap();
    let mut agent = Agent::start(&format!(
        "data_dir: {{data_dir}}\napi: {{address: \"127.0.0.1:0\"}}\nsources:\n  access:\n    type: file\n    include: [\"{}/*.log\"]\ntransforms:\n  parsed:\n    type: parse\n    inputs: [access]\n    format: nginx_combined\nsinks:\n  out:\n    type: http\n    inputs: [parsed]\n    url: {}\n    batch: {{timeout: 50ms}}\n",
        dir.path().display(),
        receiver.url()
    ));
    agent.ready();
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let mut events = receiver.events();
    events.sort_by_key(|e| e["data"]["path"].as_str().unwrap_or_default().to_string());
    let fields = |e: &serde_json::Value| (e["data"]["referrer"].clone(), e["data"]["user_agent"].clone());
    assert_eq!(fields(&events[0]), ("http://x/?q=\"a\"".into(), serde_json::Value::Null), "{events:?}");
    assert_eq!(fields(&events[1]), (serde_json::Value::Null, "ua \"b\"".into()), "{events:?}");
}
