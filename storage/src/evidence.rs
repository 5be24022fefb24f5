//! Equivocation proofs: kept as the opaque bytes the consensus layer gives (this crate does not
//! know consensus), indexed by offence and bounded per validator.
//!
//! Tables (created at `create`, and at `open` in stores made before them):
//! * `evidence`: key `height u64 BE | round u32 BE | validator index u8 | kind u8` (one proof per
//!   offence slot), value `offender public key [65] | proof bytes`;
//! * `evidence_counts`: key `public key [65]`, value `u32 LE`: proofs kept per validator, at most
//!   [`EVIDENCE_PER_VALIDATOR_MAX`] — one proves the offence, a validator that equivocates at
//!   every height must not fill the disk.

use engine::PublicKey;
use libmdbx::{NoWriteMap, RW, TableFlags, Transaction, WriteFlags};

use crate::{
    StoreError,
    store::{Env, Store, StoreReader},
};

pub(crate) const EVIDENCE: &str = "evidence";
pub(crate) const EVIDENCE_COUNTS: &str = "evidence_counts";

/// Proofs kept per validator key.
pub const EVIDENCE_PER_VALIDATOR_MAX: u32 = 256;
/// Largest proof kept (two proposals of the largest value are ~6.4 MB; the node's are far
/// smaller: 10,000 ids a value).
pub const EVIDENCE_BYTES_MAX: usize = 8 << 20;
/// Proofs per page read.
pub const EVIDENCE_PAGE_MAX: usize = 100;

const KEY_LEN: usize = 14;
const PUBLIC_KEY_LEN: usize = 65;

/// Where a proof sits: the offence it proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EvidenceKey {
    /// Height of the offence.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The offender's index in that height's validator set.
    pub validator: u8,
    /// What kind of offence (a small number the caller assigns: the consensus layer's).
    pub kind: u8,
}

impl EvidenceKey {
    fn to_bytes(self) -> [u8; KEY_LEN] {
        let mut k = [0; KEY_LEN];
        k[..8].copy_from_slice(&self.height.to_be_bytes());
        k[8..12].copy_from_slice(&self.round.to_be_bytes());
        k[12] = self.validator;
        k[13] = self.kind;
        k
    }

    fn from_bytes(k: &[u8]) -> Option<Self> {
        let k: &[u8; KEY_LEN] = k.try_into().ok()?;
        Some(Self {
            height: u64::from_be_bytes(k[..8].try_into().ok()?),
            round: u32::from_be_bytes(k[8..12].try_into().ok()?),
            validator: k[12],
            kind: k[13],
        })
    }
}

/// A stored proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvidence {
    /// The offence.
    pub key: EvidenceKey,
    /// The offender's consensus key.
    pub public_key: PublicKey,
    /// The proof's bytes, as given.
    pub proof: Vec<u8>,
}

pub(crate) fn create_tables(txn: &Transaction<'_, RW, NoWriteMap>) -> Result<(), StoreError> {
    for name in [EVIDENCE, EVIDENCE_COUNTS] {
        txn.create_table(Some(name), TableFlags::default())?;
    }
    Ok(())
}

/// Creates the tables in a store made before they existed.
pub(crate) fn ensure_tables(env: &Env) -> Result<(), StoreError> {
    let txn = env.begin_rw_txn()?;
    create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

impl Store {
    /// Keeps a proof, durably (its own write transaction). `false` if it was not kept: a proof
    /// of that offence is already stored, or its offender has [`EVIDENCE_PER_VALIDATOR_MAX`].
    pub fn add_evidence(
        &self,
        key: EvidenceKey,
        public_key: &PublicKey,
        proof: &[u8],
    ) -> Result<bool, StoreError> {
        if proof.len() > EVIDENCE_BYTES_MAX {
            return Ok(false);
        }
        let txn = self.env().begin_rw_txn()?;
        let t = txn.open_table(Some(EVIDENCE))?;
        let tc = txn.open_table(Some(EVIDENCE_COUNTS))?;
        let k = key.to_bytes();
        if txn.get::<Vec<u8>>(&t, &k)?.is_some() {
            return Ok(false);
        }
        let pk = public_key.0;
        let kept = match txn.get::<Vec<u8>>(&tc, &pk)? {
            Some(v) => u32::from_le_bytes(v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                table: EVIDENCE_COUNTS,
                why: format!("a count of {} bytes", v.len()),
            })?),
            None => 0,
        };
        if kept >= EVIDENCE_PER_VALIDATOR_MAX {
            return Ok(false);
        }
        let mut value = Vec::with_capacity(PUBLIC_KEY_LEN + proof.len());
        value.extend_from_slice(&pk);
        value.extend_from_slice(proof);
        txn.put(&t, k, value, WriteFlags::empty())?;
        txn.put(&tc, pk, (kept + 1).to_le_bytes(), WriteFlags::empty())?;
        txn.commit()?;
        Ok(true)
    }
}

impl StoreReader {
    /// Up to `limit` (at most [`EVIDENCE_PAGE_MAX`]) proofs in key order, after `after` (from the
    /// first if `None`).
    pub fn evidence(
        &self,
        after: Option<EvidenceKey>,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let limit = limit.clamp(1, EVIDENCE_PAGE_MAX);
        let txn = self.env().begin_ro_txn()?;
        // A store opened read-only before the tables were made has none.
        let Ok(t) = txn.open_table(Some(EVIDENCE)) else { return Ok(Vec::new()) };
        let mut cursor = txn.cursor(&t)?;
        let mut out = Vec::new();
        let start = after.map(|a| a.to_bytes());
        let iter = match &start {
            Some(k) => cursor.iter_from::<Vec<u8>, Vec<u8>>(k),
            None => cursor.iter_start::<Vec<u8>, Vec<u8>>(),
        };
        for item in iter {
            let (k, v) = item?;
            if start.as_ref().is_some_and(|s| k.as_slice() == s.as_slice()) {
                continue;
            }
            let corrupt = |why: &str| StoreError::Corrupt { table: EVIDENCE, why: why.to_owned() };
            let key = EvidenceKey::from_bytes(&k).ok_or_else(|| corrupt("a key of another length"))?;
            let (pk, proof) =
                v.split_at_checked(PUBLIC_KEY_LEN).ok_or_else(|| corrupt("a value shorter than a key"))?;
            let public_key =
                PublicKey(pk.try_into().map_err(|_| corrupt("an offender key that is not one"))?);
            out.push(StoredEvidence { key, public_key, proof: proof.to_vec() });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use engine::SecretKey;

    use super::*;

    #[test]
    fn proofs_are_kept_once_per_offence_bounded_per_validator_and_paged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let chain = crate::test_utils::TestChain::new(1, 0);
        let (store, _) = Store::create(dir.path(), &chain.genesis_toml).unwrap();
        let (a, b) = (
            SecretKey::from_bytes(&[1; 32]).unwrap().public_key(),
            SecretKey::from_bytes(&[2; 32]).unwrap().public_key(),
        );
        let key = |height, round| EvidenceKey { height, round, validator: 3, kind: 1 };
        assert!(store.add_evidence(key(5, 0), &a, b"first").unwrap());
        assert!(!store.add_evidence(key(5, 0), &a, b"again").unwrap(), "one proof per offence");
        for r in 1..EVIDENCE_PER_VALIDATOR_MAX {
            assert!(store.add_evidence(key(6, r), &a, b"more").unwrap());
        }
        assert!(!store.add_evidence(key(7, 0), &a, b"over").unwrap(), "the validator's bound");
        assert!(store.add_evidence(key(7, 0), &b, b"other validator").unwrap());
        let reader = store.reader();
        let first = reader.evidence(None, 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(
            (first[0].key, first[0].public_key, first[0].proof.as_slice()),
            (key(5, 0), a, &b"first"[..])
        );
        assert_eq!(first[1].key, key(6, 1));
        let mut all = first.clone();
        let mut after = first.last().map(|e| e.key);
        loop {
            let page = reader.evidence(after, EVIDENCE_PAGE_MAX).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.key);
            all.extend(page);
        }
        assert_eq!(all.len(), EVIDENCE_PER_VALIDATOR_MAX as usize + 1);
        assert!(all.windows(2).all(|w| w[0].key < w[1].key));
        drop((store, reader));
        // Kept across a reopen.
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(store.reader().evidence(None, 1).unwrap()[0].proof, b"first");
    }
}
