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
//!
//! The core is cut by concern: `host` holds what the host and the core exchange (inputs, effects),
//! `messages` screens and records peers' messages (with the evidence and hints they give),
//! `round` starts heights and rounds and signs this validator's proposals and votes, `rules` are
//! the algorithm's upon-rules, and `timeouts` its timers and the re-broadcast.

use std::collections::{BTreeMap, HashMap, HashSet};

use engine::{
    Backend, Hash, SecretKey,
    ledger::{ValidatorSet, VoteKind},
};

use crate::{
    message::{Message, SignedProposal, SignedVote},
    votes::VoteBook,
};

mod host;
mod messages;
mod round;
mod rules;
mod timeouts;

pub use self::{
    host::{Decision, Effect, Input, Pol},
    messages::Screen,
    timeouts::{Timeout, TimeoutKind, Timeouts},
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

    fn validity_of(&self, id: &Hash) -> Validity {
        self.validity.get(id).copied().unwrap_or(Validity::Pending)
    }
}

#[cfg(test)]
mod tests;
