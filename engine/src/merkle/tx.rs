//! The binary Merkle tree over a block's transaction ids, and its inclusion proofs.

use rayon::prelude::*;

use crate::{
    Hash,
    codec::{CodecError, Decode, Encode, Reader, put_count_u8},
    hash::{Domain, keyed},
    limits::TX_PROOF_DEPTH_MAX,
};

/// Below this many hashes a level is hashed on the calling thread: a keyed BLAKE3 of 32 or 64
/// bytes costs a fraction of a microsecond, so only thousands of them repay rayon's hand-off.
const PARALLEL_MIN: usize = 4096;

fn leaf_hash(id: &Hash) -> Hash {
    keyed(Domain::TxLeaf, id.as_bytes())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(left.as_bytes());
    buf[32..].copy_from_slice(right.as_bytes());
    keyed(Domain::TxNode, &buf)
}

fn leaves(ids: &[Hash]) -> Vec<Hash> {
    if ids.len() >= PARALLEL_MIN {
        ids.par_iter().map(leaf_hash).collect()
    } else {
        ids.iter().map(leaf_hash).collect()
    }
}

/// The level above `level`: pairs hashed, a lone last node promoted unchanged.
fn parent_level(level: &[Hash]) -> Vec<Hash> {
    fn pair(chunk: &[Hash]) -> Hash {
        match chunk {
            [left, right] => node_hash(left, right),
            [lone] => *lone,
            // `chunks(2)` yields one or two items.
            _ => Hash::ZERO,
        }
    }
    if level.len() >= PARALLEL_MIN {
        level.par_chunks(2).map(pair).collect()
    } else {
        level.chunks(2).map(pair).collect()
    }
}

/// The transaction root of `ids` in block order; [`Hash::ZERO`] for no transactions.
///
/// The root commits to the number of transactions as well as the tree (`Domain::TxRoot` over the
/// count and the tree's top node): without it, a tree of 3 leaves `(ab)c` and one of 4
/// `(ab)(cd)` look alike from `a` or `b`, and a proof's index would not be bound. Leaves (and
/// large levels) are hashed on the caller's rayon pool.
pub fn tx_root(ids: &[Hash]) -> Hash {
    if ids.is_empty() {
        return Hash::ZERO;
    }
    // BLOCK_TXS_MAX keeps the count far below u32::MAX.
    commit_count(ids.len() as u32, &tree_root(ids))
}

fn commit_count(count: u32, top: &Hash) -> Hash {
    crate::hash::hash_parts(Domain::TxRoot, &[&count.to_le_bytes(), top.as_bytes()])
}

/// The top node of the binary tree (RFC 6962 shape: a lone last node is promoted).
fn tree_root(ids: &[Hash]) -> Hash {
    let mut level = leaves(ids);
    while level.len() > 1 {
        level = parent_level(&level);
    }
    level.first().copied().unwrap_or(Hash::ZERO)
}

/// An inclusion proof: the id's position, the number of leaves, and the sibling hashes from the
/// leaf level up (levels where the node is promoted have no sibling and contribute nothing).
///
/// Built by [`tx_proof`] or decoded; decoding refuses any shape [`verify_tx_proof`] would refuse,
/// so every value encodes canonically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxProof {
    index: u32,
    count: u32,
    siblings: Vec<Hash>,
}

impl TxProof {
    /// The position of the transaction in its block.
    pub const fn index(&self) -> u32 {
        self.index
    }

    /// The number of transactions in the block, as claimed by the proof (see [`verify_tx_proof`]).
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The sibling hashes, leaf level first.
    pub fn siblings(&self) -> &[Hash] {
        &self.siblings
    }
}

/// How many siblings the path of leaf `index` among `count` has; `None` if there is no such leaf.
fn path_len(index: u32, count: u32) -> Option<usize> {
    if index >= count {
        return None;
    }
    let (mut i, mut n, mut len) = (index, count, 0);
    while n > 1 {
        // `i < n <= u32::MAX`, so `i + 1` cannot overflow.
        if i % 2 == 1 || i + 1 < n {
            len += 1;
        }
        i /= 2;
        n = n.div_ceil(2);
    }
    Some(len)
}

/// The inclusion proof of `ids[index]`; `None` if `index` is out of range (or the list is longer
/// than `u32::MAX`, far past any block).
pub fn tx_proof(ids: &[Hash], index: usize) -> Option<TxProof> {
    let count = u32::try_from(ids.len()).ok()?;
    let index_u32 = u32::try_from(index).ok()?;
    if index_u32 >= count {
        return None;
    }
    let mut siblings = Vec::new();
    let mut level = leaves(ids);
    let mut i = index;
    while level.len() > 1 {
        if let Some(sibling) = level.get(i ^ 1) {
            siblings.push(*sibling);
        }
        level = parent_level(&level);
        i /= 2;
    }
    debug_assert_eq!(Some(siblings.len()), path_len(index_u32, count));
    Some(TxProof { index: index_u32, count, siblings })
}

/// Whether `proof` places `id` at `proof.index()` of a tree of `proof.count()` leaves whose root is
/// `root`.
///
/// At each level the index and count say whether the node has a sibling and on which side; a
/// proof with a sibling too many or too few, `count == 0`, `index >= count` or more than
/// [`TX_PROOF_DEPTH_MAX`] siblings is refused.
///
/// The root commits to the leaf count, so a verified proof binds both the id and its index.
pub fn verify_tx_proof(root: &Hash, id: &Hash, proof: &TxProof) -> bool {
    if proof.count == 0 || proof.index >= proof.count || proof.siblings.len() > TX_PROOF_DEPTH_MAX {
        return false;
    }
    let (mut i, mut n) = (proof.index, proof.count);
    let mut siblings = proof.siblings.iter();
    let mut acc = leaf_hash(id);
    while n > 1 {
        if i % 2 == 1 {
            let Some(left) = siblings.next() else { return false };
            acc = node_hash(left, &acc);
        } else if i + 1 < n {
            let Some(right) = siblings.next() else { return false };
            acc = node_hash(&acc, right);
        }
        i /= 2;
        n = n.div_ceil(2);
    }
    siblings.next().is_none() && commit_count(proof.count, &acc) == *root
}

impl Encode for TxProof {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        put_count_u8(out, self.siblings.len());
        for sibling in &self.siblings {
            sibling.encode(out);
        }
    }
}

impl Decode for TxProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let index = r.u32("tx proof index")?;
        let count = r.u32("tx proof count")?;
        let n = r.count_u8("tx proof siblings", 0, TX_PROOF_DEPTH_MAX)?;
        match path_len(index, count) {
            None => {
                return Err(CodecError::Invalid { what: "tx proof", why: "index not below count" });
            }
            Some(expected) if expected != n => {
                return Err(CodecError::Invalid {
                    what: "tx proof",
                    why: "sibling count does not match index and count",
                });
            }
            Some(_) => {}
        }
        let siblings = r.items::<Hash>(n)?;
        Ok(Self { index, count, siblings })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::decode_exact;

    fn ids(n: usize) -> Vec<Hash> {
        (0..n).map(|i| crate::hash::hash_parts(Domain::TxId, &[&(i as u64).to_le_bytes()])).collect()
    }

    /// RFC 6962's recursive definition, which the level-by-level promotion rule must equal.
    fn reference_root(ids: &[Hash]) -> Hash {
        match ids {
            [] => Hash::ZERO,
            [id] => leaf_hash(id),
            _ => {
                let split = ids.len().next_power_of_two() / 2;
                node_hash(&reference_root(&ids[..split]), &reference_root(&ids[split..]))
            }
        }
    }

    fn flip(h: &Hash, byte: usize) -> Hash {
        let mut out = *h;
        out.0[byte] ^= 0x01;
        out
    }

    /// The sides (true = sibling on the left) of the siblings on the path of `index` of `count`.
    fn sides(index: u32, count: u32) -> Vec<bool> {
        let (mut i, mut n, mut out) = (index, count, Vec::new());
        while n > 1 {
            if i % 2 == 1 {
                out.push(true);
            } else if i + 1 < n {
                out.push(false);
            }
            i /= 2;
            n = n.div_ceil(2);
        }
        out
    }

    #[test]
    fn empty_tree_root_is_zero() {
        assert_eq!(tx_root(&[]), Hash::ZERO);
        assert_eq!(tx_proof(&[], 0), None);
    }

    #[test]
    fn root_matches_the_recursive_reference() {
        for n in 0..=33 {
            let ids = ids(n);
            assert_eq!(tree_root(&ids), reference_root(&ids), "{n} leaves");
            if n > 0 {
                assert_eq!(tx_root(&ids), commit_count(n as u32, &reference_root(&ids)));
            }
        }
        let one = ids(1);
        assert_eq!(tree_root(&one), leaf_hash(&one[0]));
        // The lone node is promoted, not paired with itself.
        let three = ids(3);
        assert_eq!(
            tree_root(&three),
            node_hash(&node_hash(&leaf_hash(&three[0]), &leaf_hash(&three[1])), &leaf_hash(&three[2]))
        );
    }

    #[test]
    fn parallel_path_matches_the_reference() {
        for n in [PARALLEL_MIN, 2 * PARALLEL_MIN + 3] {
            let ids = ids(n);
            assert_eq!(tree_root(&ids), reference_root(&ids), "{n} leaves");
            let last = tx_proof(&ids, n - 1).unwrap();
            assert!(verify_tx_proof(&tx_root(&ids), &ids[n - 1], &last));
        }
    }

    #[test]
    fn duplicating_the_last_id_changes_the_root() {
        // CVE-2012-2459: with self-pairing, [a, b, c] and [a, b, c, c] share a root.
        let three = ids(3);
        let mut four = three.clone();
        four.push(three[2]);
        assert_ne!(tx_root(&three), tx_root(&four));
    }

    #[test]
    fn every_proof_verifies_and_every_tampering_fails() {
        for n in 1..=33usize {
            let ids = ids(n);
            let root = tx_root(&ids);
            for (index, id) in ids.iter().enumerate() {
                let proof = tx_proof(&ids, index).unwrap();
                assert_eq!(proof.index() as usize, index);
                assert_eq!(proof.count() as usize, n);
                assert_eq!(Some(proof.siblings().len()), path_len(index as u32, n as u32));
                assert!(verify_tx_proof(&root, id, &proof), "n={n} index={index}");
                for byte in 0..32 {
                    assert!(!verify_tx_proof(&root, &flip(id, byte), &proof));
                    assert!(!verify_tx_proof(&flip(&root, byte), id, &proof));
                    for s in 0..proof.siblings.len() {
                        let mut bad = proof.clone();
                        bad.siblings[s] = flip(&bad.siblings[s], byte);
                        assert!(!verify_tx_proof(&root, id, &bad));
                    }
                }
                // Every other index of the same count fails (the count fixes the tree's shape).
                for other in (0..n as u32 + 2).chain([u32::MAX]) {
                    if other != proof.index {
                        let bad = TxProof { index: other, ..proof.clone() };
                        assert!(!verify_tx_proof(&root, id, &bad), "n={n} index={index} as {other}");
                    }
                }
                // Every other count fails, even one giving the same path shape.
                for other in (0..n as u32 + 40).chain([u32::MAX, 1 << 31]) {
                    if other != proof.count {
                        let bad = TxProof { count: other, ..proof.clone() };
                        assert!(!verify_tx_proof(&root, id, &bad), "n={n} index={index} count {other}");
                    }
                }
                // A sibling too many or too few.
                let mut longer = proof.clone();
                longer.siblings.push(root);
                assert!(!verify_tx_proof(&root, id, &longer));
                if !proof.siblings.is_empty() {
                    let mut shorter = proof.clone();
                    shorter.siblings.pop();
                    assert!(!verify_tx_proof(&root, id, &shorter));
                }
            }
        }
    }

    #[test]
    fn the_root_commits_to_the_count() {
        // From leaf 1, trees of 3 and 4 leaves have the same path shape; only the committed
        // count tells them apart.
        assert_eq!(sides(1, 3), sides(1, 4));
        let ids = ids(3);
        let proof = tx_proof(&ids, 1).unwrap();
        assert!(verify_tx_proof(&tx_root(&ids), &ids[1], &proof));
        let claimed = TxProof { count: 4, ..proof };
        assert!(!verify_tx_proof(&tx_root(&ids), &ids[1], &claimed));
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let ids = ids(5);
        let root = tx_root(&ids);
        assert_eq!(tx_proof(&ids, 5), None);
        let proof = tx_proof(&ids, 4).unwrap();
        assert!(!verify_tx_proof(&root, &ids[4], &TxProof { count: 0, ..proof.clone() }));
        assert!(!verify_tx_proof(&root, &ids[4], &TxProof { index: 5, ..proof }));
        let deep = TxProof { index: 0, count: u32::MAX, siblings: vec![Hash::ZERO; TX_PROOF_DEPTH_MAX + 1] };
        assert!(!verify_tx_proof(&root, &ids[0], &deep));
    }

    #[test]
    fn codec_round_trips() {
        for n in 1..=33usize {
            let ids = ids(n);
            for index in 0..n {
                let proof = tx_proof(&ids, index).unwrap();
                let bytes = proof.to_bytes();
                assert_eq!(bytes.len(), 4 + 4 + 1 + 32 * proof.siblings.len());
                assert_eq!(decode_exact::<TxProof>(&bytes), Ok(proof));
                let mut trailing = bytes.clone();
                trailing.push(0);
                assert!(decode_exact::<TxProof>(&trailing).is_err());
                assert!(decode_exact::<TxProof>(&bytes[..bytes.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn decoder_refuses_impossible_shapes() {
        let proof = tx_proof(&ids(6), 2).unwrap();
        let bytes = proof.to_bytes();
        let mut wrong_count = bytes.clone();
        wrong_count[8] += 1;
        wrong_count.extend_from_slice(&[0; 32]);
        assert!(decode_exact::<TxProof>(&wrong_count).is_err());
        let mut index_past_count = bytes.clone();
        index_past_count[0] = 6;
        assert!(decode_exact::<TxProof>(&index_past_count).is_err());
        let mut too_many = bytes;
        too_many[8] = (TX_PROOF_DEPTH_MAX + 1) as u8;
        assert!(matches!(decode_exact::<TxProof>(&too_many), Err(CodecError::OverLimit { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
            if let Ok(proof) = decode_exact::<TxProof>(&bytes) {
                prop_assert_eq!(proof.to_bytes(), bytes);
            }
        }

        #[test]
        fn decoder_survives_mutated_proofs(n in 1usize..40, index in 0usize..40, pos in 0usize..400, xor in 1u8..=255) {
            let ids = ids(n);
            let index = index % n;
            let mut bytes = tx_proof(&ids, index).unwrap().to_bytes();
            let pos = pos % bytes.len();
            bytes[pos] ^= xor;
            if let Ok(proof) = decode_exact::<TxProof>(&bytes) {
                prop_assert_eq!(proof.to_bytes(), bytes);
                // Mutating the index, the count or a sibling breaks the proof (the root commits to
                // the count).
                prop_assert!(!verify_tx_proof(&tx_root(&ids), &ids[index], &proof));
            }
        }
    }
}
