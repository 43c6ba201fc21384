//! The whole config: its top-level settings and its sources, transforms
//! and sinks, read and checked with positions.
//!
//! Loading collects every error it can find instead of stopping at the first:
//! each top-level key and each component is deserialized on its own, and the
//! graph is checked even when a component's own settings are wrong.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::yaml::{self, Kind, Node, Pos, Spanned};
use crate::config::{ApiConfig, Diagnostic, Duration, LoadError, LogConfig, Severity, every, log, secrets};
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::TransformConfig;

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

/// The host name: the config's `hostname`, or the kernel's.
pub fn hostname(config: &Config) -> String {
    if let Some(h) = &config.hostname {
        return h.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests;
