//! Finds the secrets a config holds, so that nothing the agent prints or
//! stores shows them (see `util::redact`).
//!
//! It reads the tree, not the components' settings: it needs to know no
//! component type, and it runs before any setting is checked, so that an
//! error about a setting cannot quote a secret either.

use super::yaml::{Kind, Node};
use crate::util::redact;

/// Remembers as secret: the password and the secret-looking query values of
/// every URL, and every value of a setting or header whose name looks secret
/// (`password`, `token`, `bearer`, `Authorization`, `X-Api-Key`,
/// `sasl.password` ...).
pub fn remember(node: &Node) {
    walk(node, None);
}

fn walk(node: &Node, key: Option<&str>) {
    match &node.kind {
        Kind::Scalar { text, .. } => {
            if key.is_some_and(secret_setting) {
                redact::remember(text);
            }
            redact::remember_url_secrets(text);
        }
        Kind::Seq(items) => items.iter().for_each(|i| walk(i, None)),
        Kind::Map(entries) => entries.iter().for_each(|(k, v)| walk(v, k.as_str())),
    }
}

/// A setting whose value is a secret. The names of settings that only
/// look like one are left out: a message key or routing key, a file path,
/// the list of query parameters `http_capture` masks.
fn secret_setting(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let not_secret = matches!(lower.as_str(), "key" | "routing_key" | "secret_params")
        || lower.ends_with("_file")
        || lower.ends_with("_path");
    !not_secret && (redact::looks_secret(&lower) || lower.contains("bearer") || lower.contains("cookie"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_anywhere_in_the_tree() {
        let text = "sinks:\n  a:\n    url: \"http://u:url-pass-1@h/?api_key=query-key-1&page=7\"\n    \
                    headers: {X-Api-Key: header-key-1, X-Tenant: tenant-1}\n    auth: {bearer: bearer-1}\n    \
                    key: data.client\n    sasl: {username: user-1, password: sasl-pass-1}\n";
        let node = crate::config::yaml::parse(text, &|_| None).unwrap();
        remember(&node);
        let line =
            "url-pass-1 query-key-1 header-key-1 bearer-1 sasl-pass-1 tenant-1 data.client user-1 page=7";
        assert_eq!(
            redact::scrub(line),
            "[redacted] [redacted] [redacted] [redacted] [redacted] tenant-1 data.client user-1 page=7"
        );
    }
}
