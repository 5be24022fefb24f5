//! Per-stage metrics: batches, transactions, busy time, and rejections by rule.
//!
//! Counters are relaxed atomics written by one stage thread each and read by anyone; a snapshot
//! is consistent per counter, which is all a metrics scrape needs.

use std::sync::atomic::{AtomicU64, Ordering};

use engine::validate::TxError;

/// The stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Decode, id hash and stateless checks.
    Decode = 0,
    /// Signature verification on the dedicated pool.
    Verify,
    /// Stateful validation and apply (the single writer).
    Apply,
    /// Sealing a ledger: leaf hashes, trie update, header.
    Seal,
    /// Hand-off to the commit sink (storage).
    Commit,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Self; 5] = [Self::Decode, Self::Verify, Self::Apply, Self::Seal, Self::Commit];

    /// Metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Verify => "verify",
            Self::Apply => "apply",
            Self::Seal => "seal",
            Self::Commit => "commit",
        }
    }
}

#[derive(Debug, Default)]
struct StageCounters {
    batches: AtomicU64,
    txs: AtomicU64,
    busy_ns: AtomicU64,
}

/// Shared counters of one pipeline.
#[derive(Debug)]
pub struct Metrics {
    stages: [StageCounters; 5],
    rejected: [AtomicU64; TxError::KINDS.len()],
    ledgers: AtomicU64,
    committed_txs: AtomicU64,
    head_height: AtomicU64,
    thread_cpu_ns: [AtomicU64; THREADS.len()],
}

/// The pipeline's threads, as [`MetricsSnapshot::thread_cpu_s`] names them: `apply` seals too
/// (the trie update included: it runs on the apply thread),
/// `verify` is the sum of the verification tasks on the pool plus its feeding thread.
pub const THREADS: [&str; 4] = ["decode", "verify", "apply", "commit"];

/// CPU time the calling thread has used so far, ns (0 if the clock is unavailable).
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            stages: Default::default(),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            ledgers: AtomicU64::new(0),
            committed_txs: AtomicU64::new(0),
            head_height: AtomicU64::new(0),
            thread_cpu_ns: Default::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn record(&self, stage: Stage, txs: usize, busy_ns: u64) {
        let c = &self.stages[stage as usize];
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.txs.fetch_add(txs as u64, Ordering::Relaxed);
        c.busy_ns.fetch_add(busy_ns, Ordering::Relaxed);
    }

    /// Adds CPU time used by the pipeline thread `thread` (an index into [`THREADS`]).
    pub(crate) fn thread_cpu(&self, thread: usize, ns: u64) {
        if let Some(c) = self.thread_cpu_ns.get(thread) {
            c.fetch_add(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn reject(&self, error: &TxError) {
        if let Some(i) = TxError::KINDS.iter().position(|k| *k == error.kind()) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn committed(&self, height: u64, txs: usize) {
        self.ledgers.fetch_add(1, Ordering::Relaxed);
        self.committed_txs.fetch_add(txs as u64, Ordering::Relaxed);
        self.head_height.store(height, Ordering::Relaxed);
    }

    /// A copy of every counter, with queue depths supplied by the pipeline.
    pub fn snapshot(&self, queue_depths: [usize; 5]) -> MetricsSnapshot {
        let stages = Stage::ALL.map(|s| {
            let c = &self.stages[s as usize];
            let (batches, txs, busy_ns) = (
                c.batches.load(Ordering::Relaxed),
                c.txs.load(Ordering::Relaxed),
                c.busy_ns.load(Ordering::Relaxed),
            );
            StageSnapshot {
                stage: s.name(),
                queue_depth_batches: queue_depths[s as usize],
                batches,
                txs,
                busy_ns,
                mean_batch_size: if batches == 0 { 0.0 } else { txs as f64 / batches as f64 },
                ns_per_tx: if txs == 0 { 0.0 } else { busy_ns as f64 / txs as f64 },
            }
        });
        let rejected = TxError::KINDS
            .iter()
            .zip(&self.rejected)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        MetricsSnapshot {
            stages,
            rejected,
            ledgers: self.ledgers.load(Ordering::Relaxed),
            committed_txs: self.committed_txs.load(Ordering::Relaxed),
            head_height: self.head_height.load(Ordering::Relaxed),
            thread_cpu_s: THREADS
                .iter()
                .zip(&self.thread_cpu_ns)
                .map(|(name, ns)| (*name, ns.load(Ordering::Relaxed) as f64 / 1e9))
                .collect(),
        }
    }
}

/// One stage's counters.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSnapshot {
    /// Stage name.
    pub stage: &'static str,
    /// Batches waiting in the stage's input queue.
    pub queue_depth_batches: usize,
    /// Batches processed.
    pub batches: u64,
    /// Transactions processed (accepted or rejected).
    pub txs: u64,
    /// Time spent working, ns.
    pub busy_ns: u64,
    /// Mean transactions per batch.
    pub mean_batch_size: f64,
    /// Busy ns per transaction.
    pub ns_per_tx: f64,
}

/// Every counter of a pipeline at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// Per stage, in order.
    pub stages: [StageSnapshot; 5],
    /// Rejections by rule (only rules that rejected something).
    pub rejected: Vec<(&'static str, u64)>,
    /// Ledgers committed.
    pub ledgers: u64,
    /// Transactions committed.
    pub committed_txs: u64,
    /// Height of the last committed ledger.
    pub head_height: u64,
    /// CPU seconds used by each pipeline thread ([`THREADS`]), counted when the thread ends
    /// (verification: after each batch): what each stage costs the machine, as opposed to its
    /// busy wall time.
    pub thread_cpu_s: Vec<(&'static str, f64)>,
}

impl MetricsSnapshot {
    /// Total rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}
