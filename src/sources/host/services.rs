//! Service checks: a TCP connect, an HTTP request, a systemd unit's state
//! or a running process, every interval; `service.up` / `service.down` on
//! each change (the first check counts as one), the state in `host.metrics`.

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

use crate::config::BuildError;
use crate::event::{Map, Str, Value};

/// One entry of `services:`; give one of `tcp`, `http`, `unit`, `process`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// A name for the events. Required.
    pub name: String,
    /// `host:port` that must accept a TCP connection. Default: none.
    #[serde(default)]
    pub tcp: Option<String>,
    /// A URL that must answer `expect_status` to a GET. Default: none.
    #[serde(default)]
    pub http: Option<String>,
    /// The status the HTTP check expects. Default: any 2xx.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// A systemd unit that must be `active`. Default: none.
    #[serde(default)]
    pub unit: Option<String>,
    /// A regular expression one running process's command line must match.
    /// Default: none.
    #[serde(default)]
    pub process: Option<String>,
    /// How long a check may take. Default: `3s`.
    #[serde(default)]
    pub timeout: Option<crate::config::Duration>,
}

enum Check {
    Tcp(String),
    Http(reqwest::Url, Option<u16>),
    Unit(String),
    Process(Regex),
}

struct Service {
    name: String,
    check: Check,
    timeout: Duration,
    /// The last result: up, latency, error.
    last: Option<(bool, f64, Option<String>)>,
}

pub struct Services {
    services: Vec<Service>,
    client: Option<reqwest::Client>,
}

impl Services {
    pub fn new(configs: &[ServiceConfig]) -> Result<Self, BuildError> {
        let mut services = Vec::with_capacity(configs.len());
        for c in configs {
            let bad = |m: String| BuildError::new(format!("service `{}`: {m}", c.name));
            let check = match (&c.tcp, &c.http, &c.unit, &c.process) {
                (Some(t), None, None, None) => {
                    if t.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
                        return Err(bad(format!("`tcp` is host:port, not `{t}`")));
                    }
                    Check::Tcp(t.clone())
                }
                (None, Some(u), None, None) => Check::Http(
                    reqwest::Url::parse(u).map_err(|e| bad(format!("invalid `http` url: {e}")))?,
                    c.expect_status,
                ),
                (None, None, Some(u), None) => Check::Unit(u.clone()),
                (None, None, None, Some(p)) => {
                    Check::Process(Regex::new(p).map_err(|e| bad(format!("invalid `process` regex: {e}")))?)
                }
                _ => return Err(bad("give exactly one of `tcp`, `http`, `unit`, `process`".to_string())),
            };
            if c.expect_status.is_some() && !matches!(check, Check::Http(..)) {
                return Err(bad("`expect_status` goes with `http`".to_string()));
            }
            services.push(Service {
                name: c.name.clone(),
                check,
                timeout: c.timeout.map_or(Duration::from_secs(3), |d| d.0),
                last: None,
            });
        }
        Ok(Services { services, client: None })
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Runs every check at once; the `service.up` / `service.down` events
    /// for the ones whose state changed.
    pub async fn check(&mut self) -> Vec<(&'static str, Map)> {
        if self.client.is_none() && self.services.iter().any(|s| matches!(s.check, Check::Http(..))) {
            crate::util::tls::install_crypto_provider();
            self.client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("hostwatch/", env!("CARGO_PKG_VERSION")))
                .build()
                .ok();
        }
        let client = self.client.clone();
        let results = futures_util::future::join_all(self.services.iter().map(|s| {
            let client = client.clone();
            async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(s.timeout, run(&s.check, client)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {}", humantime::format_duration(s.timeout))),
                };
                (result, started.elapsed().as_secs_f64() * 1000.0)
            }
        }))
        .await;
        let mut events = Vec::new();
        for (s, (result, ms)) in self.services.iter_mut().zip(results) {
            let up = result.is_ok();
            let error = result.err();
            let changed = s.last.as_ref().is_none_or(|(was, _, _)| *was != up);
            s.last = Some((up, (ms * 100.0).round() / 100.0, error));
            if changed {
                let mut m = state(s);
                m.push(Str::from_static("name"), Value::from(s.name.clone()));
                m.push(Str::from_static("check"), Value::from(kind(&s.check)));
                events.push((if up { "service.up" } else { "service.down" }, m));
            }
        }
        events
    }

    /// The current state of every service, for `host.metrics`.
    pub fn states(&self) -> Value {
        let mut m = Map::with_capacity(self.services.len());
        for s in &self.services {
            if s.last.is_some() {
                m.push(Str::from(s.name.clone()), Value::Object(state(s)));
            }
        }
        Value::Object(m)
    }
}

fn kind(c: &Check) -> &'static str {
    match c {
        Check::Tcp(_) => "tcp",
        Check::Http(..) => "http",
        Check::Unit(_) => "unit",
        Check::Process(_) => "process",
    }
}

fn state(s: &Service) -> Map {
    let mut m = Map::with_capacity(5);
    if let Some((up, ms, error)) = &s.last {
        m.push(Str::from_static("up"), Value::Bool(*up));
        m.push(Str::from_static("latency_ms"), Value::Float(*ms));
        m.push(Str::from_static("error"), error.clone().map_or(Value::Null, Value::from));
    }
    m
}

async fn run(check: &Check, client: Option<reqwest::Client>) -> Result<(), String> {
    match check {
        Check::Tcp(addr) => {
            tokio::net::TcpStream::connect(addr.as_str()).await.map(|_| ()).map_err(|e| e.to_string())
        }
        Check::Http(url, expect) => {
            let client = client.ok_or("no HTTP client")?;
            // reqwest's message holds the URL, and the error goes into an event.
            let hide = |e: reqwest::Error| crate::util::redact::scrub(&e.to_string()).into_owned();
            let status = client.get(url.clone()).send().await.map_err(hide)?.status();
            let ok = match expect {
                Some(code) => status.as_u16() == *code,
                None => status.is_success(),
            };
            if ok { Ok(()) } else { Err(format!("answered {status}")) }
        }
        Check::Unit(unit) => {
            let out = tokio::process::Command::new("systemctl")
                .args(["is-active", unit.as_str()])
                .output()
                .await
                .map_err(|e| format!("cannot run systemctl: {e}"))?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "active" { Ok(()) } else { Err(format!("unit is {state}")) }
        }
        Check::Process(re) => {
            let re = re.clone();
            tokio::task::spawn_blocking(move || {
                let dir = std::fs::read_dir("/proc").map_err(|e| e.to_string())?;
                for entry in dir.flatten() {
                    if !entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                        continue;
                    }
                    let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
                    let cmdline = String::from_utf8_lossy(&raw).trim_end_matches('\0').replace('\0', " ");
                    if !cmdline.is_empty() && re.is_match(&cmdline) {
                        return Ok(());
                    }
                }
                Err("no such process".to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}
