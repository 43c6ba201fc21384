//! `redis`: each event into a Redis stream, list or channel, one pipeline
//! per batch.
//!
//! `stream` (XADD) and `list` (RPUSH) count an event as delivered when
//! Redis answered the pipeline that carried it; `pubsub` (PUBLISH) reaches
//! only the subscribers connected at that moment, so it is at most once.
//! A lost connection is opened again on the next attempt.
//!
//! Stream entries carry the event in fields: `structured` puts the whole
//! CloudEvent in the field `event`; `binary` puts each attribute in a field
//! of its own name and `data` in `data`. Lists and channels carry the
//! structured event.

use redis::aio::MultiplexedConnection;
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{EncodedBatch, Framing, Mode};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts, Unconfirmed};

/// `type: redis`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server, `redis://[user:password@]host:port/db` (`rediss://` for
    /// TLS is not built in). Required.
    pub url: Spanned<String>,
    /// The stream, list or channel; may contain fields in braces
    /// (`events:{type}`). Required.
    pub key: Spanned<String>,
    /// `stream` (XADD), `list` (RPUSH) or `pubsub` (PUBLISH, at most once).
    /// Default: `stream`.
    #[serde(default)]
    pub mode: RedisMode,
    /// Streams: trim to about this many entries (`MAXLEN ~`). Default: no trimming.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// Streams: `structured` (the event in the field `event`) or `binary`
    /// (a field per attribute, and `data`). Default: `structured`.
    #[serde(default)]
    pub encoding: Mode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    #[default]
    Stream,
    List,
    Pubsub,
}

pub struct Sink {
    client: redis::Client,
    destination: crate::sinks::driver::Destination,
    mode: RedisMode,
    maxlen: Option<u64>,
    encoding: Mode,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

pub fn build(config: &Config, _cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    let client = redis::Client::open(config.url.value.as_str())
        .map_err(|e| BuildError::at(config.url.pos, format!("invalid url: {e}")))?;
    if config.key.value.is_empty() {
        return Err(BuildError::at(config.key.pos, "`key` is empty"));
    }
    if config.encoding == Mode::Binary && config.mode != RedisMode::Stream {
        return Err(BuildError::new("`encoding: binary` needs `mode: stream` (fields per attribute)"));
    }
    let (destination, partitioner) =
        crate::sinks::driver::Destination::new(&config.key, crate::sinks::driver::template::raw)?;
    let sink = Sink {
        client,
        destination,
        mode: config.mode,
        maxlen: config.maxlen,
        encoding: config.encoding,
        connection: tokio::sync::Mutex::new(None),
    };
    let parts = Parts::messages(Framing { mode: config.encoding, key: None }, partitioner);
    Ok((sink, parts))
}

impl Sink {
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // No response timeout of its own (500ms by default): a busy server
        // answering a pipeline of a thousand commands late is not a failure;
        // the sink's `request.timeout` bounds the wait.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    pub async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
        let key = self.destination.of(batch)?;
        let mut conn = self.connection().await.map_err(SendError::retry)?;
        let mut pipe = redis::pipe();
        match self.mode {
            RedisMode::List => {
                let cmd = pipe.cmd("RPUSH").arg(key);
                for m in batch.messages() {
                    cmd.arg(m.value);
                }
                cmd.ignore();
            }
            RedisMode::Pubsub => {
                for m in batch.messages() {
                    pipe.cmd("PUBLISH").arg(key).arg(m.value).ignore();
                }
            }
            RedisMode::Stream => {
                for m in batch.messages() {
                    let cmd = pipe.cmd("XADD").arg(key);
                    if let Some(n) = self.maxlen {
                        cmd.arg("MAXLEN").arg("~").arg(n);
                    }
                    cmd.arg("*");
                    match self.encoding {
                        Mode::Structured => {
                            cmd.arg("event").arg(m.value);
                        }
                        Mode::Binary => {
                            for (k, v) in m.attributes() {
                                cmd.arg(k).arg(v);
                            }
                            cmd.arg("data").arg(m.value);
                        }
                    }
                    cmd.ignore();
                }
            }
        }
        let _unconfirmed = Unconfirmed::new(&metrics.unconfirmed, batch.events);
        match pipe.exec_async(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                    *self.connection.lock().await = None;
                }
                Err(SendError::retry(format!("Redis did not take the batch: {e}")))
            }
        }
    }

    pub async fn healthcheck(&self, _timeout: std::time::Duration) -> Result<(), String> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("Redis does not answer: {e}"))
    }
}
