//! The replay set: ids of the transactions included within the TTL window, kept in
//! generations shared between clones of the state.

use std::sync::Arc;

use super::FastMap;
use crate::tx::TxId;

/// Ids a generation of the replay set gathers before it is sealed (shared, never copied again
/// until merged).
const REPLAY_SEAL_IDS: usize = 16_384;

/// Sealed generations kept before the smallest neighbours are merged: a lookup probes at most
/// this many maps, plus the open one.
const REPLAY_GENERATIONS_MAX: usize = 8;

/// One sealed generation of the replay set: ids with their expirations, and the range of those.
#[derive(Debug)]
struct Generation {
    ids: FastMap<TxId, i64>,
    min_expiration_ms: i64,
    max_expiration_ms: i64,
}

impl Generation {
    fn new(ids: FastMap<TxId, i64>) -> Self {
        let (min, max) = ids.values().fold((i64::MAX, i64::MIN), |(lo, hi), &e| (lo.min(e), hi.max(e)));
        Self { ids, min_expiration_ms: min, max_expiration_ms: max }
    }
}

/// Ids of transactions included within the TTL window, with their expirations.
///
/// The window can hold rate × TTL ids (36 million at 10,000 tx/s and the one-hour TTL), and a
/// state is cloned to execute a proposed block, so cloning must not copy it: the ids live in
/// sealed generations shared between clones (`Arc`), plus an open one that takes a block's ids.
/// A generation is dropped once all its ids have expired; to bound the maps a lookup probes,
/// the two smallest neighbouring generations are merged (dropping their expired ids) when there
/// are more than [`REPLAY_GENERATIONS_MAX`]. An expired id may thus be kept a while: harmless,
/// expiration is checked before replay, and lookups ([`ReplaySet::contains`]) ignore it.
#[derive(Clone, Debug, Default)]
pub(super) struct ReplaySet {
    sealed: Vec<Arc<Generation>>,
    open: FastMap<TxId, i64>,
}

impl ReplaySet {
    pub(super) fn insert(&mut self, id: TxId, expiration_ms: i64) {
        self.open.insert(id, expiration_ms);
    }

    /// Forgets an id inserted since the last [`ReplaySet::prune`] (a rolled-back block's).
    pub(super) fn remove(&mut self, id: &TxId) {
        self.open.remove(id);
    }

    /// The generations' maps, newest first (the open one, then the sealed ones).
    fn maps(&self) -> impl Iterator<Item = &FastMap<TxId, i64>> + '_ {
        std::iter::once(&self.open).chain(self.sealed.iter().rev().map(|g| &g.ids))
    }

    /// Whether `id` is held and expires after `now_ms`.
    pub(super) fn contains(&self, id: &TxId, now_ms: i64) -> bool {
        self.maps().find_map(|ids| ids.get(id).copied()).is_some_and(|exp| exp > now_ms)
    }

    /// Whether the id of a transaction expiring at `expiration_ms` is held: an id's expiration
    /// is part of what it hashes, so only generations whose range covers it are probed (one or
    /// two when clients give similar time-to-lives).
    pub(super) fn contains_expiring(&self, id: &TxId, expiration_ms: i64) -> bool {
        self.open.contains_key(id)
            || self.sealed.iter().rev().any(|g| {
                (g.min_expiration_ms..=g.max_expiration_ms).contains(&expiration_ms) && g.ids.contains_key(id)
            })
    }

    /// Every held id expiring after `now_ms`.
    pub(super) fn entries(&self, now_ms: i64) -> impl Iterator<Item = (TxId, i64)> + '_ {
        self.maps()
            .flat_map(|ids| ids.iter())
            .filter(move |(_, exp)| **exp > now_ms)
            .map(|(id, exp)| (*id, *exp))
    }

    /// As [`ReplaySet::prune`], keeping `keep` in the open generation (the ids an open ledger
    /// added, which its rollback removes from there): an open ledger moved onto the next
    /// committed state ([`BlockExecution::rebase`](super::BlockExecution::rebase)) keeps its
    /// transactions' ids where it can still take them back.
    pub(super) fn prune_keeping(&mut self, now_ms: i64, keep: &[(TxId, i64)]) {
        if self.open.len() < REPLAY_SEAL_IDS {
            // The open generation is neither sealed nor filtered below the threshold.
            self.prune(now_ms);
            return;
        }
        for (id, _) in keep {
            self.open.remove(id);
        }
        self.prune(now_ms);
        for &(id, expiration_ms) in keep {
            self.open.insert(id, expiration_ms);
        }
    }

    /// After a block at `now_ms`: drops the generations whose ids have all expired, seals the
    /// open generation once it holds [`REPLAY_SEAL_IDS`], and merges generations above
    /// [`REPLAY_GENERATIONS_MAX`].
    pub(super) fn prune(&mut self, now_ms: i64) {
        self.sealed.retain(|g| g.max_expiration_ms > now_ms);
        if self.open.len() >= REPLAY_SEAL_IDS {
            let mut ids = std::mem::take(&mut self.open);
            ids.retain(|_, exp| *exp > now_ms);
            if !ids.is_empty() {
                self.sealed.push(Arc::new(Generation::new(ids)));
            }
        }
        while self.sealed.len() > REPLAY_GENERATIONS_MAX {
            // The neighbours with the fewest ids together: merging copies them once into a new
            // generation, so small ones are merged often and large ones rarely.
            let Some(i) = (0..self.sealed.len() - 1)
                .min_by_key(|&i| self.sealed[i].ids.len() + self.sealed[i + 1].ids.len())
            else {
                break;
            };
            let (a, b) = (self.sealed.remove(i), self.sealed.remove(i));
            let mut ids = FastMap::default();
            ids.reserve(a.ids.len() + b.ids.len());
            ids.extend(
                a.ids.iter().chain(b.ids.iter()).filter(|(_, exp)| **exp > now_ms).map(|(k, v)| (*k, *v)),
            );
            if !ids.is_empty() {
                self.sealed.insert(i, Arc::new(Generation::new(ids)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::hash::Hash;

    fn id(n: u64) -> TxId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        Hash(b)
    }

    /// Pruning while an open ledger keeps its ids: the kept ids stay in the open generation,
    /// where the ledger's rollback takes them back, even when the open generation is sealed.
    #[test]
    fn ids_kept_through_a_prune_can_still_be_taken_back() {
        let now = 1_000_000i64;
        let mut set = ReplaySet::default();
        let committed: Vec<(TxId, i64)> =
            (0..REPLAY_SEAL_IDS as u64).map(|n| (id(n), now + 60_000)).collect();
        let kept: Vec<(TxId, i64)> = (0..100).map(|n| (id(1 << 40 | n), now + 60_000)).collect();
        for &(i, exp) in committed.iter().chain(&kept) {
            set.insert(i, exp);
        }
        set.prune_keeping(now, &kept);
        assert_eq!(set.sealed.len(), 1, "the open generation was sealed");
        assert!(kept.iter().all(|(i, _)| set.contains(i, now)));
        for (i, _) in &kept {
            set.remove(i);
        }
        assert!(kept.iter().all(|(i, _)| !set.contains(i, now)), "the kept ids were taken back");
        assert!(committed.iter().all(|(i, _)| set.contains(i, now)));
    }

    /// The replay set against a plain map, over enough blocks to seal, merge and drop
    /// generations, with rolled-back blocks and clones.
    #[test]
    fn replay_set_matches_a_plain_map() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut set = ReplaySet::default();
        let mut model: HashMap<TxId, i64> = HashMap::new();
        let mut fresh = 0u64;
        let mut now = 1_000_000i64;
        let (mut max_generations, mut shared) = (0, 0);
        for block in 0..160 {
            now += 1_000;
            let n = (next() % 4_000) as usize;
            let mut added = Vec::with_capacity(n);
            for _ in 0..n {
                fresh += 1;
                // Time-to-lives of 1 to 60 s, and a few of an hour.
                let ttl = if next() % 50 == 0 { 3_600_000 } else { 1_000 + (next() % 59_000) as i64 };
                set.insert(id(fresh), now + ttl);
                added.push((id(fresh), now + ttl));
            }
            let before = set.clone();
            if block % 7 == 3 {
                // A rolled-back block.
                for (i, _) in &added {
                    set.remove(i);
                }
            } else {
                model.extend(added.iter().copied());
                set.prune(now);
            }
            model.retain(|_, exp| *exp > now);
            assert!(set.sealed.len() <= REPLAY_GENERATIONS_MAX);
            max_generations = max_generations.max(set.sealed.len());
            // The clone taken before the rollback or prune shares the generations that survived
            // it, and still holds every id of the block.
            shared += set.sealed.iter().filter(|g| before.sealed.iter().any(|b| Arc::ptr_eq(g, b))).count();
            assert!(
                added.iter().all(|(i, exp)| before.contains(i, now) && before.contains_expiring(i, *exp))
            );
            for _ in 0..200 {
                let k = id(1 + next() % fresh.max(1));
                let expected = model.get(&k).copied();
                assert_eq!(set.contains(&k, now), expected.is_some(), "block {block}");
                if let Some(exp) = expected {
                    assert!(set.contains_expiring(&k, exp));
                }
                assert!(!set.contains(&id(fresh + 1 + next() % 1_000), now));
            }
        }
        let mut entries: Vec<_> = set.entries(now).collect();
        let mut expected: Vec<_> = model.into_iter().collect();
        entries.sort_unstable();
        expected.sort_unstable();
        assert_eq!(entries, expected);
        assert!(max_generations >= 4, "the test seals and merges generations ({max_generations})");
        assert!(shared > 0, "clones share sealed generations");
    }
}
