//! Peers' messages: screening them ([`Screen`]: what a host logs), holding the next height's
//! until it starts, recording proposals and votes of the height, proving equivocation, and
//! hinting at peers behind or ahead.

use super::{
    Core, EVIDENCE_PER_VALIDATOR_MAX, Effect, FUTURE_FAILURES_PER_PEER_MAX, FUTURE_PER_SIGNER_MAX,
    PROPOSAL_ROUNDS_AHEAD, PROPOSALS_PER_ROUND_MAX, PeerId, ROUND_WINDOW, Validity,
};
use crate::{
    evidence::Equivocation,
    message::{Message, MessageError, SignedProposal},
    votes::Added,
};

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

impl Core {
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

    pub(super) fn on_message(&mut self, from: PeerId, message: Message, out: &mut Vec<Effect>) {
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
}
