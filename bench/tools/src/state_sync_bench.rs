//! `caasiope bench state-sync`: how long a new node takes to join a chain of `txs` committed
//! transfers that made `txs` accounts, by re-executing every ledger from genesis (replay)
//! against restoring a snapshot of the state — both measured in the same run on the same chain.
//!
//! Setup (not timed): a genesis of `senders` funded keys; `txs` transfers signed in parallel,
//! each from a sender to an address never seen before, in ledgers of `block_txs`, one minute
//! apart (the chain's `max_ttl` is an hour, so the snapshot carries an hour of ids); the chain is
//! applied and committed into a source store with the validator's certificate on every ledger.
//!
//! Timed, in this order:
//! * **replay**: what a joining node does without a snapshot, minus the network: a new store
//!   from the genesis, then for each ledger the source's header and block read, the
//!   certificate checked against the set in force, the block applied with every signature
//!   verified (libsecp256k1), the header compared and the ledger committed (durable);
//! * **snapshot**: `db snapshot` of the source (the serving member's cost, once for any number
//!   of joiners);
//! * **restore**: `db restore` into a new store (every check of `storage::restore`, and the
//!   store opened as the node would, its state rebuilt and checked against the root).
//!
//! The network is left out of both sides: a replaying node would also fetch every block, a
//! restoring one the snapshot file (its bytes are reported).

use std::time::Instant;

use anyhow::{Context, bail};
use engine::{
    Backend, SecretKey,
    codec::Encode,
    genesis::Genesis,
    ledger::Certificate,
    state::{Block, State, apply_block},
    tx::SignedTransaction,
};
use exit::Output;
use rayon::prelude::*;
use storage::{Durability, LedgerToCommit, Store, StoreOptions};

/// What to build and measure.
#[derive(Clone, Debug)]
pub(crate) struct StateSyncBench {
    /// Transfers committed, each making a new account.
    pub(crate) txs: usize,
    /// Transfers per ledger.
    pub(crate) block_txs: usize,
    /// Funded senders.
    pub(crate) senders: usize,
    /// Rounds of both joins (alternating which goes first); medians are compared.
    pub(crate) rounds: usize,
    /// Where the stores and the snapshot go, kept after the run (with the genesis, to restore
    /// the snapshot again by hand); a temporary directory, removed, when `None`.
    pub(crate) dir: Option<std::path::PathBuf>,
}

/// Time between the benchmark chain's ledgers.
const LEDGER_SPACING_MS: i64 = 60_000;
/// The ratio a snapshot join must reach over replay (issue 19).
const RATIO_BOUND: f64 = 10.0;

/// The ledgers of the benchmark chain: transfer `j` from sender `j % senders` to the fresh
/// address `filler(senders + j)`.
fn blocks(b: &StateSyncBench, keys: &[SecretKey], chain_id: &str, genesis_ms: i64) -> Vec<Block> {
    let txs: Vec<SignedTransaction> = (0..b.txs)
        .into_par_iter()
        .map(|j| {
            let key = &keys[j % keys.len()];
            let height = (j / b.block_txs) as i64 + 1;
            let expiration = genesis_ms + height * LEDGER_SPACING_MS + 600_000;
            let to = bench::workload::filler((keys.len() + j) as u64);
            bench::workload::cas_transfer(
                key.public_key().address(),
                to,
                1 + (j % 1000) as i64,
                expiration,
                vec![],
            )
            .sign(chain_id, &[key])
        })
        .collect();
    let mut out = Vec::new();
    let mut rest = txs.into_iter().peekable();
    let mut height = 1u64;
    while rest.peek().is_some() {
        let transactions: Vec<SignedTransaction> = rest.by_ref().take(b.block_txs).collect();
        out.push(Block {
            height,
            timestamp_ms: genesis_ms + height as i64 * LEDGER_SPACING_MS,
            transactions,
        });
        height += 1;
    }
    out
}

fn options() -> StoreOptions {
    StoreOptions { without_query_indexes: true, durability: Durability::Durable, ..StoreOptions::default() }
}

/// Applies `block` on `state` and commits it into `store` with `certificate`.
fn commit(
    store: &mut Store,
    state: &mut State,
    block: &Block,
    certificate: &Certificate,
) -> anyhow::Result<()> {
    let applied = apply_block(state, block, Backend::Libsecp256k1)?;
    store.commit(LedgerToCommit {
        applied: &applied,
        transactions: &block.transactions,
        certificate,
        state,
    })?;
    Ok(())
}

/// A joining node's replay into a new store in `dir`: every ledger of the store in `src`, its
/// certificate checked, applied and committed. Returns its seconds.
fn replay(
    src: &std::path::Path,
    dir: &std::path::Path,
    genesis_toml: &str,
    head: engine::Hash,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let reader = {
        let (store, _) = Store::open_with(src, options())?;
        store.reader()
    };
    let (mut joined, mut state) = Store::create_with(dir, genesis_toml, options())?;
    let chain_id = state.params().chain_id.clone();
    for height in 1..=reader.head_height()? {
        let (header, certificate) = reader.header(height)?.context("source header")?;
        let transactions = reader.block(height)?.context("source block")?;
        certificate.verify_header(state.validators(), &chain_id, &header, Backend::Libsecp256k1)?;
        let block = Block { height, timestamp_ms: header.timestamp_ms, transactions };
        commit(&mut joined, &mut state, &block, &certificate)?;
        if state.head() != &header {
            bail!("ledger {height} replays to another header");
        }
    }
    joined.flush()?;
    let seconds = start.elapsed().as_secs_f64();
    if state.head_hash() != head {
        bail!("the replay did not reach the source's head");
    }
    Ok(seconds)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn run(b: &StateSyncBench) -> anyhow::Result<Output> {
    Output::json(&measure(b)?)
}

/// The run, as its JSON report.
fn measure(b: &StateSyncBench) -> anyhow::Result<serde_json::Value> {
    if b.txs == 0 || b.block_txs == 0 || b.senders == 0 || b.rounds == 0 {
        bail!("--txs, --block-txs, --senders and --rounds must be positive");
    }
    let tmp = tempfile::tempdir()?;
    let work = b.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    if work.exists() && work.read_dir()?.next().is_some() {
        bail!("{} is not empty", work.display());
    }
    std::fs::create_dir_all(&work)?;
    let workload = bench::workload::workload(b.senders, b.senders);
    let genesis: &Genesis = &workload.genesis;
    let genesis_toml = genesis.to_toml();
    std::fs::write(work.join("genesis.toml"), &genesis_toml)?;
    let chain_id = genesis.params.chain_id.clone();
    let validator = bench::workload::validator_key();

    // Setup: the source chain.
    let setup = Instant::now();
    let ledgers = blocks(b, &workload.keys, &chain_id, genesis.config.timestamp_ms);
    let src = work.join("source");
    let (mut store, mut state) = Store::create_with(&src, &genesis_toml, options())?;
    for block in &ledgers {
        let applied = apply_block(&mut state, block, Backend::Libsecp256k1)
            .with_context(|| format!("benchmark ledger {}", block.height))?;
        let mut certificate = Certificate::new(0);
        certificate.add(&chain_id, 0, &validator, applied.header.height, &applied.hash);
        let ledger = LedgerToCommit {
            applied: &applied,
            transactions: &block.transactions,
            certificate: &certificate,
            state: &state,
        };
        store.commit(ledger)?;
    }
    store.flush()?;
    let head = state.head_hash();
    let head_height = state.head().height;
    let accounts = state.accounts().count();
    let tx_bytes: usize = ledgers.iter().flat_map(|l| &l.transactions).map(|tx| tx.to_bytes().len()).sum();
    drop((store, state, ledgers));
    let setup_s = setup.elapsed().as_secs_f64();

    // The snapshot, taken once (a member's cost, for any number of joiners).
    let file = work.join("state.snapshot");
    let taken = storage::snapshot(&src, &file)?;

    // Rounds of both joins, alternating which goes first (each leaves the page cache and the
    // allocator in a state the next pays for); medians compared.
    let mut replays = Vec::new();
    let mut restores = Vec::new();
    let mut open_s = Vec::new();
    for round in 0..b.rounds {
        for replay_now in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let dir = work.join(format!("join-{round}-{}", if replay_now { "replay" } else { "restore" }));
            if replay_now {
                replays.push(replay(&src, &dir, &genesis_toml, head)?);
            } else {
                let restored = storage::restore(&file, &dir, &genesis_toml, None, Durability::Durable)?;
                if restored.ledger_hash != head || restored.accounts as usize != accounts {
                    bail!("the restored store is not the source's state");
                }
                restores.push(restored.seconds);
                open_s.push(restored.open_seconds);
            }
            if b.dir.is_none() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    let (replay_s, restore_s) = (median(&replays), median(&restores));
    let ledgers_committed = head_height;
    let ratio = replay_s / restore_s;
    let ratio_with_take = replay_s / (restore_s + taken.seconds);
    let report = serde_json::json!({
        "bench": "state-sync",
        "accounts": accounts,
        "committed_txs": b.txs,
        "ledgers": ledgers_committed,
        "rounds": b.rounds,
        "block_txs": b.block_txs,
        "tx_bytes": tx_bytes,
        "setup_s": setup_s,
        "replay_s": replay_s,
        "replay_s_each": replays,
        "snapshot_take_s": taken.seconds,
        "restore_s": restore_s,
        "restore_s_each": restores,
        "restore_open_s": median(&open_s),
        "snapshot_bytes": taken.bytes,
        "snapshot_chunks": taken.chunks,
        "window_ids": taken.window_ids,
        "ratio_replay_over_restore": ratio,
        "ratio_replay_over_take_and_restore": ratio_with_take,
        "bound": RATIO_BOUND,
        "met": ratio >= RATIO_BOUND,
        "note": "joining node's time: replay re-executes every ledger from genesis (signatures verified, durable commits); restore checks the snapshot against the certified chain and opens the store; network transfer excluded on both sides",
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_chain_joins_by_replay_and_by_snapshot_to_the_same_state() {
        let b = StateSyncBench { txs: 300, block_txs: 40, senders: 7, rounds: 2, dir: None };
        // `measure` fails unless both joins reach the source's head and the restored store
        // holds every account.
        let report = measure(&b).unwrap();
        // The senders and one account per transfer, besides the genesis's own (fee, issuer).
        assert!(report["accounts"].as_u64().unwrap() >= 7 + 300, "{report}");
        assert_eq!(report["ledgers"], 8);
        assert_eq!(report["replay_s_each"].as_array().unwrap().len(), 2);
        assert!(report["window_ids"].as_u64().unwrap() > 0);
    }
}
