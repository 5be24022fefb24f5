//! Ledger headers, validator sets and commit certificates.
//!
//! ```text
//! Header      = version u8 | height u64 | timestamp_ms i64 | previous (32) | tx_root (32)
//!             | state_root (32) | validator_set_hash (32)
//! Ledger hash = BLAKE3(Domain::Ledger, chain id, Header)
//! ValidatorSet= n u8 | n × (public key 65 | weight u64), sorted by public key
//! Vote        = kind u8 (1 prevote, 2 precommit) | height u64 | round u32
//!             | flag u8 | (ledger hash 32, if flag = 1)
//! Certificate = round u32 | n u8 | n × (validator index u8 | signature 64), sorted by index
//! ```
//!
//! A certificate is the precommits of one consensus round: each signature is over the digest
//! of the `Vote` (precommit, height, round, ledger hash). Binding the round matters: Tendermint's
//! safety argument is about a quorum of precommits *in one round*; signatures over the bare
//! ledger hash could be gathered across rounds into a set that no round ever formed.
//!
//! A header's `validator_set_hash` commits to the set that certifies the *next* ledger (the set
//! after this ledger's changes), so a light client that trusts one header learns the next set.

use crate::{
    codec::{CodecError, Decode, Encode, Reader, check_strictly_ascending},
    hash::{self, Domain, Hash},
    keys::{self, Backend, PublicKey, SecretKey, Signature},
    limits::{VALIDATOR_WEIGHT_MAX, VALIDATORS_MAX},
};

/// The only header version this engine knows.
pub const LEDGER_VERSION: u8 = 1;

/// A ledger header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LedgerHeader {
    /// Format version.
    pub version: u8,
    /// Height; genesis is 0.
    pub height: u64,
    /// Leader's time, unix ms; strictly above the previous ledger's.
    pub timestamp_ms: i64,
    /// Hash of the previous ledger (zero for genesis).
    pub previous: Hash,
    /// Binary Merkle root over the block's transaction ids, in block order.
    pub tx_root: Hash,
    /// Root of the state trie after this ledger.
    pub state_root: Hash,
    /// Hash of the validator set that certifies the next ledger.
    pub validator_set_hash: Hash,
}

impl LedgerHeader {
    /// The ledger hash on chain `chain_id`: what validators sign.
    pub fn hash(&self, chain_id: &str) -> Hash {
        let mut h = hash::chain_hasher(Domain::Ledger, chain_id);
        h.update(&self.to_bytes());
        hash::finish(&h)
    }
}

impl Encode for LedgerHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        for h in [&self.previous, &self.tx_root, &self.state_root, &self.validator_set_hash] {
            out.extend_from_slice(&h.0);
        }
    }
}

impl Decode for LedgerHeader {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let version = r.u8("ledger version")?;
        if version != LEDGER_VERSION {
            return Err(CodecError::UnknownTag { what: "ledger version", tag: version });
        }
        Ok(Self {
            version,
            height: r.u64("height")?,
            timestamp_ms: r.i64("timestamp")?,
            previous: Hash::decode(r)?,
            tx_root: Hash::decode(r)?,
            state_root: Hash::decode(r)?,
            validator_set_hash: Hash::decode(r)?,
        })
    }
}

/// A validator: consensus key and voting weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Consensus key (signs votes and certificates).
    pub public_key: PublicKey,
    /// Voting weight, 1 to [`VALIDATOR_WEIGHT_MAX`].
    pub weight: u64,
}

/// Why a validator set was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidatorSetError {
    /// No validator.
    #[error("a validator set has at least one validator")]
    Empty,
    /// Too many validators.
    #[error("more than {VALIDATORS_MAX} validators")]
    TooMany,
    /// A weight of 0 or over the limit.
    #[error("validator weight {0} is not in 1..={VALIDATOR_WEIGHT_MAX}")]
    Weight(u64),
    /// The same key twice.
    #[error("validator {0:?} listed twice")]
    Duplicate(PublicKey),
    /// Removal of a key that is not in the set.
    #[error("validator {0:?} is not in the set")]
    NotMember(PublicKey),
    /// A key that is not a curve point.
    #[error("validator key is invalid: {0}")]
    Key(#[from] keys::KeyError),
}

/// The validators of one height, sorted by key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_weight: u64,
}

impl ValidatorSet {
    /// A set from validators in any order.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if validators.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::TooMany);
        }
        validators.sort_by_key(|v| v.public_key);
        for w in validators.windows(2) {
            if w[0].public_key == w[1].public_key {
                return Err(ValidatorSetError::Duplicate(w[0].public_key));
            }
        }
        for v in &validators {
            if v.weight == 0 || v.weight > VALIDATOR_WEIGHT_MAX {
                return Err(ValidatorSetError::Weight(v.weight));
            }
            v.public_key.validate()?;
        }
        // Bounded by VALIDATORS_MAX × VALIDATOR_WEIGHT_MAX, checked at compile time in `limits`.
        let total_weight = validators.iter().map(|v| v.weight).sum();
        Ok(Self { validators, total_weight })
    }

    /// Validators sorted by key.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Sum of all weights.
    pub const fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// Whether `weight` is a quorum: strictly more than two thirds of the total.
    pub const fn is_quorum(&self, weight: u64) -> bool {
        // No overflow: weights are bounded so 3 × total < u64::MAX (see `limits`).
        3 * weight > 2 * self.total_weight
    }

    /// The index of a key.
    pub fn index_of(&self, key: &PublicKey) -> Option<usize> {
        self.validators.binary_search_by(|v| v.public_key.cmp(key)).ok()
    }

    /// The set after `update` (weight 0 removes; otherwise adds or re-weights).
    pub fn with_update(&self, key: PublicKey, weight: u64) -> Result<Self, ValidatorSetError> {
        if weight == 0 && self.index_of(&key).is_none() {
            return Err(ValidatorSetError::NotMember(key));
        }
        let mut validators: Vec<Validator> =
            self.validators.iter().copied().filter(|v| v.public_key != key).collect();
        if weight > 0 {
            validators.push(Validator { public_key: key, weight });
        }
        Self::new(validators)
    }

    /// The hash committed to by ledger headers.
    pub fn hash(&self) -> Hash {
        hash::hash_parts(Domain::ValidatorSet, &[&self.to_bytes()])
    }
}

impl Encode for ValidatorSet {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.validators.len() as u8);
        for v in &self.validators {
            out.extend_from_slice(&v.public_key.0);
            out.extend_from_slice(&v.weight.to_le_bytes());
        }
    }
}

impl Decode for ValidatorSet {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.count_u8("validators", 1, VALIDATORS_MAX)?;
        let mut validators = Vec::with_capacity(n);
        for _ in 0..n {
            validators.push(Validator {
                public_key: PublicKey(r.array("validator key")?),
                weight: r.u64("weight")?,
            });
        }
        check_strictly_ascending(&validators, "validators", |v| v.public_key)?;
        Self::new(validators)
            .map_err(|_| CodecError::Invalid { what: "validator set", why: "bad key or weight" })
    }
}

/// What a vote is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum VoteKind {
    /// First voting phase (Tendermint `PREVOTE`).
    Prevote = 1,
    /// Second voting phase (Tendermint `PRECOMMIT`); a quorum of them certifies a ledger.
    Precommit = 2,
}

/// A consensus vote as signed: for a ledger hash, or for nothing (`nil`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Vote {
    /// Phase.
    pub kind: VoteKind,
    /// Height voted on.
    pub height: u64,
    /// Round within the height.
    pub round: u32,
    /// The ledger hash voted for; `None` is a nil vote.
    pub value: Option<Hash>,
}

impl Vote {
    /// What the voter signs: `BLAKE3(Vote domain, chain id, Vote bytes)`.
    pub fn digest(&self, chain_id: &str) -> Hash {
        let mut h = hash::chain_hasher(Domain::Vote, chain_id);
        h.update(&self.to_bytes());
        hash::finish(&h)
    }

    /// Signs the vote.
    pub fn sign(&self, chain_id: &str, key: &SecretKey) -> Signature {
        key.sign_prehash(&self.digest(chain_id).0)
    }
}

impl Encode for Vote {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.round.to_le_bytes());
        match &self.value {
            None => out.push(0),
            Some(h) => {
                out.push(1);
                out.extend_from_slice(&h.0);
            }
        }
    }
}

impl Decode for Vote {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let kind = match r.u8("vote kind")? {
            1 => VoteKind::Prevote,
            2 => VoteKind::Precommit,
            tag => return Err(CodecError::UnknownTag { what: "vote kind", tag }),
        };
        let height = r.u64("vote height")?;
        let round = r.u32("vote round")?;
        let value = match r.u8("vote value flag")? {
            0 => None,
            1 => Some(Hash::decode(r)?),
            tag => return Err(CodecError::UnknownTag { what: "vote value flag", tag }),
        };
        Ok(Self { kind, height, round, value })
    }
}

/// The precommits of one round for one ledger: what makes it final.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Certificate {
    /// The consensus round whose precommits these are.
    pub round: u32,
    /// (index in the validator set, signature over the precommit digest), sorted by index.
    pub signatures: Vec<(u8, Signature)>,
}

/// Why a certificate does not certify a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// An index past the set.
    #[error("validator index {0} is not in the set")]
    UnknownValidator(u8),
    /// A signature that does not verify.
    #[error("signature of validator {0} does not verify")]
    BadSignature(u8),
    /// Not sorted or duplicated.
    #[error("certificate signatures are not sorted by validator index without duplicates")]
    NotCanonical,
    /// The signers do not hold more than two thirds of the weight.
    #[error("signers hold {signed} of {total} weight, not more than two thirds")]
    NoQuorum {
        /// Weight that signed.
        signed: u64,
        /// Total weight.
        total: u64,
    },
}

impl Certificate {
    /// An empty certificate of `round`.
    pub const fn new(round: u32) -> Self {
        Self { round, signatures: Vec::new() }
    }

    /// The precommit each signature covers.
    pub const fn precommit(&self, height: u64, ledger_hash: Hash) -> Vote {
        Vote { kind: VoteKind::Precommit, height, round: self.round, value: Some(ledger_hash) }
    }

    /// Signs the precommit of `ledger_hash` at `height` as validator `index` and inserts the
    /// signature in order.
    pub fn add(&mut self, chain_id: &str, index: u8, key: &SecretKey, height: u64, ledger_hash: &Hash) {
        let sig = self.precommit(height, *ledger_hash).sign(chain_id, key);
        self.insert(index, sig);
    }

    /// Inserts (or replaces) validator `index`'s signature, keeping the order.
    pub fn insert(&mut self, index: u8, signature: Signature) {
        match self.signatures.binary_search_by(|(i, _)| i.cmp(&index)) {
            Ok(at) => self.signatures[at].1 = signature,
            Err(at) => self.signatures.insert(at, (index, signature)),
        }
    }

    /// Checks the signatures certify the ledger with `header` on chain `chain_id` under `set`.
    pub fn verify_header(
        &self,
        set: &ValidatorSet,
        chain_id: &str,
        header: &LedgerHeader,
        backend: Backend,
    ) -> Result<(), CertificateError> {
        self.verify(set, chain_id, header.height, &header.hash(chain_id), backend)
    }

    /// Checks the signatures certify the ledger `ledger_hash` at `height` under `set`.
    pub fn verify(
        &self,
        set: &ValidatorSet,
        chain_id: &str,
        height: u64,
        ledger_hash: &Hash,
        backend: Backend,
    ) -> Result<(), CertificateError> {
        if !self.signatures.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(CertificateError::NotCanonical);
        }
        let digest = self.precommit(height, *ledger_hash).digest(chain_id);
        let mut signed = 0u64;
        for (index, sig) in &self.signatures {
            let v =
                set.validators.get(usize::from(*index)).ok_or(CertificateError::UnknownValidator(*index))?;
            if !keys::verify(backend, &v.public_key, &digest.0, sig) {
                return Err(CertificateError::BadSignature(*index));
            }
            signed += v.weight;
        }
        if set.is_quorum(signed) {
            Ok(())
        } else {
            Err(CertificateError::NoQuorum { signed, total: set.total_weight })
        }
    }
}

impl Encode for Certificate {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.round.to_le_bytes());
        out.push(self.signatures.len() as u8);
        for (i, s) in &self.signatures {
            out.push(*i);
            out.extend_from_slice(&s.0);
        }
    }
}

impl Decode for Certificate {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let round = r.u32("certificate round")?;
        let n = r.count_u8("certificate signatures", 0, VALIDATORS_MAX)?;
        let mut signatures = Vec::with_capacity(n);
        for _ in 0..n {
            signatures.push((r.u8("validator index")?, Signature(r.array("signature")?)));
        }
        check_strictly_ascending(&signatures, "certificate signatures", |(i, _)| *i)?;
        Ok(Self { round, signatures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_exact;

    fn set(weights: &[u64]) -> (ValidatorSet, Vec<SecretKey>) {
        let keys: Vec<SecretKey> =
            (1..=weights.len() as u8).map(|i| SecretKey::from_bytes(&[i; 32]).unwrap()).collect();
        let vs = keys
            .iter()
            .zip(weights)
            .map(|(k, &weight)| Validator { public_key: k.public_key(), weight })
            .collect();
        let vs = ValidatorSet::new(vs).unwrap();
        // Return keys in the set's (sorted) order.
        let mut sorted: Vec<SecretKey> = keys;
        sorted.sort_by_key(SecretKey::public_key);
        (vs, sorted)
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        let (vs, keys) = set(&[1, 1, 1, 1]);
        let h = Hash([9; 32]);
        let mut cert = Certificate::new(3);
        cert.add("c", 0, &keys[0], 5, &h);
        cert.add("c", 1, &keys[1], 5, &h);
        assert!(matches!(
            cert.verify(&vs, "c", 5, &h, Backend::K256),
            Err(CertificateError::NoQuorum { signed: 2, total: 4 })
        ));
        cert.add("c", 3, &keys[3], 5, &h);
        assert_eq!(cert.verify(&vs, "c", 5, &h, Backend::K256), Ok(()));
        assert_eq!(
            cert.verify(&vs, "c", 5, &Hash([8; 32]), Backend::Libsecp256k1),
            Err(CertificateError::BadSignature(0))
        );
        // The signatures bind the height, the round and the chain.
        assert_eq!(cert.verify(&vs, "c", 6, &h, Backend::K256), Err(CertificateError::BadSignature(0)));
        assert_eq!(cert.verify(&vs, "d", 5, &h, Backend::K256), Err(CertificateError::BadSignature(0)));
        let mut other_round = cert.clone();
        other_round.round = 4;
        assert_eq!(
            other_round.verify(&vs, "c", 5, &h, Backend::K256),
            Err(CertificateError::BadSignature(0))
        );
        assert_eq!(decode_exact::<Certificate>(&cert.to_bytes()).unwrap(), cert);
        let mut wrong = cert.clone();
        wrong.signatures[2].0 = 7;
        assert_eq!(wrong.verify(&vs, "c", 5, &h, Backend::K256), Err(CertificateError::UnknownValidator(7)));
        // 3 × 2 = 6 = 2 × 3: exactly two thirds is not a quorum.
        let (vs, _) = set(&[1, 1, 1]);
        assert!(!vs.is_quorum(2));
        assert!(vs.is_quorum(3));
    }

    #[test]
    fn votes_round_trip_and_differ_by_every_field() {
        let v = Vote { kind: VoteKind::Prevote, height: 7, round: 2, value: Some(Hash([1; 32])) };
        let nil = Vote { value: None, ..v };
        for x in [v, nil] {
            assert_eq!(decode_exact::<Vote>(&x.to_bytes()).unwrap(), x);
        }
        let variants = [
            v,
            nil,
            Vote { kind: VoteKind::Precommit, ..v },
            Vote { height: 8, ..v },
            Vote { round: 3, ..v },
            Vote { value: Some(Hash([2; 32])), ..v },
        ];
        for (i, a) in variants.iter().enumerate() {
            for b in &variants[i + 1..] {
                assert_ne!(a.digest("c"), b.digest("c"));
            }
        }
        assert_ne!(v.digest("c"), v.digest("d"));
        assert!(decode_exact::<Vote>(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn validator_set_rules() {
        let (vs, keys) = set(&[2, 3]);
        assert_eq!(vs.total_weight(), 5);
        assert_eq!(decode_exact::<ValidatorSet>(&vs.to_bytes()).unwrap(), vs);
        let removed = vs.with_update(keys[0].public_key(), 0).unwrap();
        assert_eq!(removed.validators().len(), 1);
        assert_eq!(removed.with_update(keys[1].public_key(), 0), Err(ValidatorSetError::Empty));
        assert!(vs.with_update(keys[0].public_key(), VALIDATOR_WEIGHT_MAX + 1).is_err());
        assert_ne!(vs.hash(), removed.hash());
    }

    #[test]
    fn header_hash_binds_chain() {
        let h = LedgerHeader {
            version: LEDGER_VERSION,
            height: 1,
            timestamp_ms: 2,
            previous: Hash([1; 32]),
            tx_root: Hash([2; 32]),
            state_root: Hash([3; 32]),
            validator_set_hash: Hash([4; 32]),
        };
        assert_ne!(h.hash("a"), h.hash("b"));
        assert_eq!(decode_exact::<LedgerHeader>(&h.to_bytes()).unwrap(), h);
    }
}
