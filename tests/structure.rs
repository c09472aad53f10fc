//! The crate's structure: no import circles between its top-level modules. Every `crate::MODULE` path in a module's
//! non-test code is an edge MODULE_FROM -> MODULE; the graph must have no cycle. (Test modules may reach anywhere: a
//! test of the classifier's scorer trains a classifier through the runner.)
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Top-level module -> module it names -> files that name it.
fn import_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
            if !rel.ends_with(".rs") || rel == "main.rs" || rel == "lib.rs" {
                continue;
            }
            let from = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (i, _) in code.match_indices("crate::") {
                let to: String = code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !to.is_empty() && to != from {
                    graph.entry(from.clone()).or_default().entry(to).or_default().insert(rel.clone());
                }
            }
        }
    }
    graph
}

/// Edges that lie on a cycle: a -> b where b reaches a.
fn cycle_edges(graph: &Graph) -> Vec<(String, String, BTreeSet<String>)> {
    let reaches = |from: &str, to: &str| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from.to_string()]);
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(&m).into_iter().flat_map(|e| e.keys().cloned()));
            }
        }
        false
    };
    let mut out = Vec::new();
    for (a, edges) in graph {
        for (b, files) in edges {
            if reaches(b, a) {
                out.push((a.clone(), b.clone(), files.clone()));
            }
        }
    }
    out
}

#[test]
fn top_level_modules_import_without_circles() {
    let graph = import_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("runner") && graph["runner"].contains_key("experiment"), "the graph was read: {graph:?}");
    let cycles = cycle_edges(&graph);
    let shown: Vec<String> = cycles.iter().map(|(a, b, files)| format!("{a} -> {b} (in {})", files.iter().cloned().collect::<Vec<_>>().join(", "))).collect();
    assert!(cycles.is_empty(), "import circles between top-level modules:\n{}", shown.join("\n"));
}

#[test]
fn a_circle_is_found() {
    let mut g = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into()).or_default().entry(b.into()).or_default().insert(format!("{a}.rs"));
    };
    edge(&mut g, "runner", "classifier");
    edge(&mut g, "classifier", "data");
    assert!(cycle_edges(&g).is_empty());
    edge(&mut g, "data", "runner");
    let found: Vec<(String, String)> = cycle_edges(&g).into_iter().map(|(a, b, _)| (a, b)).collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.contains(&("data".into(), "runner".into())));
}
