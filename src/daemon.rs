//! `hostwatch run`: the daemon. Starts the pipeline and the API, tells
//! systemd it is ready, and then waits: SIGHUP or `POST /reload` reloads
//! the config, SIGTERM or SIGINT stops it, draining what is in flight.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::api;
use crate::commands::check;
use crate::config::LogFormat;
use crate::event::Str;
use crate::notify;
use crate::pipeline::metrics::Registry;
use crate::topology::config::{Config, hostname};
use crate::topology::load::load_and_build;
use crate::topology::{self, Running, Topology};

/// The NATS client reports every failed reconnect attempt (at info level,
/// and refused credentials as an error), and the AMQP client each refused
/// connection as two errors: a wrong password would log them at every
/// retry. The sinks say what failed themselves, once, and when it works
/// again. A level given for `async_nats` or `lapin` in `log.level` still wins.
const QUIET_LIBRARIES: &str = "async_nats=off,lapin=off";

fn init_logging(config: &Config) {
    let filter = |level: &str| {
        let level = crate::config::log::filter(level).ok()?;
        tracing_subscriber::EnvFilter::try_new(format!("{QUIET_LIBRARIES},{level}")).ok()
    };
    let filter = std::env::var("HOSTWATCH_LOG")
        .ok()
        .and_then(|l| filter(&l))
        .or_else(|| filter(&config.log.level))
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Every line scrubbed of secrets on its way out.
        .with_writer(crate::util::redact::Stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `hostwatch run`: runs the agent until SIGTERM or SIGINT, or until every
/// source has finished.
pub fn run(path: &Path) -> ExitCode {
    let (config, topology, warnings) = match check(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    init_logging(&config);
    for w in &warnings {
        tracing::warn!("{}", w.display(path));
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("hostwatch").build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(run_agent(config, topology)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_agent(config: Config, topology: Topology) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let started = Instant::now();
    let host = Str::interned(&hostname(&config));
    let registry = Arc::new(Registry::default());
    let stop_api = CancellationToken::new();
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<()>(1);
    let api = match &config.api {
        Some(api) => {
            let listener = api::bind(api.address).await?;
            tracing::info!(address = %api.address, "API on /health, /metrics and /reload");
            let auth = api.auth.as_ref().map(|a| a.verifier()).transpose()?;
            Some(tokio::spawn(api::serve(
                listener,
                registry.clone(),
                started,
                stop_api.clone(),
                reload_tx,
                auth,
            )))
        }
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;

    let mut running =
        topology::start(topology, &config.data_dir, &host, &config.hash, registry.clone()).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.path.display(),
        host = %host,
        sources = config.sources.len(),
        transforms = config.transforms.len(),
        sinks = config.sinks.len(),
        "hostwatch started"
    );
    registry.started.store(true, std::sync::atomic::Ordering::Relaxed);
    notify::ready();
    let _watchdog = notify::Watchdog::start();

    let mut config = config;
    let finished_by_itself = loop {
        tokio::select! {
            _ = sigterm.recv() => break false,
            _ = sigint.recv() => break false,
            _ = sighup.recv() => notify::reloading(reload(&mut config, &mut running, &registry)).await?,
            Some(()) = reload_rx.recv() => notify::reloading(reload(&mut config, &mut running, &registry)).await?,
            _ = running.finished() => break true,
        }
    };
    notify::stopping();
    if finished_by_itself {
        tracing::info!("every source has finished and everything was delivered; stopping");
    } else {
        tracing::info!(timeout = %config.shutdown_timeout, "stopping: draining events in flight");
        if running.shutdown(*config.shutdown_timeout).await {
            tracing::info!("everything in flight was delivered");
        }
    }
    stop_api.cancel();
    if let Some(api) = api {
        let _ = api.await;
    }
    Ok(())
}

/// What each component's settings are, after interpolation.
fn fingerprints(config: &Config) -> Vec<u64> {
    (config.sources.iter().map(|c| c.fingerprint))
        .chain(config.transforms.iter().map(|c| c.fingerprint))
        .chain(config.sinks.iter().map(|c| c.fingerprint))
        .collect()
}

/// An address the new config's sources would listen on that another
/// program holds (the running sources' own are fine: they let go of them
/// first). Found before anything stops, so that the running pipeline is
/// left as it is.
fn taken_address(running: &Config, new: &Config) -> Option<String> {
    let held: Vec<_> = running.sources.iter().filter_map(|c| c.config.listens_on()).collect();
    new.sources.iter().find_map(|c| {
        let address = c.config.listens_on().filter(|a| !held.contains(a))?;
        let e = std::net::TcpListener::bind(address).err()?;
        Some(format!("source `{}` cannot listen on {address}: {e}", c.id))
    })
}

/// The ids of every component of a config.
fn ids(config: &Config) -> Vec<&str> {
    (config.sources.iter().map(|c| c.id.as_str()))
        .chain(config.transforms.iter().map(|c| c.id.as_str()))
        .chain(config.sinks.iter().map(|c| c.id.as_str()))
        .collect()
}

/// Reads the config again. A config that does not validate is refused (its
/// errors logged) and the running pipeline goes on. A valid one replaces
/// the components that changed (see [`Running::reload`]); the
/// others run on.
async fn reload(config: &mut Config, running: &mut Running, registry: &Arc<Registry>) -> Result<(), String> {
    let path = config.path.clone();
    tracing::info!(config = %path.display(), "reloading the config");
    let (new, topology) = match load_and_build(&path) {
        Ok((new, topology, warnings)) => {
            for w in &warnings {
                tracing::warn!("{}", w.display(&path));
            }
            (new, topology)
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!("{p}");
            }
            tracing::error!("the new config is refused; the running pipeline goes on");
            let errors = problems.iter().filter(|p| p.contains(": error: ")).count();
            registry.set_reload_error(Some(format!(
                "{}: the config does not validate ({errors} error(s), listed in the log); the previous one runs",
                path.display()
            )));
            return Ok(());
        }
    };
    // The same text may mean other values: a `${file:...}` secret rotated.
    if new.hash == config.hash && fingerprints(&new) == fingerprints(config) {
        tracing::info!("the config did not change");
        registry.set_reload_error(None);
        return Ok(());
    }
    let api = |c: &Config| c.api.as_ref().map(|a| (a.address, a.auth.clone()));
    if api(&new) != api(config) {
        tracing::warn!("`api` changed: the API keeps its address and auth until a restart");
    }
    if new.log.level != config.log.level || new.log.format != config.log.format {
        tracing::warn!("`log` changed: the agent's own logging keeps its settings until a restart");
    }
    let host = Str::interned(&hostname(&new));
    if let Some(e) = taken_address(config, &new) {
        tracing::error!("the new config is refused, the running pipeline goes on: {e}");
        registry.set_reload_error(Some(format!(
            "{}: the config could not start ({e}); the previous one runs",
            path.display()
        )));
        return Ok(());
    }
    let timeout = *config.shutdown_timeout;
    let rebuilt = match running.reload(topology, &new.data_dir, &host, &new.hash, timeout).await {
        Ok(rebuilt) => rebuilt,
        // Valid, but it cannot start (a port taken): back to the config
        // that ran, rather than ending the agent, which under
        // `Restart=on-failure` would fail again and again on the new file.
        Err(e) => {
            tracing::error!("the new config could not start: {e}; going back to the previous config");
            let old = topology::build(config).map_err(|_| {
                format!("the new config could not start ({e}), and the previous one cannot be built again")
            })?;
            let old_host = Str::interned(&hostname(config));
            running.reload(old, &config.data_dir, &old_host, &config.hash, timeout).await.map_err(
                |again| {
                    format!("the new config could not start ({e}), and the previous one not again: {again}")
                },
            )?;
            registry.keep_only(&ids(config));
            registry.set_reload_error(Some(format!(
                "{}: the config could not start ({e}); the previous one runs",
                path.display()
            )));
            tracing::error!("the previous config runs again; fix the config and reload");
            return Ok(());
        }
    };
    registry.keep_only(&ids(&new));
    registry.set_reload_error(None);
    tracing::info!(
        sources = new.sources.len(),
        transforms = new.transforms.len(),
        sinks = new.sinks.len(),
        rebuilt = %rebuilt.join(", "),
        "reloaded"
    );
    *config = new;
    Ok(())
}
