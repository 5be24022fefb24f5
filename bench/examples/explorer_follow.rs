//! What the explorer pays per ledger to serve the latest state, at a state of N accounts:
//! following the ledger by its diff (what `Explorer::publish` does: `State::apply_shared_diff`
//! and adopting the host's replay window) against copying the state (what it did before, and
//! still does when its copy is not the diff's base), both measured in the same run on ledgers of
//! `--txs` transfers drawn uniformly over the accounts.
//!
//! `cargo run --release -p caasiope-bench --example explorer_follow -- <accounts> [txs per ledger]`
//! prints JSON: the median milliseconds of each over five ledgers, and their ratio.

use std::time::Instant;

use caasiope_bench::{
    median,
    workload::{Mix, generated_genesis, generated_transfer, validator_key},
};
use engine::{
    Backend,
    genesis::Genesis,
    state::{State, execute_verified},
    tx::SignedTransaction,
    validate::verify,
};
use rayon::prelude::*;

const CHAIN: &str = "explorer-follow";
const LEDGERS: u64 = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let accounts: u64 = args.next().ok_or("usage: explorer_follow <accounts> [txs per ledger]")?.parse()?;
    let txs_per_ledger: u64 = args.next().map_or(Ok(2_500), |a| a.parse())?;
    if !(2..=16_000_000).contains(&accounts) || !(1..=20_000).contains(&txs_per_ledger) {
        return Err("accounts 2 to 16,000,000; txs per ledger 1 to 20,000".into());
    }
    let genesis = Genesis::new(generated_genesis(CHAIN, accounts, &[validator_key().public_key()]))?;
    let mut host = State::from_genesis(&genesis);
    let mut explorer = host.clone();
    let mix = Mix::uniform(accounts);
    let (mut copies, mut follows) = (Vec::new(), Vec::new());
    for h in 0..LEDGERS {
        let expiration_ms = host.head().timestamp_ms + 3_600_000;
        let txs = (h * txs_per_ledger..(h + 1) * txs_per_ledger)
            .into_par_iter()
            .map(|j| {
                let bytes = generated_transfer(CHAIN, &mix, j, expiration_ms);
                let (stx, id) =
                    SignedTransaction::decode_with_id(&bytes, CHAIN).map_err(|e| e.to_string())?;
                verify(stx, id, host.params(), Backend::Libsecp256k1).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        let timestamp_ms = host.head().timestamp_ms + 250;
        let diff = execute_verified(&mut host, timestamp_ms, &txs)?;
        host.apply_shared_diff(&diff)?;

        let t = Instant::now();
        let copy = host.clone();
        copies.push(t.elapsed().as_secs_f64() * 1e3);
        drop(copy);

        let t = Instant::now();
        explorer.apply_shared_diff(&diff)?;
        explorer.adopt_replay(host.replay_window());
        follows.push(t.elapsed().as_secs_f64() * 1e3);
        if explorer.state_root() != host.state_root() || explorer.head_hash() != host.head_hash() {
            return Err("the followed state is not the host's".into());
        }
    }
    let (copy_ms, follow_ms) = (median(copies), median(follows));
    let report = serde_json::json!({
        "benchmark": "explorer_follow",
        "accounts": accounts,
        "txs_per_ledger": txs_per_ledger,
        "follow_ms_median": follow_ms,
        "copy_ms_median": copy_ms,
        "copy_over_follow": copy_ms / follow_ms,
    });
    println!("{report}");
    Ok(())
}
