//! The server's top-level modules form layers: each imports only modules below it, so the
//! structure can be drawn and no change can tie two layers into a loop unnoticed.
//!
//! `cargo test -p ivr-bridge --test layers -- --nocapture` prints the layers from the ground up
//! with what each module imports (read from the `crate::` paths in its files); the test fails,
//! naming the loop, when two modules import each other through any chain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name → the top-level modules its files name through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn top_level_modules_form_layers_without_loops() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = read_graph(&src);
    assert!(graph.len() > 5, "too few modules found in {src:?}");
    if let Some(found) = find_loop(&graph) {
        for (module, uses) in &graph {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            println!("  {module:<11} imports {}", list(&uses));
        }
        panic!(
            "import loop between top-level modules: {}",
            found.join(" -> ")
        );
    }
    for (floor, modules) in floors(&graph).iter().enumerate() {
        println!("layer {floor}:");
        for module in modules {
            let uses: Vec<&str> = graph[module].iter().map(String::as_str).collect();
            println!("  {module:<11} imports {}", list(&uses));
        }
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "nothing of the crate".to_owned()
    } else {
        names.join(", ")
    }
}

/// Every top-level module (`src/x.rs` or `src/x/`) and the modules its files import.
fn read_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let entries = std::fs::read_dir(src).expect("reading src/");
    for entry in entries.map(|e| e.expect("reading src/")) {
        let path = entry.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if name == "lib" || name == "main" {
            continue;
        }
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            let mut uses = BTreeSet::new();
            for file in files {
                let text = std::fs::read_to_string(&file).expect("reading a source file");
                crate_paths(&text, &mut uses);
            }
            uses.remove(name);
            graph.insert(name.to_owned(), uses);
        }
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| known.contains(m));
    }
    graph
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("reading a module folder") {
            rust_files(&entry.expect("reading a module folder").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The first segment after each `crate::` in code (comments skipped), including every
/// branch of a grouped `use crate::{a::x, b}`.
fn crate_paths(text: &str, out: &mut BTreeSet<String>) {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue; // e.g. `ivr_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let group = &group[..end];
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[i..]).to_owned());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest).to_owned());
        }
    }
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// A chain of imports that returns to where it started, if any.
fn find_loop(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in &graph[node] {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

/// Modules by layer: each one a layer above the highest module it imports.
fn floors(graph: &Graph) -> Vec<Vec<String>> {
    fn floor(node: &str, graph: &Graph, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(&f) = memo.get(node) {
            return f;
        }
        let f = graph[node]
            .iter()
            .map(|next| floor(next, graph, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(node.to_owned(), f);
        f
    }
    let mut memo = BTreeMap::new();
    let mut floors: Vec<Vec<String>> = Vec::new();
    for node in graph.keys() {
        let f = floor(node, graph, &mut memo);
        if floors.len() <= f {
            floors.resize(f + 1, Vec::new());
        }
        floors[f].push(node.clone());
    }
    floors
}
