//! Writes the seed corpora (`corpus/<target>/seed-*`, beside this crate's Cargo.toml, or under
//! the directory given as the first argument) and runs every seed through its target's checks.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example seeds [-- DIR]`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"), PathBuf::from);
    let seeds = caasiope_fuzz::seeds();
    for (target, name, bytes) in &seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        match *target {
            "tx_decode" => caasiope_fuzz::tx_decode(bytes),
            // The block's transactions are valid on the genesis state; the others are not.
            "tx_apply" => {
                let applied = caasiope_fuzz::tx_apply(bytes);
                assert_eq!(applied, name.starts_with("block-"), "seed {name}");
            }
            _ => caasiope_fuzz::ledger_decode(bytes),
        }
    }
    println!("wrote and checked {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
