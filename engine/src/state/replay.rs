//! The replay set: ids of the transactions included within the TTL window, kept in
//! generations shared between clones of the state; once a store holds a generation's ids, in
//! a fixed-size filter in front of the store ([`ReplaySet::spill`]).

use std::sync::Arc;

use super::{FastMap, ReplayStore, filter::ReplayFilter};
use crate::tx::TxId;

/// Ids a generation of the replay set gathers before it is sealed (shared, never copied again
/// until merged).
const REPLAY_SEAL_IDS: usize = 16_384;

/// Sealed generations kept before the smallest neighbours are merged: a lookup probes at most
/// this many maps, plus the open one.
const REPLAY_GENERATIONS_MAX: usize = 8;

/// Most leading bits of an id a generation's index is keyed by (2^20 + 1 positions, 4 MiB).
const INDEX_BITS_MAX: u32 = 20;

/// One sealed generation of the replay set: ids with their expirations, sorted by id (40 bytes
/// an id, where a map takes 47–94 with its load), where each run of ids sharing their leading
/// bits starts, the range of the expirations, and the newest ledger whose ids it holds.
#[derive(Debug)]
struct Generation {
    ids: Vec<(TxId, i64)>,
    /// `index[p]` is the position of the first id whose leading `bits` bits are `p` or more
    /// (`2^bits + 1` positions, the last `ids.len()`): a lookup searches the one or two ids of
    /// its run, not the whole generation — ids are hashes, so runs are even. Measured at the
    /// 4-validator peak: the binary searches over every generation (a transaction's
    /// expiration falls in all of them when clients give similar time-to-lives) were ~5 % of
    /// a validator's CPU, most of it cache misses in the comparisons.
    index: Vec<u32>,
    bits: u32,
    min_expiration_ms: i64,
    max_expiration_ms: i64,
    height: u64,
}

/// The leading `bits` bits of `id` (none: 0).
fn leading_bits(id: &TxId, bits: u32) -> usize {
    let first = u64::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3], id.0[4], id.0[5], id.0[6], id.0[7]]);
    // At most INDEX_BITS_MAX bits: the value fits any usize.
    first.checked_shr(64 - bits).unwrap_or(0) as usize
}

impl Generation {
    /// The generation of `ids` (any order, each id once) of the ledgers up to `height`.
    fn new(mut ids: Vec<(TxId, i64)>, height: u64) -> Self {
        ids.sort_unstable_by_key(|(id, _)| *id);
        Self::from_sorted(ids, height)
    }

    /// The generation of `ids`, sorted by id, each once.
    fn from_sorted(mut ids: Vec<(TxId, i64)>, height: u64) -> Self {
        debug_assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "a generation is sorted, each id once");
        ids.shrink_to_fit();
        let (min, max) = ids.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &(_, e)| (lo.min(e), hi.max(e)));
        // About one id a run: the largest power of two at most the count.
        let bits = (usize::BITS - ids.len().leading_zeros()).saturating_sub(1).min(INDEX_BITS_MAX);
        let position = |i: usize| u32::try_from(i).expect("a generation holds fewer than 2^32 ids");
        let mut index = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for p in 0..1usize << bits {
            while i < ids.len() && leading_bits(&ids[i].0, bits) < p {
                i += 1;
            }
            index.push(position(i));
        }
        index.push(position(ids.len()));
        Self { ids, index, bits, min_expiration_ms: min, max_expiration_ms: max, height }
    }

    /// The generation of the ids of `a` and `b` (each sorted) not expired at `now_ms`, merged
    /// in one pass; its height is the newer one's.
    fn merged(a: &Self, b: &Self, now_ms: i64) -> Self {
        let live = |e: &&(TxId, i64)| e.1 > now_ms;
        let (mut x, mut y) = (a.ids.iter().filter(live).peekable(), b.ids.iter().filter(live).peekable());
        let mut ids = Vec::with_capacity(a.ids.len() + b.ids.len());
        loop {
            let next = match (x.peek(), y.peek()) {
                (Some(p), Some(q)) if p.0 <= q.0 => x.next(),
                (Some(_), Some(_)) => y.next(),
                (Some(_), None) => x.next(),
                (None, _) => y.next(),
            };
            let Some(&entry) = next else { break };
            ids.push(entry);
        }
        Self::from_sorted(ids, a.height.max(b.height))
    }

    fn contains(&self, id: &TxId) -> bool {
        let p = leading_bits(id, self.bits);
        let (start, end) = (self.index[p] as usize, self.index[p + 1] as usize);
        self.ids[start..end].binary_search_by_key(id, |(i, _)| *i).is_ok()
    }
}

/// The ids a store holds: its filter, and the store that confirms what the filter may hold.
struct Spill {
    filter: ReplayFilter,
    store: Arc<dyn ReplayStore>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill").field("filter", &self.filter).finish_non_exhaustive()
    }
}

impl Spill {
    /// Whether the store holds the id: the filter first, then a read. A failed read counts as
    /// held — a transaction refused is recoverable, one included twice is not.
    fn holds(&self, id: &TxId, expiration_ms: i64) -> bool {
        self.filter.may_contain(id, expiration_ms) && self.store.holds(id, expiration_ms).unwrap_or(true)
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
/// expiration is checked before replay, and lookups ignore it.
///
/// With a store attached ([`ReplaySet::attach`]), a sealed generation whose ledgers the store
/// holds leaves memory for the store's table behind a filter of fixed size shared by every
/// clone ([`ReplaySet::spill`]): memory no longer grows with rate × TTL. The ids of ledgers
/// the store does not hold yet stay in the maps, exact.
#[derive(Clone, Debug, Default)]
pub(super) struct ReplaySet {
    sealed: Vec<Arc<Generation>>,
    open: FastMap<TxId, i64>,
    spill: Option<Arc<Spill>>,
}

impl ReplaySet {
    pub(super) fn insert(&mut self, id: TxId, expiration_ms: i64) {
        self.open.insert(id, expiration_ms);
    }

    /// Room for `n` more ids in the open generation (a restored window, inserted at once).
    pub(super) fn reserve(&mut self, n: usize) {
        self.open.reserve(n);
    }

    /// Forgets an id inserted since the last [`ReplaySet::prune`] (a rolled-back block's).
    pub(super) fn remove(&mut self, id: &TxId) {
        self.open.remove(id);
    }

    /// Every id held in memory with its expiration: the open generation's, then the sealed
    /// ones', newest first.
    fn all(&self) -> impl Iterator<Item = (&TxId, &i64)> + '_ {
        self.open.iter().chain(self.sealed.iter().rev().flat_map(|g| g.ids.iter().map(|(id, exp)| (id, exp))))
    }

    /// Whether the id of a transaction expiring at `expiration_ms` is held: an id's expiration
    /// is part of what it hashes, so only generations whose range covers it are probed (one or
    /// two when clients give similar time-to-lives), then the store's filter.
    pub(super) fn contains_expiring(&self, id: &TxId, expiration_ms: i64) -> bool {
        self.open.contains_key(id)
            || self.sealed.iter().rev().any(|g| {
                (g.min_expiration_ms..=g.max_expiration_ms).contains(&expiration_ms) && g.contains(id)
            })
            || self.spill.as_ref().is_some_and(|s| s.holds(id, expiration_ms))
    }

    /// Every id held in memory expiring after `now_ms` (not those moved to a store).
    pub(super) fn entries(&self, now_ms: i64) -> impl Iterator<Item = (TxId, i64)> + '_ {
        self.all().filter(move |(_, exp)| **exp > now_ms).map(|(id, exp)| (*id, *exp))
    }

    /// Ids held in memory (sealed and open generations, expired ones not yet dropped included).
    pub(super) fn len_in_memory(&self) -> usize {
        self.open.len() + self.sealed.iter().map(|g| g.ids.len()).sum::<usize>()
    }

    /// Bytes of the store's filter, if a store is attached.
    pub(super) fn filter_bytes(&self) -> Option<usize> {
        self.spill.as_ref().map(|s| s.filter.bytes())
    }

    /// Attaches `store`, which holds `stored` (its replay table: ids of the ledgers up to its
    /// [`ReplayStore::stored_height`]), behind a new filter of `filter_bytes` for a chain whose
    /// transactions live at most `max_ttl_ms`. Ids already in memory stay there.
    pub(super) fn attach(
        &mut self,
        store: Arc<dyn ReplayStore>,
        filter_bytes: usize,
        max_ttl_ms: i64,
        stored: impl IntoIterator<Item = (TxId, i64)>,
    ) {
        let filter = ReplayFilter::new(max_ttl_ms, filter_bytes);
        filter.insert_all(stored);
        self.spill = Some(Arc::new(Spill { filter, store }));
    }

    /// Moves the sealed generations whose ledgers the attached store holds into its filter
    /// (ids expired at `now_ms` are left out); returns how many ids left memory. Only the
    /// state of the ledgers the store holds may do this (the host's committed state): a
    /// generation of another ledger of the same height would be lost.
    pub(super) fn spill(&mut self, now_ms: i64) -> Result<usize, String> {
        let Some(spill) = &self.spill else { return Ok(0) };
        let stored = spill.store.stored_height()?;
        let n = self.sealed.iter().take_while(|g| g.height <= stored).count();
        if n == 0 {
            return Ok(0);
        }
        let gone: Vec<Arc<Generation>> = self.sealed.drain(..n).collect();
        spill
            .filter
            .insert_all(gone.iter().flat_map(|g| g.ids.iter().copied()).filter(|&(_, exp)| exp > now_ms));
        Ok(gone.iter().map(|g| g.ids.len()).sum())
    }

    /// As [`ReplaySet::prune`], keeping `keep` in the open generation (the ids an open ledger
    /// added, which its rollback removes from there): an open ledger moved onto the next
    /// committed state ([`BlockExecution::rebase`](super::BlockExecution::rebase)) keeps its
    /// transactions' ids where it can still take them back.
    pub(super) fn prune_keeping(&mut self, now_ms: i64, height: u64, keep: &[(TxId, i64)]) {
        if self.open.len() < REPLAY_SEAL_IDS {
            // The open generation is neither sealed nor filtered below the threshold.
            self.prune(now_ms, height);
            return;
        }
        for (id, _) in keep {
            self.open.remove(id);
        }
        self.prune(now_ms, height);
        for &(id, expiration_ms) in keep {
            self.open.insert(id, expiration_ms);
        }
    }

    /// After the block of ledger `height` at `now_ms`: drops the generations whose ids have all
    /// expired, seals the open generation once it holds [`REPLAY_SEAL_IDS`], and merges
    /// generations above [`REPLAY_GENERATIONS_MAX`].
    pub(super) fn prune(&mut self, now_ms: i64, height: u64) {
        self.sealed.retain(|g| g.max_expiration_ms > now_ms);
        if self.open.len() >= REPLAY_SEAL_IDS {
            let ids: Vec<(TxId, i64)> =
                std::mem::take(&mut self.open).into_iter().filter(|(_, exp)| *exp > now_ms).collect();
            if !ids.is_empty() {
                self.sealed.push(Arc::new(Generation::new(ids, height)));
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
            // Generations are in ledger order: the newer one's height covers both.
            let merged = Generation::merged(&a, &b, now_ms);
            if !merged.ids.is_empty() {
                self.sealed.insert(i, Arc::new(merged));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{
            Mutex,
            atomic::{AtomicU64, Ordering},
        },
    };

    use super::*;
    use crate::hash::Hash;

    fn id(n: u64) -> TxId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        Hash(b)
    }

    /// Ids spread like hashes (splitmix64 words).
    fn spread(n: u64) -> TxId {
        let mut b = [0u8; 32];
        for (k, word) in b.chunks_mut(8).enumerate() {
            let mut z = n.wrapping_mul(4).wrapping_add(k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
        }
        Hash(b)
    }

    /// A generation holds exactly its ids, whatever their count and however unevenly their
    /// leading bits fall (ids sharing a long prefix, ids all in one run), merged or not.
    #[test]
    fn a_generation_finds_exactly_its_ids_through_its_index() {
        for count in [0u64, 1, 2, 3, 5, 64, 1_000, 5_000] {
            for (name, make) in [("spread", spread as fn(u64) -> TxId), ("sequential", id)] {
                let members: Vec<(TxId, i64)> = (0..count).map(|n| (make(2 * n), 1_000)).collect();
                let g = Generation::new(members.clone(), 1);
                assert_eq!(g.index.len(), (1 << g.bits) + 1, "{name} {count}");
                for (n, (m, _)) in members.iter().enumerate() {
                    assert!(g.contains(m), "{name} {count}: member {n} not found");
                    assert!(!g.contains(&make(2 * n as u64 + 1)), "{name} {count}: a stranger found");
                }
                let other = Generation::new((0..count).map(|n| (make(2 * n + 1), 2_000)).collect(), 2);
                let merged = Generation::merged(&g, &other, 0);
                assert!((0..2 * count).all(|n| merged.contains(&make(n))), "{name} {count}: merged");
                assert!(!merged.contains(&make(2 * count + 1)) || count == 0);
            }
        }
        // Every id in one run: the run is searched whole.
        let same_prefix: Vec<(TxId, i64)> = (0..100u8)
            .map(|n| {
                let mut b = [0xab; 32];
                b[31] = n;
                (Hash(b), 1)
            })
            .collect();
        let g = Generation::new(same_prefix.clone(), 1);
        assert!(same_prefix.iter().all(|(m, _)| g.contains(m)));
        let mut stranger = [0xab; 32];
        stranger[31] = 200;
        assert!(!g.contains(&Hash(stranger)));
    }

    /// A store's replay table as a map: the ids of the ledgers up to `height`.
    #[derive(Default)]
    struct MapStore {
        ids: Mutex<HashMap<TxId, i64>>,
        height: AtomicU64,
        reads: AtomicU64,
    }

    impl ReplayStore for MapStore {
        fn holds(&self, id: &TxId, expiration_ms: i64) -> Result<bool, String> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(self.ids.lock().unwrap().get(id) == Some(&expiration_ms))
        }

        fn stored_height(&self) -> Result<u64, String> {
            Ok(self.height.load(Ordering::Relaxed))
        }
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
        set.prune_keeping(now, 1, &kept);
        assert_eq!(set.sealed.len(), 1, "the open generation was sealed");
        assert!(kept.iter().all(|(i, e)| set.contains_expiring(i, *e)));
        for (i, _) in &kept {
            set.remove(i);
        }
        assert!(kept.iter().all(|(i, e)| !set.contains_expiring(i, *e)), "the kept ids were taken back");
        assert!(committed.iter().all(|(i, e)| set.contains_expiring(i, *e)));
    }

    /// A store that cannot be read holds everything the filter may hold: a lookup refuses
    /// rather than let an id in twice.
    #[test]
    fn a_failed_read_counts_as_held() {
        struct Broken;
        impl ReplayStore for Broken {
            fn holds(&self, _: &TxId, _: i64) -> Result<bool, String> {
                Err("unreadable".into())
            }
            fn stored_height(&self) -> Result<u64, String> {
                Err("unreadable".into())
            }
        }
        let mut set = ReplaySet::default();
        set.attach(Arc::new(Broken), 4096, 60_000, [(id(1), 5_000)]);
        assert!(set.contains_expiring(&id(1), 5_000));
        assert!(!set.contains_expiring(&id(2), 5_000), "the filter answers no without a read");
        assert!(set.spill(1_000).is_err());
    }

    /// The replay set against a plain map, over enough blocks to seal, merge and drop
    /// generations, with rolled-back blocks and clones, and a store taking the generations of
    /// the ledgers it holds (through a small filter, so that it is read often).
    #[test]
    fn replay_set_matches_a_plain_map() {
        for with_store in [false, true] {
            matches_a_plain_map(with_store);
        }
    }

    fn matches_a_plain_map(with_store: bool) {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let store = Arc::new(MapStore::default());
        let mut set = ReplaySet::default();
        if with_store {
            set.attach(store.clone(), 16 * 1024, 3_600_000, []);
        }
        let mut model: HashMap<TxId, i64> = HashMap::new();
        // Every id ever added, with its expiration and its ledger (0: rolled back).
        let mut every: HashMap<TxId, (i64, u64)> = HashMap::new();
        let mut fresh = 0u64;
        let mut now = 1_000_000i64;
        let mut height = 0u64;
        let (mut max_generations, mut shared, mut spilled) = (0, 0, 0);
        for block in 0..160 {
            now += 1_000;
            let n = (next() % 4_000) as usize;
            let mut added = Vec::with_capacity(n);
            let rolled_back = block % 7 == 3;
            for _ in 0..n {
                fresh += 1;
                // Time-to-lives of 1 to 60 s, and a few of an hour.
                let ttl = if next() % 50 == 0 { 3_600_000 } else { 1_000 + (next() % 59_000) as i64 };
                set.insert(id(fresh), now + ttl);
                added.push((id(fresh), now + ttl));
                every.insert(id(fresh), (now + ttl, if rolled_back { 0 } else { height + 1 }));
            }
            let before = set.clone();
            if rolled_back {
                for (i, _) in &added {
                    set.remove(i);
                }
            } else {
                height += 1;
                model.extend(added.iter().copied());
                set.prune(now, height);
                if with_store && next() % 3 == 0 {
                    // The store catches up with some of the ledgers; the expired ids it drops.
                    let stored = height - next() % 3.min(height);
                    let mut ids = store.ids.lock().unwrap();
                    ids.extend(
                        every
                            .iter()
                            .filter(|(_, (_, h))| (1..=stored).contains(h))
                            .map(|(i, (e, _))| (*i, *e)),
                    );
                    ids.retain(|_, e| *e > now);
                    drop(ids);
                    store.height.store(stored, Ordering::Relaxed);
                    spilled += set.spill(now).unwrap();
                }
            }
            model.retain(|_, exp| *exp > now);
            assert!(set.sealed.len() <= REPLAY_GENERATIONS_MAX);
            max_generations = max_generations.max(set.sealed.len());
            // The clone taken before the rollback, prune or spill shares the generations that
            // survived it, and still holds every id of the block.
            shared += set.sealed.iter().filter(|g| before.sealed.iter().any(|b| Arc::ptr_eq(g, b))).count();
            assert!(added.iter().all(|(i, exp)| before.contains_expiring(i, *exp)));
            for _ in 0..200 {
                let k = id(1 + next() % fresh.max(1));
                let (exp, _) = every[&k];
                let held = exp > now && set.contains_expiring(&k, exp);
                assert_eq!(held, model.contains_key(&k), "block {block}");
                assert!(!set.contains_expiring(&id(fresh + 1 + next() % 1_000), now + 1_000));
            }
        }
        let enough = if with_store { 1 } else { 4 };
        assert!(max_generations >= enough, "the test seals and merges generations ({max_generations})");
        assert!(shared > 0, "clones share sealed generations");
        if with_store {
            assert!(spilled > 10_000, "generations went to the store ({spilled})");
            assert!(store.reads.load(Ordering::Relaxed) > 1_000, "the store was read");
            let in_memory: HashMap<TxId, i64> = set.entries(now).collect();
            let stored = store.ids.lock().unwrap();
            assert!(model.iter().all(|(i, e)| in_memory.get(i) == Some(e) || stored.get(i) == Some(e)));
        } else {
            let mut entries: Vec<_> = set.entries(now).collect();
            let mut expected: Vec<_> = model.into_iter().collect();
            entries.sort_unstable();
            expected.sort_unstable();
            assert_eq!(entries, expected);
        }
    }
}
