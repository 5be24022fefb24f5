//! State root upkeep and transaction root: the Merkle work of every ledger.
//!
//! `state_root/update_10k_dirty_of_1m`: a trie of 1,000,000 random ECDSA addresses (built in
//! setup), then one block's worth of dirty accounts: 5,000 existing keys with new leaf hashes
//! and 5,000 new keys. Each iteration starts from a fresh clone of the 1M-key trie (cloned and
//! dropped outside the timing), so every measurement sees the same 1M-key trie.
//!
//! `tx_root/10k`: the transaction root of 10,000 ids.
//!
//! Run: `cargo bench -p caasiope-bench --bench state_root -- --quick`.

use std::{hint::black_box, time::Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use engine::{
    Hash,
    merkle::{StateKey, StateTrie, tx_root},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const ACCOUNTS: usize = 1_000_000;
const DIRTY: usize = 10_000;
const TXS: usize = 10_000;

fn random_key(rng: &mut StdRng) -> StateKey {
    let mut key = [0u8; 21];
    rng.fill(&mut key[..]);
    // Every ECDSA address starts with its type byte.
    key[0] = 0x01;
    key
}

fn random_hash(rng: &mut StdRng) -> Hash {
    Hash(rng.r#gen())
}

fn state_root(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let keys: Vec<StateKey> = (0..ACCOUNTS).map(|_| random_key(&mut rng)).collect();
    let mut entries: Vec<_> = keys.iter().map(|k| (*k, random_hash(&mut rng))).collect();
    let started = Instant::now();
    let base = StateTrie::from_entries(&mut entries);
    eprintln!(
        "state_root: built a trie of {} keys in {:.0} ms",
        base.len(),
        started.elapsed().as_secs_f64() * 1e3
    );

    let mut group = c.benchmark_group("state_root");
    group.sample_size(10);
    group.bench_function("update_10k_dirty_of_1m", |b| {
        b.iter_batched(
            || {
                let mut batch = Vec::with_capacity(DIRTY);
                for _ in 0..DIRTY / 2 {
                    let existing = keys[rng.gen_range(0..keys.len())];
                    batch.push((existing, random_hash(&mut rng)));
                    batch.push((random_key(&mut rng), random_hash(&mut rng)));
                }
                (base.clone(), batch)
            },
            |(mut trie, mut batch)| {
                trie.update(&mut batch);
                black_box(trie.root());
                // Returned so that criterion drops the 1M-key trie outside the timing.
                trie
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn tx_root_bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x7e5);
    let ids: Vec<Hash> = (0..TXS).map(|_| random_hash(&mut rng)).collect();
    c.bench_function("tx_root/10k", |b| b.iter(|| tx_root(black_box(&ids))));
}

criterion_group!(benches, state_root, tx_root_bench);
criterion_main!(benches);
