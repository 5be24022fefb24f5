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
    StoreError, StoreReader,
    layout::table,
    store::Store,
    table::{DecodeValue, EncodeValue, Invalid, Key, Table, open},
};

table!(
    /// One proof per offence slot: offender's public key ‖ proof bytes.
    Evidence = "evidence", EvidenceKey => (PublicKey, Vec<u8>), written as (&'a PublicKey, &'a [u8])
);
table!(
    /// Proofs kept per validator key (u32 LE).
    EvidenceCounts = "evidence_counts", PublicKey => u32, written as &'a u32
);

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

impl Key for EvidenceKey {
    type Bytes = [u8; KEY_LEN];

    fn encode_key(&self) -> [u8; KEY_LEN] {
        let mut k = [0; KEY_LEN];
        k[..8].copy_from_slice(&self.height.to_be_bytes());
        k[8..12].copy_from_slice(&self.round.to_be_bytes());
        k[12] = self.validator;
        k[13] = self.kind;
        k
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        let invalid = || Invalid::layout("a key of another length");
        let (height, rest) = bytes.split_first_chunk::<8>().ok_or_else(invalid)?;
        let (round, rest) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
        let &[validator, kind] = rest else { return Err(invalid()) };
        Ok(Self { height: u64::from_be_bytes(*height), round: u32::from_be_bytes(*round), validator, kind })
    }
}

impl Key for PublicKey {
    type Bytes = [u8; PUBLIC_KEY_LEN];

    fn encode_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        bytes.try_into().map(PublicKey).map_err(|_| Invalid::layout("a key of another length"))
    }
}

impl DecodeValue for (PublicKey, Vec<u8>) {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        let (public_key, proof) = bytes
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or_else(|| Invalid::layout("a value shorter than a key"))?;
        Ok((PublicKey(*public_key), proof.to_vec()))
    }
}

impl EncodeValue for (&PublicKey, &[u8]) {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        buf.clear();
        buf.extend_from_slice(&self.0.0);
        buf.extend_from_slice(self.1);
        buf
    }
}

/// A count of `evidence_counts`: u32, little-endian.
impl DecodeValue for u32 {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        bytes
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| Invalid::layout(format!("a count of {} bytes", bytes.len())))
    }
}

impl EncodeValue for u32 {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        buf.clear();
        buf.extend_from_slice(&self.to_le_bytes());
        buf
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
    for name in [Evidence::NAME, EvidenceCounts::NAME] {
        txn.create_table(Some(name), TableFlags::default())?;
    }
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
        let (t, tc) = (open::<Evidence, RW>(&txn)?, open::<EvidenceCounts, RW>(&txn)?);
        if t.contains(&key)? {
            return Ok(false);
        }
        let kept = tc.get(public_key)?.unwrap_or(0);
        if kept >= EVIDENCE_PER_VALIDATOR_MAX {
            return Ok(false);
        }
        let mut buf = Vec::with_capacity(PUBLIC_KEY_LEN + proof.len());
        t.put(&key, (public_key, proof), WriteFlags::empty(), &mut buf)?;
        tc.put(public_key, &(kept + 1), WriteFlags::empty(), &mut buf)?;
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
        let Ok(t) = open::<Evidence, _>(&txn) else { return Ok(Vec::new()) };
        let mut cursor = t.cursor()?;
        let mut out = Vec::new();
        for row in cursor.rows(after.as_ref()) {
            let (key, (public_key, proof)) = row?;
            if after == Some(key) {
                continue;
            }
            out.push(StoredEvidence { key, public_key, proof });
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
