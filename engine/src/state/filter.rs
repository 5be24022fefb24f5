//! The replay window's filter: which ids of the window a store holds, in a number of bytes fixed
//! when it is made, whatever the rate.
//!
//! The window holds rate × TTL ids (25 million at 7,000 tx/s and the one-hour TTL); kept in
//! maps that is over a gigabyte. Once a ledger's ids are in the store's replay table, the
//! window keeps only this filter's bits for them, and a lookup the filter answers "maybe" is
//! confirmed by a read of the table: the filter has no false negatives, so nothing stored is
//! missed, and a false positive costs one read. The more ids per byte, the more reads — the
//! memory does not grow.
//!
//! Expirations of the ids a state can still check lie within one TTL after its time, so the
//! filter is a ring of [`SLOTS`] split-block Bloom filters, each for a range of expirations
//! ([`ReplayFilter::width_ms`] wide): a slot is emptied and reused for a later range once its
//! range has passed, which is how expired ids leave the filter.

use std::sync::{
    Mutex,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

use crate::tx::TxId;

/// Slots of the ring: a TTL spans at most `SLOTS - 2` slot widths, so the expirations a state
/// checks (after its time, at most one TTL after the newest ledger's) never share a slot
/// across two ranges.
const SLOTS: usize = 64;

/// Words of a block: an id's bits are all in one 64-byte block (one cache line), one bit in
/// each word.
const BLOCK_WORDS: usize = 8;

/// Bytes of a block.
const BLOCK_BYTES: usize = BLOCK_WORDS * 8;

/// Odd multipliers picking an id's bit in each word of its block (as Parquet's split-block
/// Bloom filters do).
const SALTS: [u64; BLOCK_WORDS] = [
    0x47b6_137b_4497_4d91,
    0x8824_ad5b_a2b7_289d,
    0x7054_95c7_2df1_424b,
    0x9efc_4947_5c6b_fb31,
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0xd6e8_feb8_6659_fd93,
];

/// Fixed-size filter of stored replay-window ids, keyed by their expiration range. Shared by
/// every copy of a state (`Arc`): bits are set by one writer at a time (the state that moves
/// stored ids here, [`ReplayFilter::insert_all`]) and read by any.
pub(super) struct ReplayFilter {
    /// Width of a slot's range of expirations, ms.
    width_ms: i64,
    /// Blocks per slot.
    blocks: usize,
    /// Per slot, the range its bits are of (expiration / width); `i64::MIN` for none.
    ranges: Vec<AtomicI64>,
    /// The slots' blocks, slot after slot.
    words: Vec<AtomicU64>,
    /// Per-process keys mixed into the ids, so that no one can choose ids that collide here.
    keys: [u64; 2],
    /// Held while bits are set (a slot is emptied before its new range's bits are set).
    writer: Mutex<()>,
}

impl std::fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("width_ms", &self.width_ms)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl ReplayFilter {
    /// A filter of about `bytes` bytes (at least one block per slot) for a chain whose
    /// transactions live at most `max_ttl_ms`. Every page is written here: the memory is taken
    /// at once, not as the ranges fill.
    pub(super) fn new(max_ttl_ms: i64, bytes: usize) -> Self {
        let width_ms =
            i64::try_from((max_ttl_ms.max(1) as u64).div_ceil(SLOTS as u64 - 2)).unwrap_or(i64::MAX);
        let blocks = (bytes / (SLOTS * BLOCK_BYTES)).max(1);
        let words: Vec<AtomicU64> = (0..SLOTS * blocks * BLOCK_WORDS).map(|_| AtomicU64::new(0)).collect();
        // Zeroed memory may come from the kernel untouched (calloc): write every page now, so
        // the process's resident memory is the same at the first ledger and the millionth.
        for w in words.iter().step_by(512) {
            w.store(0, Ordering::Relaxed);
        }
        Self {
            width_ms,
            blocks,
            ranges: (0..SLOTS).map(|_| AtomicI64::new(i64::MIN)).collect(),
            words,
            keys: [rand::random(), rand::random()],
            writer: Mutex::new(()),
        }
    }

    /// Bytes the filter's bits take.
    pub(super) fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// The range of an expiration and its slot.
    fn slot(&self, expiration_ms: i64) -> (i64, usize) {
        let range = expiration_ms.div_euclid(self.width_ms);
        (range, range.rem_euclid(SLOTS as i64) as usize)
    }

    /// The first word of `id`'s block in `slot`, and its bit in each word of the block.
    fn bits(&self, id: &TxId, slot: usize) -> (usize, [u64; BLOCK_WORDS]) {
        let word = |i: usize| u64::from_le_bytes(id.0[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        // Every word of the id counts (ids are hashes, but a test's or an attacker's need not
        // differ everywhere), mixed with the keys.
        let x = word(0) ^ word(1).rotate_left(17) ^ word(2).rotate_left(31) ^ word(3).rotate_left(47);
        let mut h1 = (x ^ self.keys[0]).wrapping_mul(SALTS[4]);
        h1 ^= h1 >> 29;
        let h2 = (h1 ^ self.keys[1]).wrapping_mul(SALTS[5]) | 1;
        // Multiply-shift onto the slot's blocks (no modulo bias worth a division).
        let block = ((u128::from(h1) * self.blocks as u128) >> 64) as usize;
        let mut masks = [0u64; BLOCK_WORDS];
        for (mask, salt) in masks.iter_mut().zip(SALTS) {
            *mask = 1 << (h2.wrapping_mul(salt) >> 58);
        }
        ((slot * self.blocks + block) * BLOCK_WORDS, masks)
    }

    /// Whether an id expiring at `expiration_ms` may have been inserted (never `false` for one
    /// that was, as long as its range has not passed: see the module).
    pub(super) fn may_contain(&self, id: &TxId, expiration_ms: i64) -> bool {
        let (range, slot) = self.slot(expiration_ms);
        if self.ranges[slot].load(Ordering::Acquire) != range {
            return false;
        }
        let (first, masks) = self.bits(id, slot);
        masks.iter().enumerate().all(|(i, m)| self.words[first + i].load(Ordering::Relaxed) & m == *m)
    }

    /// Inserts ids with their expirations. A slot whose range has passed is emptied first and
    /// takes the new range; the ids must expire within one TTL after the newest ledger's time.
    pub(super) fn insert_all(&self, ids: impl IntoIterator<Item = (TxId, i64)>) {
        let _writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, expiration_ms) in ids {
            let (range, slot) = self.slot(expiration_ms);
            if self.ranges[slot].load(Ordering::Acquire) != range {
                // Readers see no range while it is emptied, then the new one with no bits.
                self.ranges[slot].store(i64::MIN, Ordering::Release);
                let start = slot * self.blocks * BLOCK_WORDS;
                for w in &self.words[start..start + self.blocks * BLOCK_WORDS] {
                    w.store(0, Ordering::Relaxed);
                }
                self.ranges[slot].store(range, Ordering::Release);
            }
            let (first, masks) = self.bits(&id, slot);
            for (i, m) in masks.iter().enumerate() {
                self.words[first + i].fetch_or(*m, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;

    fn id(n: u64) -> TxId {
        Hash(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    /// No false negatives, a false-positive rate near a split-block filter's at 16 bits per id,
    /// and a slot reused for a later range forgets the earlier one's ids.
    #[test]
    fn it_keeps_every_id_and_forgets_passed_ranges() {
        let ttl = 3_600_000i64;
        let filter = ReplayFilter::new(ttl, 64 * 1024 * 64);
        let now = 1_700_000_000_000i64;
        let ids: Vec<(TxId, i64)> =
            (0..200_000u64).map(|n| (id(n), now + (n as i64 * 17) % ttl + 1)).collect();
        filter.insert_all(ids.iter().copied());
        assert!(ids.iter().all(|(i, e)| filter.may_contain(i, *e)), "no false negatives");
        // 4 MiB for 200,000 ids: ~168 bits an id, so hardly any false positive.
        let others =
            (1_000_000..1_100_000u64).filter(|&n| filter.may_contain(&id(n), now + (n as i64 % ttl) + 1));
        assert!(others.count() < 100);
        // Ids of another range, one full ring later, in the same slots: the earlier ones are gone.
        let later = ids[8].1 + SLOTS as i64 * filter.width_ms;
        filter.insert_all([(id(7), later)]);
        assert!(filter.may_contain(&id(7), later));
        assert!(!filter.may_contain(&ids[8].0, ids[8].1), "the slot's earlier range was emptied");
    }

    /// A tiny filter still has no false negatives (every lookup then reads the store).
    #[test]
    fn a_full_filter_says_maybe_but_never_no() {
        let filter = ReplayFilter::new(60_000, 1);
        assert_eq!(filter.bytes(), SLOTS * BLOCK_BYTES);
        let ids: Vec<(TxId, i64)> = (0..5_000u64).map(|n| (id(n), 1_000 + (n as i64 % 60_000))).collect();
        filter.insert_all(ids.iter().copied());
        assert!(ids.iter().all(|(i, e)| filter.may_contain(i, *e)));
    }
}
