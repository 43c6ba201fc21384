//! What a running source is given: where its events go, when to stop,
//! where to keep state, its metrics, and the attributes its events carry.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::event::Str;
use crate::pipeline::fanout::Fanout;
use crate::pipeline::metrics::{ComponentMetrics, Registry};

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
