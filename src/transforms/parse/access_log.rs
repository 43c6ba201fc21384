//! The access-log formats: `nginx_combined` and `apache_combined` (the same
//! line), and `apache_common` (the combined line without its last two
//! fields).

use super::text::{Cursor, slice, text_or_null, unescape};
use crate::event::{Map, Str, Value};

keys!(
    CLIENT = "client",
    USER = "user",
    TIME = "time",
    METHOD = "method",
    PATH = "path",
    PROTOCOL = "protocol",
    REQUEST = "request",
    STATUS = "status",
    BYTES = "bytes",
    REFERRER = "referrer",
    USER_AGENT = "user_agent",
);

/// `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"` (the common format
/// stops after the bytes). What follows is ignored (custom formats add to it).
pub(super) fn access_log(line: &Str, combined: bool, out: &mut Map, before: usize) -> Result<(), String> {
    let s = line.as_str();
    let mut cur = Cursor { s, at: 0 };
    let client = cur.word().ok_or("no client address")?;
    let _ident = cur.word().ok_or("no ident field")?;
    let user = cur.word().ok_or("no user field")?;
    let time = cur.delimited(b'[', b']').ok_or("no [time]")?;
    let request = cur.quoted().ok_or("no \"request\"")?;
    let status = cur.word().ok_or("no status")?;
    let bytes = cur.word().ok_or("no byte count")?;
    out.set_after(before, CLIENT.clone(), Value::Str(slice(line, client)));
    out.set_after(before, USER.clone(), text_or_null(line, user));
    out.set_after(before, TIME.clone(), Value::Str(slice(line, time)));
    // `METHOD PATH PROTOCOL`; the path may not hold a space, the protocol can.
    let rb = request.as_bytes();
    let first = memchr::memchr(b' ', rb);
    let second = first.and_then(|f| memchr::memchr(b' ', &rb[f + 1..]).map(|s| f + 1 + s));
    let parts = match (first, second) {
        (Some(f), Some(s)) => (Some(&request[..f]), Some(&request[f + 1..s]), Some(&request[s + 1..])),
        _ => (None, None, None),
    };
    match parts {
        (Some(m), Some(p), Some(v)) if !m.is_empty() && !p.is_empty() => {
            out.set_after(before, METHOD.clone(), Value::Str(slice(line, m)));
            out.set_after(before, PATH.clone(), Value::Str(unescape(line, p)));
            out.set_after(before, PROTOCOL.clone(), Value::Str(slice(line, v)));
        }
        // Garbage in place of a request (a TLS hello on a plain port): kept as is.
        _ => out.set_after(before, REQUEST.clone(), Value::Str(unescape(line, request))),
    }
    out.set_after(
        before,
        STATUS.clone(),
        Value::Int(status.parse().map_err(|_| format!("status `{status}` is not a number"))?),
    );
    out.set_after(
        before,
        BYTES.clone(),
        Value::Int(if bytes == "-" {
            0
        } else {
            bytes.parse().map_err(|_| format!("byte count `{bytes}` is not a number"))?
        }),
    );
    if combined {
        let referrer = cur.quoted().ok_or("no \"referrer\"")?;
        let agent = cur.quoted().ok_or("no \"user agent\"")?;
        // Both are request headers logged the same way: escaped alike, and
        // `-` when the client sent none.
        out.set_after(before, REFERRER.clone(), header_or_null(line, referrer));
        out.set_after(before, USER_AGENT.clone(), header_or_null(line, agent));
    }
    Ok(())
}

/// A logged request header: `null` for `-` (none was sent), else its text
/// without escapes.
fn header_or_null(line: &Str, part: &str) -> Value {
    if part == "-" { Value::Null } else { Value::Str(unescape(line, part)) }
}
