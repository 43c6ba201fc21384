//! Joining lines into one event: a Java stack trace or a Python traceback
//! belongs with the line that announced it.

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

use crate::config::{BuildError, ByteSize, Duration as ConfigDuration, Spanned};

/// `multiline:` on a file source.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A line that matches starts a new event; the lines that follow and do
    /// not match belong to it. Give this or `continuation_pattern`. Default: none.
    #[serde(default)]
    pub start_pattern: Option<Spanned<String>>,
    /// A line that matches belongs to the event before it (e.g. `^\s` for
    /// indented stack frames). Give this or `start_pattern`. Default: none.
    #[serde(default)]
    pub continuation_pattern: Option<Spanned<String>>,
    /// An event is complete when no line has come for this long. Default: `1s`.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// The most lines in one event; more start a new one. Default: `500`.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// The most bytes in one event; more start a new one. Default: `1MiB`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_max_lines() -> usize {
    500
}
fn default_max_bytes() -> ByteSize {
    ByteSize::mib(1)
}

#[derive(Clone, Debug)]
enum Mode {
    Start(Regex),
    Continuation(Regex),
}

/// A complete group: where its first line starts, and its text.
pub type Group = (u64, String);

#[derive(Clone, Debug)]
pub struct Multiline {
    mode: Mode,
    timeout: Duration,
    max_lines: usize,
    max_bytes: usize,
    pending: Option<Pending>,
}

#[derive(Clone, Debug)]
struct Pending {
    offset: u64,
    text: String,
    lines: usize,
    last: Instant,
}

impl Multiline {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let compile = |p: &Spanned<String>| {
            Regex::new(&p.value).map_err(|e| BuildError::at(p.pos, format!("invalid pattern: {e}")))
        };
        let mode = match (&config.start_pattern, &config.continuation_pattern) {
            (Some(p), None) => Mode::Start(compile(p)?),
            (None, Some(p)) => Mode::Continuation(compile(p)?),
            (Some(p), Some(_)) => {
                return Err(BuildError::at(
                    p.pos,
                    "give `start_pattern` or `continuation_pattern`, not both",
                ));
            }
            (None, None) => {
                return Err(BuildError::new("`multiline` needs `start_pattern` or `continuation_pattern`"));
            }
        };
        if config.max_lines == 0 {
            return Err(BuildError::new("`multiline.max_lines` must be at least 1"));
        }
        Ok(Multiline {
            mode,
            timeout: *config.timeout,
            max_lines: config.max_lines,
            max_bytes: config.max_bytes.0 as usize,
            pending: None,
        })
    }

    /// Takes a line; returns the group it completed, if any.
    pub fn push(&mut self, offset: u64, line: &str, now: Instant) -> Option<Group> {
        let continues = match &self.mode {
            Mode::Start(re) => !re.is_match(line),
            Mode::Continuation(re) => re.is_match(line),
        };
        let fits = self
            .pending
            .as_ref()
            .is_some_and(|p| p.lines < self.max_lines && p.text.len() + 1 + line.len() <= self.max_bytes);
        if continues && fits {
            if let Some(p) = &mut self.pending {
                p.text.push('\n');
                p.text.push_str(line);
                p.lines += 1;
                p.last = now;
            }
            return None;
        }
        let done = self.pending.take().map(|p| (p.offset, p.text));
        self.pending = Some(Pending { offset, text: line.to_string(), lines: 1, last: now });
        done
    }

    /// The group waiting for more lines, if its time is up.
    pub fn flush_due(&mut self, now: Instant) -> Option<Group> {
        if self.pending.as_ref().is_some_and(|p| now.duration_since(p.last) >= self.timeout) {
            return self.flush();
        }
        None
    }

    /// The group waiting for more lines, whatever its time.
    pub fn flush(&mut self) -> Option<Group> {
        self.pending.take().map(|p| (p.offset, p.text))
    }

    /// Where the waiting group starts: nothing from there on is given out yet.
    pub fn pending_offset(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.offset)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.last + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multiline(yaml: &str) -> Multiline {
        let node = crate::config::yaml::parse(yaml, &|_| None).unwrap();
        Multiline::new(&crate::config::yaml::from_node(&node).unwrap()).unwrap()
    }

    #[test]
    fn a_java_stack_trace_is_one_event() {
        let mut m = multiline(r"start_pattern: '^\d{4}-'");
        let now = Instant::now();
        let lines = [
            "2026-11-27 ERROR boom",
            "java.lang.IllegalStateException: x",
            "    at a.b(C.java:1)",
            "2026-11-27 INFO next",
        ];
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            out.extend(m.push(i as u64 * 100, l, now));
        }
        assert_eq!(out, vec![(0, lines[..3].join("\n"))]);
        assert_eq!(m.pending_offset(), Some(300));
        assert_eq!(m.flush_due(now + Duration::from_secs(2)), Some((300, lines[3].to_string())));
    }

    #[test]
    fn continuation_and_limits() {
        let mut m = multiline("continuation_pattern: '^\\s'\nmax_lines: 2");
        let now = Instant::now();
        assert_eq!(m.push(0, "Traceback", now), None);
        assert_eq!(m.push(10, "  File x", now), None);
        // A third line would pass max_lines: it starts a group of its own.
        assert_eq!(m.push(20, "  File y", now), Some((0, "Traceback\n  File x".to_string())));
        assert_eq!(m.push(30, "next", now), Some((20, "  File y".to_string())));
    }
}
