//! The agent's own counters, shared between the components that count and
//! the API that reports them.
//!
//! Components count per batch, never per event, with relaxed atomics: no
//! locks on the hot path. The API renders them in the Prometheus text format
//! ([`exposition`], with the `prometheus-client` crate).

mod exposition;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

pub use self::exposition::Families;

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
/// of the exposition, at each scrape.
pub type Collector = Arc<dyn Fn(&mut Families) + Send + Sync>;

/// The components and the collectors they added, shared by the registry
/// and the exposition that reads them.
#[derive(Default)]
struct Components {
    list: Mutex<Vec<Arc<ComponentMetrics>>>,
    /// By component id.
    collectors: Mutex<Vec<(String, Collector)>>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components").finish_non_exhaustive()
    }
}

impl Components {
    fn list(&self) -> Vec<Arc<ComponentMetrics>> {
        self.list.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Each collector with the component that added it.
    fn collectors(&self) -> Vec<(Arc<ComponentMetrics>, Collector)> {
        let all = self.list();
        let Ok(collectors) = self.collectors.lock() else { return Vec::new() };
        (collectors.iter())
            .filter_map(|(id, f)| Some((all.iter().find(|c| c.id == *id)?.clone(), f.clone())))
            .collect()
    }
}

/// Every component's counters.
pub struct Registry {
    /// Every source has started.
    pub started: std::sync::atomic::AtomicBool,
    components: Arc<Components>,
    /// Why the last reload was not taken, for `/health`; `None` after one
    /// that was.
    reload_error: Mutex<Option<String>>,
    /// Set at each scrape, before the exposition is written.
    uptime: Gauge<f64, AtomicU64>,
    exposition: prometheus_client::registry::Registry,
}

impl Default for Registry {
    fn default() -> Self {
        let components = Arc::new(Components::default());
        let uptime = Gauge::default();
        Registry {
            started: Default::default(),
            exposition: exposition::registry(components.clone(), uptime.clone()),
            components,
            reload_error: Mutex::new(None),
            uptime,
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The metrics of a component: the ones it had before a reload if it
    /// is the same kind and type (counters go on), else new ones, and the
    /// series of the one it replaces leave the exposition.
    pub fn register(&self, id: &str, kind: &'static str, ty: &str) -> Arc<ComponentMetrics> {
        let Ok(mut all) = self.components.list.lock() else {
            return Arc::new(ComponentMetrics::new(id, kind, ty));
        };
        if let Some(m) = all.iter().find(|c| c.id == id && c.kind == kind && c.ty == ty) {
            m.set_state(State::Starting);
            return m.clone();
        }
        let m = Arc::new(ComponentMetrics::new(id, kind, ty));
        all.retain(|c| c.id != id);
        all.push(m.clone());
        drop(all);
        if let Ok(mut collectors) = self.components.collectors.lock() {
            collectors.retain(|(c, _)| c != id);
        }
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
        if let Ok(mut all) = self.components.list.lock() {
            all.retain(|c| ids.contains(&c.id.as_str()));
        }
        if let Ok(mut all) = self.components.collectors.lock() {
            all.retain(|(c, _)| ids.contains(&c.as_str()));
        }
    }

    /// Adds the metrics of component `id` beyond the common ones, replacing
    /// what it added before. They are labelled as the component registered
    /// under `id`.
    pub fn add_collector(&self, id: &str, collector: Collector) {
        if let Ok(mut all) = self.components.collectors.lock() {
            all.retain(|(c, _)| c != id);
            all.push((id.to_string(), collector));
        }
    }

    pub fn components(&self) -> Vec<Arc<ComponentMetrics>> {
        self.components.list()
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn render(&self, uptime: Duration) -> String {
        // In whole milliseconds, as it always was.
        self.uptime.set(uptime.as_millis() as f64 / 1e3);
        let mut out = String::with_capacity(4096);
        // Writing to a `String` does not fail, and no value is refused.
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.exposition).is_err() {
            tracing::warn!("the metrics exposition is incomplete: a value could not be written");
        }
        out
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "component_id=\"out\",component_kind=\"sink\",component_type=\"http\"";

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let m = r.register("out", "sink", "http");
        m.add_out(5);
        m.add_dropped(DropReason::BufferFull, 2);
        m.observe_request(Duration::from_millis(30));
        m.observe_request(Duration::from_secs(60));
        let text = r.render(Duration::from_millis(1500));
        assert!(text.starts_with(
            "# HELP hostwatch_uptime_seconds Seconds since the agent started.\n\
             # TYPE hostwatch_uptime_seconds gauge\nhostwatch_uptime_seconds 1.5\n"
        ));
        assert!(text.contains(&format!(
            "# HELP hostwatch_build_info The agent's version.\n# TYPE hostwatch_build_info gauge\n\
             hostwatch_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains(&format!(
            "# HELP hostwatch_events_sent_total Events a component passed on or delivered.\n\
             # TYPE hostwatch_events_sent_total counter\nhostwatch_events_sent_total{{{OUT}}} 5\n"
        )));
        assert!(
            text.contains(&format!("hostwatch_events_dropped_total{{{OUT},reason=\"buffer_full\"}} 2\n"))
        );
        assert!(!text.contains("reason=\"filtered\""), "drops are written once there are some: {text}");
        assert!(text.contains(&format!("hostwatch_dead_letters_deleted_total{{{OUT},reason=\"age\"}} 0\n")));
        assert!(!text.contains("hostwatch_bytes_received_total{"), "a sink reads no bytes: {text}");
        assert!(text.contains("# TYPE hostwatch_sink_request_duration_seconds histogram\n"));
        assert!(
            text.contains(&format!(
                "hostwatch_sink_request_duration_seconds_bucket{{le=\"0.025\",{OUT}}} 0\n"
            ))
        );
        assert!(
            text.contains(&format!(
                "hostwatch_sink_request_duration_seconds_bucket{{le=\"0.05\",{OUT}}} 1\n"
            ))
        );
        assert!(
            text.contains(&format!(
                "hostwatch_sink_request_duration_seconds_bucket{{le=\"30.0\",{OUT}}} 1\n"
            ))
        );
        assert!(
            text.contains(&format!(
                "hostwatch_sink_request_duration_seconds_bucket{{le=\"+Inf\",{OUT}}} 2\n"
            ))
        );
        assert!(text.contains(&format!("hostwatch_sink_request_duration_seconds_count{{{OUT}}} 2\n")));
        assert!(text.contains(&format!("hostwatch_sink_request_duration_seconds_sum{{{OUT}}} 60.03\n")));
        assert!(
            text.ends_with(&format!(
                "# TYPE hostwatch_component_up gauge\nhostwatch_component_up{{{OUT}}} 0\n"
            ))
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn components_of_one_type_share_their_families() {
        let r = Registry::default();
        for id in ["a", "b"] {
            r.register(id, "source", "file");
            r.add_collector(
                id,
                Arc::new(move |f: &mut Families| {
                    f.gauge("hostwatch_things", "Things.", 1);
                    f.gauge_with("hostwatch_things_of", "Things of a file.", ("file", "/x/\"q\"\\y\n"), 2);
                }),
            );
        }
        let text = r.render(Duration::from_secs(1));
        assert_eq!(text.matches("# HELP hostwatch_things ").count(), 1, "{text}");
        assert_eq!(text.matches("# TYPE hostwatch_things ").count(), 1, "{text}");
        let labels = |id| format!("component_id=\"{id}\",component_kind=\"source\",component_type=\"file\"");
        assert!(text.contains(&format!(
            "# TYPE hostwatch_things gauge\nhostwatch_things{{{}}} 1\nhostwatch_things{{{}}} 1\n",
            labels("a"),
            labels("b")
        )));
        assert!(
            text.ends_with(&format!(
                "hostwatch_things_of{{{},file=\"/x/\\\"q\\\"\\\\y\\n\"}} 2\n",
                labels("b")
            ))
        );
    }

    #[test]
    fn removed_components_leave_with_their_series() {
        let r = Registry::default();
        for (id, ty) in [("a", "file"), ("b", "file")] {
            r.register(id, "source", ty);
            r.add_collector(
                id,
                Arc::new(|f: &mut Families| f.counter("hostwatch_things_total", "Things.", 1)),
            );
        }
        r.keep_only(&["b"]);
        let text = r.render(Duration::from_secs(1));
        assert!(!text.contains("component_id=\"a\""), "{text}");
        assert_eq!(text.matches("hostwatch_things_total{component_id=\"b\"").count(), 1, "{text}");

        // Another type under the same id: the collector of the old one goes.
        r.register("b", "source", "generator");
        let text = r.render(Duration::from_secs(1));
        assert!(!text.contains("hostwatch_things_total{"), "{text}");
        assert!(text.contains("hostwatch_events_received_total{component_id=\"b\",component_kind=\"source\",component_type=\"generator\"} 0\n"));
    }
}
