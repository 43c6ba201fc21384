//! Processes starting and exiting, found by comparing two scans of /proc.
//!
//! The scan lists /proc and reads only the `stat` of pids not seen before,
//! and the command line and owner of those that may match; a process that lives less than one scan
//! interval can be missed. The exit status comes from the kernel's process
//! events connector (see `connector`) when the agent may listen to it.

use std::collections::HashMap;

use regex::Regex;
use serde::Deserialize;

use crate::config::BuildError;
use crate::event::{Map, Str, Value};
use crate::util::sys::{clock_ticks, read_users};

/// One entry of `processes:` — a name, or a match on name, command line and user.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ProcessMatch {
    Name(String),
    Rule {
        /// The process name (`comm`, as `ps` shows it). Default: any.
        #[serde(default)]
        name: Option<String>,
        /// A regular expression over the full command line. Default: any.
        #[serde(default)]
        cmdline: Option<String>,
        /// The owner's user name. Default: any.
        #[serde(default)]
        user: Option<String>,
    },
}

struct Rule {
    name: Option<String>,
    cmdline: Option<Regex>,
    user: Option<String>,
}

#[derive(Clone)]
struct Info {
    start: u64,
    ppid: u64,
    name: String,
    cmdline: String,
    user: String,
    matched: bool,
}

pub struct Processes {
    rules: Vec<Rule>,
    all: bool,
    /// The most events of one scan; the rest are counted as dropped.
    limit: usize,
    known: HashMap<u32, Info>,
    users: HashMap<u32, String>,
    first: bool,
    ticks: f64,
    boot: u64,
    /// Exit statuses from the kernel, once listening (at the first scan).
    exits: Option<std::sync::Arc<std::sync::Mutex<super::connector::Exits>>>,
}

impl Processes {
    pub fn new(matches: &[ProcessMatch], all: bool, limit: usize) -> Result<Self, BuildError> {
        let rules = matches
            .iter()
            .map(|m| match m {
                ProcessMatch::Name(n) => Ok(Rule { name: Some(n.clone()), cmdline: None, user: None }),
                ProcessMatch::Rule { name, cmdline, user } => Ok(Rule {
                    name: name.clone(),
                    cmdline: match cmdline {
                        Some(c) => Some(Regex::new(c).map_err(|e| {
                            BuildError::new(format!("`processes`: invalid cmdline regex: {e}"))
                        })?),
                        None => None,
                    },
                    user: user.clone(),
                }),
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|b| b.trim().parse().ok()))
            .unwrap_or(0);
        Ok(Processes {
            rules,
            all,
            limit,
            known: HashMap::new(),
            users: read_users(),
            first: true,
            ticks: clock_ticks(),
            boot,
            exits: None,
        })
    }

    pub fn is_active(&self) -> bool {
        self.all || !self.rules.is_empty()
    }

    /// Scans /proc; the `process.started` and `process.exited` events since
    /// the last scan, and how many were left out by the limit.
    pub fn scan(&mut self) -> (Vec<(&'static str, Map)>, usize) {
        if self.first {
            match super::connector::listen() {
                Ok(e) => self.exits = Some(e),
                Err(e) => tracing::info!(
                    "process exit statuses are not available ({e}); processes are still reported"
                ),
            }
        }
        let mut seen: HashMap<u32, Info> = HashMap::with_capacity(self.known.len() + 16);
        let mut events = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else { return (events, 0) };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            // A pid seen before is the same process: a pid is not reused
            // within one scan interval on any real system, and not reading
            // every process's stat keeps the scan cheap.
            if let Some(info) = self.known.remove(&pid) {
                seen.insert(pid, info);
                continue;
            }
            let Some((start, ppid, comm)) = stat(pid) else { continue };
            let info = self.describe(pid, start, ppid, comm);
            if info.matched && !self.first {
                events.push(("process.started", self.data(pid, &info)));
            }
            seen.insert(pid, info);
        }
        for (pid, info) in self.known.drain().collect::<Vec<_>>() {
            if info.matched {
                let mut data = self.data(pid, &info);
                let status = self.exits.as_ref().and_then(|e| e.lock().ok()?.take(pid));
                let (code, signal) = status.unwrap_or((None, None));
                data.push(
                    Str::from_static("exit_code"),
                    code.map_or(Value::Null, |c| Value::from(u64::from(c))),
                );
                data.push(
                    Str::from_static("signal"),
                    signal.map_or(Value::Null, |s| Value::from(u64::from(s))),
                );
                events.push(("process.exited", data));
            }
        }
        self.known = seen;
        self.first = false;
        let over = events.len().saturating_sub(self.limit);
        events.truncate(self.limit);
        (events, over)
    }

    fn describe(&mut self, pid: u32, start: u64, ppid: u64, name: String) -> Info {
        let mut info =
            Info { start, ppid, name, cmdline: String::new(), user: String::new(), matched: false };
        if !self.all && !self.rules.iter().any(|r| r.name.as_ref().is_none_or(|n| *n == info.name)) {
            return info;
        }
        info.cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).trim_end_matches('\0').replace('\0', " "))
            .unwrap_or_default();
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:").and_then(|u| u.split_whitespace().next()?.parse::<u32>().ok())
            })
        });
        if let Some(uid) = uid {
            if !self.users.contains_key(&uid) {
                self.users = read_users();
            }
            info.user = self.users.get(&uid).cloned().unwrap_or_else(|| uid.to_string());
        }
        info.matched = self.all
            || self.rules.iter().any(|r| {
                r.name.as_ref().is_none_or(|n| *n == info.name)
                    && r.cmdline.as_ref().is_none_or(|c| c.is_match(&info.cmdline))
                    && r.user.as_ref().is_none_or(|u| *u == info.user)
            });
        info
    }

    fn data(&self, pid: u32, info: &Info) -> Map {
        let mut m = Map::with_capacity(7);
        m.push(Str::from_static("pid"), Value::from(u64::from(pid)));
        m.push(Str::from_static("ppid"), Value::from(info.ppid));
        m.push(Str::from_static("name"), Value::from(info.name.clone()));
        m.push(Str::from_static("cmdline"), Value::from(info.cmdline.clone()));
        m.push(Str::from_static("user"), Value::from(info.user.clone()));
        let started = self.boot as f64 + info.start as f64 / self.ticks;
        let mut buf = Vec::with_capacity(32);
        crate::event::time::format_rfc3339((started * 1e6) as i64, &mut buf);
        m.push(Str::from_static("start_time"), Value::from(String::from_utf8_lossy(&buf).into_owned()));
        m
    }
}

/// Start time (clock ticks since boot), parent pid and name of a process.
fn stat(pid: u32) -> Option<(u64, u64, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_string();
    let f: Vec<&str> = s.get(close + 2..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... starttime(19).
    Some((f.get(19)?.parse().ok()?, f.get(1)?.parse().ok()?, name))
}
