//! Sources: where events come from. One module per `type`.

pub mod agent;
pub mod file;
pub mod fs_watch;
pub mod generator;
pub mod host;
pub mod http_capture;
pub mod ingest;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::BuildError;
use crate::config::yaml::{self, Node};
use crate::event::Str;
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::{ComponentMetrics, Registry};

/// Every source type, with its documented example.
pub const TYPES: &[(&str, &str)] = &[
    ("agent", include_str!("agent/example.yaml")),
    ("file", include_str!("file/example.yaml")),
    ("fs_watch", include_str!("fs_watch/example.yaml")),
    ("generator", include_str!("generator/example.yaml")),
    ("host", include_str!("host/example.yaml")),
    ("http_capture", include_str!("http_capture/example.yaml")),
    ("ingest", include_str!("ingest/example.yaml")),
];

/// The settings of one source, by `type`.
#[derive(Debug, Clone, schemars::JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum SourceConfig {
    Agent(agent::Config),
    File(file::Config),
    FsWatch(fs_watch::Config),
    Host(host::Config),
    HttpCapture(http_capture::Config),
    Generator(generator::Config),
    Ingest(ingest::Config),
}

impl SourceConfig {
    /// Reads the settings of a source of type `ty`; `None` for an unknown type.
    pub fn from_node(ty: &str, node: &Node) -> Result<Option<Self>, yaml::Error> {
        Ok(Some(match ty {
            "agent" => SourceConfig::Agent(yaml::from_node(node)?),
            "file" => SourceConfig::File(yaml::from_node(node)?),
            "fs_watch" => SourceConfig::FsWatch(yaml::from_node(node)?),
            "host" => SourceConfig::Host(yaml::from_node(node)?),
            "http_capture" => SourceConfig::HttpCapture(yaml::from_node(node)?),
            "generator" => SourceConfig::Generator(yaml::from_node(node)?),
            "ingest" => SourceConfig::Ingest(yaml::from_node(node)?),
            _ => return Ok(None),
        }))
    }

    /// The TCP address the source listens on, if it does (`ingest`, a
    /// `http_capture` proxy): a reload checks that it is free first.
    pub fn listens_on(&self) -> Option<std::net::SocketAddr> {
        match self {
            SourceConfig::Ingest(c) => Some(c.address),
            SourceConfig::HttpCapture(c) => c.listen.as_ref().and_then(|l| l.value.parse().ok()),
            _ => None,
        }
    }

    /// Checks what can be checked before anything runs, and builds the source.
    pub fn build(&self) -> Result<Source, BuildError> {
        Ok(match self {
            SourceConfig::Agent(c) => Source::Agent(agent::Agent::new(c)?),
            SourceConfig::File(c) => Source::File(file::FileSource::new(c)?),
            SourceConfig::FsWatch(c) => Source::FsWatch(fs_watch::FsWatch::new(c)?),
            SourceConfig::Host(c) => Source::Host(host::Host::new(c)?),
            SourceConfig::HttpCapture(c) => Source::HttpCapture(http_capture::HttpCapture::new(c)?),
            SourceConfig::Generator(c) => Source::Generator(generator::Generator::new(c.clone())?),
            SourceConfig::Ingest(c) => Source::Ingest(ingest::Ingest::new(c.clone())?),
        })
    }
}

/// A built source, ready to run.
pub enum Source {
    Agent(agent::Agent),
    File(file::FileSource),
    FsWatch(fs_watch::FsWatch),
    Host(host::Host),
    HttpCapture(http_capture::HttpCapture),
    Generator(generator::Generator),
    Ingest(ingest::Ingest),
}

impl Source {
    /// Runs until the source is done or `cx.shutdown` fires.
    pub async fn run(self, cx: SourceContext) -> Result<(), String> {
        match self {
            Source::Agent(s) => s.run(cx).await,
            Source::File(s) => s.run(cx).await,
            Source::FsWatch(s) => s.run(cx).await,
            Source::Host(s) => s.run(cx).await,
            Source::HttpCapture(s) => s.run(cx).await,
            Source::Generator(s) => s.run(cx).await,
            Source::Ingest(s) => s.run(cx).await,
        }
    }
}

/// What a running source is given.
pub struct SourceContext {
    pub id: String,
    pub out: Fanout,
    /// Fires when the agent stops: the source stops producing and returns.
    pub shutdown: CancellationToken,
    pub data_dir: PathBuf,
    pub metrics: Arc<ComponentMetrics>,
    /// Where a source adds metrics of its own.
    pub registry: Arc<Registry>,
    /// The host name events carry.
    pub host: Str,
    /// `hostwatch://<host>/<id>`, the events' `source`.
    pub source_uri: Str,
    /// The SHA-256 of the config text.
    pub config_hash: Str,
    ready: Option<oneshot::Sender<Result<(), String>>>,
}

impl SourceContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        out: Fanout,
        shutdown: CancellationToken,
        data_dir: PathBuf,
        metrics: Arc<ComponentMetrics>,
        registry: Arc<Registry>,
        host: Str,
        config_hash: Str,
        ready: oneshot::Sender<Result<(), String>>,
    ) -> Self {
        let source_uri = Str::interned(&format!("hostwatch://{host}/{id}"));
        SourceContext {
            id,
            out,
            shutdown,
            data_dir,
            metrics,
            registry,
            host,
            source_uri,
            config_hash,
            ready: Some(ready),
        }
    }

    /// Tells the agent the source has started (its sockets are bound), or
    /// why it could not. The agent reports itself ready once every source
    /// has; a source that never says is taken as started once it returns.
    pub fn ready(&mut self, result: Result<(), String>) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(result);
        }
    }

    /// An event of this source: a new id for `time`, the source's URI and
    /// host, `data` as given.
    pub fn event(
        &self,
        ids: &mut crate::event::id::IdGen,
        time: i64,
        ty: Str,
        subject: Option<Str>,
        data: crate::event::Map,
    ) -> crate::event::Event {
        ids.set_time((time / 1000) as u64);
        crate::event::Event {
            id: crate::event::EventId::Generated(ids.next_id()),
            time,
            ty,
            source: self.source_uri.clone(),
            subject,
            host: self.host.clone(),
            attrs: crate::event::Map::new(),
            data: crate::event::Value::Object(data),
        }
    }

    /// Takes the readiness signal, for a source that reports it from
    /// elsewhere.
    pub fn take_ready(&mut self) -> Option<oneshot::Sender<Result<(), String>>> {
        self.ready.take()
    }
}
