//! The engine's per-transaction hot paths, one criterion group per stage.
//!
//! * `codec`: `to_bytes`, `SignedTransaction::from_bytes` and `decode_with_id` of a one-input
//!   transfer (one signature) and of a 4-leg swap (two currencies, two signatures);
//! * `tx_id`: `Transaction::id` (re-encodes, then hashes) against `id_of_unsigned_bytes` over
//!   the unsigned prefix that is already at hand when decoding;
//! * `verify`: one `keys::verify` per backend, and `verify_signatures` of a transfer per backend;
//! * `apply`: 10,000 pre-verified transfers on a state of 100,000 funded accounts — stateful
//!   validation + apply + `finish` (`block_10k_of_100k`), `apply_tx` alone (`apply_tx_10k`) and
//!   `finish` alone (`finish_10k`). Every iteration starts from its own clone of the same state;
//!   cloning and dropping it are outside the timing. `finish` hashes the touched accounts on the
//!   global rayon pool, so its figure is wall time on every core of the machine; `engine-budget`
//!   gives the one-thread CPU time per transaction.
//!
//! Preparation (workload, signing, verification of the apply inputs) is not timed.
//!
//! Run: `cargo bench -p caasiope-bench --bench engine -- --quick`.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use engine::{
    Backend, Currency,
    codec::Encode,
    state::State,
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction, id_of_unsigned_bytes},
    validate::{VerifiedTx, verify_bytes, verify_signatures},
};
use rayon::prelude::*;

use caasiope_bench::workload::{CHAIN, GENESIS_MS, MIN_FEE, sender_key, signed_transfers, workload};

const BACKENDS: [Backend; 2] = [Backend::K256, Backend::Libsecp256k1];
/// Accounts in the state of the `apply` group.
const ACCOUNTS: usize = 100_000;
/// Transfers in the block of the `apply` group: one per sender, so no two spend one balance.
const TXS: usize = 10_000;
const BLOCK_MS: i64 = GENESIS_MS + 1_000;

/// A one-input transfer with one signature, as `signed_transfers` makes them.
fn transfer() -> SignedTransaction {
    let w = workload(1, 2);
    let bytes = signed_transfers(&w, 1, 2, BLOCK_MS + 60_000);
    SignedTransaction::from_bytes(&bytes[0]).unwrap_or_else(|e| panic!("transfer: {e}"))
}

/// A swap: A pays B in CAS, B pays A in USD; four legs, both parties sign. Only its shape
/// matters here (no genesis knows USD).
fn swap() -> SignedTransaction {
    let (a, b) = (sender_key(0), sender_key(1));
    let (from_a, from_b) = (a.public_key().address(), b.public_key().address());
    let usd = Currency::new("USD").unwrap_or_else(|e| panic!("{e}"));
    let leg = |address, currency, amount| Leg { address, currency, amount };
    Transaction {
        version: TX_VERSION,
        expiration_ms: BLOCK_MS + 60_000,
        declarations: vec![],
        inputs: vec![leg(from_a, Currency::CAS, 5_000_000), leg(from_b, usd, 700)],
        outputs: vec![leg(from_b, Currency::CAS, 5_000_000), leg(from_a, usd, 700)],
        message: vec![],
        fee: Fee { payer: from_a, amount: MIN_FEE },
    }
    .sign(CHAIN, &[&a, &b])
}

fn samples() -> [(&'static str, SignedTransaction); 2] {
    [("transfer", transfer()), ("swap_4leg_2sig", swap())]
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.measurement_time(Duration::from_secs(3));
    for (name, tx) in samples() {
        let bytes = tx.to_bytes();
        group.bench_function(BenchmarkId::new("encode", name), |b| b.iter(|| black_box(&tx).to_bytes()));
        group.bench_function(BenchmarkId::new("from_bytes", name), |b| {
            b.iter(|| SignedTransaction::from_bytes(black_box(&bytes)))
        });
        group.bench_function(BenchmarkId::new("decode_with_id", name), |b| {
            b.iter(|| SignedTransaction::decode_with_id(black_box(&bytes), CHAIN))
        });
    }
    group.finish();
}

fn tx_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("tx_id");
    group.measurement_time(Duration::from_secs(3));
    for (name, tx) in samples() {
        let unsigned = tx.tx.to_bytes();
        assert_eq!(id_of_unsigned_bytes(CHAIN, &unsigned), tx.id(CHAIN));
        group.bench_function(BenchmarkId::new("transaction_id", name), |b| {
            b.iter(|| black_box(&tx.tx).id(CHAIN))
        });
        group.bench_function(BenchmarkId::new("id_of_unsigned_bytes", name), |b| {
            b.iter(|| id_of_unsigned_bytes(CHAIN, black_box(&unsigned)))
        });
    }
    group.finish();
}

fn verify(c: &mut Criterion) {
    let tx = transfer();
    let id = tx.id(CHAIN);
    let sig = tx.signatures[0];
    let mut group = c.benchmark_group("verify");
    group.measurement_time(Duration::from_secs(3));
    for backend in BACKENDS {
        assert!(engine::keys::verify(backend, &sig.public_key, &id.0, &sig.signature));
        group.bench_function(BenchmarkId::new("keys_verify", backend.name()), |b| {
            b.iter(|| engine::keys::verify(backend, &sig.public_key, black_box(&id.0), &sig.signature))
        });
    }
    for backend in BACKENDS {
        group.bench_function(BenchmarkId::new("verify_signatures_transfer", backend.name()), |b| {
            b.iter(|| verify_signatures(black_box(&tx), &id, CHAIN, backend))
        });
    }
    group.finish();
}

/// Applies every transfer to `state`; panics on the first refused one (the workload is valid).
fn apply_all(state: &mut State, verified: &[VerifiedTx]) -> engine::state::Applied {
    let mut exec = state.begin_block(BLOCK_MS).unwrap_or_else(|e| panic!("begin: {e}"));
    for v in verified {
        exec.apply_tx(v).unwrap_or_else(|e| panic!("apply: {e}"));
    }
    exec.finish()
}

/// The inputs of the `apply` group: the state of [`ACCOUNTS`] funded accounts and [`TXS`]
/// transfers verified against it, checked to apply as one block (untimed preparation).
fn apply_inputs() -> (State, Vec<VerifiedTx>) {
    let setup = Instant::now();
    let w = workload(TXS, ACCOUNTS);
    let state = State::from_genesis(&w.genesis);
    let params = state.params().clone();
    let verified: Vec<VerifiedTx> = signed_transfers(&w, TXS, ACCOUNTS, BLOCK_MS + 60_000)
        .par_iter()
        .map(|b| verify_bytes(b, &params, Backend::Libsecp256k1).unwrap_or_else(|e| panic!("verify: {e}")))
        .collect();
    // The block is valid as a whole: the measured runs below never stop half-way.
    assert_eq!(apply_all(&mut state.clone(), &verified).tx_ids.len(), TXS);
    eprintln!(
        "apply: {} accounts, {TXS} verified transfers prepared in {:.1} s",
        state.accounts().count(),
        setup.elapsed().as_secs_f64()
    );
    (state, verified)
}

/// `apply_tx_10k`: the time of `apply_tx` over the block, summed over `iters` runs, each on its
/// own clone of `state`.
fn time_apply_tx(state: &State, verified: &[VerifiedTx], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut s = state.clone();
        let mut exec = s.begin_block(BLOCK_MS).unwrap_or_else(|e| panic!("begin: {e}"));
        let t = Instant::now();
        for v in verified {
            black_box(exec.apply_tx(v).unwrap_or_else(|e| panic!("apply: {e}")));
        }
        total += t.elapsed();
        // Sealed outside the timing, like the clone and the drop.
        black_box(exec.finish());
    }
    total
}

/// `finish_10k`: the time of `finish` after the block, summed over `iters` runs, each on its
/// own clone of `state`.
fn time_finish(state: &State, verified: &[VerifiedTx], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut s = state.clone();
        let mut exec = s.begin_block(BLOCK_MS).unwrap_or_else(|e| panic!("begin: {e}"));
        for v in verified {
            exec.apply_tx(v).unwrap_or_else(|e| panic!("apply: {e}"));
        }
        let t = Instant::now();
        let applied = exec.finish();
        total += t.elapsed();
        black_box(applied);
    }
    total
}

fn apply(c: &mut Criterion) {
    let (state, verified) = apply_inputs();

    let mut group = c.benchmark_group("apply");
    // Tens of ms per iteration: flat sampling (the same iteration count in every sample) keeps
    // ten samples within the measurement time, where linear sampling would need 55 iterations.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(TXS as u64));
    group.bench_function("block_10k_of_100k", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                black_box(apply_all(&mut s, &verified));
                // Returned so that criterion drops the state outside the timing.
                s
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("apply_tx_10k", |b| b.iter_custom(|iters| time_apply_tx(&state, &verified, iters)));
    group.bench_function("finish_10k", |b| b.iter_custom(|iters| time_finish(&state, &verified, iters)));
    group.finish();
}

criterion_group!(benches, codec, tx_id, verify, apply);
criterion_main!(benches);
