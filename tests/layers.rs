//! The modules of src/ form layers, and imports point down only.
//!
//! Reads every src/**/*.rs, collects its `crate::…` paths and the `super::…`
//! paths that climb out of its own module, and fails naming file and line
//! when a module imports one of a higher layer, or one of its own layer
//! that is not itself: above all, a component (`sources/<type>`,
//! `transforms/<type>`, `sinks/<type>`) that imports another component.
//! Test code (`#[cfg(test)] mod …` to the end of a file, `tests.rs`) may
//! reach anywhere and is not read.

use std::path::{Path, PathBuf};

/// Bottom up. A module may import those of lower layers and itself. A
/// pattern names a module and everything in it; `x::*` names each module
/// directly in `x` as a unit of its own (the components of a kind), and
/// the more specific pattern wins.
const LAYERS: &[&[&str]] = &[
    &["event"],
    &["pipeline"],
    &["util"],
    &["config"],
    &["expr"],
    &["buffer"],
    &["sinks::driver"],
    &["sources::context", "transforms::common"],
    &["sources::*", "transforms::*", "sinks::*"],
    &["sources", "transforms", "sinks"],
    &["topology"],
    &["api", "notify", "reference"],
    &["commands"],
    &["daemon"],
    &["cli"],
    &["main", ""],
];

/// Arrows that are known to point the wrong way: (file, the module it
/// imports). The test fails when one of them is gone, so that the list
/// only ever shrinks.
const KNOWN: &[(&str, &str)] = &[];

/// Where a module path sits: its layer and the unit it belongs to.
fn place(path: &[String]) -> Option<(usize, String)> {
    let mut best: Option<(usize, usize, String)> = None; // (specificity, layer, unit)
    for (layer, patterns) in LAYERS.iter().enumerate() {
        for pattern in *patterns {
            let (base, each) = match pattern.strip_suffix("::*") {
                Some(base) => (base, true),
                None => (*pattern, false),
            };
            let base: Vec<&str> = if base.is_empty() { Vec::new() } else { base.split("::").collect() };
            let fits = path.len() >= base.len() + usize::from(each)
                && base.iter().zip(path).all(|(a, b)| *a == b.as_str())
                && (!base.is_empty() || path.is_empty());
            if !fits {
                continue;
            }
            let (specificity, unit) = if each {
                (base.len() + 1, path[..=base.len()].join("::"))
            } else {
                (base.len(), base.join("::"))
            };
            if best.as_ref().is_none_or(|b| specificity > b.0) {
                best = Some((specificity, layer, unit));
            }
        }
    }
    best.map(|(_, layer, unit)| (layer, unit))
}

/// The module a file is: `src/sinks/http/mod.rs` is `sinks::http`.
fn module_of(file: &Path, src: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The longest prefix of `path` that is a module with a file of its own.
fn existing(path: &[String], src: &Path) -> Vec<String> {
    let mut n = path.len();
    while n > 0 {
        let dir = src.join(path[..n].join("/"));
        if dir.with_extension("rs").is_file() || dir.join("mod.rs").is_file() {
            break;
        }
        n -= 1;
    }
    path[..n].to_vec()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names after each `prefix` on a line that may be modules (those that
/// start lower case): `crate::sinks::driver::batch::X` gives `sinks, driver,
/// batch`; `crate::{a, b::c}` gives `a` and `b, c`. With `super::`, also how
/// many times it climbs.
fn paths_after(line: &str, prefix: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = line[at..].find(prefix) {
        let start = at + i;
        at = start + prefix.len();
        // `super::` inside `super::super::` is counted with the first.
        let before = &line[..start];
        if before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut ups = usize::from(prefix == "super::");
        let mut rest = &line[at..];
        while let Some(r) = rest.strip_prefix("super::").filter(|_| ups > 0) {
            ups += 1;
            rest = r;
        }
        let groups: Vec<&str> = match rest.strip_prefix('{') {
            Some(inner) => inner.split('}').next().unwrap_or("").split(',').collect(),
            None => vec![rest],
        };
        for group in groups {
            let mut names = Vec::new();
            for segment in group.trim().split("::") {
                let name: String = segment.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') || name == "self" {
                    break;
                }
                let whole = name.len() == segment.len();
                names.push(name);
                if !whole {
                    break;
                }
            }
            out.push((ups, names));
        }
    }
    out
}

/// The module path of every `crate::`/`super::` reference on a line, made
/// absolute; `module` is the line's own.
fn references(line: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> =
        paths_after(line, "crate::").into_iter().map(|(_, names)| names).collect();
    for (ups, names) in paths_after(line, "super::") {
        let mut path = module[..module.len().saturating_sub(ups)].to_vec();
        path.extend(names);
        out.push(path);
    }
    out
}

#[test]
fn imports_point_down_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut known_seen = vec![false; KNOWN.len()];
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let module = module_of(file, &src);
        let Some((layer, unit)) = place(&module) else {
            problems.push(format!(
                "{}: module `{}` is in no layer of LAYERS",
                file.display(),
                module.join("::")
            ));
            continue;
        };
        let rel = file.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if *line == "#[cfg(test)]"
                && lines.get(n + 1).is_some_and(|next| next.contains("mod ") && !next.ends_with(';'))
            {
                break;
            }
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for target in references(line, &module) {
                let target = existing(&target, &src);
                let Some((to_layer, to_unit)) = place(&target) else { continue };
                if to_unit == unit || to_layer < layer {
                    continue;
                }
                let known = KNOWN.iter().position(|(f, m)| *f == rel && *m == to_unit);
                if let Some(k) = known {
                    known_seen[k] = true;
                    continue;
                }
                let why = if to_layer > layer {
                    format!("`{unit}` imports `{to_unit}`, a higher layer")
                } else if unit.contains("::") && to_unit.contains("::") {
                    format!("the component `{unit}` imports another component, `{to_unit}`")
                } else {
                    format!("`{unit}` imports `{to_unit}`, of the same layer")
                };
                problems.push(format!("{rel}:{}: {why}: {}", n + 1, line.trim()));
            }
        }
    }
    for (k, seen) in known_seen.iter().enumerate() {
        if !seen {
            problems.push(format!(
                "{} no longer imports `{}`: remove it from KNOWN in tests/layers.rs",
                KNOWN[k].0, KNOWN[k].1
            ));
        }
    }
    assert!(problems.is_empty(), "imports that point the wrong way:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_what_it_should() {
    let module: Vec<String> = vec!["sources".into(), "agent".into()];
    let refs = references("use crate::sources::host::clock_ticks;", &module);
    assert_eq!(refs, vec![vec!["sources".to_string(), "host".into(), "clock_ticks".into()]]);
    let refs = references("use super::context::SourceContext;", &module);
    assert_eq!(refs, vec![vec!["sources".to_string(), "context".into()]]);
    let refs = references("use crate::{config::BuildError, event};", &module);
    assert_eq!(refs, vec![vec!["config".to_string()], vec!["event".to_string()]]);
    assert_eq!(place(&["sinks".into(), "http".into(), "single".into()]), Some((8, "sinks::http".into())));
    assert_eq!(place(&["sinks".into(), "driver".into(), "batch".into()]), Some((6, "sinks::driver".into())));
    assert_eq!(place(&["sinks".into()]), Some((9, "sinks".into())));
    assert_eq!(place(&[]), Some((15, String::new())));
}
