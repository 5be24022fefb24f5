//! Consensus messages and their canonical encoding.
//!
//! ```text
//! Value          = LedgerHeader | n u32 (0..=BLOCK_TXS_MAX) | n × tx id [32]
//! Proposal       = height u64 | round u32 | flag u8 | (valid_round u32, if flag = 1) | Value
//! Proposal digest= H(Vote, chain id, 0x00 | height | round | flag | (valid_round) | ledger hash)
//! SignedProposal = Proposal | proposer u8 | signature [64]
//! SignedVote     = Vote | validator u8 | signature [64]      (Vote: engine::ledger, tags 1 and 2)
//! Message        = tag u8 (0 proposal, 1 vote) | body
//! ```
//!
//! The proposal digest starts with tag 0, which no `Vote` (tags 1, 2) has: a proposal signature
//! can never pass as a vote signature. Validator positions are indices in the sorted validator
//! set of the height.

use engine::{
    Backend, CodecError, Decode, Encode, Hash, SecretKey, Signature,
    codec::{Reader, put_count_u32},
    hash::{self, Domain},
    keys,
    ledger::{LedgerHeader, ValidatorSet, Vote},
    limits::BLOCK_TXS_MAX,
    merkle::tx_root,
    tx::TxId,
};

/// What consensus agrees on: a ledger header and the ordered ids of its transactions. Its
/// identity is the ledger hash, which commits to the ids through `header.tx_root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The proposed header (the leader's state root, timestamp and transaction root).
    pub header: LedgerHeader,
    /// Transaction ids in block order.
    pub tx_ids: Vec<TxId>,
}

impl Value {
    /// The ledger hash: the value's identity in votes and certificates.
    pub fn id(&self, chain_id: &str) -> Hash {
        self.header.hash(chain_id)
    }

    /// Whether the ids hash to the header's transaction root.
    pub fn ids_match_root(&self) -> bool {
        tx_root(&self.tx_ids) == self.header.tx_root
    }
}

impl Encode for Value {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        put_count_u32(out, self.tx_ids.len());
        for id in &self.tx_ids {
            out.extend_from_slice(&id.0);
        }
    }
}

impl Decode for Value {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let header = LedgerHeader::decode(r)?;
        let n = r.count_u32("proposal tx ids", 0, BLOCK_TXS_MAX)?;
        // The count is bounded above and each id takes 32 bytes that must be present.
        if r.remaining() < n * 32 {
            return Err(CodecError::Invalid { what: "proposal tx ids", why: "fewer bytes than the count" });
        }
        let mut tx_ids = Vec::with_capacity(n);
        for _ in 0..n {
            tx_ids.push(Hash::decode(r)?);
        }
        Ok(Self { header, tx_ids })
    }
}

/// A leader's proposal for a height and round (Tendermint `PROPOSAL(h, r, v, vr)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The round in which the value gathered a quorum of prevotes, if the leader re-proposes it.
    pub valid_round: Option<u32>,
    /// The proposed value.
    pub value: Value,
}

impl Proposal {
    /// What the proposer signs.
    pub fn digest(&self, chain_id: &str, value_id: &Hash) -> Hash {
        let mut bytes = Vec::with_capacity(1 + 8 + 4 + 5 + 32);
        bytes.push(0);
        bytes.extend_from_slice(&self.height.to_le_bytes());
        bytes.extend_from_slice(&self.round.to_le_bytes());
        put_round(&mut bytes, self.valid_round);
        bytes.extend_from_slice(&value_id.0);
        let mut h = hash::chain_hasher(Domain::Vote, chain_id);
        h.update(&bytes);
        hash::finish(&h)
    }

    /// Signs the proposal as validator `proposer`.
    pub fn sign(self, chain_id: &str, proposer: u8, key: &SecretKey) -> SignedProposal {
        let id = self.value.id(chain_id);
        let signature = key.sign_prehash(&self.digest(chain_id, &id).0);
        SignedProposal { proposal: self, proposer, signature }
    }
}

fn put_round(out: &mut Vec<u8>, round: Option<u32>) {
    match round {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            out.extend_from_slice(&r.to_le_bytes());
        }
    }
}

/// A proposal with its proposer's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// Index of the proposer in the height's validator set.
    pub proposer: u8,
    /// Signature over [`Proposal::digest`].
    pub signature: Signature,
}

impl SignedProposal {
    /// Checks the proposal against `set`; returns the value id (ledger hash).
    ///
    /// The signature covers the ledger hash, which commits to the transaction ids through the
    /// header's `tx_root` (a Merkle root that also commits to their count): the ids travelling
    /// beside it are checked against that root here, so a copy whose ids were altered in transit
    /// is refused as a whole, before anything is remembered of it, and cannot shadow the genuine
    /// proposal of the same ledger hash.
    pub fn verify(&self, chain_id: &str, set: &ValidatorSet, backend: Backend) -> Result<Hash, MessageError> {
        let v = set.validators().get(usize::from(self.proposer)).ok_or(MessageError::UnknownValidator)?;
        if self.proposal.value.header.height != self.proposal.height {
            return Err(MessageError::HeightMismatch);
        }
        if !self.proposal.value.ids_match_root() {
            return Err(MessageError::IdsMismatch);
        }
        let id = self.proposal.value.id(chain_id);
        let digest = self.proposal.digest(chain_id, &id);
        if keys::verify(backend, &v.public_key, &digest.0, &self.signature) {
            Ok(id)
        } else {
            Err(MessageError::BadSignature)
        }
    }
}

/// A vote with its voter's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// Index of the voter in the height's validator set.
    pub validator: u8,
    /// Signature over [`Vote::digest`].
    pub signature: Signature,
}

impl SignedVote {
    /// Signs `vote` as validator `validator`.
    pub fn sign(vote: Vote, chain_id: &str, validator: u8, key: &SecretKey) -> Self {
        Self { vote, validator, signature: vote.sign(chain_id, key) }
    }

    /// Checks the signature against `set`.
    pub fn verify(&self, chain_id: &str, set: &ValidatorSet, backend: Backend) -> Result<(), MessageError> {
        let v = set.validators().get(usize::from(self.validator)).ok_or(MessageError::UnknownValidator)?;
        if keys::verify(backend, &v.public_key, &self.vote.digest(chain_id).0, &self.signature) {
            Ok(())
        } else {
            Err(MessageError::BadSignature)
        }
    }
}

/// Why a consensus message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The signer index is not in the validator set.
    #[error("signer is not a validator of this height")]
    UnknownValidator,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A proposal whose header is for another height.
    #[error("proposal header height differs from the proposal's")]
    HeightMismatch,
    /// A proposal signed by a validator that does not lead its round.
    #[error("proposal signed by a validator that does not lead its round")]
    NotTheProposer,
    /// A proposal whose transaction ids do not hash to its header's transaction root (altered
    /// after signing: the signature binds the root, not the list beside it).
    #[error("proposal transaction ids do not match its header's transaction root")]
    IdsMismatch,
}

/// A consensus message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A leader's proposal.
    Proposal(SignedProposal),
    /// A prevote or precommit.
    Vote(SignedVote),
}

impl Message {
    /// The height the message is about.
    pub const fn height(&self) -> u64 {
        match self {
            Self::Proposal(p) => p.proposal.height,
            Self::Vote(v) => v.vote.height,
        }
    }

    /// The round the message is about.
    pub const fn round(&self) -> u32 {
        match self {
            Self::Proposal(p) => p.proposal.round,
            Self::Vote(v) => v.vote.round,
        }
    }

    /// Checks the signature (and a proposal's ids) against `set`; not who leads the round.
    pub fn verify(&self, chain_id: &str, set: &ValidatorSet, backend: Backend) -> Result<(), MessageError> {
        match self {
            Self::Proposal(p) => p.verify(chain_id, set, backend).map(|_| ()),
            Self::Vote(v) => v.verify(chain_id, set, backend),
        }
    }

    /// The signer's index.
    pub const fn signer(&self) -> u8 {
        match self {
            Self::Proposal(p) => p.proposer,
            Self::Vote(v) => v.validator,
        }
    }
}

impl Encode for SignedVote {
    fn encode(&self, out: &mut Vec<u8>) {
        self.vote.encode(out);
        out.push(self.validator);
        out.extend_from_slice(&self.signature.0);
    }
}

impl Decode for SignedVote {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            vote: Vote::decode(r)?,
            validator: r.u8("voter")?,
            signature: Signature(r.array("vote signature")?),
        })
    }
}

impl Encode for SignedProposal {
    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.proposal;
        out.extend_from_slice(&p.height.to_le_bytes());
        out.extend_from_slice(&p.round.to_le_bytes());
        put_round(out, p.valid_round);
        p.value.encode(out);
        out.push(self.proposer);
        out.extend_from_slice(&self.signature.0);
    }
}

impl Decode for SignedProposal {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let height = r.u64("proposal height")?;
        let round = r.u32("proposal round")?;
        let valid_round = match r.u8("valid round flag")? {
            0 => None,
            1 => Some(r.u32("valid round")?),
            tag => return Err(CodecError::UnknownTag { what: "valid round flag", tag }),
        };
        let value = Value::decode(r)?;
        Ok(Self {
            proposal: Proposal { height, round, valid_round, value },
            proposer: r.u8("proposer")?,
            signature: Signature(r.array("proposal signature")?),
        })
    }
}

impl Encode for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Proposal(p) => {
                out.push(0);
                p.encode(out);
            }
            Self::Vote(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
}

impl Decode for Message {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("consensus message tag")? {
            0 => Ok(Self::Proposal(SignedProposal::decode(r)?)),
            1 => Ok(Self::Vote(SignedVote::decode(r)?)),
            tag => Err(CodecError::UnknownTag { what: "consensus message tag", tag }),
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::{codec::decode_exact, ledger::VoteKind};
    use proptest::prelude::*;

    use super::*;

    fn header(height: u64) -> LedgerHeader {
        LedgerHeader {
            version: engine::ledger::LEDGER_VERSION,
            height,
            timestamp_ms: 1000,
            previous: Hash([1; 32]),
            tx_root: tx_root(&[Hash([5; 32])]),
            state_root: Hash([3; 32]),
            validator_set_hash: Hash([4; 32]),
        }
    }

    #[test]
    fn messages_round_trip_and_signatures_bind_every_field() {
        let key = SecretKey::from_bytes(&[7; 32]).unwrap();
        let set =
            ValidatorSet::new(vec![engine::ledger::Validator { public_key: key.public_key(), weight: 1 }])
                .unwrap();
        let value = Value { header: header(3), tx_ids: vec![Hash([5; 32])] };
        assert!(value.ids_match_root());
        let p = Proposal { height: 3, round: 1, valid_round: Some(0), value }.sign("c", 0, &key);
        let id = p.verify("c", &set, Backend::K256).unwrap();
        assert_eq!(p.verify("d", &set, Backend::K256), Err(MessageError::BadSignature));
        let mut other = p.clone();
        other.proposal.valid_round = None;
        assert_eq!(other.verify("c", &set, Backend::K256), Err(MessageError::BadSignature));
        let mut wrong_height = p.clone();
        wrong_height.proposal.height = 4;
        assert_eq!(wrong_height.verify("c", &set, Backend::K256), Err(MessageError::HeightMismatch));
        let v = SignedVote::sign(
            Vote { kind: VoteKind::Prevote, height: 3, round: 1, value: Some(id) },
            "c",
            0,
            &key,
        );
        assert_eq!(v.verify("c", &set, Backend::Libsecp256k1), Ok(()));
        let mut unknown = v;
        unknown.validator = 1;
        assert_eq!(unknown.verify("c", &set, Backend::K256), Err(MessageError::UnknownValidator));
        for m in [Message::Proposal(p), Message::Vote(v)] {
            assert_eq!(decode_exact::<Message>(&m.to_bytes()).unwrap(), m);
        }
    }

    #[test]
    fn a_count_larger_than_the_bytes_is_refused_before_allocating() {
        let mut bytes = vec![0u8];
        let p = Proposal {
            height: 3,
            round: 0,
            valid_round: None,
            value: Value { header: header(3), tx_ids: vec![] },
        };
        let key = SecretKey::from_bytes(&[7; 32]).unwrap();
        p.sign("c", 0, &key).encode(&mut bytes);
        // The id count sits after tag, height, round, flag and the header.
        let at = 1 + 8 + 4 + 1 + header(3).to_bytes().len();
        bytes[at..at + 4].copy_from_slice(&(BLOCK_TXS_MAX as u32).to_le_bytes());
        assert!(decode_exact::<Message>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(m) = decode_exact::<Message>(&bytes) {
                prop_assert_eq!(m.to_bytes(), bytes);
            }
        }
    }
}
