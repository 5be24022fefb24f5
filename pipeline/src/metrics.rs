//! Per-stage metrics of the intake: batches, transactions, busy time, queue depths, and
//! rejections by rule.
//!
//! Counters are relaxed atomics written by one stage thread each and read by anyone; a snapshot
//! is consistent per counter, which is all a metrics scrape needs.

use std::sync::atomic::{AtomicU64, Ordering};

use engine::validate::TxError;
use exposition::{Fast, Histogram};

/// The intake's stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Waiting to be decoded (its queue depth: batches submitted and not yet taken).
    Decode = 0,
    /// Decode, id hash, stateless checks and signature verification, on the dedicated pool.
    Verify,
    /// Admission against the post-state into the mempool (the single writer).
    Admit,
}

/// How many stages there are.
pub(crate) const STAGES: usize = 3;

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Self; STAGES] = [Self::Decode, Self::Verify, Self::Admit];

    /// Metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Verify => "verify",
            Self::Admit => "admit",
        }
    }
}

#[derive(Debug, Default)]
struct StageCounters {
    batches: AtomicU64,
    txs: AtomicU64,
    busy_ns: AtomicU64,
}

/// Shared counters of one intake.
#[derive(Debug)]
pub struct Metrics {
    stages: [StageCounters; STAGES],
    rejected: [AtomicU64; TxError::KINDS.len()],
    rebased_in_place: AtomicU64,
    rebased_again: AtomicU64,
    /// Time to verify one batch (decode, hash, stateless checks, signatures).
    verify_batch: Histogram<Fast>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            stages: Default::default(),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            rebased_in_place: AtomicU64::new(0),
            rebased_again: AtomicU64::new(0),
            verify_batch: Histogram::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn record(&self, stage: Stage, txs: usize, busy_ns: u64) {
        let c = &self.stages[stage as usize];
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.txs.fetch_add(txs as u64, Ordering::Relaxed);
        c.busy_ns.fetch_add(busy_ns, Ordering::Relaxed);
        if stage == Stage::Verify {
            self.verify_batch.observe(std::time::Duration::from_nanos(busy_ns));
        }
    }

    /// The histogram of batch verification times.
    pub fn verify_batches(&self) -> &Histogram<Fast> {
        &self.verify_batch
    }

    /// Counts committed ledgers the post-state moved onto: `in_place` without applying the
    /// pool again, `again` by rolling back and applying every admitted transaction again.
    pub(crate) fn rebased(&self, in_place: usize, again: usize) {
        self.rebased_in_place.fetch_add(in_place as u64, Ordering::Relaxed);
        self.rebased_again.fetch_add(again as u64, Ordering::Relaxed);
    }

    pub(crate) fn reject(&self, error: &TxError) {
        if let Some(i) = TxError::KINDS.iter().position(|k| *k == error.kind()) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A copy of every counter, with queue depths supplied by the intake.
    pub fn snapshot(&self, queue_depths: [usize; STAGES]) -> MetricsSnapshot {
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
            rebased_in_place: self.rebased_in_place.load(Ordering::Relaxed),
            rebased_again: self.rebased_again.load(Ordering::Relaxed),
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

/// Every counter of an intake at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// Per stage, in order.
    pub stages: [StageSnapshot; STAGES],
    /// Rejections by rule (only rules that rejected something).
    pub rejected: Vec<(&'static str, u64)>,
    /// Committed ledgers the post-state moved onto in place: the ledger held the next
    /// admitted transactions in admission order, so the rest stayed applied.
    pub rebased_in_place: u64,
    /// Committed ledgers the post-state moved onto by rolling back and applying every admitted
    /// transaction again (another order or other transactions: a peer's proposal).
    pub rebased_again: u64,
}

impl MetricsSnapshot {
    /// Total rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}
