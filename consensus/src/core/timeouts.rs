//! Timers: their durations ([`Timeouts`]), what each is for ([`Timeout`]), scheduling them,
//! the rules they wake (lines 57, 61 and 65), and the periodic re-broadcast that stands in for
//! the paper's gossip.

use engine::ledger::VoteKind;

use super::{Core, Effect, Step, Validity};
use crate::message::Message;

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

impl Core {
    pub(super) fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Effect>) {
        let timeout = Timeout { kind, height: self.height, round: self.round };
        out.push(Effect::Schedule { timeout, after_ms: self.cfg.timeouts.after(kind, self.round) });
    }

    /// A proposal of the current round waits for the host's check.
    fn checking(&self) -> bool {
        self.proposals
            .get(&self.round)
            .is_some_and(|held| held.iter().any(|(_, id)| self.validity_of(id) == Validity::Pending))
    }

    pub(super) fn on_timeout(&mut self, t: Timeout, out: &mut Vec<Effect>) {
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
}
