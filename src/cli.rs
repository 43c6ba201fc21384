//! The command line: `run`, `validate`, `buffer`, `dead-letters`, `example`, `schema`, `reference`, `--version`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Diagnostic, LogFormat};
use crate::event::Str;
use crate::notify;
use crate::pipeline::{self, metrics::Registry};
use crate::util::redact::scrub;

/// sysexits(3) EX_CONFIG: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 78;
/// sysexits(3) EX_USAGE.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "hostwatch",
    version,
    about = "A host agent: logs, host state, HTTP traffic and application events, shipped as CloudEvents."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Run {
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Build the pipeline, check that each sink's destination answers,
        /// and exit (0, 78 for a bad config, 69 for a sink that does not
        /// answer) without running: for use before a restart.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a config file and its pipeline; exit 0, or 78 after listing every error.
    Validate {
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Also check that each sink's destination answers (exit 69 if one does not).
        #[arg(long)]
        connect: bool,
    },
    /// Show the disk buffers of a config (`inspect`), or cut their damaged
    /// tails (`repair`, with the agent stopped).
    Buffer {
        #[arg(value_enum)]
        action: BufferAction,
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// List a sink's dead letters (`list`), or send them again and delete
    /// the ones accepted (`replay`; exit 0 if all went, 1 otherwise).
    DeadLetters {
        #[arg(value_enum)]
        action: DeadLetterAction,
        /// The sink's id.
        #[arg(long)]
        sink: String,
        /// The config file.
        #[arg(long, short, env = "HOSTWATCH_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Print a documented example of a component type, or list the types.
    /// `file` is both a source and a sink: `example source file` and
    /// `example sink file` print one of them, `example file` both.
    Example {
        /// `source`, `transform` or `sink` (optional), then a type, e.g. `http`.
        #[arg(value_name = "[KIND] TYPE", num_args = 0..=2)]
        args: Vec<String>,
    },
    /// Print the configuration reference (docs/reference.md): every option
    /// of the agent and of each component type, with its type and default.
    #[command(hide = true)]
    Reference,
    /// Print the config file's JSON Schema, for editors that check and
    /// complete YAML (`hostwatch schema > hostwatch.schema.json`).
    Schema,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BufferAction {
    /// Size, records, events waiting, the oldest event's time, damage.
    Inspect,
    /// Cut each damaged segment before its first damaged record.
    Repair,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeadLetterAction {
    /// One line per dead letter: time, events, bytes, status, reason.
    List,
    /// Send each again through the sink's destination; delete those accepted.
    Replay,
}

/// Runs a parsed command line; the returned code is the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    crate::util::redact::scrub_panics();
    match cli.command {
        // A dry run is what `validate --connect` does.
        Command::Run { config, dry_run: true } => validate(&config, true),
        Command::Run { config, dry_run: false } => run(&config),
        Command::Validate { config, connect } => validate(&config, connect),
        Command::Example { args } => example(&args),
        Command::Reference => {
            print!("{}", crate::reference::render());
            ExitCode::SUCCESS
        }
        Command::Schema => match serde_json::to_string_pretty(&crate::reference::schema()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot write the schema: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Buffer { action, config } => buffer(action, &config),
        Command::DeadLetters { action, sink, config } => dead_letters(action, &sink, &config),
    }
}

fn dead_letters(action: DeadLetterAction, id: &str, path: &Path) -> ExitCode {
    use crate::sinks::redeliver;
    let (config, _, _) = match check(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(sink) = config.sinks.iter().find(|s| s.id == id) else {
        eprintln!("{}: no sink `{id}`", path.display());
        return ExitCode::from(EXIT_USAGE);
    };
    let dir = crate::sinks::dead_letter_dir(&config.data_dir, id);
    if let DeadLetterAction::List = action {
        return match redeliver::list(&dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(redeliver::replay(id, &sink.config, &config.data_dir)) {
        Ok(outcome) => {
            for (name, why) in &outcome.kept {
                eprintln!("kept {name}: {why}");
            }
            println!(
                "sinks.{id}: {} dead letters sent ({} events), {} kept",
                outcome.sent,
                outcome.events,
                outcome.kept.len()
            );
            if outcome.kept.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn buffer(action: BufferAction, path: &Path) -> ExitCode {
    let (config, topology, _) = match check(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut damaged = false;
    // Records of a newer format, which neither repair nor the agent touch.
    let mut left = false;
    let mut any = false;
    for (id, dir) in topology.disk_buffers(&config.data_dir) {
        any = true;
        let report = match crate::buffer::disk::inspect(&dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sink `{id}`: cannot read {}: {e}", dir.display());
                damaged = true;
                continue;
            }
        };
        println!("sink `{id}`: {}", dir.display());
        print!("{}", scrub(&report.to_string()));
        for d in &report.damage {
            damaged = true;
            if d.newer {
                // Events, not damage: cutting them would lose them.
                if let BufferAction::Repair = action {
                    println!("  left as it is: {} (written by a newer hostwatch)", d.path.display());
                }
                left = true;
                continue;
            }
            if let BufferAction::Repair = action {
                match crate::buffer::disk::cut(&d.path, d.offset) {
                    Ok(()) => println!("  repaired: {} cut at byte {}", d.path.display(), d.offset),
                    Err(e) => eprintln!("  cannot cut {}: {e}", d.path.display()),
                }
            }
        }
    }
    if !any {
        println!("{}: no sink has a disk buffer", path.display());
    }
    match (action, damaged) {
        (BufferAction::Inspect, true) => ExitCode::FAILURE,
        (BufferAction::Repair, _) if left => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

fn print_diagnostics(path: &Path, diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{}", scrub(&d.display(path).to_string()));
    }
}

/// Loads a config and builds its pipeline, listing every problem.
fn check(path: &Path) -> Result<(Config, pipeline::Topology, Vec<Diagnostic>), ExitCode> {
    load_and_build(path).map_err(|problems| {
        for p in &problems {
            eprintln!("{}", scrub(p));
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Loads a config and builds its pipeline; every problem (errors first) as
/// a line with file, line and column, if any is an error.
fn load_and_build(path: &Path) -> Result<(Config, pipeline::Topology, Vec<Diagnostic>), Vec<String>> {
    let (config, warnings) = match config::load(path) {
        Ok(x) => x,
        Err(e) => {
            let mut lines: Vec<String> =
                e.diagnostics.iter().map(|d| d.display(&e.path).to_string()).collect();
            let errors = e.diagnostics.iter().filter(|d| d.severity == config::Severity::Error).count();
            lines.push(format!("{}: {errors} error(s); nothing was started", path.display()));
            return Err(lines);
        }
    };
    let mut problems = warnings.clone();
    // `log.level` itself is checked with the rest of the file.
    if let Ok(level) = std::env::var("HOSTWATCH_LOG")
        && let Err(e) = config::log::filter(&level)
    {
        problems.push(Diagnostic::error(None, "$HOSTWATCH_LOG", e));
    }
    if let Err(e) = writable(&config.data_dir) {
        problems.push(Diagnostic::error(None, "data_dir", e));
    }
    let topology = match pipeline::build(&config) {
        Ok(t) => Some(t),
        Err(errors) => {
            problems.extend(errors);
            None
        }
    };
    match topology {
        Some(t) if problems.iter().all(|d| d.severity != config::Severity::Error) => {
            Ok((config, t, warnings))
        }
        _ => {
            problems.sort_by_key(|d| (d.severity != config::Severity::Error, d.pos.is_none(), d.pos));
            Err(problems.iter().map(|d| d.display(path).to_string()).collect())
        }
    }
}

/// Checks that the agent can make `dir` and write in it: checkpoints and
/// disk buffers live there. Permission bits are not enough to tell (root
/// passes them everywhere, and /proc or a read-only mount still refuse), so
/// it tries: makes the directory and a file in it, and removes what it made.
fn writable(dir: &Path) -> Result<(), String> {
    let mut made = Vec::new();
    let mut at = dir;
    while !at.exists() {
        made.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    if at.exists() && !at.is_dir() {
        return Err(format!("data_dir {}: {} is not a directory", dir.display(), at.display()));
    }
    let probe = dir.join(format!(".hostwatch-write-check-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .map_err(|e| format!("data_dir {} is not writable: it cannot be created ({e})", dir.display()))
        .and_then(|()| {
            std::fs::File::create_new(&probe)
                .map_err(|e| format!("data_dir {} is not writable ({e})", dir.display()))
        })
        .map(|_| {
            let _ = std::fs::remove_file(&probe);
        });
    // Deepest first: each is empty once the one below it is gone.
    for d in made {
        let _ = std::fs::remove_dir(d);
    }
    result
}

/// `validate --connect` when a destination does not answer (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

fn validate(path: &Path, connect: bool) -> ExitCode {
    match check(path) {
        Ok((config, topology, warnings)) => {
            print_diagnostics(path, &warnings);
            // What earlier runs left in data_dir: checkpoints and disk
            // buffers the agent will read.
            let mut state = crate::sources::file::checkpoint_problems(&config.data_dir);
            for (id, dir) in topology.disk_buffers(&config.data_dir) {
                match crate::buffer::disk::inspect(&dir) {
                    Ok(r) => {
                        for d in r.damage {
                            if d.newer {
                                state.push(format!(
                                    "sink `{id}`: the disk buffer {} holds events written by a newer hostwatch \
                                     from byte {} ({}); the agent will not start with it: run that version \
                                     until the buffer is empty, or move the directory away",
                                    d.path.display(),
                                    d.offset,
                                    d.error
                                ));
                                continue;
                            }
                            eprintln!(
                                "warning: sink `{id}`: disk buffer {} damaged from byte {} ({}): the agent will skip it and count the loss; `hostwatch buffer repair` cuts it",
                                d.path.display(),
                                d.offset,
                                d.error
                            );
                        }
                    }
                    Err(e) => {
                        state.push(format!("sink `{id}`: cannot read the disk buffer {}: {e}", dir.display()))
                    }
                }
            }
            if !state.is_empty() {
                for p in &state {
                    eprintln!("error: {p}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            println!(
                "{}: valid ({} sources, {} transforms, {} sinks)",
                path.display(),
                config.sources.len(),
                config.transforms.len(),
                config.sinks.len()
            );
            if !connect {
                return ExitCode::SUCCESS;
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let results = runtime.block_on(topology.healthchecks(std::time::Duration::from_secs(10)));
            let mut down = 0;
            for (id, result) in results {
                match result {
                    Ok(()) => println!("sinks.{id}: reachable"),
                    Err(e) => {
                        down += 1;
                        eprintln!("sinks.{id}: not reachable: {}", scrub(&e));
                    }
                }
            }
            if down == 0 { ExitCode::SUCCESS } else { ExitCode::from(EXIT_UNAVAILABLE) }
        }
        Err(code) => code,
    }
}

fn example(args: &[String]) -> ExitCode {
    let all = [
        ("source", crate::sources::TYPES),
        ("transform", crate::transforms::TYPES),
        ("sink", crate::sinks::TYPES),
    ];
    let (kind, ty) = match args {
        [] => {
            println!("Component types (`hostwatch example [KIND] TYPE` prints a documented example):");
            for (kind, types) in all {
                let names: Vec<&str> = types.iter().map(|(n, _)| *n).collect();
                println!("  {:<11} {}", format!("{kind}s"), names.join(", "));
            }
            return ExitCode::SUCCESS;
        }
        [ty] => (None, ty.as_str()),
        [kind, ty] => (Some(kind.trim_end_matches('s')), ty.as_str()),
        _ => return ExitCode::from(EXIT_USAGE),
    };
    if let Some(kind) = kind
        && !all.iter().any(|(k, _)| *k == kind)
    {
        eprintln!("unknown kind `{kind}`: expected source, transform or sink");
        return ExitCode::from(EXIT_USAGE);
    }
    let found: Vec<(&str, &str)> = all
        .iter()
        .filter(|(k, _)| kind.is_none_or(|kind| kind == *k))
        .flat_map(|(k, types)| types.iter().filter(|(n, _)| *n == ty).map(move |(_, text)| (*k, *text)))
        .collect();
    match found.as_slice() {
        [] => {
            let what = kind.unwrap_or("component");
            eprintln!("unknown {what} type `{ty}`; `hostwatch example` lists them");
            ExitCode::from(EXIT_USAGE)
        }
        [(_, text)] => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        several => {
            // The same name for a source and a sink (`file`): both, each
            // under the command that prints it alone.
            let kinds: Vec<&str> = several.iter().map(|(k, _)| *k).collect();
            println!("# `{ty}` is a {} type; both examples follow.", kinds.join(" and a "));
            for (k, text) in several {
                println!("\n# hostwatch example {k} {ty}");
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// The NATS client reports every failed reconnect attempt (at info level,
/// and refused credentials as an error), and the AMQP client each refused
/// connection as two errors: a wrong password would log them at every
/// retry. The sinks say what failed themselves, once, and when it works
/// again. A level given for `async_nats` or `lapin` in `log.level` still wins.
const QUIET_LIBRARIES: &str = "async_nats=off,lapin=off";

fn init_logging(config: &Config) {
    let filter = |level: &str| {
        let level = config::log::filter(level).ok()?;
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

fn run(path: &Path) -> ExitCode {
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

async fn run_agent(config: Config, topology: pipeline::Topology) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let started = Instant::now();
    let host = Str::interned(&pipeline::hostname(&config));
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
        pipeline::start(topology, &config.data_dir, &host, &config.hash, registry.clone()).await?;
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

use crate::api;

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
/// the components that changed (see [`pipeline::Running::reload`]); the
/// others run on.
async fn reload(
    config: &mut Config,
    running: &mut pipeline::Running,
    registry: &Arc<Registry>,
) -> Result<(), String> {
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
    let host = Str::interned(&pipeline::hostname(&new));
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
            let old = pipeline::build(config).map_err(|_| {
                format!("the new config could not start ({e}), and the previous one cannot be built again")
            })?;
            let old_host = Str::interned(&pipeline::hostname(config));
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
