//! Writes the seed corpora (`corpus/<target>/seed-*`, beside this crate's Cargo.toml, or under
//! the directory given as the first argument) and runs every seed through its target's checks.
//!
//! The corpora are kept in the repository, minimized, and a minimized corpus names its files by
//! their SHA-1: a seed whose bytes a file of its directory already holds is not written again,
//! so re-seeding a kept corpus adds only seeds that are new (after a change to the fixture or
//! the encodings).
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example seeds [-- DIR]`.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

/// The contents of the files of `dir` (the corpora are a few MiB at most).
fn contents(dir: &Path) -> std::io::Result<HashSet<Vec<u8>>> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            out.insert(std::fs::read(path)?);
        }
    }
    Ok(out)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"), PathBuf::from);
    let seeds = caasiope_fuzz::seeds();
    let mut written = 0;
    let mut kept: HashMap<&str, HashSet<Vec<u8>>> = HashMap::new();
    for (target, name, bytes) in &seeds {
        let dir = root.join(target);
        if !kept.contains_key(target) {
            std::fs::create_dir_all(&dir)?;
            kept.insert(target, contents(&dir)?);
        }
        if kept.get_mut(target).is_some_and(|held| held.insert(bytes.clone())) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
            written += 1;
        }
        if *target == "tx_apply" {
            // The block's transactions are valid on the genesis state; the others are not.
            let applied = caasiope_fuzz::tx_apply(bytes);
            assert_eq!(applied, name.starts_with("block-"), "seed {name}");
        } else {
            let check = caasiope_fuzz::target(target).unwrap_or_else(|| panic!("no target {target}"));
            check(bytes);
        }
    }
    println!("checked {} seeds, wrote {written} new under {}", seeds.len(), root.display());
    Ok(())
}
