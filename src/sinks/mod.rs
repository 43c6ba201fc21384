//! Sinks: where events go. One module per `type`, and the list of them.
//!
//! A sink type only knows how to send one encoded batch and whether it was
//! accepted ([`driver::Transport`]). Everything else is shared and lives in
//! [`driver`]: batching and encoding, compression, concurrent requests,
//! retries, dead letters and acknowledgements; and in `buffer`, the buffer
//! in front of the sink.

pub mod amqp;
pub mod console;
pub mod driver;
pub mod file;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod redis;

use std::path::Path;
use std::time::Duration;

use crate::config::BuildError;
use crate::config::yaml::{self, Node};
use crate::pipeline::metrics::ComponentMetrics;
use driver::batch::EncodedBatch;
use driver::retry::SendError;
use driver::{BuildContext, BuiltSink, Common, Transport};

/// The list of sink types, written once: each line gives the type's name,
/// its documented example, its variant and its module (which has `Config`,
/// `Sink` and `build`). It makes [`TYPES`], [`SinkKind`], [`Sink`] and their
/// dispatch.
macro_rules! sink_types {
    ($(($name:literal, $example:expr) => $variant:ident($module:ident),)*) => {
        /// Every sink type, with its documented example.
        pub const TYPES: &[(&str, &str)] = &[$(($name, $example)),*];

        /// The settings of a sink's type.
        #[derive(Debug, Clone, schemars::JsonSchema)]
        #[schemars(rename_all = "snake_case")]
        pub enum SinkKind {
            $($variant($module::Config),)*
        }

        /// A built sink type: sends one encoded batch.
        pub enum Sink {
            $($variant($module::Sink),)*
        }

        impl SinkKind {
            /// Reads the settings of type `ty`; `None` for an unknown type.
            fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
                Ok(Some(match ty {
                    $($name => SinkKind::$variant(yaml::from_node(node)?),)*
                    _ => return Ok(None),
                }))
            }

            fn build(&self, cx: &BuildContext) -> Result<(Sink, driver::Parts), BuildError> {
                Ok(match self {
                    $(SinkKind::$variant(c) => {
                        let (sink, parts) = $module::build(c, cx)?;
                        (Sink::$variant(sink), parts)
                    })*
                })
            }
        }

        impl Sink {
            async fn dispatch_send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
                match self {
                    $(Sink::$variant(s) => s.send(batch, metrics).await,)*
                }
            }

            async fn dispatch_healthcheck(&self, timeout: Duration) -> Result<(), String> {
                match self {
                    $(Sink::$variant(s) => s.healthcheck(timeout).await,)*
                }
            }
        }
    };
}

sink_types! {
    ("amqp", include_str!("amqp/example.yaml")) => Amqp(amqp),
    ("console", include_str!("console/example.yaml")) => Console(console),
    ("file", include_str!("file/example.yaml")) => File(file),
    ("http", include_str!("http/example.yaml")) => Http(http),
    ("kafka", include_str!("kafka/example.yaml")) => Kafka(kafka),
    ("mqtt", include_str!("mqtt/example.yaml")) => Mqtt(mqtt),
    ("nats", include_str!("nats/example.yaml")) => Nats(nats),
    ("redis", include_str!("redis/example.yaml")) => Redis(redis),
}

/// The settings of one sink: what every sink has, and its type's own.
#[derive(Debug, Clone, schemars::JsonSchema)]
pub struct SinkConfig {
    #[schemars(flatten)]
    pub common: Common,
    #[schemars(flatten)]
    pub kind: SinkKind,
}

impl SinkConfig {
    /// Reads the settings of a sink of type `ty`; `None` for an unknown type.
    pub fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
        let mut node = node.clone();
        let common = Common::take(&mut node);
        let Some(kind) = SinkKind::from_node(ty, &node)? else { return Ok(None) };
        Ok(Some(SinkConfig { common: common?, kind }))
    }

    /// Checks what can be checked before anything runs, and builds the sink.
    pub fn build(&self, id: &str, data_dir: &Path) -> Result<BuiltSink<Sink>, BuildError> {
        let cx = BuildContext { id, request_timeout: self.common.request.timeout_or_default() };
        let (sink, parts) = self.kind.build(&cx)?;
        self.common.build(sink, parts, id, data_dir)
    }
}

impl Transport for Sink {
    async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
        self.dispatch_send(batch, metrics).await.map_err(SendError::scrubbed)
    }

    async fn healthcheck(&self, timeout: Duration) -> Result<(), String> {
        self.dispatch_healthcheck(timeout).await.map_err(|e| crate::util::redact::scrub(&e).into_owned())
    }
}
