//! `caasiope bench flood`: the memory of an honest validator while a Byzantine leader signs the
//! most distinct values it may every round, at a state of many accounts, against the cost of the
//! design it replaced (a copy of the state per value checked), measured in the same run.
//!
//! In one process: a genesis of `accounts` funded accounts and four validators; the honest one is
//! the production `consensus::Driver` (core, chain, log, signing state) over an in-memory
//! environment; the Byzantine leader is a second chain over the same genesis that builds, for
//! every round it leads, `PROPOSALS_PER_ROUND_MAX + 2` distinct *valid* values (each a different
//! block of real transfers, so the honest validator executes every one it keeps to its end) and
//! signs them all. The honest driver is walked through `rounds` rounds by their timeouts (no
//! quorum forms: the others are silent), checking every value it is handed. Reported: the
//! honest driver's peak accounted bytes (`height_bytes`), the process's anonymous memory growth
//! during the flood, and — the bound — the memory one copy of the state takes (measured by
//! cloning it once, after the flood), times the values checked.

use std::time::Instant;

use anyhow::{Context, bail};
use bench::workload::{CHAIN, GENESIS_MS, Workload, cas_transfer, filler, sender_key, workload};
use consensus::{
    Chain, ChainConfig, Clock, Committed, Config, Core, Driver, DriverConfig, Equivocation, Fault, Input,
    Mempool, MempoolConfig, Message, Network, PROPOSALS_PER_ROUND_MAX, PeerId, Proposal, SignState, Storage,
    StorageError, Timeout, TimeoutKind, Timeouts, Timer, Timers, WalRead, WalRecord,
};
use engine::{
    Backend, Encode, PublicKey, SecretKey,
    genesis::Genesis,
    ledger::{Validator, ValidatorSet},
    state::{State, execute_build},
    tx::TxId,
    validate::{VerifiedTx, verify},
};
use rayon::prelude::*;

use exit::Output;

use crate::stats::proc_status_kb;

/// Arguments of `bench flood`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloodBench {
    pub(crate) accounts: usize,
    pub(crate) block_txs: usize,
    pub(crate) rounds: u32,
}

/// The honest validator's environment: everything in memory, nothing sent.
#[derive(Default)]
struct Quiet {
    now_ms: i64,
    wal_bytes: u64,
    wal_peak: u64,
    checks: u64,
}

impl Clock for Quiet {
    fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

impl Network for Quiet {
    fn broadcast(&mut self, _: &Message) {}
    fn request_ledger(&mut self, _: Option<PeerId>, _: u64) {}
    fn send_ledger(&mut self, _: PeerId, _: u64) {}
    fn fetch(&mut self, _: Option<PeerId>, _: &[TxId]) {}
    fn penalize(&mut self, _: PeerId, _: Fault) {}
}

impl Timers for Quiet {
    fn schedule(&mut self, _: Timer, _: u64) {}
}

impl Storage for Quiet {
    fn wal_reset(&mut self, records: &[WalRecord]) -> Result<u64, StorageError> {
        self.wal_bytes = records.iter().map(|r| r.to_bytes().len() as u64 + 8).sum();
        Ok(self.wal_bytes)
    }

    fn wal_start(&mut self, records: &[WalRecord]) -> Result<u64, StorageError> {
        self.wal_reset(records)
    }

    fn wal_append(&mut self, record: &WalRecord) -> Result<u64, StorageError> {
        if let WalRecord::Input(Input::Checked { .. }) = record {
            self.checks += 1;
        }
        self.wal_bytes += record.to_bytes().len() as u64 + 8;
        self.wal_peak = self.wal_peak.max(self.wal_bytes);
        Ok(self.wal_bytes)
    }

    fn wal_sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn save_signer(&mut self, _: &SignState) -> Result<(), StorageError> {
        Ok(())
    }

    fn commit(&mut self, _: &Committed, _: &State) -> Result<(), StorageError> {
        Ok(())
    }

    fn evidence(&mut self, _: &Equivocation, _: &PublicKey) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Anonymous resident memory of this process (its own allocations), bytes.
fn anon_rss() -> u64 {
    proc_status_kb("RssAnon:") * 1024
}

fn validator_keys() -> Vec<SecretKey> {
    let mut keys: Vec<SecretKey> = (0..4u64).map(|i| sender_key(u64::MAX - 1 - i)).collect();
    keys.sort_by_key(SecretKey::public_key);
    keys
}

/// The transfers of the Byzantine leader's values: `n` of them from the first `senders`
/// accounts of `w`, verified (setup, not measured).
fn transfers(
    w: &Workload,
    genesis: &Genesis,
    senders: usize,
    accounts: usize,
    n: usize,
) -> anyhow::Result<Vec<VerifiedTx>> {
    let expiration_ms = GENESIS_MS + 3_000_000;
    let fillers = (accounts - senders) as u64;
    (0..n)
        .into_par_iter()
        .map(|j| {
            let key = &w.keys[j % senders];
            let from = key.public_key().address();
            // Receivers spread over every account, so each block touches paths all over the trie.
            let to = filler(senders as u64 + (j as u64).wrapping_mul(2_654_435_761) % fillers);
            let amount = 1 + (j % 1_000) as i64;
            let tx = cas_transfer(from, to, amount, expiration_ms, (j as u64).to_le_bytes().to_vec())
                .sign(CHAIN, &[key]);
            let id = tx.id(CHAIN);
            verify(tx, id, &genesis.params, Backend::Libsecp256k1)
        })
        .collect::<Result<_, _>>()
        .context("a flood transfer does not verify")
}

/// The Byzantine leader's values for each of its `leader_rounds` rounds: `values_per_round`
/// blocks of `block_txs` distinct transfers of `txs` each, valid on genesis.
fn byzantine_values(
    state: &mut State,
    txs: &[VerifiedTx],
    leader_rounds: usize,
    values_per_round: usize,
    block_txs: usize,
) -> anyhow::Result<Vec<Vec<consensus::Value>>> {
    // Each executed on the genesis state and sealed without changing it: no copy of the state
    // is made before the measurement (freed copies would hand their memory to the flood). The
    // values of every round it leads differ (their timestamps), so none is judged from a cache.
    let mut values: Vec<Vec<consensus::Value>> = Vec::with_capacity(leader_rounds);
    for n in 0..leader_rounds {
        let mut of_round = Vec::with_capacity(values_per_round);
        for k in 0..values_per_round {
            let block = &txs[k * block_txs..(k + 1) * block_txs];
            let at = GENESIS_MS + 1_000 + (n * values_per_round + k) as i64;
            let (diff, rejected) = execute_build(state, at, block, block_txs)
                .map_err(|e| anyhow::anyhow!("building a flood value: {e}"))?;
            if !rejected.is_empty() {
                bail!("{} transfers of a flood value were refused", rejected.len());
            }
            let applied = diff.applied();
            of_round.push(consensus::Value { header: applied.header, tx_ids: applied.tx_ids.clone() });
        }
        values.push(of_round);
    }
    Ok(values)
}

/// The honest validator, booted: the driver over its chain, every body of `txs` in its pool.
fn honest_driver(
    state: State,
    chain_cfg: ChainConfig,
    txs: Vec<VerifiedTx>,
    key: SecretKey,
) -> anyhow::Result<(Driver, Quiet)> {
    let pool = MempoolConfig {
        txs_max: txs.len() + 1,
        bytes_max: usize::MAX,
        busy_txs: txs.len() + 1,
        busy_queued: usize::MAX,
        busy_wait: None,
    };
    let mut chain = Chain::new(state, chain_cfg, std::sync::Arc::new(Mempool::new(pool)));
    for v in &txs {
        let _ = chain.add(v.clone());
    }
    drop(txs);
    let core = Core::new(Config {
        chain_id: CHAIN.into(),
        key: Some(key),
        backend: Backend::Libsecp256k1,
        timeouts: Timeouts::for_interval(1_000),
    });
    let mut driver = Driver::new(DriverConfig::for_interval(1_000), Some(core), chain, None);
    let mut env = Quiet { now_ms: GENESIS_MS + 1_000, ..Quiet::default() };
    driver.boot(&mut env, WalRead::Records(Vec::new())).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((driver, env))
}

/// The Byzantine leader, as the honest driver sees it.
struct Leader<'a> {
    set: &'a ValidatorSet,
    index: u8,
    key: &'a SecretKey,
    /// Its values, one list per round it leads, in order.
    values: &'a [Vec<consensus::Value>],
}

/// What the flood cost the honest validator.
struct Peaks {
    base: u64,
    anon_rss: u64,
    height_bytes: usize,
    proposals: u64,
    flood_s: f64,
}

/// The timed flood: `rounds` rounds, the leader's signed values handed to the driver in those
/// it leads, each round ended by its timeouts; the memory peaks sampled after every step.
fn flood(driver: &mut Driver, env: &mut Quiet, leader: &Leader<'_>, rounds: u32) -> anyhow::Result<Peaks> {
    let base = anon_rss();
    let mut peak = base;
    let mut height_peak = 0usize;
    let mut proposals = 0u64;
    let t = Instant::now();
    let mut led = leader.values.iter();
    for round in 0..rounds {
        if Core::proposer(leader.set, 1, round) == leader.index {
            for value in led.next().into_iter().flatten() {
                let p = Proposal { height: 1, round, valid_round: None, value: value.clone() };
                let signed = p.sign(CHAIN, leader.index, leader.key);
                driver
                    .on_message(env, PeerId::from(leader.index), Message::Proposal(signed))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                proposals += 1;
                peak = peak.max(anon_rss());
                height_peak = height_peak.max(driver.height_bytes());
            }
        }
        // The round ends by its timeouts (the other validators are silent: no quorum forms).
        for kind in [TimeoutKind::Propose, TimeoutKind::Propose, TimeoutKind::Prevote, TimeoutKind::Precommit]
        {
            let timeout = Timeout { kind, height: 1, round };
            driver.on_timer(env, Timer::Consensus(timeout)).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        peak = peak.max(anon_rss());
        height_peak = height_peak.max(driver.height_bytes());
    }
    let flood_s = t.elapsed().as_secs_f64();
    Ok(Peaks { base, anon_rss: peak, height_bytes: height_peak, proposals, flood_s })
}

/// Runs the benchmark: setup (genesis, transfers, the leader's values), the honest driver, the
/// flood, then the bound (one copy of the state).
pub(crate) fn run(b: FloodBench) -> anyhow::Result<Output> {
    if b.accounts < 1_000 {
        bail!("--accounts must be at least 1000");
    }
    let senders = 2_000.min(b.accounts / 2);
    let values_per_round = PROPOSALS_PER_ROUND_MAX + 2;
    // Setup (not measured): the genesis, the transfers of every value, verified.
    let t = Instant::now();
    let w = workload(senders, b.accounts);
    let keys = validator_keys();
    let mut config = w.genesis.config.clone();
    config.validators = keys.iter().map(|k| Validator { public_key: k.public_key(), weight: 1 }).collect();
    let genesis = Genesis::new(config).context("flood genesis")?;
    let set: ValidatorSet = genesis.validators.clone();
    let mut state = State::from_genesis(&genesis);
    let txs_needed = values_per_round * b.block_txs;
    let txs = transfers(&w, &genesis, senders, b.accounts, txs_needed)?;
    let chain_cfg = ChainConfig {
        backend: Backend::Libsecp256k1,
        block_txs_max: b.block_txs,
        block_bytes_max: limits::BLOCK_BYTES_MAX,
        drift_ms: i64::MAX / 4,
    };
    let leader = Core::proposer(&set, 1, 0);
    let leader_rounds = (0..b.rounds).filter(|r| Core::proposer(&set, 1, *r) == leader).count();
    let honest = (0..4u8).find(|i| *i != leader).unwrap_or(0);
    let values = byzantine_values(&mut state, &txs, leader_rounds, values_per_round, b.block_txs)?;
    let setup_s = t.elapsed().as_secs_f64();

    let (mut driver, mut env) = honest_driver(state, chain_cfg, txs, keys[usize::from(honest)].clone())?;
    let byzantine = Leader { set: &set, index: leader, key: &keys[usize::from(leader)], values: &values };
    let peaks = flood(&mut driver, &mut env, &byzantine, b.rounds)?;
    let checks = env.checks;
    // The bound, in the same run: what one copy of the state takes.
    let before_copy = anon_rss();
    let copy = driver.chain().state().clone();
    let one_copy = anon_rss().saturating_sub(before_copy);
    drop(copy);
    let growth = peaks.anon_rss.saturating_sub(peaks.base);
    let old_design = one_copy.saturating_mul(checks);
    let report = serde_json::json!({
        "bench": "flood",
        "accounts": b.accounts,
        "block_txs": b.block_txs,
        "rounds": b.rounds,
        "leader_rounds": leader_rounds,
        "proposals_signed": peaks.proposals,
        "values_checked": checks,
        "honest_height_bytes_peak": peaks.height_bytes,
        "honest_anon_growth_bytes": growth,
        "one_state_copy_bytes": one_copy,
        "bound_state_copy_per_value_bytes": old_design,
        "growth_per_state_copy": if one_copy > 0 { growth as f64 / one_copy as f64 } else { 0.0 },
        "wal_peak_bytes": env.wal_peak,
        "anon_rss_bytes": peaks.anon_rss,
        "setup_s": setup_s,
        "flood_s": peaks.flood_s,
    });
    Output::json(&report)
}
