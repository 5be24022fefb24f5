//! `caasiope bench localnet --validators N --rate R --duration S --json`: a local network of N
//! validator processes on this machine, fed pre-signed transfers at R per second for S seconds
//! through their submit ports (round-robin); reports committed transactions per second — the
//! rate at which ledgers committed them while the load was offered (`tx_per_s`, the figure the
//! ratio uses; offer more than the peak to measure the peak) and all committed over submission
//! start → last commit (`tx_per_s_overall`) — every ledger seen, the submissions refused as
//! busy, the rounds validator 0 needed beyond one per height,
//! finality (submit → certified ledger, from each ledger's commit time on validator 0) p50/p99,
//! the block interval, every process's CPU, and the same-run bound: the machine's signature
//! verification rate (every core verifying pre-made signatures, before and after the run)
//! divided by the number of validators, since each validator verifies every transaction once.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bench::workload::{Mix, generated_accounts, generated_transfer};
use engine::{
    Backend, Hash,
    clock::now_ms,
    tx::{SignedTransaction, TxId},
    validate::verify_signatures,
};
use exit::Output;
use rayon::prelude::*;
use replica::{Role, admin_get, metric};

use crate::{
    localnet::{LOCALNET_CHAIN, Process, init_with, processes, spawn, stop},
    stats::{median_run, percentile, process_cpu_s},
};

/// Parameters of the benchmark.
#[derive(Debug)]
pub(crate) struct LocalnetBench {
    pub(crate) validators: usize,
    pub(crate) rate: u64,
    pub(crate) duration_s: u64,
    pub(crate) accounts: usize,
    /// Share of transfers within the hot set ([`Mix`]).
    pub(crate) hot_share: f64,
    pub(crate) net: crate::cli::LocalnetArgs,
    /// Runs, each on a fresh localnet with its own bound; the report is the one of median ratio.
    pub(crate) runs: usize,
}

/// Signature verifications per second on every core, over `txs` (decoded before the clock).
fn verify_rate(txs: &[Vec<u8>]) -> anyhow::Result<f64> {
    let decoded: Vec<_> = txs
        .par_iter()
        .map(|b| SignedTransaction::decode_with_id(b, LOCALNET_CHAIN))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    let ok = decoded
        .par_iter()
        .filter(|(tx, id)| verify_signatures(tx, id, LOCALNET_CHAIN, Backend::Libsecp256k1).is_ok())
        .count();
    anyhow::ensure!(ok == decoded.len(), "pre-signed transactions failed verification");
    Ok(ok as f64 / t.elapsed().as_secs_f64())
}

/// CPU seconds (user + system) a process has used, from /proc.
fn pid_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// The answers of a submit port.
#[derive(Default)]
struct Answers {
    accepted: u64,
    rejected: u64,
    /// Of the rejected, those refused because too many transactions were pending.
    busy: u64,
}

/// Sends `txs` (index, bytes) to `addr` paced at their scheduled times; returns its answers,
/// which a reader thread consumes as they come.
fn submitter(
    addr: SocketAddr,
    txs: Vec<(usize, Vec<u8>)>,
    start: Instant,
    rate: u64,
    submitted_ms: &[AtomicU64],
) -> anyhow::Result<Answers> {
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("{addr}"))?;
    stream.set_nodelay(true)?;
    let reader_stream = stream.try_clone()?;
    let expected = txs.len();
    let reader = std::thread::spawn(move || {
        let mut answers = Answers::default();
        let mut lines = BufReader::new(reader_stream);
        let mut line = String::new();
        for _ in 0..expected {
            line.clear();
            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if line.starts_with("accepted ") {
                answers.accepted += 1;
            } else {
                answers.rejected += 1;
                answers.busy += u64::from(line.starts_with("rejected busy"));
            }
        }
        answers
    });
    let mut w = std::io::BufWriter::new(stream);
    for (j, bytes) in txs {
        let due = start + Duration::from_secs_f64(j as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            w.flush()?;
            std::thread::sleep(due - now);
        }
        if let Some(slot) = submitted_ms.get(j) {
            slot.store(now_ms() as u64, Ordering::Relaxed);
        }
        w.write_all(&(bytes.len() as u32).to_be_bytes())?;
        w.write_all(&bytes)?;
    }
    w.flush()?;
    reader.join().map_err(|_| anyhow::anyhow!("answer reader panicked"))
}

/// What validator 0 committed, as the benchmark saw it.
#[derive(Default)]
struct Seen {
    /// Each transaction's commit time (unix ms).
    committed: HashMap<TxId, i64>,
    /// Each ledger's commit time and transaction count, by height.
    ledgers: BTreeMap<u64, (i64, usize)>,
}

/// Polls `/committed` on `admin` until `stop`, recording each ledger's and each id's commit time.
fn watch(admin: SocketAddr, stop: &AtomicBool, seen: &Mutex<Seen>, from: u64) {
    let mut next = from;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(body) = admin_get(admin, &format!("/committed?from={next}")) {
            let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for line in body.lines() {
                let mut parts = line.split(' ');
                let (Some(Ok(h)), Some(Ok(ms)), Some(Ok(count))) = (
                    parts.next().map(str::parse::<u64>),
                    parts.next().map(str::parse::<i64>),
                    parts.next().map(str::parse::<usize>),
                ) else {
                    continue;
                };
                next = next.max(h + 1);
                seen.ledgers.insert(h, (ms, count));
                for id in parts.filter_map(|t| Hash::from_hex(t).ok()) {
                    seen.committed.insert(id, ms);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A validator's rounds started (over all heights) and ledger height, from its metrics.
fn rounds_and_height(admin: SocketAddr) -> Option<(u64, u64)> {
    let body = admin_get(admin, "/metrics").ok()?;
    Some((
        metric(&body, "caasiope_consensus_rounds_started_total")?,
        metric(&body, "caasiope_ledger_height")?,
    ))
}

/// The rate at which ledgers committed transactions while the load was offered: the
/// transactions of the ledgers after the first one holding any, up to the last committed by
/// `end_ms`, over the time between those two ledgers' commits. Unlike committed ÷ (submission
/// start → last commit), it does not count the time the first transactions take to reach a
/// ledger nor the drain after the load stops (both finality, not throughput, and a share of
/// the run that shrinks as it lengthens). `None` with fewer than two such ledgers.
fn rate_under_load(ledgers: &BTreeMap<u64, (i64, usize)>, end_ms: i64) -> Option<(f64, u64, u64, f64)> {
    let (&first, &(first_ms, _)) = ledgers.iter().find(|(_, (_, n))| *n > 0)?;
    let (&last, &(last_ms, _)) =
        ledgers.range(first + 1..).take_while(|(_, (ms, _))| *ms <= end_ms).last()?;
    let span_s = (last_ms - first_ms) as f64 / 1000.0;
    if span_s <= 0.0 {
        return None;
    }
    let txs: usize = ledgers.range(first + 1..=last).map(|(_, (_, n))| n).sum();
    Some((txs as f64 / span_s, first, last, span_s))
}

/// Runs the benchmark and prints its JSON report: with several runs, the run of median ratio,
/// every run's figures under `runs` (the machine's speed drifts by tens of percent from one
/// minute to the next, and its bound with it).
pub(crate) fn run(cfg: &LocalnetBench) -> anyhow::Result<Output> {
    let mut runs = Vec::with_capacity(cfg.runs);
    for _ in 0..cfg.runs.max(1) {
        runs.push(one_run(cfg)?);
    }
    let report = median_run(runs, |r| {
        serde_json::json!({
            "ratio": r["ratio"],
            "tx_per_s": r["tx_per_s"],
            "tx_per_s_overall": r["tx_per_s_overall"],
            "bound_tx_per_s": r["bound_tx_per_s"],
            "refused_busy": r["refused_busy"],
            "later_rounds_validator_0": r["later_rounds_validator_0"],
            "finality_ms": r["finality_ms"],
        })
    });
    Output::json(&report)
}

/// Fails if a port of `procs` is taken. One taken (say, by a localnet left running) would have
/// a run measure that network instead of its own: its validators cannot bind, and the other
/// one answers on the same ports.
fn ports_free(procs: &[Process]) -> anyhow::Result<()> {
    for p in procs {
        for addr in [p.submit, p.p2p, p.admin] {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                bail!("{addr} ({}) is not free: {e}; is another localnet running? (--base-port)", p.name);
            }
        }
    }
    Ok(())
}

/// One run: the transfers and the bound before (setup), a fresh localnet, the measured load,
/// the bound after; the localnet is stopped whatever happened.
fn one_run(cfg: &LocalnetBench) -> anyhow::Result<serde_json::Value> {
    let n = usize::try_from(cfg.rate * cfg.duration_s)?;
    anyhow::ensure!((1..=5_000_000).contains(&n), "rate × duration must be 1 to 5,000,000 transactions");
    anyhow::ensure!(cfg.accounts >= 2, "at least two accounts");
    anyhow::ensure!(
        cfg.net.generated_accounts == 0,
        "bench localnet takes --accounts, not --generated-accounts"
    );
    let setup = Instant::now();
    let mix = Mix { accounts: cfg.accounts as u64, hot_share: cfg.hot_share };
    let expiration = now_ms() + (cfg.duration_s as i64 + 300) * 1000;
    let txs: Vec<Vec<u8>> = (0..n as u64)
        .into_par_iter()
        .map(|j| generated_transfer(LOCALNET_CHAIN, &mix, j, expiration))
        .collect();
    let ids: Vec<TxId> = txs
        .par_iter()
        .map(|b| SignedTransaction::decode_with_id(b, LOCALNET_CHAIN).map(|(_, id)| id))
        .collect::<Result<_, _>>()?;
    let sample = &txs[..n.min(40_000)];
    let bound_before = verify_rate(sample)?;

    let dir = std::env::temp_dir().join(format!("caasiope-bench-localnet-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    init_with(&dir, cfg.validators, &cfg.net, vec![generated_accounts(mix.accounts)])?;
    let procs: Vec<_> = processes(&dir)?.into_iter().filter(|p| p.role == Role::Validator).collect();
    ports_free(&procs)?;
    let mut children = Vec::new();
    for p in &procs {
        children.push(spawn(&dir, p)?);
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let result = wait_ready(&procs, cfg.validators, &dir).and_then(|()| {
        let m = measure(cfg, &procs, &children, &txs, &ids)?;
        Ok(report(cfg, &procs, &m))
    });
    for c in &mut children {
        stop(c, Duration::from_secs(10));
    }
    let mut report = match result {
        Ok(r) => r,
        Err(e) => return Err(e.context(format!("logs kept in {}/logs", dir.display()))),
    };
    let bound_after = verify_rate(sample)?;
    let machine = (bound_before + bound_after) / 2.0;
    let bound = machine / cfg.validators as f64;
    let tx_per_s = report["tx_per_s"].as_f64().unwrap_or(0.0);
    report["benchmark"] = serde_json::json!("localnet");
    report["validators"] = serde_json::json!(cfg.validators);
    report["block_interval_ms"] = serde_json::json!(cfg.net.block_interval_ms);
    report["accounts"] = serde_json::json!(cfg.accounts);
    report["hot_share"] = serde_json::json!(cfg.hot_share);
    report["transport"] = serde_json::json!(cfg.net.transport);
    report["threads"] = serde_json::json!(rayon::current_num_threads());
    report["machine_sigverify_tx_per_s"] = serde_json::json!(machine);
    report["sigverify_before_tx_per_s"] = serde_json::json!(bound_before);
    report["sigverify_after_tx_per_s"] = serde_json::json!(bound_after);
    report["bound_tx_per_s"] = serde_json::json!(bound);
    report["ratio"] = serde_json::json!(tx_per_s / bound);
    report["setup_s"] = serde_json::json!(setup_s);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Waits (up to 60 s) for every validator of `procs` to commit a ledger with all its peers
/// connected.
fn wait_ready(procs: &[Process], validators: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let ready = Instant::now();
    loop {
        let ok = procs.iter().all(|p| {
            admin_get(p.admin, "/metrics").ok().is_some_and(|b| {
                metric(&b, "caasiope_ledger_height").unwrap_or(0) >= 1
                    && metric(&b, "caasiope_peers_connected").unwrap_or(0) + 1 >= validators as u64
            })
        });
        if ok {
            return Ok(());
        }
        if ready.elapsed() > Duration::from_secs(60) {
            bail!("the localnet did not start within 60 s; logs in {}/logs", dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one run measured on the localnet.
struct Measured {
    submitted: usize,
    /// The submit ports' answers, summed.
    answers: Answers,
    start_ms: i64,
    /// When the last transfer was sent (unix ms).
    end_ms: i64,
    /// Each validator's CPU seconds over the run.
    cpu_s: Vec<f64>,
    later_rounds: Option<u64>,
    bench_cpu_s: f64,
    /// Submit → commit on validator 0 of every transfer seen committed, ms, sorted.
    latencies: Vec<i64>,
    seen: Seen,
}

/// Offers `txs` to the running localnet and measures what it committed, and at what CPU.
fn measure(
    cfg: &LocalnetBench,
    procs: &[Process],
    children: &[std::process::Child],
    txs: &[Vec<u8>],
    ids: &[TxId],
) -> anyhow::Result<Measured> {
    let n = txs.len();
    let from = admin_get(procs[0].admin, "/metrics")
        .ok()
        .and_then(|b| metric(&b, "caasiope_ledger_height"))
        .unwrap_or(0)
        + 1;
    let rounds_before = rounds_and_height(procs[0].admin);
    let cpu_before: Vec<f64> = children.iter().map(|c| pid_cpu_s(c.id())).collect();
    let bench_cpu_before = process_cpu_s();
    let seen = Mutex::new(Seen { committed: HashMap::with_capacity(n), ..Seen::default() });
    let submitted_ms: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let start_ms = now_ms();
    let (answers, end_ms) = offer(cfg.rate, procs, txs, start, &submitted_ms, &seen, from)?;
    let cpu_s: Vec<f64> = children.iter().zip(&cpu_before).map(|(c, b)| pid_cpu_s(c.id()) - b).collect();
    // Rounds validator 0 started beyond one per height: heights that needed a second round.
    let later_rounds = rounds_before
        .zip(rounds_and_height(procs[0].admin))
        .map(|((r0, h0), (r1, h1))| r1.saturating_sub(r0).saturating_sub(h1.saturating_sub(h0)));
    let bench_cpu_s = process_cpu_s() - bench_cpu_before;
    let seen = seen.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut latencies: Vec<i64> = ids
        .iter()
        .enumerate()
        .filter_map(|(j, id)| {
            let c = seen.committed.get(id)?;
            let s = submitted_ms[j].load(Ordering::Relaxed) as i64;
            (s > 0).then_some(c - s)
        })
        .collect();
    latencies.sort_unstable();
    Ok(Measured {
        submitted: n,
        answers,
        start_ms,
        end_ms,
        cpu_s,
        later_rounds,
        bench_cpu_s,
        latencies,
        seen,
    })
}

/// Sends `txs` round-robin to the validators' submit ports, paced from `start`, while watching
/// validator 0's commits from height `from`; then drains (until every accepted transfer is
/// committed, or 30 s). Returns the answers and when the last transfer was sent.
fn offer(
    rate: u64,
    procs: &[Process],
    txs: &[Vec<u8>],
    start: Instant,
    submitted_ms: &[AtomicU64],
    seen: &Mutex<Seen>,
    from: u64,
) -> anyhow::Result<(Answers, i64)> {
    let stop_watch = AtomicBool::new(false);
    std::thread::scope(|s| -> anyhow::Result<(Answers, i64)> {
        let watcher = s.spawn(|| watch(procs[0].admin, &stop_watch, seen, from));
        let mut per: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); procs.len()];
        for (j, b) in txs.iter().enumerate() {
            per[j % procs.len()].push((j, b.clone()));
        }
        let handles: Vec<_> = per
            .into_iter()
            .zip(procs)
            .map(|(part, p)| {
                let addr = p.submit;
                s.spawn(move || submitter(addr, part, start, rate, submitted_ms))
            })
            .collect();
        let mut total = Answers::default();
        for h in handles {
            let a = h.join().map_err(|_| anyhow::anyhow!("submitter panicked"))??;
            total.accepted += a.accepted;
            total.rejected += a.rejected;
            total.busy += a.busy;
        }
        let end_ms = now_ms();
        let drain = Instant::now();
        while drain.elapsed() < Duration::from_secs(30) {
            let done = seen.lock().map(|m| m.committed.len() as u64).unwrap_or(0);
            if done >= total.accepted {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        stop_watch.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        Ok((total, end_ms))
    })
}

/// The run's figures as JSON (the bound is added by the caller, measured after the run).
fn report(cfg: &LocalnetBench, procs: &[Process], m: &Measured) -> serde_json::Value {
    let Measured { ref answers, start_ms, end_ms, ref latencies, ref cpu_s, .. } = *m;
    let (committed, ledgers) = (&m.seen.committed, &m.seen.ledgers);
    let last_commit = committed.values().copied().max().unwrap_or(end_ms);
    let window_s = ((last_commit.max(end_ms) - start_ms) as f64 / 1000.0).max(1e-3);
    let tx_per_s_overall = latencies.len() as f64 / window_s;
    let under_load = rate_under_load(ledgers, end_ms);
    let tx_per_s = under_load.map_or(tx_per_s_overall, |(rate, ..)| rate);
    serde_json::json!({
        "submitted": m.submitted,
        "accepted": answers.accepted,
        "rejected": answers.rejected,
        "committed": latencies.len(),
        "window_s": window_s,
        "submit_s": (end_ms - start_ms) as f64 / 1000.0,
        "offered_tx_per_s": cfg.rate,
        "tx_per_s": tx_per_s,
        "tx_per_s_overall": tx_per_s_overall,
        "under_load": under_load.map(|(_, from, to, span_s)| serde_json::json!({
            "from_height": from, "to_height": to, "span_s": span_s,
        })),
        "refused_busy": answers.busy,
        "later_rounds_validator_0": m.later_rounds,
        // Every ledger seen: height, commit time after the load started (ms), transactions.
        "ledgers": ledgers.iter().map(|(h, (ms, n))| [*h as i64, ms - start_ms, *n as i64]).collect::<Vec<_>>(),
        "finality_ms": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0),
        },
        "process_cpu_s": procs.iter().zip(cpu_s).map(|(p, c)| (p.name.clone(), serde_json::json!(c))).collect::<serde_json::Map<_, _>>(),
        "validators_cpu_s": cpu_s.iter().sum::<f64>(),
        "bench_cpu_s": m.bench_cpu_s,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_run_refuses_ports_another_process_holds() {
        let free = |port| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let spare = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = |spare: u16, admin: SocketAddr| Process {
            name: "validator-0".into(),
            role: Role::Validator,
            config: PathBuf::new(),
            submit: free(spare),
            p2p: free(spare),
            admin,
            api: None,
            pid: None,
        };
        // A port just released may be taken again by a test running beside this one before it
        // is checked: a few tries, each with another.
        assert!((0..20).any(|_| {
            let port = spare();
            ports_free(&[process(port, free(port))]).is_ok()
        }));
        let err = ports_free(&[process(spare(), taken.local_addr().unwrap())]).unwrap_err().to_string();
        assert!(err.contains("is not free") && err.contains("validator-0"), "{err}");
    }

    #[test]
    fn the_rate_under_load_counts_ledgers_between_the_first_full_one_and_the_end_of_the_load() {
        // Heights 1–2 empty (before the load), 3 the first with transactions, one ledger a
        // second; the load ends at 6,500 ms, so 7 and 8 (the drain) are left out.
        let ledgers: BTreeMap<u64, (i64, usize)> =
            [(1, (1_000, 0)), (2, (2_000, 0)), (3, (3_000, 900)), (4, (4_000, 500)), (5, (5_000, 700))]
                .into_iter()
                .chain([(6, (6_000, 600)), (7, (7_000, 5_000)), (8, (8_000, 10))])
                .collect();
        let (rate, from, to, span_s) = rate_under_load(&ledgers, 6_500).unwrap();
        assert_eq!((from, to), (3, 6));
        assert!((span_s - 3.0).abs() < 1e-9);
        // Ledger 3's 900 accumulated before its commit: not counted.
        assert!((rate - 600.0).abs() < 1e-9, "{rate}");
        // A ledger committed at the very end of the load still counts.
        assert_eq!(rate_under_load(&ledgers, 7_000).map(|r| (r.1, r.2)), Some((3, 7)));
        // Fewer than two ledgers with the load on: no rate.
        assert!(rate_under_load(&ledgers, 3_500).is_none());
        assert!(rate_under_load(&BTreeMap::new(), 10_000).is_none());
        let empty: BTreeMap<u64, (i64, usize)> = [(1, (1_000, 0)), (2, (2_000, 0))].into_iter().collect();
        assert!(rate_under_load(&empty, 10_000).is_none());
    }
}
