//! `caasiope bench pipeline`: the full single-node path at full speed, against the machine's own
//! signature-verification bound measured in the same run.
//!
//! Setup (not timed): a genesis of `accounts` funded accounts and `txs` transfers among them,
//! signed in parallel and written to a file, so the timed run streams them from disk and the
//! process's memory does not grow with `txs`. Timed: the bytes go through decode → verify
//! (all cores) → apply → seal → MDBX commit per ledger, until the last ledger is committed.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::workload::{GENESIS_MS, transfer_bytes, validator_key, workload};
use engine::{Backend, tx::SignedTransaction, validate::verify_signatures};
use exit::Output;
use pipeline::{MetricsSnapshot, Pipeline, PipelineConfig, Sealing};
use rayon::prelude::*;
use storage::{Durability, Store, StoreOptions};

use replica::ValidatorSink;

use crate::stats::{median_run, proc_status_kb, process_cpu_s};

/// Arguments of `bench pipeline`.
#[derive(Debug, Clone)]
pub(crate) struct PipelineBench {
    pub(crate) txs: usize,
    pub(crate) accounts: usize,
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

fn write_transfers(path: &Path, w: &bench::workload::Workload, cfg: &PipelineBench) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    const CHUNK: usize = 20_000;
    for start in (0..cfg.txs).step_by(CHUNK) {
        let end = (start + CHUNK).min(cfg.txs);
        let signed: Vec<Vec<u8>> = (start..end)
            .into_par_iter()
            .map(|j| transfer_bytes(w, j, cfg.accounts, expiration_ms(j, cfg.block_txs)))
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

/// One timed run on a fresh store in `dir/db`: the bound, the pipeline, the bound again.
fn timed_run(
    cfg: &PipelineBench,
    dir: &Path,
    txs_path: &Path,
    genesis_toml: &str,
) -> anyhow::Result<serde_json::Value> {
    let threads = rayon::current_num_threads();
    if dir.join("db").exists() {
        std::fs::remove_dir_all(dir.join("db")).with_context(|| format!("clearing {}", dir.display()))?;
    }
    // The bound: every core verifying pre-made signatures, measured before and after the timed
    // run (the machine is shared: its speed drifts over a run, so the mean of both is the bound).
    let before = sigverify_bound(txs_path, cfg)?;

    let options = StoreOptions {
        durability: if cfg.durable { Durability::Durable } else { Durability::SafeNoSync },
        ..StoreOptions::default()
    };
    let (store, state) = Store::create_with(dir.join("db"), genesis_toml, options)?;
    let chain_id = state.params().chain_id.clone();
    let sink = ValidatorSink { store, key: validator_key(), index: 0, chain_id, verbose: false };
    let pipeline_cfg = PipelineConfig {
        backend: cfg.backend,
        verify_threads: threads,
        batch_txs_max: limits::STAGE_BATCH_TXS_MAX,
        queue_batches_max: limits::STAGE_QUEUE_BATCHES_MAX,
        commit_queue_max: limits::COMMIT_QUEUE_LEDGERS_MAX,
        block_txs_max: cfg.block_txs,
        sealing: Sealing::WhenFull { step_ms: STEP_MS },
    };
    let timed = timed_pipeline(state, pipeline_cfg, sink, txs_path)?;
    let after = sigverify_bound(txs_path, cfg)?;
    Ok(report(cfg, threads, &timed, before, after))
}

/// What the timed part measured.
struct Timed {
    m: MetricsSnapshot,
    elapsed_s: f64,
    /// CPU the process used meanwhile.
    cpu_s: f64,
    /// The highest `RssAnon` the sampler saw.
    peak_anon_kb: u64,
}

/// The timed part: the transfers of `txs_path` streamed through a pipeline started on `state`
/// until its last ledger is committed, its anonymous memory sampled meanwhile; then the
/// conservation check.
fn timed_pipeline(
    state: engine::state::State,
    pipeline_cfg: PipelineConfig,
    sink: ValidatorSink,
    txs_path: &Path,
) -> anyhow::Result<Timed> {
    let done = Arc::new(AtomicBool::new(false));
    let peak_anon_kb = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak_anon_kb.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(proc_status_kb("RssAnon:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let pipeline = Pipeline::start(state, pipeline_cfg, sink)?;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(txs_path)?);
    loop {
        let batch = read_batch(&mut reader, pipeline_cfg.batch_txs_max)?;
        if batch.is_empty() {
            break;
        }
        pipeline.submit(batch)?;
    }
    let (state, m) = pipeline.finish()?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - cpu_before;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    anyhow::ensure!(state.check_conservation().is_ok(), "conservation broken");
    drop(state);
    Ok(Timed { m, elapsed_s, cpu_s, peak_anon_kb: peak_anon_kb.load(Ordering::Relaxed) })
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
    let Timed { ref m, elapsed_s: elapsed, cpu_s, peak_anon_kb } = *timed;
    let cpu_per_verify = (cpu_verify_before + cpu_verify_after) / 2.0;
    let cpu_per_tx = cpu_s / m.committed_txs.max(1) as f64;
    let bound_tx_per_s = (bound_before + bound_after) / 2.0;
    let tx_per_s = m.committed_txs as f64 / elapsed;
    let stages: serde_json::Map<String, serde_json::Value> = m
        .stages
        .iter()
        .map(|s| {
            (
                s.stage.to_owned(),
                serde_json::json!({ "ns_per_tx": s.ns_per_tx, "mean_batch_size": s.mean_batch_size, "busy_s": s.busy_ns as f64 / 1e9 }),
            )
        })
        .collect();
    serde_json::json!({
        "benchmark": "pipeline",
        "txs": cfg.txs,
        "accounts": cfg.accounts,
        "backend": cfg.backend.name(),
        "threads": threads,
        "block_txs": cfg.block_txs,
        "durable": cfg.durable,
        "committed": m.committed_txs,
        "rejected": m.rejected_total(),
        "ledgers": m.ledgers,
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
        "thread_cpu_s": m.thread_cpu_s.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
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
    let txs_path =
        dir.join(format!("transfers-{}-{}-{}-ttl{}.bin", cfg.txs, cfg.accounts, cfg.block_txs, TX_TTL_MS));
    let genesis_path = dir.join(format!("genesis-{}.toml", cfg.accounts));
    std::fs::create_dir_all(&dir)?;
    let genesis_toml = if txs_path.exists() && genesis_path.exists() {
        std::fs::read_to_string(&genesis_path)?
    } else {
        let w = workload(cfg.accounts, cfg.accounts);
        let partial = txs_path.with_extension("partial");
        anyhow::ensure!(
            TX_TTL_MS + STEP_MS < w.genesis.params.max_ttl_ms,
            "benchmark TTL above the chain's maximum"
        );
        write_transfers(&partial, &w, cfg)?;
        std::fs::rename(&partial, &txs_path)?;
        let toml = w.genesis.to_toml();
        std::fs::write(&genesis_path, &toml)?;
        toml
    };
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
