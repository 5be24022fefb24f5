//! Proofs of equivocation: two conflicting messages signed by one validator for the same height
//! and round. The consortium acts on misbehaviour off-chain, so the proof must stand alone: it
//! is checked by [`Equivocation::check`] with nothing but the validator set of that height.
//!
//! ```text
//! Equivocation = tag u8 (0 proposals, 1 votes) | first | second
//!   proposals: two SignedProposal of one proposer, same height and round, different values
//!              (or different valid rounds)
//!   votes:     two SignedVote of one voter, same kind, height and round, different values
//! ```

use engine::{
    Backend, CodecError, Decode, Encode, Hash, PublicKey,
    codec::Reader,
    ledger::{ValidatorSet, VoteKind},
};

use crate::message::{MessageError, SignedProposal, SignedVote};

/// Two conflicting signed messages of one validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Equivocation {
    /// Two different proposals for one height and round.
    Proposals(Box<SignedProposal>, Box<SignedProposal>),
    /// Two different votes of one kind for one height and round.
    Votes(Box<SignedVote>, Box<SignedVote>),
}

/// Why an equivocation proof does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The two messages are not by the same validator.
    #[error("the two messages have different signers")]
    DifferentSigners,
    /// The two messages are not for the same height, round (and kind).
    #[error("the two messages are not for the same height, round and kind")]
    DifferentSlots,
    /// The two messages say the same thing: no conflict.
    #[error("the two messages do not conflict")]
    NoConflict,
    /// A signature does not verify under the given set.
    #[error("message signature: {0}")]
    Message(#[from] MessageError),
}

impl Equivocation {
    /// The height of the offence.
    pub fn height(&self) -> u64 {
        match self {
            Self::Proposals(a, _) => a.proposal.height,
            Self::Votes(a, _) => a.vote.height,
        }
    }

    /// The round of the offence.
    pub fn round(&self) -> u32 {
        match self {
            Self::Proposals(a, _) => a.proposal.round,
            Self::Votes(a, _) => a.vote.round,
        }
    }

    /// Index of the offender in the set of that height.
    pub fn offender(&self) -> u8 {
        match self {
            Self::Proposals(a, _) => a.proposer,
            Self::Votes(a, _) => a.validator,
        }
    }

    /// What kind of offence, for metrics and logs.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Proposals(..) => "double_proposal",
            Self::Votes(a, _) => match a.vote.kind {
                VoteKind::Prevote => "double_prevote",
                VoteKind::Precommit => "double_precommit",
            },
        }
    }

    /// Checks the proof offline against the validator set of its height; returns the offender's
    /// consensus key.
    pub fn check(
        &self,
        chain_id: &str,
        set: &ValidatorSet,
        backend: Backend,
    ) -> Result<PublicKey, EvidenceError> {
        match self {
            Self::Proposals(a, b) => {
                if a.proposer != b.proposer {
                    return Err(EvidenceError::DifferentSigners);
                }
                if (a.proposal.height, a.proposal.round) != (b.proposal.height, b.proposal.round) {
                    return Err(EvidenceError::DifferentSlots);
                }
                let ida = a.verify(chain_id, set, backend)?;
                let idb = b.verify(chain_id, set, backend)?;
                if ida == idb && a.proposal.valid_round == b.proposal.valid_round {
                    return Err(EvidenceError::NoConflict);
                }
            }
            Self::Votes(a, b) => {
                if a.validator != b.validator {
                    return Err(EvidenceError::DifferentSigners);
                }
                let (va, vb) = (&a.vote, &b.vote);
                if (va.kind, va.height, va.round) != (vb.kind, vb.height, vb.round) {
                    return Err(EvidenceError::DifferentSlots);
                }
                if va.value == vb.value {
                    return Err(EvidenceError::NoConflict);
                }
                a.verify(chain_id, set, backend)?;
                b.verify(chain_id, set, backend)?;
            }
        }
        let index = usize::from(self.offender());
        set.validators()
            .get(index)
            .map(|v| v.public_key)
            .ok_or(EvidenceError::Message(MessageError::UnknownValidator))
    }

    /// [`Equivocation::kind`] as a number (0 double proposal, 1 double prevote, 2 double
    /// precommit): how a store keys it.
    pub const fn kind_code(&self) -> u8 {
        match self {
            Self::Proposals(..) => 0,
            Self::Votes(a, _) => match a.vote.kind {
                VoteKind::Prevote => 1,
                VoteKind::Precommit => 2,
            },
        }
    }

    /// The kind's name for a code of [`Equivocation::kind_code`].
    pub const fn kind_name(code: u8) -> &'static str {
        match code {
            0 => "double_proposal",
            1 => "double_prevote",
            2 => "double_precommit",
            _ => "unknown",
        }
    }

    /// The two signed messages, each in its consensus encoding (`Message` bytes).
    pub fn messages(&self) -> [crate::Message; 2] {
        match self {
            Self::Proposals(a, b) => {
                [crate::Message::Proposal((**a).clone()), crate::Message::Proposal((**b).clone())]
            }
            Self::Votes(a, b) => [crate::Message::Vote(**a), crate::Message::Vote(**b)],
        }
    }

    /// A key under which a store can keep one proof per offence slot.
    pub fn slot(&self) -> (u64, u32, u8, &'static str) {
        (self.height(), self.round(), self.offender(), self.kind())
    }

    /// A short identity of the proof's bytes (for logs).
    pub fn digest(&self) -> Hash {
        engine::hash::hash_parts(engine::hash::Domain::Vote, &[b"equivocation", &self.to_bytes()])
    }
}

impl Encode for Equivocation {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Proposals(a, b) => {
                out.push(0);
                a.encode(out);
                b.encode(out);
            }
            Self::Votes(a, b) => {
                out.push(1);
                a.encode(out);
                b.encode(out);
            }
        }
    }
}

impl Decode for Equivocation {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("equivocation tag")? {
            0 => Ok(Self::Proposals(
                Box::new(SignedProposal::decode(r)?),
                Box::new(SignedProposal::decode(r)?),
            )),
            1 => Ok(Self::Votes(Box::new(SignedVote::decode(r)?), Box::new(SignedVote::decode(r)?))),
            tag => Err(CodecError::UnknownTag { what: "equivocation tag", tag }),
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::{SecretKey, codec::decode_exact, ledger::Validator, ledger::Vote};

    use super::*;

    #[test]
    fn a_double_vote_is_proved_and_innocent_pairs_are_not() {
        let keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_bytes(&[i; 32]).unwrap()).collect();
        let set = ValidatorSet::new(
            keys.iter().map(|k| Validator { public_key: k.public_key(), weight: 1 }).collect(),
        )
        .unwrap();
        let key_of =
            |i: usize| keys.iter().find(|k| k.public_key() == set.validators()[i].public_key).unwrap();
        let vote =
            |value: Option<Hash>, round: u32| Vote { kind: VoteKind::Prevote, height: 9, round, value };
        let a = SignedVote::sign(vote(Some(Hash([1; 32])), 0), "c", 2, key_of(2));
        let b = SignedVote::sign(vote(None, 0), "c", 2, key_of(2));
        let proof = Equivocation::Votes(Box::new(a), Box::new(b));
        assert_eq!(proof.check("c", &set, Backend::K256), Ok(set.validators()[2].public_key));
        assert_eq!(decode_exact::<Equivocation>(&proof.to_bytes()).unwrap(), proof);
        assert_eq!(proof.kind(), "double_prevote");
        // Same vote twice, different rounds, different voters, forged signature: no proof.
        assert_eq!(
            Equivocation::Votes(Box::new(a), Box::new(a)).check("c", &set, Backend::K256),
            Err(EvidenceError::NoConflict)
        );
        let later = SignedVote::sign(vote(None, 1), "c", 2, key_of(2));
        assert_eq!(
            Equivocation::Votes(Box::new(a), Box::new(later)).check("c", &set, Backend::K256),
            Err(EvidenceError::DifferentSlots)
        );
        let other = SignedVote::sign(vote(None, 0), "c", 1, key_of(1));
        assert_eq!(
            Equivocation::Votes(Box::new(a), Box::new(other)).check("c", &set, Backend::K256),
            Err(EvidenceError::DifferentSigners)
        );
        let mut forged = b;
        forged.signature = key_of(1).sign_prehash(&forged.vote.digest("c").0);
        assert_eq!(
            Equivocation::Votes(Box::new(a), Box::new(forged)).check("c", &set, Backend::K256),
            Err(EvidenceError::Message(MessageError::BadSignature))
        );
        // Another chain's validators cannot be framed with this chain's messages.
        assert!(proof.check("d", &set, Backend::K256).is_err());
    }
}
