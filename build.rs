//! Generates the configuration reference (`hostwatch reference`, committed
//! as docs/reference.md) from the code itself: each component's module
//! documentation, the `///` documentation of every field of its `Config`
//! (and of the settings nested in it), and its example file, the one
//! `hostwatch example TYPE` prints. The docs cannot drift from the code: a
//! test compares the committed file with what this makes.
//!
//! Rust keeps doc comments out of the binary, so they are read here from
//! the sources. The sources are formatted by rustfmt, which makes a reader
//! of lines enough: items at column 0, fields and variants indented by four.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    println!("cargo:rerun-if-changed=src");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let text = reference(Path::new("src"))?;
    std::fs::write(out.join("reference.md"), text)?;
    Ok(())
}

// === reading the sources ===

#[derive(Debug, Default, Clone)]
struct Field {
    /// The YAML key (after `rename`).
    name: String,
    ty: String,
    doc: String,
    /// `#[serde(default ...)]`: the key may be left out.
    has_default: bool,
}

#[derive(Debug, Clone)]
enum Shape {
    Unit,
    /// `Name(T)`
    Newtype(String),
    /// `Name { fields }`
    Struct(Vec<Field>),
}

#[derive(Debug, Clone)]
struct Variant {
    /// The YAML name (after `rename` / `rename_all`).
    name: String,
    shape: Shape,
}

#[derive(Debug, Clone)]
enum Body {
    Struct(Vec<Field>),
    Enum { variants: Vec<Variant>, untagged: bool },
}

#[derive(Debug, Clone)]
struct Item {
    name: String,
    file: PathBuf,
    body: Body,
}

/// `///` lines, without the marker.
fn doc_line(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("///")?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Joins doc lines into paragraphs of one line each.
fn join_doc(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        if l.trim().is_empty() {
            out.push_str("\n\n");
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(l.trim());
        }
    }
    out.trim().to_string()
}

/// The value of `key = "..."` in a `#[serde(...)]` attribute.
fn serde_value(attr: &str, key: &str) -> Option<String> {
    let at = attr.find(&format!("{key} = \""))? + key.len() + 4;
    let end = attr[at..].find('"')? + at;
    Some(attr[at..end].to_string())
}

/// `#[serde(default)]`, `#[serde(default = "f")]`, `#[serde(default, ...)]`.
fn has_serde_default(attrs: &[String]) -> bool {
    attrs.iter().any(|a| {
        a.starts_with("#[serde(")
            && a.trim_start_matches("#[serde(").split([',', ')']).any(|p| p.trim().starts_with("default"))
    })
}

fn rename(name: &str, rule: Option<&str>) -> String {
    match rule {
        Some("snake_case") => {
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() {
                    if i > 0 {
                        out.push('_');
                    }
                    out.extend(c.to_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Some("lowercase") => name.to_lowercase(),
        _ => name.to_string(),
    }
}

/// Bracket depth change of a line of code (generics, parentheses, braces).
fn depth(s: &str) -> i32 {
    s.chars()
        .map(|c| match c {
            '<' | '(' | '[' | '{' => 1,
            '>' | ')' | ']' | '}' => -1,
            _ => 0,
        })
        .sum()
}

/// Fields of a struct (or struct variant) body: `name: Type,` lines with
/// their docs and attributes; `indent` is the fields' indentation.
fn parse_fields(lines: &[&str], indent: usize) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut doc = Vec::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let lead = line.len() - line.trim_start().len();
        if lead != indent {
            continue;
        }
        let t = line.trim();
        if let Some(d) = doc_line(line) {
            doc.push(d.to_string());
            continue;
        }
        if t.starts_with("#[") {
            attrs.push(t.to_string());
            continue;
        }
        if t.starts_with("//") || t.is_empty() {
            continue;
        }
        let decl = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
        let Some((name, ty)) = decl.split_once(':') else {
            doc.clear();
            attrs.clear();
            continue;
        };
        // A type may go on over more lines.
        let mut ty = ty.trim().to_string();
        while depth(&ty) > 0 && i < lines.len() {
            ty.push_str(lines[i].trim());
            i += 1;
        }
        let ty = ty.trim_end_matches(',').trim().to_string();
        let serde_rename = attrs.iter().find_map(|a| serde_value(a, "rename"));
        fields.push(Field {
            name: serde_rename.unwrap_or_else(|| name.trim().to_string()),
            ty,
            doc: join_doc(&doc),
            has_default: has_serde_default(&attrs),
        });
        doc.clear();
        attrs.clear();
    }
    fields
}

fn parse_variants(lines: &[&str], rule: Option<&str>) -> Vec<Variant> {
    let mut variants = Vec::new();
    let mut doc = Vec::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let lead = line.len() - line.trim_start().len();
        if lead != 4 {
            continue;
        }
        let t = line.trim();
        if let Some(d) = doc_line(line) {
            doc.push(d.to_string());
            continue;
        }
        if t.starts_with("#[") {
            attrs.push(t.to_string());
            continue;
        }
        if t.starts_with("//") || t.is_empty() {
            continue;
        }
        let ident: String = t.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if ident.is_empty() {
            continue;
        }
        let rest = t[ident.len()..].trim();
        let shape = if let Some(inner) = rest.strip_prefix('(') {
            Shape::Newtype(inner.trim_end_matches(',').trim_end_matches(')').trim().to_string())
        } else if let Some(inner) = rest.strip_prefix('{') {
            if let Some(one_line) = inner.trim_end_matches(',').trim().strip_suffix('}') {
                // `Basic { user: String, password: String },`
                let fields = one_line
                    .split(',')
                    .filter_map(|f| f.split_once(':'))
                    .map(|(n, ty)| Field {
                        name: n.trim().to_string(),
                        ty: ty.trim().to_string(),
                        ..Field::default()
                    })
                    .collect();
                Shape::Struct(fields)
            } else {
                let start = i;
                while i < lines.len() && lines[i].trim_start() != lines[i] && !lines[i].starts_with("    }") {
                    i += 1;
                }
                let fields = parse_fields(&lines[start..i], 8);
                // The closing `},`.
                i += 1;
                Shape::Struct(fields)
            }
        } else {
            Shape::Unit
        };
        let name =
            attrs.iter().find_map(|a| serde_value(a, "rename")).unwrap_or_else(|| rename(&ident, rule));
        variants.push(Variant { name, shape });
        doc.clear();
        attrs.clear();
    }
    variants
}

/// Every struct and enum at the top of a file that derives `Deserialize`
/// (and the agent's `Config`, which is read by hand).
fn parse_file(file: &Path, text: &str) -> Vec<Item> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.starts_with("#[") {
            let mut attr = line.to_string();
            while depth(&attr) > 0 && i < lines.len() {
                attr.push_str(lines[i].trim());
                i += 1;
            }
            attrs.push(attr);
            continue;
        }
        if line.starts_with("///") {
            continue;
        }
        let decl = line.strip_prefix("pub ").unwrap_or(line);
        let (is_struct, rest) = if let Some(r) = decl.strip_prefix("struct ") {
            (true, r)
        } else if let Some(r) = decl.strip_prefix("enum ") {
            (false, r)
        } else {
            attrs.clear();
            continue;
        };
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let derives = attrs.iter().any(|a| a.starts_with("#[derive(") && a.contains("Deserialize"));
        let agent_config = name == "Config" && file.ends_with("topology/config.rs");
        let container: String = attrs.iter().filter(|a| a.starts_with("#[serde(")).cloned().collect();
        attrs.clear();
        if !rest.trim_end().ends_with('{') {
            continue;
        }
        let start = i;
        while i < lines.len() && lines[i] != "}" {
            i += 1;
        }
        if !(derives || agent_config) {
            continue;
        }
        let body = &lines[start..i];
        let body = if is_struct {
            Body::Struct(parse_fields(body, 4))
        } else {
            Body::Enum {
                variants: parse_variants(body, serde_value(&container, "rename_all").as_deref()),
                untagged: container.contains("untagged"),
            }
        };
        items.push(Item { name, file: file.to_path_buf(), body });
    }
    items
}

/// The `//!` documentation of a module, as written (it is markdown).
fn module_doc(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    lines.join("\n").trim().to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

// === rendering ===

struct Index {
    items: Vec<Item>,
    /// Each file's text, for its `use` lines.
    texts: HashMap<PathBuf, String>,
}

/// The path a file's `use` lines give a name: `use crate::batch::{Mode, ..}`
/// makes `Mode` `crate::batch::Mode`.
fn imported(text: &str, name: &str) -> Option<String> {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("use ") else { continue };
        let rest = rest.trim_end_matches(';');
        let (module, names) = match rest.split_once("::{") {
            Some((m, names)) => (m, names.trim_end_matches('}')),
            None => match rest.rsplit_once("::") {
                Some((m, n)) => (m, n),
                None => continue,
            },
        };
        if names.split(',').any(|n| n.trim() == name) {
            return Some(format!("{module}::{name}"));
        }
    }
    None
}

impl Index {
    /// The item a type names, seen from `from`: a path (`multiline::Config`,
    /// `crate::buffer::BufferConfig`) picks the file by its modules; a bare
    /// name is looked for in the same file, then the same module directory,
    /// then anywhere if only one item has that name.
    fn resolve(&self, ty: &str, from: &Path) -> Option<&Item> {
        let mut parts: Vec<&str> = ty.split("::").filter(|p| *p != "crate" && *p != "self").collect();
        let name = parts.pop()?;
        let named: Vec<&Item> = self.items.iter().filter(|i| i.name == name).collect();
        if parts == ["super"] {
            // The parent module: `x/mod.rs` → `mod.rs` above it; `x.rs` → `mod.rs` beside it.
            let dir = from.parent()?;
            let dir = if from.ends_with("mod.rs") { dir.parent()? } else { dir };
            let parent = dir.join("mod.rs");
            return named.into_iter().find(|i| i.file == parent);
        }
        if !parts.is_empty() {
            let modules = parts.join("/");
            return named.into_iter().find(|i| {
                let f = i.file.to_string_lossy();
                f.contains(&format!("{modules}.rs")) || f.contains(&format!("{modules}/"))
            });
        }
        if let Some(i) = named.iter().find(|i| i.file == from) {
            return Some(i);
        }
        if let Some(path) = self.texts.get(from).and_then(|t| imported(t, name))
            && let Some(i) = self.resolve(&path, from)
        {
            return Some(i);
        }
        let dir = from.parent()?;
        if let Some(i) = named.iter().find(|i| i.file.parent() == Some(dir)) {
            return Some(i);
        }
        if named.len() == 1 { Some(named[0]) } else { None }
    }
}

/// The generic argument of `Outer<...>`.
fn generic<'a>(ty: &'a str, outer: &str) -> Option<&'a str> {
    let start = ty.find('<')?;
    let head = &ty[..start];
    if head.rsplit("::").next() != Some(outer) || !ty.ends_with('>') {
        return None;
    }
    Some(ty[start + 1..ty.len() - 1].trim())
}

/// Splits `K, V` at the top level.
fn split_pair(s: &str) -> Option<(&str, &str)> {
    let mut d = 0;
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' => d += 1,
            '>' | ')' => d -= 1,
            ',' if d == 0 => return Some((s[..i].trim(), s[i + 1..].trim())),
            _ => {}
        }
    }
    None
}

/// What a row says about one field's type, and where its own settings are.
struct Rendered<'a> {
    text: String,
    /// A struct (or untagged enum) whose fields get rows of their own, and
    /// the suffix their names take (`.` or `[].`).
    nested: Option<(&'a Item, &'static str)>,
}

fn render_type<'a>(index: &'a Index, ty: &str, from: &Path) -> Rendered<'a> {
    for wrapper in ["Spanned", "Option", "Box"] {
        if let Some(inner) = generic(ty, wrapper) {
            return render_type(index, inner, from);
        }
    }
    if let Some(inner) = generic(ty, "Vec") {
        let r = render_type(index, inner, from);
        return Rendered { text: format!("list of {}", r.text), nested: r.nested.map(|(i, _)| (i, "[].")) };
    }
    for map in ["IndexMap", "HashMap", "BTreeMap"] {
        if let Some((_, value)) = generic(ty, map).and_then(split_pair) {
            let r = render_type(index, value, from);
            return Rendered { text: format!("map of {}", r.text), nested: None };
        }
    }
    let last = ty.rsplit("::").next().unwrap_or(ty);
    let simple = match last {
        "String" | "str" => Some("string"),
        "PathBuf" => Some("path"),
        "bool" => Some("bool"),
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => Some("integer"),
        "f32" | "f64" => Some("number"),
        "Duration" | "ConfigDuration" => Some("duration"),
        "ByteSize" => Some("size"),
        "SocketAddr" => Some("address"),
        _ => None,
    };
    if let Some(s) = simple {
        return Rendered { text: s.to_string(), nested: None };
    }
    let Some(item) = index.resolve(ty, from) else {
        return Rendered { text: format!("{UNKNOWN_TYPE} `{last}`"), nested: None };
    };
    match &item.body {
        Body::Struct(_) => Rendered { text: "object".to_string(), nested: Some((item, ".")) },
        Body::Enum { variants, untagged: true } => {
            let kinds: Vec<String> = variants
                .iter()
                .map(|v| match &v.shape {
                    Shape::Unit => "null".to_string(),
                    Shape::Newtype(t) => render_type(index, t, &item.file).text,
                    Shape::Struct(_) => "object".to_string(),
                })
                .collect();
            let has_struct = variants.iter().any(|v| matches!(v.shape, Shape::Struct(_)));
            Rendered { text: kinds.join(" or "), nested: has_struct.then_some((item, ".")) }
        }
        Body::Enum { variants, untagged: false } => {
            let kinds: Vec<String> = variants
                .iter()
                .map(|v| match &v.shape {
                    Shape::Unit => format!("`{}`", v.name),
                    Shape::Newtype(t) => {
                        format!("`{{{}: {}}}`", v.name, render_type(index, t, &item.file).text)
                    }
                    Shape::Struct(fields) => {
                        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                        format!("`{{{}: {{{}}}}}`", v.name, names.join(", "))
                    }
                })
                .collect();
            Rendered { text: kinds.join(", "), nested: None }
        }
    }
}

/// What a field without a `///` doc gets; the reference test looks for it.
const UNDOCUMENTED: &str = "**undocumented**";
/// What a type this reader cannot find gets; the reference test looks for it.
const UNKNOWN_TYPE: &str = "**type not found:**";
/// What an optional field whose doc does not say `Default: ...` gets.
const NO_DEFAULT: &str = "**default not documented**";

/// A field's description without its default, and the default.
fn split_default(field: &Field, optional_type: bool) -> (String, String) {
    let doc = field.doc.as_str();
    let mut default = None;
    let mut text = doc.to_string();
    if let Some(at) = doc.rfind("Default: ") {
        let rest = &doc[at + "Default: ".len()..];
        // The default runs to the end of its sentence: a `.` followed by a
        // space or the end, outside backquotes and parentheses.
        let (mut quoted, mut paren) = (false, 0);
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '`' => quoted = !quoted,
                '(' if !quoted => paren += 1,
                ')' if !quoted => paren -= 1,
                '.' if !quoted
                    && paren == 0
                    && (i + 1 == rest.len() || rest[i + 1..].starts_with([' ', '\n'])) =>
                {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        default = Some(rest[..end].trim().to_string());
        let after = rest.get(end + 1..).unwrap_or("").trim();
        text = format!("{} {}", doc[..at].trim(), after).trim().to_string();
    } else if let Some(at) = doc.rfind("Required.") {
        default = Some("required".to_string());
        text = format!("{} {}", doc[..at].trim(), doc[at + "Required.".len()..].trim()).trim().to_string();
    }
    let default = default.unwrap_or_else(|| {
        if field.doc.is_empty() {
            UNDOCUMENTED.to_string()
        } else if field.has_default || optional_type {
            NO_DEFAULT.to_string()
        } else {
            "required".to_string()
        }
    });
    (text, default)
}

fn cell(s: &str) -> String {
    unlink(s).replace('|', "\\|").replace("\n\n", "<br>").replace('\n', " ")
}

/// Rustdoc's intra-doc links (`` [`tail`] ``) point nowhere in the
/// reference: they keep their text.
fn unlink(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("[`") {
        let Some(close) = rest[at..].find("`]").map(|c| c + at) else { break };
        let after = &rest[close + 2..];
        out.push_str(&rest[..at]);
        if after.starts_with('(') || after.starts_with('[') {
            // A real markdown link: kept whole.
            out.push_str(&rest[at..close + 2]);
        } else {
            out.push_str(&rest[at + 1..close + 1]);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn rows(out: &mut String, index: &Index, item: &Item, prefix: &str, level: usize) {
    let fields: Vec<Field> = match &item.body {
        Body::Struct(fields) => fields.clone(),
        Body::Enum { variants, .. } => variants
            .iter()
            .filter_map(|v| match &v.shape {
                Shape::Struct(f) => Some(f.clone()),
                _ => None,
            })
            .flatten()
            .collect(),
    };
    for f in &fields {
        let r = render_type(index, &f.ty, &item.file);
        let optional = f.ty.contains("Option<");
        let (text, default) = split_default(f, optional);
        let _ = writeln!(
            out,
            "| `{prefix}{}` | {} | {} | {} |",
            f.name,
            cell(&r.text),
            cell(&default),
            cell(&text)
        );
        if let Some((nested, sep)) = r.nested {
            // Bounded: settings nest a few levels at most.
            if level < 4 && nested.name != item.name {
                rows(out, index, nested, &format!("{prefix}{}{sep}", f.name), level + 1);
            }
        }
    }
}

fn table(out: &mut String, index: &Index, item: &Item, prefix: &str, common: &[(&str, &str, &str, &str)]) {
    out.push_str("| option | type | default | description |\n|---|---|---|---|\n");
    for (name, ty, default, text) in common {
        let _ = writeln!(out, "| `{name}` | {ty} | {default} | {text} |");
    }
    rows(out, index, item, prefix, 0);
    out.push('\n');
}

/// `("agent", include_str!("agent/example.yaml")),` lines of a `TYPES` list.
fn types(module: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let text = std::fs::read_to_string(module)?;
    let dir = module.parent().ok_or("no parent")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix("(\"") else { continue };
        let Some((name, rest)) = rest.split_once('"') else { continue };
        let Some(path) =
            rest.split_once("include_str!(\"").and_then(|(_, p)| p.split_once('"')).map(|(p, _)| p)
        else {
            continue;
        };
        out.push((name.to_string(), dir.join(path)));
    }
    Ok(out)
}

/// The module of a component: `file/example.yaml` → `file/mod.rs`,
/// `filter.yaml` → `filter.rs`.
fn module_of(example: &Path) -> PathBuf {
    if example.file_name().is_some_and(|n| n == "example.yaml") {
        example.with_file_name("mod.rs")
    } else {
        example.with_extension("rs")
    }
}

fn reference(src: &Path) -> Result<String, Error> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut items = Vec::new();
    let mut texts = HashMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        items.extend(parse_file(f, &text));
        texts.insert(f.clone(), text);
    }
    let index = Index { items, texts };
    let find = |file: &Path, name: &str| -> Result<&Item, Error> {
        index
            .items
            .iter()
            .find(|i| i.file == file && i.name == name)
            .ok_or_else(|| format!("no `{name}` in {}", file.display()).into())
    };

    let mut out = String::new();
    out.push_str(
        "# hostwatch configuration reference\n\n\
         Every setting of the agent and of each component type: its type, its default and what it\n\
         does, then the component's documented example (what `hostwatch example TYPE` prints).\n\
         Durations are written `250ms`, `10s`, `5m`; sizes `64KiB`, `1MiB`, `1GiB`. `${NAME}` and\n\
         `${NAME:-default}` in a value are taken from the environment.\n\n\
         This file is generated from the code's documentation by `hostwatch reference`; do not edit\n\
         it: change the `///` comments or the example files and run\n\
         `cargo run -q -- reference > docs/reference.md`.\n\n",
    );
    out.push_str("## Contents\n\n- [The agent](#the-agent)\n");
    let kinds = [("Sources", "sources"), ("Transforms", "transforms"), ("Sinks", "sinks")];
    let mut all = Vec::new();
    for (title, dir) in kinds {
        let list = types(&src.join(dir).join("mod.rs"))?;
        let names: Vec<String> = list.iter().map(|(n, _)| format!("[`{n}`](#{dir}-{n})")).collect();
        let _ = writeln!(out, "- [{title}](#{dir}): {}", names.join(", "));
        all.push((title, dir, list));
    }
    out.push('\n');
    // A name that is both a source and a sink type (`file`) is printed with
    // its kind: `hostwatch example sink file`.
    let shared =
        |name: &str| all.iter().filter(|(_, _, list)| list.iter().any(|(n, _)| n == name)).count() > 1;

    out.push_str("## The agent\n\nThe top level of the config file.\n\n");
    let agent = find(&src.join("topology/config.rs"), "Config")?;
    // The agent's Config is built by hand from the YAML; these of its
    // fields are keys of the file (the others are worked out).
    let keys = ["data_dir", "hostname", "shutdown_timeout", "api", "log"];
    let mut top = agent.clone();
    if let Body::Struct(fields) = &mut top.body {
        fields.retain(|f| keys.contains(&f.name.as_str()));
        for f in fields.iter_mut() {
            f.has_default = true;
        }
    }
    table(
        &mut out,
        &index,
        &top,
        "",
        &[
            ("sources", "map of source", "none", "The sources, by id: [Sources](#sources)."),
            ("transforms", "map of transform", "none", "The transforms, by id: [Transforms](#transforms)."),
            ("sinks", "map of sink", "none", "The sinks, by id: [Sinks](#sinks)."),
        ],
    );

    for (title, dir, list) in &all {
        let (title, dir) = (*title, *dir);
        let _ = writeln!(out, "## {title}\n");
        let (common, intro): (Vec<(&str, &str, &str, &str)>, &str) = match dir {
            "sources" => (
                vec![("type", "string", "required", "The source type, one of those below.")],
                "A source produces events. Each is declared under `sources:` by its id.",
            ),
            "transforms" => (
                vec![
                    ("type", "string", "required", "The transform type, one of those below."),
                    ("inputs", "list of string", "required", "The ids of the components it reads from."),
                ],
                "A transform takes events and gives zero or more events. Each is declared under \
                 `transforms:` by its id.",
            ),
            _ => (
                vec![
                    ("type", "string", "required", "The sink type, one of those below."),
                    ("inputs", "list of string", "required", "The ids of the components it reads from."),
                ],
                "A sink delivers events somewhere outside. Each is declared under `sinks:` by its \
                 id. Batching, buffering and retries are shared by every sink type.",
            ),
        };
        let _ = writeln!(out, "{intro}\n");
        if dir == "sinks" {
            out.push_str("### Settings of every sink\n\n");
            out.push_str("| option | type | default | description |\n|---|---|---|---|\n");
            for (key, file, name) in [
                ("batch", "sinks/driver/batch.rs", "BatchConfig"),
                ("buffer", "buffer/mod.rs", "BufferConfig"),
                ("request", "sinks/driver/retry.rs", "RequestConfig"),
                ("dead_letter", "sinks/driver/dead_letter.rs", "DeadLetterConfig"),
            ] {
                rows(&mut out, &index, find(&src.join(file), name)?, &format!("{key}."), 0);
            }
            out.push('\n');
        }
        for (name, example) in list {
            let module = module_of(example);
            let text = index.texts.get(&module).ok_or_else(|| format!("no module {}", module.display()))?;
            let _ = writeln!(out, "### {dir}: `{name}`\n");
            let doc = unlink(&module_doc(text));
            if !doc.is_empty() {
                let _ = writeln!(out, "{doc}\n");
            }
            table(&mut out, &index, find(&module, "Config")?, "", &common);
            let example_text = std::fs::read_to_string(example)?;
            let command = match shared(name) {
                true => format!("hostwatch example {} {name}", dir.trim_end_matches('s')),
                false => format!("hostwatch example {name}"),
            };
            let _ = writeln!(out, "Example (`{command}`):\n\n```yaml\n{}\n```\n", example_text.trim_end());
        }
    }
    Ok(out.trim_end().to_string() + "\n")
}
