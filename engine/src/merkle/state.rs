//! The state trie: a 16-ary radix trie over raw addresses, updated in batches, with proofs.
//!
//! Layout: a branch stores only its non-empty children, in nibble order, and each child slot
//! carries the child's hash next to the child itself (a leaf's key inline, a branch's bitmap and
//! children). Rehashing a branch therefore reads one contiguous array instead of chasing up to 16
//! pointers — on a million keys that halved the time of a block's update — and a leaf costs no
//! allocation of its own.
//!
//! Memory: a [`Child`] slot is 56 bytes. `n` random keys make about `n / ln 16 ≈ 0.36 n`
//! branches, hence `≈ 1.36 n` slots: a million accounts take about 80 MB.
//!
//! Accounts are never deleted, so the trie has no removal: a subtree only ever gains keys, and a
//! branch, once made, always holds at least two keys.
//!
//! Persistence: a branch's slots are shared (`Arc`) between clones of the trie and copied on
//! write, so cloning a trie is O(1) and updating a clone copies only the branches on the updated
//! paths. A validator executes a proposed block that creates accounts on a clone of the
//! committed trie (the result costs what the block touched, not the size of the state, and
//! committing it is a swap); one that creates none updates the state's own trie in place, where
//! no other copy holds a branch, and is set back by its old leaves if not committed.
//!
//! Over 600 lines with its tests: the code is under 500; the tests (a reference root, proofs,
//! properties) stay beside the private node types they check.

use std::{fmt, sync::Arc};

use rayon::prelude::*;

use crate::{
    Hash,
    address::ADDRESS_LEN,
    codec::{CodecError, Decode, Encode, Reader, put_count_u8},
    hash::{Domain, keyed},
    limits::STATE_PROOF_DEPTH_MAX,
};

/// A key of the state trie: a raw 21-byte address.
pub type StateKey = [u8; ADDRESS_LEN];

/// One upsert: a key and its new leaf hash.
pub(super) type Entry = (StateKey, Hash);

const RADIX: usize = 16;

/// A slice of at least this many updates has its children updated on the rayon pool; below it,
/// the hand-off costs more than the few dozen paths it would spread.
const PARALLEL_MIN: usize = 64;

/// A batch of at least this many updates is sorted on the rayon pool.
const PARALLEL_SORT_MIN: usize = 4096;

// Every key nibble is a level, so the deepest branch is at depth 41 and a proof has at most 42.
const _: () = assert!(STATE_PROOF_DEPTH_MAX == 2 * ADDRESS_LEN);
// The branch depth is hashed as one byte.
const _: () = assert!(STATE_PROOF_DEPTH_MAX <= u8::MAX as usize);
// Slots are what a million keys multiply: a hash, and a key or a bitmap and a boxed slice.
const _: () = assert!(size_of::<Node>() == 24 && size_of::<Child>() == 56);

#[derive(Clone)]
enum Node {
    /// The empty trie's root, and a new slot while an update fills it; never left in a branch.
    Empty,
    Leaf(StateKey),
    /// `children` holds one slot per set bit of `bitmap`, in nibble order; shared between the
    /// clones of a trie until one of them writes to it.
    Branch {
        bitmap: u16,
        children: Arc<[Child]>,
    },
}

/// A node and its hash: the leaf hash for a leaf, the cached branch hash for a branch, so that
/// reading a root is O(1).
#[derive(Clone)]
struct Child {
    hash: Hash,
    node: Node,
}

impl Child {
    const EMPTY: Self = Self { hash: Hash::ZERO, node: Node::Empty };
}

/// Nibble `depth` of `key`: the high nibble of byte `depth / 2` for even `depth`, else the low.
///
/// Callers pass `depth < 2 * ADDRESS_LEN`; a larger depth reads as nibble 0 rather than panic.
fn nibble(key: &StateKey, depth: usize) -> usize {
    let byte = key.get(depth / 2).copied().unwrap_or(0);
    usize::from(if depth % 2 == 0 { byte >> 4 } else { byte & 0x0f })
}

/// Bit `slot` of a bitmap.
const fn bit(slot: usize) -> u16 {
    1 << (slot % RADIX)
}

/// The position in a branch's slots of the child at `slot`, if there is one.
const fn position(bitmap: u16, slot: usize) -> Option<usize> {
    if bitmap & bit(slot) == 0 { None } else { Some((bitmap & (bit(slot) - 1)).count_ones() as usize) }
}

/// The hash of a branch at `depth` with children `bitmap` whose hashes, in nibble order, are
/// `children`.
pub(super) fn branch_hash<'a>(
    depth: usize,
    bitmap: u16,
    children: impl IntoIterator<Item = &'a Hash>,
) -> Hash {
    // One contiguous buffer and a one-shot keyed hash: a streaming `blake3::Hasher` is ~2 KB to
    // set up and tear down, which dominated branch hashing in profiles.
    let mut buf = [0u8; 3 + RADIX * 32];
    buf[0] = depth as u8;
    buf[1..3].copy_from_slice(&bitmap.to_le_bytes());
    let mut len = 3;
    for (child, slot) in children.into_iter().zip(buf[3..].chunks_exact_mut(32)) {
        slot.copy_from_slice(child.as_bytes());
        len += 32;
    }
    keyed(Domain::StateNode, &buf[..len])
}

/// The 16 runs of `batch` (sorted by key, all sharing the first `depth` nibbles) by nibble `depth`.
fn split_by_nibble(batch: &[Entry], depth: usize) -> [&[Entry]; RADIX] {
    let mut groups: [&[Entry]; RADIX] = [&[]; RADIX];
    let mut rest = batch;
    for (n, group) in groups.iter_mut().enumerate() {
        let (head, tail) = rest.split_at(rest.partition_point(|(key, _)| nibble(key, depth) <= n));
        *group = head;
        rest = tail;
    }
    debug_assert!(rest.is_empty());
    groups
}

/// What an update did to a subtree: keys added, and bytes of branch slots allocated (copies of
/// branches a clone still shares, and new branches).
#[derive(Clone, Copy, Default)]
struct Updated {
    inserted: usize,
    allocated: usize,
}

impl std::ops::Add for Updated {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self { inserted: self.inserted + other.inserted, allocated: self.allocated + other.allocated }
    }
}

/// Bytes a branch's slots take.
const fn branch_bytes(slots: usize) -> usize {
    size_of::<usize>() * 2 + slots * size_of::<Child>()
}

/// Applies `batch` (sorted, unique keys, all in this subtree) to the subtree at `depth`, hashes
/// included.
fn update_child(child: &mut Child, depth: usize, batch: &[Entry]) -> Updated {
    match batch {
        [] => return Updated::default(),
        [(key, hash)] => match &child.node {
            Node::Empty => {
                *child = Child { hash: *hash, node: Node::Leaf(*key) };
                return Updated { inserted: 1, allocated: 0 };
            }
            Node::Leaf(leaf) if leaf == key => {
                child.hash = *hash;
                return Updated::default();
            }
            _ => {}
        },
        _ => {}
    }
    // At least two distinct keys now live in this subtree: it is a branch. Two distinct keys
    // differ at some nibble below 42, so `depth` stays a valid nibble index.
    debug_assert!(depth < STATE_PROOF_DEPTH_MAX);
    // Whether the branch's slots end in a new allocation.
    let mut fresh = true;
    let (bitmap, children): (u16, Arc<[Child]>) = match std::mem::replace(&mut child.node, Node::Empty) {
        Node::Branch { bitmap, children } => {
            fresh = false;
            (bitmap, children)
        }
        // The old leaf is pushed down by its next nibble.
        Node::Leaf(key) => {
            (bit(nibble(&key, depth)), Arc::from([Child { hash: child.hash, node: Node::Leaf(key) }]))
        }
        Node::Empty => (0, Arc::from([])),
    };
    let groups = split_by_nibble(batch, depth);
    let touched = groups.iter().enumerate().filter(|(_, g)| !g.is_empty()).fold(0, |m, (n, _)| m | bit(n));
    fresh |= touched & !bitmap != 0;
    let (bitmap, mut shared) = with_new_slots(bitmap, children, touched & !bitmap);
    // Copy on write: the slots of a branch another clone still holds are copied (each slot's
    // clone is a hash and a key or a reference), the others are written in place.
    if Arc::get_mut(&mut shared).is_none() {
        shared = shared.iter().cloned().collect();
        fresh = true;
    }
    let Some(children) = Arc::get_mut(&mut shared) else { unreachable!("a fresh copy is unique") };

    // Pair each touched slot with its run of the batch; slots follow the bitmap's nibble order.
    let nibbles = (0..RADIX).filter(|&n| bitmap & bit(n) != 0);
    let work = children.iter_mut().zip(nibbles).filter_map(|(slot, n)| {
        let group = groups.get(n).copied().unwrap_or_default();
        (!group.is_empty()).then_some((slot, group))
    });
    let below = if batch.len() >= PARALLEL_MIN {
        work.collect::<Vec<_>>()
            .into_par_iter()
            .map(|(slot, group)| update_child(slot, depth + 1, group))
            .reduce(Updated::default, |a, b| a + b)
    } else {
        work.map(|(slot, group)| update_child(slot, depth + 1, group)).fold(Updated::default(), |a, b| a + b)
    };

    child.hash = branch_hash(depth, bitmap, children.iter().map(|c| &c.hash));
    let here = if fresh { branch_bytes(children.len()) } else { 0 };
    child.node = Node::Branch { bitmap, children: shared };
    below + Updated { inserted: 0, allocated: here }
}

/// The hash of the subtree at `depth` holding exactly `batch` (sorted, unique keys that share
/// their first `depth` nibbles): what the node at that prefix of a trie holding these keys and
/// others elsewhere hashes to.
pub(super) fn subtree_hash(batch: &[Entry], depth: usize) -> Hash {
    let mut child = Child::EMPTY;
    update_child(&mut child, depth, batch);
    child.hash
}

/// `children` (one per bit of `bitmap`) with an empty slot inserted for each bit of `new`.
fn with_new_slots(bitmap: u16, children: Arc<[Child]>, new: u16) -> (u16, Arc<[Child]>) {
    if new == 0 {
        return (bitmap, children);
    }
    let merged = bitmap | new;
    let mut old = children.iter();
    let slots: Vec<Child> = (0..RADIX)
        .filter(|&n| merged & bit(n) != 0)
        .map(|n| if new & bit(n) != 0 { Child::EMPTY } else { old.next().cloned().unwrap_or(Child::EMPTY) })
        .collect();
    (merged, Arc::from(slots))
}

/// Sorts `entries` by key, keeping the original order among equal keys, then moves the last
/// entry of each key to the front; returns how many keys there are.
fn sort_dedup_keep_last(entries: &mut [Entry]) -> usize {
    // Both sorts are stable, so the last of equal keys is the one given last.
    if entries.len() >= PARALLEL_SORT_MIN {
        entries.par_sort_by_key(|entry| entry.0);
    } else {
        entries.sort_by_key(|entry| entry.0);
    }
    let mut kept = 0;
    for i in 0..entries.len() {
        let last_of_key = match (entries.get(i), entries.get(i + 1)) {
            (Some(this), Some(next)) => this.0 != next.0,
            _ => true,
        };
        // `kept <= i`, so the swap only touches entries already looked at.
        if last_of_key {
            entries.swap(kept, i);
            kept += 1;
        }
    }
    kept
}

/// The state trie: per raw address, the leaf hash of its account.
///
/// Its root is a function of the set of `(key, leaf hash)` alone (see the [module](super) docs):
/// any order or batching of the same upserts gives the same root.
#[derive(Clone)]
pub struct StateTrie {
    root: Child,
    len: usize,
}

impl Default for StateTrie {
    fn default() -> Self {
        Self::new()
    }
}

impl StateTrie {
    /// An empty trie.
    pub const fn new() -> Self {
        Self { root: Child::EMPTY, len: 0 }
    }

    /// A trie of `entries` (same rules as [`update`](Self::update)).
    pub fn from_entries(entries: &mut [(StateKey, Hash)]) -> Self {
        let mut trie = Self::new();
        trie.update(entries);
        trie
    }

    /// The root hash, [`Hash::ZERO`] when empty. O(1): branch hashes are kept up to date.
    pub const fn root(&self) -> Hash {
        self.root.hash
    }

    /// Number of keys.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no keys.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The leaf hash stored for `key`.
    pub fn get(&self, key: &StateKey) -> Option<Hash> {
        let mut child = &self.root;
        let mut depth = 0;
        loop {
            match &child.node {
                Node::Empty => return None,
                Node::Leaf(leaf) => return (leaf == key).then_some(child.hash),
                Node::Branch { bitmap, children } => {
                    child = children.get(position(*bitmap, nibble(key, depth))?)?;
                    depth += 1;
                }
            }
        }
    }

    /// Upserts a batch of `(key, leaf hash)`. The batch is sorted in place by key; where a key
    /// appears more than once, its last occurrence wins.
    ///
    /// One recursive pass splits the sorted batch by nibble and descends only into children that
    /// some update reaches, in parallel on the caller's rayon pool where a slice holds at least
    /// 64 updates, then rehashes the touched branches on the way back up.
    ///
    /// Returns the bytes of branch slots it allocated: on a clone, what the clone no longer
    /// shares with its original, counted without walking the trie.
    pub fn update(&mut self, updates: &mut [(StateKey, Hash)]) -> usize {
        let unique = sort_dedup_keep_last(updates);
        let batch = updates.get(..unique).unwrap_or_default();
        let updated = update_child(&mut self.root, 0, batch);
        self.len += updated.inserted;
        updated.allocated
    }

    /// Bytes of branch slots this trie holds that `base` does not share with it: what a clone
    /// of `base` allocated by its updates (0 for an unchanged clone), by walking both: the
    /// reference [`StateTrie::update`]'s count is tested against.
    #[cfg(test)]
    fn bytes_apart_from(&self, base: &Self) -> usize {
        fn apart(child: &Child, base: Option<&Child>) -> usize {
            let Node::Branch { bitmap, children } = &child.node else { return 0 };
            let base_children = match base.map(|b| &b.node) {
                Some(Node::Branch { bitmap: base_bitmap, children: base_children }) => {
                    if Arc::ptr_eq(children, base_children) {
                        return 0;
                    }
                    Some((*base_bitmap, base_children))
                }
                _ => None,
            };
            let own = branch_bytes(children.len());
            let nibbles = (0..RADIX).filter(|&n| bitmap & bit(n) != 0);
            own + children
                .iter()
                .zip(nibbles)
                .map(|(c, n)| {
                    let b = base_children.and_then(|(bb, bc)| position(bb, n).and_then(|at| bc.get(at)));
                    apart(c, b)
                })
                .sum::<usize>()
        }
        apart(&self.root, Some(&base.root))
    }

    /// The proof that `key` maps to its stored leaf hash; `None` if the key is absent.
    pub fn prove(&self, key: &StateKey) -> Option<StateProof> {
        let mut levels = Vec::new();
        let mut child = &self.root;
        let mut depth = 0;
        loop {
            match &child.node {
                Node::Empty => return None,
                Node::Leaf(leaf) => return (leaf == key).then_some(StateProof { levels }),
                Node::Branch { bitmap, children } => {
                    let at = position(*bitmap, nibble(key, depth))?;
                    let siblings =
                        children.iter().enumerate().filter(|&(i, _)| i != at).map(|(_, c)| c.hash).collect();
                    levels.push(StateProofLevel { bitmap: *bitmap, siblings });
                    child = children.get(at)?;
                    depth += 1;
                }
            }
        }
    }
}

impl fmt::Debug for StateTrie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateTrie").field("len", &self.len).field("root", &self.root()).finish()
    }
}

/// One branch on a proof's path: which children exist, and the hashes of all but the one on the
/// path, in nibble order. Its depth is its position in the proof. A branch may have a single
/// child (another branch) when all of its keys share the next nibble: there are no extension
/// nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateProofLevel {
    bitmap: u16,
    siblings: Vec<Hash>,
}

impl StateProofLevel {
    /// Bit `n` is set when child `n` is not empty.
    pub const fn bitmap(&self) -> u16 {
        self.bitmap
    }

    /// The hashes of the non-empty children other than the one on the path, in nibble order.
    pub fn siblings(&self) -> &[Hash] {
        &self.siblings
    }
}

/// The branches from the root down to a key's leaf. Built by [`StateTrie::prove`] or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateProof {
    levels: Vec<StateProofLevel>,
}

impl StateProof {
    /// The branches, root first; level `i` is the branch at depth `i`.
    pub fn levels(&self) -> &[StateProofLevel] {
        &self.levels
    }
}

/// Whether `proof` shows that the trie with root `root` maps `key` to `leaf_hash`.
///
/// Every level must have the key's nibble among its children and exactly one sibling hash per
/// other child, and the last level at least two children (a branch holds at least two keys, so
/// a leaf is never an only child; upper levels may have one child, a branch, when all their keys
/// share the next nibble); at most [`STATE_PROOF_DEPTH_MAX`] levels. A zero leaf hash is refused,
/// since the empty trie's root is zero too.
///
/// The proof binds only the first `proof.levels().len()` nibbles of `key`; the rest must be bound
/// by `leaf_hash` itself (a canonical account hash that includes its address).
pub fn verify_state_proof(root: &Hash, key: &StateKey, leaf_hash: &Hash, proof: &StateProof) -> bool {
    if proof.levels.len() > STATE_PROOF_DEPTH_MAX || *leaf_hash == Hash::ZERO {
        return false;
    }
    if proof.levels.last().is_some_and(|last| last.bitmap.count_ones() < 2) {
        return false;
    }
    let mut acc = *leaf_hash;
    for (depth, level) in proof.levels.iter().enumerate().rev() {
        let slot = nibble(key, depth);
        if level.bitmap & bit(slot) == 0 || level.siblings.len() + 1 != level.bitmap.count_ones() as usize {
            return false;
        }
        let mut siblings = level.siblings.iter();
        let on_path = acc;
        // The counts were checked, so `siblings` yields exactly one hash per other child.
        let hashes = (0..RADIX)
            .filter(|&n| level.bitmap & bit(n) != 0)
            .map(|n| if n == slot { &on_path } else { siblings.next().unwrap_or(&Hash::ZERO) });
        acc = branch_hash(depth, level.bitmap, hashes);
    }
    acc == *root
}

impl Encode for StateProof {
    fn encode(&self, out: &mut Vec<u8>) {
        put_count_u8(out, self.levels.len());
        for level in &self.levels {
            out.extend_from_slice(&level.bitmap.to_le_bytes());
            for sibling in &level.siblings {
                sibling.encode(out);
            }
        }
    }
}

impl Decode for StateProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.count_u8("state proof levels", 0, STATE_PROOF_DEPTH_MAX)?;
        let mut levels = Vec::with_capacity(n);
        for depth in 0..n {
            let bitmap = r.u16("state proof bitmap")?;
            // The sibling count is the bitmap's, not a length an attacker could set apart.
            let children = bitmap.count_ones() as usize;
            // The last branch holds the leaf and something else; the others hold the path.
            let min = if depth + 1 == n { 2 } else { 1 };
            if children < min {
                return Err(CodecError::UnderLimit {
                    what: "state proof branch children",
                    got: children,
                    min,
                });
            }
            let siblings = r.items::<Hash>(children - 1)?;
            levels.push(StateProofLevel { bitmap, siblings });
        }
        Ok(Self { levels })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::{codec::decode_exact, hash::hash_parts};

    /// A leaf hash that, like the engine's account hash, commits to its key.
    fn leaf(key: &StateKey, version: u64) -> Hash {
        hash_parts(Domain::StateLeaf, &[key, &version.to_le_bytes()])
    }

    /// The definition, written out over a map: `subtree(set, depth)`.
    fn reference_root(set: &BTreeMap<StateKey, Hash>) -> Hash {
        fn subtree(set: &[(StateKey, Hash)], depth: usize) -> Hash {
            match set {
                [] => Hash::ZERO,
                [(_, hash)] => *hash,
                _ => {
                    let mut bytes = vec![depth as u8, 0, 0];
                    let mut bitmap = 0u16;
                    for n in 0..16u8 {
                        let child: Vec<_> = set
                            .iter()
                            .filter(|(key, _)| {
                                let byte = key[depth / 2];
                                (if depth % 2 == 0 { byte >> 4 } else { byte & 15 }) == n
                            })
                            .copied()
                            .collect();
                        if !child.is_empty() {
                            bitmap |= 1 << n;
                            bytes.extend_from_slice(subtree(&child, depth + 1).as_bytes());
                        }
                    }
                    bytes[1..3].copy_from_slice(&bitmap.to_le_bytes());
                    hash_parts(Domain::StateNode, &[&bytes])
                }
            }
        }
        subtree(&set.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), 0)
    }

    /// Keys either uniform or clustered around one key, so that many share long prefixes.
    fn key_strategy() -> impl Strategy<Value = StateKey> {
        prop_oneof![
            any::<StateKey>(),
            (0usize..21, any::<u8>(), 0usize..21, any::<u8>()).prop_map(|(i, a, j, b)| {
                let mut key = [0x5a; 21];
                key[i] = a;
                key[j] ^= b & 0x0f;
                key
            }),
        ]
    }

    /// A deterministic pseudo-random sequence (splitmix64), to shuffle and chunk from one seed.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_keys(n: usize, seed: u64) -> Vec<StateKey> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                let mut key = [0u8; 21];
                for chunk in key.chunks_mut(8) {
                    let bytes = splitmix(&mut state).to_le_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
                key
            })
            .collect()
    }

    fn trie_of(entries: &[(StateKey, Hash)]) -> StateTrie {
        StateTrie::from_entries(&mut entries.to_vec())
    }

    #[test]
    fn empty_trie() {
        let trie = StateTrie::new();
        assert_eq!(trie.root(), Hash::ZERO);
        assert_eq!((trie.len(), trie.is_empty()), (0, true));
        assert_eq!(trie.get(&[1; 21]), None);
        assert_eq!(trie.prove(&[1; 21]), None);
        let mut trie = StateTrie::new();
        trie.update(&mut []);
        assert_eq!(trie.root(), Hash::ZERO);
    }

    #[test]
    fn one_key_is_its_leaf() {
        let key = [7; 21];
        let trie = trie_of(&[(key, leaf(&key, 1))]);
        assert_eq!(trie.root(), leaf(&key, 1));
        let proof = trie.prove(&key).unwrap();
        assert!(proof.levels().is_empty());
        assert_eq!(proof.to_bytes(), [0]);
        assert!(verify_state_proof(&trie.root(), &key, &leaf(&key, 1), &proof));
        assert_eq!(trie.prove(&[8; 21]), None);
        assert_eq!(trie.get(&[8; 21]), None);
        // The empty trie's zero root proves nothing.
        assert!(!verify_state_proof(&Hash::ZERO, &key, &Hash::ZERO, &proof));
    }

    #[test]
    fn two_keys_make_a_root_branch() {
        let (a, mut b) = ([0x10; 21], [0x10; 21]);
        b[0] = 0xf0;
        let trie = trie_of(&[(b, leaf(&b, 0)), (a, leaf(&a, 0))]);
        let expected = hash_parts(
            Domain::StateNode,
            &[&[0], &0x8002u16.to_le_bytes(), leaf(&a, 0).as_bytes(), leaf(&b, 0).as_bytes()],
        );
        assert_eq!(trie.root(), expected);
    }

    #[test]
    fn a_clone_is_updated_apart_and_shares_what_it_did_not_touch() {
        let keys = random_keys(2_000, 7);
        let mut entries: Vec<_> = keys.iter().map(|k| (*k, leaf(k, 0))).collect();
        let base = StateTrie::from_entries(&mut entries);
        let root = base.root();
        let mut clone = base.clone();
        // Updates of existing keys and new keys, in the clone only.
        let fresh = random_keys(2, 8);
        let mut updates: Vec<_> = keys.iter().step_by(997).map(|k| (*k, leaf(k, 1))).collect();
        updates.extend(fresh.iter().map(|k| (*k, leaf(k, 2))));
        let allocated = clone.update(&mut updates.clone());
        assert_eq!(base.root(), root, "the original is untouched");
        assert_eq!(base.len(), 2_000);
        assert_eq!(clone.len(), 2_002);
        for k in keys.iter().step_by(997) {
            assert_eq!(base.get(k), Some(leaf(k, 0)));
            assert_eq!(clone.get(k), Some(leaf(k, 1)));
        }
        assert_eq!(base.get(&fresh[0]), None);
        // The clone's root is the root of its set, built from nothing.
        let mut all: BTreeMap<StateKey, Hash> = entries.iter().copied().collect();
        all.extend(updates.iter().copied());
        assert_eq!(clone.root(), reference_root(&all));
        // The top branch was copied, a branch no update reached is shared.
        let (Node::Branch { children: a, .. }, Node::Branch { children: b, .. }) =
            (&base.root.node, &clone.root.node)
        else {
            panic!("2,000 keys make a branch at the root")
        };
        assert!(!Arc::ptr_eq(a, b));
        let shared = a.iter().zip(b.iter()).any(|(x, y)| match (&x.node, &y.node) {
            (Node::Branch { children: x, .. }, Node::Branch { children: y, .. }) => Arc::ptr_eq(x, y),
            _ => false,
        });
        assert!(shared, "some subtree of the root is shared");
        assert_eq!(base.clone().bytes_apart_from(&base), 0);
        let apart = clone.bytes_apart_from(&base);
        assert_eq!(allocated, apart, "an update counts what it allocated");
        let whole = clone.bytes_apart_from(&StateTrie::new());
        assert!(apart > 0 && apart * 4 < whole, "{apart} of {whole} bytes apart");
    }

    #[test]
    fn updates_change_the_root_and_restoring_restores_it() {
        let keys = random_keys(500, 1);
        let mut entries: Vec<_> = keys.iter().map(|k| (*k, leaf(k, 0))).collect();
        let mut trie = StateTrie::from_entries(&mut entries);
        let original = trie.root();
        for key in keys.iter().step_by(37) {
            trie.update(&mut [(*key, leaf(key, 1))]);
            assert_ne!(trie.root(), original);
            assert_eq!(trie.get(key), Some(leaf(key, 1)));
            trie.update(&mut [(*key, leaf(key, 0))]);
            assert_eq!(trie.root(), original);
        }
        assert_eq!(trie.len(), 500);
    }

    #[test]
    fn the_last_update_of_a_key_wins() {
        let key = [3; 21];
        let other = [4; 21];
        let mut batch =
            [(key, leaf(&key, 1)), (other, leaf(&other, 1)), (key, leaf(&key, 2)), (key, leaf(&key, 3))];
        let trie = StateTrie::from_entries(&mut batch);
        assert_eq!(trie.get(&key), Some(leaf(&key, 3)));
        assert_eq!(trie.len(), 2);
        // Large batches go through the parallel sort, which must be stable too.
        let mut big: Vec<_> = random_keys(PARALLEL_SORT_MIN, 2).iter().map(|k| (*k, leaf(k, 0))).collect();
        big.push((key, leaf(&key, 1)));
        big.push((key, leaf(&key, 2)));
        let trie = StateTrie::from_entries(&mut big);
        assert_eq!(trie.get(&key), Some(leaf(&key, 2)));
        assert_eq!(trie.len(), PARALLEL_SORT_MIN + 1);
    }

    #[test]
    fn large_parallel_batches_match_the_reference() {
        let keys = random_keys(4000, 3);
        let mut set = BTreeMap::new();
        let mut trie = StateTrie::new();
        let mut first: Vec<_> = keys[..3000].iter().map(|k| (*k, leaf(k, 0))).collect();
        set.extend(first.iter().copied());
        trie.update(&mut first);
        assert_eq!(trie.root(), reference_root(&set));
        // Half rewrites, half new keys, as in a block.
        let mut second: Vec<_> = keys[2000..].iter().map(|k| (*k, leaf(k, 1))).collect();
        set.extend(second.iter().copied());
        trie.update(&mut second);
        assert_eq!(trie.root(), reference_root(&set));
        assert_eq!(trie.len(), 4000);
    }

    #[test]
    fn keys_differing_in_the_last_nibble() {
        let base = [0xab; 21];
        let mut entries = Vec::new();
        for last in 0..16u8 {
            let mut key = base;
            key[20] = 0xa0 | last;
            entries.push((key, leaf(&key, u64::from(last))));
        }
        // And one that leaves the cluster at the very last byte's high nibble.
        let mut odd = base;
        odd[20] = 0x1b;
        entries.push((odd, leaf(&odd, 99)));
        let trie = trie_of(&entries);
        let set: BTreeMap<_, _> = entries.iter().copied().collect();
        assert_eq!(trie.root(), reference_root(&set));
        for (key, hash) in &entries {
            let proof = trie.prove(key).unwrap();
            let depth = if *key == odd { 41 } else { 42 };
            assert_eq!(proof.levels().len(), depth);
            assert!(verify_state_proof(&trie.root(), key, hash, &proof));
            assert_eq!(decode_exact::<StateProof>(&proof.to_bytes()).as_ref(), Ok(&proof));
        }
    }

    #[test]
    fn proofs_verify_and_tampering_fails() {
        let mut keys = random_keys(60, 4);
        keys.extend((0..20u8).map(|i| {
            let mut key = [0x33; 21];
            key[20] = i;
            key[(usize::from(i) * 7) % 20] ^= i;
            key
        }));
        let entries: Vec<_> = keys.iter().map(|k| (*k, leaf(k, 5))).collect();
        let trie = trie_of(&entries);
        let root = trie.root();
        for (key, hash) in &entries {
            let proof = trie.prove(key).unwrap();
            assert!(verify_state_proof(&root, key, hash, &proof));
            let bytes = proof.to_bytes();
            for pos in 0..bytes.len() {
                // The lowest and highest bit of every byte (all bytes and values: proptest below).
                for xor in [0x01, 0x80] {
                    let mut bad = bytes.clone();
                    bad[pos] ^= xor;
                    if let Ok(bad) = decode_exact::<StateProof>(&bad) {
                        assert!(!verify_state_proof(&root, key, hash, &bad), "byte {pos} ^ {xor}");
                    }
                }
            }
            for byte in 0..32 {
                let mut bad = *hash;
                bad.0[byte] ^= 1;
                assert!(!verify_state_proof(&root, key, &bad, &proof));
                let mut bad_root = root;
                bad_root.0[byte] ^= 1;
                assert!(!verify_state_proof(&bad_root, key, hash, &proof));
            }
            for nibble_index in 0..42 {
                let mut other = *key;
                other[nibble_index / 2] ^= if nibble_index % 2 == 0 { 0x10 } else { 0x01 };
                // A verifier hashes the account it was given, whose address is the key.
                assert!(!verify_state_proof(&root, &other, &leaf(&other, 5), &proof));
                // The path itself binds the nibbles above the leaf, and only those.
                let on_path = nibble_index < proof.levels().len();
                assert_eq!(verify_state_proof(&root, &other, hash, &proof), !on_path);
            }
        }
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let entries: Vec<_> = random_keys(40, 5).iter().map(|k| (*k, leaf(k, 0))).collect();
        let trie = trie_of(&entries);
        let root = trie.root();
        let (key, hash) = entries[0];
        let proof = trie.prove(&key).unwrap();
        assert!(!proof.levels().is_empty());
        let slot = nibble(&key, 0);
        // The key's nibble missing from a bitmap (another bit set in its place).
        let depth = proof.levels().len() - 1;
        let mut bad = proof.clone();
        let last = &mut bad.levels[depth];
        let other_bit = (0..16).find(|n| last.bitmap & (1 << n) == 0).unwrap();
        last.bitmap = (last.bitmap & !(1 << nibble(&key, depth))) | (1 << other_bit);
        assert!(!verify_state_proof(&root, &key, &hash, &bad));
        // A sibling too many, too few.
        let mut bad = proof.clone();
        bad.levels[depth].siblings.push(Hash::ZERO);
        assert!(!verify_state_proof(&root, &key, &hash, &bad));
        let mut bad = proof;
        bad.levels[depth].siblings.pop();
        assert!(!verify_state_proof(&root, &key, &hash, &bad));
        // A leaf as an only child, which the canonical trie never has: over a lone leaf it would
        // otherwise hash to a root of its own.
        let lone = StateProof { levels: vec![StateProofLevel { bitmap: 1 << slot, siblings: vec![] }] };
        assert!(!verify_state_proof(&branch_hash(0, 1 << slot, [&hash]), &key, &hash, &lone));
        // Too deep.
        let level = StateProofLevel { bitmap: 0xffff, siblings: vec![Hash::ZERO; 15] };
        let deep = StateProof { levels: vec![level; STATE_PROOF_DEPTH_MAX + 1] };
        assert!(!verify_state_proof(&root, &key, &hash, &deep));
        let mut bytes = deep.to_bytes();
        assert!(matches!(decode_exact::<StateProof>(&bytes), Err(CodecError::OverLimit { .. })));
        bytes[0] = STATE_PROOF_DEPTH_MAX as u8;
        bytes.truncate(bytes.len() - (2 + 15 * 32));
        assert!(decode_exact::<StateProof>(&bytes).is_ok());
        // The decoder refuses a last level with one child, and an empty bitmap anywhere.
        assert!(matches!(decode_exact::<StateProof>(&[1, 4, 0]), Err(CodecError::UnderLimit { .. })));
        assert!(matches!(decode_exact::<StateProof>(&[2, 0, 0]), Err(CodecError::UnderLimit { .. })));
        let mut two = vec![2, 4, 0, 3, 0];
        two.extend_from_slice(&[0; 32]);
        assert!(decode_exact::<StateProof>(&two).is_ok());
        // Absent keys have no proof.
        assert_eq!(trie.prove(&[0xee; 21]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn root_is_independent_of_order_and_batching(
            raw in prop::collection::vec((key_strategy(), 0u64..4), 0..300),
            seed in any::<u64>(),
        ) {
            let batch: Vec<_> = raw.iter().map(|(k, v)| (*k, leaf(k, *v))).collect();
            let mut set = BTreeMap::new();
            for (k, v) in &batch {
                set.insert(*k, *v);
            }
            let expected = reference_root(&set);

            let one_batch = trie_of(&batch);
            prop_assert_eq!(one_batch.root(), expected);
            prop_assert_eq!(one_batch.len(), set.len());
            for (k, v) in &set {
                prop_assert_eq!(one_batch.get(k), Some(*v));
            }

            // The same set in a seeded random order, in random chunks.
            let mut state = seed;
            let mut distinct: Vec<_> = set.iter().map(|(k, v)| (*k, *v)).collect();
            for i in (1..distinct.len()).rev() {
                distinct.swap(i, (splitmix(&mut state) % (i as u64 + 1)) as usize);
            }
            let mut chunked = StateTrie::new();
            let mut rest = distinct.as_mut_slice();
            while !rest.is_empty() {
                let size = 1 + (splitmix(&mut state) % 100) as usize;
                let (chunk, tail) = rest.split_at_mut(size.min(rest.len()));
                chunked.update(chunk);
                rest = tail;
            }
            prop_assert_eq!(chunked.root(), expected);

            // One by one, in the original order with its repeats.
            let mut single = StateTrie::new();
            for entry in &batch {
                single.update(&mut [*entry]);
            }
            prop_assert_eq!(single.root(), expected);
            prop_assert_eq!(single.len(), set.len());

            for (k, v) in &set {
                let proof = one_batch.prove(k).unwrap();
                prop_assert!(verify_state_proof(&expected, k, v, &proof));
                prop_assert_eq!(decode_exact::<StateProof>(&proof.to_bytes()), Ok(proof));
            }
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
            if let Ok(proof) = decode_exact::<StateProof>(&bytes) {
                prop_assert_eq!(proof.to_bytes(), bytes);
            }
        }

        #[test]
        fn decoder_survives_mutated_proofs(
            keys in prop::collection::vec(key_strategy(), 1..60),
            pick in any::<prop::sample::Index>(),
            pos in any::<prop::sample::Index>(),
            xor in 1u8..=255,
            cut in any::<bool>(),
        ) {
            let entries: Vec<_> = keys.iter().map(|k| (*k, leaf(k, 0))).collect();
            let trie = trie_of(&entries);
            let (key, hash) = *pick.get(&entries);
            let mut bytes = trie.prove(&key).unwrap().to_bytes();
            let pos = pos.index(bytes.len());
            if cut {
                bytes.truncate(pos);
            } else {
                bytes[pos] ^= xor;
            }
            if let Ok(proof) = decode_exact::<StateProof>(&bytes) {
                prop_assert_eq!(proof.to_bytes(), bytes);
                prop_assert!(!verify_state_proof(&trie.root(), &key, &hash, &proof));
            }
        }
    }
}
