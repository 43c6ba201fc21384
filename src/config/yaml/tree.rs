//! The tree: nodes that know where they are written, and what the loader
//! does with them (find an entry, take one out, remove what a path leads to,
//! hash what a node says regardless of where).

use serde::de::Unexpected;

use super::Pos;

#[derive(Clone, Debug)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub enum Kind {
    /// `plain` scalars are typed by their text (`10` is a number, `~` null);
    /// quoted ones are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if is_null(text))
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Feeds what the node says, not where it is written, to `h`: two
    /// nodes hash alike when they mean the same whatever their positions.
    pub fn hash_content(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash as _;
        match &self.kind {
            Kind::Scalar { text, plain } => (0u8, text, plain).hash(h),
            Kind::Seq(items) => {
                (1u8, items.len()).hash(h);
                items.iter().for_each(|i| i.hash_content(h));
            }
            Kind::Map(entries) => {
                (2u8, entries.len()).hash(h);
                for (k, v) in entries {
                    k.hash_content(h);
                    v.hash_content(h);
                }
            }
        }
    }

    /// The value of the entry with a scalar key `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        let Kind::Map(entries) = &self.kind else { return None };
        entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// Removes what `path` leads to (keys, and `[i]` for an item of a
    /// sequence). Says whether it was there.
    pub fn remove_at(&mut self, path: &[String]) -> bool {
        let Some((last, outer)) = path.split_last() else { return false };
        let mut node = self;
        for step in outer {
            let next = match &mut node.kind {
                Kind::Map(entries) => {
                    entries.iter_mut().find(|(k, _)| k.as_str() == Some(step)).map(|(_, v)| v)
                }
                Kind::Seq(items) => index(step).and_then(|i| items.get_mut(i)),
                Kind::Scalar { .. } => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        match &mut node.kind {
            Kind::Map(entries) => match entries.iter().position(|(k, _)| k.as_str() == Some(last)) {
                Some(i) => {
                    entries.remove(i);
                    true
                }
                None => false,
            },
            Kind::Seq(items) => match index(last).filter(|i| *i < items.len()) {
                Some(i) => {
                    items.remove(i);
                    true
                }
                None => false,
            },
            Kind::Scalar { .. } => false,
        }
    }

    /// Removes and returns the entry with a scalar key `key` of a mapping.
    pub fn take(&mut self, key: &str) -> Option<(Node, Node)> {
        let Kind::Map(entries) = &mut self.kind else { return None };
        let i = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(entries.remove(i))
    }

    pub(super) fn unexpected(&self) -> Unexpected<'_> {
        match &self.kind {
            Kind::Scalar { text, plain } => {
                if *plain && is_null(text) {
                    Unexpected::Unit
                } else {
                    Unexpected::Str(text)
                }
            }
            Kind::Seq(_) => Unexpected::Seq,
            Kind::Map(_) => Unexpected::Map,
        }
    }
}

/// `3` of a path step `[3]`.
fn index(step: &str) -> Option<usize> {
    step.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

pub(super) fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}
