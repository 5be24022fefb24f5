//! What a validator's admission stage pays per committed ledger when the ledger holds its
//! pending transactions in another order than it admitted them (every validator but the
//! proposer): moving the open ledger in place (`BlockExecution::rebase`, what the intake does
//! now) against the slow way (roll the open ledger back, apply the ledger's diff, apply the
//! rest of the pool again: what it did before), both on the same ledgers in the same run, at a
//! state of N accounts, transfers drawn uniformly over them.
//!
//! Each round admits `--txs` new transfers; the ledger then commits every pending one but the
//! newest half-round, in reverse admission order, so a quarter of a ledger stays pending.
//!
//! `cargo run --release -p caasiope-bench --example rebase_reordered -- <accounts> [txs per round]`
//! prints JSON: the median milliseconds of each way over the rounds, and their ratio.

use std::time::Instant;

use caasiope_bench::{
    median,
    workload::{Mix, generated_genesis, generated_transfer, validator_key},
};
use engine::{
    Backend, Currency,
    genesis::Genesis,
    state::{State, execute_verified},
    tx::SignedTransaction,
    validate::{VerifiedTx, verify},
};
use rayon::prelude::*;

const CHAIN: &str = "rebase-reordered";
const ROUNDS: u64 = 7;

fn transfers(host: &State, mix: &Mix, from: u64, n: u64) -> Result<Vec<VerifiedTx>, String> {
    let expiration_ms = host.head().timestamp_ms + 3_600_000;
    (from..from + n)
        .into_par_iter()
        .map(|j| {
            let bytes = generated_transfer(CHAIN, mix, j, expiration_ms);
            let (stx, id) = SignedTransaction::decode_with_id(&bytes, CHAIN).map_err(|e| e.to_string())?;
            verify(stx, id, host.params(), Backend::Libsecp256k1).map_err(|e| e.to_string())
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let accounts: u64 = args.next().ok_or("usage: rebase_reordered <accounts> [txs per round]")?.parse()?;
    let txs: u64 = args.next().map_or(Ok(2_500), |a| a.parse())?;
    if !(2..=16_000_000).contains(&accounts) || !(2..=20_000).contains(&txs) {
        return Err("accounts 2 to 16,000,000; txs per round 2 to 20,000".into());
    }
    let genesis = Genesis::new(generated_genesis(CHAIN, accounts, &[validator_key().public_key()]))?;
    let mut host = State::from_genesis(&genesis);
    // Two admission post-states, as the intake keeps one (no trie): one for each way.
    let mut slow_post = host.clone();
    slow_post.detach_trie();
    let mut fast_post = slow_post.clone();
    let mix = Mix::uniform(accounts);
    let start_ms = host.head().timestamp_ms + 1;
    let mut slow = slow_post.begin_block(start_ms)?;
    let mut fast = fast_post.begin_block(start_ms)?;
    let mut pending: Vec<VerifiedTx> = Vec::new();
    let (mut slow_ms, mut fast_ms) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for v in transfers(&host, &mix, round * txs, txs)? {
            let (a, b) = (slow.apply_tx(&v).is_ok(), fast.apply_tx(&v).is_ok());
            if a != b {
                return Err("the two post-states disagree on admission".into());
            }
            if a {
                pending.push(v);
            }
        }
        let keep = (txs / 2) as usize;
        let rest = pending.split_off(pending.len().saturating_sub(keep));
        let mut committed = std::mem::replace(&mut pending, rest);
        committed.reverse();
        let timestamp_ms = host.head().timestamp_ms + 250;
        let diff = execute_verified(&mut host, timestamp_ms, &committed)?;
        host.apply_shared_diff(&diff)?;
        let window = host.replay_window();
        let now_ms = timestamp_ms + 1;

        let t = Instant::now();
        drop(slow);
        slow_post.apply_shared_diff(&diff)?;
        slow_post.adopt_replay(window.clone());
        slow = slow_post.begin_block(now_ms)?;
        for v in &pending {
            slow.apply_tx(v).map_err(|e| format!("a pending transaction refused: {e}"))?;
        }
        slow_ms.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let moved = fast.rebase(&diff, now_ms, Some(window));
        fast_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if !moved {
            return Err("the open ledger did not move in place".into());
        }
        let same =
            fast.tx_ids() == slow.tx_ids()
                && diff.applied().touched.iter().all(|a| {
                    fast.state().balance(a, &Currency::CAS) == slow.state().balance(a, &Currency::CAS)
                });
        if !same {
            return Err("the two ways disagree".into());
        }
    }
    let (slow_ms, fast_ms) = (median(slow_ms), median(fast_ms));
    let report = serde_json::json!({
        "benchmark": "rebase_reordered",
        "accounts": accounts,
        "txs_per_round": txs,
        "pending_after_commit": pending.len(),
        "in_place_ms_median": fast_ms,
        "slow_way_ms_median": slow_ms,
        "slow_over_in_place": slow_ms / fast_ms,
    });
    println!("{report}");
    Ok(())
}
