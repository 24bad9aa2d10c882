//! The top-level modules of `src/` form layers: no two of them import each other, directly or
//! through others. This test reads every source file, collects which top-level modules each one
//! names (`crate::x`, `crate::{x, y}`, `super::x` at a module root), and fails on any cycle,
//! naming the modules and the files that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first path segment of each item of a `{a, b::c, d::{e}}` group (text after the `{`).
fn group_heads(text: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item = true;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if at_item && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                heads.push(ident_at(&text[i..]));
                at_item = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules a source text names through `prefix` (`crate::` or `super::`).
fn referenced<'t>(text: &'t str, prefix: &str) -> Vec<&'t str> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        if i > 0 && text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => out.extend(group_heads(group)),
            None => out.push(ident_at(rest)),
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let tops: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|e| e == "rs")).then_some(name)
        })
        .filter(|n| n != "main" && n != "lib")
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let top = first.strip_suffix(".rs").unwrap_or(first).to_string();
        if !tops.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let root = rel.components().count() == 1
            || rel.ends_with("mod.rs") && rel.components().count() == 2;
        let mut names = referenced(&text, "crate::");
        if root {
            names.extend(referenced(&text, "super::"));
        }
        for name in names {
            if name != top && tops.contains(name) {
                g.entry(top.clone())
                    .or_default()
                    .entry(name.to_string())
                    .or_default()
                    .insert(rel.to_path_buf());
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one (depth-first search).
fn cycle_from(g: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &Graph,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(node).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(g, start, start, &mut path, &mut seen).then_some(path)
}

fn describe(g: &Graph, cycle: &[String]) -> String {
    let mut lines = Vec::new();
    for (i, from) in cycle.iter().enumerate() {
        let to = &cycle[(i + 1) % cycle.len()];
        let files: Vec<String> = g[from][to]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        lines.push(format!("  {from} -> {to}  ({})", files.join(", ")));
    }
    lines.join("\n")
}

#[test]
fn top_level_modules_import_each_other_in_one_direction_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    // The scanner itself: the layers it must see are there.
    assert!(g["config"].contains_key("tls"), "config uses tls");
    assert!(
        g["delivery"].contains_key("smtp"),
        "delivery uses the SMTP client"
    );
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_from(&g, m))
        .map(|c| describe(&g, &c))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules:\n{}",
        cycles.join("\n\n")
    );
}

#[test]
fn the_scanner_finds_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/mod.rs"), "pub mod x;\n").unwrap();
    std::fs::write(src.join("a/x.rs"), "use crate::{b::Thing, c};\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() { crate::c::g() }\n").unwrap();
    std::fs::write(src.join("c.rs"), "use crate::mail::X;\n// not_crate::a\n").unwrap();
    std::fs::write(src.join("mail.rs"), "").unwrap();
    let g = graph(src);
    assert!(cycle_from(&g, "a").is_none());
    std::fs::write(src.join("c.rs"), "use crate::{\n    a::x::Y,\n};\n").unwrap();
    let g = graph(src);
    let cycle = cycle_from(&g, "a").expect("a -> b -> c -> a");
    assert_eq!(cycle, ["a", "b", "c"]);
    assert!(describe(&g, &cycle).contains("c -> a  (c.rs)"));
}
