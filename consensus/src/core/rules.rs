//! The algorithm's upon-rules (lines 22–55), applied until none fires.

use engine::ledger::{Certificate, VoteKind};

use super::{Core, Decision, Effect, Step, TimeoutKind, Validity};

impl Core {
    /// Applies every rule whose condition holds until none does.
    pub(super) fn progress(&mut self, out: &mut Vec<Effect>) {
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
