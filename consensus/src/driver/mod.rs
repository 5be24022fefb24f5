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
//!
//! Here: the driver, its start (boot, replay, a height's start) and the events it takes;
//! `env`: what it needs of its environment; `effects`: inputs logged and the core's effects
//! executed (log, then sign, then send); `values`: checks, bodies, decisions and commits.

use std::collections::HashSet;

use engine::{
    Hash,
    tx::{SignedTransaction, TxId},
    validate::VerifiedTx,
};

use crate::{
    chain::{Chain, ChainError, CommittedLedger, PoolError},
    core::{Core, Decision, Input, PeerId, Screen, TimeoutKind},
    evidence::Equivocation,
    message::{Message, Value},
    signer::{SignState, message_digest},
    wal::WalRecord,
    wire::FETCH_IDS_MAX,
};

mod effects;
mod env;
mod values;

pub use self::env::{Clock, DriverError, Env, Fault, Network, Storage, StorageError, Timer, Timers};

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
                WalRecord::Bodies(txs) => self.chain.restore_bodies(txs.into_transactions()),
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
}
