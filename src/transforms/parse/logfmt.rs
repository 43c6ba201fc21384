//! `logfmt`: `key=value` pairs, values quoted or not.

use super::text::{Cursor, slice, unescape};
use crate::event::{Map, Str, Value};

/// `key=value key="a value" flag`: values as text (`types` converts them),
/// a bare key is `true`.
pub(super) fn logfmt(line: &Str, out: &mut Map, before: usize) -> Result<(), String> {
    let s = line.as_str();
    let b = s.as_bytes();
    let mut i = 0;
    let mut any = false;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &s[key_start..i];
        if key.is_empty() {
            return Err(format!("a value without a key at column {}", i + 1));
        }
        any = true;
        if i >= b.len() || b[i] == b' ' {
            out.set_after(before, slice(line, key), Value::Bool(true));
            continue;
        }
        i += 1;
        if b.get(i) == Some(&b'"') {
            let mut cur = Cursor { s, at: i };
            let v = cur.quoted().ok_or_else(|| format!("unterminated quote for `{key}`"))?;
            out.set_after(before, slice(line, key), Value::Str(unescape(line, v)));
            i = cur.at;
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            out.set_after(before, slice(line, key), Value::Str(slice(line, &s[start..i])));
        }
    }
    if !any {
        return Err("no key=value pairs".to_string());
    }
    Ok(())
}
