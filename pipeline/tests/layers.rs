//! The pipeline crate's modules import each other in layers, never in a circle (#19): a
//! module's `crate::<module>` references (outside its tests) are its imports, and the graph
//! they make has no cycle. The layers, bottom up, are drawn in the README.

#![allow(clippy::disallowed_methods)] // reads sources

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("component");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let names = graph.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Doc links name modules too; only code counts.
                let line_start = code[..i].rfind('\n').map_or(0, |n| n + 1);
                if code[line_start..i].trim_start().starts_with("//") {
                    continue;
                }
                if !name.is_empty() && name != module {
                    names.insert(name);
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for names in graph.values_mut() {
        names.retain(|n| modules.contains(n));
    }
    graph
}

/// A cycle of the graph, if it has one (depth-first).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        if let Some(c) = visit(graph, start, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_import_in_layers_without_a_circle() {
    let graph = imports();
    assert!(graph.len() > 15, "{graph:?}");
    if let Some(c) = cycle(&graph) {
        panic!("import circle: {}", c.join(" → "));
    }
    // The lowest layers name nothing above them.
    for low in ["sample", "error", "normalize", "filter", "confine"] {
        let above: Vec<&String> = graph[low]
            .iter()
            .filter(|n| !["sample", "error", "normalize"].contains(&n.as_str()))
            .collect();
        assert!(above.is_empty(), "{low} imports {above:?}");
    }
    // Stages and everything below them never name the engine (which reaches global stages
    // only through `exchange::GlobalOp`).
    for low in [
        "stages",
        "exchange",
        "decisions",
        "io",
        "plan",
        "mix",
        "tokenize",
    ] {
        assert!(!graph[low].contains("engine"), "{low} imports the engine");
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&g).map(|c| c.join(" → ")),
        Some("a → b → c → a".into())
    );
    g.get_mut("c").expect("c").clear();
    assert_eq!(cycle(&g), None);
}
