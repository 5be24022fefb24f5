//! The intake end to end on a small chain: admission against the post-state refuses what
//! conflicts with what is pending, the rebase drops what a committed ledger made invalid, bad
//! input is refused with its rule without stalling anything, order is kept across batches, and
//! the verification backlog is counted.

use std::sync::mpsc;

use engine::{
    Address, Backend, Currency, SecretKey,
    codec::Encode,
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    ledger::Validator,
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
        generated: vec![],
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

use std::time::Duration;

use std::sync::Arc;

use caasiope_pipeline::{Intake, IntakeConfig, Mempool, MempoolConfig, Origin, Verdict};
use engine::state::{State, execute_verified};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn intake_config() -> IntakeConfig {
    IntakeConfig {
        backend: Backend::Libsecp256k1,
        verify_threads: caasiope_pipeline::verify_threads(),
        batch_txs_max: 512,
        queue_batches_max: 32,
        clock: now_ms,
    }
}

fn mempool() -> Arc<Mempool> {
    Arc::new(Mempool::new(MempoolConfig {
        txs_max: 100_000,
        bytes_max: usize::MAX,
        busy_txs: 50_000,
        busy_queued: 4_000,
        busy_wait: None,
    }))
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
    let (b_tx, b_id) = engine::tx::SignedTransaction::decode_with_id(&b, CHAIN).unwrap();
    let b_verified = engine::validate::verify(b_tx, b_id, committed.params(), Backend::K256).unwrap();
    let diff = execute_verified(&mut committed, now_ms(), &[b_verified]).unwrap();
    committed.apply_diff(diff.clone()).unwrap();
    intake.rebase(Arc::new(diff), &committed, committed.replay_window()).unwrap();
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
/// A diff that does not apply to the admission stage's copy of the committed state (a bug:
/// one was lost) is not applied; the next rebase hands over a copy of the committed state, and
/// admission judges against it again.
#[test]
fn a_diff_that_does_not_apply_is_followed_by_a_copy_of_the_state() {
    let g = genesis(3);
    let intake = Intake::start(State::from_genesis(&g), intake_config(), mempool(), |_| {}).unwrap();
    let exp = now_ms() + 600_000;
    let verified = |state: &State, bytes: &[u8]| {
        let (tx, id) = engine::tx::SignedTransaction::decode_with_id(bytes, CHAIN).unwrap();
        engine::validate::verify(tx, id, state.params(), Backend::K256).unwrap()
    };
    // Ledger 1 funds user 7, ledger 2 moves a little; the intake is handed ledger 2 only.
    let mut committed = State::from_genesis(&g);
    let fund = verified(&committed, &transfer(0, 7, 500_000, exp));
    let d1 = execute_verified(&mut committed, now_ms(), &[fund]).unwrap();
    committed.apply_diff(d1).unwrap();
    let small = verified(&committed, &transfer(1, 2, 5, exp));
    let d2 = execute_verified(&mut committed, now_ms() + 1, &[small]).unwrap();
    committed.apply_diff(d2.clone()).unwrap();
    intake.rebase(Arc::new(d2), &committed, committed.replay_window()).unwrap();
    let spend = transfer(7, 1, 100_000, exp);
    let (tx, verdicts) = mpsc::channel();
    let ask = |bytes: &[u8]| {
        let decoded = engine::tx::SignedTransaction::decode_with_id(bytes, CHAIN).unwrap();
        let tx = tx.clone();
        let reply = Box::new(move |v: Vec<(engine::tx::TxId, Verdict)>| drop(tx.send(v)));
        intake.submitter().unwrap().submit_decoded_with(Origin::Client, vec![decoded], reply).unwrap();
        verdicts.recv_timeout(Duration::from_secs(10)).unwrap().remove(0).1
    };
    // User 7 has nothing in the admission stage's (stale) view.
    assert!(matches!(ask(&spend), Verdict::Refused(_)));
    // The next ledger's rebase carries a copy of the state: user 7's funds are there.
    let small = verified(&committed, &transfer(2, 1, 5, exp));
    let d3 = execute_verified(&mut committed, now_ms() + 2, &[small]).unwrap();
    committed.apply_diff(d3.clone()).unwrap();
    intake.rebase(Arc::new(d3), &committed, committed.replay_window()).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ask(&transfer(7, 1, 100_000 + 1, exp)) {
            Verdict::Admitted => break,
            other => assert!(std::time::Instant::now() < until, "still {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A committed ledger holding the next admitted transactions, in admission order (a validator
/// alone, a leader whose proposal was decided), or plain transfers in another order (the other
/// validators) while the pending ones stay funded, moves the post-state in place: what is
/// still pending stays applied — a double spend of it is still refused — and what the ledger
/// committed is not counted twice. Any other ledger takes the slow way (roll back, apply,
/// admit the pool again) with the same verdicts.
#[test]
fn a_ledger_of_the_next_admitted_transactions_moves_the_post_state_in_place() {
    let g = genesis(10);
    let intake = Intake::start(State::from_genesis(&g), intake_config(), mempool(), |_| {}).unwrap();
    let submitter = intake.submitter().unwrap();
    let exp = now_ms() + 600_000;
    let (tx, verdicts) = mpsc::channel();
    let ask = |txs: Vec<Vec<u8>>| {
        let decoded = txs.iter().map(|b| engine::tx::SignedTransaction::decode_with_id(b, CHAIN).unwrap());
        let tx = tx.clone();
        let reply = Box::new(move |v: Vec<(engine::tx::TxId, Verdict)>| drop(tx.send(v)));
        submitter.submit_decoded_with(Origin::Client, decoded.collect(), reply).unwrap();
        verdicts
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    let mut committed = State::from_genesis(&g);
    let verified = |state: &State, bytes: &[u8]| {
        let (tx, id) = engine::tx::SignedTransaction::decode_with_id(bytes, CHAIN).unwrap();
        engine::validate::verify(tx, id, state.params(), Backend::K256).unwrap()
    };
    let mut commit = |ledger: &[&[u8]], at: i64| {
        let txs: Vec<_> = ledger.iter().map(|b| verified(&committed, b)).collect();
        let diff = execute_verified(&mut committed, at, &txs).unwrap();
        committed.apply_diff(diff.clone()).unwrap();
        // As the host does: the pool loses what the ledger included, then the intake moves on.
        intake.mempool().remove(txs.iter().map(|v| &v.id));
        intake.rebase(Arc::new(diff), &committed, committed.replay_window()).unwrap();
    };
    let wait_for = |in_place: u64, again: u64| {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = intake.metrics();
            if (m.rebased_in_place, m.rebased_again) == (in_place, again) {
                return;
            }
            assert!(std::time::Instant::now() < until, "{:?}", (m.rebased_in_place, m.rebased_again));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let t1 = transfer(0, 5, 300_000, exp);
    // Valid only after t1.
    let t2 = transfer(5, 6, 1_200_000, exp);
    let t3 = transfer(1, 2, 100, exp);
    assert_eq!(ask(vec![t1.clone(), t2.clone(), t3.clone()]), vec![Verdict::Admitted; 3]);

    commit(&[&t1], now_ms());
    wait_for(1, 0);
    // User 5 holds 1,300,000 − 1,200,000 − fee with t2 pending: t2 is still applied.
    assert!(matches!(ask(vec![transfer(5, 7, 200_000, exp)])[..], [Verdict::Refused(_)]));
    // User 0 holds 1,000,000 − 300,000 − fee: t1 counted once.
    let t4 = transfer(0, 8, 600_000, exp);
    assert_eq!(ask(vec![t4]), vec![Verdict::Admitted]);

    // t3 alone, though t2 was admitted before it: plain transfers whose balances still
    // suffice, in place too, same verdicts.
    commit(&[&t3], now_ms() + 1);
    wait_for(2, 0);
    assert!(matches!(ask(vec![transfer(5, 7, 200_000, exp)])[..], [Verdict::Refused(_)]));
    assert!(matches!(ask(vec![transfer(0, 8, 200_000, exp)])[..], [Verdict::Refused(_)]));
    assert_eq!(intake.mempool().len(), 2, "t2 and t4 pending");

    // A ledger with a transaction never admitted here that spends what t4 needs: the slow
    // way, t4 leaves the pool (reported), t2 stays.
    commit(&[&transfer(0, 9, 300_000, exp)], now_ms() + 2);
    wait_for(2, 1);
    assert_eq!(intake.mempool().len(), 1, "t2 pending");
    assert!(matches!(ask(vec![transfer(5, 7, 200_000, exp)])[..], [Verdict::Refused(_)]));

    // Readmitted, t2 is the next admitted again.
    commit(&[&t2], now_ms() + 3);
    wait_for(3, 1);
    assert_eq!(intake.mempool().len(), 0);
    assert_eq!(
        ask(vec![transfer(5, 7, 90_000, exp), transfer(0, 8, 90_000, exp)]),
        vec![Verdict::Admitted; 2]
    );
    assert_eq!(intake.metrics().rejected_total(), 5, "{:?}", intake.metrics().rejected);
}

/// A transaction that spends what one in an earlier batch gave is admitted: batches are
/// admitted in submission order, whatever order the pool verifies them in.
#[test]
fn dependent_transactions_in_separate_batches_are_admitted_in_order() {
    let g = genesis(100);
    let cfg = IntakeConfig { batch_txs_max: 8, queue_batches_max: 8, ..intake_config() };
    let intake = Intake::start(State::from_genesis(&g), cfg, mempool(), |_| {}).unwrap();
    let submitter = intake.submitter().unwrap();
    let far = now_ms() + 3_000_000;
    const HOPS: u32 = 120;
    let mut amount = 500_000;
    for hop in 0..HOPS {
        // Hop 0 leaves a funded user; every later hop spends the whole balance it received.
        let from = if hop == 0 { 0 } else { 1_000 + hop - 1 };
        let send = if hop == 0 { amount } else { amount - FEE };
        submitter.submit(Origin::Client, vec![transfer(from, 1_000 + hop, send, far)]).unwrap();
        amount = send;
        let filler = (0..5)
            .map(|i| transfer(1 + (hop * 5 + i) % 99, 1 + (hop * 5 + i + 1) % 99, 1 + i64::from(hop), far));
        submitter.submit(Origin::Client, filler.collect()).unwrap();
    }
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while intake.mempool().len() < HOPS as usize * 6 && intake.metrics().rejected_total() == 0 {
        assert!(std::time::Instant::now() < until, "{} admitted", intake.mempool().len());
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = intake.metrics();
    assert_eq!(m.rejected_total(), 0, "{:?}", m.rejected);
    assert!(m.stages[1].batches > u64::from(HOPS), "many verify batches: {}", m.stages[1].batches);
}

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
