//! `amqp`: each event an AMQP 0-9-1 message (RabbitMQ), through lapin.
//!
//! Messages are published persistent and `mandatory` on a channel in
//! confirm mode; an event counts as delivered when the broker confirmed it.
//! A message the broker could not route (no queue bound) or refused is
//! retried, not dropped. A lost connection is opened again on the next
//! attempt, with the sink's backoff.
//!
//! CloudEvents AMQP binding: `structured` sends the whole event with
//! content type `application/cloudevents+json`; `binary` sends `data` with
//! its content type and the attributes as `cloudEvents:`-prefixed
//! application properties.

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{EncodedBatch, Framing, Mode, STRUCTURED_CONTENT_TYPE};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts, Unconfirmed};

/// `type: amqp`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker, `amqp://user:password@host:port/vhost` (`amqps://` for
    /// TLS). Required.
    pub url: Spanned<String>,
    /// The exchange to publish to. Default: `""` (the default exchange,
    /// which routes by queue name).
    #[serde(default)]
    pub exchange: String,
    /// The routing key; may contain fields in braces (`events.{type}`).
    /// Required.
    pub routing_key: Spanned<String>,
    /// `structured` or `binary` (see above). Default: `structured`.
    #[serde(default)]
    pub mode: Mode,
    /// Persistent messages (delivery mode 2), kept by durable queues across
    /// a broker restart. Default: `true`.
    #[serde(default = "yes")]
    pub persistent: bool,
}

fn yes() -> bool {
    true
}

/// Messages published together (see `send`).
const PUBLISH_GROUP: usize = 64;

pub struct Sink {
    url: String,
    exchange: ShortString,
    destination: crate::sinks::driver::Destination,
    mode: Mode,
    persistent: bool,
    channel: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

pub fn build(config: &Config, _cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    if !(config.url.value.starts_with("amqp://") || config.url.value.starts_with("amqps://")) {
        return Err(BuildError::at(config.url.pos, "`url` must start with amqp:// or amqps://"));
    }
    let exchange = ShortString::try_new(config.exchange.clone())
        .map_err(|_| BuildError::new("`exchange` is longer than 255 bytes"))?;
    let (destination, partitioner) =
        crate::sinks::driver::Destination::new(&config.routing_key, crate::sinks::driver::template::raw)?;
    let sink = Sink {
        url: config.url.value.clone(),
        exchange,
        destination,
        mode: config.mode,
        persistent: config.persistent,
        channel: tokio::sync::Mutex::new(None),
    };
    let parts = Parts::messages(Framing { mode: config.mode, key: None }, partitioner);
    Ok((sink, parts))
}

impl Sink {
    /// The open channel, or a new connection and channel in confirm mode.
    async fn channel(&self) -> Result<Channel, String> {
        let mut slot = self.channel.lock().await;
        if let Some((conn, ch)) = slot.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *slot = None;
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("cannot connect to the AMQP broker: {e}"))?;
        let ch = conn.create_channel().await.map_err(|e| format!("cannot open an AMQP channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("the broker refused publisher confirms: {e}"))?;
        *slot = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn forget(&self) {
        *self.channel.lock().await = None;
    }

    fn properties(&self, m: &crate::sinks::driver::batch::Message<'_>) -> BasicProperties {
        let mut p = BasicProperties::default();
        if self.persistent {
            p = p.with_delivery_mode(2);
        }
        match self.mode {
            Mode::Structured => p.with_content_type(STRUCTURED_CONTENT_TYPE.into()),
            Mode::Binary => {
                let mut headers = FieldTable::default();
                for (k, v) in m.attributes() {
                    if k == "datacontenttype" {
                        if let Ok(ct) = ShortString::try_new(v) {
                            p = p.with_content_type(ct);
                        }
                        continue;
                    }
                    if let Ok(name) = ShortString::try_new(format!("cloudEvents:{k}")) {
                        headers.insert(name, AMQPValue::LongString(LongString::from(v)));
                    }
                }
                p.with_headers(headers)
            }
        }
    }

    pub async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
        let key = self.destination.of(batch)?;
        let routing_key = ShortString::try_new(key)
            .map_err(|_| SendError::Permanent(format!("routing key `{key}` is longer than 255 bytes")))?;
        let channel = self.channel().await.map_err(SendError::retry)?;
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        // Publishes in groups: each queues its frames in order when first
        // polled and then waits for them to be written, so awaiting them one
        // by one costs a trip through lapin's I/O loop per message (twice
        // the CPU), while a whole batch at once holds all its frames in
        // memory (48 MiB instead of 31 at four batches in flight).
        let todo: Vec<(usize, crate::sinks::driver::batch::Message<'_>)> =
            batch.messages().enumerate().filter(|(i, _)| !batch.is_confirmed(*i)).collect();
        let mut pending = Vec::with_capacity(todo.len());
        let mut failure = None;
        for group in todo.chunks(PUBLISH_GROUP) {
            let publishes = group.iter().map(|(i, m)| {
                let publish = channel.basic_publish(
                    self.exchange.clone(),
                    routing_key.clone(),
                    options,
                    m.value,
                    self.properties(m),
                );
                async move { (*i, publish.await) }
            });
            for (i, published) in futures_util::future::join_all(publishes).await {
                match published {
                    Ok(confirm) => pending.push((i, confirm)),
                    Err(e) => {
                        failure.get_or_insert_with(|| format!("cannot publish: {e}"));
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        let mut unconfirmed = Unconfirmed::new(&metrics.unconfirmed, pending.len());
        for (i, confirm) in pending {
            let result = confirm.await;
            unconfirmed.confirmed(1);
            match result {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => batch.confirm(i),
                Ok(Confirmation::Ack(Some(_))) | Ok(Confirmation::Nack(Some(_))) => {
                    failure.get_or_insert_with(|| {
                        format!("no queue is bound for routing key `{key}` on exchange `{}`", self.exchange)
                    });
                }
                Ok(Confirmation::Nack(None)) => {
                    failure.get_or_insert_with(|| "the broker refused the message (nack)".to_string());
                }
                Err(e) => {
                    failure.get_or_insert_with(|| format!("no confirmation: {e}"));
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(reason) => {
                if !channel.status().connected() {
                    self.forget().await;
                }
                Err(SendError::retry(format!("not confirmed by the AMQP broker: {reason}")))
            }
        }
    }

    pub async fn healthcheck(&self, _timeout: std::time::Duration) -> Result<(), String> {
        self.channel().await.map(|_| ())
    }
}
