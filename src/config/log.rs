//! The agent's own log filter (`log.level`, `$HOSTWATCH_LOG`).
//!
//! The filter syntax (`info`, `info,hostwatch::sinks=debug`) reads a bare
//! word that is not a level as a module name: `warning` would then enable
//! only a module called `warning` and silence everything else, errors
//! included. So bare words must be levels, and `warning` is taken for `warn`.

/// The levels a bare word may be, lowest first (`warning` is read as `warn`).
const LEVELS: [&str; 7] = ["off", "error", "warn", "warning", "info", "debug", "trace"];

/// Checks a log filter and returns it in the form the subscriber reads.
pub fn filter(spec: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, directive),
        };
        let lower = level.to_ascii_lowercase();
        if !LEVELS.contains(&lower.as_str()) {
            return Err(format!(
                "unknown log level `{level}`: expected off, error, warn, info, debug or trace, \
                 optionally per module (`info,hostwatch::sinks=debug`)"
            ));
        }
        let level = if lower == "warning" { "warn" } else { lower.as_str() };
        out.push(match target {
            Some(target) => format!("{target}={level}"),
            None => level.to_string(),
        });
    }
    if out.is_empty() {
        return Err("the log level is empty: expected off, error, warn, info, debug or trace".to_string());
    }
    let spec = out.join(",");
    tracing_subscriber::EnvFilter::try_new(&spec).map_err(|e| format!("invalid log filter `{spec}`: {e}"))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn warning_is_warn_and_unknown_levels_are_refused() {
        assert_eq!(filter("warning").unwrap(), "warn");
        assert_eq!(filter("WARNING").unwrap(), "warn");
        assert_eq!(filter("info,hostwatch::sinks=warning").unwrap(), "info,hostwatch::sinks=warn");
        assert!(filter("verbose").unwrap_err().contains("unknown log level `verbose`"));
        assert!(filter("info,hostwatch=loud").is_err());
        assert!(filter("").is_err());
    }
}
