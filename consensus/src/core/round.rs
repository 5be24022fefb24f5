//! Heights and rounds: starting a height (`Start`) and a round (`StartRound`, lines 11–21),
//! resuming from a compacted log, and this validator's own proposals and votes.

use engine::{
    Hash,
    ledger::{ValidatorSet, Vote, VoteKind},
};

use super::{Core, Effect, PeerId, Pol, Step, TimeoutKind, Validity};
use crate::{
    message::{Message, Proposal, SignedVote, Value},
    votes::{Added, VoteBook},
};

impl Core {
    pub(super) fn start_height(&mut self, height: u64, validators: ValidatorSet, out: &mut Vec<Effect>) {
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
    pub(super) fn start_round(&mut self, round: u32, out: &mut Vec<Effect>) {
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

    fn value_of(&self, id: &Hash) -> Option<&Value> {
        self.proposals.values().flatten().find(|(_, pid)| pid == id).map(|(p, _)| &p.proposal.value)
    }

    pub(super) fn on_proposed(&mut self, height: u64, round: u32, value: Value, out: &mut Vec<Effect>) {
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

    pub(super) fn resume(
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

    pub(super) fn vote(&mut self, kind: VoteKind, value: Option<Hash>, out: &mut Vec<Effect>) {
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
}
