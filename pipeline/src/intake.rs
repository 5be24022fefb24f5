//! The way into the [`Mempool`]: decode → signature verification on a dedicated pool →
//! admission against the post-state (a single writer) → the pool.
//!
//! Ledgers are decided by consensus (a single validator is consensus with a set of one), not
//! sealed here: the admission stage keeps a post-state — the committed state with every
//! admitted transaction applied in admission order — so a transaction that conflicts with one
//! already admitted (double spend, insufficient balance, replay, expiry) is refused at once
//! with its rule, and only admitted transactions reach the pool and are gossiped. After each
//! committed ledger the host calls [`Intake::rebase`] with what the ledger changed (its
//! [`StateDiff`]). When the pool's admitted transactions are exactly the rest (those the ledger
//! did not commit), the new time changes none of their verdicts (no payment channel spent,
//! none of the rest expiring), and either the ledger holds the next admitted transactions in
//! admission order (a validator alone; a leader whose proposal was decided) or the rest
//! change balances only and stay funded when their changes are replayed on the ledger's
//! values (the other validators, whose admission order is not the proposer's and who may not
//! have admitted all of the ledger yet), the open ledger moves onto it in place
//! ([`BlockExecution::rebase`]: the rest stays applied, at the cost of the ledger's accounts
//! and the journal). Otherwise the open ledger is rolled back, the diff applied — the admission
//! stage's copy of the committed state follows the host's at the cost of what each block
//! touched, never of a copy of the state — and the pool's admitted transactions are applied
//! again ([`Mempool::readmit`]; those now invalid leave the pool and are reported). The
//! metrics count both ways.
//!
//! Each transaction is decoded once: a caller that decoded it already (the submit port, for
//! its answer; the host, to see whether a check waits for a fetched body) hands over the
//! decoded form, and the stateless rules and signatures are checked here.
//!
//! ```text
//! submit(origin, bytes | decoded) ─▶ [ingest q] ─▶ decode + verify (pool, one task per batch)
//!                         ─▶ [admit q, in order] ─▶ admit (Mempool) ─▶ on_admitted(origin, txs)
//! rebase(committed ledger's diff) ─────────────────────▲
//! ```

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    thread::JoinHandle,
    time::Instant,
};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use engine::{
    Backend,
    genesis::ChainParams,
    state::{BlockExecution, ReplayWindow, State, StateDiff},
    tx::{SignedTransaction, TxId},
    validate::{TxError, VerifiedTx, check_stateless},
};

use crate::{
    Decoded, Metrics, MetricsSnapshot, PipelineError, Stage, SubmitError, decode_checked, elapsed_ns,
    mempool::{Mempool, Verdict},
    metrics::STAGES,
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
    /// of a double spend this node refused — and handed over for the host to pool.
    Fetched(u32),
}

/// What a batch became.
#[derive(Debug)]
pub struct Admitted {
    /// Where it came from.
    pub origin: Origin,
    /// Those admitted to the mempool, in admission order (for [`Origin::Fetched`]: those
    /// verified, not pooled).
    pub txs: Vec<Arc<VerifiedTx>>,
    /// How many of the batch failed decoding, the stateless rules or signature verification:
    /// what no honest peer gossips or sends when asked (such failures depend on nothing but the
    /// bytes and the chain's parameters), so what a peer is held to account for.
    pub refused: usize,
}

/// Told the verdict on every transaction of a decoded batch (in no particular order), once
/// admission has judged it; dropped unanswered if the process stops first.
pub type Reply = Box<dyn FnOnce(Vec<(TxId, Verdict)>) + Send>;

/// Bounds of an intake. Every queue and batch is bounded; a node takes the values from its
/// limits module (`caasiope-limits`), so there is no default here. The pool's own bounds are
/// the [`Mempool`]'s.
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
    /// The clock admission judges expiry by, ms since the Unix epoch: a node's is
    /// [`engine::clock::now_ms`]; a benchmark on a simulated chain time passes its own.
    pub clock: fn() -> i64,
}

/// Transactions as they are submitted.
enum Txs {
    /// Untrusted bytes.
    Raw(Vec<Vec<u8>>),
    /// Decoded by the caller (stateless rules and signatures not yet checked).
    Decoded(Vec<Decoded>),
}

impl Txs {
    fn len(&self) -> usize {
        match self {
            Self::Raw(t) => t.len(),
            Self::Decoded(t) => t.len(),
        }
    }
}

struct Batch {
    origin: Origin,
    txs: Txs,
    reply: Option<Reply>,
}

/// A verified batch: its valid transactions, how many failed, the verdicts on those, and who
/// waits for the verdicts.
struct Checked {
    txs: Vec<VerifiedTx>,
    refused: usize,
    verdicts: Vec<(TxId, Verdict)>,
    reply: Option<Reply>,
}

/// A batch on its way to admission: it arrives through this one-shot channel once a pool
/// thread has verified it, so batches are admitted in submission order.
type Verified = Receiver<Checked>;

/// How the admission stage's copy of the committed state moves on.
#[derive(Debug)]
enum Rebase {
    /// By what a committed ledger changed (the common case: costs what the block touched),
    /// with the committed state's replay window, which the post-state shares rather than
    /// holding the same ids a second time.
    Diff(Arc<StateDiff>, ReplayWindow),
    /// To a copy of the committed state (after a diff failed to apply).
    State(Box<State>),
}

/// What refusals are reported to (with the id when the bytes decoded that far).
type OnRejected = Arc<dyn Fn(Option<TxId>, &TxError) + Send + Sync>;

/// A running intake. Dropping it stops the stages (what is queued is dropped: an unadmitted
/// transaction is not yet anyone's responsibility).
#[derive(Debug)]
pub struct Intake {
    /// The intake's own handle (the ingest queue's sender): taken at drop so the stages end.
    own: Option<IntakeSubmitter>,
    /// The committed ledgers' diffs not yet taken by the admission stage, in order, and their
    /// doorbell: the caller (the consensus host) never waits on the admission stage.
    rebase: Arc<Mutex<Vec<Rebase>>>,
    /// Set by the admission stage when a diff did not apply to its copy (a bug): the next
    /// rebase hands over a copy of the committed state instead.
    stale: Arc<AtomicBool>,
    rebase_bell: Option<Sender<()>>,
    mempool: Arc<Mempool>,
    metrics: Arc<Metrics>,
    depths: Arc<[AtomicI64; STAGES]>,
    threads: Vec<JoinHandle<()>>,
}

impl Intake {
    /// Starts on the committed `state`, admitting into `mempool`; each batch's outcome is
    /// handed to `on_admitted` on the admission thread (it may block: that pushes back on the
    /// stages before it).
    pub fn start(
        state: State,
        cfg: IntakeConfig,
        mempool: Arc<Mempool>,
        on_admitted: impl FnMut(Admitted) + Send + 'static,
    ) -> Result<Self, PipelineError> {
        Self::start_reporting(state, cfg, mempool, on_admitted, |_, _| {})
    }

    /// As [`Intake::start`], and tells `on_rejected` every transaction refused, with its id
    /// when the bytes decoded that far (called on the verification and admission threads).
    /// Transactions dropped because the pool is full are not judged and not reported.
    pub fn start_reporting(
        state: State,
        cfg: IntakeConfig,
        mempool: Arc<Mempool>,
        on_admitted: impl FnMut(Admitted) + Send + 'static,
        on_rejected: impl Fn(Option<TxId>, &TxError) + Send + Sync + 'static,
    ) -> Result<Self, PipelineError> {
        let on_rejected: OnRejected = Arc::new(on_rejected);
        let batch_txs_max = cfg.batch_txs_max.clamp(1, engine::limits::BLOCK_TXS_MAX);
        let queue = cfg.queue_batches_max.max(1);
        let metrics = Arc::new(Metrics::default());
        let depths: Arc<[AtomicI64; STAGES]> = Arc::new(Default::default());
        let (ingest_tx, ingest_rx) = bounded::<Batch>(queue);
        let (admit_tx, admit_rx) = bounded::<(Origin, Verified)>(queue);
        let (rebase_tx, rebase_rx) = bounded::<()>(1);
        let rebase = Arc::new(Mutex::new(Vec::<Rebase>::new()));
        let stale = Arc::new(AtomicBool::new(false));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.verify_threads.max(1))
            .thread_name(|i| format!("intake-verify-{i}"))
            .build()
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        let spawn = |name: &str| std::thread::Builder::new().name(name.to_owned());
        let stages = Stages {
            params: Arc::new(state.params().clone()),
            backend: cfg.backend,
            clock: cfg.clock,
            mempool: mempool.clone(),
            metrics: metrics.clone(),
            depths: depths.clone(),
            on_rejected,
            stale: stale.clone(),
        };
        let verify_stages = stages.clone();
        let verify = spawn("intake-verify")
            .spawn(move || verify_stages.verify_loop(&ingest_rx, &admit_tx, &pool))
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        let slot = rebase.clone();
        let mut on_admitted = on_admitted;
        let admit = spawn("intake-admit")
            .spawn(move || stages.admit_loop(state, &admit_rx, &rebase_rx, &slot, &mut on_admitted))
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        let own = IntakeSubmitter {
            ingest: ingest_tx,
            batch_txs_max,
            mempool: mempool.clone(),
            depths: depths.clone(),
        };
        Ok(Self {
            own: Some(own),
            rebase,
            stale,
            rebase_bell: Some(rebase_tx),
            mempool,
            metrics,
            depths,
            threads: vec![verify, admit],
        })
    }

    /// Submits raw transactions (at most one batch) unless the ingest queue is full.
    pub fn try_submit(&self, origin: Origin, txs: Vec<Vec<u8>>) -> Result<(), SubmitError> {
        let own = self.own.as_ref().ok_or(SubmitError::Closed)?;
        own.enqueue(Batch { origin, txs: Txs::Raw(txs), reply: None }, false)
    }

    /// Submits transactions the caller decoded (at most one batch) unless the ingest queue is
    /// full.
    pub fn try_submit_decoded(
        &self,
        origin: Origin,
        txs: Vec<(SignedTransaction, TxId)>,
    ) -> Result<(), SubmitError> {
        let own = self.own.as_ref().ok_or(SubmitError::Closed)?;
        own.enqueue(Batch { origin, txs: Txs::Decoded(txs), reply: None }, false)
    }

    /// A cloneable handle that submits from other threads.
    pub fn submitter(&self) -> Option<IntakeSubmitter> {
        self.own.clone()
    }

    /// The mempool it admits into.
    pub const fn mempool(&self) -> &Arc<Mempool> {
        &self.mempool
    }

    /// Moves the post-state onto the next committed ledger, `diff` being what it changed,
    /// `committed` the state after it (copied only if the admission stage's copy went astray)
    /// and `window` its replay window ([`State::replay_window`], taken once by the caller for
    /// every copy that follows), without waiting. Every committed ledger is handed over, in
    /// order.
    pub fn rebase(
        &self,
        diff: Arc<StateDiff>,
        committed: &State,
        window: ReplayWindow,
    ) -> Result<(), SubmitError> {
        let bell = self.rebase_bell.as_ref().ok_or(SubmitError::Closed)?;
        let mut pending = self.rebase.lock().map_err(|_| SubmitError::Closed)?;
        if self.stale.swap(false, Ordering::Relaxed) {
            pending.clear();
            pending.push(Rebase::State(Box::new(committed.clone())));
        } else {
            pending.push(Rebase::Diff(diff, window));
        }
        drop(pending);
        match bell.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => Ok(()),
            Err(TrySendError::Disconnected(())) => Err(SubmitError::Closed),
        }
    }

    /// The counters themselves (histograms included), shared: what a metrics endpoint reads.
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
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
        self.own = None;
        self.rebase_bell = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Submits to an [`Intake`] from another thread.
#[derive(Clone, Debug)]
pub struct IntakeSubmitter {
    ingest: Sender<Batch>,
    batch_txs_max: usize,
    mempool: Arc<Mempool>,
    depths: Arc<[AtomicI64; STAGES]>,
}

impl IntakeSubmitter {
    /// Submits raw transactions (one batch), waiting while the ingest queue is full
    /// (backpressure).
    pub fn submit(&self, origin: Origin, txs: Vec<Vec<u8>>) -> Result<(), SubmitError> {
        self.enqueue(Batch { origin, txs: Txs::Raw(txs), reply: None }, true)
    }

    /// Submits transactions the caller decoded (one batch), waiting while the ingest queue is
    /// full.
    pub fn submit_decoded(
        &self,
        origin: Origin,
        txs: Vec<(SignedTransaction, TxId)>,
    ) -> Result<(), SubmitError> {
        self.enqueue(Batch { origin, txs: Txs::Decoded(txs), reply: None }, true)
    }

    /// Submits decoded transactions (one batch), waiting while the ingest queue is full; `reply`
    /// is told the verdict on each once admission has judged it — and so, batches being admitted
    /// in order, once every batch submitted before it was admitted too.
    pub fn submit_decoded_with(
        &self,
        origin: Origin,
        txs: Vec<(SignedTransaction, TxId)>,
        reply: Reply,
    ) -> Result<(), SubmitError> {
        self.enqueue(Batch { origin, txs: Txs::Decoded(txs), reply: Some(reply) }, true)
    }

    /// Submits decoded transactions (one batch) unless the ingest queue is full; `reply` is
    /// told the verdict on each once admission has judged it.
    pub fn try_submit_decoded_with(
        &self,
        origin: Origin,
        txs: Vec<(SignedTransaction, TxId)>,
        reply: Reply,
    ) -> Result<(), SubmitError> {
        self.enqueue(Batch { origin, txs: Txs::Decoded(txs), reply: Some(reply) }, false)
    }

    /// The mempool the intake admits into (its size and busy check).
    pub const fn mempool(&self) -> &Arc<Mempool> {
        &self.mempool
    }

    fn enqueue(&self, batch: Batch, wait: bool) -> Result<(), SubmitError> {
        let n = batch.txs.len();
        if n > self.batch_txs_max {
            // More than one batch cannot be taken atomically; the caller splits.
            return Err(SubmitError::Full);
        }
        self.depths[Stage::Decode as usize].fetch_add(1, Ordering::Relaxed);
        self.mempool.queue(n as i64);
        let sent = if wait {
            self.ingest.send(batch).map_err(|_| SubmitError::Closed)
        } else {
            self.ingest.try_send(batch).map_err(|e| match e {
                TrySendError::Full(_) => SubmitError::Full,
                TrySendError::Disconnected(_) => SubmitError::Closed,
            })
        };
        if sent.is_err() {
            self.depths[Stage::Decode as usize].fetch_sub(1, Ordering::Relaxed);
            self.mempool.queue(-(n as i64));
        }
        sent
    }
}

/// What the stage threads share.
#[derive(Clone)]
struct Stages {
    params: Arc<ChainParams>,
    backend: Backend,
    clock: fn() -> i64,
    stale: Arc<AtomicBool>,
    mempool: Arc<Mempool>,
    metrics: Arc<Metrics>,
    depths: Arc<[AtomicI64; STAGES]>,
    on_rejected: OnRejected,
}

impl Stages {
    /// Hands each batch to the verification pool (one task per batch, decoded and verified by
    /// one pool thread) and its result, in submission order, to admission.
    fn verify_loop(self, rx: &Receiver<Batch>, admit: &Sender<(Origin, Verified)>, pool: &rayon::ThreadPool) {
        for batch in rx {
            self.depths[Stage::Decode as usize].fetch_sub(1, Ordering::Relaxed);
            let (done_tx, done_rx) = bounded(1);
            let origin = batch.origin;
            let stages = self.clone();
            pool.spawn_fifo(move || {
                let checked = stages.verify(batch);
                let _ = done_tx.send(checked);
            });
            self.depths[Stage::Admit as usize].fetch_add(1, Ordering::Relaxed);
            if admit.send((origin, done_rx)).is_err() {
                return;
            }
        }
    }

    /// Decodes (if it came raw) and verifies one batch.
    fn verify(&self, batch: Batch) -> Checked {
        let t = Instant::now();
        let Batch { origin, txs, reply } = batch;
        let n = txs.len();
        let mut checked = Checked { txs: Vec::with_capacity(n), refused: 0, verdicts: Vec::new(), reply };
        let mut one = |result: Result<Decoded, (Option<TxId>, TxError)>| {
            let verified = result.and_then(|(stx, id)| {
                verify_decoded(stx, id, &self.params.chain_id, self.backend).map_err(|e| (Some(id), e))
            });
            match verified {
                Ok(v) => checked.txs.push(v),
                Err((id, e)) => {
                    checked.refused += 1;
                    self.metrics.reject(&e);
                    if !matches!(origin, Origin::Fetched(_)) {
                        (self.on_rejected)(id, &e);
                    }
                    if let (Some(id), Some(_)) = (id, &checked.reply) {
                        checked.verdicts.push((id, Verdict::Refused(e)));
                    }
                }
            }
        };
        match txs {
            Txs::Raw(raw) => {
                for bytes in raw {
                    one(decode_checked(&bytes, &self.params).map_err(|e| (None, e)));
                }
            }
            Txs::Decoded(decoded) => {
                for (stx, id) in decoded {
                    one(check_stateless(&stx.tx, &self.params)
                        .map(|()| (stx, id))
                        .map_err(|e| (Some(id), e)));
                }
            }
        }
        self.metrics.record(Stage::Verify, n, elapsed_ns(t));
        self.mempool.queue(-(n as i64));
        checked
    }

    /// The single writer of the post-state: admits each verified batch into the mempool, and
    /// rebases on each committed state the host hands over.
    fn admit_loop(
        self,
        mut post: State,
        rx: &Receiver<(Origin, Verified)>,
        rebase_rx: &Receiver<()>,
        slot: &Mutex<Vec<Rebase>>,
        on_admitted: &mut impl FnMut(Admitted),
    ) {
        // Admission never seals: its copy keeps no trie, so the host's is not shared and each
        // ledger updates it in place.
        post.detach_trie();
        loop {
            // The post-state is one open ledger on the committed state, never sealed: its
            // journal is rolled back when the next committed state arrives.
            let timestamp_ms = (self.clock)().max(post.head().timestamp_ms.saturating_add(1));
            let Ok(mut exec) = post.begin_block(timestamp_ms) else { return };
            for (id, e) in self.mempool.readmit(&mut exec) {
                self.refused(id, &e);
            }
            let next = loop {
                select! {
                    recv(rebase_rx) -> bell => {
                        if bell.is_err() {
                            break None;
                        }
                        let diffs = slot.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
                        let rest = self.move_on(&mut exec, diffs);
                        if !rest.is_empty() {
                            break Some(rest);
                        }
                    }
                    recv(rx) -> item => {
                        let Ok((origin, pending)) = item else { break None };
                        self.depths[Stage::Admit as usize].fetch_sub(1, Ordering::Relaxed);
                        let Ok(checked) = pending.recv() else { continue };
                        if let Some(a) = self.admit(&mut exec, origin, checked) {
                            on_admitted(a);
                        }
                    }
                }
            };
            drop(exec);
            let Some(rebases) = next else { return };
            self.metrics.rebased(0, rebases.len());
            for rebase in rebases {
                match rebase {
                    // The open ledger is rolled back: `post` is the committed state the diff
                    // was executed on (every diff arrives, in order); what it holds is copied
                    // into `post` (the host may still hold the diff).
                    Rebase::Diff(diff, window) => {
                        if post.apply_shared_diff(&diff).is_err() {
                            // Not the state the diff was made on (a bug): ask for a copy.
                            self.stale.store(true, Ordering::Relaxed);
                            break;
                        }
                        post.adopt_replay(window);
                    }
                    Rebase::State(state) => {
                        post = *state;
                        post.detach_trie();
                    }
                }
            }
        }
    }

    /// Moves the open ledger onto the committed ledgers of `rebases` without applying the
    /// pool again, while it can ([`BlockExecution::rebase`]): the pool's admitted transactions
    /// are exactly those the ledgers did not commit, and each ledger either holds the next
    /// admitted ones in admission order (a validator alone, a leader whose proposal was
    /// decided) or leaves the rest funded, changing balances only (the other validators).
    /// Returns the rebases left for the slow way (roll back, apply, readmit).
    fn move_on(&self, exec: &mut BlockExecution<'_>, mut rebases: Vec<Rebase>) -> Vec<Rebase> {
        let diffs: Option<Vec<(&StateDiff, &ReplayWindow)>> = rebases
            .iter()
            .map(|r| match r {
                Rebase::Diff(diff, window) => Some((&**diff, window)),
                Rebase::State(_) => None,
            })
            .collect();
        let Some(diffs) = diffs else { return rebases };
        // The pool's admitted transactions must be exactly the rest: nothing admitted left the
        // pool since (expired, or found invalid by a build), or it would stay in the
        // post-state. A committed transaction not admitted yet is refused as a replay when it
        // comes.
        let committed: HashSet<&TxId, foldhash::fast::RandomState> =
            diffs.iter().flat_map(|(d, _)| &d.applied().tx_ids).collect();
        let rest: Vec<TxId> = exec.tx_ids().iter().filter(|id| !committed.contains(id)).copied().collect();
        if !self.mempool.admitted_are(&rest) {
            return rebases;
        }
        let now_ms = (self.clock)();
        // Only the last ledger's window is worth taking (each replaces the one before).
        let last = diffs.len().saturating_sub(1);
        let moved = diffs
            .iter()
            .enumerate()
            .take_while(|(i, (diff, window))| {
                exec.rebase(diff, now_ms, (*i == last).then(|| (*window).clone()))
            })
            .count();
        self.metrics.rebased(moved, 0);
        rebases.drain(..moved);
        rebases
    }

    /// Admits one verified batch (bodies fetched for a proposal only pass through) and
    /// answers whoever waits for its verdicts; what to tell the host, if anything.
    fn admit(&self, exec: &mut BlockExecution<'_>, origin: Origin, c: Checked) -> Option<Admitted> {
        let Checked { txs, refused, mut verdicts, reply } = c;
        if let Origin::Fetched(_) = origin {
            return Some(Admitted { origin, txs: txs.into_iter().map(Arc::new).collect(), refused });
        }
        let t = Instant::now();
        let n = txs.len();
        let (admitted, judged) = self.mempool.admit(exec, txs);
        for (id, verdict) in &judged {
            if let Verdict::Refused(e) = verdict {
                self.refused(*id, e);
            }
        }
        self.metrics.record(Stage::Admit, n, elapsed_ns(t));
        if let Some(reply) = reply {
            verdicts.extend(judged);
            reply(verdicts);
        }
        // A batch with refusals is reported even if nothing was admitted: a peer whose gossip
        // does not decode or verify is held to account by the caller.
        (!admitted.is_empty() || refused > 0).then_some(Admitted { origin, txs: admitted, refused })
    }

    fn refused(&self, id: TxId, e: &TxError) {
        self.metrics.reject(e);
        (self.on_rejected)(Some(id), e);
    }
}
