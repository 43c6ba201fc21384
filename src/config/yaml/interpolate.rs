//! `${...}` inside scalar values: environment variables, secret files and
//! systemd credentials. It runs on each scalar after parsing, so a value
//! keeps the position it is written at and can never inject YAML structure.

/// Substitutes `${NAME}` and `${NAME:-default}` from the environment,
/// `${file:/path}` with the content of a file and `${credential:NAME}` with
/// that of `$CREDENTIALS_DIRECTORY/NAME` (systemd's `LoadCredential=`);
/// `$$` is a literal `$`. What comes from a file, or from a variable whose
/// name looks secret, is remembered as a secret (see `util::redact`), so
/// that no message shows it.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            // The text is not quoted whole: it may be a secret written in
            // the file by mistake.
            let end = after.find('}').ok_or("`${` without a closing `}`")?;
            let expr = &after[..end];
            if let Some(path) = expr.strip_prefix("file:") {
                out.push_str(&secret_file(std::path::Path::new(path), expr)?);
            } else if let Some(name) = expr.strip_prefix("credential:") {
                out.push_str(&credential(name, env)?);
            } else {
                out.push_str(&variable(expr, env)?);
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `NAME` or `NAME:-default` from the environment.
fn variable(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (expr, None),
    };
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`${{{expr}}}` is not a valid variable reference (`${{NAME}}`, `${{NAME:-default}}`, \
             `${{file:/path}}` or `${{credential:NAME}}`)"
        ));
    }
    match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
        (Some(v), _) => {
            if crate::util::redact::looks_secret(name) {
                crate::util::redact::remember(&v);
            }
            Ok(v)
        }
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
        )),
    }
}

/// The whole content of a secret file, without its trailing newline. Its
/// content is never part of an error.
fn secret_file(path: &std::path::Path, expr: &str) -> Result<String, String> {
    if !path.is_absolute() {
        return Err(format!("`${{{expr}}}`: the path must be absolute"));
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("`${{{expr}}}`: cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("`${{{expr}}}`: {} is not UTF-8 text", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']).to_string();
    crate::util::redact::remember(&value);
    Ok(value)
}

/// `${credential:NAME}`: `$CREDENTIALS_DIRECTORY/NAME`, where systemd puts
/// what `LoadCredential=` or `SetCredential=` gave the service.
fn credential(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let expr = format!("credential:{name}");
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!("`${{{expr}}}`: a credential name is a file name, without `/`"));
    }
    let dir = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()).ok_or_else(|| {
        format!(
            "`${{{expr}}}`: $CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit with \
             `LoadCredential={name}:/path/to/file`; elsewhere write `${{file:/path/to/file}}`)"
        )
    })?;
    secret_file(&std::path::Path::new(&dir).join(name), &expr)
}
