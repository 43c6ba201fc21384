//! `kafka`: each event a Kafka message, through librdkafka.
//!
//! An event counts as delivered when its delivery report says the broker
//! has it (`acks: all`, idempotent producer by default). While the brokers
//! are down, messages wait in librdkafka's queue for `message.timeout.ms`
//! (set just below the sink's `request.timeout`), then the batch is retried
//! — only its unconfirmed messages — and the sink takes no new events, so
//! the pressure reaches the sources: nothing is purged, and a file
//! checkpoint never moves past an event Kafka has not got.
//!
//! CloudEvents Kafka binding: `structured` sends the whole event as the
//! value with `content-type: application/cloudevents+json`; `binary` sends
//! `data` as the value, the attributes as `ce_*` headers and the content
//! type as `content-type`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::path::FieldPath;
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{EncodedBatch, Framing, Mode, STRUCTURED_CONTENT_TYPE};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts, Unconfirmed};

/// `type: kafka`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bootstrap brokers, `host:port`. Required.
    pub brokers: Vec<String>,
    /// The topic; may contain fields in braces (`host-{type}`) and strftime
    /// sequences. Required.
    pub topic: Spanned<String>,
    /// A field whose text is the message key (`subject`, `data.client`), so
    /// that one key's events stay in order on one partition. Default: none
    /// (librdkafka spreads the messages).
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// `structured` (the whole CloudEvent as the value) or `binary` (`data` as
    /// the value, attributes as `ce_*` headers). Default: `structured`.
    #[serde(default)]
    pub mode: Mode,
    /// `none`, `gzip`, `lz4`, `zstd` or `snappy`, per producer batch. Default: `none`.
    #[serde(default)]
    pub compression: KafkaCompression,
    /// `all` (every in-sync replica), `1` (the leader) or `0` (no
    /// acknowledgement: at most once). Default: `all`.
    #[serde(default = "default_acks")]
    pub acks: String,
    /// The idempotent producer: no duplicates from librdkafka's own retries,
    /// order kept. Default: `true`.
    #[serde(default = "yes")]
    pub idempotence: bool,
    /// SASL authentication. Default: none.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// TLS to the brokers. Default: plain text.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// librdkafka settings passed as they are (`linger.ms`,
    /// `queue.buffering.max.kbytes`...); they override the ones above.
    /// Default: none.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_acks() -> String {
    "all".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Lz4,
    Zstd,
    Snappy,
}

/// `sasl:` on a kafka sink.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Required.
    pub mechanism: Spanned<String>,
    /// The user name. Required.
    pub username: String,
    /// The password; write `${KAFKA_PASSWORD}` to take it from the
    /// environment. Required.
    pub password: String,
}

/// `tls:` on a kafka sink.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates. Default: the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A client certificate (PEM) for mutual TLS. Default: none.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// The client certificate's key (PEM). Default: none.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// librdkafka reports every failed connection attempt as an error; the
/// sink already says when delivery fails and when it recovers, once per
/// change, so librdkafka's own reports go to the debug level.
#[derive(Clone, Default)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, "{fac}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "{error}: {reason}");
    }
}

type Producer_ = FutureProducer<Quiet>;

pub struct Sink {
    config: ClientConfig,
    /// Rebuilt after an error that ends an idempotent producer (fenced, or
    /// its sequence numbers lost): a new one gets a new producer id.
    producer: Mutex<Arc<Producer_>>,
    /// The topic when it does not depend on the event.
    destination: crate::sinks::driver::Destination,
    mode: Mode,
}

pub fn build(config: &Config, cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    if config.brokers.is_empty() {
        return Err(BuildError::new("`brokers` needs at least one `host:port`"));
    }
    if config.topic.value.is_empty() {
        return Err(BuildError::at(config.topic.pos, "`topic` is empty"));
    }
    let key = match &config.key {
        Some(k) => Some(FieldPath::parse(&k.value).map_err(|e| BuildError::at(k.pos, e))?),
        None => None,
    };
    if !matches!(config.acks.as_str(), "all" | "-1" | "1" | "0") {
        return Err(BuildError::new(format!("`acks` is `all`, `1` or `0`, not `{}`", config.acks)));
    }
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", config.brokers.join(","))
        .set("acks", &config.acks)
        .set("enable.idempotence", config.idempotence.to_string())
        .set(
            "compression.codec",
            match config.compression {
                KafkaCompression::None => "none",
                KafkaCompression::Gzip => "gzip",
                KafkaCompression::Lz4 => "lz4",
                KafkaCompression::Zstd => "zstd",
                KafkaCompression::Snappy => "snappy",
            },
        )
        // A delivery report always comes before the sink gives up on the
        // request, so a message is never both queued and resent.
        .set("message.timeout.ms", message_timeout(cx.request_timeout).as_millis().to_string())
        .set("linger.ms", "5")
        // librdkafka logs through the `log` crate otherwise; connection
        // trouble reaches the operator through the sink's errors.
        .set("log_level", "3");
    if let Some(sasl) = &config.sasl {
        let m = sasl.mechanism.value.to_ascii_uppercase();
        if !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
            return Err(BuildError::at(
                sasl.mechanism.pos,
                "`mechanism` is `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`",
            ));
        }
        cc.set("security.protocol", if config.tls.is_some() { "sasl_ssl" } else { "sasl_plaintext" })
            .set("sasl.mechanism", m)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", &sasl.password);
    } else if config.tls.is_some() {
        cc.set("security.protocol", "ssl");
    }
    if let Some(tls) = &config.tls {
        for (key, file) in [
            ("ssl.ca.location", &tls.ca_file),
            ("ssl.certificate.location", &tls.cert_file),
            ("ssl.key.location", &tls.key_file),
        ] {
            if let Some(f) = file {
                if !std::path::Path::new(f).is_file() {
                    return Err(BuildError::new(format!("`tls`: cannot read {f}")));
                }
                cc.set(key, f);
            }
        }
    }
    for (k, v) in &config.librdkafka_options {
        cc.set(k, v);
    }
    let producer: Producer_ = cc
        .create_with_context(Quiet)
        .map_err(|e| BuildError::new(format!("invalid Kafka producer settings: {e}")))?;
    let (destination, partitioner) =
        crate::sinks::driver::Destination::new(&config.topic, crate::sinks::driver::template::raw)?;
    let sink = Sink { config: cc, producer: Mutex::new(Arc::new(producer)), destination, mode: config.mode };
    let parts = Parts::messages(Framing { mode: config.mode, key }, partitioner);
    Ok((sink, parts))
}

/// librdkafka's `message.timeout.ms` for a sink request timeout: enough
/// below it that the delivery report (librdkafka checks timeouts about once
/// a second) comes first.
fn message_timeout(request: Duration) -> Duration {
    request.saturating_sub(Duration::from_secs(2)).max(request / 2).max(Duration::from_millis(500))
}

/// Errors after which an idempotent producer cannot go on as it is.
fn ends_the_producer(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::Fatal
        )
    )
}

impl Sink {
    fn producer(&self) -> Arc<Producer_> {
        self.producer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
        let topic = self.destination.of(batch)?;
        let producer = self.producer();
        let mut pending = Vec::with_capacity(batch.events);
        let mut failure = None;
        for (i, m) in batch.messages().enumerate() {
            if batch.is_confirmed(i) {
                continue;
            }
            let mut headers = OwnedHeaders::new_with_capacity(if self.mode == Mode::Binary { 8 } else { 1 });
            match self.mode {
                Mode::Structured => {
                    headers =
                        headers.insert(Header { key: "content-type", value: Some(STRUCTURED_CONTENT_TYPE) });
                }
                Mode::Binary => {
                    let mut name = String::with_capacity(24);
                    for (k, v) in m.attributes() {
                        name.clear();
                        if k == "datacontenttype" {
                            name.push_str("content-type");
                        } else {
                            name.push_str("ce_");
                            name.push_str(k);
                        }
                        headers = headers.insert(Header { key: &name, value: Some(v) });
                    }
                }
            }
            let mut record = FutureRecord::to(topic).payload(m.value).headers(headers);
            if let Some(k) = m.key {
                record = record.key(k);
            }
            // A full local queue: wait for librdkafka to drain it.
            let mut record = Some(record);
            while let Some(r) = record.take() {
                match producer.send_result(r) {
                    Ok(f) => pending.push((i, f)),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = Some(r);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        let mut unconfirmed = Unconfirmed::new(&metrics.unconfirmed, pending.len());
        let mut renew = false;
        for (i, f) in pending {
            let result = f.await;
            unconfirmed.confirmed(1);
            match result {
                Ok(Ok(_)) => batch.confirm(i),
                Ok(Err((e, _))) => {
                    renew |= ends_the_producer(&e);
                    failure.get_or_insert_with(|| e.to_string());
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "the producer was closed".to_string());
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(reason) => {
                if renew || producer.client().fatal_error().is_some() {
                    self.renew(&producer, &reason);
                }
                Err(SendError::retry(format!("not delivered to Kafka: {reason}")))
            }
        }
    }

    /// Replaces `old` with a new producer, unless another request did already.
    fn renew(&self, old: &Arc<Producer_>, reason: &str) {
        let mut slot = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, old) {
            return;
        }
        match self.config.create_with_context::<_, Producer_>(Quiet) {
            Ok(p) => {
                tracing::info!("the Kafka producer cannot go on ({reason}); starting a new one");
                *slot = Arc::new(p);
            }
            Err(e) => tracing::warn!("cannot start a new Kafka producer: {e}"),
        }
    }

    /// Whether a broker answers: the cluster's metadata within `timeout`.
    pub async fn healthcheck(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| format!("no Kafka broker answered: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
