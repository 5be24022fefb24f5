//! The consensus state machine: Tendermint (Buchman, Kwon, Milosevic, "The latest gossip on BFT
//! consensus", 2018, Algorithm 1) with voting weight in place of counts. `2f+1` reads "more than
//! two thirds of the weight" and `f+1` "more than one third". Comments cite the algorithm's line
//! numbers.
//!
//! The core does no I/O and reads no clock: the host feeds it [`Input`]s and executes the
//! [`Effect`]s it returns — sends, timers, checks of proposed values, building of proposals,
//! decisions and evidence. Given the same inputs it returns the same effects (signatures are
//! deterministic, RFC 6979), which is what lets a host replay its write-ahead log of inputs after
//! a crash and end in the very state it was in, without signing anything new.
//!
//! Two additions to the paper's algorithm make it live on a lossy network, where the paper
//! assumes a gossip layer that eventually delivers every message: a periodic re-broadcast of the
//! validator's own messages of the height (and of the proposals it holds), and hints to the host
//! when a peer is behind (send it the decided ledger) or ahead (fetch the ledger from it).

use std::collections::{BTreeMap, HashMap, HashSet};

use engine::{
    Backend, Hash, SecretKey,
    ledger::{Certificate, ValidatorSet, Vote, VoteKind},
};

use crate::{
    evidence::Equivocation,
    message::{Message, MessageError, Proposal, SignedProposal, SignedVote, Value},
    votes::{Added, VoteBook},
};

/// Messages for rounds further than this above the current one are dropped: a Byzantine
/// validator cannot make a node hold state for arbitrary rounds.
pub const ROUND_WINDOW: u32 = 64;
/// Messages for the next height kept per signer until it starts (an honest validator signs a
/// proposal and two votes per round): one Byzantine signer cannot crowd the others out.
pub const FUTURE_PER_SIGNER_MAX: usize = 16;
/// Distinct proposals kept per round (more than one only from an equivocating leader).
pub const PROPOSALS_PER_ROUND_MAX: usize = 4;
/// Proposals are kept for rounds up to this many above the current one (votes for the whole
/// [`ROUND_WINDOW`], which the round-skip rule needs). A later round's proposal comes again
/// with its leader's re-broadcast; keeping them would let a leader make every validator hold
/// `PROPOSALS_PER_ROUND_MAX` values for each of the window's rounds it leads.
pub const PROPOSAL_ROUNDS_AHEAD: u32 = 1;
/// Next-height messages per peer and height whose signature may fail under the current set (it
/// may change at the next height): past it, that peer's next-height messages are dropped
/// unverified, so a flood of them costs a bounded number of verifications.
pub const FUTURE_FAILURES_PER_PEER_MAX: usize = 64;
/// Equivocation proofs emitted per validator and height: one proves the offence, a few show
/// its extent; the rest are dropped.
pub const EVIDENCE_PER_VALIDATOR_MAX: usize = 4;

/// A host-level peer identity (a connection or a simulated node); only used in hints.
pub type PeerId = u32;

/// Timeout durations. A round's timeout is `base + round × increase_ms`, capped at `max_ms`
/// (the paper's `timeoutX(r)`, growing with the round so that after the network stabilizes a
/// round eventually lasts long enough for every honest validator to take part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Wait for a proposal in round 0.
    pub propose_ms: u64,
    /// Wait after seeing a quorum of prevotes with no single winner (round 0).
    pub prevote_ms: u64,
    /// Wait after seeing a quorum of precommits with no decision (round 0).
    pub precommit_ms: u64,
    /// Added per round.
    pub increase_ms: u64,
    /// Cap of any timeout.
    pub max_ms: u64,
    /// Period of the re-broadcast of this validator's messages of the height.
    pub rebroadcast_ms: u64,
}

impl Timeouts {
    /// Timeouts for a block interval: a round-0 proposal wait of one interval (at least 300 ms),
    /// growing by half an interval per round.
    pub fn for_interval(block_interval_ms: u64) -> Self {
        let base = block_interval_ms.max(300);
        Self {
            propose_ms: base,
            prevote_ms: base / 2,
            precommit_ms: base / 2,
            increase_ms: base / 2,
            max_ms: base * 20,
            rebroadcast_ms: base,
        }
    }

    fn after(&self, kind: TimeoutKind, round: u32) -> u64 {
        let base = match kind {
            TimeoutKind::Propose => self.propose_ms,
            TimeoutKind::Prevote => self.prevote_ms,
            TimeoutKind::Precommit => self.precommit_ms,
            TimeoutKind::Rebroadcast => return self.rebroadcast_ms,
        };
        base.saturating_add(self.increase_ms.saturating_mul(u64::from(round))).min(self.max_ms)
    }
}

/// The core's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Chain id (signed into every message).
    pub chain_id: String,
    /// This validator's consensus key; `None` observes without voting.
    pub key: Option<SecretKey>,
    /// Signature backend for verifying peers' messages.
    pub backend: Backend,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// Which timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeoutKind {
    /// `OnTimeoutPropose` (line 57).
    Propose,
    /// `OnTimeoutPrevote` (line 61).
    Prevote,
    /// `OnTimeoutPrecommit` (line 65).
    Precommit,
    /// Periodic re-broadcast of this validator's messages.
    Rebroadcast,
}

/// A timer, identified by what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeout {
    /// Which rule it wakes.
    pub kind: TimeoutKind,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
}

/// What the host tells the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// Start `height` with its validator set (after the previous ledger is committed).
    Start {
        /// Height to decide.
        height: u64,
        /// The set that certifies it.
        validators: ValidatorSet,
    },
    /// A message from a peer (signatures are checked here).
    Message {
        /// Who delivered it (not necessarily its signer).
        from: PeerId,
        /// The message.
        message: Message,
    },
    /// A timer fired.
    Timeout(Timeout),
    /// The host's verdict on a proposed value (asked by [`Effect::Check`]).
    Checked {
        /// Height.
        height: u64,
        /// The value's id.
        value: Hash,
        /// Every transaction valid in order on the committed state, roots right, timestamp after
        /// the previous ledger's.
        valid: bool,
        /// The timestamp is within the drift of the host's clock (judged only of fresh
        /// proposals, line 22; a re-proposal's quorum of prevotes vouches for its time).
        timely: bool,
    },
    /// Resume the started height at `round` with this lock and valid value, holding nothing
    /// else: what a host logs when it compacts its write-ahead log (a round ahead, the lock and
    /// the valid value with the prevotes that made it valid kept: what liveness needs), or when
    /// it restarts without a log of the height but with the signing state it persisted (the
    /// round after the last one it signed in, and the value it was locked on). Ignored unless
    /// `round` is above the current one.
    Resume {
        /// Height (the current one).
        height: u64,
        /// The round to go to.
        round: u32,
        /// `(lockedRound, id(lockedValue))` of the paper, if locked.
        locked: Option<(u32, Hash)>,
        /// The valid value, its proposal and the prevotes that made it valid.
        valid: Option<Box<Pol>>,
    },
    /// The value the host built for this validator's proposal (asked by [`Effect::Build`]).
    Proposed {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// The value.
        value: Value,
    },
}

/// A proof of lock: a proposal and a quorum of its round's prevotes for its value (the paper's
/// `validValue` and `validRound`, with what justifies re-proposing it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pol {
    /// The proposal of round `proposal.proposal.round` (the valid round) carrying the value.
    pub proposal: SignedProposal,
    /// Prevotes of that round for the value, more than two thirds of the weight.
    pub prevotes: Vec<SignedVote>,
}

/// A decided ledger: its value and the certificate (a quorum of one round's precommits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Height.
    pub height: u64,
    /// The ledger hash.
    pub id: Hash,
    /// Header and transaction ids.
    pub value: Value,
    /// The precommits that make it final.
    pub certificate: Certificate,
}

/// What the core asks the host to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Send to every peer.
    Broadcast(Message),
    /// Feed back `Input::Timeout(timeout)` after `after_ms`.
    Schedule {
        /// The timer.
        timeout: Timeout,
        /// Delay.
        after_ms: u64,
    },
    /// Check a proposed value (fetching missing bodies) and answer with `Input::Checked`.
    Check {
        /// Height.
        height: u64,
        /// Its id.
        id: Hash,
        /// The value.
        value: Value,
        /// Who delivered the proposal (ask it for missing bodies).
        from: PeerId,
    },
    /// Build a value for this validator's proposal and answer with `Input::Proposed`.
    Build {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// The height is decided: commit the ledger, then start the next height.
    Decide(Decision),
    /// A validator equivocated: keep the proof.
    Evidence(Equivocation),
    /// Messages for this height that arrived before it started: feed each back as
    /// `Input::Message` (logging them like any input).
    Redeliver(Vec<(PeerId, Message)>),
    /// A peer sent a message for a decided height: send it that height's committed ledger.
    PeerBehind {
        /// The peer.
        peer: PeerId,
        /// The height it is at.
        height: u64,
    },
    /// A peer sent a message for a later height: fetch the current height's ledger from it.
    PeerAhead {
        /// The peer.
        peer: PeerId,
        /// The height it is at.
        height: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Propose,
    Prevote,
    Precommit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Validity {
    Pending,
    /// Valid, and timely when first checked.
    Valid,
    /// Valid but its timestamp was off this validator's clock: not prevoted when fresh.
    Untimely,
    Invalid,
}

impl Validity {
    /// `valid(v)` of the paper: time plays no part (a locked value must stay valid).
    fn is_valid(self) -> bool {
        matches!(self, Self::Valid | Self::Untimely)
    }
}

/// Counters the host exports as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Messages dropped because their signature or signer was wrong.
    pub bad_messages: u64,
    /// Equivocations seen.
    pub equivocations: u64,
    /// Rounds started (over all heights).
    pub rounds_started: u64,
}

/// What a peer's message would do to the core ([`Core::screen`]): a host logs only what is
/// [`Screen::New`], and holds the relaying peer to account for what is [`Screen::Invalid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// Verified, and new: handling it changes the core's state (log it first).
    New,
    /// Already held, outside the kept rounds, or past a per-round bound: it changes nothing.
    Known,
    /// For the next height: kept (bounded per signer) until that height starts, then fed back
    /// as an input.
    Future,
    /// For another height: its sender is behind or ahead (a hint, nothing to log).
    OtherHeight,
    /// Forged or altered: a wrong signature, a signer outside the set, the wrong proposer, or
    /// ids that do not match the signed root. No honest peer relays it.
    Invalid(MessageError),
}

/// The state machine of one validator (or observer).
#[derive(Debug)]
pub struct Core {
    cfg: Config,
    height: u64,
    validators: Option<ValidatorSet>,
    me: Option<u8>,
    round: u32,
    step: Step,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
    decided: bool,
    /// Per round: the proposals held, the first one first (a second one exists only if the
    /// leader equivocated; it is kept, up to a bound, so a quorum formed on it can be seen).
    proposals: BTreeMap<u32, Vec<(SignedProposal, Hash)>>,
    validity: HashMap<Hash, Validity>,
    votes: VoteBook,
    /// Line 34's and line 47's "for the first time", and line 36's, for the current round.
    prevote_timeout_set: bool,
    precommit_timeout_set: bool,
    polka_seen: bool,
    /// The current round's proposal wait was extended once (its check was still running).
    propose_extended: bool,
    building: Option<u32>,
    own: BTreeMap<u32, Vec<Message>>,
    /// Messages of the next height, verified under the current set, per signer.
    future: BTreeMap<u8, Vec<(PeerId, Message)>>,
    hinted: HashSet<(PeerId, u64)>,
    /// Per peer, this height: next-height messages that failed verification under the set.
    future_failures: HashMap<PeerId, usize>,
    /// Offences of the current height already proved: (round, validator, kind).
    evidence_slots: HashSet<(u32, u8, &'static str)>,
    stats: CoreStats,
}

impl Core {
    /// A core that waits for `Input::Start`.
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            height: 0,
            validators: None,
            me: None,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            decided: false,
            proposals: BTreeMap::new(),
            validity: HashMap::new(),
            votes: VoteBook::empty(),
            prevote_timeout_set: false,
            precommit_timeout_set: false,
            polka_seen: false,
            propose_extended: false,
            building: None,
            own: BTreeMap::new(),
            future: BTreeMap::new(),
            hinted: HashSet::new(),
            future_failures: HashMap::new(),
            evidence_slots: HashSet::new(),
            stats: CoreStats::default(),
        }
    }

    /// Current height (0 before the first start).
    pub const fn height(&self) -> u64 {
        self.height
    }

    /// Current round.
    pub const fn round(&self) -> u32 {
        self.round
    }

    /// Whether the current height is decided.
    pub const fn is_decided(&self) -> bool {
        self.decided
    }

    /// Counters.
    pub const fn stats(&self) -> CoreStats {
        self.stats
    }

    /// The validator set of the current height (none before the first start).
    pub const fn validators(&self) -> Option<&ValidatorSet> {
        self.validators.as_ref()
    }

    /// This validator's index in the height's set (none for an observer, or before a start).
    pub const fn me(&self) -> Option<u8> {
        self.me
    }

    /// `(lockedRound, id(lockedValue))`, if locked: what a host persists with its signing state
    /// so that a restart without the log still refuses other values.
    pub const fn locked(&self) -> Option<(u32, Hash)> {
        self.locked
    }

    /// `(validRound, id(validValue))`, if a value of this height gathered a quorum of prevotes.
    pub const fn valid(&self) -> Option<(u32, Hash)> {
        self.valid
    }

    /// This validator's messages of `round` (what it re-broadcasts).
    pub fn own_messages(&self, round: u32) -> Vec<Message> {
        self.own.get(&round).cloned().unwrap_or_default()
    }

    /// Whether this validator is done signing for the current round (it precommitted).
    pub fn precommitted(&self) -> bool {
        self.step == Step::Precommit
    }

    /// The valid value with its proposal and the prevotes that made it valid (what a compacted
    /// log keeps, so that this validator can still re-propose it and prove it may).
    pub fn pol(&self) -> Option<Pol> {
        let (vr, id) = self.valid?;
        let (proposal, _) = self.proposals.get(&vr)?.iter().find(|(_, pid)| *pid == id)?;
        let prevotes: Vec<SignedVote> = self
            .votes
            .all_votes(vr)
            .filter(|v| v.vote.kind == VoteKind::Prevote && v.vote.value == Some(id))
            .copied()
            .collect();
        Some(Pol { proposal: proposal.clone(), prevotes })
    }

    /// What `message` would do if handled now (see [`Screen`]). Checks signatures; changes
    /// nothing.
    pub fn screen(&self, from: PeerId, message: &Message) -> Screen {
        let height = message.height();
        let Some(set) = self.validators.as_ref() else { return Screen::OtherHeight };
        if height == self.height + 1 {
            if !self.future_has_room(message)
                || self.future_failures.get(&from).is_some_and(|&n| n >= FUTURE_FAILURES_PER_PEER_MAX)
            {
                return Screen::Known;
            }
            return match message.verify(&self.cfg.chain_id, set, self.cfg.backend) {
                Ok(_) if self.future_has_room(message) => Screen::Future,
                Ok(_) => Screen::Known,
                // Signed under the next height's set, which may differ from this one: not proof
                // of a fault (its signer re-broadcasts it once the height starts).
                Err(_) => Screen::OtherHeight,
            };
        }
        if height != self.height {
            return Screen::OtherHeight;
        }
        if message.round() > self.round.saturating_add(ROUND_WINDOW) {
            return Screen::Known;
        }
        match message {
            Message::Proposal(p) => {
                if p.proposer != Self::proposer(set, height, p.proposal.round) {
                    return Screen::Invalid(MessageError::NotTheProposer);
                }
                let id = match p.verify(&self.cfg.chain_id, set, self.cfg.backend) {
                    Ok(id) => id,
                    Err(e) => return Screen::Invalid(e),
                };
                if p.proposal.round > self.round.saturating_add(PROPOSAL_ROUNDS_AHEAD) {
                    return Screen::Known;
                }
                let held = self.proposals.get(&p.proposal.round).map_or(&[][..], Vec::as_slice);
                let duplicate = held
                    .iter()
                    .any(|(q, qid)| *qid == id && q.proposal.valid_round == p.proposal.valid_round);
                let full = held.len() >= PROPOSALS_PER_ROUND_MAX || held.iter().any(|(_, qid)| *qid == id);
                if duplicate || (full && !self.proves_new_offence(p)) { Screen::Known } else { Screen::New }
            }
            Message::Vote(v) => match v.verify(&self.cfg.chain_id, set, self.cfg.backend) {
                Err(e) => Screen::Invalid(e),
                Ok(()) if self.votes.would_add(v) => Screen::New,
                Ok(()) => Screen::Known,
            },
        }
    }

    /// Whether a conflicting proposal (past the per-round bound) would still prove an offence
    /// not yet proved.
    fn proves_new_offence(&self, p: &SignedProposal) -> bool {
        let slot = (p.proposal.round, p.proposer, "double_proposal");
        !self.evidence_slots.contains(&slot) && self.evidence_room(p.proposer)
    }

    fn evidence_room(&self, validator: u8) -> bool {
        self.evidence_slots.iter().filter(|(_, v, _)| *v == validator).count() < EVIDENCE_PER_VALIDATOR_MAX
    }

    fn future_has_room(&self, message: &Message) -> bool {
        let held = self.future.get(&message.signer()).map_or(&[][..], Vec::as_slice);
        held.len() < FUTURE_PER_SIGNER_MAX && !held.iter().any(|(_, m)| m == message)
    }

    /// Handles one input; effects are appended to `out` in the order the host must execute them.
    pub fn handle(&mut self, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Start { height, validators } => self.start_height(height, validators, out),
            Input::Message { from, message } => self.on_message(from, message, out),
            Input::Timeout(t) => self.on_timeout(t, out),
            Input::Checked { height, value, valid, timely } => {
                if height == self.height {
                    if let Some(v) = self.validity.get_mut(&value) {
                        if *v == Validity::Pending {
                            *v = match (valid, timely) {
                                (false, _) => Validity::Invalid,
                                (true, true) => Validity::Valid,
                                (true, false) => Validity::Untimely,
                            };
                        }
                    }
                }
            }
            Input::Proposed { height, round, value } => self.on_proposed(height, round, value, out),
            Input::Resume { height, round, locked, valid } => self.resume(height, round, locked, valid, out),
        }
        self.progress(out);
    }

    /// Replays a write-ahead log of inputs (everything handled since the height's `Start`,
    /// in order) into a fresh core and returns the effects the host must execute now: the
    /// messages (sent again, identical bytes), one of each timer, evidence and a decision — but
    /// no `Build` or `Check` whose answer is already in the log, which would otherwise make the
    /// host build a second, different proposal for a round this validator already led.
    pub fn replay(&mut self, log: impl IntoIterator<Item = Input>) -> Vec<Effect> {
        let log: Vec<Input> = log.into_iter().collect();
        let mut out = Vec::new();
        for input in log.iter().cloned() {
            self.handle(input, &mut out);
        }
        let built: HashSet<(u64, u32)> = log
            .iter()
            .filter_map(|i| match i {
                Input::Proposed { height, round, .. } => Some((*height, *round)),
                _ => None,
            })
            .collect();
        let checked: HashSet<(u64, Hash)> = log
            .iter()
            .filter_map(|i| match i {
                Input::Checked { height, value, .. } => Some((*height, *value)),
                _ => None,
            })
            .collect();
        let mut timers = HashSet::new();
        let mut effects = Vec::with_capacity(out.len());
        // Newest first, so the last timer of each kind is the one kept.
        for e in out.into_iter().rev() {
            let keep = match &e {
                Effect::Build { height, round } => !built.contains(&(*height, *round)),
                // The log already holds them, after the `Start`.
                Effect::Redeliver(_) => false,
                Effect::Check { height, id, .. } => !checked.contains(&(*height, *id)),
                Effect::Schedule { timeout, .. } => {
                    let key = match timeout.kind {
                        TimeoutKind::Rebroadcast => (timeout.kind, 0, 0),
                        _ => (timeout.kind, timeout.height, timeout.round),
                    };
                    timeout.height == self.height && timers.insert(key)
                }
                _ => true,
            };
            if keep {
                effects.push(e);
            }
        }
        effects.reverse();
        effects
    }

    fn set(&self) -> Option<&ValidatorSet> {
        self.validators.as_ref()
    }

    fn quorum(&self, weight: u64) -> bool {
        self.set().is_some_and(|s| s.is_quorum(weight))
    }

    /// More than one third of the weight (the paper's `f+1`).
    fn one_third(&self, weight: u64) -> bool {
        self.set().is_some_and(|s| 3 * weight > s.total_weight())
    }

    /// Round-robin leader (DESIGN §4): the validator at `(height + round) mod n`.
    pub fn proposer(set: &ValidatorSet, height: u64, round: u32) -> u8 {
        let n = set.validators().len() as u64;
        ((height.wrapping_add(u64::from(round))) % n.max(1)) as u8
    }

    fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Effect>) {
        let timeout = Timeout { kind, height: self.height, round: self.round };
        out.push(Effect::Schedule { timeout, after_ms: self.cfg.timeouts.after(kind, self.round) });
    }

    fn start_height(&mut self, height: u64, validators: ValidatorSet, out: &mut Vec<Effect>) {
        if self.validators.is_some() && height <= self.height {
            return;
        }
        self.me = self
            .cfg
            .key
            .as_ref()
            .and_then(|k| validators.index_of(&k.public_key()))
            .and_then(|i| u8::try_from(i).ok());
        self.votes = VoteBook::new(&validators);
        self.validators = Some(validators);
        self.height = height;
        self.locked = None;
        self.valid = None;
        self.decided = false;
        self.proposals.clear();
        self.validity.clear();
        self.own.clear();
        self.hinted.clear();
        self.future_failures.clear();
        self.evidence_slots.clear();
        self.start_round(0, out);
        self.schedule(TimeoutKind::Rebroadcast, out);
        // Handed back rather than handled here, so that they enter the host's log of inputs
        // after this `Start`: a replay must see every input the state depends on.
        let future: Vec<(PeerId, Message)> = std::mem::take(&mut self.future)
            .into_values()
            .flatten()
            .filter(|(_, m)| m.height() == height)
            .collect();
        if !future.is_empty() {
            out.push(Effect::Redeliver(future));
        }
    }

    /// `StartRound(round)` (lines 11–21).
    fn start_round(&mut self, round: u32, out: &mut Vec<Effect>) {
        self.round = round;
        self.step = Step::Propose;
        self.prevote_timeout_set = false;
        self.precommit_timeout_set = false;
        self.polka_seen = false;
        self.propose_extended = false;
        self.building = None;
        self.stats.rounds_started += 1;
        let Some(set) = self.set() else { return };
        let leader = Self::proposer(set, self.height, round);
        if self.me == Some(leader) && !self.proposals.contains_key(&round) {
            // Lines 14–19: re-propose the valid value if there is one, else ask for a new one.
            let valid = self.valid.and_then(|(vr, id)| self.value_of(&id).map(|v| (vr, v.clone())));
            match valid {
                Some((vr, value)) => self.propose(round, Some(vr), value, out),
                None => {
                    self.building = Some(round);
                    out.push(Effect::Build { height: self.height, round });
                }
            }
        }
        // Line 21 (every validator, the leader too: if its host never builds, it moves on).
        self.schedule(TimeoutKind::Propose, out);
    }

    /// A proposal of the current round waits for the host's check.
    fn checking(&self) -> bool {
        self.proposals
            .get(&self.round)
            .is_some_and(|held| held.iter().any(|(_, id)| self.validity_of(id) == Validity::Pending))
    }

    fn value_of(&self, id: &Hash) -> Option<&Value> {
        self.proposals.values().flatten().find(|(_, pid)| pid == id).map(|(p, _)| &p.proposal.value)
    }

    fn on_proposed(&mut self, height: u64, round: u32, value: Value, out: &mut Vec<Effect>) {
        if height != self.height
            || round != self.round
            || self.building != Some(round)
            || self.decided
            || self.proposals.contains_key(&round)
        {
            return;
        }
        self.building = None;
        self.propose(round, None, value, out);
    }

    fn resume(
        &mut self,
        height: u64,
        round: u32,
        locked: Option<(u32, Hash)>,
        valid: Option<Box<Pol>>,
        out: &mut Vec<Effect>,
    ) {
        if height != self.height || self.validators.is_none() || self.decided || round <= self.round {
            return;
        }
        // Everything of the earlier rounds is forgotten but the lock and the valid value:
        // messages are lost (which the algorithm tolerates), the lock is kept (which its safety
        // needs), the valid value with its proof (which its liveness needs: a leader
        // re-proposes it, and the validators locked on it can prevote it again).
        self.proposals.clear();
        self.validity.clear();
        self.votes = VoteBook::with_weights(self.votes.weights().to_vec());
        self.own.clear();
        self.valid = None;
        self.locked = locked.or(self.locked);
        if let Some(pol) = valid {
            let vr = pol.proposal.proposal.round;
            let id = pol.proposal.proposal.value.id(&self.cfg.chain_id);
            if vr < round && pol.proposal.proposal.height == height {
                self.validity.insert(id, Validity::Valid);
                self.proposals.insert(vr, vec![(pol.proposal, id)]);
                for v in pol.prevotes {
                    if v.vote.round == vr && v.vote.value == Some(id) {
                        self.votes.add(v);
                    }
                }
                if self.quorum(self.votes.weight_for(VoteKind::Prevote, vr, Some(id))) {
                    self.valid = Some((vr, id));
                }
            }
        }
        self.start_round(round, out);
    }

    fn propose(&mut self, round: u32, valid_round: Option<u32>, value: Value, out: &mut Vec<Effect>) {
        let (Some(key), Some(me)) = (self.cfg.key.as_ref(), self.me) else { return };
        let proposal = Proposal { height: self.height, round, valid_round, value };
        let signed = proposal.sign(&self.cfg.chain_id, me, key);
        let id = signed.proposal.value.id(&self.cfg.chain_id);
        // The host built it on the committed state (or it gathered a quorum of prevotes).
        self.validity.insert(id, Validity::Valid);
        self.votes.mark_sender(round, me);
        self.proposals.insert(round, vec![(signed.clone(), id)]);
        let message = Message::Proposal(signed);
        self.own.entry(round).or_default().push(message.clone());
        out.push(Effect::Broadcast(message));
    }

    fn vote(&mut self, kind: VoteKind, value: Option<Hash>, out: &mut Vec<Effect>) {
        let (Some(key), Some(me)) = (self.cfg.key.as_ref(), self.me) else { return };
        let vote = Vote { kind, height: self.height, round: self.round, value };
        let signed = SignedVote::sign(vote, &self.cfg.chain_id, me, key);
        let added = self.votes.add(signed);
        // An honest core signs one vote per kind and round: a replay of the same inputs signs
        // the same bytes (RFC 6979), anything else is a bug that would be equivocation.
        assert!(!matches!(added, Added::Conflict(_)), "this validator would double-vote at {vote:?}");
        let message = Message::Vote(signed);
        self.own.entry(self.round).or_default().push(message.clone());
        out.push(Effect::Broadcast(message));
    }

    fn evidence(&mut self, proof: Equivocation, out: &mut Vec<Effect>) {
        let slot = (proof.round(), proof.offender(), proof.kind());
        if !self.evidence_slots.contains(&slot) && self.evidence_room(proof.offender()) {
            self.evidence_slots.insert(slot);
            self.stats.equivocations += 1;
            out.push(Effect::Evidence(proof));
        }
    }

    fn hint(&mut self, peer: PeerId, height: u64, out: &mut Vec<Effect>) {
        if self.hinted.len() < 4096 && self.hinted.insert((peer, height)) {
            if height < self.height {
                out.push(Effect::PeerBehind { peer, height });
            } else {
                out.push(Effect::PeerAhead { peer, height });
            }
        }
    }

    fn on_message(&mut self, from: PeerId, message: Message, out: &mut Vec<Effect>) {
        let height = message.height();
        let screen = self.screen(from, &message);
        if self.validators.is_none() {
            return;
        }
        if height != self.height {
            if screen == Screen::Future {
                self.future.entry(message.signer()).or_default().push((from, message));
            } else if height == self.height + 1
                && screen == Screen::OtherHeight
                && self.future_failures.len() < 4096
            {
                *self.future_failures.entry(from).or_default() += 1;
            }
            self.hint(from, height, out);
            return;
        }
        match screen {
            Screen::Invalid(_) => {
                self.stats.bad_messages += 1;
                return;
            }
            Screen::Known | Screen::Future | Screen::OtherHeight => return,
            Screen::New => {}
        }
        match message {
            Message::Proposal(p) => {
                // `screen` verified it (signature, proposer, ids against the signed root).
                let id = p.proposal.value.id(&self.cfg.chain_id);
                let round = p.proposal.round;
                let held = self.proposals.get(&round).map_or(&[][..], Vec::as_slice);
                let full = held.len() >= PROPOSALS_PER_ROUND_MAX || held.iter().any(|(_, qid)| *qid == id);
                if let Some((first, _)) = held.first() {
                    let proof = Equivocation::Proposals(Box::new(first.clone()), Box::new(p.clone()));
                    self.evidence(proof, out);
                    if full {
                        return;
                    }
                }
                self.votes.mark_sender(round, p.proposer);
                if let std::collections::hash_map::Entry::Vacant(e) = self.validity.entry(id) {
                    e.insert(Validity::Pending);
                    out.push(Effect::Check { height, id, value: p.proposal.value.clone(), from });
                }
                self.proposals.entry(round).or_default().push((p, id));
            }
            Message::Vote(v) => {
                if let Added::Conflict(first) = self.votes.add(v) {
                    self.evidence(Equivocation::Votes(Box::new(first), Box::new(v)), out);
                }
            }
        }
    }

    fn on_timeout(&mut self, t: Timeout, out: &mut Vec<Effect>) {
        if t.height != self.height || self.validators.is_none() {
            return;
        }
        match t.kind {
            TimeoutKind::Rebroadcast => {
                self.rebroadcast(out);
                self.hinted.clear();
                self.schedule(TimeoutKind::Rebroadcast, out);
            }
            _ if self.decided || t.round != self.round => {}
            // The proposal is here but its check still runs (bodies being fetched or verified):
            // wait once more rather than prevote nil on a value that is probably valid, which
            // costs a whole round when the quorum needs this validator. Once per round, so a
            // leader that names bodies nobody has delays its own round by one timeout at most.
            TimeoutKind::Propose
                if self.step == Step::Propose && !self.propose_extended && self.checking() =>
            {
                self.propose_extended = true;
                self.schedule(TimeoutKind::Propose, out);
            }
            // Line 57.
            TimeoutKind::Propose if self.step == Step::Propose => {
                self.vote(VoteKind::Prevote, None, out);
                self.step = Step::Prevote;
            }
            // Line 61.
            TimeoutKind::Prevote if self.step == Step::Prevote => {
                self.vote(VoteKind::Precommit, None, out);
                self.step = Step::Precommit;
            }
            // Line 65.
            TimeoutKind::Precommit => self.start_round(self.round + 1, out),
            _ => {}
        }
    }

    /// Stands in for the paper's gossip assumption: this validator's own messages of the height,
    /// the proposals of the current and valid rounds, and the prevotes that justify a
    /// re-proposal, sent again.
    fn rebroadcast(&self, out: &mut Vec<Effect>) {
        for m in self.own.values().flatten() {
            out.push(Effect::Broadcast(m.clone()));
        }
        let mut rounds = vec![self.round];
        rounds.extend(self.valid.map(|(r, _)| r));
        for r in rounds {
            for (p, id) in self.proposals.get(&r).into_iter().flatten() {
                if self.me != Some(p.proposer) {
                    out.push(Effect::Broadcast(Message::Proposal(p.clone())));
                }
                if let Some(vr) = p.proposal.valid_round {
                    for v in self.votes.all_votes(vr) {
                        if v.vote.kind == VoteKind::Prevote && v.vote.value == Some(*id) {
                            out.push(Effect::Broadcast(Message::Vote(*v)));
                        }
                    }
                }
            }
        }
    }

    fn validity_of(&self, id: &Hash) -> Validity {
        self.validity.get(id).copied().unwrap_or(Validity::Pending)
    }

    /// Applies every rule whose condition holds until none does.
    fn progress(&mut self, out: &mut Vec<Effect>) {
        if self.validators.is_none() {
            return;
        }
        // Each rule either changes the step, sets a once-per-round flag, raises the round or
        // decides, so the loop ends.
        while !self.decided {
            let fired = self.rule_decide(out)
                || self.rule_skip_round(out)
                || self.rule_proposal(out)
                || self.rule_prevote_any(out)
                || self.rule_polka(out)
                || self.rule_polka_nil(out)
                || self.rule_precommit_any(out);
            if !fired {
                break;
            }
        }
    }

    /// Line 49: a proposal of any round and a quorum of that round's precommits for it.
    fn rule_decide(&mut self, out: &mut Vec<Effect>) -> bool {
        let mut found = None;
        for (&round, (p, id)) in self.proposals.iter().flat_map(|(r, ps)| ps.iter().map(move |p| (r, p))) {
            if self.validity_of(id).is_valid()
                && self.quorum(self.votes.weight_for(VoteKind::Precommit, round, Some(*id)))
            {
                found = Some((round, p.proposal.value.clone(), *id));
                break;
            }
        }
        let Some((round, value, id)) = found else { return false };
        let mut certificate = Certificate::new(round);
        for (index, signature) in self.votes.precommit_signatures(round, id) {
            certificate.insert(index, signature);
        }
        self.decided = true;
        out.push(Effect::Decide(Decision { height: self.height, id, value, certificate }));
        true
    }

    /// Line 55: more than a third of the weight is in a later round: go there.
    fn rule_skip_round(&mut self, out: &mut Vec<Effect>) -> bool {
        let target =
            self.votes.rounds_above(self.round).find(|&r| self.one_third(self.votes.sender_weight(r)));
        match target {
            Some(r) => {
                self.start_round(r, out);
                true
            }
            None => false,
        }
    }

    /// Lines 22 and 28: the round's proposal, while in the propose step.
    fn rule_proposal(&mut self, out: &mut Vec<Effect>) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some((p, id)) = self.proposals.get(&self.round).and_then(|ps| ps.first()) else { return false };
        let id = *id;
        let prevote = match p.proposal.valid_round {
            // Line 22: a fresh value; prevote it if valid and not locked on another.
            None => match self.validity_of(&id) {
                Validity::Pending => return false,
                Validity::Invalid | Validity::Untimely => None,
                Validity::Valid => self.locked.is_none_or(|(_, lv)| lv == id).then_some(id),
            },
            // Line 28: a re-proposal backed by a quorum of prevotes in round vr < round.
            Some(vr) if vr < self.round => {
                if !self.quorum(self.votes.weight_for(VoteKind::Prevote, vr, Some(id))) {
                    return false;
                }
                match self.validity_of(&id) {
                    Validity::Pending => return false,
                    Validity::Invalid => None,
                    Validity::Valid | Validity::Untimely => {
                        self.locked.is_none_or(|(lr, lv)| lr <= vr || lv == id).then_some(id)
                    }
                }
            }
            // A valid round at or above the round: not a proposal an honest leader makes.
            Some(_) => return false,
        };
        self.vote(VoteKind::Prevote, prevote, out);
        self.step = Step::Prevote;
        true
    }

    /// Line 34: a quorum of prevotes of any kind: start the prevote timer.
    fn rule_prevote_any(&mut self, out: &mut Vec<Effect>) -> bool {
        if self.step != Step::Prevote
            || self.prevote_timeout_set
            || !self.quorum(self.votes.total(VoteKind::Prevote, self.round))
        {
            return false;
        }
        self.prevote_timeout_set = true;
        self.schedule(TimeoutKind::Prevote, out);
        true
    }

    /// Line 36: the round's proposal with a quorum of prevotes: lock (if still prevoting) and
    /// remember it as the valid value.
    fn rule_polka(&mut self, out: &mut Vec<Effect>) -> bool {
        if self.polka_seen || self.step < Step::Prevote {
            return false;
        }
        let round = self.round;
        let polka = self.proposals.get(&round).into_iter().flatten().map(|(_, id)| *id).find(|id| {
            self.validity_of(id).is_valid()
                && self.quorum(self.votes.weight_for(VoteKind::Prevote, round, Some(*id)))
        });
        let Some(id) = polka else { return false };
        self.polka_seen = true;
        if self.step == Step::Prevote {
            self.locked = Some((self.round, id));
            self.vote(VoteKind::Precommit, Some(id), out);
            self.step = Step::Precommit;
        }
        self.valid = Some((self.round, id));
        true
    }

    /// Line 44: a quorum of nil prevotes.
    fn rule_polka_nil(&mut self, out: &mut Vec<Effect>) -> bool {
        if self.step != Step::Prevote
            || !self.quorum(self.votes.weight_for(VoteKind::Prevote, self.round, None))
        {
            return false;
        }
        self.vote(VoteKind::Precommit, None, out);
        self.step = Step::Precommit;
        true
    }

    /// Line 47: a quorum of precommits of any kind: start the precommit timer.
    fn rule_precommit_any(&mut self, out: &mut Vec<Effect>) -> bool {
        if self.precommit_timeout_set || !self.quorum(self.votes.total(VoteKind::Precommit, self.round)) {
            return false;
        }
        self.precommit_timeout_set = true;
        self.schedule(TimeoutKind::Precommit, out);
        true
    }
}

#[cfg(test)]
mod tests {
    use engine::{
        Hash,
        ledger::{LEDGER_VERSION, LedgerHeader, Validator},
        merkle::tx_root,
    };

    use super::*;

    const CHAIN: &str = "core-test";

    fn keys(n: usize) -> (ValidatorSet, Vec<SecretKey>) {
        let mut keys: Vec<SecretKey> =
            (1..=n as u8).map(|i| SecretKey::from_bytes(&[i; 32]).unwrap()).collect();
        keys.sort_by_key(SecretKey::public_key);
        let set = ValidatorSet::new(
            keys.iter().map(|k| Validator { public_key: k.public_key(), weight: 1 }).collect(),
        )
        .unwrap();
        (set, keys)
    }

    fn core(key: &SecretKey) -> Core {
        Core::new(Config {
            chain_id: CHAIN.into(),
            key: Some(key.clone()),
            backend: Backend::Libsecp256k1,
            timeouts: Timeouts::for_interval(1000),
        })
    }

    fn value(height: u64, tag: u8) -> Value {
        let header = LedgerHeader {
            version: LEDGER_VERSION,
            height,
            timestamp_ms: i64::from(tag),
            previous: Hash::ZERO,
            tx_root: tx_root(&[]),
            state_root: Hash([tag; 32]),
            validator_set_hash: Hash::ZERO,
        };
        Value { header, tx_ids: vec![] }
    }

    /// Delivers every broadcast to every core at once, answers checks "valid" and builds
    /// `value(height, 1)`, until nothing is left; returns the decisions.
    fn run(cores: &mut [Core], mut pending: Vec<(usize, Effect)>) -> Vec<(usize, Decision)> {
        let mut decisions = Vec::new();
        while let Some((i, e)) = pending.pop() {
            let mut inputs = Vec::new();
            match e {
                Effect::Broadcast(m) => {
                    for (j, c) in cores.iter_mut().enumerate() {
                        if j != i {
                            let mut out = Vec::new();
                            c.handle(Input::Message { from: i as PeerId, message: m.clone() }, &mut out);
                            pending.extend(out.into_iter().map(|e| (j, e)));
                        }
                    }
                }
                Effect::Check { height, id, .. } => {
                    inputs.push(Input::Checked { height, value: id, valid: true, timely: true })
                }
                Effect::Build { height, round } => {
                    inputs.push(Input::Proposed { height, round, value: value(height, 1) })
                }
                Effect::Decide(d) => decisions.push((i, d)),
                _ => {}
            }
            for input in inputs {
                let mut out = Vec::new();
                cores[i].handle(input, &mut out);
                pending.extend(out.into_iter().map(|e| (i, e)));
            }
        }
        decisions
    }

    #[test]
    fn four_validators_decide_in_round_zero_with_a_certificate() {
        let (set, keys) = keys(4);
        let mut cores: Vec<Core> = keys.iter().map(core).collect();
        let mut pending = Vec::new();
        for (i, c) in cores.iter_mut().enumerate() {
            let mut out = Vec::new();
            c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
            pending.extend(out.into_iter().map(|e| (i, e)));
        }
        let decisions = run(&mut cores, pending);
        assert_eq!(decisions.len(), 4);
        for (_, d) in &decisions {
            assert_eq!(d.id, value(1, 1).id(CHAIN));
            assert_eq!(d.certificate.round, 0);
            d.certificate.verify(&set, CHAIN, 1, &d.id, Backend::K256).unwrap();
        }
    }

    fn prevote(keys: &[SecretKey], i: usize, round: u32, value: Option<Hash>) -> Input {
        let vote = Vote { kind: VoteKind::Prevote, height: 1, round, value };
        Input::Message { from: 9, message: Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, &keys[i])) }
    }

    fn proposal(keys: &[SecretKey], set: &ValidatorSet, round: u32, vr: Option<u32>, v: Value) -> Input {
        let leader = Core::proposer(set, 1, round);
        let p = Proposal { height: 1, round, valid_round: vr, value: v }.sign(
            CHAIN,
            leader,
            &keys[usize::from(leader)],
        );
        Input::Message { from: 9, message: Message::Proposal(p) }
    }

    fn my_votes(out: &[Effect]) -> Vec<Vote> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Broadcast(Message::Vote(v)) => Some(v.vote),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_proposal_wait_is_extended_once_while_its_check_runs() {
        let (set, keys) = keys(4);
        let propose = |round| Input::Timeout(Timeout { kind: TimeoutKind::Propose, height: 1, round });
        let prevotes = |out: &[Effect]| -> Vec<Option<Hash>> {
            my_votes(out).iter().filter(|v| v.kind == VoteKind::Prevote).map(|v| v.value).collect()
        };
        // Validator 0 leads neither round 0 nor round 1.
        let start = |c: &mut Core, out: &mut Vec<Effect>| {
            c.handle(Input::Start { height: 1, validators: set.clone() }, out);
        };
        let v = value(1, 7);
        let id = v.id(CHAIN);

        // No proposal at all: the timeout prevotes nil at once (line 57).
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        start(&mut c, &mut out);
        c.handle(propose(0), &mut out);
        assert_eq!(prevotes(&out), vec![None]);

        // A proposal whose check has not answered: the wait is extended (a new propose timer
        // of the same round), and the answer, arriving in the extension, is prevoted.
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        start(&mut c, &mut out);
        c.handle(proposal(&keys, &set, 0, None, v.clone()), &mut out);
        out.clear();
        c.handle(propose(0), &mut out);
        assert!(prevotes(&out).is_empty());
        assert!(out.iter().any(|e| matches!(e, Effect::Schedule { timeout, .. } if *timeout == Timeout { kind: TimeoutKind::Propose, height: 1, round: 0 })));
        c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
        assert_eq!(prevotes(&out), vec![Some(id)]);

        // Only once per round: a check that never answers ends in a nil prevote.
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        start(&mut c, &mut out);
        c.handle(proposal(&keys, &set, 0, None, v.clone()), &mut out);
        c.handle(propose(0), &mut out);
        c.handle(propose(0), &mut out);
        assert_eq!(prevotes(&out), vec![None]);

        // A check that already answered "invalid" is not waited for.
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        start(&mut c, &mut out);
        c.handle(proposal(&keys, &set, 0, None, v), &mut out);
        c.handle(Input::Checked { height: 1, value: id, valid: false, timely: true }, &mut out);
        assert_eq!(prevotes(&out), vec![None], "an invalid proposal is prevoted nil at once (line 26)");
        out.clear();
        c.handle(propose(0), &mut out);
        assert!(!out.iter().any(|e| matches!(e, Effect::Schedule { .. })));
    }

    /// A relayed copy of the round's proposal with its ids altered (the signature still holds: it
    /// covers the ledger hash) must not shadow the genuine proposal arriving after it. Before the
    /// ids were checked against the header's root on arrival, the copy was held, its value judged
    /// invalid by id, the genuine one dropped as a duplicate, and this validator prevoted nil.
    #[test]
    fn a_tampered_copy_of_a_proposal_does_not_shadow_the_genuine_one() {
        let (set, keys) = keys(4);
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        let mut v = value(1, 7);
        v.tx_ids = vec![Hash([5; 32]), Hash([6; 32])];
        v.header.tx_root = tx_root(&v.tx_ids);
        let id = v.id(CHAIN);
        let Input::Message { message: Message::Proposal(genuine), .. } = proposal(&keys, &set, 0, None, v)
        else {
            unreachable!()
        };
        for tamper in [
            |p: &mut SignedProposal| p.proposal.value.tx_ids.reverse(),
            |p: &mut SignedProposal| {
                p.proposal.value.tx_ids.pop();
            },
            |p: &mut SignedProposal| p.proposal.value.tx_ids.push(Hash([9; 32])),
        ] {
            let mut copy = genuine.clone();
            tamper(&mut copy);
            c.handle(Input::Message { from: 3, message: Message::Proposal(copy) }, &mut out);
        }
        assert_eq!(c.stats().bad_messages, 3, "each altered copy is a bad message");
        assert!(!out.iter().any(|e| matches!(e, Effect::Check { .. })));
        out.clear();
        c.handle(Input::Message { from: 2, message: Message::Proposal(genuine) }, &mut out);
        assert!(
            out.iter().any(|e| matches!(e, Effect::Check { id: checked, from: 2, .. } if *checked == id))
        );
        c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
        assert_eq!(
            my_votes(&out),
            vec![Vote { kind: VoteKind::Prevote, height: 1, round: 0, value: Some(id) }]
        );
    }

    /// What a host logs is what changes the core: a repeated, far-ahead or over-bound message is
    /// `Known`, a forged one `Invalid` (its relay is at fault), the next height's is kept per
    /// signer up to a bound, and each offender yields a bounded number of proofs per height.
    #[test]
    fn screening_says_what_changes_the_core_and_bounds_what_one_signer_makes_it_hold() {
        let (set, keys) = keys(4);
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        let msg = |input: Input| match input {
            Input::Message { message, .. } => message,
            _ => unreachable!(),
        };
        let v = msg(prevote(&keys, 2, 0, None));
        assert_eq!(c.screen(9, &v), Screen::New);
        c.handle(Input::Message { from: 9, message: v.clone() }, &mut out);
        assert_eq!(c.screen(9, &v), Screen::Known, "a vote held");
        let Message::Vote(mut forged) = v else { unreachable!() };
        forged.vote.value = Some(Hash([3; 32]));
        assert_eq!(c.screen(9, &Message::Vote(forged)), Screen::Invalid(MessageError::BadSignature));
        let far = msg(proposal(&keys, &set, 2, None, value(1, 4)));
        assert_eq!(c.screen(9, &far), Screen::Known, "a proposal two rounds ahead is not kept");
        assert_eq!(c.screen(9, &msg(proposal(&keys, &set, 1, None, value(1, 4)))), Screen::New);
        let mut wrong_leader = msg(proposal(&keys, &set, 0, None, value(1, 4)));
        if let Message::Proposal(p) = &mut wrong_leader {
            p.proposer = (p.proposer + 1) % 4;
        }
        assert_eq!(c.screen(9, &wrong_leader), Screen::Invalid(MessageError::NotTheProposer));
        c.handle(Input::Message { from: 9, message: wrong_leader }, &mut out);
        assert_eq!(c.stats().bad_messages, 1);
        assert_eq!(c.screen(9, &msg(prevote(&keys, 2, 0, None))), Screen::Known);

        // The next height: kept per signer, up to the bound, each distinct message once.
        let next = |i: usize, round: u32| {
            let vote = Vote { kind: VoteKind::Prevote, height: 2, round, value: None };
            Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, &keys[i]))
        };
        for round in 0..FUTURE_PER_SIGNER_MAX as u32 {
            assert_eq!(c.screen(5, &next(3, round)), Screen::Future);
            c.handle(Input::Message { from: 5, message: next(3, round) }, &mut out);
            assert_eq!(c.screen(5, &next(3, round)), Screen::Known);
        }
        assert_eq!(c.screen(5, &next(3, 99)), Screen::Known, "signer 3 is at its bound");
        assert_eq!(c.screen(5, &next(1, 99)), Screen::Future, "other signers are not crowded out");
        // Next-height junk costs a bounded number of verifications per peer.
        let Message::Vote(mut junk) = next(1, 0) else { unreachable!() };
        junk.signature.0[3] ^= 1;
        for _ in 0..FUTURE_FAILURES_PER_PEER_MAX {
            c.handle(Input::Message { from: 6, message: Message::Vote(junk) }, &mut out);
        }
        assert_eq!(c.screen(6, &next(1, 0)), Screen::Known, "peer 6 is no longer heard on height 2");
        assert_eq!(c.screen(5, &next(1, 0)), Screen::Future);
        c.handle(Input::Message { from: 5, message: next(1, 0) }, &mut out);

        // An equivocating voter: proofs up to the bound per height.
        out.clear();
        for round in 0..10 {
            c.handle(prevote(&keys, 1, round, None), &mut out);
            c.handle(prevote(&keys, 1, round, Some(Hash([round as u8; 32]))), &mut out);
        }
        let proofs = out.iter().filter(|e| matches!(e, Effect::Evidence(_))).count();
        assert_eq!(proofs, EVIDENCE_PER_VALIDATOR_MAX);
        // A new height proves again.
        let mut redelivered = Vec::new();
        c.handle(Input::Start { height: 2, validators: set }, &mut out);
        for e in &out {
            if let Effect::Redeliver(m) = e {
                redelivered.extend(m.iter().cloned());
            }
        }
        assert_eq!(redelivered.len(), FUTURE_PER_SIGNER_MAX + 1, "signer 3's bound, and signer 1's one");
    }

    /// `Resume` (what a host logs to compact its log, or after a restart without one) goes to
    /// the round with the lock kept and everything else forgotten: the validator still refuses
    /// another fresh value and signs no second vote of a round it already voted in.
    #[test]
    fn a_resumed_core_keeps_its_lock_and_starts_over_at_the_round() {
        let (set, keys) = keys(4);
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        let v = value(1, 7);
        let id = v.id(CHAIN);
        c.handle(proposal(&keys, &set, 0, None, v), &mut out);
        c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
        for i in 1..3 {
            c.handle(prevote(&keys, i, 0, Some(id)), &mut out);
        }
        assert_eq!(c.locked(), Some((0, id)));
        // A fresh core resumed from the persisted lock, as after a restart without the log.
        let mut fresh = core(&keys[0]);
        let mut out = Vec::new();
        fresh.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        fresh.handle(Input::Resume { height: 1, round: 1, locked: Some((0, id)), valid: None }, &mut out);
        assert_eq!((fresh.round(), fresh.locked()), (1, Some((0, id))));
        // Earlier rounds are not resumed to.
        fresh.handle(Input::Resume { height: 1, round: 1, locked: None, valid: None }, &mut out);
        assert_eq!(fresh.locked(), Some((0, id)));
        out.clear();
        let w = value(1, 8);
        fresh.handle(proposal(&keys, &set, 1, None, w.clone()), &mut out);
        fresh.handle(Input::Checked { height: 1, value: w.id(CHAIN), valid: true, timely: true }, &mut out);
        assert_eq!(my_votes(&out), vec![Vote { kind: VoteKind::Prevote, height: 1, round: 1, value: None }]);
        // The live core resumed with its proof of lock keeps its valid value, and so
        // re-proposes it when it leads (validator 0 leads round 3 of height 1).
        assert_eq!(c.valid(), Some((0, id)));
        let pol = c.pol().map(Box::new);
        assert_eq!(pol.as_ref().map(|p| p.prevotes.len()), Some(3));
        c.handle(Input::Resume { height: 1, round: 3, locked: c.locked(), valid: pol }, &mut out);
        assert_eq!((c.round(), c.locked(), c.valid()), (3, Some((0, id)), Some((0, id))));
        let reproposed = out.iter().any(|e| {
            matches!(e, Effect::Broadcast(Message::Proposal(p)) if p.proposal.round == 3 && p.proposal.valid_round == Some(0) && p.proposal.value.id(CHAIN) == id)
        });
        assert!(reproposed, "the leader re-proposes its valid value after a resume");
    }

    #[test]
    fn a_locked_validator_prevotes_nil_on_another_fresh_value_and_its_value_with_a_quorum() {
        let (set, keys) = keys(4);
        // Validator 3 leads no round used here (leaders of height 1: rounds 0, 1, 2 → 1, 2, 3).
        let me = 0;
        let mut c = core(&keys[me]);
        let mut out = Vec::new();
        c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        let v = value(1, 7);
        let id = v.id(CHAIN);
        c.handle(proposal(&keys, &set, 0, None, v.clone()), &mut out);
        c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
        for i in 1..3 {
            c.handle(prevote(&keys, i, 0, Some(id)), &mut out);
        }
        // Prevoted v, then locked on it and precommitted it.
        let votes = my_votes(&out);
        assert_eq!(
            votes.iter().map(|v| (v.kind, v.value)).collect::<Vec<_>>(),
            vec![(VoteKind::Prevote, Some(id)), (VoteKind::Precommit, Some(id))]
        );
        // No decision: round 1 after the precommit timeout (a quorum of nil precommits).
        for (i, k) in keys.iter().enumerate().take(3).skip(1) {
            let vote = Vote { kind: VoteKind::Precommit, height: 1, round: 0, value: None };
            let m = Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, k));
            c.handle(Input::Message { from: 9, message: m }, &mut out);
        }
        c.handle(Input::Timeout(Timeout { kind: TimeoutKind::Precommit, height: 1, round: 0 }), &mut out);
        assert_eq!(c.round(), 1);
        out.clear();
        let w = value(1, 8);
        c.handle(proposal(&keys, &set, 1, None, w.clone()), &mut out);
        c.handle(Input::Checked { height: 1, value: w.id(CHAIN), valid: true, timely: true }, &mut out);
        assert_eq!(my_votes(&out), vec![Vote { kind: VoteKind::Prevote, height: 1, round: 1, value: None }]);
        // Round 2: v re-proposed with its round-0 quorum: prevoted.
        for (i, k) in keys.iter().enumerate().skip(1) {
            let vote = Vote { kind: VoteKind::Precommit, height: 1, round: 1, value: None };
            let m = Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, k));
            c.handle(Input::Message { from: 9, message: m }, &mut out);
        }
        c.handle(Input::Timeout(Timeout { kind: TimeoutKind::Precommit, height: 1, round: 1 }), &mut out);
        out.clear();
        c.handle(proposal(&keys, &set, 2, Some(0), v), &mut out);
        assert_eq!(
            my_votes(&out),
            vec![Vote { kind: VoteKind::Prevote, height: 1, round: 2, value: Some(id) }]
        );
    }

    #[test]
    fn a_replay_signs_the_same_bytes_and_does_not_build_again() {
        let (set, keys) = keys(4);
        // Height 1, round 0: the leader is validator 1.
        let leader = usize::from(Core::proposer(&set, 1, 0));
        let mut c = core(&keys[leader]);
        let mut log = Vec::new();
        let mut out = Vec::new();
        for input in [
            Input::Start { height: 1, validators: set },
            Input::Proposed { height: 1, round: 0, value: value(1, 3) },
        ] {
            log.push(input.clone());
            c.handle(input, &mut out);
        }
        let sent: Vec<Message> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Broadcast(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 2, "the proposal and the leader's prevote");
        let mut again = core(&keys[leader]);
        let effects = again.replay(log);
        assert!(!effects.iter().any(|e| matches!(e, Effect::Build { .. })));
        let resent: Vec<Message> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Broadcast(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(resent, sent);
    }

    #[test]
    fn a_double_vote_yields_one_proof_and_both_votes_count() {
        let (set, keys) = keys(4);
        let mut c = core(&keys[0]);
        let mut out = Vec::new();
        c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        out.clear();
        let a = Some(Hash([1; 32]));
        c.handle(prevote(&keys, 3, 0, a), &mut out);
        c.handle(prevote(&keys, 3, 0, None), &mut out);
        c.handle(prevote(&keys, 3, 0, None), &mut out);
        let proofs: Vec<&Equivocation> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Evidence(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].check(CHAIN, &set, Backend::K256), Ok(set.validators()[3].public_key));
        assert_eq!(c.stats().equivocations, 1);
        assert_eq!(c.votes.weight_for(VoteKind::Prevote, 0, a), 1);
        assert_eq!(c.votes.weight_for(VoteKind::Prevote, 0, None), 1);
        assert_eq!(c.votes.total(VoteKind::Prevote, 0), 1);
    }
}
