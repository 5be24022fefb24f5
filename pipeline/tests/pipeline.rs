//! The pipeline end to end on a small chain: every accepted transaction is committed once, bad
//! input is rejected with its rule without stalling anything, and backpressure bounds memory.

use std::sync::{Arc, Mutex, mpsc};

use caasiope_pipeline::{CommitSink, Pipeline, PipelineConfig, SealedLedger, Sealing, SubmitError};
use engine::{
    Address, Backend, Currency, SecretKey,
    codec::Encode,
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    ledger::Validator,
    state::{Block, State, apply_block},
    tx::{Fee, Leg, TX_VERSION, Transaction},
};

const CHAIN: &str = "pipe";
const T0: i64 = 1_767_225_600_000;
const FEE: i64 = 1_000;

fn key(i: u32) -> SecretKey {
    let mut b = [7u8; 32];
    b[28..].copy_from_slice(&i.to_be_bytes());
    SecretKey::from_bytes(&b).unwrap()
}

fn genesis(users: u32) -> Genesis {
    Genesis::new(GenesisConfig {
        chain_id: CHAIN.into(),
        timestamp_ms: T0,
        min_fee: FEE,
        max_ttl_ms: 3_600_000,
        fee_account: key(999_999).public_key().address(),
        governance: key(999_998).public_key().address(),
        validators: vec![Validator { public_key: key(999_997).public_key(), weight: 1 }],
        currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
        declarations: vec![],
        balances: (0..users)
            .map(|i| BalanceSpec {
                address: key(i).public_key().address(),
                currency: Currency::CAS,
                amount: 1_000_000,
            })
            .collect(),
    })
    .unwrap()
}

fn transfer(from: u32, to: u32, amount: i64, expiration_ms: i64) -> Vec<u8> {
    let from_key = key(from);
    Transaction {
        version: TX_VERSION,
        expiration_ms,
        declarations: vec![],
        inputs: vec![Leg { address: from_key.public_key().address(), currency: Currency::CAS, amount }],
        outputs: vec![Leg { address: key(to).public_key().address(), currency: Currency::CAS, amount }],
        message: vec![],
        fee: Fee { payer: from_key.public_key().address(), amount: FEE },
    }
    .sign(CHAIN, &[&from_key])
    .to_bytes()
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<SealedLedger>>>);

impl CommitSink for Collect {
    fn commit(&mut self, ledger: SealedLedger) -> Result<(), String> {
        self.0.lock().unwrap().push(ledger);
        Ok(())
    }
}

fn config(block_txs_max: usize) -> PipelineConfig {
    PipelineConfig {
        backend: Backend::Libsecp256k1,
        verify_threads: 2,
        batch_txs_max: 64,
        queue_batches_max: 4,
        commit_queue_max: 2,
        block_txs_max,
        sealing: Sealing::WhenFull { step_ms: 1_000 },
    }
}

#[test]
fn accepted_transactions_commit_exactly_once_and_bad_input_is_counted() {
    let g = genesis(200);
    let sink = Collect::default();
    let pipeline = Pipeline::start(State::from_genesis(&g), config(150), sink.clone()).unwrap();
    let far = T0 + 3_000_000;
    let good: Vec<Vec<u8>> =
        (0..600).map(|i| transfer(i % 200, (i + 1) % 200, 1 + i64::from(i), far)).collect();
    let mut bad_signature = transfer(1, 2, 5, far);
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let bad = vec![
        vec![1, 2, 3],                  // undecodable
        bad_signature,                  // bad signature
        transfer(3, 4, 5, T0 + 1),      // expired at the first ledger's time
        transfer(5, 6, 2_000_000, far), // insufficient balance
        good[7].clone(),                // duplicate of an accepted transaction
        transfer(8, 9, 0, far),         // amount not positive
    ];
    // Interleave the bad among the good, in submissions of uneven sizes.
    let mut all = good;
    for (i, b) in bad.into_iter().enumerate() {
        all.insert(50 + i * 97, b);
    }
    for chunk in all.chunks(37) {
        pipeline.submit(chunk.to_vec()).unwrap();
    }
    let (state, m) = pipeline.finish().unwrap();
    let ledgers = sink.0.lock().unwrap();
    assert_eq!(m.committed_txs, 600);
    assert_eq!(m.rejected_total(), 6, "{:?}", m.rejected);
    for kind in
        ["decode", "bad_signature", "expired", "insufficient_balance", "replayed", "amount_not_positive"]
    {
        assert!(m.rejected.iter().any(|(k, n)| *k == kind && *n == 1), "{kind}: {:?}", m.rejected);
    }
    assert_eq!(ledgers.len(), 4, "600 transactions in ledgers of at most 150");
    assert!(ledgers.iter().all(|l| l.transactions.len() <= 150));
    let mut ids: Vec<_> = ledgers.iter().flat_map(|l| l.applied.tx_ids.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 600, "no transaction committed twice");
    assert_eq!(state.check_conservation(), Ok(()));
    assert_eq!(m.head_height, 4);
    // The committed ledgers re-execute to the same headers on a fresh state.
    let mut replay = State::from_genesis(&g);
    for l in ledgers.iter() {
        let block = Block {
            height: l.applied.header.height,
            timestamp_ms: l.applied.header.timestamp_ms,
            transactions: l.transactions.clone(),
        };
        assert_eq!(apply_block(&mut replay, &block, Backend::K256).unwrap().header, l.applied.header);
        assert_eq!(l.accounts.len(), l.applied.touched.len());
    }
    assert_eq!(replay.state_root(), state.state_root());
    // Stage metrics saw every transaction.
    assert_eq!(m.stages[0].txs, 606);
    assert!(m.stages.iter().all(|s| s.queue_depth_batches == 0));
}

/// A sink that blocks until told to go on: the stages fill up and ingest pushes back.
struct Gate(mpsc::Receiver<()>);

impl CommitSink for Gate {
    fn commit(&mut self, _: SealedLedger) -> Result<(), String> {
        self.0.recv().map_err(|e| e.to_string())
    }
}

#[test]
fn a_stalled_commit_pushes_back_on_ingest() {
    let g = genesis(400);
    let (go, gate) = mpsc::channel();
    let pipeline = Pipeline::start(State::from_genesis(&g), config(10), Gate(gate)).unwrap();
    let far = T0 + 3_000_000;
    let mut accepted = 0;
    let mut full = false;
    // Queues hold at most (4 + 4 + 4) batches of 64 plus 2 ledgers in flight: far below 400.
    for i in 0..400u32 {
        match pipeline.try_submit(vec![transfer(i, (i + 1) % 400, 1, far)]) {
            Ok(()) => accepted += 1,
            Err(SubmitError::Full) => {
                full = true;
                break;
            }
            Err(SubmitError::Closed) => panic!("closed"),
        }
        // Give the stages time to move what they can.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(full, "ingest never pushed back after {accepted} submissions");
    // Release the sink: everything accepted is committed, nothing lost.
    std::thread::spawn(move || while go.send(()).is_ok() {});
    let (_, m) = pipeline.finish().unwrap();
    assert_eq!(m.committed_txs, accepted);
}

#[test]
fn a_failing_sink_stops_the_pipeline_with_its_reason() {
    struct Refuse;
    impl CommitSink for Refuse {
        fn commit(&mut self, l: SealedLedger) -> Result<(), String> {
            Err(format!("disk full at {}", l.applied.header.height))
        }
    }
    let g = genesis(10);
    let pipeline = Pipeline::start(State::from_genesis(&g), config(5), Refuse).unwrap();
    let _ = pipeline.submit((0..10).map(|i| transfer(i, (i + 1) % 10, 1, T0 + 3_000_000)).collect());
    let err = pipeline.finish().unwrap_err();
    assert_eq!(err.to_string(), "commit of ledger 1 failed: disk full at 1");
}

#[test]
fn interval_sealing_makes_ledgers_on_time_even_when_idle() {
    let g = genesis(10);
    let sink = Collect::default();
    let cfg = PipelineConfig { sealing: Sealing::Interval { interval_ms: 20 }, ..config(100) };
    let pipeline = Pipeline::start(State::from_genesis(&g), cfg, sink.clone()).unwrap();
    let far = pipeline_now_ms() + 600_000;
    pipeline.submit(vec![transfer(1, 2, 3, far)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (_, m) = pipeline.finish().unwrap();
    let ledgers = sink.0.lock().unwrap();
    assert!(ledgers.len() >= 3, "only {} ledgers in 200 ms at 20 ms", ledgers.len());
    assert_eq!(m.committed_txs, 1);
    assert!(ledgers.windows(2).all(|w| w[0].applied.header.timestamp_ms < w[1].applied.header.timestamp_ms));
}

fn pipeline_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Batches are verified concurrently on the pool but applied in submission order: a chain of
/// transfers where each spends what the previous one paid in — split across many small batches
/// among unrelated traffic — is applied whole. Out of order, a hop would find its sender empty.
#[test]
fn dependent_transactions_in_separate_batches_apply_in_order() {
    let g = genesis(100);
    let cfg = PipelineConfig { batch_txs_max: 3, queue_batches_max: 8, ..config(10_000) };
    let pipeline = Pipeline::start(State::from_genesis(&g), cfg, Collect::default()).unwrap();
    let far = T0 + 3_000_000;
    const HOPS: u32 = 120;
    let mut amount = 500_000;
    for hop in 0..HOPS {
        // Hop 0 leaves a funded user; every later hop spends the whole balance it received.
        let from = if hop == 0 { 0 } else { 1_000 + hop - 1 };
        let send = if hop == 0 { amount } else { amount - FEE };
        pipeline.submit(vec![transfer(from, 1_000 + hop, send, far)]).unwrap();
        amount = send;
        let filler = (0..5)
            .map(|i| transfer(1 + (hop * 5 + i) % 99, 1 + (hop * 5 + i + 1) % 99, 1 + i64::from(hop), far));
        pipeline.submit(filler.collect()).unwrap();
    }
    let (state, m) = pipeline.finish().unwrap();
    assert_eq!(m.rejected_total(), 0, "{:?}", m.rejected);
    assert_eq!(m.committed_txs, u64::from(HOPS) * 6);
    let last = key(1_000 + HOPS - 1).public_key().address();
    assert_eq!(state.account(&last).map(|a| a.balance(&Currency::CAS)), Some(amount));
    assert_eq!(state.check_conservation(), Ok(()));
    assert!(m.stages[1].batches > u64::from(HOPS), "many verify batches: {}", m.stages[1].batches);
}

mod intake {
    use std::time::Duration;

    use std::sync::Arc;

    use caasiope_pipeline::{Intake, IntakeConfig, Mempool, MempoolConfig, Origin, Verdict};
    use engine::state::{Block, State, apply_block};

    use super::*;

    fn now_ms() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    }

    fn intake_config() -> IntakeConfig {
        IntakeConfig {
            backend: Backend::Libsecp256k1,
            verify_threads: caasiope_pipeline::verify_threads(),
            batch_txs_max: 512,
            queue_batches_max: 32,
        }
    }

    fn mempool() -> Arc<Mempool> {
        Arc::new(Mempool::new(MempoolConfig { txs_max: 100_000, busy_txs: 50_000, busy_queued: 4_000 }))
    }

    #[test]
    fn the_post_state_refuses_a_double_spend_and_is_rebuilt_on_each_committed_ledger() {
        let g = genesis(3);
        let (tx, rx) = mpsc::channel();
        let intake = Intake::start(State::from_genesis(&g), intake_config(), mempool(), move |a| {
            let _ = tx.send(a);
        })
        .unwrap();
        let exp = now_ms() + 600_000;
        let a = transfer(0, 1, 600_000, exp);
        let b = transfer(0, 2, 600_000, exp);
        let c = transfer(1, 2, 100, exp);
        intake.try_submit(Origin::Client, vec![a, b.clone(), b"garbage".to_vec()]).unwrap();
        intake.try_submit(Origin::Peer(3), vec![c]).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first.origin, Origin::Client);
        assert_eq!(first.txs.len(), 1, "the double spend and the garbage are refused");
        let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((second.origin, second.txs.len()), (Origin::Peer(3), 1));
        let m = intake.metrics();
        assert_eq!(m.rejected_total(), 2, "{:?}", m.rejected);

        // The validators committed the other half of the double spend: `a` is now invalid and
        // leaves the post-state; user 0 can still spend what remains.
        let mut committed = State::from_genesis(&g);
        let b_tx = engine::tx::SignedTransaction::decode_with_id(&b, CHAIN).unwrap().0;
        apply_block(
            &mut committed,
            &Block { height: 1, timestamp_ms: now_ms(), transactions: vec![b_tx] },
            Backend::K256,
        )
        .unwrap();
        intake.rebase(committed).unwrap();
        let d = transfer(0, 1, 100_000, exp);
        let too_much = transfer(0, 1, 350_000, exp);
        intake.try_submit(Origin::Client, vec![d]).unwrap();
        intake.try_submit(Origin::Client, vec![too_much]).unwrap();
        let third = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(third.txs.len(), 1);
        // `a` dropped at the rebase, `too_much` refused (399,000 − 100,000 − fees < 350,000).
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while intake.metrics().rejected_total() < 4 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(intake.metrics().rejected_total(), 4);
        assert!(rx.try_recv().is_err());
        assert_eq!(intake.mempool().len(), 2, "`c` and `d` pending");
    }

    /// A caller that decoded its transactions hands them over decoded (they are not decoded
    /// again) and is told each one's verdict: admitted, or refused with its rule — a double
    /// spend of a pending transaction included, which a check against the committed state
    /// alone would have let through.
    #[test]
    fn decoded_submissions_are_answered_with_each_verdict() {
        let g = genesis(3);
        let intake = Intake::start(State::from_genesis(&g), intake_config(), mempool(), |_| {}).unwrap();
        let exp = now_ms() + 600_000;
        let decode = |b: Vec<u8>| engine::tx::SignedTransaction::decode_with_id(&b, CHAIN).unwrap();
        let (a, b) = (decode(transfer(0, 1, 600_000, exp)), decode(transfer(0, 2, 600_000, exp)));
        let (ida, idb) = (a.1, b.1);
        let mut bad = decode(transfer(1, 2, 100, exp));
        bad.0.signatures[0].signature.0[9] ^= 1;
        let idbad = bad.1;
        let (tx, rx) = mpsc::channel();
        let reply = Box::new(move |v: Vec<(engine::tx::TxId, Verdict)>| {
            let _ = tx.send(v);
        });
        let submitter = intake.submitter().unwrap();
        submitter.try_submit_decoded_with(Origin::Client, vec![a, b, bad], reply).unwrap();
        let mut verdicts = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        verdicts.sort_by_key(|(id, _)| [ida, idb, idbad].iter().position(|x| x == id));
        assert_eq!(verdicts.len(), 3, "{verdicts:?}");
        assert_eq!(verdicts[0], (ida, Verdict::Admitted));
        assert!(matches!(&verdicts[1], (id, Verdict::Refused(_)) if *id == idb), "{verdicts:?}");
        assert!(matches!(&verdicts[2], (id, Verdict::Refused(_)) if *id == idbad), "{verdicts:?}");
        assert_eq!(intake.mempool().len(), 1);
    }

    #[test]
    fn the_verification_backlog_counts_what_waits_and_drains_to_zero() {
        let g = genesis(3);
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let cfg = IntakeConfig { queue_batches_max: 1, ..intake_config() };
        // The first admitted batch holds the admission stage until the gate opens: verified
        // batches stop at its full queue, and what comes after stays unverified.
        let intake = Intake::start(State::from_genesis(&g), cfg, mempool(), move |_| {
            let _ = gate_rx.recv();
        })
        .unwrap();
        assert_eq!(intake.mempool().queued_txs(), 0);
        let exp = now_ms() + 600_000;
        let (mut submitted, mut refusals) = (0u64, 0);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        // Submit until the queue has refused ten times in a row, 20 ms apart: the stages have
        // stopped, each holding what it can.
        while refusals < 10 {
            assert!(std::time::Instant::now() < until, "the queue never filled");
            let amount = 1 + submitted as i64;
            let batch = vec![transfer(0, 1, amount, exp), transfer(1, 2, amount, exp)];
            let before = intake.mempool().queued_txs();
            if intake.try_submit(Origin::Client, batch).is_ok() {
                submitted += 2;
                refusals = 0;
            } else {
                assert_eq!(intake.mempool().queued_txs(), before, "a refused batch is not counted");
                refusals += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Admission holds the first batch, its queue the second, the verification stage the
        // third (verified, waiting to hand it over): only the fourth waits unverified.
        assert_eq!((intake.mempool().queued_txs(), submitted), (2, 8));
        for _ in 0..submitted {
            let _ = gate_tx.send(());
        }
        drop(gate_tx);
        while intake.mempool().queued_txs() > 0 {
            assert!(std::time::Instant::now() < until, "{} still queued", intake.mempool().queued_txs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
