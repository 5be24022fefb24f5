//! `caasiope bench pipeline`: the path of a validator alone (a validator set of one) at full
//! speed, against the machine's own signature-verification bound measured in the same run.
//!
//! Setup (not timed): a genesis of `accounts` funded accounts and `txs` transfers among them,
//! signed in parallel and written to a file, so the timed run streams them from disk and the
//! process's memory does not grow with `txs`. Timed: the bytes go through the node's own parts
//! — the intake (decode → verify on all cores → admission against the post-state into the
//! mempool), then the consensus driver (proposal built from the mempool: apply → parallel Merkle
//! seal; prevote and precommit with the write-ahead log and the signing state; commit) and the
//! MDBX store, until the last ledger is committed. Only the clock is simulated: a height starts
//! as soon as a block's worth is pooled, one second of chain time after the previous one.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::workload::{CHAIN, GENESIS_MS, Mix, generated_genesis, generated_transfer, validator_key};
use consensus::{
    Chain, ChainConfig, Clock, Committed, Config, Core, Driver, DriverConfig, Equivocation, Fault, Mempool,
    MempoolConfig, Message, Network, PeerId, SignState, Storage, StorageError, Timeouts, Timer, Timers,
    WalRead, WalRecord,
};
use engine::{
    Backend, PublicKey,
    state::State,
    tx::{SignedTransaction, TxId},
    validate::verify_signatures,
};
use exit::Output;
use pipeline::{Intake, IntakeConfig, IntakeSubmitter, MetricsSnapshot, Origin};
use rayon::prelude::*;
use replica::{signer::SignerFile, wal::Wal};
use storage::{Durability, LedgerToCommit, Store, StoreOptions};

use crate::stats::{median_run, proc_status_kb, process_cpu_s};

/// Arguments of `bench pipeline`.
#[derive(Debug, Clone)]
pub(crate) struct PipelineBench {
    pub(crate) txs: usize,
    pub(crate) accounts: usize,
    /// Share of transfers within the hot set ([`Mix`]).
    pub(crate) hot_share: f64,
    pub(crate) backend: Backend,
    pub(crate) block_txs: usize,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) durable: bool,
    /// Timed runs (each on a fresh store); the report is the median one.
    pub(crate) runs: usize,
}

/// Chain time between ledgers of the benchmark (deterministic sealing).
const STEP_MS: i64 = 1_000;
/// Each transfer expires this long (chain time) after the ledger it is meant for, as a wallet on
/// a one-second chain would set it. The replay set holds every id until it expires — rate × TTL
/// ids, here 20 ledgers' worth — so this, not the run's length, sizes it.
const TX_TTL_MS: i64 = 20_000;

/// Expiration of transfer `j`: [`TX_TTL_MS`] after the timestamp of the ledger it fills.
fn expiration_ms(j: usize, block_txs: usize) -> i64 {
    let ledger = (j / block_txs.max(1)) as i64 + 1;
    GENESIS_MS + ledger * STEP_MS + TX_TTL_MS
}

fn write_transfers(path: &Path, mix: &Mix, cfg: &PipelineBench) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    const CHUNK: usize = 20_000;
    for start in (0..cfg.txs).step_by(CHUNK) {
        let end = (start + CHUNK).min(cfg.txs);
        let signed: Vec<Vec<u8>> = (start..end)
            .into_par_iter()
            .map(|j| generated_transfer(CHAIN, mix, j as u64, expiration_ms(j, cfg.block_txs)))
            .collect();
        for tx in signed {
            out.write_all(&(tx.len() as u32).to_le_bytes())?;
            out.write_all(&tx)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Reads the next `n` transactions of the file (fewer at its end).
fn read_batch(r: &mut impl Read, n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut batch = Vec::with_capacity(n);
    for _ in 0..n {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let mut tx = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut tx)?;
        batch.push(tx);
    }
    Ok(batch)
}

/// Signature verifications per second with every core of the global rayon pool verifying the
/// first (up to) 40,000 pre-made transfers; decoding and id hashing are done before the clock
/// starts.
/// Also returns the CPU seconds per verification the process spent meanwhile.
fn sigverify_bound(txs_path: &Path, cfg: &PipelineBench) -> anyhow::Result<(f64, f64)> {
    let sample = read_batch(&mut BufReader::new(File::open(txs_path)?), cfg.txs.min(40_000))?;
    let decoded: Vec<_> = sample
        .par_iter()
        .map(|b| SignedTransaction::decode_with_id(b, bench::workload::CHAIN))
        .collect::<Result<_, _>>()?;
    let (t, cpu) = (Instant::now(), process_cpu_s());
    let ok = decoded
        .par_iter()
        .filter(|(tx, id)| verify_signatures(tx, id, bench::workload::CHAIN, cfg.backend).is_ok())
        .count();
    let rate = ok as f64 / t.elapsed().as_secs_f64();
    let cpu_per_verify = (process_cpu_s() - cpu) / ok.max(1) as f64;
    anyhow::ensure!(ok == decoded.len(), "pre-signed transactions failed verification");
    Ok((rate, cpu_per_verify))
}

/// One timed run on a fresh store in `dir/db`: the bound, the validator, the bound again.
fn timed_run(
    cfg: &PipelineBench,
    dir: &Path,
    txs_path: &Path,
    genesis_toml: &str,
) -> anyhow::Result<serde_json::Value> {
    let threads = rayon::current_num_threads();
    for sub in ["db", "validator"] {
        if dir.join(sub).exists() {
            std::fs::remove_dir_all(dir.join(sub)).with_context(|| format!("clearing {}", dir.display()))?;
        }
    }
    // The bound: every core verifying pre-made signatures, measured before and after the timed
    // run (the machine is shared: its speed drifts over a run, so the mean of both is the bound).
    let before = sigverify_bound(txs_path, cfg)?;
    let options = StoreOptions {
        durability: if cfg.durable { Durability::Durable } else { Durability::SafeNoSync },
        // A validator's store (node/replica/src/run.rs): no query indexes, the accounts and
        // the replay ids of a batch of ledgers written on a thread of their own.
        without_query_indexes: true,
        index_in_background: true,
        // As `caasiope run` sizes it (node/replica/src/run.rs).
        index_batch: storage::IndexBatch::for_accounts(cfg.accounts),
        replay_filter_bytes: limits::REPLAY_FILTER_BYTES,
        ..StoreOptions::default()
    };
    let (store, state) = Store::create_with(dir.join("db"), genesis_toml, options)?;
    let timed = timed_validator(cfg, state, store, &dir.join("validator"), txs_path)?;
    let after = sigverify_bound(txs_path, cfg)?;
    Ok(report(cfg, threads, &timed, before, after))
}

/// What the timed part measured.
struct Timed {
    committed_txs: u64,
    ledgers: u64,
    intake: MetricsSnapshot,
    /// Wall time in the consensus driver (building, executing, sealing, signing, the log), the
    /// store's commit excluded, s.
    consensus_s: f64,
    /// Wall time in the store's commits and its final flush, s.
    commit_s: f64,
    elapsed_s: f64,
    /// CPU the process used meanwhile.
    cpu_s: f64,
    /// The highest `RssAnon` the sampler saw.
    peak_anon_kb: u64,
}

/// The benchmark's chain time, ms: what the validator's clock and the intake's read.
static CHAIN_NOW_MS: AtomicI64 = AtomicI64::new(GENESIS_MS);

fn chain_now_ms() -> i64 {
    CHAIN_NOW_MS.load(Ordering::Relaxed)
}

/// The validator alone: the environment its consensus driver runs in — a simulated clock its
/// timers fire on at once (heights one [`STEP_MS`] of chain time apart), no peers, and the
/// node's own write-ahead log, signing state and store.
struct Alone<'a> {
    now_ms: i64,
    timers: BinaryHeap<Reverse<(i64, u64)>>,
    kinds: HashMap<u64, Timer>,
    seq: u64,
    store: Store,
    wal: Wal,
    signer: SignerFile,
    intake: &'a Intake,
    committed_txs: u64,
    ledgers: u64,
    commit_ns: u64,
}

impl Clock for Alone<'_> {
    fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

impl Network for Alone<'_> {
    fn broadcast(&mut self, _: &Message) {}
    fn request_ledger(&mut self, _: Option<PeerId>, _: u64) {}
    fn send_ledger(&mut self, _: PeerId, _: u64) {}
    fn fetch(&mut self, _: Option<PeerId>, _: &[TxId]) {}
    fn penalize(&mut self, _: PeerId, _: Fault) {}
}

impl Timers for Alone<'_> {
    fn schedule(&mut self, timer: Timer, after_ms: u64) {
        self.seq += 1;
        let due = self.now_ms.saturating_add(i64::try_from(after_ms).unwrap_or(i64::MAX));
        self.timers.push(Reverse((due, self.seq)));
        self.kinds.insert(self.seq, timer);
    }
}

fn storage_error(e: impl std::fmt::Display) -> StorageError {
    StorageError(e.to_string())
}

impl Storage for Alone<'_> {
    fn wal_reset(&mut self, records: &[WalRecord]) -> Result<u64, StorageError> {
        self.wal.reset(records).map_err(storage_error)
    }

    fn wal_start(&mut self, records: &[WalRecord]) -> Result<u64, StorageError> {
        self.wal.start(records).map_err(storage_error)
    }

    fn wal_append(&mut self, record: &WalRecord) -> Result<u64, StorageError> {
        self.wal.append(record).map_err(storage_error)
    }

    fn wal_sync(&mut self) -> Result<(), StorageError> {
        self.wal.sync().map_err(storage_error)
    }

    fn save_signer(&mut self, state: &SignState) -> Result<(), StorageError> {
        self.signer.save(state).map_err(storage_error)
    }

    fn commit(&mut self, c: &Committed, state: &State) -> Result<(), StorageError> {
        let t = Instant::now();
        self.store
            .commit(LedgerToCommit {
                applied: &c.applied,
                transactions: &c.ledger.transactions,
                certificate: &c.ledger.certificate,
                state,
            })
            .map_err(storage_error)?;
        self.commit_ns += u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.committed_txs += c.ledger.transactions.len() as u64;
        self.ledgers += 1;
        self.intake.rebase(c.diff.clone(), state, state.replay_window()).map_err(storage_error)
    }

    fn evidence(&mut self, _: &Equivocation, _: &PublicKey) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Streams the transfers of `txs_path` to the intake in batches (waiting while its queue is
/// full), then an empty batch whose verdict says every one before it was admitted.
fn feed(
    submitter: &IntakeSubmitter,
    txs_path: &Path,
    done: std::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(txs_path)?);
    loop {
        let batch = read_batch(&mut reader, limits::STAGE_BATCH_TXS_MAX)?;
        if batch.is_empty() {
            break;
        }
        submitter.submit(Origin::Client, batch)?;
    }
    let admitted = Box::new(move |_| {
        let _ = done.send(());
    });
    submitter.submit_decoded_with(Origin::Client, Vec::new(), admitted)?;
    Ok(())
}

/// The timed part: a validator alone (a validator set of one) started on `state` — the
/// node's intake and mempool, consensus driver, write-ahead log, signing state and store —
/// takes the transfers of `txs_path` until the last is committed, its anonymous memory sampled
/// meanwhile; then the conservation check. A height starts once a block's worth is pooled (or
/// the input is all admitted): the chain's time is simulated, the work is not.
fn timed_validator(
    cfg: &PipelineBench,
    state: State,
    store: Store,
    validator_dir: &Path,
    txs_path: &Path,
) -> anyhow::Result<Timed> {
    std::fs::create_dir_all(validator_dir)?;
    // As `caasiope run` does (see there why).
    replica::transparent_huge_pages_off();
    let (wal, _) = Wal::open(validator_dir)?;
    let (signer, _) = SignerFile::open(validator_dir)?;
    CHAIN_NOW_MS.store(state.head().timestamp_ms, Ordering::Relaxed);
    let (done, peak_anon_kb, sampler) = start_sampler();
    let mempool = Arc::new(Mempool::new(MempoolConfig {
        txs_max: limits::POOL_TXS_MAX,
        bytes_max: limits::POOL_BYTES_MAX,
        busy_txs: limits::POOL_TXS_MAX,
        busy_queued: usize::MAX,
        busy_wait: None,
    }));
    let intake_cfg = IntakeConfig {
        backend: cfg.backend,
        verify_threads: rayon::current_num_threads(),
        batch_txs_max: limits::STAGE_BATCH_TXS_MAX,
        queue_batches_max: limits::INTAKE_QUEUE_BATCHES_MAX,
        clock: chain_now_ms,
    };
    // The admission stage's own copy of the state, made once when a process starts (`bench
    // open` times a start): 3 s of the timed part at 10M accounts if the clock ran here.
    let intake = Intake::start(state.clone(), intake_cfg, mempool.clone(), |_| {})?;
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let now_ms = state.head().timestamp_ms;
    let mut driver = alone_driver(cfg, state, mempool.clone());
    let mut env = Alone {
        now_ms,
        timers: BinaryHeap::new(),
        kinds: HashMap::new(),
        seq: 0,
        store,
        wal,
        signer,
        intake: &intake,
        committed_txs: 0,
        ledgers: 0,
        commit_ns: 0,
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let submitter = intake.submitter().context("intake closed at start")?;
    let path = txs_path.to_path_buf();
    let feeder = std::thread::spawn(move || feed(&submitter, &path, done_tx));
    driver.boot(&mut env, WalRead::Records(Vec::new())).map_err(|e| anyhow::anyhow!("{e}"))?;
    let driver_s = run_heights(&mut driver, &mut env, &mempool, &done_rx, cfg.block_txs)?;
    feeder.join().map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
    // The batch being written and the rows gathered since, written before the clock stops:
    // what the run committed is then all in the tables (more than a steady state would have
    // written by then, never less).
    let t = Instant::now();
    env.store.flush()?;
    let flush_s = t.elapsed().as_secs_f64();
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - cpu_before;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    anyhow::ensure!(driver.chain().state().check_conservation().is_ok(), "conservation broken");
    let commit_s = env.commit_ns as f64 / 1e9;
    Ok(Timed {
        committed_txs: env.committed_txs,
        ledgers: env.ledgers,
        intake: intake.metrics(),
        consensus_s: driver_s - commit_s,
        // The store's time, the final flush included.
        commit_s: commit_s + flush_s,
        elapsed_s,
        cpu_s,
        peak_anon_kb: peak_anon_kb.load(Ordering::Relaxed),
    })
}

/// The validator's consensus driver: the validator set of one's only key, proposing from
/// `mempool`.
fn alone_driver(cfg: &PipelineBench, state: State, mempool: Arc<Mempool>) -> Driver {
    let chain_cfg = ChainConfig {
        backend: cfg.backend,
        block_txs_max: cfg.block_txs,
        block_bytes_max: limits::BLOCK_BYTES_MAX,
        drift_ms: i64::MAX / 4,
    };
    let chain_id = state.params().chain_id.clone();
    let chain = Chain::new(state, chain_cfg, mempool);
    let core = Core::new(Config {
        chain_id,
        key: Some(validator_key()),
        backend: cfg.backend,
        timeouts: Timeouts::for_interval(STEP_MS as u64),
    });
    Driver::new(DriverConfig::for_interval(STEP_MS as u64), Some(core), chain, None)
}

/// Fires the driver's timers in order on the simulated clock until the input is all admitted
/// and committed; a height starts once a block's worth is pooled, or the input has ended.
/// Returns the seconds spent in the driver (not those waiting for the pool to fill).
fn run_heights(
    driver: &mut Driver,
    env: &mut Alone<'_>,
    mempool: &Mempool,
    done: &std::sync::mpsc::Receiver<()>,
    block_txs: usize,
) -> anyhow::Result<f64> {
    let mut input_done = false;
    let mut busy = Duration::ZERO;
    while let Some(Reverse((due, seq))) = env.timers.pop() {
        let Some(timer) = env.kinds.remove(&seq) else { continue };
        if let Timer::StartNext(_) = timer {
            while !input_done && mempool.len() < block_txs {
                match done.recv_timeout(Duration::from_millis(1)) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => input_done = true,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            if input_done && mempool.is_empty() {
                return Ok(busy.as_secs_f64());
            }
        }
        env.now_ms = env.now_ms.max(due);
        CHAIN_NOW_MS.store(env.now_ms, Ordering::Relaxed);
        let t = Instant::now();
        driver.on_timer(env, timer).map_err(|e| anyhow::anyhow!("{e}"))?;
        busy += t.elapsed();
    }
    anyhow::bail!("the validator stopped scheduling heights")
}

/// A thread sampling the process's anonymous memory every 50 ms until the flag is set.
fn start_sampler() -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let peak_anon_kb = Arc::new(AtomicU64::new(0));
    let (d, peak) = (done.clone(), peak_anon_kb.clone());
    let sampler = std::thread::spawn(move || {
        while !d.load(Ordering::Relaxed) {
            peak.fetch_max(proc_status_kb("RssAnon:"), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (done, peak_anon_kb, sampler)
}

/// The intake's stages (decode and verify on the pool, admission), then the host's: per stage,
/// ns per committed transaction and busy seconds.
fn stages(
    intake: &MetricsSnapshot,
    consensus_ns: f64,
    consensus_s: f64,
    commit_ns: f64,
    commit_s: f64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut stages: serde_json::Map<String, serde_json::Value> = intake
        .stages
        .iter()
        .filter(|s| s.batches > 0)
        .map(|s| {
            (
                s.stage.to_owned(),
                serde_json::json!({ "ns_per_tx": s.ns_per_tx, "mean_batch_size": s.mean_batch_size, "busy_s": s.busy_ns as f64 / 1e9 }),
            )
        })
        .collect();
    stages
        .insert("consensus".into(), serde_json::json!({ "ns_per_tx": consensus_ns, "busy_s": consensus_s }));
    stages.insert("commit".into(), serde_json::json!({ "ns_per_tx": commit_ns, "busy_s": commit_s }));
    stages
}

/// A run's JSON report, from the timed part and the bound (rate, CPU s per verification)
/// measured before and after it.
fn report(
    cfg: &PipelineBench,
    threads: usize,
    timed: &Timed,
    (bound_before, cpu_verify_before): (f64, f64),
    (bound_after, cpu_verify_after): (f64, f64),
) -> serde_json::Value {
    let Timed {
        committed_txs,
        ledgers,
        ref intake,
        consensus_s,
        commit_s,
        elapsed_s: elapsed,
        cpu_s,
        peak_anon_kb,
    } = *timed;
    let cpu_per_verify = (cpu_verify_before + cpu_verify_after) / 2.0;
    let cpu_per_tx = cpu_s / committed_txs.max(1) as f64;
    let bound_tx_per_s = (bound_before + bound_after) / 2.0;
    let tx_per_s = committed_txs as f64 / elapsed;
    let per_tx_ns = |s: f64| s * 1e9 / committed_txs.max(1) as f64;
    let stages = stages(intake, per_tx_ns(consensus_s), consensus_s, per_tx_ns(commit_s), commit_s);
    serde_json::json!({
        "benchmark": "pipeline",
        "txs": cfg.txs,
        "accounts": cfg.accounts,
        "hot_share": cfg.hot_share,
        "backend": cfg.backend.name(),
        "threads": threads,
        "block_txs": cfg.block_txs,
        "durable": cfg.durable,
        "committed": committed_txs,
        "rejected": intake.rejected_total(),
        // Committed ledgers the admission stage's post-state moved onto in place, and the slow
        // way (every pending transaction applied again).
        "rebased_in_place": intake.rebased_in_place,
        "rebased_again": intake.rebased_again,
        "ledgers": ledgers,
        "elapsed_s": elapsed,
        "tx_per_s": tx_per_s,
        "sigverify_bound_tx_per_s": bound_tx_per_s,
        "sigverify_bound_before_tx_per_s": bound_before,
        "sigverify_bound_after_tx_per_s": bound_after,
        "ratio": tx_per_s / bound_tx_per_s,
        "peak_rss_bytes": proc_status_kb("VmHWM:") * 1024,
        "peak_anon_rss_bytes": peak_anon_kb * 1024,
        "stages": stages,
        // CPU the process used while timed, over what the cores could give: the rest is idle.
        "cpu_s": cpu_s,
        "cpu_utilization": cpu_s / (elapsed * threads as f64),
        // The same comparison in CPU time rather than wall time: less sensitive to the machine's
        // speed drifting between the bound and the run (CPU stolen by neighbours is not counted).
        "cpu_us_per_verify_bound": cpu_per_verify * 1e6,
        "cpu_us_per_tx": cpu_per_tx * 1e6,
        "cpu_ratio": cpu_per_verify / cpu_per_tx,
    })
}

/// Runs the benchmark and returns its JSON report.
pub(crate) fn pipeline(cfg: &PipelineBench) -> anyhow::Result<Output> {
    anyhow::ensure!(cfg.txs > 0 && cfg.accounts >= 2, "need at least one transaction and two accounts");
    let dir = match &cfg.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("caasiope-bench-{}", std::process::id())),
    };
    let setup = Instant::now();
    // A genesis and transfers made by an earlier run with the same parameters are reused (kept
    // with `--dir`), so a profiler can watch the timed part alone.
    let mix = Mix { accounts: cfg.accounts as u64, hot_share: cfg.hot_share };
    let txs_path = dir.join(format!(
        "transfers-{}-{}-hot{}-{}-ttl{}.bin",
        cfg.txs, cfg.accounts, cfg.hot_share, cfg.block_txs, TX_TTL_MS
    ));
    std::fs::create_dir_all(&dir)?;
    let genesis = engine::genesis::Genesis::new(generated_genesis(
        CHAIN,
        mix.accounts,
        &[validator_key().public_key()],
    ))?;
    anyhow::ensure!(
        TX_TTL_MS + STEP_MS < genesis.params.max_ttl_ms,
        "benchmark TTL above the chain's maximum"
    );
    let genesis_toml = genesis.to_toml();
    if !txs_path.exists() {
        let partial = txs_path.with_extension("partial");
        write_transfers(&partial, &mix, cfg)?;
        std::fs::rename(&partial, &txs_path)?;
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let mut runs = Vec::with_capacity(cfg.runs);
    for _ in 0..cfg.runs.max(1) {
        runs.push(timed_run(cfg, &dir, &txs_path, &genesis_toml)?);
    }
    let mut report = median_run(
        runs,
        |r| serde_json::json!({ "ratio": r["ratio"], "tx_per_s": r["tx_per_s"], "sigverify_bound_tx_per_s": r["sigverify_bound_tx_per_s"], "peak_anon_rss_bytes": r["peak_anon_rss_bytes"] }),
    );
    report["setup_s"] = serde_json::json!(setup_s);
    if cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Output::json(&report)
}
