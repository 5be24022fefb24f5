//! `caasiope bench open`: how long a validator process takes to come back on a store of
//! `--accounts` generated accounts — from `exec` to its admin port reporting the height it
//! stopped at, the store opened (every account read, the state trie rebuilt and checked against
//! the head's root, the ledgers after the last written batch executed again) — against the
//! bound of 30 s, in runs one after another.
//!
//! Setup (reported, not part of the figure): a localnet of one validator whose genesis
//! generates the accounts; the validator's first start creates the store; it commits a few
//! ledgers and is stopped. Each run then starts the same validator on that store and stops it
//! once it is ready, reading its peak memory first.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bench::workload::generated_accounts;
use exit::Output;
use replica::{Role, admin_get, metric};

use crate::{
    cli::LocalnetArgs,
    localnet::{Process, init_with, processes, spawn, stop},
    stats::{median, proc_status_kb_of},
};

/// Arguments of `bench open`.
#[derive(Debug)]
pub(crate) struct OpenBench {
    pub(crate) accounts: u64,
    pub(crate) runs: usize,
    /// Drop the kernel's page cache before each run (a start after a reboot).
    pub(crate) cold: bool,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) net: LocalnetArgs,
}

/// The target of issue 21: a node opens a store of ten million accounts within 30 s.
const BOUND_S: f64 = 30.0;
/// Ledgers committed before the first stop.
const LEDGERS: u64 = 3;
/// Longest wait for a start.
const START_TIMEOUT: Duration = Duration::from_secs(900);

/// The anonymous memory of process `pid` once it settles: read every second until two
/// readings 3 s apart differ by less than 1 % (at most a minute).
fn settled_anon_kb(pid: u32) -> u64 {
    let mut readings = vec![proc_status_kb_of(pid, "RssAnon:")];
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        readings.push(proc_status_kb_of(pid, "RssAnon:"));
        if let [.., before, _, _, now] = readings[..] {
            if now.abs_diff(before) * 100 < before.max(1) {
                return now;
            }
        }
    }
    readings.last().copied().unwrap_or(0)
}

/// Polls `p`'s admin port until it reports a height of at least `height`; the time waited.
fn wait_height(p: &Process, child: &mut std::process::Child, height: u64) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let h = admin_get(p.admin, "/metrics").ok().and_then(|b| metric(&b, "caasiope_ledger_height"));
        if h.is_some_and(|h| h >= height) {
            return Ok(t.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the validator exited with {status} before it was ready");
        }
        if t.elapsed() > START_TIMEOUT {
            bail!("the validator was not ready within {} s", START_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drop_page_cache() -> anyhow::Result<()> {
    // SAFETY: sync(2) takes no arguments and only flushes dirty pages.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache (--cold needs root)")
}

/// Runs the benchmark.
pub(crate) fn run(b: &OpenBench) -> anyhow::Result<Output> {
    let dir = match &b.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("caasiope-bench-open-{}", std::process::id())),
    };
    if dir.join("genesis.toml").exists() {
        bail!("{} already holds a network; give an empty or new directory", dir.display());
    }
    if b.net.generated_accounts != 0 {
        bail!("bench open takes --accounts, not --generated-accounts");
    }
    init_with(&dir, 1, &b.net, vec![generated_accounts(b.accounts)])?;
    let result = measure(b, &dir);
    if b.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Output::json(&result?)
}

fn measure(b: &OpenBench, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let p = processes(dir)?.into_iter().find(|p| p.role == Role::Validator).context("no validator")?;
    let t = Instant::now();
    let mut child = spawn(dir, &p)?;
    let created = wait_height(&p, &mut child, 1);
    let created_s = t.elapsed().as_secs_f64();
    let committed = created.and_then(|_| wait_height(&p, &mut child, LEDGERS));
    stop(&mut child, Duration::from_secs(60));
    committed.with_context(|| format!("creating the store; logs in {}/logs", dir.display()))?;
    let data = dir.join("data").join(&p.name).join("mdbx.dat");
    let store_bytes = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);

    let mut runs = Vec::with_capacity(b.runs);
    for _ in 0..b.runs.max(1) {
        if b.cold {
            drop_page_cache()?;
        }
        let t = Instant::now();
        let mut child = spawn(dir, &p)?;
        let ready = wait_height(&p, &mut child, LEDGERS).map(|_| t.elapsed().as_secs_f64());
        let at_open_kb = proc_status_kb_of(child.id(), "RssAnon:");
        // The node serves once it commits, while parts of it are still being built (admission
        // copies the state on its own thread): its memory is read once it stops moving.
        let anon_kb = if ready.is_ok() { settled_anon_kb(child.id()) } else { at_open_kb };
        let hwm_kb = proc_status_kb_of(child.id(), "VmHWM:");
        stop(&mut child, Duration::from_secs(60));
        let open_s = ready.with_context(|| format!("reopening the store; logs in {}/logs", dir.display()))?;
        runs.push(serde_json::json!({
            "open_s": open_s,
            "peak_rss_bytes": hwm_kb * 1024,
            "anon_rss_at_open_bytes": at_open_kb * 1024,
            "anon_rss_bytes": anon_kb * 1024,
        }));
    }
    let median = median(runs.iter().filter_map(|r| r["open_s"].as_f64()).collect());
    Ok(serde_json::json!({
        "benchmark": "open",
        "accounts": b.accounts,
        "cold": b.cold,
        "store_bytes": store_bytes,
        "setup_create_s": created_s,
        "open_s": median,
        "bound_s": BOUND_S,
        "within_bound": median <= BOUND_S,
        "runs": runs,
    }))
}
