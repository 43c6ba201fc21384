//! The YAML model: loading, environment interpolation, and validation with
//! positions.
//!
//! Loading collects every error it can find instead of stopping at the first:
//! each top-level key and each component is deserialized on its own, and the
//! graph is checked even when a component's own settings are wrong.

mod every;
pub mod log;
pub mod schema;
pub mod secrets;
pub mod units;
pub mod yaml;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::units::{ByteSize, Duration};
pub use self::yaml::{Kind, Node, Pos, Spanned};
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::TransformConfig;

/// Where the config is read from when neither `--config` nor
/// `$HOSTWATCH_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/hostwatch/agent.yaml";

/// The whole agent configuration.
#[derive(Debug, schemars::JsonSchema)]
#[schemars(deny_unknown_fields, transform = crate::config::schema::root)]
pub struct Config {
    /// The file it was read from.
    #[schemars(skip)]
    pub path: PathBuf,
    /// The SHA-256 of its text (hex), which `agent.started` reports so that
    /// a fleet's config versions can be told apart.
    #[schemars(skip)]
    pub hash: String,
    /// Checkpoints, disk buffers and dead letters live here.
    /// Default: `/var/lib/hostwatch`.
    pub data_dir: PathBuf,
    /// The host name events carry. Default: the kernel's host name.
    pub hostname: Option<String>,
    /// How long SIGTERM waits for in-flight events to be delivered. Default: `30s`.
    pub shutdown_timeout: Duration,
    /// The HTTP API for /health and /metrics. Default: off (no `api:`).
    pub api: Option<ApiConfig>,
    /// The agent's own logs, on standard error. Default: `{level: info, format: text}`.
    pub log: LogConfig,
    /// The sources, by id. Default: none.
    #[schemars(with = "crate::config::schema::Components<SourceConfig, false>")]
    pub sources: Vec<Component<SourceConfig>>,
    /// The transforms, by id. Default: none.
    #[schemars(with = "crate::config::schema::Components<TransformConfig, true>")]
    pub transforms: Vec<Component<TransformConfig>>,
    /// The sinks, by id; at least one. Required.
    #[schemars(with = "crate::config::schema::Components<SinkConfig, true>")]
    pub sinks: Vec<Component<SinkConfig>>,
}

/// One configured component: its id, where it is written, what it reads.
#[derive(Debug)]
pub struct Component<T> {
    pub id: String,
    /// The `type` it was declared with.
    pub ty: String,
    pub pos: Pos,
    /// Ids of the components it reads from; empty for sources.
    pub inputs: Vec<Spanned<String>>,
    /// A hash of everything written for it (type, inputs, settings, after
    /// `${VAR}` interpolation) but not of where: a reload rebuilds only the
    /// components whose fingerprint changed.
    pub fingerprint: u64,
    pub config: T,
}

/// `api:` — the agent's HTTP API.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on. Default: `127.0.0.1:8686` (loopback only).
    #[serde(default = "default_api_address")]
    pub address: SocketAddr,
    /// `POST /reload` must carry `Authorization: Bearer <token>`; `/health`
    /// and `/metrics` stay open to local monitoring. Write the token as
    /// `${NAME}`. Default: none.
    #[serde(default)]
    pub auth: Option<crate::util::auth::Auth>,
}

fn default_api_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8686))
}

/// `log:` — the agent's own logs.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn` (or `warning`), `info`, `debug`, `trace` or `off`, or
    /// a filter such as `info,hostwatch::sinks=debug`; any other word is an
    /// error. `$HOSTWATCH_LOG` overrides it. Default: `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`. Default: `text`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_log_level(), format: LogFormat::Text }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

// === diagnostics ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem found in the config, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub pos: Option<Pos>,
    /// What it is about: `sinks.out.batch.timeout`, or empty for the file.
    pub at: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(pos: Option<Pos>, at: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, pos, at: at.into(), message: message.into() }
    }

    pub fn warning(pos: Option<Pos>, at: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, pos, at: at.into(), message: message.into() }
    }

    fn from_yaml(at: &str, e: yaml::Error) -> Self {
        let mut path = at.to_string();
        for key in &e.path {
            if !key.starts_with('[') && !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
        Diagnostic::error(e.pos, path, e.message)
    }

    /// Formats as `file:line:col: error: at: message`.
    pub fn display<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Diagnostic, &'a Path);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let d = self.0;
                write!(f, "{}", self.1.display())?;
                if let Some(pos) = d.pos {
                    write!(f, ":{}:{}", pos.line, pos.col)?;
                }
                let level = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                write!(f, ": {level}: ")?;
                if !d.at.is_empty() {
                    write!(f, "{}: ", d.at)?;
                }
                f.write_str(&d.message)
            }
        }
        D(self, file)
    }
}

/// A config that cannot be used, with everything wrong in it.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", d.display(&self.path))?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// A component setting that deserialized but cannot work (an invalid URL, a
/// CA file that does not exist), found when the component is built.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl BuildError {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        BuildError { pos: Some(pos), message: message.into() }
    }

    pub fn new(message: impl Into<String>) -> Self {
        BuildError { pos: None, message: message.into() }
    }
}

// === loading ===

/// Reads and checks a config file. On success also returns the warnings.
pub fn load(path: &Path) -> Result<(Config, Vec<Diagnostic>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic::error(None, "", format!("cannot read the config: {e}"))],
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Checks a config text; `path` is used in messages only.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<Diagnostic>), LoadError> {
    let fail = |diagnostics| LoadError { path: path.to_path_buf(), diagnostics };
    let root = yaml::parse(text, env)
        .map_err(|errs| fail(errs.into_iter().map(|e| Diagnostic::from_yaml("", e)).collect()))?;
    // Before any setting is checked: an error may quote a value.
    secrets::remember(&root);
    let mut diags = Vec::new();
    let mut graph = Vec::new();
    let mut config = Config {
        path: path.to_path_buf(),
        hash: {
            use sha2::Digest as _;
            sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        },
        data_dir: PathBuf::from("/var/lib/hostwatch"),
        hostname: None,
        shutdown_timeout: Duration::from_secs(30),
        api: None,
        log: LogConfig::default(),
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
    };
    let entries = match root.kind {
        Kind::Map(entries) => entries,
        _ if root.is_null() => Vec::new(),
        _ => {
            let d = Diagnostic::error(Some(root.pos), "", "the config must be a mapping of settings");
            return Err(fail(vec![d]));
        }
    };
    for (key, value) in &entries {
        let Some(name) = key.as_str() else {
            diags.push(Diagnostic::error(Some(key.pos), "", "keys must be plain names"));
            continue;
        };
        let field = |d: &mut Vec<Diagnostic>, f: &mut dyn FnMut() -> Result<(), yaml::Error>| {
            if let Err(e) = f() {
                d.push(Diagnostic::from_yaml(name, e));
            }
        };
        match name {
            "data_dir" => field(&mut diags, &mut || {
                config.data_dir = yaml::from_node(value)?;
                Ok(())
            }),
            "hostname" => field(&mut diags, &mut || {
                config.hostname = yaml::from_node(value)?;
                Ok(())
            }),
            "shutdown_timeout" => field(&mut diags, &mut || {
                config.shutdown_timeout = yaml::from_node(value)?;
                Ok(())
            }),
            "api" => match every::read_all(value, |n| yaml::from_node(n)) {
                Ok(api) => config.api = api,
                Err(errors) => diags.extend(errors.into_iter().map(|e| Diagnostic::from_yaml(name, e))),
            },
            "log" => match every::read_all(value, |n| yaml::from_node::<Option<LogConfig>>(n)) {
                Ok(log) => {
                    config.log = log.unwrap_or_default();
                    if let Err(message) = log::filter(&config.log.level) {
                        let pos = value.get("level").map_or(value.pos, |n| n.pos);
                        diags.push(Diagnostic::error(Some(pos), "log.level", message));
                    }
                }
                Err(errors) => diags.extend(errors.into_iter().map(|e| Diagnostic::from_yaml(name, e))),
            },
            "sources" => {
                config.sources =
                    components("sources", value, &mut diags, &mut graph, SourceConfig::from_node, |_| {
                        Vec::new()
                    })
            }
            "transforms" => {
                config.transforms = components(
                    "transforms",
                    value,
                    &mut diags,
                    &mut graph,
                    TransformConfig::from_node,
                    TransformConfig::outputs,
                )
            }
            "sinks" => {
                config.sinks =
                    components("sinks", value, &mut diags, &mut graph, SinkConfig::from_node, |_| Vec::new())
            }
            other => diags.push(Diagnostic::error(
                Some(key.pos),
                "",
                format!(
                    "unknown setting `{other}`, expected one of `data_dir`, `hostname`, \
                     `shutdown_timeout`, `api`, `log`, `sources`, `transforms`, `sinks`"
                ),
            )),
        }
    }
    check_graph(&graph, &mut diags);
    // An agent without a sink reads and sends nowhere.
    if !graph.iter().any(|n| n.section == "sinks") {
        let message = if entries.is_empty() {
            "the config is empty: declare at least a source and a sink (`hostwatch example` lists the types)"
        } else {
            "no sink is declared: the events would go nowhere; add one under `sinks` \
             (`hostwatch example` lists the types)"
        };
        diags.push(Diagnostic::error(None, "sinks", message));
    }
    check_exposure(&config, &entries, &mut diags);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        diags.sort_by_key(|d| (d.severity != Severity::Error, d.pos.is_none(), d.pos));
        return Err(fail(diags));
    }
    Ok((config, diags))
}

/// Reads one of `sources`, `transforms`, `sinks`: each entry on its own, so
/// that one broken component does not hide the errors of the others.
fn components<T>(
    section: &'static str,
    node: &Node,
    diags: &mut Vec<Diagnostic>,
    graph: &mut Vec<GraphNode>,
    build: impl Fn(&str, &Node) -> Result<Option<T>, yaml::Error>,
    outputs: impl Fn(&T) -> Vec<String>,
) -> Vec<Component<T>> {
    let has_inputs = section != "sources";
    let mut out = Vec::new();
    let entries = match &node.kind {
        Kind::Map(entries) => entries,
        _ if node.is_null() => return out,
        _ => {
            let msg = "expected a mapping of component ids to their settings";
            diags.push(Diagnostic::error(Some(node.pos), section, msg));
            return out;
        }
    };
    for (key, value) in entries {
        let Some(id) = key.as_str() else {
            diags.push(Diagnostic::error(Some(key.pos), section, "component ids must be plain names"));
            continue;
        };
        let at = format!("{section}.{id}");
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) {
            let msg = "component ids may use letters, digits, `_` and `-` only (`.` names an output: `router.errors`)";
            diags.push(Diagnostic::error(Some(key.pos), at.as_str(), msg));
            continue;
        }
        let mut body = value.clone();
        if !matches!(body.kind, Kind::Map(_)) {
            let msg = "expected the component's settings, starting with its `type`";
            diags.push(Diagnostic::error(Some(value.pos), at.as_str(), msg));
            continue;
        }
        let ty = match body.take("type") {
            Some((_, t)) => match t.as_str() {
                Some(ty) if !t.is_null() => Some((ty.to_string(), t.pos)),
                _ => {
                    diags.push(Diagnostic::error(Some(t.pos), format!("{at}.type"), "expected a type name"));
                    None
                }
            },
            None => {
                diags.push(Diagnostic::error(Some(key.pos), at.as_str(), "missing `type`"));
                None
            }
        };
        let inputs = if has_inputs {
            match body.take("inputs") {
                Some((_, n)) => match yaml::from_node::<Vec<Spanned<String>>>(&n) {
                    Ok(v) => v,
                    Err(e) => {
                        diags.push(Diagnostic::from_yaml(&format!("{at}.inputs"), e));
                        Vec::new()
                    }
                },
                None => Vec::new(),
            }
        } else {
            Vec::new()
        };
        // Whatever else is wrong with it, the component takes part in the
        // graph checks, so that their errors are listed too.
        graph.push(GraphNode {
            id: id.to_string(),
            section,
            pos: key.pos,
            inputs: inputs.clone(),
            outputs: None,
        });
        let Some((ty, ty_pos)) = ty else { continue };
        match every::read_all(&body, |n| build(&ty, n)) {
            Ok(Some(config)) => {
                if let Some(node) = graph.last_mut() {
                    node.outputs = Some(outputs(&config));
                }
                let fingerprint = {
                    use std::hash::Hasher as _;
                    let mut h = std::hash::DefaultHasher::new();
                    value.hash_content(&mut h);
                    h.finish()
                };
                out.push(Component { id: id.to_string(), ty, pos: key.pos, inputs, fingerprint, config })
            }
            Ok(None) => diags.push(Diagnostic::error(
                Some(ty_pos),
                format!("{at}.type"),
                format!("unknown {} type `{ty}`", section.trim_end_matches('s')),
            )),
            Err(errors) => diags.extend(errors.into_iter().map(|e| Diagnostic::from_yaml(&at, e))),
        }
    }
    out
}

// === the graph ===

/// What the graph checks need of a component, whether or not its own
/// settings are valid.
struct GraphNode {
    id: String,
    section: &'static str,
    pos: Pos,
    inputs: Vec<Spanned<String>>,
    /// Named outputs (`router.errors`); `None` when its settings are broken.
    outputs: Option<Vec<String>>,
}

/// `router.errors` as (`router`, Some(`errors`)).
pub fn split_input(input: &str) -> (&str, Option<&str>) {
    match input.split_once('.') {
        Some((component, output)) => (component, Some(output)),
        None => (input, None),
    }
}

fn check_graph(graph: &[GraphNode], diags: &mut Vec<Diagnostic>) {
    let mut nodes: HashMap<&str, &GraphNode> = HashMap::new();
    for node in graph {
        let id = node.id.as_str();
        if let Some(first) = nodes.get(id) {
            diags.push(Diagnostic::error(
                Some(node.pos),
                format!("{}.{id}", node.section),
                format!(
                    "duplicate component id `{id}` (also defined in `{}` at line {})",
                    first.section, first.pos.line
                ),
            ));
        } else {
            nodes.insert(id, node);
        }
    }

    let mut fed: HashSet<&str> = HashSet::new();
    for node in graph.iter().filter(|n| n.section != "sources") {
        let (id, section) = (&node.id, node.section);
        let at = format!("{section}.{id}.inputs");
        if node.inputs.is_empty() {
            diags.push(Diagnostic::error(
                Some(node.pos),
                format!("{section}.{id}"),
                "`inputs` is missing or empty: list the components it reads from",
            ));
        }
        let mut seen = HashSet::new();
        for input in &node.inputs {
            let written = input.value.as_str();
            if !seen.insert(written) {
                diags.push(Diagnostic::error(
                    Some(input.pos),
                    at.as_str(),
                    format!("`{written}` is listed twice"),
                ));
                continue;
            }
            let (name, output) = split_input(written);
            if let Some(upstream) = nodes.get(name)
                && let Some(outputs) = &upstream.outputs
            {
                let problem = match output {
                    Some(o) if !outputs.iter().any(|x| x == o) => Some(if outputs.is_empty() {
                        format!("`{name}` has a single output: write `{name}`")
                    } else {
                        format!(
                            "`{name}` has no output `{o}`; its outputs are {}",
                            list_outputs(name, outputs)
                        )
                    }),
                    None if !outputs.is_empty() => Some(format!(
                        "`{name}` has several outputs; name one: {}",
                        list_outputs(name, outputs)
                    )),
                    _ => None,
                };
                if let Some(msg) = problem {
                    diags.push(Diagnostic::error(Some(input.pos), at.as_str(), msg));
                    fed.insert(name);
                    continue;
                }
            }
            match nodes.get(name) {
                None => {
                    let mut msg = format!("unknown input `{name}`");
                    if let Some(close) = closest(name, nodes.keys().copied()) {
                        msg.push_str(&format!("; did you mean `{close}`?"));
                    }
                    diags.push(Diagnostic::error(Some(input.pos), at.as_str(), msg));
                }
                Some(n) if n.section == "sinks" => diags.push(Diagnostic::error(
                    Some(input.pos),
                    at.as_str(),
                    format!("`{name}` is a sink; sinks have no output to read from"),
                )),
                Some(_) => {
                    fed.insert(name);
                }
            }
        }
    }

    // Cycles can only run through transforms: sources have no inputs and
    // sinks no outputs.
    let transforms: HashMap<&str, &GraphNode> =
        graph.iter().filter(|n| n.section == "transforms").map(|n| (n.id.as_str(), n)).collect();
    let mut state: HashMap<&str, u8> = HashMap::new(); // 1 = on the path, 2 = done
    let mut reported = HashSet::new();
    for start in graph.iter().filter(|n| n.section == "transforms") {
        let mut path = Vec::new();
        visit(&start.id, &transforms, &mut state, &mut path, &mut |cycle: &[&str]| {
            let mut key: Vec<String> = cycle[..cycle.len() - 1].iter().map(|s| s.to_string()).collect();
            key.sort_unstable();
            if reported.insert(key) {
                let first = cycle[0];
                let pos = transforms.get(first).map(|c| c.pos);
                diags.push(Diagnostic::error(
                    pos,
                    format!("transforms.{first}"),
                    format!("the inputs form a cycle: {}", cycle.join(" -> ")),
                ));
            }
        });
    }

    for node in graph.iter().filter(|n| n.section != "sinks") {
        if !fed.contains(node.id.as_str()) {
            let what = if node.section == "sources" { "source" } else { "transform" };
            diags.push(Diagnostic::warning(
                Some(node.pos),
                format!("{}.{}", node.section, node.id),
                format!("no transform or sink reads from this {what}; its events go nowhere"),
            ));
        }
    }
}

/// Warns of an endpoint that other hosts can reach and that takes anything
/// from anyone, and refuses an `auth` that cannot work.
fn check_exposure(config: &Config, entries: &[(Node, Node)], diags: &mut Vec<Diagnostic>) {
    let open = |address: &SocketAddr| !address.ip().is_loopback();
    if let Some(api) = &config.api {
        let pos = entries.iter().find(|(k, _)| k.as_str() == Some("api")).map(|(k, _)| k.pos);
        match &api.auth {
            Some(auth) => {
                if let Err(e) = auth.verifier() {
                    diags.push(Diagnostic::error(pos, "api.auth", e));
                }
            }
            None if open(&api.address) => diags.push(Diagnostic::warning(
                pos,
                "api",
                format!(
                    "listens on {}, beyond this host, without `auth`: anyone who reaches it can make the \
                     agent reload; set `auth: {{bearer: ...}}` or listen on 127.0.0.1",
                    api.address
                ),
            )),
            None => {}
        }
    }
    for c in &config.sources {
        if let SourceConfig::Ingest(ingest) = &c.config
            && ingest.auth.is_none()
            && open(&ingest.address)
        {
            diags.push(Diagnostic::warning(
                Some(c.pos),
                format!("sources.{}", c.id),
                format!(
                    "listens on {}, beyond this host, without `auth`: anyone who reaches it can publish \
                     events; set `auth: {{bearer: ...}}` or listen on 127.0.0.1",
                    ingest.address
                ),
            ));
        }
    }
}

fn visit<'a>(
    id: &'a str,
    transforms: &HashMap<&'a str, &'a GraphNode>,
    state: &mut HashMap<&'a str, u8>,
    path: &mut Vec<&'a str>,
    report: &mut dyn FnMut(&[&str]),
) {
    match state.get(id) {
        Some(2) => return,
        Some(1) => {
            if let Some(start) = path.iter().position(|p| *p == id) {
                let mut cycle = path[start..].to_vec();
                cycle.push(id);
                report(&cycle);
            }
            return;
        }
        _ => {}
    }
    let Some(node) = transforms.get(id) else { return };
    state.insert(id, 1);
    path.push(id);
    for input in &node.inputs {
        if let Some((name, _)) = transforms.get_key_value(split_input(&input.value).0) {
            visit(name, transforms, state, path, report);
        }
    }
    path.pop();
    state.insert(id, 2);
}

fn list_outputs(name: &str, outputs: &[String]) -> String {
    outputs.iter().map(|o| format!("`{name}.{o}`")).collect::<Vec<_>>().join(", ")
}

/// The known id closest to a mistyped one, if it is close enough.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(Config, Vec<Diagnostic>), LoadError> {
        parse(text, Path::new("agent.yaml"), &|_| None)
    }

    fn errors(text: &str) -> Vec<String> {
        let err = check(text).unwrap_err();
        err.diagnostics.iter().map(|d| d.display(&err.path).to_string()).collect()
    }

    const GEN: &str = "sources:\n  gen:\n    type: generator\n";

    #[test]
    fn a_minimal_pipeline_loads() {
        let text = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n");
        let (config, warnings) = check(&text).unwrap();
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sinks[0].inputs[0].value, "gen");
        assert!(warnings.is_empty());
    }

    #[test]
    fn every_error_is_listed_with_its_position() {
        let text = format!(
            "{GEN}bogus: 1\nsinks:\n  a:\n    type: console\n    inputs: [gen]\n    colour: red\n  \
             b:\n    type: http\n    inputs: [gne]\n    url: http://x\n    batch: {{timeout: 10x}}\n"
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("agent.yaml:4:1: error: unknown setting `bogus`"), "{errs:#?}");
        assert!(errs[1].starts_with("agent.yaml:9:5: error: sinks.a: unknown field `colour`"), "{errs:#?}");
        assert!(
            errs[2].starts_with(
                "agent.yaml:12:14: error: sinks.b.inputs: unknown input `gne`; did you mean `gen`?"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[3].starts_with("agent.yaml:14:22: error: sinks.b.batch.timeout: invalid duration `10x`"),
            "{errs:#?}"
        );
    }

    #[test]
    fn every_bad_value_of_a_component_is_listed() {
        let text = format!(
            "{GEN}sinks:\n  b:\n    type: http\n    inputs: [gen]\n    url: http://x\n    \
             encoding: xml\n    colour: red\n    batch: {{max_events: many, timeout: 10x}}\n    \
             buffer: {{max_events: -1}}\n"
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        for (err, at) in errs.iter().zip([
            "agent.yaml:9:15: error: sinks.b.encoding:",
            "agent.yaml:10:5: error: sinks.b: unknown field `colour`",
            "agent.yaml:11:25: error: sinks.b.batch.max_events:",
            "agent.yaml:11:40: error: sinks.b.batch.timeout:",
            "agent.yaml:12:26: error: sinks.b.buffer.max_events:",
        ]) {
            assert!(err.starts_with(at), "{err} does not start with {at}");
        }
        // A required setting that is wrong is listed once, not again as missing.
        let errs = errors(&format!("{GEN}sinks:\n  b:\n    type: http\n    inputs: [gen]\n    url: [1]\n"));
        assert_eq!(errs.len(), 1, "{errs:#?}");
    }

    #[test]
    fn a_config_without_sinks_is_refused() {
        for text in ["", "# nothing\n", GEN, "sinks:\n"] {
            let errs = errors(text);
            assert!(errs.iter().any(|e| e.contains("error: sinks:")), "{text:?}: {errs:#?}");
        }
    }

    #[test]
    fn log_levels() {
        let ok = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n");
        let level = |l: &str| check(&format!("log: {{level: {l}}}\n{ok}")).map(|(c, _)| c.log.level);
        assert_eq!(level("warning").unwrap(), "warning");
        let err = level("verbose").unwrap_err().to_string();
        assert!(err.contains("agent.yaml:1:14: error: log.level: unknown log level `verbose`"), "{err}");
    }

    #[test]
    fn graph_errors() {
        let text = format!(
            "{GEN}transforms:\n  t1:\n    type: sample\n    inputs: [t2]\n    rate: 1\n  \
             t2:\n    type: sample\n    inputs: [t1, out]\n    rate: 1\nsinks:\n  out:\n    type: console\n  \
             gen:\n    type: console\n    inputs: [gen]\n"
        );
        let errs = errors(&text).join("\n");
        assert!(errs.contains("sinks.out: `inputs` is missing or empty"), "{errs}");
        assert!(errs.contains("the inputs form a cycle: t1 -> t2 -> t1"), "{errs}");
        assert!(errs.contains("`out` is a sink"), "{errs}");
        assert!(errs.contains("duplicate component id `gen`"), "{errs}");
    }

    #[test]
    fn a_source_that_feeds_nothing_is_a_warning() {
        let text = format!(
            "{GEN}  lonely:\n    type: generator\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n"
        );
        let (_, warnings) = check(&text).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("goes nowhere") || warnings[0].message.contains("go nowhere"));
    }

    #[test]
    fn unknown_type_is_named() {
        let errs = errors("sources:\n  x:\n    type: flie\n");
        assert!(errs[0].contains("sources.x.type: unknown source type `flie`"), "{errs:?}");
    }

    #[test]
    fn fingerprints_follow_settings_not_positions() {
        let a = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n");
        // The same settings, moved and written differently.
        let b = format!("\n\n{GEN}sinks:\n  out: {{type: console, inputs: [gen]}}\n");
        let c = format!("{GEN}sinks:\n  out:\n    type: console\n    inputs: [gen]\n    encoding: text\n");
        let print = |t: &str| check(t).unwrap().0.sinks[0].fingerprint;
        assert_eq!(print(&a), print(&b));
        assert_ne!(print(&a), print(&c));
        assert_eq!(check(&a).unwrap().0.sources[0].fingerprint, check(&c).unwrap().0.sources[0].fingerprint);
    }
}
