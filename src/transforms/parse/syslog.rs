//! `syslog`: RFC 5424 and RFC 3164 lines, with or without the priority.

use super::text::{Cursor, slice, unescape};
use super::time::month_number;
use crate::event::{Map, Str, Value};

keys!(
    FACILITY = "facility",
    SEVERITY = "severity",
    VERSION = "version",
    TIMESTAMP = "timestamp",
    HOSTNAME = "hostname",
    APPNAME = "appname",
    PROCID = "procid",
    MSGID = "msgid",
    STRUCTURED_DATA = "structured_data",
    MESSAGE = "message",
);

const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

pub(super) fn syslog(line: &Str, out: &mut Map, before: usize) -> Result<(), String> {
    let s = line.as_str();
    let mut rest = s;
    if let Some(after) = s.strip_prefix('<') {
        let end = after.find('>').ok_or("`<` without `>` in the priority")?;
        let pri: u32 = after[..end].parse().map_err(|_| "the priority is not a number".to_string())?;
        if pri > 191 {
            return Err(format!("priority {pri} is out of range"));
        }
        out.set_after(before, FACILITY.clone(), Value::from(FACILITIES[(pri / 8) as usize]));
        out.set_after(before, SEVERITY.clone(), Value::from(SEVERITIES[(pri % 8) as usize]));
        rest = &after[end + 1..];
    }
    let b = rest.as_bytes();
    if b.len() > 2
        && b[0].is_ascii_digit()
        && (b[1] == b' ' || (b[1].is_ascii_digit() && b.get(2) == Some(&b' ')))
    {
        rfc5424(line, rest, out, before)
    } else {
        rfc3164(line, rest, out, before)
    }
}

/// `VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`; `-` is nil.
fn rfc5424(line: &Str, rest: &str, out: &mut Map, before: usize) -> Result<(), String> {
    let mut cur = Cursor { s: rest, at: 0 };
    let version = cur.word().ok_or("no version")?;
    out.set_after(
        before,
        VERSION.clone(),
        Value::Int(version.parse().map_err(|_| "bad version".to_string())?),
    );
    for key in [&TIMESTAMP, &HOSTNAME, &APPNAME, &PROCID, &MSGID] {
        let w = cur.word().ok_or_else(|| format!("no {key}"))?;
        if w != "-" {
            out.set_after(before, key.clone(), Value::Str(slice(line, w)));
        }
    }
    cur.skip_spaces();
    let b = rest.as_bytes();
    if b.get(cur.at) == Some(&b'-') {
        cur.at += 1;
    } else if b.get(cur.at) == Some(&b'[') {
        let mut sd = Map::new();
        while b.get(cur.at) == Some(&b'[') {
            cur.at += 1;
            let id_end = rest[cur.at..].find([' ', ']']).ok_or("unterminated structured data")? + cur.at;
            let id = &rest[cur.at..id_end];
            cur.at = id_end;
            let mut params = Map::new();
            loop {
                cur.skip_spaces();
                match b.get(cur.at) {
                    Some(b']') => {
                        cur.at += 1;
                        break;
                    }
                    Some(_) => {
                        let eq =
                            rest[cur.at..].find('=').ok_or("structured data parameter without `=`")? + cur.at;
                        let name = &rest[cur.at..eq];
                        cur.at = eq + 1;
                        let value = cur.quoted().ok_or("structured data value not quoted")?;
                        params.insert(slice(line, name), Value::Str(unescape(line, value)));
                    }
                    None => return Err("unterminated structured data".to_string()),
                }
            }
            sd.insert(slice(line, id), Value::Object(params));
        }
        out.set_after(before, STRUCTURED_DATA.clone(), Value::Object(sd));
    } else {
        return Err("no structured data (nor `-`)".to_string());
    }
    let msg = rest[cur.at..].strip_prefix(' ').unwrap_or(&rest[cur.at..]);
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    out.set_after(before, MESSAGE.clone(), Value::Str(slice(line, msg)));
    Ok(())
}

/// `Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`.
fn rfc3164(line: &Str, rest: &str, out: &mut Map, before: usize) -> Result<(), String> {
    let rest = rest.trim_start();
    // "Nov 27 03:50:00" or "Nov  7 03:50:00": 15 characters.
    if rest.len() < 16 || month_number(&rest.as_bytes()[..3]).is_none() || rest.as_bytes()[15] != b' ' {
        return Err("not syslog: no `Mmm dd hh:mm:ss` time".to_string());
    }
    out.set_after(before, TIMESTAMP.clone(), Value::Str(slice(line, &rest[..15])));
    let mut cur = Cursor { s: rest, at: 15 };
    let host = cur.word().ok_or("no host name")?;
    out.set_after(before, HOSTNAME.clone(), Value::Str(slice(line, host)));
    cur.skip_spaces();
    let after = &rest[cur.at..];
    // The tag ends at `:`, `[` or a space; a `[pid]` may follow.
    let tag_end = after.find([':', '[', ' ']).unwrap_or(after.len());
    let mut msg_start = tag_end;
    if tag_end > 0 && after[tag_end..].starts_with(['[', ':']) {
        out.set_after(before, APPNAME.clone(), Value::Str(slice(line, &after[..tag_end])));
        if after[tag_end..].starts_with('[')
            && let Some(close) = after[tag_end..].find(']')
        {
            out.set_after(
                before,
                PROCID.clone(),
                Value::Str(slice(line, &after[tag_end + 1..tag_end + close])),
            );
            msg_start = tag_end + close + 1;
        }
        if after[msg_start..].starts_with(':') {
            msg_start += 1;
        }
    } else {
        msg_start = 0;
    }
    let msg = after[msg_start..].trim_start_matches(' ');
    out.set_after(before, MESSAGE.clone(), Value::Str(slice(line, msg)));
    Ok(())
}
