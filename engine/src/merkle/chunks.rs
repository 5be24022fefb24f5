//! The state trie in chunks: what a node restoring a snapshot checks piece by piece.
//!
//! A chunk is every key whose first [`CHUNK_DEPTH`] nibbles are its prefix. The first two nibbles
//! of a key are its address type (every ECDSA address starts with `0x01`), so five nibbles spread
//! the ECDSA accounts over 4,096 chunks (~250 keys each at a million accounts) and give the other
//! address types chunks of their own.
//!
//! A chunk's summary — its prefix, key count and the hash of its subtree — is all the trie above
//! it needs: [`root_of_chunks`] rebuilds the state root from the summaries of the non-empty
//! chunks, so a manifest of summaries is checked against a certified header's state root first,
//! and then each chunk against its own summary ([`chunk_summary`]) as it is read, without
//! holding the others. A chunk that hashes to its summary holds exactly the keys and leaf hashes
//! of the certified state under its prefix (the hash is collision-resistant), so chunks checked
//! one by one add up to the certified state.

use super::state::{Entry, StateKey, branch_hash, subtree_hash};
use crate::Hash;

/// Nibbles of a chunk's prefix.
pub const CHUNK_DEPTH: usize = 5;

/// Number of possible prefixes (`16^CHUNK_DEPTH`); a prefix is below it.
pub const CHUNK_PREFIXES: u32 = 1 << (4 * CHUNK_DEPTH);

/// The prefix of the chunk holding `key`: its first [`CHUNK_DEPTH`] nibbles.
pub fn chunk_of(key: &StateKey) -> u32 {
    (u32::from(key[0]) << 12) | (u32::from(key[1]) << 4) | u32::from(key[2] >> 4)
}

/// What the trie above a chunk needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSummary {
    /// The first [`CHUNK_DEPTH`] nibbles of every key in the chunk.
    pub prefix: u32,
    /// How many keys it holds (at least one: empty chunks are not listed).
    pub keys: u64,
    /// The hash of its subtree: the leaf hash of its only key, or the branch at depth
    /// [`CHUNK_DEPTH`].
    pub hash: Hash,
}

/// Why chunks do not make a trie.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A prefix at or above [`CHUNK_PREFIXES`].
    #[error("chunk prefix {0:#x} is out of range")]
    Prefix(u32),
    /// Summaries must be in strictly increasing prefix order (each prefix once).
    #[error("chunk prefix {0:#x} is out of order or repeated")]
    Order(u32),
    /// A listed chunk must hold a key.
    #[error("chunk {0:#x} is empty")]
    Empty(u32),
    /// More keys than a `u64` counts.
    #[error("the chunks' key counts overflow")]
    Overflow,
    /// A key is not under the chunk's prefix.
    #[error("a key of chunk {0:#x} is not under its prefix")]
    Foreign(u32),
    /// The chunk's keys are not in strictly increasing order.
    #[error("the keys of chunk {0:#x} are out of order or repeated")]
    KeyOrder(u32),
}

/// The summary of chunk `prefix` holding `entries` (keys in strictly increasing order, all under
/// the prefix). O(n) hashing, no sorting.
pub fn chunk_summary(prefix: u32, entries: &[(StateKey, Hash)]) -> Result<ChunkSummary, ChunkError> {
    if prefix >= CHUNK_PREFIXES {
        return Err(ChunkError::Prefix(prefix));
    }
    if entries.is_empty() {
        return Err(ChunkError::Empty(prefix));
    }
    if entries.iter().any(|(key, _)| chunk_of(key) != prefix) {
        return Err(ChunkError::Foreign(prefix));
    }
    if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(ChunkError::KeyOrder(prefix));
    }
    let batch: &[Entry] = entries;
    Ok(ChunkSummary { prefix, keys: batch.len() as u64, hash: subtree_hash(batch, CHUNK_DEPTH) })
}

/// The state root of a trie whose non-empty chunks are `summaries` (in strictly increasing
/// prefix order), [`Hash::ZERO`] when there are none. Each level up groups sixteen siblings: a
/// group holding one key in all is that key's leaf, else a branch over its non-empty members.
pub fn root_of_chunks(summaries: &[ChunkSummary]) -> Result<Hash, ChunkError> {
    let mut previous: Option<u32> = None;
    for s in summaries {
        if s.prefix >= CHUNK_PREFIXES {
            return Err(ChunkError::Prefix(s.prefix));
        }
        if previous.is_some_and(|p| p >= s.prefix) {
            return Err(ChunkError::Order(s.prefix));
        }
        if s.keys == 0 {
            return Err(ChunkError::Empty(s.prefix));
        }
        previous = Some(s.prefix);
    }
    // (prefix at this depth, keys, hash), in prefix order.
    let mut level: Vec<(u32, u64, Hash)> = summaries.iter().map(|s| (s.prefix, s.keys, s.hash)).collect();
    for depth in (0..CHUNK_DEPTH).rev() {
        let mut up: Vec<(u32, u64, Hash)> = Vec::with_capacity(level.len() / 2 + 1);
        let mut rest = level.as_slice();
        while let Some(&(first, _, _)) = rest.first() {
            let parent = first >> 4;
            let run = rest.partition_point(|&(p, _, _)| p >> 4 == parent);
            let (group, tail) = rest.split_at(run);
            rest = tail;
            let keys =
                group.iter().try_fold(0u64, |n, &(_, k, _)| n.checked_add(k)).ok_or(ChunkError::Overflow)?;
            let hash = match group {
                [(_, 1, leaf)] => *leaf,
                _ => {
                    let bitmap = group.iter().fold(0u16, |m, &(p, _, _)| m | (1 << (p & 0xf)));
                    branch_hash(depth, bitmap, group.iter().map(|(_, _, h)| h))
                }
            };
            up.push((parent, keys, hash));
        }
        level = up;
    }
    Ok(level.first().map_or(Hash::ZERO, |&(_, _, hash)| hash))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        StateTrie,
        hash::{Domain, hash_parts},
    };

    fn leaf(key: &StateKey, version: u64) -> Hash {
        hash_parts(Domain::StateLeaf, &[key, &version.to_le_bytes()])
    }

    /// Summaries of `set`, chunk by chunk.
    fn summaries(set: &BTreeMap<StateKey, Hash>) -> Vec<ChunkSummary> {
        let mut by_chunk: BTreeMap<u32, Vec<(StateKey, Hash)>> = BTreeMap::new();
        for (k, h) in set {
            by_chunk.entry(chunk_of(k)).or_default().push((*k, *h));
        }
        by_chunk.iter().map(|(p, entries)| chunk_summary(*p, entries).unwrap()).collect()
    }

    fn trie_root(set: &BTreeMap<StateKey, Hash>) -> Hash {
        let mut entries: Vec<_> = set.iter().map(|(k, h)| (*k, *h)).collect();
        StateTrie::from_entries(&mut entries).root()
    }

    /// Keys from a few seeds: all shapes the trie takes near the chunk depth (keys sharing a
    /// type byte, keys sharing a chunk, lone keys in a chunk, lone keys in a type).
    fn key(type_byte: u8, body: &[u8]) -> StateKey {
        let mut k = [0u8; 21];
        k[0] = type_byte;
        for (slot, b) in k[1..].iter_mut().zip(body) {
            *slot = *b;
        }
        k
    }

    proptest! {
        #[test]
        fn the_chunks_rebuild_the_tries_root(
            keys in prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..4)), 0..300)
        ) {
            let set: BTreeMap<StateKey, Hash> =
                keys.iter().enumerate().map(|(i, (t, body))| { let k = key(*t, body); (k, leaf(&k, i as u64)) }).collect();
            prop_assert_eq!(root_of_chunks(&summaries(&set)).unwrap(), trie_root(&set));
        }
    }

    #[test]
    fn edge_shapes_rebuild_the_root() {
        // Empty; one key; two keys in one chunk; two keys in two chunks of one type; one key
        // in each of two types.
        let cases: Vec<Vec<StateKey>> = vec![
            vec![],
            vec![key(1, &[5])],
            vec![key(1, &[5, 1]), key(1, &[5, 2])],
            vec![key(1, &[5]), key(1, &[6])],
            vec![key(1, &[5]), key(2, &[5])],
            vec![key(1, &[0x50]), key(1, &[0x51]), key(1, &[0x60, 1]), key(1, &[0x60, 2]), key(3, &[])],
        ];
        for keys in cases {
            let set: BTreeMap<_, _> = keys.iter().map(|k| (*k, leaf(k, 0))).collect();
            assert_eq!(root_of_chunks(&summaries(&set)).unwrap(), trie_root(&set), "{keys:?}");
        }
    }

    #[test]
    fn a_changed_chunk_or_manifest_does_not_rebuild_the_root() {
        let set: BTreeMap<StateKey, Hash> =
            (0..200u64).map(|i| key(1, &i.to_le_bytes()[..2])).map(|k| (k, leaf(&k, 0))).collect();
        let good = summaries(&set);
        let root = root_of_chunks(&good).unwrap();
        // Another leaf hash in one chunk.
        let mut changed = set.clone();
        let first = *changed.keys().next().unwrap();
        changed.insert(first, leaf(&first, 1));
        assert_ne!(root_of_chunks(&summaries(&changed)).unwrap(), root);
        // A key removed (a chunk missing a key, its summary recomputed).
        let mut fewer = set;
        fewer.remove(&first);
        assert_ne!(root_of_chunks(&summaries(&fewer)).unwrap(), root);
        // A lying key count that would make a chunk alone under its parent a leaf: the parent
        // hashes differently (where a chunk has siblings its count does not reach the root,
        // and the chunk's own check compares it).
        let pair = [key(1, &[0x50, 1]), key(1, &[0x50, 2]), key(1, &[0x60])];
        let pair_set: BTreeMap<_, _> = pair.iter().map(|k| (*k, leaf(k, 0))).collect();
        let mut lying = summaries(&pair_set);
        assert_eq!(lying[0].keys, 2);
        let pair_root = root_of_chunks(&lying).unwrap();
        lying[0].keys = 1;
        assert_ne!(root_of_chunks(&lying).unwrap(), pair_root);
        // Malformed manifests are errors.
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert!(matches!(root_of_chunks(&swapped), Err(ChunkError::Order(_))));
        let mut repeated = good.clone();
        repeated[1].prefix = repeated[0].prefix;
        assert!(matches!(root_of_chunks(&repeated), Err(ChunkError::Order(_))));
        let mut empty = good.clone();
        empty[0].keys = 0;
        assert!(matches!(root_of_chunks(&empty), Err(ChunkError::Empty(_))));
        let mut huge = good;
        huge[0].keys = u64::MAX;
        huge[1].keys = u64::MAX;
        assert!(matches!(root_of_chunks(&huge), Err(ChunkError::Overflow)));
        assert!(matches!(
            root_of_chunks(&[ChunkSummary { prefix: CHUNK_PREFIXES, keys: 1, hash: Hash::ZERO }]),
            Err(ChunkError::Prefix(_))
        ));
    }

    #[test]
    fn a_chunk_is_checked_for_its_keys() {
        let a = key(1, &[0x50, 1]);
        let b = key(1, &[0x50, 2]);
        let p = chunk_of(&a);
        assert!(chunk_summary(p, &[(a, leaf(&a, 0)), (b, leaf(&b, 0))]).is_ok());
        assert_eq!(chunk_summary(p, &[(b, leaf(&b, 0)), (a, leaf(&a, 0))]), Err(ChunkError::KeyOrder(p)));
        assert_eq!(chunk_summary(p, &[(a, leaf(&a, 0)), (a, leaf(&a, 1))]), Err(ChunkError::KeyOrder(p)));
        let other = key(1, &[0x60]);
        assert_eq!(
            chunk_summary(p, &[(a, leaf(&a, 0)), (other, leaf(&other, 0))]),
            Err(ChunkError::Foreign(p))
        );
        assert_eq!(chunk_summary(p, &[]), Err(ChunkError::Empty(p)));
    }
}
