//! The `host` and `agent` sources on this machine, checked against /proc.

mod common;

use std::time::{Duration, Instant};

use common::Agent;
use serde_json::Value;

/// Starts the agent with `sources` into a file sink; returns it and a reader
/// of the events written so far.
fn start(sources: &str) -> Agent {
    let config = format!(
        "data_dir: {{data_dir}}\nsources:\n{sources}sinks:\n  out:\n    type: file\n    inputs: [{inputs}]\n    path: \"{{data_dir}}/events.ndjson\"\n    batch: {{timeout: 50ms}}\n",
        inputs = sources
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
            .map(|l| l.trim().trim_end_matches(':'))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Agent::start(&config)
}

fn events(agent: &Agent) -> Vec<Value> {
    agent.file_events("events.ndjson")
}

/// The command line of the probe processes (see [`probe_started`]).
const PROBE: &str = "sleep 4141";

/// Waits until `n` events of type `ty` were written (of other processes
/// than probes).
fn wait_for(agent: &Agent, ty: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let found: Vec<Value> =
            events(agent).into_iter().filter(|e| e["type"] == ty && e["data"]["cmdline"] != PROBE).collect();
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "{} of {n} `{ty}` events:\n{}", found.len(), agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        })
        .unwrap()
        * 1024
}

#[test]
fn host_metrics_agree_with_proc_and_rates_follow_traffic() {
    let mut agent = start("  machine:\n    type: host\n    interval: 1s\n");
    // Known traffic over loopback during the second interval.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        std::io::copy(&mut s, &mut std::io::sink()).unwrap()
    });
    wait_for(&agent, "host.metrics", 1, Duration::from_secs(10));
    {
        use std::io::Write as _;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..64 {
            s.write_all(&chunk).unwrap();
        }
    }
    assert_eq!(reader.join().unwrap(), 64 << 20);
    let all = wait_for(&agent, "host.metrics", 3, Duration::from_secs(10));
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));

    let m = &all.last().unwrap()["data"];
    // Memory: the total is the kernel's; used moves a little between reads.
    assert_eq!(m["memory"]["total"].as_u64().unwrap(), meminfo("MemTotal"));
    let used = meminfo("MemTotal") - meminfo("MemAvailable");
    let reported = m["memory"]["used"].as_u64().unwrap();
    assert!(reported.abs_diff(used) < used / 5 + (256 << 20), "used {reported} vs {used}");
    // Load within a unit of /proc/loadavg.
    let load: f64 =
        std::fs::read_to_string("/proc/loadavg").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((m["load"]["1m"].as_f64().unwrap() - load).abs() < 1.0);
    // The root filesystem, as statvfs (df) has it.
    let out = std::process::Command::new("df").args(["-B1", "--output=size,used", "/"]).output().unwrap();
    let df: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let root = &m["filesystem"]["/"];
    assert_eq!(root["size"].as_u64().unwrap(), df[0], "{root}");
    assert!(root["used"].as_u64().unwrap().abs_diff(df[1]) < df[0] / 100, "{root} vs {df:?}");
    let pct = root["used_percent"].as_f64().unwrap();
    assert!(pct > 0.0 && pct < 100.0);
    // CPU percentages add up to 100.
    let cpu = &m["cpu"]["total"];
    let sum: f64 =
        ["user", "system", "iowait", "steal", "idle"].iter().map(|k| cpu[k].as_f64().unwrap()).sum();
    assert!((sum - 100.0).abs() < 1.0, "{cpu}");
    assert_eq!(
        m["cpu"]["cores"].as_array().unwrap().len(),
        std::thread::available_parallelism().unwrap().get()
    );
    // Rates: never negative; 64 MiB over loopback shows in one interval.
    let lo_max = all
        .iter()
        .map(|e| e["data"]["network"]["lo"]["rx_bytes_per_second"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(lo_max > 8e6 && lo_max < 1e11, "lo rx {lo_max} B/s after 64 MiB");
    for e in &all {
        for group in ["network", "disk"] {
            for (_, dev) in e["data"][group].as_object().unwrap() {
                for (k, v) in dev.as_object().unwrap() {
                    assert!(v.as_f64().unwrap() >= 0.0, "{group} {k} {v}");
                }
            }
        }
    }
    let p = &m["processes"];
    assert!(
        p["total"].as_u64().unwrap() > 10 && p["total"].as_u64().unwrap() >= p["zombie"].as_u64().unwrap()
    );
    assert!(m["uptime_seconds"].as_u64().unwrap() > 0);
}

#[test]
fn thresholds_cross_hold_and_clear() {
    let processes = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_str().unwrap().bytes().all(|b| b.is_ascii_digit()))
            .count()
    };
    let level = processes() + 100;
    let mut agent = start(&format!(
        "  machine:\n    type: host\n    interval: 500ms\n    collect: [memory, processes]\n    thresholds:\n      - {{name: always, metric: memory.used_percent, above: 0}}\n      - {{name: later, metric: memory.used_percent, above: 0, for: 2s}}\n      - {{name: crowd, metric: processes.total, above: {level}, clear_below: {level}}}\n"
    ));
    let first = wait_for(&agent, "host.metrics", 1, Duration::from_secs(10));
    let crossed = wait_for(&agent, "host.threshold.crossed", 1, Duration::from_secs(10));
    assert_eq!(crossed[0]["data"]["name"], "always");
    assert_eq!(crossed[0]["time"], first[0]["time"], "crossed on the first sample");
    // `for: 2s` waits four more samples.
    let crossed = wait_for(&agent, "host.threshold.crossed", 2, Duration::from_secs(10));
    assert_eq!(crossed[1]["data"]["name"], "later");
    let metrics = wait_for(&agent, "host.metrics", 1, Duration::from_secs(1));
    let at = metrics.iter().position(|e| e["time"] == crossed[1]["time"]).unwrap();
    assert!(at >= 4, "crossed at sample {at}");
    // 150 processes more cross `crowd`; when they are gone it clears.
    let mut sleepers: Vec<_> =
        (0..150).map(|_| std::process::Command::new("sleep").arg("60").spawn().unwrap()).collect();
    let crossed = wait_for(&agent, "host.threshold.crossed", 3, Duration::from_secs(10));
    assert_eq!(crossed[2]["data"]["name"], "crowd");
    assert!(crossed[2]["data"]["value"].as_f64().unwrap() > level as f64);
    for s in &mut sleepers {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    let cleared = wait_for(&agent, "host.threshold.cleared", 1, Duration::from_secs(10));
    assert_eq!(cleared[0]["data"]["name"], "crowd");
    // The others never clear: their condition holds.
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    assert_eq!(events(&agent).iter().filter(|e| e["type"] == "host.threshold.cleared").count(), 1);
    // Thresholds are checked when the config loads.
    let (code, stderr) = common::validate(
        "sources:\n  m:\n    type: host\n    thresholds:\n      - {name: bad, metric: memory.used_percent, above: 50, clear_below: 60}\nsinks:\n  o:\n    type: console\n    inputs: [m]\n",
    );
    assert_eq!(code, 78);
    assert!(stderr.contains("threshold `bad`: `clear_below` must be at most `above`"), "{stderr}");
}

#[test]
fn agent_heartbeats_at_their_interval_and_says_goodbye() {
    let mut agent = start("  self:\n    type: agent\n    heartbeat_interval: 300ms\n");
    let started = wait_for(&agent, "agent.started", 1, Duration::from_secs(10));
    assert_eq!(started[0]["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started[0]["data"]["config_hash"].as_str().unwrap().len(), 64);
    let beats = wait_for(&agent, "agent.heartbeat", 6, Duration::from_secs(10));
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        beats.iter().map(|e| e["time"].as_str().unwrap().parse().unwrap()).collect();
    // The typical gap: one beat late on a busy machine does not count.
    let mut gaps: Vec<i64> = times.windows(2).map(|pair| (pair[1] - pair[0]).num_milliseconds()).collect();
    gaps.sort_unstable();
    let gap = gaps[gaps.len() / 2];
    assert!((250..=700).contains(&gap), "heartbeats {gap} ms apart: {gaps:?}");
    let last = &beats.last().unwrap()["data"];
    assert!(last["events_in"].as_u64().unwrap() >= 5, "{last}");
    assert!(last["rss_bytes"].as_u64().unwrap() > 1 << 20);
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    let stopping = wait_for(&agent, "agent.stopping", 1, Duration::from_secs(1));
    assert!(stopping[0]["data"]["uptime_seconds"].is_u64());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fs_watch_reports_created_modified_renamed_deleted_with_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    let mut agent = start(&format!(
        "  files:\n    type: fs_watch\n    paths: [\"{}\"]\n    exclude: [\"**/*.swp\"]\n    hash: sha256\n    debounce: 200ms\n",
        d.display()
    ));
    // The watches are in place once the agent has started.
    agent.wait_log(&["hostwatch started"], Duration::from_secs(20));
    // Each step waits for its event, so that the next falls in a debounce
    // window of its own.
    let step = |ty: &str, n: usize| {
        wait_for(&agent, ty, n, Duration::from_secs(10));
    };
    // Created: one file.created, with the content's hash.
    std::fs::write(d.join("a.conf"), "first").unwrap();
    step("file.created", 1);
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(d.join("a.conf")).unwrap();
        for _ in 0..20 {
            f.write_all(b" more").unwrap();
            f.flush().unwrap();
        }
    }
    step("file.modified", 1);
    std::fs::rename(d.join("a.conf"), d.join("b.conf")).unwrap();
    step("file.renamed", 1);
    // The excluded file first: c.conf's event comes after anything it would cause.
    std::fs::write(d.join("ignored.swp"), "x").unwrap();
    std::fs::write(d.join("sub/c.conf"), "deep").unwrap();
    step("file.created", 2);
    std::fs::remove_file(d.join("b.conf")).unwrap();
    let deleted = wait_for(&agent, "file.deleted", 1, Duration::from_secs(10));
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let all: Vec<Value> =
        events(&agent).into_iter().filter(|e| e["type"].as_str().unwrap().starts_with("file.")).collect();
    let summary: Vec<(String, String)> = all
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["data"]["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |t: &str, p: &str| (t.to_string(), p.to_string());
    assert_eq!(
        summary,
        vec![
            expect("file.created", "a.conf"),
            expect("file.modified", "a.conf"),
            expect("file.renamed", "b.conf"),
            expect("file.created", "c.conf"),
            expect("file.deleted", "b.conf"),
        ],
        "{all:#?}"
    );
    assert_eq!(all[0]["data"]["sha256"], sha256_hex(b"first"));
    assert_eq!(all[0]["data"]["size"], 5);
    assert_eq!(all[0]["data"]["owner"], "root");
    assert_eq!(all[0]["data"]["kind"], "file");
    assert_eq!(all[0]["subject"], d.join("a.conf").display().to_string());
    let full = format!("first{}", " more".repeat(20));
    assert_eq!(all[1]["data"]["sha256"], sha256_hex(full.as_bytes()));
    assert_eq!(all[2]["data"]["from"], d.join("a.conf").display().to_string());
    assert_eq!(all[3]["data"]["sha256"], sha256_hex(b"deep"));
    assert!(deleted[0]["data"].get("sha256").is_none());
    assert!(all[0]["data"]["mode"].as_str().unwrap().len() == 4);
}

/// A process the rule `{name: sleep, cmdline: "^sleep 4141"}` matches, and
/// its `process.started` event: started again until one is reported, which
/// tells that the agent has made its first scan (what runs then is known
/// already, not started) and is scanning.
fn probe_started(agent: &Agent) -> (std::process::Child, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut probe = std::process::Command::new("sleep").arg("4141").spawn().unwrap();
        let pid = probe.id() as u64;
        let seen = Instant::now();
        while seen.elapsed() < Duration::from_secs(2) {
            if let Some(e) =
                events(agent).into_iter().find(|e| e["type"] == "process.started" && e["data"]["pid"] == pid)
            {
                return (probe, e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        probe.kill().unwrap();
        probe.wait().unwrap();
        assert!(Instant::now() < deadline, "no probe was reported:\n{}", agent.logs());
    }
}

/// Ends a probe and waits for its `process.exited`: every process that ended
/// before it has been seen gone by then.
fn probe_exited(agent: &Agent, mut probe: std::process::Child) {
    let pid = probe.id() as u64;
    probe.kill().unwrap();
    probe.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events(agent).iter().any(|e| e["type"] == "process.exited" && e["data"]["pid"] == pid) {
        assert!(Instant::now() < deadline, "the probe's exit was not reported:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn processes_started_and_exited_with_their_pid() {
    let mut agent = start(
        "  machine:\n    type: host\n    interval: 1h\n    collect: [load]\n    process_interval: 200ms\n    processes:\n      - {name: sleep, cmdline: \"^sleep 4242\"}\n      - {name: sleep, cmdline: \"^sleep 4141\"}\n",
    );
    let (probe, _) = probe_started(&agent);
    // Not this one: the command line does not match.
    let mut other = std::process::Command::new("sleep").arg("4343").spawn().unwrap();
    let mut child = std::process::Command::new("sleep").arg("4242").spawn().unwrap();
    let pid = child.id() as u64;
    let started = wait_for(&agent, "process.started", 1, Duration::from_secs(10));
    child.kill().unwrap();
    child.wait().unwrap();
    let exited = wait_for(&agent, "process.exited", 1, Duration::from_secs(10));
    other.kill().unwrap();
    other.wait().unwrap();
    // Scans after `other` ended have run once the probe's exit is reported.
    probe_exited(&agent, probe);
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    for e in [&started[0], &exited[0]] {
        let d = &e["data"];
        assert_eq!(d["pid"], pid, "{e}");
        assert_eq!(d["name"], "sleep");
        assert_eq!(d["cmdline"], "sleep 4242");
        assert_eq!(d["user"], "root");
        assert_eq!(d["ppid"], std::process::id() as u64);
        assert!(d["start_time"].as_str().unwrap().ends_with('Z'));
    }
    let all: Vec<Value> = events(&agent).into_iter().filter(|e| e["data"]["cmdline"] != PROBE).collect();
    assert_eq!(all.iter().filter(|e| e["type"] == "process.started").count(), 1, "only the matching one");
    assert_eq!(all.iter().filter(|e| e["type"] == "process.exited").count(), 1);
}

#[test]
fn services_go_up_and_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = listener.local_addr().unwrap();
    // An HTTP server that answers 500 to everything.
    let failing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = failing.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for s in failing.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let mut agent = start(&format!(
        "  machine:\n    type: host\n    interval: 300ms\n    collect: [load]\n    services:\n      - {{name: db, tcp: \"{tcp}\"}}\n      - {{name: api, http: \"http://{http}/health\"}}\n      - {{name: me, process: \"^/nonexistent/daemon\"}}\n"
    ));
    let up = wait_for(&agent, "service.up", 1, Duration::from_secs(10));
    assert_eq!(up[0]["data"]["name"], "db");
    assert_eq!(up[0]["data"]["check"], "tcp");
    assert!(up[0]["data"]["latency_ms"].as_f64().unwrap() >= 0.0);
    let down = wait_for(&agent, "service.down", 2, Duration::from_secs(10));
    let mut names: Vec<&str> = down.iter().map(|e| e["data"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["api", "me"]);
    let api = down.iter().find(|e| e["data"]["name"] == "api").unwrap();
    assert!(api["data"]["error"].as_str().unwrap().contains("500"), "{api}");
    // The listener closes: db goes down, once.
    drop(listener);
    let down = wait_for(&agent, "service.down", 3, Duration::from_secs(10));
    let db = down.iter().find(|e| e["data"]["name"] == "db").unwrap();
    assert!(db["data"]["error"].as_str().unwrap().contains("refused"), "{db}");
    // The metrics say so from the next sample on.
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        let found = wait_for(&agent, "host.metrics", 1, Duration::from_secs(5)).into_iter().last().unwrap();
        if found["data"]["services"]["db"]["up"] == false {
            break found;
        }
        assert!(Instant::now() < deadline, "the metrics still have db up: {found}");
        std::thread::sleep(Duration::from_millis(50));
    };
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    assert_eq!(last["data"]["services"]["api"]["up"], false, "{last}");
    assert_eq!(events(&agent).iter().filter(|e| e["type"] == "service.down").count(), 3, "no repeats");
}

#[test]
fn interfaces_going_down_and_up_and_new_addresses() {
    // A veth pair of the test's own; one end follows the other's state.
    let ip = |args: &str| {
        let ok = std::process::Command::new("ip").args(args.split(' ')).status().unwrap().success();
        assert!(ok, "ip {args}");
    };
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "hwtst0"])
        .stderr(std::process::Stdio::null())
        .status();
    ip("link add hwtst0 type veth peer name hwtst1");
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["link", "del", "hwtst0"]).status();
        }
    }
    let _cleanup = Cleanup;
    let mut agent = start("  machine:\n    type: host\n    interval: 300ms\n    collect: [load]\n");
    wait_for(&agent, "host.metrics", 1, Duration::from_secs(10));
    ip("link set hwtst0 up");
    ip("link set hwtst1 up");
    let up = wait_for(&agent, "net.interface.up", 1, Duration::from_secs(10));
    let up0 = up.iter().find(|e| e["data"]["interface"] == "hwtst0").cloned();
    let up = match up0 {
        Some(e) => e,
        None => wait_for(&agent, "net.interface.up", 2, Duration::from_secs(10))
            .into_iter()
            .find(|e| e["data"]["interface"] == "hwtst0")
            .unwrap(),
    };
    assert_eq!(up["data"]["state"], "up");
    ip("addr add 10.99.77.1/24 dev hwtst0");
    let deadline = Instant::now() + Duration::from_secs(10);
    let with_address = loop {
        let found = events(&agent)
            .into_iter()
            .find(|e| e["data"]["interface"] == "hwtst0" && e["data"]["change"] == "addresses");
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no address change:\n{:#?}", events(&agent));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        with_address["data"]["addresses"].as_array().unwrap().iter().any(|a| a == "10.99.77.1/24"),
        "{with_address}"
    );
    ip("link set hwtst1 down");
    let down = wait_for(&agent, "net.interface.down", 1, Duration::from_secs(10));
    let d = down
        .iter()
        .find(|e| e["data"]["interface"] == "hwtst0" || e["data"]["interface"] == "hwtst1")
        .unwrap();
    assert_ne!(d["data"]["state"], "up");
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
}

#[test]
fn top_processes_name_the_busy_one() {
    let mut busy = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
    let pid = busy.id() as u64;
    let mut agent = start(
        "  machine:\n    type: host\n    interval: 700ms\n    collect: [load]\n    top_processes: 10\n",
    );
    let metrics = wait_for(&agent, "host.metrics", 2, Duration::from_secs(10));
    busy.kill().unwrap();
    busy.wait().unwrap();
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let top = &metrics[1]["data"]["top_processes"];
    let by_cpu = top["by_cpu"].as_array().unwrap();
    // Ten, so that the busy one is among them even while builds run.
    assert_eq!(by_cpu.len(), 10);
    let entry = by_cpu.iter().find(|p| p["pid"] == pid).unwrap_or_else(|| panic!("{top:#}"));
    // Whatever share the machine gives it: more than nothing.
    assert!(entry["cpu_percent"].as_f64().unwrap() > 1.0, "{entry}");
    assert_eq!(entry["name"], "sh");
    let mem: Vec<u64> =
        top["by_memory"].as_array().unwrap().iter().map(|p| p["rss_bytes"].as_u64().unwrap()).collect();
    assert!(mem.windows(2).all(|w| w[0] >= w[1]) && mem[0] > 0, "{mem:?}");
}

#[test]
fn exit_statuses_come_from_the_kernel() {
    let mut agent = start(
        "  machine:\n    type: host\n    interval: 1h\n    collect: [load]\n    process_interval: 100ms\n    processes:\n      - {name: sh, cmdline: \"exit 3|kill -9\"}\n      - {name: sleep, cmdline: \"^sleep 4141\"}\n",
    );
    // The kernel's exit statuses are listened to from the first scan on.
    let (probe, _) = probe_started(&agent);
    // Each ends once told to, after the agent has seen it start.
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let wait_go = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());
    let mut three =
        std::process::Command::new("sh").args(["-c", &format!("{wait_go}; exit 3")]).spawn().unwrap();
    let mut killed =
        std::process::Command::new("sh").args(["-c", &format!("{wait_go}; kill -9 $$")]).spawn().unwrap();
    let (p3, pk) = (three.id() as u64, killed.id() as u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    while [p3, pk]
        .iter()
        .any(|pid| !events(&agent).iter().any(|e| e["type"] == "process.started" && e["data"]["pid"] == *pid))
    {
        assert!(Instant::now() < deadline, "not both reported started:\n{:#?}", events(&agent));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&go, "").unwrap();
    three.wait().unwrap();
    killed.wait().unwrap();
    let exited = wait_for(&agent, "process.exited", 2, Duration::from_secs(10));
    probe_exited(&agent, probe);
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let by_pid =
        |pid: u64| exited.iter().find(|e| e["data"]["pid"] == pid).unwrap_or_else(|| panic!("{exited:#?}"));
    assert_eq!(by_pid(p3)["data"]["exit_code"], 3, "{:#}", by_pid(p3));
    assert_eq!(by_pid(p3)["data"]["signal"], Value::Null);
    assert_eq!(by_pid(pk)["data"]["signal"], 9, "{:#}", by_pid(pk));
}
