//! The driver: what turns the core's effects into actions — log, persist the signing state,
//! send, schedule, check and build values, commit, sync — written once against small traits
//! ([`Clock`], [`Network`], [`Timers`], [`Storage`]) so that the real host (tokio, threads,
//! MDBX, files) and the simulator (a virtual clock, network and storage) run the same code.
//!
//! Rules it keeps, whichever environment runs it:
//! * **Nothing unverified reaches the log.** A peer's consensus message is screened first
//!   ([`Core::screen`]); only one that changes the core is logged, so duplicates, junk and
//!   messages outside the kept rounds cost no disk. A forged or altered one costs its relay
//!   ([`Network::penalize`]).
//! * **Log, then sign, then send.** A message this validator signed leaves only once the
//!   inputs that made it are durable ([`Storage::wal_sync`]) and the signing state covers it
//!   ([`Storage::save_signer`], [`SignState`]): this validator never sends two different
//!   messages for one (height, round, step), whatever became of its log or store.
//! * **A bounded log.** Past [`DriverConfig::wal_compact_bytes`] the log is rewritten as the
//!   height's `Start` and one `Resume` at the next round with the lock kept — the core is
//!   resumed the same way, so a replay still ends where the live core is.
//! * **A peer's data is checked against what is certified before it is used**, and a fault is
//!   the peer's, never the process's: a synced ledger altered by its sender is refused and the
//!   sender penalized; one that is certified yet does not re-execute here is counted.

use std::{collections::HashSet, sync::Arc};

use engine::{
    Hash, PublicKey,
    ledger::VoteKind,
    state::State,
    tx::{SignedTransaction, TxId},
    validate::VerifiedTx,
};

use crate::{
    chain::{Chain, ChainError, CheckOutcome, Committed, CommittedLedger, PoolError},
    core::{Core, Decision, Effect, Input, PeerId, Screen, Timeout, TimeoutKind},
    evidence::Equivocation,
    message::SignedVote,
    message::{Message, Value},
    signer::{SIGN_STATE_VOTES_MAX, SignState, Slot, message_digest},
    wal::WalRecord,
    wire::FETCH_IDS_MAX,
};

/// The wall clock (unix milliseconds): proposal timestamps and their drift are judged by it.
pub trait Clock {
    /// Now, unix ms.
    fn now_ms(&self) -> i64;
}

/// Peers. Sends never block and may be dropped (a slow peer); what matters is re-sent.
pub trait Network {
    /// A consensus message to every validator peer.
    fn broadcast(&mut self, message: &Message);
    /// Ask `peer` (any validator peer if `None`) for the committed ledger at `height`.
    fn request_ledger(&mut self, peer: Option<PeerId>, height: u64);
    /// Send `peer` the committed ledger at `height` (served from storage, bounded per peer).
    fn send_ledger(&mut self, peer: PeerId, height: u64);
    /// Ask `peer` (another validator peer, chosen by the host, if `None`) for the bodies of
    /// these transactions.
    fn fetch(&mut self, peer: Option<PeerId>, ids: &[TxId]);
    /// `peer` sent what no honest peer sends: disconnect it, for a while.
    fn penalize(&mut self, peer: PeerId, fault: Fault);
}

/// Timers: each fires once, as [`Driver::on_timer`].
pub trait Timers {
    /// Fire `timer` after `after_ms`.
    fn schedule(&mut self, timer: Timer, after_ms: u64);
}

/// Durable storage. Every method returns once its write is durable, unless it says otherwise.
pub trait Storage {
    /// Replaces the write-ahead log with `records` (a new height, or a compaction); returns the
    /// log's size in bytes.
    fn wal_reset(&mut self, records: &[WalRecord]) -> Result<u64, StorageError>;
    /// Starts the log of a new height with `records`, the log before holding nothing a restart
    /// needs (it is of a committed height, or of none this validator signed at). Unlike
    /// [`Storage::wal_reset`] neither atomic nor durable at once: the records are durable at
    /// the next [`Storage::wal_sync`], before anything this validator signs leaves; a crash
    /// before that leaves the old log, an empty one, or the new one with a torn tail, each
    /// replayed safely. Returns the log's size in bytes.
    fn wal_start(&mut self, records: &[WalRecord]) -> Result<u64, StorageError>;
    /// Appends one record (buffered: durable at the next [`Storage::wal_sync`]); returns the
    /// log's size in bytes.
    fn wal_append(&mut self, record: &WalRecord) -> Result<u64, StorageError>;
    /// Makes every appended input durable.
    fn wal_sync(&mut self) -> Result<(), StorageError>;
    /// Persists the signing state.
    fn save_signer(&mut self, state: &SignState) -> Result<(), StorageError>;
    /// Stores a committed ledger and the state it leads to (and tells the host's readers).
    fn commit(&mut self, committed: &Committed, state: &State) -> Result<(), StorageError>;
    /// Keeps an equivocation proof that checked under its height's set, whose offender has
    /// this key (bounded per validator by the store), and tells the nodes that serve evidence.
    fn evidence(&mut self, proof: &Equivocation, offender: &PublicKey) -> Result<(), StorageError>;
}

/// Everything a driver needs of its environment.
pub trait Env: Clock + Network + Timers + Storage {}
impl<T: Clock + Network + Timers + Storage> Env for T {}

/// A failed write: the host cannot go on safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// Why the driver stopped: a local failure, never a peer's doing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A value this validator decided (it had executed it) does not commit: a bug, or its own
    /// state is corrupt.
    #[error("cannot commit the decided ledger {height}: {error}")]
    Commit {
        /// Height.
        height: u64,
        /// Why.
        error: ChainError,
    },
    /// The core decided a ledger other than the one committed at its height from a peer: two
    /// certified ledgers at one height, which more than a third of the weight had to sign.
    #[error("decided {decided} at height {height} but committed {committed}")]
    Fork {
        /// Height.
        height: u64,
        /// The core's decision.
        decided: Hash,
        /// What was committed.
        committed: Hash,
    },
}

/// What a peer did that no honest peer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A consensus message that is forged or altered.
    BadMessage,
    /// A ledger whose certificate does not verify or whose transactions were altered.
    AlteredLedger,
    /// A transaction body it was asked for that fails verification.
    BadBody,
}

impl Fault {
    /// A label for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::AlteredLedger => "altered_ledger",
            Self::BadBody => "bad_body",
        }
    }
}

/// A timer of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A consensus timeout.
    Consensus(Timeout),
    /// Start this height (one block interval after the previous one started).
    StartNext(u64),
    /// Ask for the next ledger (followers, and a validator catching up).
    SyncPoll,
    /// Fetch the bodies a proposal of (height, value id) still lacks.
    Fetch(u64, Hash),
}

/// Bounds and periods of a driver.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    /// Heights start this far apart, start to start.
    pub block_interval_ms: u64,
    /// How long a check waits for missing bodies to arrive by gossip before fetching them.
    pub fetch_delay_ms: u64,
    /// Checks waiting for bodies at once.
    pub waiting_checks_max: usize,
    /// How often a follower (or a validator catching up) asks for the next ledger.
    pub sync_poll_ms: u64,
    /// The log is compacted past this size.
    pub wal_compact_bytes: u64,
}

impl DriverConfig {
    /// Defaults for a block interval.
    pub fn for_interval(block_interval_ms: u64) -> Self {
        Self {
            block_interval_ms,
            fetch_delay_ms: 150,
            waiting_checks_max: 16,
            sync_poll_ms: (block_interval_ms / 2).max(100),
            wal_compact_bytes: WAL_COMPACT_BYTES,
        }
    }
}

/// The log is compacted at this many times [`DriverConfig::wal_compact_bytes`] even before this
/// validator precommitted in its round (a bound on the log whatever the round does).
pub const WAL_HARD_FACTOR: u64 = 4;

/// Default size past which the write-ahead log is compacted: far above a height's honest
/// traffic (a proposal of 10,000 ids is 320 KB, a vote ~120 B), so only a height stuck for a
/// long time, or a Byzantine validator's flood of distinct values, reaches it.
pub const WAL_COMPACT_BYTES: u64 = 64 << 20;

/// Counters a host exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Ledgers decided here.
    pub certified_ledgers: u64,
    /// Ledgers taken from peers.
    pub synced_ledgers: u64,
    /// Ledgers from peers refused as their sender's fault.
    pub refused_ledgers: u64,
    /// Certified ledgers that did not re-execute here.
    pub divergent_ledgers: u64,
    /// Peer messages refused as forged or altered.
    pub bad_messages: u64,
    /// Peer messages that changed nothing (duplicates, outside the kept rounds, over a bound).
    pub ignored_messages: u64,
    /// Messages this validator signed but did not send: at or below its persisted signing
    /// state and not the message signed there.
    pub refused_signatures: u64,
    /// Write-ahead log compactions.
    pub wal_compactions: u64,
    /// Fetched bodies the pool already held when they arrived.
    pub fetched_known_txs: u64,
    /// Equivocation proofs kept.
    pub equivocations: u64,
}

struct Waiting {
    height: u64,
    id: Hash,
    value: Value,
    from: PeerId,
    missing: HashSet<TxId>,
    /// Fetches made: the first asks the peer that sent the proposal, later ones others.
    fetches: u32,
}

/// Longest wait between two fetches of a check's missing bodies.
const FETCH_RETRY_MAX_MS: u64 = 2_000;

/// The driver of one process: a validator's core (or none: a follower), its chain, and what
/// links them to the environment.
pub struct Driver {
    cfg: DriverConfig,
    core: Option<Core>,
    chain: Chain,
    /// The persisted signing state, as last saved.
    signer: Option<SignState>,
    /// Digests of this validator's messages of the height that already left (re-sends pass).
    sent: HashSet<Hash>,
    /// Messages signed before a restart that lost them from the log, sent with every
    /// re-broadcast of the height.
    resent: Vec<Message>,
    /// Digests of this validator's messages of the height the signing state held back.
    held: HashSet<Hash>,
    /// The log read at start, kept until the chain reaches the height it is of.
    boot_log: Vec<WalRecord>,
    /// The current height's `Start` (the head of a compacted log).
    start: Option<Input>,
    /// The log's size when it was last rewritten: it is compacted once it grew by
    /// [`DriverConfig::wal_compact_bytes`] beyond it.
    wal_base_bytes: u64,
    /// Transactions whose bodies the log holds (each is logged once per log, whatever number of
    /// values hold it: an equivocating leader's values share most of theirs).
    logged_bodies: HashSet<TxId>,
    waiting: Vec<Waiting>,
    /// Decided on bodies this process no longer has: waiting for them (fetched) or for the
    /// ledger from a peer.
    stuck: Option<Decision>,
    /// When the current height started, or was due to (a start its timer fired late for
    /// counts from when it was due: lateness does not add up from height to height).
    height_started_ms: i64,
    /// When the next height is due to start, once scheduled.
    start_due_ms: Option<i64>,
    /// Why this validator does not sign, if it does not.
    halted: Option<String>,
    stats: DriverStats,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("next_height", &self.chain.next_height())
            .field("validator", &self.core.is_some())
            .field("halted", &self.halted)
            .field("decided", &self.core.as_ref().map(Core::is_decided))
            .field("stuck", &self.stuck.as_ref().map(|d| d.height))
            .field(
                "waiting",
                &self.waiting.iter().map(|w| (w.height, w.missing.len(), w.fetches)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The write-ahead log as read at start.
#[derive(Debug)]
pub enum WalRead {
    /// Its records, in order (a torn tail dropped).
    Records(Vec<WalRecord>),
    /// It cannot be replayed (corrupt before its end, or too large): the validator does not
    /// sign until an operator acts.
    Unreadable(String),
}

impl Driver {
    /// A driver over `chain`; `core` for a validator (none for a node or explorer); `signer` as
    /// persisted (none if this validator never signed).
    pub fn new(cfg: DriverConfig, core: Option<Core>, chain: Chain, signer: Option<SignState>) -> Self {
        Self {
            cfg,
            core,
            chain,
            signer,
            sent: HashSet::new(),
            resent: Vec::new(),
            held: HashSet::new(),
            boot_log: Vec::new(),
            start: None,
            wal_base_bytes: 0,
            logged_bodies: HashSet::new(),
            waiting: Vec::new(),
            stuck: None,
            height_started_ms: 0,
            start_due_ms: None,
            halted: None,
            stats: DriverStats::default(),
        }
    }

    /// The chain (committed state and pool).
    pub const fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The core, if this is a validator that signs.
    pub const fn core(&self) -> Option<&Core> {
        self.core.as_ref()
    }

    /// Counters.
    pub const fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Why this validator does not sign, if it does not.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// The signing state as last persisted.
    pub const fn signer(&self) -> Option<&SignState> {
        self.signer.as_ref()
    }

    /// Bytes the driver holds for the height beyond the committed state: executed values,
    /// checks waiting for bodies (their ids). What the memory budget bounds.
    pub fn height_bytes(&self) -> usize {
        self.chain.executed_bytes()
            + self.waiting.iter().map(|w| w.value.tx_ids.len() * 32 + w.missing.len() * 48).sum::<usize>()
    }

    /// Whether a check waits for this body (bodies a peer sends unasked are dropped).
    pub fn wants(&self, id: &TxId) -> bool {
        self.waiting.iter().any(|w| w.missing.contains(id))
            || self.stuck.as_ref().is_some_and(|d| d.value.tx_ids.contains(id))
    }

    /// Pending bodies of these ids (for a peer fetching them).
    pub fn bodies(&self, ids: &[TxId]) -> Vec<SignedTransaction> {
        ids.iter().filter_map(|id| self.chain.pending(id).map(|v| v.tx.clone())).collect()
    }

    /// Starts: a validator replays its log if it is of the next height, or starts that height
    /// (resuming after its signing state if it signed there); a follower polls for ledgers.
    pub fn boot<E: Env>(&mut self, env: &mut E, wal: WalRead) -> Result<(), DriverError> {
        match wal {
            WalRead::Records(log) => self.boot_log = log,
            WalRead::Unreadable(why) => {
                self.halted = Some(format!(
                    "the consensus log cannot be replayed ({why}): not signing; move it aside and restart once the cause is known"
                ));
                self.core = None;
            }
        }
        if self.core.is_some() {
            self.try_start(env)?;
        } else {
            env.schedule(Timer::SyncPoll, 0);
        }
        Ok(())
    }

    /// Starts consensus at the next height if it is not started and may be.
    fn try_start<E: Env>(&mut self, env: &mut E) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        let Some(core) = self.core.as_ref() else { return Ok(()) };
        if core.height() >= next {
            return Ok(());
        }
        let now = env.now_ms();
        // Heights start a block interval apart on average: a start a little late (the host was
        // busy when its timer was due) counts from when it was due, and the next one comes that
        // much sooner. A start far from when it was due (a sync, a restart) counts from now.
        let late_max = i64::try_from(self.cfg.block_interval_ms / 10).unwrap_or(i64::MAX);
        self.height_started_ms = match self.start_due_ms.take() {
            Some(due) if now >= due && now - due <= late_max => due,
            _ => now,
        };
        self.sent.clear();
        self.resent.clear();
        self.held.clear();
        self.waiting.clear();
        let log_height = match self.boot_log.first() {
            Some(WalRecord::Input(Input::Start { height, .. })) => Some(*height),
            _ => None,
        };
        if log_height.is_some_and(|h| h < next) {
            self.boot_log.clear();
        }
        let signed = self.signer.as_ref().map(|s| s.slot);
        if log_height == Some(next) {
            let log = std::mem::take(&mut self.boot_log);
            return self.replay(env, log);
        }
        match signed {
            // Signed at a height above the committed one (the store lost ledgers this validator
            // took part in): catch up by sync first, signing nothing meanwhile.
            Some(slot) if slot.height > next => {
                env.request_ledger(None, next);
                self.resend_commit(env);
                env.schedule(Timer::SyncPoll, self.cfg.sync_poll_ms);
                Ok(())
            }
            // Signed at this height without its log: resume after the last slot signed, locked
            // as it was.
            Some(slot) if slot.height == next => self.resume_signed(env, next, slot.round),
            _ => {
                // Nothing was signed at a later height: a log of one is not needed.
                self.boot_log.clear();
                let validators = self.chain.validators().clone();
                self.input(env, Input::Start { height: next, validators }, true)
            }
        }
    }

    /// Starts height `next`, at which this validator signed up to `round` but has no log:
    /// started and resumed in one step, logged as such — the start's own effects (a value built
    /// for round 0, if it leads it) must not run before the resume, or it would sign a second
    /// proposal of a round it may have led before.
    fn resume_signed<E: Env>(&mut self, env: &mut E, next: u64, round: u32) -> Result<(), DriverError> {
        let validators = self.chain.validators().clone();
        let (locked, votes) = self.signer.as_ref().map(|s| (s.locked, s.votes.clone())).unwrap_or_default();
        let start = Input::Start { height: next, validators };
        let resume = Input::Resume { height: next, round: round + 1, locked, valid: None };
        let records = [WalRecord::Input(start.clone()), WalRecord::Input(resume.clone())];
        self.wal_base_bytes = env.wal_start(&records)?;
        self.logged_bodies.clear();
        self.start = Some(start.clone());
        let Some(core) = self.core.as_mut() else { return Ok(()) };
        let mut out = Vec::new();
        core.handle(start, &mut out);
        core.handle(resume, &mut out);
        self.execute(env, out)?;
        // What it signed in its last round may be what the others need to finish that round:
        // sent again (the very bytes signed), and with every re-broadcast.
        for v in votes {
            let m = Message::Vote(v);
            self.sent.insert(message_digest(&m));
            env.broadcast(&m);
            self.resent.push(m);
        }
        Ok(())
    }

    fn replay<E: Env>(&mut self, env: &mut E, log: Vec<WalRecord>) -> Result<(), DriverError> {
        // The log as read becomes the log (without a torn tail).
        self.wal_base_bytes = env.wal_reset(&log)?;
        let mut inputs = Vec::with_capacity(log.len());
        for record in log {
            match record {
                WalRecord::Input(i) => inputs.push(i),
                // Bodies of the values this validator voted for: back in the pool before the
                // replay, so that a decision among them commits.
                WalRecord::Bodies(txs) => self.chain.restore_bodies(Arc::unwrap_or_clone(txs)),
                // What left before the restart (or was about to): the replay rebuilds these
                // very bytes, which may go again.
                WalRecord::Sent(digests) => self.sent.extend(digests),
            }
        }
        let Some(core) = self.core.as_mut() else { return Ok(()) };
        self.start = inputs.first().cloned();
        let effects = core.replay(inputs);
        self.execute(env, effects)
    }

    /// A peer's consensus message.
    pub fn on_message<E: Env>(
        &mut self,
        env: &mut E,
        from: PeerId,
        message: Message,
    ) -> Result<(), DriverError> {
        let Some(core) = self.core.as_ref() else { return Ok(()) };
        let screen = core.screen(from, &message);
        match screen {
            Screen::Invalid(_) => {
                self.stats.bad_messages += 1;
                env.penalize(from, Fault::BadMessage);
                return Ok(());
            }
            Screen::Known => self.stats.ignored_messages += 1,
            Screen::New | Screen::Future | Screen::OtherHeight => {}
        }
        self.input(env, Input::Message { from, message }, screen == Screen::New)
    }

    /// A timer fired.
    pub fn on_timer<E: Env>(&mut self, env: &mut E, timer: Timer) -> Result<(), DriverError> {
        match timer {
            Timer::Consensus(t) => {
                // A re-broadcast changes nothing the log must rebuild.
                let rebroadcast = t.kind == TimeoutKind::Rebroadcast;
                if rebroadcast && self.core.as_ref().is_some_and(|c| c.height() == t.height) {
                    for m in &self.resent {
                        env.broadcast(m);
                    }
                }
                self.input(env, Input::Timeout(t), !rebroadcast)
            }
            Timer::StartNext(height) => {
                if self.chain.next_height() == height {
                    self.try_start(env)?;
                }
                Ok(())
            }
            Timer::Fetch(height, id) => {
                // Asked of the proposal's sender first, then of other peers, until the bodies
                // arrive or the height ends: a sender that cannot or will not answer (down,
                // penalized, Byzantine) must not leave the check pending for ever.
                if let Some(d) = self.stuck.as_ref().filter(|d| d.height == height && d.id == id) {
                    let missing = self.chain.missing(&d.value);
                    for chunk in missing.chunks(FETCH_IDS_MAX) {
                        env.fetch(None, chunk);
                    }
                    env.request_ledger(None, height);
                    env.schedule(Timer::Fetch(height, id), FETCH_RETRY_MAX_MS);
                    return Ok(());
                }
                if let Some(w) = self.waiting.iter_mut().find(|w| w.height == height && w.id == id) {
                    let ids: Vec<TxId> = w.missing.iter().copied().collect();
                    env.fetch((w.fetches == 0).then_some(w.from), &ids);
                    w.fetches += 1;
                    let delay =
                        self.cfg.fetch_delay_ms.saturating_mul(1 << w.fetches.min(8)).min(FETCH_RETRY_MAX_MS);
                    env.schedule(Timer::Fetch(height, id), delay);
                }
                Ok(())
            }
            Timer::SyncPoll => {
                let catching_up = self.core.as_ref().is_some_and(|c| c.height() < self.chain.next_height());
                if self.core.is_none() || catching_up {
                    env.request_ledger(None, self.chain.next_height());
                    self.resend_commit(env);
                    env.schedule(Timer::SyncPoll, self.cfg.sync_poll_ms);
                }
                Ok(())
            }
        }
    }

    /// Verified transactions for the pool (`fetched`: bodies asked for a proposal). Returns,
    /// per transaction, whether the pool took it.
    pub fn on_transactions<E: Env>(
        &mut self,
        env: &mut E,
        txs: Vec<VerifiedTx>,
        fetched: bool,
    ) -> Result<Vec<bool>, DriverError> {
        let arrived: Vec<TxId> = if self.waiting.is_empty() && self.stuck.is_none() {
            Vec::new()
        } else {
            txs.iter().map(|v| v.id).collect()
        };
        let mut added = Vec::with_capacity(txs.len());
        for vtx in txs {
            match self.chain.add(vtx) {
                Ok(()) => added.push(true),
                Err(PoolError::Known) if fetched => {
                    self.stats.fetched_known_txs += 1;
                    added.push(false);
                }
                Err(_) => added.push(false),
            }
        }
        self.on_pooled(env, &arrived)?;
        Ok(added)
    }

    /// Transactions the mempool took from elsewhere (the intake admitted them): a check or a
    /// decision waiting for their bodies goes on.
    pub fn on_pooled<E: Env>(&mut self, env: &mut E, arrived: &[TxId]) -> Result<(), DriverError> {
        if arrived.is_empty() || (self.waiting.is_empty() && self.stuck.is_none()) {
            return Ok(());
        }
        self.recheck_waiting(env, arrived)?;
        if self.stuck.as_ref().is_some_and(|d| self.chain.missing(&d.value).is_empty()) {
            if let Some(d) = self.stuck.take() {
                self.decide(env, d)?;
            }
        }
        Ok(())
    }

    /// A committed ledger from a peer: applied if it is the next one, its certificate verifies
    /// under the set in force, its transactions are the ones its header commits to, and it
    /// re-executes to its header. Anything else is refused — the sender penalized if it is to
    /// blame — and never stops the process.
    pub fn on_ledger<E: Env>(
        &mut self,
        env: &mut E,
        from: PeerId,
        ledger: &CommittedLedger,
    ) -> Result<(), DriverError> {
        if ledger.header.height != self.chain.next_height() {
            return Ok(());
        }
        match self.chain.apply_synced(ledger) {
            Ok(c) => {
                self.stats.synced_ledgers += 1;
                self.committed(env, &c)?;
                // Catching up: ask the same peer for the next one, and (a validator) join the
                // next height at once.
                env.request_ledger(Some(from), self.chain.next_height());
                self.try_start(env)
            }
            Err(e) if e.blames_sender() => {
                self.stats.refused_ledgers += 1;
                env.penalize(from, Fault::AlteredLedger);
                Ok(())
            }
            Err(ChainError::Mismatch { .. } | ChainError::Block(_)) => {
                self.stats.divergent_ledgers += 1;
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// An equivocation proof a peer pushed: kept if it checks under the set of its height (the
    /// set in force when it is of the next height; others cannot be checked here and are
    /// dropped); one that does not check costs the peer.
    pub fn on_evidence<E: Env>(
        &mut self,
        env: &mut E,
        from: PeerId,
        proof: &Equivocation,
    ) -> Result<(), DriverError> {
        if proof.height() != self.chain.next_height() {
            return Ok(());
        }
        let (params, set) = (self.chain.state().params(), self.chain.validators());
        match proof.check(&params.chain_id, set, self.chain.backend()) {
            Ok(key) => {
                self.stats.equivocations += 1;
                env.evidence(proof, &key)?;
            }
            Err(_) => env.penalize(from, Fault::BadMessage),
        }
        Ok(())
    }

    /// A body `peer` sent as asked failed verification.
    pub fn on_bad_body<E: Env>(&mut self, env: &mut E, peer: PeerId) {
        env.penalize(peer, Fault::BadBody);
    }

    /// Logs an input (if it changes the core, and is of the height being decided), hands it to
    /// the core, and executes the effects.
    fn input<E: Env>(&mut self, env: &mut E, input: Input, log: bool) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        let Some(core) = self.core.as_mut() else { return Ok(()) };
        let input = if let Input::Start { .. } = &input {
            // A new height: the log before is of a committed one.
            self.wal_base_bytes = env.wal_start(&[WalRecord::Input(input.clone())])?;
            self.logged_bodies.clear();
            self.start = Some(input.clone());
            input
        } else if log && core.height() == next {
            let record = WalRecord::Input(input);
            let bytes = env.wal_append(&record)?;
            let WalRecord::Input(input) = record else { unreachable!("made above") };
            let grown = bytes.saturating_sub(self.wal_base_bytes);
            let mut out = Vec::new();
            core.handle(input, &mut out);
            // Compacted once this validator has signed both votes of the round (the next round
            // is where a compacted core resumes anyway): leaving a round before prevoting and
            // precommitting in it could leave the others waiting for a quorum of that round for
            // ever. At `WAL_HARD_FACTOR` times the bound the log is compacted whatever the step.
            let due = grown > self.cfg.wal_compact_bytes
                && (core.precommitted()
                    || grown > self.cfg.wal_compact_bytes.saturating_mul(WAL_HARD_FACTOR));
            let height = core.height();
            self.execute(env, out)?;
            return if due { self.compact(env, height) } else { Ok(()) };
        } else {
            input
        };
        let mut out = Vec::new();
        core.handle(input, &mut out);
        self.execute(env, out)
    }

    /// Rewrites the log as the height's `Start` and a `Resume` at the next round (the lock
    /// kept), and resumes the core the same way: a replay of the new log ends where it is.
    fn compact<E: Env>(&mut self, env: &mut E, height: u64) -> Result<(), DriverError> {
        let (Some(core), Some(start)) = (self.core.as_mut(), self.start.clone()) else { return Ok(()) };
        if core.is_decided() || core.height() != height || self.chain.next_height() != height {
            return Ok(());
        }
        let resume = Input::Resume {
            height: core.height(),
            round: core.round() + 1,
            locked: core.locked(),
            valid: core.pol().map(Box::new),
        };
        // The bodies of the lock and of the valid value go on with them: a decision of either
        // must commit.
        let mut records = vec![WalRecord::Input(start)];
        self.logged_bodies.clear();
        for id in [core.locked(), core.valid()].into_iter().flatten().map(|(_, id)| id) {
            if let Some(fresh) = unlogged_bodies(&self.chain, &mut self.logged_bodies, &id) {
                records.push(WalRecord::Bodies(fresh));
            }
        }
        records.push(WalRecord::Input(resume.clone()));
        self.wal_base_bytes = env.wal_reset(&records)?;
        // What it signed in the round it leaves goes on being re-broadcast: the others may not
        // have it yet and need it to finish that round.
        let own = core.own_messages(core.round());
        self.resent = own;
        self.stats.wal_compactions += 1;
        let mut out = Vec::new();
        core.handle(resume, &mut out);
        self.execute(env, out)
    }

    /// Executes the core's effects in order; this validator's signed messages leave only once
    /// the log is durable and the signing state covers them.
    fn execute<E: Env>(&mut self, env: &mut E, effects: Vec<Effect>) -> Result<(), DriverError> {
        if let Some(core) = &self.core {
            self.chain.pin([core.locked().map(|(_, id)| id), core.valid().map(|(_, id)| id)]);
        }
        let sends = self.clear_to_send(env, &effects)?;
        for (e, send) in effects.into_iter().zip(sends) {
            match e {
                Effect::Broadcast(m) => {
                    if send {
                        env.broadcast(&m);
                    }
                }
                Effect::Schedule { timeout, after_ms } => env.schedule(Timer::Consensus(timeout), after_ms),
                Effect::Check { height, id, value, from } => self.check(env, height, id, value, from)?,
                // A value for a round the core has left (a start resumed at a later round, a
                // replay) would be ignored by it: nothing is built.
                Effect::Build { round, .. } if self.core.as_ref().is_none_or(|c| c.round() != round) => {}
                Effect::Build { height, round } => {
                    let value = self.chain.build(env.now_ms());
                    self.log_bodies(env, &value.id(self.chain.state().params().chain_id.as_str()))?;
                    self.input(env, Input::Proposed { height, round, value }, true)?;
                }
                Effect::Decide(d) => self.decide(env, d)?,
                Effect::Redeliver(messages) => {
                    for (from, message) in messages {
                        self.on_message(env, from, message)?;
                    }
                }
                Effect::Evidence(proof) => {
                    self.stats.equivocations += 1;
                    let offender = self
                        .core
                        .as_ref()
                        .and_then(Core::validators)
                        .and_then(|set| set.validators().get(usize::from(proof.offender())))
                        .map(|v| v.public_key);
                    if let Some(key) = offender {
                        env.evidence(&proof, &key)?;
                    }
                }
                Effect::PeerBehind { peer, height } => env.send_ledger(peer, height),
                Effect::PeerAhead { peer, .. } => {
                    if self.stuck.is_some() || self.core.as_ref().is_some_and(|c| !c.is_decided()) {
                        env.request_ledger(Some(peer), self.chain.next_height());
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the core is at the height the chain commits next (the height the log is of).
    fn deciding(&self) -> bool {
        self.core.as_ref().is_some_and(|c| c.height() == self.chain.next_height())
    }

    /// While its store is below the height it signed at: the precommit it signed at the
    /// height it last committed, if that is the height the store is missing next. The ledger
    /// may have been committed by this validator alone (its precommit lost on the way to the
    /// others) and lost with its store since: the others then need this precommit to decide it.
    /// The very bytes signed then: sending them again signs nothing new.
    fn resend_commit<E: Env>(&self, env: &mut E) {
        let next = self.chain.next_height();
        if let Some(c) = self.signer.as_ref().and_then(|s| s.commit).filter(|c| c.vote.height == next) {
            env.broadcast(&Message::Vote(c));
        }
    }

    /// Which effects may be executed (only broadcasts of this validator's own messages can be
    /// held back), after making the log durable and persisting the signing state they need.
    fn clear_to_send<E: Env>(&mut self, env: &mut E, effects: &[Effect]) -> Result<Vec<bool>, DriverError> {
        let me = self.core.as_ref().and_then(Core::me);
        let mut sends = vec![true; effects.len()];
        let mut newest: Option<(Slot, Hash)> = None;
        let mut leaving: Vec<Hash> = Vec::new();
        let mut any_own = false;
        for (e, send) in effects.iter().zip(sends.iter_mut()) {
            let Effect::Broadcast(m) = e else { continue };
            if me != Some(m.signer()) {
                continue;
            }
            any_own = true;
            let (slot, digest) = (Slot::of(m), message_digest(m));
            let fresh = self.signer.as_ref().is_none_or(|s| slot > s.slot);
            let resent = self.sent.contains(&digest)
                || self.signer.as_ref().is_some_and(|s| s.slot == slot && s.digest == digest);
            *send = fresh || resent;
            if !*send {
                // Counted once per message, however often the core re-broadcasts it.
                if self.held.insert(digest) {
                    self.stats.refused_signatures += 1;
                }
                continue;
            }
            if !self.sent.contains(&digest) {
                leaving.push(digest);
            }
            if fresh && newest.is_none_or(|(n, _)| slot > n) {
                newest = Some((slot, digest));
            }
        }
        if self.deciding() && !leaving.is_empty() {
            for chunk in leaving.chunks(crate::wal::SENT_PER_RECORD_MAX) {
                env.wal_append(&WalRecord::Sent(chunk.to_vec()))?;
            }
        }
        if any_own {
            // The inputs that made these messages are on disk before they leave: a restart
            // replays them and signs the same bytes. (A decision signs nothing: a restart that
            // lost what made it decides again from the votes the others re-send, or syncs the
            // ledger.)
            env.wal_sync()?;
        }
        if let Some((slot, digest)) = newest {
            self.save_sign_state(env, slot, digest, effects, &sends)?;
        }
        self.sent.extend(leaving);
        Ok(sends)
    }

    /// Persists the signing state of the newest slot about to be signed (`slot`, the message
    /// `digest`), with the votes of its round that leave — those of `effects` cleared to send
    /// and those saved before in the same round — before any of them leaves.
    fn save_sign_state<E: Env>(
        &mut self,
        env: &mut E,
        slot: Slot,
        digest: Hash,
        effects: &[Effect],
        sends: &[bool],
    ) -> Result<(), DriverError> {
        let me = self.core.as_ref().and_then(Core::me);
        let locked = self.core.as_ref().and_then(Core::locked);
        let mut votes: Vec<SignedVote> = self
            .signer
            .iter()
            .flat_map(|s| s.votes.iter().copied())
            .chain(effects.iter().zip(sends).filter_map(|(e, send)| match e {
                Effect::Broadcast(Message::Vote(v)) if *send && me == Some(v.validator) => Some(*v),
                _ => None,
            }))
            .filter(|v| v.vote.height == slot.height && v.vote.round == slot.round)
            .collect();
        votes.dedup_by_key(|v| v.vote.kind);
        votes.truncate(SIGN_STATE_VOTES_MAX);
        // The last precommit of the height below, carried while this validator signs at the
        // next one.
        let commit = self.signer.as_ref().and_then(|s| {
            if s.slot.height == slot.height {
                s.commit
            } else if s.slot.height + 1 == slot.height {
                s.votes.iter().find(|v| v.vote.kind == VoteKind::Precommit).copied()
            } else {
                None
            }
        });
        let state = SignState { slot, digest, locked, votes, commit };
        env.save_signer(&state)?;
        self.signer = Some(state);
        Ok(())
    }

    fn check<E: Env>(
        &mut self,
        env: &mut E,
        height: u64,
        id: Hash,
        value: Value,
        from: PeerId,
    ) -> Result<(), DriverError> {
        match self.chain.check(&value, env.now_ms()) {
            CheckOutcome::Valid { timely } => {
                self.log_bodies(env, &id)?;
                self.input(env, Input::Checked { height, value: id, valid: true, timely }, true)
            }
            CheckOutcome::Invalid(_) => {
                self.input(env, Input::Checked { height, value: id, valid: false, timely: false }, true)
            }
            CheckOutcome::Missing(ids) => {
                // Most missing bodies are on their way by gossip: fetch only what has not
                // arrived after a moment, so nothing is verified twice.
                if self.waiting.len() < self.cfg.waiting_checks_max {
                    let missing = ids.iter().copied().collect();
                    self.waiting.push(Waiting { height, id, value, from, missing, fetches: 0 });
                    env.schedule(Timer::Fetch(height, id), self.cfg.fetch_delay_ms);
                } else {
                    env.fetch(Some(from), &ids);
                }
                Ok(())
            }
        }
    }

    /// Logs the bodies of an executed value of the height being decided (before the verdict or
    /// the proposal that lets this validator vote for it).
    fn log_bodies<E: Env>(&mut self, env: &mut E, id: &Hash) -> Result<(), DriverError> {
        if !self.deciding() {
            return Ok(());
        }
        if let Some(fresh) = unlogged_bodies(&self.chain, &mut self.logged_bodies, id) {
            env.wal_append(&WalRecord::Bodies(fresh))?;
        }
        Ok(())
    }

    /// `arrived`: ids just added to the pool.
    fn recheck_waiting<E: Env>(&mut self, env: &mut E, arrived: &[TxId]) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        for mut w in std::mem::take(&mut self.waiting) {
            if w.height != next {
                continue;
            }
            for id in arrived {
                w.missing.remove(id);
            }
            if w.missing.is_empty() {
                self.check(env, w.height, w.id, w.value, w.from)?;
            } else {
                self.waiting.push(w);
            }
        }
        Ok(())
    }

    fn decide<E: Env>(&mut self, env: &mut E, d: Decision) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        if d.height < next {
            // Taken from a peer (sync) before the core decided: it must be the same ledger.
            let state = self.chain.state();
            if d.height == state.head().height && d.id != state.head_hash() {
                return Err(DriverError::Fork {
                    height: d.height,
                    decided: d.id,
                    committed: state.head_hash(),
                });
            }
            return Ok(());
        }
        match self.chain.commit(&d.value, d.certificate.clone()) {
            Ok(c) => {
                self.stats.certified_ledgers += 1;
                self.committed(env, &c)?;
                // Heights start a block interval apart: the time consensus took counts against
                // it (at least a tenth of it still separates them).
                let elapsed = u64::try_from(env.now_ms().saturating_sub(self.height_started_ms)).unwrap_or(0);
                let wait =
                    self.cfg.block_interval_ms.saturating_sub(elapsed).max(self.cfg.block_interval_ms / 10);
                env.schedule(Timer::StartNext(self.chain.next_height()), wait);
                self.start_due_ms =
                    Some(env.now_ms().saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)));
                Ok(())
            }
            Err(ChainError::Missing(_)) => {
                // Decided on bodies this process no longer has (it restarted, or dropped them
                // from its pool while building another value): fetch them, and ask for the
                // certified ledger, whichever comes first.
                let missing = self.chain.missing(&d.value);
                for chunk in missing.chunks(FETCH_IDS_MAX) {
                    env.fetch(None, chunk);
                }
                env.request_ledger(None, d.height);
                if self.stuck.is_none() {
                    env.schedule(Timer::Fetch(d.height, d.id), FETCH_RETRY_MAX_MS);
                }
                self.stuck = Some(d);
                Ok(())
            }
            Err(error) => Err(DriverError::Commit { height: d.height, error }),
        }
    }

    fn committed<E: Env>(&mut self, env: &mut E, c: &Committed) -> Result<(), DriverError> {
        env.commit(c, self.chain.state())?;
        self.waiting.clear();
        self.stuck = None;
        Ok(())
    }
}

/// The bodies of an executed value the log of this height does not hold yet (marked as held
/// from now on); `None` if there are none. A value's bodies logged for the first time (the
/// common case) are shared with its execution, not copied.
fn unlogged_bodies(
    chain: &Chain,
    logged: &mut HashSet<TxId>,
    id: &Hash,
) -> Option<Arc<Vec<SignedTransaction>>> {
    let (ids, txs) = chain.executed_transactions(id)?;
    let fresh: Vec<bool> = ids.iter().map(|id| logged.insert(*id)).collect();
    match fresh.iter().filter(|f| **f).count() {
        0 => None,
        n if n == txs.len() => Some(Arc::clone(txs)),
        _ => Some(Arc::new(txs.iter().zip(fresh).filter(|(_, f)| *f).map(|(tx, _)| tx.clone()).collect())),
    }
}
