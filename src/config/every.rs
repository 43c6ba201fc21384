//! Every error of a mapping, not only the first.
//!
//! Deserializing stops at the first bad value. To list the others, the bad
//! value (or the unknown key) is taken out of a copy of the mapping and the
//! copy is read again, until it reads or nothing more can be taken out. A
//! setting taken out that was required then shows as missing: that is not a
//! new error, and ends the search.

use super::yaml::{Error, Node};

/// Enough for any config written by hand; bounds the work on a broken one.
const MAX_ERRORS: usize = 32;

/// Reads `node` with `read`; on failure, every error found.
pub fn read_all<T>(node: &Node, read: impl Fn(&Node) -> Result<T, Error>) -> Result<T, Vec<Error>> {
    let first = match read(node) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut errors = vec![first];
    let mut copy = node.clone();
    let mut removed: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let Some(last) = errors.last() else { break };
        let mut path = last.path.clone();
        path.extend(last.key.clone());
        if !copy.remove_at(&path) {
            break;
        }
        removed.extend(path.last().cloned());
        let e = match read(&copy) {
            Ok(_) => break,
            Err(e) => e,
        };
        let taken_out = removed.iter().any(|k| e.message.starts_with(&format!("missing field `{k}`")));
        if taken_out || errors.contains(&e) {
            break;
        }
        errors.push(e);
    }
    Err(errors)
}
