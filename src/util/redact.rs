//! Keeping secrets out of everything the agent prints or stores.
//!
//! Two nets, used together where a string leaves the process (a log line,
//! `/health`, `/metrics`, a dead letter's metadata, `validate`):
//!
//! - [`redact_url`] finds URLs in any text and hides the password of their
//!   userinfo and the values of query parameters whose names look secret.
//!   It needs to know nothing in advance, so it also catches a URL that a
//!   client library put in its error message.
//! - [`scrub`] does that and also replaces every value the config marked as
//!   secret ([`remember`]): what came from `${file:...}`, `${credential:...}`
//!   or an environment variable named like a secret, and the values of
//!   secret-looking settings and headers. A server that echoes a token back
//!   in its error body, or a setting rejected with its value quoted, cannot
//!   show it either.
//!
//! None of this runs per event: only when something is printed or stored.

use std::borrow::Cow;
use std::io::Write as _;
use std::ops::Range;
use std::sync::RwLock;

/// What a hidden value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Known values shorter than this are not replaced in free text: replacing
/// every `on` or `abc` in the logs would garble them and hide little. They
/// are still hidden where their place is known (in a URL).
pub const MIN_KNOWN_LEN: usize = 4;

/// Whether a name (a query parameter, an environment variable, a header)
/// looks like it holds a secret: it contains, in any case, `key`, `token`,
/// `secret`, `pass` (`password`, `passwd`), `sig` (`signature`), `auth`
/// or `credential`.
pub fn looks_secret(name: &str) -> bool {
    const WORDS: &[&str] = &["key", "token", "secret", "pass", "sig", "auth", "credential"];
    let lower = name.to_ascii_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
}

/// Bytes that end a URL written inside other text.
fn ends_url(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'`' | b'<' | b'>' | b')')
}

/// Calls `f` with the byte range of each secret part of each URL in `text`:
/// userinfo passwords and the values of secret-looking query parameters.
fn secret_spans(text: &str, mut f: impl FnMut(Range<usize>)) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        // The authority; a comma also ends it, for lists of servers
        // (`nats://a:4222,nats://b:4222`).
        let mut end = start;
        while end < b.len() && !matches!(b[end], b'/' | b'?' | b'#' | b',') && !ends_url(b[end]) {
            end += 1;
        }
        if let Some(at) = text[start..end].rfind('@')
            && let Some(colon) = text[start..start + at].find(':')
            && colon + 1 < at
        {
            f(start + colon + 1..start + at);
        }
        let mut j = end;
        if j < b.len() && b[j] == b'/' {
            while j < b.len() && !matches!(b[j], b'?' | b'#') && !ends_url(b[j]) {
                j += 1;
            }
        }
        if j < b.len() && b[j] == b'?' {
            j += 1;
            loop {
                let param = j;
                while j < b.len() && !matches!(b[j], b'&' | b';' | b'#') && !ends_url(b[j]) {
                    j += 1;
                }
                if let Some(eq) = text[param..j].find('=')
                    && param + eq + 1 < j
                    && looks_secret(&text[param..param + eq])
                {
                    f(param + eq + 1..j);
                }
                if j < b.len() && matches!(b[j], b'&' | b';') {
                    j += 1;
                } else {
                    break;
                }
            }
        }
        from = j.max(start);
    }
}

/// `text` with the userinfo password and the secret-looking query values
/// of every URL in it replaced by [`REDACTED`]; borrowed when there are none.
/// Works on a bare URL as on a message holding several.
pub fn redact_url(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    secret_spans(text, |r| {
        let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
        o.push_str(&text[copied..r.start]);
        o.push_str(REDACTED);
        copied = r.end;
    });
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The secret values the config holds, longest first (so that a secret that
/// contains another is replaced whole).
static KNOWN: RwLock<Vec<Box<str>>> = RwLock::new(Vec::new());

/// Marks a value as secret: [`scrub`] replaces it wherever it appears.
/// Values are kept for the life of the process (a reload may drop a
/// setting, not what was printed with it).
pub fn remember(value: &str) {
    if value.len() < MIN_KNOWN_LEN {
        return;
    }
    // As written, and as JSON logs and quoted (`{:?}`) messages escape it.
    let json = serde_json::Value::from(value).to_string();
    let json = &json[1..json.len() - 1];
    let debug = value.escape_debug().to_string();
    let Ok(mut known) = KNOWN.write() else { return };
    for form in [value, json, &debug] {
        if !known.iter().any(|k| &**k == form) {
            known.push(form.into());
        }
    }
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// Marks the secret parts of every URL in `text` as secret (see [`remember`]),
/// so that they are hidden even where they appear outside their URL.
pub fn remember_url_secrets(text: &str) {
    secret_spans(text, |r| {
        let raw = &text[r];
        remember(raw);
        // Libraries print the password decoded as often as encoded.
        if raw.contains('%')
            && let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8()
        {
            remember(&decoded);
        }
    });
}

/// `text` without any secret: URLs redacted, known secret values replaced.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut text = redact_url(text);
    let Ok(known) = KNOWN.read() else { return text };
    for secret in known.iter() {
        if text.contains(&**secret) {
            text = Cow::Owned(text.replace(&**secret, REDACTED));
        }
    }
    text
}

/// Standard error for the agent's logs, each line scrubbed before it is
/// written (see [`scrub`]). The formatter writes a whole line at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().lock().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Makes panics print their message scrubbed: a panic message may quote a
/// value, and it goes to standard error (the journal) like a log line.
pub fn scrub_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let message = scrub(&info.to_string()).into_owned();
        // Honours RUST_BACKTRACE as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "thread '{name}' {message}");
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            let _ = writeln!(err, "{}", scrub(&backtrace.to_string()));
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_hidden() {
        assert_eq!(redact_url("http://bob:pw@h:80/p"), "http://bob:[redacted]@h:80/p");
        assert_eq!(redact_url("redis://:pw@127.0.0.1:6379/0"), "redis://:[redacted]@127.0.0.1:6379/0");
        assert_eq!(redact_url("amqp://u:p@ss@h/%2f"), "amqp://u:[redacted]@h/%2f");
        // No password, nothing to hide.
        assert!(matches!(redact_url("http://bob@h/x"), Cow::Borrowed(_)));
        assert!(matches!(redact_url("http://h:8080/x?a=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_query_values_are_hidden() {
        assert_eq!(
            redact_url("https://h/p?api_key=abc&page=2&Token=t&X-Amz-Signature=s#frag"),
            "https://h/p?api_key=[redacted]&page=2&Token=[redacted]&X-Amz-Signature=[redacted]#frag"
        );
        assert_eq!(redact_url("http://h?auth=a;sig=b"), "http://h?auth=[redacted];sig=[redacted]");
        assert_eq!(redact_url("http://h/?password="), "http://h/?password=");
    }

    #[test]
    fn urls_inside_messages_and_lists() {
        let m = "error sending request for url (http://u:pw@127.0.0.1:1/in?token=t): refused";
        assert_eq!(
            redact_url(m),
            "error sending request for url (http://u:[redacted]@127.0.0.1:1/in?token=[redacted]): refused"
        );
        assert_eq!(
            redact_url("nats://a:x@h1:4222,nats://b:y@h2"),
            "nats://a:[redacted]@h1:4222,nats://b:[redacted]@h2"
        );
        assert_eq!(
            redact_url(r#"invalid url "http://u:pw@[bad": x"#),
            r#"invalid url "http://u:[redacted]@[bad": x"#
        );
    }

    #[test]
    fn names_that_look_secret() {
        for n in ["api_key", "TOKEN", "client_secret", "password", "passwd", "sig", "Authorization"] {
            assert!(looks_secret(n), "{n}");
        }
        for n in ["page", "user", "q", "HOME"] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn known_values_are_scrubbed_from_any_text() {
        remember("kv-secret-1");
        remember("kv-secret-1-longer");
        remember("ab");
        remember_url_secrets("amqp://u:p%40ss-word@h/");
        assert_eq!(
            scrub("server said: bad key kv-secret-1-longer / kv-secret-1; ab"),
            "server said: bad key [redacted] / [redacted]; ab"
        );
        assert_eq!(scrub("auth failed for p@ss-word"), "auth failed for [redacted]");
        remember("quo\"ted\\pw");
        assert_eq!(scrub(r#"{"message":"bad quo\"ted\\pw"}"#), r#"{"message":"bad [redacted]"}"#);
    }
}
