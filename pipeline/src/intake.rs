//! Consensus-mode ingest: decode → signature verification on a dedicated pool → admission
//! against the post-state (a single writer) → the validated-transaction pool.
//!
//! In consensus mode ledgers are decided by the validators together, not sealed here: the
//! admission stage keeps a post-state — the committed state with every admitted transaction
//! applied in admission order — so a transaction that conflicts with one already admitted
//! (double spend, insufficient balance, replay, expiry) is rejected at once with its rule, and
//! only admitted transactions reach the pool and are gossiped. After each committed ledger the
//! host calls [`Intake::rebase`]: the post-state is rebuilt on the new committed state and the
//! admitted transactions not in that ledger are applied again (those now invalid are dropped and
//! counted).
//!
//! ```text
//! submit(origin, bytes) ─▶ [ingest q] ─▶ decode + verify (pool, one task per batch)
//!                                   ─▶ [admit q, in order] ─▶ admit ─▶ on_admitted(origin, txs)
//! rebase(committed state) ─────────────────────────────────────▲
//! ```

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    thread::JoinHandle,
    time::Instant,
};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use engine::{
    Backend,
    state::State,
    tx::TxId,
    validate::{TxError, VerifiedTx},
};

use crate::{
    Metrics, MetricsSnapshot, PipelineError, Stage, SubmitError, decode_checked, elapsed_ns, now_ms,
    verify_decoded,
};

/// Where a batch came from (returned with its admitted transactions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of this process: its admitted transactions are gossiped on.
    Client,
    /// A peer (its index in the host's peer list): already gossiped.
    Peer(u32),
    /// Bodies a peer sent because this node asked for them (a proposal names them): verified
    /// only, not admitted against the post-state — a proposal may rightly hold the other half
    /// of a double spend this node refused — and handed over whatever the pool holds.
    Fetched(u32),
}

/// Transactions admitted to the post-state, in admission order (or, for
/// [`Origin::Fetched`], verified).
#[derive(Debug)]
pub struct Admitted {
    /// Where they came from.
    pub origin: Origin,
    /// The transactions.
    pub txs: Vec<VerifiedTx>,
    /// How many of the batch failed decoding, the stateless rules or signature verification:
    /// what no honest peer gossips or sends when asked (such failures depend on nothing but the
    /// bytes and the chain's parameters), so what a peer is held to account for.
    pub refused: usize,
}

/// Bounds of an intake. Every queue and batch is bounded; a node takes the values from its
/// limits module (`caasiope-limits`), so there is no default here.
#[derive(Clone, Copy, Debug)]
pub struct IntakeConfig {
    /// Signature backend.
    pub backend: Backend,
    /// Threads of the dedicated verification pool.
    pub verify_threads: usize,
    /// Most transactions per batch.
    pub batch_txs_max: usize,
    /// Most batches waiting in each queue.
    pub queue_batches_max: usize,
    /// Most transactions admitted and not yet committed (the pool's size).
    pub admitted_max: usize,
}

/// A verified batch and how many of it failed.
type Verified = Receiver<(Vec<VerifiedTx>, usize)>;

/// A running intake. Dropping it stops the stages (what is queued is dropped: in consensus mode
/// an unadmitted transaction is not yet anyone's responsibility).
#[derive(Debug)]
pub struct Intake {
    ingest: Option<Sender<(Origin, Vec<Vec<u8>>)>>,
    /// The newest committed state not yet taken by the admission stage, and its doorbell: the
    /// caller (the consensus host) never waits on the admission stage.
    /// Straight to admission, for transactions verified elsewhere.
    admit: Option<Sender<(Origin, Verified)>>,
    rebase: Arc<Mutex<Option<State>>>,
    rebase_bell: Option<Sender<()>>,
    batch_txs_max: usize,
    metrics: Arc<Metrics>,
    depths: Arc<[AtomicI64; 5]>,
    /// Transactions submitted and not yet verified.
    queued: Arc<AtomicI64>,
    threads: Vec<JoinHandle<()>>,
}

impl Intake {
    /// Starts on the committed `state`; admitted batches are handed to `on_admitted` on the
    /// admission thread (it may block: that pushes back on the stages before it).
    pub fn start(
        state: State,
        cfg: IntakeConfig,
        on_admitted: impl FnMut(Admitted) + Send + 'static,
    ) -> Result<Self, PipelineError> {
        Self::start_reporting(state, cfg, on_admitted, |_, _| {})
    }

    /// As [`Intake::start`], and tells `on_rejected` every transaction refused, with its id
    /// when the bytes decoded that far (called on the verification and admission threads).
    /// Transactions dropped because the pool is full are not judged and not reported.
    pub fn start_reporting(
        state: State,
        cfg: IntakeConfig,
        mut on_admitted: impl FnMut(Admitted) + Send + 'static,
        on_rejected: impl Fn(Option<TxId>, &TxError) + Send + Sync + 'static,
    ) -> Result<Self, PipelineError> {
        let on_rejected = Arc::new(on_rejected);
        let batch_txs_max = cfg.batch_txs_max.clamp(1, engine::limits::BLOCK_TXS_MAX);
        let queue = cfg.queue_batches_max.max(1);
        let metrics = Arc::new(Metrics::default());
        let depths: Arc<[AtomicI64; 5]> = Arc::new(Default::default());
        let queued = Arc::new(AtomicI64::new(0));
        let (ingest_tx, ingest_rx) = bounded::<(Origin, Vec<Vec<u8>>)>(queue);
        let (admit_tx, admit_rx) = bounded::<(Origin, Verified)>(queue);
        let admit_direct = admit_tx.clone();
        let (rebase_tx, rebase_rx) = bounded::<()>(1);
        let rebase = Arc::new(Mutex::new(None::<State>));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.verify_threads.max(1))
            .thread_name(|i| format!("intake-verify-{i}"))
            .build()
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        let params = state.params().clone();
        let spawn = |name: &str| std::thread::Builder::new().name(name.to_owned());
        let (m, d, on_rejected_verify) = (metrics.clone(), depths.clone(), on_rejected.clone());
        let queued_verify = queued.clone();
        let backend = cfg.backend;
        let verify = spawn("intake-verify")
            .spawn(move || {
                for (origin, batch) in ingest_rx {
                    d[Stage::Decode as usize].fetch_sub(1, Ordering::Relaxed);
                    let (done_tx, done_rx) = bounded(1);
                    let (params, m2, rejected) = (params.clone(), m.clone(), on_rejected_verify.clone());
                    let queued = queued_verify.clone();
                    // One task per batch, decoded and verified by one pool thread; the admit
                    // stage reads the results in submission order.
                    pool.spawn_fifo(move || {
                        let t = Instant::now();
                        let n = batch.len();
                        let mut out = Vec::with_capacity(n);
                        let mut refused = 0;
                        for bytes in batch {
                            let verified = match decode_checked(&bytes, &params) {
                                Ok((stx, id)) => verify_decoded(stx, id, &params.chain_id, backend)
                                    .map_err(|e| (Some(id), e)),
                                Err(e) => Err((None, e)),
                            };
                            match verified {
                                Ok(v) => out.push(v),
                                Err((id, e)) => {
                                    refused += 1;
                                    m2.reject(&e);
                                    if !matches!(origin, Origin::Fetched(_)) {
                                        rejected(id, &e);
                                    }
                                }
                            }
                        }
                        m2.record(Stage::Verify, n, elapsed_ns(t));
                        queued.fetch_sub(n as i64, Ordering::Relaxed);
                        let _ = done_tx.send((out, refused));
                    });
                    d[Stage::Apply as usize].fetch_add(1, Ordering::Relaxed);
                    if admit_tx.send((origin, done_rx)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        let (m, d) = (metrics.clone(), depths.clone());
        let admitted_max = cfg.admitted_max.max(1);
        let slot = rebase.clone();
        let m3 = metrics.clone();
        let admit = spawn("intake-admit")
            .spawn(move || {
                let report = |id: TxId, e: &TxError| {
                    m3.reject(e);
                    on_rejected(Some(id), e);
                };
                admit_loop(
                    state,
                    &admit_rx,
                    &rebase_rx,
                    &slot,
                    &mut on_admitted,
                    &report,
                    admitted_max,
                    &m,
                    &d,
                )
            })
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        Ok(Self {
            ingest: Some(ingest_tx),
            admit: Some(admit_direct),
            rebase,
            rebase_bell: Some(rebase_tx),
            batch_txs_max,
            metrics,
            depths,
            queued,
            threads: vec![verify, admit],
        })
    }

    /// Submits raw transactions (at most one batch) unless the ingest queue is full.
    pub fn try_submit(&self, origin: Origin, txs: Vec<Vec<u8>>) -> Result<(), SubmitError> {
        let ingest = self.ingest.as_ref().ok_or(SubmitError::Closed)?;
        if txs.len() > self.batch_txs_max {
            return Err(SubmitError::Full);
        }
        let n = txs.len() as i64;
        self.depths[Stage::Decode as usize].fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_add(n, Ordering::Relaxed);
        ingest.try_send((origin, txs)).map_err(|e| {
            self.depths[Stage::Decode as usize].fetch_sub(1, Ordering::Relaxed);
            self.queued.fetch_sub(n, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => SubmitError::Full,
                TrySendError::Disconnected(_) => SubmitError::Closed,
            }
        })
    }

    /// A cloneable handle that submits from other threads, waiting while the queue is full.
    pub fn submitter(&self) -> Option<IntakeSubmitter> {
        Some(IntakeSubmitter {
            ingest: self.ingest.as_ref()?.clone(),
            admit: self.admit.as_ref()?.clone(),
            depths: self.depths.clone(),
            queued: self.queued.clone(),
        })
    }

    /// Transactions submitted and not yet verified: how far verification is behind.
    pub fn queued_txs(&self) -> u64 {
        u64::try_from(self.queued.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Rebuilds the post-state on a newly committed state (without waiting: a newer state
    /// replaces one not yet taken).
    pub fn rebase(&self, committed: State) -> Result<(), SubmitError> {
        let bell = self.rebase_bell.as_ref().ok_or(SubmitError::Closed)?;
        *self.rebase.lock().map_err(|_| SubmitError::Closed)? = Some(committed);
        match bell.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => Ok(()),
            Err(TrySendError::Disconnected(())) => Err(SubmitError::Closed),
        }
    }

    /// Every counter now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let depths =
            Stage::ALL.map(|s| usize::try_from(self.depths[s as usize].load(Ordering::Relaxed)).unwrap_or(0));
        self.metrics.snapshot(depths)
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.ingest = None;
        self.admit = None;
        self.rebase_bell = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Submits to an [`Intake`] from another thread.
#[derive(Clone, Debug)]
pub struct IntakeSubmitter {
    ingest: Sender<(Origin, Vec<Vec<u8>>)>,
    admit: Sender<(Origin, Verified)>,
    depths: Arc<[AtomicI64; 5]>,
    queued: Arc<AtomicI64>,
}

impl IntakeSubmitter {
    /// Submits transactions whose signatures the caller already verified
    /// ([`engine::validate::verify`]), straight to admission, waiting while its queue is full.
    pub fn submit_verified(&self, origin: Origin, txs: Vec<VerifiedTx>) -> Result<(), SubmitError> {
        let (done_tx, done_rx) = bounded(1);
        // Cannot fail: the receiver is right here and the channel has room for one.
        let _ = done_tx.send((txs, 0));
        self.depths[Stage::Apply as usize].fetch_add(1, Ordering::Relaxed);
        self.admit.send((origin, done_rx)).map_err(|_| {
            self.depths[Stage::Apply as usize].fetch_sub(1, Ordering::Relaxed);
            SubmitError::Closed
        })
    }

    /// Submits one batch, waiting while the ingest queue is full (backpressure).
    pub fn submit(&self, origin: Origin, txs: Vec<Vec<u8>>) -> Result<(), SubmitError> {
        let n = txs.len() as i64;
        self.depths[Stage::Decode as usize].fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.ingest.send((origin, txs)).map_err(|_| {
            self.depths[Stage::Decode as usize].fetch_sub(1, Ordering::Relaxed);
            self.queued.fetch_sub(n, Ordering::Relaxed);
            SubmitError::Closed
        })
    }
}

/// Transactions the admission stage keeps room for between rebases in each of its two lists
/// (the entries themselves, not their heap parts): more than a busy node's block, so neither
/// list grows from empty at every ledger.
const CARRIED_ROOM_MIN: usize = 16_384;

/// What happened to the admission of one transaction.
fn admit_one(
    exec: &mut engine::state::BlockExecution<'_>,
    v: &VerifiedTx,
    admitted: usize,
    admitted_max: usize,
) -> Result<(), Option<TxError>> {
    if admitted >= admitted_max {
        return Err(None);
    }
    exec.apply_tx(v).map(|_| ()).map_err(Some)
}

/// The single writer: the post-state and the admitted transactions since the last rebase.
#[allow(clippy::too_many_arguments)]
fn admit_loop(
    mut post: State,
    rx: &Receiver<(Origin, Verified)>,
    rebase_rx: &Receiver<()>,
    slot: &Mutex<Option<State>>,
    on_admitted: &mut impl FnMut(Admitted),
    reject: &impl Fn(TxId, &TxError),
    admitted_max: usize,
    metrics: &Metrics,
    depths: &[AtomicI64; 5],
) {
    let mut admitted: Vec<VerifiedTx> = Vec::new();
    // The list of the previous post-state while it is applied again: the two lists trade places
    // at each rebase, so neither grows from empty again (a pool's worth of transactions, each
    // rebase).
    let mut carried: Vec<VerifiedTx> = Vec::new();
    loop {
        // The post-state is one open ledger on the committed state, never sealed: its journal
        // is rolled back when the next committed state arrives.
        let timestamp_ms = now_ms().max(post.head().timestamp_ms.saturating_add(1));
        let Ok(mut exec) = post.begin_block(timestamp_ms) else { return };
        std::mem::swap(&mut admitted, &mut carried);
        for v in carried.drain(..) {
            match admit_one(&mut exec, &v, admitted.len(), admitted_max) {
                Ok(()) => admitted.push(v),
                Err(Some(e)) => reject(v.id, &e),
                Err(None) => {}
            }
        }
        // Room kept for the next rebase: twice what is carried (at least CARRIED_ROOM_MIN), so a
        // burst that filled the pool does not hold its memory for ever.
        let keep = 2 * admitted.len().max(CARRIED_ROOM_MIN);
        if carried.capacity() > keep {
            carried.shrink_to(keep);
        }
        let next = loop {
            select! {
                recv(rebase_rx) -> bell => {
                    if bell.is_err() {
                        break None;
                    }
                    match slot.lock().ok().and_then(|mut s| s.take()) {
                        Some(state) => break Some(state),
                        None => continue,
                    }
                }
                recv(rx) -> item => {
                    let Ok((origin, pending)) = item else { break None };
                    depths[Stage::Apply as usize].fetch_sub(1, Ordering::Relaxed);
                    let Ok((batch, refused)) = pending.recv() else { continue };
                    if let Origin::Fetched(_) = origin {
                        on_admitted(Admitted { origin, txs: batch, refused });
                        continue;
                    }
                    let t = Instant::now();
                    let n = batch.len();
                    let mut out = Vec::with_capacity(n);
                    for v in batch {
                        match admit_one(&mut exec, &v, admitted.len(), admitted_max) {
                            Ok(()) => {
                                admitted.push(v.clone());
                                out.push(v);
                            }
                            Err(Some(e)) => reject(v.id, &e),
                            // The pool is full: the transaction is dropped, not judged.
                            Err(None) => {}
                        }
                    }
                    metrics.record(Stage::Apply, n, elapsed_ns(t));
                    // A batch with refusals is reported even if nothing was admitted: a peer whose
                    // gossip does not decode or verify is held to account by the caller.
                    if !out.is_empty() || refused > 0 {
                        on_admitted(Admitted { origin, txs: out, refused });
                    }
                }
            }
        };
        drop(exec);
        let Some(committed) = next else { return };
        // What the committed state included leaves the admitted list.
        post = committed;
        admitted.retain(|v: &VerifiedTx| !post.is_included(&v.id));
    }
}
