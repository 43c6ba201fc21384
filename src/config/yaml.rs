//! YAML with positions: a tree whose every node knows its line and column,
//! and a serde deserializer over it.
//!
//! Deserializing from a tree instead of a stream lets the loader check each
//! component on its own (one broken component does not hide the errors of the
//! next) and lets every error carry the position of the innermost node it is
//! about. Environment variables are substituted inside scalar values after
//! parsing, so positions stay those of the file and a value can never inject
//! YAML structure.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

/// A position in the config file, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl Pos {
    fn of(span: &Span) -> Self {
        Pos { line: span.start.line() as u32, col: span.start.col() as u32 + 1 }
    }
}

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

    fn unexpected(&self) -> Unexpected<'_> {
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

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

// === parsing ===

/// An error with the position it is about and the path of keys leading there.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub pos: Option<Pos>,
    /// Keys from the outermost in, e.g. `["batch", "timeout"]`.
    pub path: Vec<String>,
    pub message: String,
    /// A key refused as such (an unknown setting), whose mapping `path`
    /// leads to.
    pub key: Option<String>,
}

impl Error {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Error { pos: Some(pos), path: Vec::new(), message: message.into(), key: None }
    }

    /// Sets the position unless an inner node already set it.
    fn or_at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }

    /// Prefixes the path with an outer key.
    pub fn within(mut self, key: String) -> Self {
        self.path.insert(0, key);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error { pos: None, path: Vec::new(), message: msg.to_string(), key: None }
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

// === Spanned ===

const SPANNED: &str = "$hostwatch::Spanned";
const SPANNED_FIELDS: &[&str] = &["$line", "$col", "$value"];

/// A value together with the position it was written at, for checks that run
/// after deserialization (an unknown input, an invalid URL) to point at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    pub pos: Pos,
    pub value: T,
}

impl<T: Default> Default for Spanned<T> {
    fn default() -> Self {
        Spanned { pos: Pos::default(), value: T::default() }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value with a position")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let mut line = 0;
                let mut col = 0;
                let mut value = None;
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "$line" => line = map.next_value()?,
                        "$col" => col = map.next_value()?,
                        _ => value = Some(map.next_value()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::custom("missing value"))?;
                Ok(Spanned { pos: Pos { line, col }, value })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}

struct SpannedAccess<'a> {
    node: &'a Node,
    step: u8,
}

impl<'de, 'a> de::MapAccess<'de> for SpannedAccess<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(key) = SPANNED_FIELDS.get(self.step as usize) else { return Ok(None) };
        seed.deserialize(BorrowedStr(key)).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize(self.node.pos.line.into_deserializer()),
            2 => seed.deserialize(self.node.pos.col.into_deserializer()),
            _ => seed.deserialize(NodeDe(self.node)),
        }
    }
}

struct BorrowedStr(&'static str);

impl<'de> de::Deserializer<'de> for BorrowedStr {
    type Error = Error;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_borrowed_str(self.0)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

// === the deserializer ===

/// Deserializes a value from a node.
pub fn from_node<'a, T: de::Deserialize<'a>>(node: &'a Node) -> Result<T, Error> {
    T::deserialize(NodeDe(node)).map_err(|e| e.or_at(node.pos))
}

pub struct NodeDe<'a>(pub &'a Node);

impl<'a> NodeDe<'a> {
    fn scalar(&self) -> Option<&'a str> {
        match &self.0.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn mismatch(&self, exp: &dyn de::Expected) -> Error {
        de::Error::invalid_type(self.0.unexpected(), exp)
    }

    fn number<T: std::str::FromStr>(&self, exp: &dyn de::Expected) -> Result<T, Error> {
        let text = self.scalar().ok_or_else(|| self.mismatch(exp))?;
        let clean = text.replace('_', "");
        clean.parse().map_err(|_| self.mismatch(exp))
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn visit_plain<'de, V: Visitor<'de>>(text: &str, v: V) -> Result<V::Value, Error> {
    if is_null(text) {
        return v.visit_unit();
    }
    match text {
        "true" | "True" | "TRUE" => return v.visit_bool(true),
        "false" | "False" | "FALSE" => return v.visit_bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>() {
        return v.visit_i64(n);
    }
    if let Ok(n) = text.parse::<u64>() {
        return v.visit_u64(n);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return v.visit_i64(n);
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
        && let Ok(f) = text.parse::<f64>()
    {
        return v.visit_f64(f);
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => v.visit_f64(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => v.visit_f64(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => v.visit_f64(f64::NAN),
        _ => v.visit_str(text),
    }
}

macro_rules! int_method {
    ($method:ident, $ty:ty, $visit:ident) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            let n: $ty = self.number(&v)?;
            v.$visit::<Error>(n).map_err(|e| e.or_at(self.0.pos))
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        match &self.0.kind {
            Kind::Scalar { text, plain: true } => visit_plain(text, v),
            Kind::Scalar { text, plain: false } => v.visit_str(text),
            Kind::Seq(items) => v.visit_seq(SeqAccess { items: items.iter(), index: 0 }),
            Kind::Map(entries) => v.visit_map(MapAccess { entries: entries.iter(), key: None }),
        }
        .map_err(|e| e.or_at(pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some("true" | "True" | "TRUE") => v.visit_bool(true),
            Some("false" | "False" | "FALSE") => v.visit_bool(false),
            _ => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    int_method!(deserialize_i8, i64, visit_i64);
    int_method!(deserialize_i16, i64, visit_i64);
    int_method!(deserialize_i32, i64, visit_i64);
    int_method!(deserialize_i64, i64, visit_i64);
    int_method!(deserialize_u8, u64, visit_u64);
    int_method!(deserialize_u16, u64, visit_u64);
    int_method!(deserialize_u32, u64, visit_u64);
    int_method!(deserialize_u64, u64, visit_u64);
    int_method!(deserialize_f32, f64, visit_f64);
    int_method!(deserialize_f64, f64, visit_f64);

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some(text) => v.visit_str(text),
            None => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        if self.0.is_null() { v.visit_none() } else { v.visit_some(self) }.map_err(|e| e.or_at(pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        if self.0.is_null() { v.visit_unit() } else { Err(self.mismatch(&v)) }
            .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, Error> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        v.visit_newtype_struct(self).map_err(|e| e.or_at(pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            Kind::Seq(items) => v.visit_seq(SeqAccess { items: items.iter(), index: 0 }),
            _ => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            Kind::Map(entries) => v.visit_map(MapAccess { entries: entries.iter(), key: None }),
            // An empty value (`buffer:`) is an empty mapping.
            _ if self.0.is_null() => v.visit_map(MapAccess { entries: [].iter(), key: None }),
            _ => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        if name == SPANNED {
            return v.visit_map(SpannedAccess { node: self.0, step: 0 });
        }
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        match &self.0.kind {
            Kind::Scalar { text, .. } => v.visit_enum(text.as_str().into_deserializer()),
            Kind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                v.visit_enum(EnumAccess { key, value })
            }
            _ => Err(de::Error::invalid_type(self.0.unexpected(), &"a name, or a mapping with a single key")),
        }
        .map_err(|e: Error| e.or_at(pos))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqAccess<'a> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(node)).map(Some).map_err(|e| e.or_at(node.pos).within(format!("[{index}]")))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    key: Option<&'a (Node, Node)>,
}

impl<'de, 'a> de::MapAccess<'de> for MapAccess<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else { return Ok(None) };
        self.key = Some(entry);
        seed.deserialize(NodeDe(&entry.0)).map(Some).map_err(|e| {
            let mut e = e.or_at(entry.0.pos);
            e.key = entry.0.as_str().map(str::to_string);
            e
        })
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.key.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        seed.deserialize(NodeDe(value)).map_err(|e| {
            let e = e.or_at(value.pos);
            match key.as_str() {
                Some(k) => e.within(k.to_string()),
                None => e,
            }
        })
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = Error;
    type Variant = NodeDe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NodeDe<'a>), Error> {
        let variant = seed.deserialize(NodeDe(self.key)).map_err(|e| e.or_at(self.key.pos))?;
        Ok((variant, NodeDe(self.value)))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        if self.0.is_null() { Ok(()) } else { Err(Error::at(self.0.pos, "this option takes no value")) }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let pos = self.0.pos;
        seed.deserialize(self).map_err(|e| e.or_at(pos))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: Spanned<String>,
        inner: Inner,
        ratio: Option<f64>,
    }

    #[test]
    fn errors_point_at_the_innermost_node() {
        let text = "name: a\ninner:\n  port: 70000\n";
        let node = parse(text, &no_env).unwrap();
        let err = from_node::<Outer>(&node).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 3, col: 9 }));
        assert_eq!(err.path, vec!["inner", "port"]);
        assert!(err.message.contains("70000"), "{}", err.message);
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        let text = "name: a\ninner:\n  port: 80\n  prot: 1\n";
        let node = parse(text, &no_env).unwrap();
        let err = from_node::<Outer>(&node).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 4, col: 3 }));
        assert!(err.message.contains("unknown field `prot`"), "{}", err.message);
    }

    #[test]
    fn missing_field_points_at_the_mapping() {
        let text = "name: a\ninner:\n  tags: [x]\n";
        let node = parse(text, &no_env).unwrap();
        let err = from_node::<Outer>(&node).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 3, col: 3 }));
        assert!(err.message.contains("missing field `port`"));
    }

    #[test]
    fn spanned_records_position() {
        let node = parse("name:   hello\ninner: {port: 1}\nratio: 0.5\n", &no_env).unwrap();
        let v: Outer = from_node(&node).unwrap();
        assert_eq!(v.name.pos, Pos { line: 1, col: 9 });
        assert_eq!(v.name.value, "hello");
        assert_eq!(v.ratio, Some(0.5));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let errs = parse("a: [1, 2\nb: c\n", &no_env).unwrap_err();
        assert!(errs[0].pos.is_some());
        assert!(errs[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn interpolation() {
        let env = |k: &str| match k {
            "PORT" => Some("8080".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(interpolate("x${PORT}y", &env).unwrap(), "x8080y");
        assert_eq!(interpolate("${NOPE:-9}", &env).unwrap(), "9");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
        assert_eq!(interpolate("$$HOME and $x", &env).unwrap(), "$HOME and $x");
        assert!(interpolate("${NOPE}", &env).unwrap_err().contains("`NOPE` is not set"));
        assert!(interpolate("${1A}", &env).is_err());
        assert!(interpolate("${OPEN", &env).is_err());
    }

    #[test]
    fn secrets_from_files_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok-from-file\n").unwrap();
        let token = dir.path().join("token");
        let creds = dir.path().to_str().unwrap().to_string();
        let env = move |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| creds.clone());
        let text = format!("Bearer ${{file:{}}}", token.display());
        assert_eq!(interpolate(&text, &env).unwrap(), "Bearer tok-from-file");
        assert_eq!(interpolate("${credential:token}", &env).unwrap(), "tok-from-file");
        // What a file holds is a secret from then on.
        assert_eq!(crate::util::redact::scrub("got tok-from-file"), "got [redacted]");

        let missing = interpolate("${file:/nonexistent/secret}", &env).unwrap_err();
        assert!(missing.contains("cannot read /nonexistent/secret"), "{missing}");
        assert!(interpolate("${file:relative/path}", &env).unwrap_err().contains("must be absolute"));
        assert!(interpolate("${credential:../token}", &env).unwrap_err().contains("without `/`"));
        let unset = interpolate("${credential:token}", &no_env).unwrap_err();
        assert!(unset.contains("$CREDENTIALS_DIRECTORY is not set"), "{unset}");
    }

    #[test]
    fn a_file_that_cannot_be_read_is_an_error_at_its_position() {
        let errs = parse("a: 1\nb: \"${file:/nonexistent/x}\"\n", &no_env).unwrap_err();
        assert_eq!(errs[0].pos, Some(Pos { line: 2, col: 4 }));
    }

    #[test]
    fn variables_named_like_secrets_are_remembered() {
        let env = |k: &str| Some(format!("value-of-{k}"));
        interpolate("${OPS_API_TOKEN} ${PLAIN_SETTING}", &env).unwrap();
        assert_eq!(
            crate::util::redact::scrub("value-of-OPS_API_TOKEN value-of-PLAIN_SETTING"),
            "[redacted] value-of-PLAIN_SETTING"
        );
    }

    #[test]
    fn substituted_plain_scalars_are_typed() {
        let env = |_: &str| Some("8080".to_string());
        let node = parse("name: n\ninner: {port: \"${P}\"}\n", &env).unwrap();
        let v: Outer = from_node(&node).unwrap();
        assert_eq!(v.inner.port, 8080);
    }

    #[test]
    fn missing_variables_are_all_reported_with_positions() {
        let errs = parse("a: ${X}\nb: ${Y}\n# ${IN_A_COMMENT}\n", &no_env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[1].pos, Some(Pos { line: 2, col: 4 }));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let text = "base: &b {port: 1, tags: [a]}\nname: x\ninner:\n  <<: *b\n  port: 2\n";
        let node = parse(text, &no_env).unwrap();
        let Kind::Map(entries) = &node.kind else { panic!() };
        let inner = &entries[2].1;
        let v: Inner = from_node(inner).unwrap();
        assert_eq!(v.port, 2);
        assert_eq!(v.tags, vec!["a"]);
    }
}
