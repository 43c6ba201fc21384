//! `Str`: an immutable UTF-8 string backed by [`Bytes`].
//!
//! Events carry many strings that are either constants (`"message"`, a type
//! name), shared per component (the `source` URI) or slices of a larger read
//! buffer (a log line). `Bytes` covers all three without copying: static
//! strings cost nothing to clone, and a slice of a shared buffer is one
//! reference count. `String` would allocate for each of them.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable, cheaply clonable UTF-8 string.
#[derive(Clone, Default, Eq, PartialOrd, Ord)]
pub struct Str(Bytes);

impl Str {
    /// A string that lives for the whole program: no allocation, free to clone.
    pub const fn from_static(s: &'static str) -> Self {
        Str(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes known to be UTF-8, or reports where they are not.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Str(bytes))
    }

    /// Wraps bytes, replacing invalid UTF-8 sequences with U+FFFD. Copies only
    /// when a replacement is needed.
    pub fn from_utf8_lossy(bytes: Bytes) -> Self {
        // `from_utf8` checks a word at a time; `from_utf8_lossy` goes chunk
        // by chunk and costs several times more on valid text, the usual case.
        if std::str::from_utf8(&bytes).is_ok() {
            return Str(bytes);
        }
        match String::from_utf8_lossy(&bytes) {
            std::borrow::Cow::Borrowed(_) => Str(bytes),
            std::borrow::Cow::Owned(s) => Str::from(s),
        }
    }

    /// A string that lives as long as the program, stored once however often
    /// it is asked for. For per-component constants (a `source` URI, the host
    /// name) that every event carries: cloning them then costs nothing, where
    /// a shared allocation would cost an atomic increment per event and
    /// contention between the threads that create and drop events.
    pub fn interned(s: &str) -> Self {
        Str::from_static(intern(s))
    }

    /// The part of this string that `part` is (a slice of `self`), sharing
    /// its memory; a copy if `part` lies elsewhere.
    pub fn slice_of(&self, part: &str) -> Str {
        let base = self.0.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        if at >= base && at + part.len() <= base + self.0.len() {
            // A `&str` inside a UTF-8 string: still UTF-8.
            Str(self.0.slice(at - base..at - base + part.len()))
        } else {
            Str::from(part)
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or guarantees UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// A copy of `s` that lives as long as the program, stored once however
/// often it is asked for (a config reloaded a hundred times does not store
/// its constants a hundred times).
pub fn intern(s: &str) -> &'static str {
    intern_up_to(s, usize::MAX).unwrap_or("")
}

/// The most strings [`intern_some`] stores, and their longest length:
/// at most 1 MiB kept for good, whatever the input.
const SOME_MAX: usize = 4096;
const SOME_LEN: usize = 256;

/// [`intern`] for strings read from data (a disk buffer's attribute names
/// and values): stored only while the table is small, so that input with
/// ever new strings cannot grow it without bound. `None`: not stored.
pub fn intern_some(s: &str) -> Option<&'static str> {
    if s.len() > SOME_LEN {
        return None;
    }
    intern_up_to(s, SOME_MAX)
}

fn intern_up_to(s: &str, max: usize) -> Option<&'static str> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static TABLE: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| Mutex::new(HashSet::new()));
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    match table.get(s) {
        Some(stored) => Some(stored),
        None if table.len() >= max => None,
        None => {
            let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
            table.insert(leaked);
            Some(leaked)
        }
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Str {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for Str {
    /// Strings that share their memory (interned names, one source's URI)
    /// are equal without a look at the bytes; and `memcmp` is not called
    /// for empty ones, whose pointer is dangling: glibc's AVX-512 `memcmp`
    /// loads from it under a zero mask, which takes a slow microcode
    /// assist on some CPUs.
    #[inline]
    fn eq(&self, other: &Str) -> bool {
        let (a, b) = (self.0.as_ref(), other.0.as_ref());
        a.len() == b.len() && (a.is_empty() || std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<String> for Str {
    fn from(s: String) -> Self {
        Str(Bytes::from(s))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Str {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Str::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_replaces_invalid_utf8_and_keeps_valid_without_copy() {
        let valid = Bytes::from_static(b"hello");
        let s = Str::from_utf8_lossy(valid.clone());
        assert_eq!(s.as_bytes().as_ptr(), valid.as_ptr());
        let s = Str::from_utf8_lossy(Bytes::from_static(b"a\xffb"));
        assert_eq!(s, "a\u{fffd}b");
    }

    #[test]
    fn from_utf8_rejects_invalid() {
        assert!(Str::from_utf8(Bytes::from_static(b"\xc3\x28")).is_err());
    }
}
