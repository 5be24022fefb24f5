//! Runs files through a fuzz target's checks without libFuzzer, on a stable toolchain: to
//! reproduce a crash artifact or re-check a whole corpus after a change to a decoder.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --release --example replay -- TARGET PATH...`
//! where TARGET is one of `caasiope_fuzz::TARGETS` (or `all`, with no PATH: every target on its
//! own corpus, `corpus/<target>/` beside this crate's Cargo.toml) and each PATH a file or a
//! directory (its files, not recursively). A failing check panics, and the failing file is named.

use std::path::{Path, PathBuf};

fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Runs every file under `paths` through `check`; returns how many.
fn replay(check: fn(&[u8]), paths: &[PathBuf]) -> std::io::Result<usize> {
    let mut n = 0;
    for path in paths {
        for file in files(path)? {
            let bytes = std::fs::read(&file)?;
            if let Err(panic) = std::panic::catch_unwind(|| check(&bytes)) {
                eprintln!("failing input: {}", file.display());
                std::panic::resume_unwind(panic);
            }
            n += 1;
        }
    }
    Ok(n)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    let paths: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if target == "all" && paths.is_empty() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (name, check) in caasiope_fuzz::TARGETS {
            let dir = corpus.join(name);
            let n = if dir.is_dir() { replay(check, &[dir])? } else { 0 };
            println!("{name}: {n} inputs passed");
        }
        return Ok(());
    }
    let Some(check) = caasiope_fuzz::target(&target) else {
        let names: Vec<&str> = caasiope_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
        eprintln!("usage: replay TARGET PATH... | replay all\nTARGET: {} (got {target:?})", names.join("|"));
        std::process::exit(2);
    };
    let n = replay(check, &paths)?;
    println!("{target}: {n} inputs passed");
    Ok(())
}
