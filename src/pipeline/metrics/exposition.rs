//! The Prometheus exposition of the agent's metrics, written by the
//! `prometheus-client` crate's text encoder.
//!
//! The counters stay where the components count them (relaxed atomics in
//! [`ComponentMetrics`]): nothing is looked up, locked or allocated when a
//! component counts. The crate's registry reads them at each scrape through
//! two collectors: one for the families every component has, one for the
//! families components add of their own ([`Families`]). Each family is
//! written once (its `# HELP` and `# TYPE`, then all of its samples),
//! whatever the number of components in it: strict parsers refuse a second
//! `# HELP`. A component removed from the registry leaves the exposition
//! with all of its series.
//!
//! The exposition is the text format 0.0.4 (what `/metrics` says it serves,
//! what `promtool check metrics` reads), not OpenMetrics: no `# EOF`, and a
//! counter's samples carry the family's own name (`..._total`). The crate's
//! counter encoder writes OpenMetrics' form instead, a family named without
//! `_total` whose samples add it, which the 0.0.4 parser reads as two
//! families. So counters are declared `counter` in `# TYPE` and their
//! samples written with the crate's plain sample encoder, under their full
//! name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel as _, EncodeLabelSet, LabelSetEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ComponentMetrics, Components, DropReason, LATENCY_BUCKETS, State};

/// The exposition: the agent's uptime and version, then the families every
/// component has, then those the components add.
pub(super) fn registry(components: Arc<Components>, uptime: Gauge<f64, AtomicU64>) -> Registry {
    let mut registry = Registry::default();
    // `register` ends each help text with a full stop.
    registry.register("hostwatch_uptime_seconds", "Seconds since the agent started", uptime);
    let build_info = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    build_info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))]).set(1);
    registry.register("hostwatch_build_info", "The agent's version", build_info);
    registry.register_collector(Box::new(Common(components.clone())));
    registry.register_collector(Box::new(Own(components)));
    registry
}

/// A family with one sample per component (of one kind, or of all).
struct Simple {
    name: &'static str,
    help: &'static str,
    ty: MetricType,
    /// Only the components of this kind have it.
    kind: Option<&'static str>,
    value: fn(&ComponentMetrics) -> u64,
}

/// The simple families written before the drops.
const TRAFFIC: [Simple; 6] = [
    Simple {
        name: "hostwatch_events_received_total",
        help: "Events a component took in.",
        ty: MetricType::Counter,
        kind: None,
        value: |c| c.events_in.load(Relaxed),
    },
    Simple {
        name: "hostwatch_events_sent_total",
        help: "Events a component passed on or delivered.",
        ty: MetricType::Counter,
        kind: None,
        value: |c| c.events_out.load(Relaxed),
    },
    Simple {
        name: "hostwatch_bytes_received_total",
        help: "Bytes a source read.",
        ty: MetricType::Counter,
        kind: Some("source"),
        value: |c| c.bytes_in.load(Relaxed),
    },
    Simple {
        name: "hostwatch_bytes_sent_total",
        help: "Bytes a sink sent, after compression.",
        ty: MetricType::Counter,
        kind: Some("sink"),
        value: |c| c.bytes_out.load(Relaxed),
    },
    Simple {
        name: "hostwatch_requests_total",
        help: "Requests (batches) a sink sent.",
        ty: MetricType::Counter,
        kind: Some("sink"),
        value: |c| c.requests.load(Relaxed),
    },
    Simple {
        name: "hostwatch_retries_total",
        help: "Requests a sink retried.",
        ty: MetricType::Counter,
        kind: Some("sink"),
        value: |c| c.retries.load(Relaxed),
    },
];

/// The simple families of sinks written after the dead letters.
const SINKS: [Simple; 4] = [
    Simple {
        name: "hostwatch_events_dead_lettered_total",
        help: "Events a sink refused for good, written to the dead-letter directory.",
        ty: MetricType::Counter,
        kind: Some("sink"),
        value: |c| c.dropped(DropReason::DeadLettered),
    },
    Simple {
        name: "hostwatch_buffer_events",
        help: "Events waiting in a sink's buffer.",
        ty: MetricType::Gauge,
        kind: Some("sink"),
        value: |c| c.buffer_events.load(Relaxed),
    },
    Simple {
        name: "hostwatch_buffer_bytes",
        help: "Estimated bytes waiting in a sink's buffer.",
        ty: MetricType::Gauge,
        kind: Some("sink"),
        value: |c| c.buffer_bytes.load(Relaxed),
    },
    Simple {
        name: "hostwatch_sink_unconfirmed_messages",
        help: "Messages a broker sink published and the broker has not confirmed yet.",
        ty: MetricType::Gauge,
        kind: Some("sink"),
        value: |c| c.unconfirmed.load(Relaxed),
    },
];

const UP: Simple = Simple {
    name: "hostwatch_component_up",
    help: "1 while a component runs (or retries), else 0.",
    ty: MetricType::Gauge,
    kind: None,
    value: |c| matches!(c.state(), State::Running | State::Retrying | State::AuthFailed) as u64,
};

/// The families every component has, read from its [`ComponentMetrics`].
#[derive(Debug)]
struct Common(Arc<Components>);

impl Collector for Common {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let all = self.0.list();
        let all = all.as_slice();
        for family in &TRAFFIC {
            simple(&mut encoder, family, all)?;
        }

        let mut family = encoder.encode_descriptor(
            "hostwatch_events_dropped_total",
            "Events dropped, by reason.",
            None,
            MetricType::Counter,
        )?;
        for c in all {
            for (i, reason) in DropReason::ALL.iter().enumerate() {
                let v = c.dropped[i].load(Relaxed);
                if v > 0 {
                    sample(&mut family, c, Some(("reason", reason.as_str())), v)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "hostwatch_dead_letters_deleted_total",
            "Dead letters deleted, by reason: `size` to keep the directory within `dead_letter.max_size`, `age` past `dead_letter.max_age`.",
            None,
            MetricType::Counter,
        )?;
        for c in all.iter().filter(|c| c.kind == "sink") {
            for (reason, v) in [("size", &c.dead_letters_deleted_size), ("age", &c.dead_letters_deleted_age)]
            {
                sample(&mut family, c, Some(("reason", reason)), v.load(Relaxed))?;
            }
        }

        for family in &SINKS {
            simple(&mut encoder, family, all)?;
        }

        let mut family = encoder.encode_descriptor(
            "hostwatch_sink_request_duration_seconds",
            "How long a sink's requests took.",
            None,
            MetricType::Histogram,
        )?;
        for c in all.iter().filter(|c| c.kind == "sink") {
            let (sum, count, buckets) = latency(c);
            let no_exemplars: Option<&HashMap<usize, Exemplar<NoLabelSet, f64>>> = None;
            family.encode_family(&Labels { c, extra: None })?.encode_histogram(
                sum,
                count,
                &buckets,
                no_exemplars,
            )?;
        }

        let mut family = encoder.encode_descriptor(
            "hostwatch_component_errors_total",
            "What a component failed on, by reason: events a transform could not evaluate or parse, records of a disk buffer that were damaged.",
            None,
            MetricType::Counter,
        )?;
        for c in all {
            for (reason, n) in c.errors() {
                sample(&mut family, c, Some(("reason", reason)), n)?;
            }
        }

        simple(&mut encoder, &UP, all)
    }
}

fn simple(encoder: &mut DescriptorEncoder, f: &Simple, all: &[Arc<ComponentMetrics>]) -> fmt::Result {
    let mut family = encoder.encode_descriptor(f.name, f.help, None, f.ty)?;
    for c in all.iter().filter(|c| f.kind.is_none_or(|k| c.kind == k)) {
        sample(&mut family, c, None, (f.value)(c))?;
    }
    Ok(())
}

/// Writes one sample of a counter or gauge family: the component's labels,
/// one more if given, and the value, under the family's name (see the
/// module's first paragraph for why counters are written so).
fn sample(
    family: &mut MetricEncoder,
    c: &ComponentMetrics,
    extra: Option<(&str, &str)>,
    v: u64,
) -> fmt::Result {
    family.encode_family(&Labels { c, extra })?.encode_gauge(&v)
}

/// The request latency histogram of a sink: sum, count, and the count of
/// each bucket alone (the encoder adds them up), `+Inf` last.
fn latency(c: &ComponentMetrics) -> (f64, u64, [(f64, u64); LATENCY_BUCKETS.len() + 1]) {
    let mut buckets = [(f64::INFINITY, 0); LATENCY_BUCKETS.len() + 1];
    let mut finite = 0;
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        let n = c.latency_buckets[i].load(Relaxed);
        finite += n;
        buckets[i] = (*bound, n);
    }
    let count = c.latency_count.load(Relaxed);
    buckets[LATENCY_BUCKETS.len()] = (f64::INFINITY, count.saturating_sub(finite));
    (c.latency_sum_us.load(Relaxed) as f64 / 1e6, count, buckets)
}

/// The labels of a component's sample, and of some families one more
/// (`reason`, `file`). The crate escapes their values.
struct Labels<'a> {
    c: &'a ComponentMetrics,
    extra: Option<(&'a str, &'a str)>,
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("component_id", self.c.id.as_str()).encode(encoder.encode_label())?;
        ("component_kind", self.c.kind).encode(encoder.encode_label())?;
        ("component_type", self.c.ty.as_str()).encode(encoder.encode_label())?;
        if let Some((key, value)) = self.extra {
            (key, value).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The families that components add samples to at each scrape (through
/// the closure they gave [`super::Registry::add_collector`]). Each sample
/// is labelled with the component that adds it; two components of the same
/// type add their samples to one family.
#[derive(Default)]
pub struct Families {
    /// The components whose collectors ran, the last one running.
    owners: Vec<Arc<ComponentMetrics>>,
    list: Vec<OwnFamily>,
}

/// A family components added, with its samples.
struct OwnFamily {
    name: &'static str,
    help: &'static str,
    ty: MetricType,
    samples: Vec<OwnSample>,
}

struct OwnSample {
    /// The index of the component in `owners`.
    owner: usize,
    /// A label more, if any.
    label: Option<(&'static str, String)>,
    value: u64,
}

impl Families {
    /// Adds the component's `value` to counter family `name`.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.add(name, help, MetricType::Counter, None, value);
    }

    /// Adds the component's `value` to gauge family `name`.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.add(name, help, MetricType::Gauge, None, value);
    }

    /// Adds the component's `value` to gauge family `name`, with one label
    /// more (`("file", path)`).
    pub fn gauge_with(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: (&'static str, &str),
        value: u64,
    ) {
        self.add(name, help, MetricType::Gauge, Some((label.0, label.1.to_string())), value);
    }

    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        ty: MetricType,
        label: Option<(&'static str, String)>,
        value: u64,
    ) {
        let Some(owner) = self.owners.len().checked_sub(1) else { return };
        let i = match self.list.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.list.push(OwnFamily { name, help, ty, samples: Vec::new() });
                self.list.len() - 1
            }
        };
        self.list[i].samples.push(OwnSample { owner, label, value });
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        for f in &self.list {
            let mut family = encoder.encode_descriptor(f.name, f.help, None, f.ty)?;
            for s in &f.samples {
                let extra = s.label.as_ref().map(|(k, v)| (*k, v.as_str()));
                sample(&mut family, &self.owners[s.owner], extra, s.value)?;
            }
        }
        Ok(())
    }
}

/// The families the components add, gathered from their collectors.
#[derive(Debug)]
struct Own(Arc<Components>);

impl Collector for Own {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut families = Families::default();
        for (owner, collect) in self.0.collectors() {
            families.owners.push(owner);
            collect(&mut families);
        }
        families.encode(&mut encoder)
    }
}
