//! The signing state a validator persists before any signature leaves it (CometBFT's
//! `privval` last-sign state, plus the lock): the highest (height, round, step) it signed, a
//! digest of what it signed there, and the value it was locked on.
//!
//! A validator never signs at or below this slot again, unless the message is the very one
//! signed there (a re-send): so whatever happens to its log or its store — a power loss that
//! rolls the store back, a log moved aside — it cannot sign two different messages for one
//! slot. The lock goes with it so that a validator restarting without its log still refuses
//! the values its lock excludes (forgetting it would let it help form a conflicting quorum).
//!
//! The votes signed in the last round go with it (at most a prevote and a precommit): a
//! validator that lost its log and its last ledgers (a disk that lied about a flush) resumes a
//! round later, and these are what the others may still need of its last round to finish it.
//!
//! ```text
//! SignState = version u8 (1) | height u64 | round u32 | step u8 | digest [32]
//!           | flag u8 (| locked round u32 | locked id [32]) | n u8 (0..=2) | n × SignedVote
//! ```

use engine::{
    CodecError, Decode, Encode, Hash,
    codec::Reader,
    hash::{Domain, hash_parts},
    ledger::VoteKind,
};

use crate::message::{Message, SignedVote};

/// Votes of the last round kept with the signing state.
pub const SIGN_STATE_VOTES_MAX: usize = 2;

const VERSION: u8 = 1;

/// Where a signed message sits in the order a validator signs: by height, then round, then
/// step (a round's proposal, then its prevote, then its precommit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// 0 proposal, 1 prevote, 2 precommit.
    pub step: u8,
}

impl Slot {
    /// The slot of a signed consensus message.
    pub const fn of(message: &Message) -> Self {
        match message {
            Message::Proposal(p) => Self { height: p.proposal.height, round: p.proposal.round, step: 0 },
            Message::Vote(v) => Self {
                height: v.vote.height,
                round: v.vote.round,
                step: match v.vote.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                },
            },
        }
    }
}

/// A digest of a message's canonical bytes (local: it identifies what was signed).
pub fn message_digest(message: &Message) -> Hash {
    hash_parts(Domain::Vote, &[b"caasiope signed message", &message.to_bytes()])
}

/// The persisted signing state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignState {
    /// The highest slot signed.
    pub slot: Slot,
    /// Digest of the message signed at `slot` ([`message_digest`]).
    pub digest: Hash,
    /// `(lockedRound, id(lockedValue))` at `slot.height` when it was signed.
    pub locked: Option<(u32, Hash)>,
    /// This validator's votes of `slot.round` (a prevote, a precommit).
    pub votes: Vec<SignedVote>,
    /// This validator's last precommit at `slot.height - 1` (the height it last committed):
    /// if its store loses that ledger and this precommit never reached the others, they may
    /// need it to decide that height, which nobody else can then serve.
    pub commit: Option<SignedVote>,
}

impl Encode for SignState {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.slot.height.to_le_bytes());
        out.extend_from_slice(&self.slot.round.to_le_bytes());
        out.push(self.slot.step);
        out.extend_from_slice(&self.digest.0);
        match self.locked {
            None => out.push(0),
            Some((round, id)) => {
                out.push(1);
                out.extend_from_slice(&round.to_le_bytes());
                out.extend_from_slice(&id.0);
            }
        }
        let votes = &self.votes[..self.votes.len().min(SIGN_STATE_VOTES_MAX)];
        out.push(votes.len() as u8);
        for v in votes {
            v.encode(out);
        }
        match &self.commit {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
}

impl Decode for SignState {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("sign state version")? {
            VERSION => {}
            tag => return Err(CodecError::UnknownTag { what: "sign state version", tag }),
        }
        let slot = Slot { height: r.u64("height")?, round: r.u32("round")?, step: r.u8("step")? };
        if slot.step > 2 {
            return Err(CodecError::UnknownTag { what: "sign state step", tag: slot.step });
        }
        let digest = Hash::decode(r)?;
        let locked = match r.u8("locked flag")? {
            0 => None,
            1 => Some((r.u32("locked round")?, Hash::decode(r)?)),
            tag => return Err(CodecError::UnknownTag { what: "locked flag", tag }),
        };
        let n = r.count_u8("sign state votes", 0, SIGN_STATE_VOTES_MAX)?;
        let votes = r.items(n)?;
        let commit = match r.u8("commit flag")? {
            0 => None,
            1 => Some(SignedVote::decode(r)?),
            tag => return Err(CodecError::UnknownTag { what: "commit flag", tag }),
        };
        Ok(Self { slot, digest, locked, votes, commit })
    }
}

#[cfg(test)]
mod tests {
    use engine::codec::decode_exact;

    use super::*;

    #[test]
    fn sign_states_round_trip_and_slots_order_by_height_round_step() {
        let key = engine::SecretKey::from_bytes(&[4; 32]).unwrap();
        let vote = engine::ledger::Vote { kind: VoteKind::Precommit, height: 9, round: 4, value: None };
        let votes = vec![SignedVote::sign(vote, "c", 1, &key)];
        let commit = SignedVote::sign(engine::ledger::Vote { height: 8, ..vote }, "c", 1, &key);
        for (locked, votes, commit) in [(None, vec![], None), (Some((3, Hash([7; 32]))), votes, Some(commit))]
        {
            let s = SignState {
                slot: Slot { height: 9, round: 4, step: 2 },
                digest: Hash([1; 32]),
                locked,
                votes,
                commit,
            };
            let bytes = s.to_bytes();
            assert_eq!(decode_exact::<SignState>(&bytes).unwrap(), s);
            assert!(bytes.len() <= 512, "a signing state fits its slot on disk");
        }
        assert!(decode_exact::<SignState>(&[2]).is_err());
        let slot = |height, round, step| Slot { height, round, step };
        assert!(slot(1, 9, 2) < slot(2, 0, 0));
        assert!(slot(2, 0, 2) < slot(2, 1, 0));
        assert!(slot(2, 1, 0) < slot(2, 1, 1));
    }
}
