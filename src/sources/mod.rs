//! Sources: where events come from. One module per `type`, and the list of
//! them. What a running source is given is in [`context`].

pub mod agent;
pub mod context;
pub mod file;
pub mod fs_watch;
pub mod generator;
pub mod host;
pub mod http_capture;
pub mod ingest;

use crate::config::BuildError;
use crate::config::yaml::{self, Node};
use context::SourceContext;

/// The list of source types, written once: each line gives the type's
/// name, its documented example, its variant and its module with the
/// source's type (made by `new(&Config)`, run by `run(SourceContext)`). It
/// makes [`TYPES`], [`SourceConfig`], [`Source`] and their dispatch.
macro_rules! source_types {
    ($(($name:literal, $example:expr) => $variant:ident($module:ident::$built:ident),)*) => {
        /// Every source type, with its documented example.
        pub const TYPES: &[(&str, &str)] = &[$(($name, $example)),*];

        /// The settings of one source, by `type`.
        #[derive(Debug, Clone, schemars::JsonSchema)]
        #[schemars(rename_all = "snake_case")]
        pub enum SourceConfig {
            $($variant($module::Config),)*
        }

        /// A built source, ready to run.
        pub enum Source {
            $($variant($module::$built),)*
        }

        impl SourceConfig {
            /// Reads the settings of a source of type `ty`; `None` for an unknown type.
            pub fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
                Ok(Some(match ty {
                    $($name => SourceConfig::$variant(yaml::from_node(node)?),)*
                    _ => return Ok(None),
                }))
            }

            /// Checks what can be checked before anything runs, and builds the source.
            pub fn build(&self) -> Result<Source, BuildError> {
                Ok(match self {
                    $(SourceConfig::$variant(c) => Source::$variant($module::$built::new(c)?),)*
                })
            }
        }

        impl Source {
            /// Runs until the source is done or `cx.shutdown` fires.
            pub async fn run(self, cx: SourceContext) -> Result<(), String> {
                match self {
                    $(Source::$variant(s) => s.run(cx).await,)*
                }
            }
        }
    };
}

source_types! {
    ("agent", include_str!("agent/example.yaml")) => Agent(agent::Agent),
    ("file", include_str!("file/example.yaml")) => File(file::FileSource),
    ("fs_watch", include_str!("fs_watch/example.yaml")) => FsWatch(fs_watch::FsWatch),
    ("generator", include_str!("generator/example.yaml")) => Generator(generator::Generator),
    ("host", include_str!("host/example.yaml")) => Host(host::Host),
    ("http_capture", include_str!("http_capture/example.yaml")) => HttpCapture(http_capture::HttpCapture),
    ("ingest", include_str!("ingest/example.yaml")) => Ingest(ingest::Ingest),
}

impl SourceConfig {
    /// The TCP address the source listens on, if it does (`ingest`, a
    /// `http_capture` proxy): a reload checks that it is free first.
    pub fn listens_on(&self) -> Option<std::net::SocketAddr> {
        match self {
            SourceConfig::Ingest(c) => Some(c.address),
            SourceConfig::HttpCapture(c) => c.listen.as_ref().and_then(|l| l.value.parse().ok()),
            _ => None,
        }
    }
}
