//! Runs files through a fuzz target's checks without libFuzzer, on a stable toolchain: to
//! reproduce a crash artifact or re-check a whole corpus after an engine change.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --release --example replay -- TARGET PATH...`
//! where TARGET is `tx_decode`, `tx_apply` or `ledger_decode` and each PATH a file or a directory
//! (its files, not recursively). A failing check panics, and the failing file is named.

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

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    let check: fn(&[u8]) = match target.as_str() {
        "tx_decode" => caasiope_fuzz::tx_decode,
        "tx_apply" => |data| {
            caasiope_fuzz::tx_apply(data);
        },
        "ledger_decode" => caasiope_fuzz::ledger_decode,
        other => {
            eprintln!("usage: replay tx_decode|tx_apply|ledger_decode PATH... (got target {other:?})");
            std::process::exit(2);
        }
    };
    let mut n = 0usize;
    for path in args {
        for file in files(Path::new(&path))? {
            let bytes = std::fs::read(&file)?;
            if let Err(panic) = std::panic::catch_unwind(|| check(&bytes)) {
                eprintln!("failing input: {}", file.display());
                std::panic::resume_unwind(panic);
            }
            n += 1;
        }
    }
    println!("{target}: {n} inputs passed");
    Ok(())
}
