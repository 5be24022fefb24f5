//! The votes of one height, by round: weights per value for the quorum rules, the signatures for
//! certificates, and detection of double votes.

use std::collections::BTreeMap;

use engine::{
    Hash, Signature,
    ledger::{ValidatorSet, VoteKind},
};

use crate::message::SignedVote;

/// What adding a vote did.
#[derive(Debug)]
pub(crate) enum Added {
    /// A vote not seen before.
    New,
    /// The same vote again.
    Duplicate,
    /// A different vote of the same voter, kind and round: the first one is returned.
    Conflict(SignedVote),
}

/// Distinct values counted per validator, phase and round. An honest validator votes once; an
/// equivocator's conflicting votes are counted too (each for its own value), as CometBFT does
/// for a value a peer claims has a quorum: otherwise honest validators that saw the
/// equivocator's votes in different orders count different quorums for ever, and a lock on a
/// value whose quorum one of them cannot see stalls the height. Counting both is safe: two
/// quorums for different values still need an honest validator to vote twice.
const VALUES_PER_VOTER_MAX: usize = 8;

#[derive(Debug, Default)]
struct Phase {
    /// Per validator index: its votes, first one first.
    votes: Vec<Vec<SignedVote>>,
    /// Weight per value (`None` = nil); at most one entry per distinct value seen.
    by_value: Vec<(Option<Hash>, u64)>,
    /// Weight of every voter of this phase.
    total: u64,
}

impl Phase {
    fn new(n: usize) -> Self {
        Self { votes: vec![Vec::new(); n], by_value: Vec::new(), total: 0 }
    }

    fn weight_for(&self, value: Option<Hash>) -> u64 {
        self.by_value.iter().find(|(v, _)| *v == value).map_or(0, |(_, w)| *w)
    }
}

#[derive(Debug)]
struct RoundVotes {
    prevotes: Phase,
    precommits: Phase,
    /// Validators from which any message of this round arrived (Tendermint line 55).
    senders: Vec<bool>,
    sender_weight: u64,
}

impl RoundVotes {
    fn new(n: usize) -> Self {
        Self { prevotes: Phase::new(n), precommits: Phase::new(n), senders: vec![false; n], sender_weight: 0 }
    }

    const fn phase(&self, kind: VoteKind) -> &Phase {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }
}

/// The votes of one height. Callers check signatures and indices before adding.
#[derive(Debug)]
pub(crate) struct VoteBook {
    weights: Vec<u64>,
    rounds: BTreeMap<u32, RoundVotes>,
}

impl VoteBook {
    /// A book for no validator (before the first height starts).
    pub(crate) const fn empty() -> Self {
        Self { weights: Vec::new(), rounds: BTreeMap::new() }
    }

    pub(crate) fn new(set: &ValidatorSet) -> Self {
        Self::with_weights(set.validators().iter().map(|v| v.weight).collect())
    }

    /// An empty book for validators of these weights (by index).
    pub(crate) const fn with_weights(weights: Vec<u64>) -> Self {
        Self { weights, rounds: BTreeMap::new() }
    }

    /// The weights by validator index.
    pub(crate) fn weights(&self) -> &[u64] {
        &self.weights
    }

    /// Whether [`VoteBook::add`] would record `v` (a vote not held, within the bound of values
    /// per voter).
    pub(crate) fn would_add(&self, v: &SignedVote) -> bool {
        let i = usize::from(v.validator);
        if i >= self.weights.len() {
            return false;
        }
        let Some(r) = self.rounds.get(&v.vote.round) else { return true };
        let Some(mine) = r.phase(v.vote.kind).votes.get(i) else { return false };
        !mine.iter().any(|m| m.vote.value == v.vote.value) && mine.len() < VALUES_PER_VOTER_MAX
    }

    fn round_mut(&mut self, round: u32) -> &mut RoundVotes {
        let n = self.weights.len();
        self.rounds.entry(round).or_insert_with(|| RoundVotes::new(n))
    }

    /// Records that `validator` sent something in `round`.
    pub(crate) fn mark_sender(&mut self, round: u32, validator: u8) {
        let i = usize::from(validator);
        let Some(&w) = self.weights.get(i) else { return };
        let r = self.round_mut(round);
        if let Some(seen) = r.senders.get_mut(i) {
            if !*seen {
                *seen = true;
                r.sender_weight += w;
            }
        }
    }

    /// Adds a verified vote.
    pub(crate) fn add(&mut self, v: SignedVote) -> Added {
        let i = usize::from(v.validator);
        let Some(&w) = self.weights.get(i) else { return Added::Duplicate };
        self.mark_sender(v.vote.round, v.validator);
        let r = self.round_mut(v.vote.round);
        let phase = match v.vote.kind {
            VoteKind::Prevote => &mut r.prevotes,
            VoteKind::Precommit => &mut r.precommits,
        };
        let Some(mine) = phase.votes.get_mut(i) else { return Added::Duplicate };
        if mine.iter().any(|m| m.vote.value == v.vote.value) {
            return Added::Duplicate;
        }
        let first = mine.first().copied();
        if mine.len() >= VALUES_PER_VOTER_MAX {
            return first.map_or(Added::Duplicate, Added::Conflict);
        }
        mine.push(v);
        if first.is_none() {
            phase.total += w;
        }
        match phase.by_value.iter_mut().find(|(value, _)| *value == v.vote.value) {
            Some((_, sum)) => *sum += w,
            None => phase.by_value.push((v.vote.value, w)),
        }
        first.map_or(Added::New, Added::Conflict)
    }

    /// Weight of the votes of `kind` in `round` for `value` (`None` = nil).
    pub(crate) fn weight_for(&self, kind: VoteKind, round: u32, value: Option<Hash>) -> u64 {
        self.rounds.get(&round).map_or(0, |r| r.phase(kind).weight_for(value))
    }

    /// Weight of every vote of `kind` in `round`, whatever its value.
    pub(crate) fn total(&self, kind: VoteKind, round: u32) -> u64 {
        self.rounds.get(&round).map_or(0, |r| r.phase(kind).total)
    }

    /// Weight of the validators that sent anything in `round`.
    pub(crate) fn sender_weight(&self, round: u32) -> u64 {
        self.rounds.get(&round).map_or(0, |r| r.sender_weight)
    }

    /// Rounds above `round` with any message, highest first.
    pub(crate) fn rounds_above(&self, round: u32) -> impl Iterator<Item = u32> + '_ {
        self.rounds.range(round.saturating_add(1)..).rev().map(|(r, _)| *r)
    }

    /// The signatures of the precommits for `value` in `round`, by validator index.
    pub(crate) fn precommit_signatures(&self, round: u32, value: Hash) -> Vec<(u8, Signature)> {
        let Some(r) = self.rounds.get(&round) else { return Vec::new() };
        r.precommits
            .votes
            .iter()
            .flatten()
            .filter(|v| v.vote.value == Some(value))
            .map(|v| (v.validator, v.signature))
            .collect()
    }

    /// Every vote held, for re-broadcast to peers that missed them.
    pub(crate) fn all_votes(&self, round: u32) -> impl Iterator<Item = &SignedVote> {
        self.rounds
            .get(&round)
            .into_iter()
            .flat_map(|r| r.prevotes.votes.iter().chain(r.precommits.votes.iter()).flatten())
    }
}
