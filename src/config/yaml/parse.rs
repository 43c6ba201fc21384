//! From text to a tree: one pass over the parser's events, resolving
//! anchors, aliases and merge keys and interpolating each scalar as it comes.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::interpolate::interpolate;
use super::{Error, Kind, Node, Pos};

impl Pos {
    fn of(span: &Span) -> Self {
        Pos { line: span.start.line() as u32, col: span.start.col() as u32 + 1 }
    }
}

/// Parses the first document of `text` into a tree, substituting environment
/// variables in scalar values with `env`. Returns every substitution error.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Node, Vec<Error>> {
    let mut builder = Builder { stack: Vec::new(), anchors: HashMap::new(), root: None };
    let mut errors = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                let pos = Pos { line: m.line() as u32, col: m.col() as u32 + 1 };
                return Err(vec![Error::at(pos, format!("invalid YAML: {}", e.info()))]);
            }
        };
        let pos = Pos::of(&span);
        match event {
            Event::DocumentEnd if builder.root.is_some() => break,
            Event::Scalar(value, style, anchor, _) => {
                let plain = style == ScalarStyle::Plain;
                let text = match interpolate(&value, env) {
                    Ok(t) => t,
                    Err(message) => {
                        errors.push(Error::at(pos, message));
                        value.into_owned()
                    }
                };
                builder.add(Node { pos, kind: Kind::Scalar { text, plain } }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                builder.stack.push((Node { pos, kind: Kind::Seq(Vec::new()) }, anchor, None))
            }
            Event::MappingStart(anchor, _) => {
                builder.stack.push((Node { pos, kind: Kind::Map(Vec::new()) }, anchor, None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((mut node, anchor, _)) = builder.stack.pop() {
                    merge_keys(&mut node, &mut errors);
                    builder.add(node, anchor);
                }
            }
            Event::Alias(id) => match builder.anchors.get(&id) {
                Some(node) => {
                    let node = node.clone();
                    builder.add(node, 0);
                }
                None => errors.push(Error::at(pos, "alias to an unknown anchor")),
            },
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(builder.root.unwrap_or(Node { pos: Pos { line: 1, col: 1 }, kind: Kind::Map(Vec::new()) }))
}

struct Builder {
    /// Open collections, with their anchor and, for maps, a key awaiting its value.
    stack: Vec<(Node, usize, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn add(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((parent, _, pending)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                Kind::Scalar { .. } => {}
            },
        }
    }
}

/// YAML merge keys: `<<: *defaults` adds the entries of `defaults` that the
/// mapping does not set itself.
fn merge_keys(node: &mut Node, errors: &mut Vec<Error>) {
    let Some((key, value)) = node.take("<<") else { return };
    if !matches!(&key.kind, Kind::Scalar { plain: true, .. }) {
        // A quoted "<<" is an ordinary key.
        if let Kind::Map(entries) = &mut node.kind {
            entries.push((key, value));
        }
        return;
    }
    let sources = match value.kind {
        Kind::Map(_) => vec![value],
        Kind::Seq(items) => items,
        Kind::Scalar { .. } => {
            errors.push(Error::at(value.pos, "`<<` merges a mapping or a list of mappings"));
            return;
        }
    };
    let Kind::Map(entries) = &mut node.kind else { return };
    for source in sources {
        let Kind::Map(extra) = source.kind else {
            errors.push(Error::at(source.pos, "`<<` merges a mapping or a list of mappings"));
            continue;
        };
        for (k, v) in extra {
            if !entries.iter().any(|(have, _)| have.as_str() == k.as_str()) {
                entries.push((k, v));
            }
        }
    }
}
