//! The agent's own counters, shared between the components that count and
//! the API that reports them.
//!
//! Components count per batch, never per event, with relaxed atomics: no
//! locks on the hot path. The API renders them in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why events were dropped. Every drop is counted under one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A buffer with `when_full: drop_newest` was full.
    BufferFull,
    /// A filter or sampler decided so.
    Filtered,
    /// The input could not be read as events (counted where it was refused).
    Malformed,
    /// A sink refused them for good; they are in the dead-letter directory.
    DeadLettered,
    /// Nothing reads from the component.
    NoOutput,
    /// Lost to a damaged record of a disk buffer.
    Corrupted,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::BufferFull,
        DropReason::Filtered,
        DropReason::Malformed,
        DropReason::DeadLettered,
        DropReason::NoOutput,
        DropReason::Corrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::Filtered => "filtered",
            DropReason::Malformed => "malformed",
            DropReason::DeadLettered => "dead_lettered",
            DropReason::NoOutput => "no_output",
            DropReason::Corrupted => "corrupted",
        }
    }
}

/// The life of a component, as `/health` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Starting = 0,
    Running = 1,
    /// A sink whose last request failed and is being retried.
    Retrying = 2,
    Stopped = 3,
    Failed = 4,
    /// A sink whose destination refuses the agent's credentials; its
    /// events wait until they are fixed.
    AuthFailed = 5,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::AuthFailed => "auth_failed",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => State::Starting,
            1 => State::Running,
            2 => State::Retrying,
            3 => State::Stopped,
            5 => State::AuthFailed,
            _ => State::Failed,
        }
    }
}

/// Upper bounds of the request latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The counters of one component.
#[derive(Debug)]
pub struct ComponentMetrics {
    pub id: String,
    pub kind: &'static str,
    pub ty: String,
    state: AtomicU8,
    /// When the state last changed, in milliseconds since the Unix epoch.
    state_since: AtomicU64,
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub bytes_in: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Sinks: bytes sent (after compression), requests, retries.
    pub bytes_out: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Buffers: events and bytes waiting.
    pub buffer_events: AtomicU64,
    /// Broker sinks: messages published and not yet confirmed.
    pub unconfirmed: AtomicU64,
    pub buffer_bytes: AtomicU64,
    /// Events taken in and given up by a stop that timed out: counted once.
    abandoned: AtomicU64,
    /// Sinks: dead letters deleted to keep the directory within `max_size`
    /// and within `max_age`.
    pub dead_letters_deleted_size: AtomicU64,
    pub dead_letters_deleted_age: AtomicU64,
    /// The last error, for `/health`.
    last_error: Mutex<Option<String>>,
    /// Transforms: expressions and parsers that failed, by reason.
    errors: Mutex<Vec<(&'static str, u64)>>,
}

impl ComponentMetrics {
    pub fn new(id: &str, kind: &'static str, ty: &str) -> Self {
        ComponentMetrics {
            id: id.to_string(),
            kind,
            ty: ty.to_string(),
            state: AtomicU8::new(State::Starting as u8),
            state_since: AtomicU64::new(unix_millis()),
            events_in: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            dropped: Default::default(),
            bytes_out: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            buffer_events: AtomicU64::new(0),
            unconfirmed: AtomicU64::new(0),
            buffer_bytes: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            dead_letters_deleted_size: AtomicU64::new(0),
            dead_letters_deleted_age: AtomicU64::new(0),
            last_error: Mutex::new(None),
            errors: Mutex::new(Vec::new()),
        }
    }

    pub fn add_error(&self, reason: &'static str, n: u64) {
        if let Ok(mut errors) = self.errors.lock() {
            match errors.iter_mut().find(|(r, _)| *r == reason) {
                Some(slot) => slot.1 += n,
                None => errors.push((reason, n)),
            }
        }
    }

    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Relaxed))
    }

    pub fn set_state(&self, s: State) {
        if self.state.swap(s as u8, Relaxed) != s as u8 {
            self.state_since.store(unix_millis(), Relaxed);
        }
    }

    /// When the state last changed, in milliseconds since the Unix epoch.
    pub fn state_since(&self) -> u64 {
        self.state_since.load(Relaxed)
    }

    pub fn add_in(&self, events: usize) {
        self.events_in.fetch_add(events as u64, Relaxed);
    }

    pub fn add_out(&self, events: usize) {
        self.events_out.fetch_add(events as u64, Relaxed);
    }

    pub fn add_dropped(&self, reason: DropReason, events: usize) {
        if events > 0 {
            let i = DropReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
            self.dropped[i].fetch_add(events as u64, Relaxed);
        }
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        let i = DropReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[i].load(Relaxed)
    }

    pub fn observe_request(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Records the last error; says whether it differs from the one before
    /// (so that a sink retrying against a broker that is down logs the
    /// trouble once, not at every attempt).
    pub fn set_error(&self, error: Option<String>) -> bool {
        match self.last_error.lock() {
            Ok(mut slot) => {
                let changed = *slot != error;
                *slot = error;
                changed
            }
            Err(_) => true,
        }
    }

    /// For a transform or sink that was aborted (a stop that timed out):
    /// the events it held, which are gone with it. Those waiting in its
    /// input channel, and those it took in and had not passed on, delivered
    /// or dropped (in a batch being built, a request being retried). They
    /// are counted once: the component's next run starts from nothing.
    pub fn abandon(&self) -> u64 {
        // Drops for a full buffer happen before the component takes events in.
        let dropped: u64 = (DropReason::ALL.iter())
            .filter(|r| **r != DropReason::BufferFull)
            .map(|r| self.dropped(*r))
            .sum();
        let passed = self.events_out.load(Relaxed) + dropped + self.abandoned.load(Relaxed);
        let taken = self.events_in.load(Relaxed).saturating_sub(passed);
        self.abandoned.fetch_add(taken, Relaxed);
        let queued = self.buffer_events.swap(0, Relaxed);
        self.buffer_bytes.store(0, Relaxed);
        queued + taken
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Adds a component's own metrics (beyond the common ones) to the families
/// of the exposition.
pub type Collector = Arc<dyn Fn(&mut Families) + Send + Sync>;

/// The metric families that components add samples to. The text format
/// wants each family once (its `# HELP` and `# TYPE`, then all of its
/// samples), and strict parsers refuse a second `# HELP`: two components of
/// the same type add their samples to one family.
#[derive(Default)]
pub struct Families {
    list: Vec<Family>,
}

struct Family {
    name: String,
    kind: &'static str,
    help: &'static str,
    samples: String,
}

impl Families {
    /// The sample lines of family `name` (`kind` is `counter`, `gauge`...),
    /// to write to: `name{labels} value`, one per line.
    pub fn family(&mut self, name: &str, kind: &'static str, help: &'static str) -> &mut String {
        let i = match self.list.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.list.push(Family { name: name.to_string(), kind, help, samples: String::new() });
                self.list.len() - 1
            }
        };
        &mut self.list[i].samples
    }

    fn write(&self, out: &mut String) {
        for f in &self.list {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind);
            out.push_str(&f.samples);
        }
    }
}

/// Every component's counters.
#[derive(Default)]
pub struct Registry {
    /// Every source has started.
    pub started: std::sync::atomic::AtomicBool,
    components: Mutex<Vec<Arc<ComponentMetrics>>>,
    collectors: Mutex<Vec<(String, Collector)>>,
    /// Why the last reload was not taken, for `/health`; `None` after one
    /// that was.
    reload_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The metrics of a component: the ones it had before a reload if it
    /// is the same kind and type (counters go on), else new ones.
    pub fn register(&self, id: &str, kind: &'static str, ty: &str) -> Arc<ComponentMetrics> {
        let Ok(mut all) = self.components.lock() else {
            return Arc::new(ComponentMetrics::new(id, kind, ty));
        };
        if let Some(m) = all.iter().find(|c| c.id == id && c.kind == kind && c.ty == ty) {
            m.set_state(State::Starting);
            return m.clone();
        }
        let m = Arc::new(ComponentMetrics::new(id, kind, ty));
        all.retain(|c| c.id != id);
        all.push(m.clone());
        m
    }

    pub fn set_reload_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.reload_error.lock() {
            *slot = error;
        }
    }

    pub fn reload_error(&self) -> Option<String> {
        self.reload_error.lock().ok().and_then(|e| e.clone())
    }

    /// Forgets the components not in `ids` (after a reload removed them).
    pub fn keep_only(&self, ids: &[&str]) {
        if let Ok(mut all) = self.components.lock() {
            all.retain(|c| ids.contains(&c.id.as_str()));
        }
        if let Ok(mut all) = self.collectors.lock() {
            all.retain(|(c, _)| ids.contains(&c.as_str()));
        }
    }

    /// Adds a component's own metrics, replacing what it added before.
    pub fn add_collector(&self, id: &str, collector: Collector) {
        if let Ok(mut all) = self.collectors.lock() {
            all.retain(|(c, _)| c != id);
            all.push((id.to_string(), collector));
        }
    }

    pub fn components(&self) -> Vec<Arc<ComponentMetrics>> {
        self.components.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self, uptime: Duration) -> String {
        let all = self.components();
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP hostwatch_uptime_seconds Seconds since the agent started.");
        let _ = writeln!(out, "# TYPE hostwatch_uptime_seconds gauge");
        let _ = writeln!(out, "hostwatch_uptime_seconds {:.3}", uptime.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP hostwatch_build_info The agent's version.\n# TYPE hostwatch_build_info gauge\n\
             hostwatch_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        let counter =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&ComponentMetrics) -> Option<u64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for c in &all {
                    if let Some(v) = get(c) {
                        let _ = writeln!(out, "{name}{{{}}} {v}", labels(c));
                    }
                }
            };
        counter(&mut out, "hostwatch_events_received_total", "Events a component took in.", &|c| {
            Some(c.events_in.load(Relaxed))
        });
        counter(
            &mut out,
            "hostwatch_events_sent_total",
            "Events a component passed on or delivered.",
            &|c| Some(c.events_out.load(Relaxed)),
        );
        counter(&mut out, "hostwatch_bytes_received_total", "Bytes a source read.", &|c| {
            (c.kind == "source").then(|| c.bytes_in.load(Relaxed))
        });
        counter(&mut out, "hostwatch_bytes_sent_total", "Bytes a sink sent, after compression.", &|c| {
            (c.kind == "sink").then(|| c.bytes_out.load(Relaxed))
        });
        counter(&mut out, "hostwatch_requests_total", "Requests (batches) a sink sent.", &|c| {
            (c.kind == "sink").then(|| c.requests.load(Relaxed))
        });
        counter(&mut out, "hostwatch_retries_total", "Requests a sink retried.", &|c| {
            (c.kind == "sink").then(|| c.retries.load(Relaxed))
        });

        let _ = writeln!(
            out,
            "# HELP hostwatch_events_dropped_total Events dropped, by reason.\n\
             # TYPE hostwatch_events_dropped_total counter"
        );
        for c in &all {
            for (i, reason) in DropReason::ALL.iter().enumerate() {
                let v = c.dropped[i].load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "hostwatch_events_dropped_total{{{},reason=\"{}\"}} {v}",
                        labels(c),
                        reason.as_str()
                    );
                }
            }
        }
        let name = "hostwatch_dead_letters_deleted_total";
        let _ = writeln!(
            out,
            "# HELP {name} Dead letters deleted, by reason: `size` to keep the directory within `dead_letter.max_size`, `age` past `dead_letter.max_age`.\n# TYPE {name} counter"
        );
        for c in all.iter().filter(|c| c.kind == "sink") {
            for (reason, v) in [("size", &c.dead_letters_deleted_size), ("age", &c.dead_letters_deleted_age)]
            {
                let _ = writeln!(out, "{name}{{{},reason=\"{reason}\"}} {}", labels(c), v.load(Relaxed));
            }
        }
        counter(
            &mut out,
            "hostwatch_events_dead_lettered_total",
            "Events a sink refused for good, written to the dead-letter directory.",
            &|c| (c.kind == "sink").then(|| c.dropped(DropReason::DeadLettered)),
        );

        for (name, help, get) in [
            (
                "hostwatch_buffer_events",
                "Events waiting in a sink's buffer.",
                (|c: &ComponentMetrics| c.buffer_events.load(Relaxed)) as fn(&ComponentMetrics) -> u64,
            ),
            ("hostwatch_buffer_bytes", "Estimated bytes waiting in a sink's buffer.", |c| {
                c.buffer_bytes.load(Relaxed)
            }),
            (
                "hostwatch_sink_unconfirmed_messages",
                "Messages a broker sink published and the broker has not confirmed yet.",
                |c| c.unconfirmed.load(Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for c in all.iter().filter(|c| c.kind == "sink") {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(c), get(c));
            }
        }

        let name = "hostwatch_sink_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} How long a sink's requests took.\n# TYPE {name} histogram");
        for c in all.iter().filter(|c| c.kind == "sink") {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += c.latency_buckets[i].load(Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{},le=\"{bound}\"}} {cumulative}", labels(c));
            }
            let count = c.latency_count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{},le=\"+Inf\"}} {count}", labels(c));
            let sum = c.latency_sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{{}}} {sum:.6}", labels(c));
            let _ = writeln!(out, "{name}_count{{{}}} {count}", labels(c));
        }

        let name = "hostwatch_component_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} What a component failed on, by reason: events a transform could not evaluate or parse, records of a disk buffer that were damaged.\n# TYPE {name} counter"
        );
        for c in &all {
            for (reason, n) in c.errors() {
                let _ = writeln!(out, "{name}{{{},reason=\"{reason}\"}} {n}", labels(c));
            }
        }

        let name = "hostwatch_component_up";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while a component runs (or retries), else 0.\n# TYPE {name} gauge"
        );
        for c in &all {
            let up = matches!(c.state(), State::Running | State::Retrying | State::AuthFailed) as u8;
            let _ = writeln!(out, "{name}{{{}}} {up}", labels(c));
        }
        let collectors: Vec<Collector> =
            self.collectors.lock().map(|c| c.iter().map(|(_, f)| f.clone()).collect()).unwrap_or_default();
        let mut families = Families::default();
        for collect in collectors {
            collect(&mut families);
        }
        families.write(&mut out);
        out
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn labels(c: &ComponentMetrics) -> String {
    // Ids are restricted to [A-Za-z0-9_.-] and types are ours: no escaping needed.
    format!("component_id=\"{}\",component_kind=\"{}\",component_type=\"{}\"", c.id, c.kind, c.ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let m = r.register("out", "sink", "http");
        m.add_out(5);
        m.add_dropped(DropReason::BufferFull, 2);
        m.observe_request(Duration::from_millis(30));
        let text = r.render(Duration::from_secs(1));
        assert!(text.contains(
            "hostwatch_events_sent_total{component_id=\"out\",component_kind=\"sink\",component_type=\"http\"} 5"
        ));
        assert!(text.contains("reason=\"buffer_full\"} 2"));
        assert!(text.contains("le=\"0.05\"} 1"));
        assert!(text.contains("hostwatch_sink_request_duration_seconds_count{component_id=\"out\",component_kind=\"sink\",component_type=\"http\"} 1"));
    }

    #[test]
    fn components_of_one_type_share_their_families() {
        let r = Registry::default();
        for id in ["a", "b"] {
            r.add_collector(
                id,
                Arc::new(move |f: &mut Families| {
                    let out = f.family("hostwatch_things", "gauge", "Things.");
                    let _ = writeln!(out, "hostwatch_things{{component_id=\"{id}\"}} 1");
                }),
            );
        }
        let text = r.render(Duration::from_secs(1));
        assert_eq!(text.matches("# HELP hostwatch_things ").count(), 1, "{text}");
        assert_eq!(text.matches("# TYPE hostwatch_things ").count(), 1, "{text}");
        assert!(text.ends_with(
            "# TYPE hostwatch_things gauge\nhostwatch_things{component_id=\"a\"} 1\nhostwatch_things{component_id=\"b\"} 1\n"
        ));
    }
}
