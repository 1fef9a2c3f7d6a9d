//! The code's shape, as docs/architecture.md draws it: no module imports another that imports
//! it back, the conversation and what it draws on know nothing of the adapters that carry it
//! (bot, http, service, the command line), and no source file grows past 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
/// The outer ring: adapters and entry points.
const ADAPTERS: &[&str] = &["bot", "http", "service", "commands", "cli"];
/// The core that must not reach the outer ring, directly or through anything it imports.
const CORE: &[&str] = &["chat", "onboarding", "answer", "search", "ingest", "embed", "store", "reply"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/chat/asking.rs` → `chat`).
fn module_of(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    first.as_os_str().to_str().unwrap().trim_end_matches(".rs").to_owned()
}

/// Top-level modules a file's code names through `crate::…`, including inside
/// `use crate::{a::…, b};` groups. Comments are left out.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String =
        text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split at commas outside nested braces.
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(ident(item.trim()));
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_lowercase()));
    found
}

/// Each module's imports, and each file's length in lines.
type Layout = (BTreeMap<String, BTreeSet<String>>, Vec<(PathBuf, usize)>);

fn graph() -> Layout {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), src.display());
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sizes = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        sizes.push((file.clone(), text.lines().count()));
        let from = module_of(&src, file);
        let targets: Vec<String> =
            imports(&text).into_iter().filter(|m| *m != from && modules.contains(m)).collect();
        edges.entry(from).or_default().extend(targets);
    }
    (edges, sizes)
}

fn reachable(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(module) = stack.pop() {
        for next in edges.get(&module).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn the_reader_sees_imports_in_groups_and_paths_but_not_in_comments() {
    let text = "use crate::{answer::{self, X}, store::Language};\n// crate::bot is only mentioned\nlet x = crate::metrics::time();\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["answer", "metrics", "store"]);
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (edges, _) = graph();
    assert!(edges.values().any(|targets| !targets.is_empty()), "no imports found at all: {edges:?}");
    let cycles: Vec<String> = edges
        .iter()
        .flat_map(|(from, targets)| targets.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reachable(&edges, to).contains(from.as_str()))
        .map(|(from, to)| format!("{from} → {to}"))
        .collect();
    assert!(cycles.is_empty(), "imports that come back round: {cycles:?}");
}

#[test]
fn the_core_reaches_no_adapter() {
    let (edges, _) = graph();
    for core in CORE {
        assert!(edges.contains_key(*core), "no module {core}");
        let reached = reachable(&edges, core);
        let adapters: Vec<&&str> = ADAPTERS.iter().filter(|a| reached.contains(**a)).collect();
        assert!(adapters.is_empty(), "{core} reaches {adapters:?} (through {reached:?})");
    }
}

#[test]
fn no_source_file_is_over_the_limit() {
    let (_, sizes) = graph();
    let long: Vec<String> = sizes
        .iter()
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(path, lines)| format!("{} ({lines})", path.display()))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}
