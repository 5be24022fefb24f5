//! Every operational limit of the node is defined in this crate: no other source file of the
//! node's crates declares a constant named like a bound. (The wallet is a client: its few
//! bounds on local files and prompts live with it, and a server never links it. The API crate's
//! page sizes are part of the HTTP contract and re-exported by the limits crate.)

use std::path::{Path, PathBuf};

/// Parts of a constant's name that make it a bound.
const BOUND_WORDS: [&str; 6] = ["MAX", "LIMIT", "TIMEOUT", "PER_SECOND", "IN_FLIGHT", "BUDGET"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // This crate, build output, integration tests and the client are not the node's
            // operational code; the API crate's page sizes are its contract (re-exported here).
            if !["limits", "target", "tests", "wallet", "api"].contains(&name.as_str()) {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The name declared by `line` if it declares a constant (`const X:`, `pub(crate) const X:`…).
fn declared_const(line: &str) -> Option<&str> {
    let rest = line.trim_start().split_once("const ")?;
    if !rest.0.trim().is_empty() && !rest.0.trim().starts_with("pub") {
        return None;
    }
    let name = rest.1.split(':').next()?.trim();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .then_some(name)
}

#[test]
fn no_node_source_defines_a_bound_of_its_own() {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    sources(node, &mut files);
    assert!(files.len() > 10, "found only {} sources under {}", files.len(), node.display());
    let mut strays = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(name) = declared_const(line)
                && BOUND_WORDS.iter().any(|w| name.contains(w))
            {
                strays.push(format!("{}:{}: {name}", file.display(), n + 1));
            }
        }
    }
    assert!(strays.is_empty(), "bounds defined outside caasiope-limits:\n{}", strays.join("\n"));
}

#[test]
fn the_scan_recognizes_declarations() {
    assert_eq!(declared_const("const POOL_MAX: usize = 1;"), Some("POOL_MAX"));
    assert_eq!(declared_const("    pub(crate) const IDLE_TIMEOUT: Duration = d;"), Some("IDLE_TIMEOUT"));
    assert_eq!(declared_const("let x = y; // const FOO: no"), None);
    assert_eq!(declared_const("fn f<const N: usize>()"), None);
}
