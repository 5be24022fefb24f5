//! Core tests: a decision with its certificate, the proposal wait, screening, resuming, locks,
//! replay and double votes.

use engine::{
    Hash,
    ledger::{LEDGER_VERSION, LedgerHeader, Validator, Vote},
    merkle::tx_root,
};

use super::*;
use crate::{
    evidence::Equivocation,
    message::{MessageError, Proposal, Value},
};

const CHAIN: &str = "core-test";

fn keys(n: usize) -> (ValidatorSet, Vec<SecretKey>) {
    let mut keys: Vec<SecretKey> = (1..=n as u8).map(|i| SecretKey::from_bytes(&[i; 32]).unwrap()).collect();
    keys.sort_by_key(SecretKey::public_key);
    let set =
        ValidatorSet::new(keys.iter().map(|k| Validator { public_key: k.public_key(), weight: 1 }).collect())
            .unwrap();
    (set, keys)
}

fn core(key: &SecretKey) -> Core {
    Core::new(Config {
        chain_id: CHAIN.into(),
        key: Some(key.clone()),
        backend: Backend::Libsecp256k1,
        timeouts: Timeouts::for_interval(1000),
    })
}

fn value(height: u64, tag: u8) -> Value {
    let header = LedgerHeader {
        version: LEDGER_VERSION,
        height,
        timestamp_ms: i64::from(tag),
        previous: Hash::ZERO,
        tx_root: tx_root(&[]),
        state_root: Hash([tag; 32]),
        validator_set_hash: Hash::ZERO,
    };
    Value { header, tx_ids: vec![] }
}

/// Delivers every broadcast to every core at once, answers checks "valid" and builds
/// `value(height, 1)`, until nothing is left; returns the decisions.
fn run(cores: &mut [Core], mut pending: Vec<(usize, Effect)>) -> Vec<(usize, Decision)> {
    let mut decisions = Vec::new();
    while let Some((i, e)) = pending.pop() {
        let mut inputs = Vec::new();
        match e {
            Effect::Broadcast(m) => {
                for (j, c) in cores.iter_mut().enumerate() {
                    if j != i {
                        let mut out = Vec::new();
                        c.handle(Input::Message { from: i as PeerId, message: m.clone() }, &mut out);
                        pending.extend(out.into_iter().map(|e| (j, e)));
                    }
                }
            }
            Effect::Check { height, id, .. } => {
                inputs.push(Input::Checked { height, value: id, valid: true, timely: true })
            }
            Effect::Build { height, round } => {
                inputs.push(Input::Proposed { height, round, value: value(height, 1) })
            }
            Effect::Decide(d) => decisions.push((i, d)),
            _ => {}
        }
        for input in inputs {
            let mut out = Vec::new();
            cores[i].handle(input, &mut out);
            pending.extend(out.into_iter().map(|e| (i, e)));
        }
    }
    decisions
}

#[test]
fn four_validators_decide_in_round_zero_with_a_certificate() {
    let (set, keys) = keys(4);
    let mut cores: Vec<Core> = keys.iter().map(core).collect();
    let mut pending = Vec::new();
    for (i, c) in cores.iter_mut().enumerate() {
        let mut out = Vec::new();
        c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
        pending.extend(out.into_iter().map(|e| (i, e)));
    }
    let decisions = run(&mut cores, pending);
    assert_eq!(decisions.len(), 4);
    for (_, d) in &decisions {
        assert_eq!(d.id, value(1, 1).id(CHAIN));
        assert_eq!(d.certificate.round, 0);
        d.certificate.verify(&set, CHAIN, 1, &d.id, Backend::K256).unwrap();
    }
}

fn prevote(keys: &[SecretKey], i: usize, round: u32, value: Option<Hash>) -> Input {
    let vote = Vote { kind: VoteKind::Prevote, height: 1, round, value };
    Input::Message { from: 9, message: Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, &keys[i])) }
}

fn proposal(keys: &[SecretKey], set: &ValidatorSet, round: u32, vr: Option<u32>, v: Value) -> Input {
    let leader = Core::proposer(set, 1, round);
    let p = Proposal { height: 1, round, valid_round: vr, value: v }.sign(
        CHAIN,
        leader,
        &keys[usize::from(leader)],
    );
    Input::Message { from: 9, message: Message::Proposal(p) }
}

fn my_votes(out: &[Effect]) -> Vec<Vote> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Broadcast(Message::Vote(v)) => Some(v.vote),
            _ => None,
        })
        .collect()
}

#[test]
fn the_proposal_wait_is_extended_once_while_its_check_runs() {
    let (set, keys) = keys(4);
    let propose = |round| Input::Timeout(Timeout { kind: TimeoutKind::Propose, height: 1, round });
    let prevotes = |out: &[Effect]| -> Vec<Option<Hash>> {
        my_votes(out).iter().filter(|v| v.kind == VoteKind::Prevote).map(|v| v.value).collect()
    };
    // Validator 0 leads neither round 0 nor round 1.
    let start = |c: &mut Core, out: &mut Vec<Effect>| {
        c.handle(Input::Start { height: 1, validators: set.clone() }, out);
    };
    let v = value(1, 7);
    let id = v.id(CHAIN);

    // No proposal at all: the timeout prevotes nil at once (line 57).
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    start(&mut c, &mut out);
    c.handle(propose(0), &mut out);
    assert_eq!(prevotes(&out), vec![None]);

    // A proposal whose check has not answered: the wait is extended (a new propose timer
    // of the same round), and the answer, arriving in the extension, is prevoted.
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    start(&mut c, &mut out);
    c.handle(proposal(&keys, &set, 0, None, v.clone()), &mut out);
    out.clear();
    c.handle(propose(0), &mut out);
    assert!(prevotes(&out).is_empty());
    assert!(out.iter().any(|e| matches!(e, Effect::Schedule { timeout, .. } if *timeout == Timeout { kind: TimeoutKind::Propose, height: 1, round: 0 })));
    c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
    assert_eq!(prevotes(&out), vec![Some(id)]);

    // Only once per round: a check that never answers ends in a nil prevote.
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    start(&mut c, &mut out);
    c.handle(proposal(&keys, &set, 0, None, v.clone()), &mut out);
    c.handle(propose(0), &mut out);
    c.handle(propose(0), &mut out);
    assert_eq!(prevotes(&out), vec![None]);

    // A check that already answered "invalid" is not waited for.
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    start(&mut c, &mut out);
    c.handle(proposal(&keys, &set, 0, None, v), &mut out);
    c.handle(Input::Checked { height: 1, value: id, valid: false, timely: true }, &mut out);
    assert_eq!(prevotes(&out), vec![None], "an invalid proposal is prevoted nil at once (line 26)");
    out.clear();
    c.handle(propose(0), &mut out);
    assert!(!out.iter().any(|e| matches!(e, Effect::Schedule { .. })));
}

/// A relayed copy of the round's proposal with its ids altered (the signature still holds: it
/// covers the ledger hash) must not shadow the genuine proposal arriving after it. Before the
/// ids were checked against the header's root on arrival, the copy was held, its value judged
/// invalid by id, the genuine one dropped as a duplicate, and this validator prevoted nil.
#[test]
fn a_tampered_copy_of_a_proposal_does_not_shadow_the_genuine_one() {
    let (set, keys) = keys(4);
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
    let mut v = value(1, 7);
    v.tx_ids = vec![Hash([5; 32]), Hash([6; 32])];
    v.header.tx_root = tx_root(&v.tx_ids);
    let id = v.id(CHAIN);
    let Input::Message { message: Message::Proposal(genuine), .. } = proposal(&keys, &set, 0, None, v) else {
        unreachable!()
    };
    for tamper in [
        |p: &mut SignedProposal| p.proposal.value.tx_ids.reverse(),
        |p: &mut SignedProposal| {
            p.proposal.value.tx_ids.pop();
        },
        |p: &mut SignedProposal| p.proposal.value.tx_ids.push(Hash([9; 32])),
    ] {
        let mut copy = genuine.clone();
        tamper(&mut copy);
        c.handle(Input::Message { from: 3, message: Message::Proposal(copy) }, &mut out);
    }
    assert_eq!(c.stats().bad_messages, 3, "each altered copy is a bad message");
    assert!(!out.iter().any(|e| matches!(e, Effect::Check { .. })));
    out.clear();
    c.handle(Input::Message { from: 2, message: Message::Proposal(genuine) }, &mut out);
    assert!(out.iter().any(|e| matches!(e, Effect::Check { id: checked, from: 2, .. } if *checked == id)));
    c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
    assert_eq!(my_votes(&out), vec![Vote { kind: VoteKind::Prevote, height: 1, round: 0, value: Some(id) }]);
}

/// What a host logs is what changes the core: a repeated, far-ahead or over-bound message is
/// `Known`, a forged one `Invalid` (its relay is at fault), the next height's is kept per
/// signer up to a bound, and each offender yields a bounded number of proofs per height.
#[test]
fn screening_says_what_changes_the_core_and_bounds_what_one_signer_makes_it_hold() {
    let (set, keys) = keys(4);
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
    let msg = |input: Input| match input {
        Input::Message { message, .. } => message,
        _ => unreachable!(),
    };
    let v = msg(prevote(&keys, 2, 0, None));
    assert_eq!(c.screen(9, &v), Screen::New);
    c.handle(Input::Message { from: 9, message: v.clone() }, &mut out);
    assert_eq!(c.screen(9, &v), Screen::Known, "a vote held");
    let Message::Vote(mut forged) = v else { unreachable!() };
    forged.vote.value = Some(Hash([3; 32]));
    assert_eq!(c.screen(9, &Message::Vote(forged)), Screen::Invalid(MessageError::BadSignature));
    let far = msg(proposal(&keys, &set, 2, None, value(1, 4)));
    assert_eq!(c.screen(9, &far), Screen::Known, "a proposal two rounds ahead is not kept");
    assert_eq!(c.screen(9, &msg(proposal(&keys, &set, 1, None, value(1, 4)))), Screen::New);
    let mut wrong_leader = msg(proposal(&keys, &set, 0, None, value(1, 4)));
    if let Message::Proposal(p) = &mut wrong_leader {
        p.proposer = (p.proposer + 1) % 4;
    }
    assert_eq!(c.screen(9, &wrong_leader), Screen::Invalid(MessageError::NotTheProposer));
    c.handle(Input::Message { from: 9, message: wrong_leader }, &mut out);
    assert_eq!(c.stats().bad_messages, 1);
    assert_eq!(c.screen(9, &msg(prevote(&keys, 2, 0, None))), Screen::Known);

    // The next height: kept per signer, up to the bound, each distinct message once.
    let next = |i: usize, round: u32| {
        let vote = Vote { kind: VoteKind::Prevote, height: 2, round, value: None };
        Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, &keys[i]))
    };
    for round in 0..FUTURE_PER_SIGNER_MAX as u32 {
        assert_eq!(c.screen(5, &next(3, round)), Screen::Future);
        c.handle(Input::Message { from: 5, message: next(3, round) }, &mut out);
        assert_eq!(c.screen(5, &next(3, round)), Screen::Known);
    }
    assert_eq!(c.screen(5, &next(3, 99)), Screen::Known, "signer 3 is at its bound");
    assert_eq!(c.screen(5, &next(1, 99)), Screen::Future, "other signers are not crowded out");
    // Next-height junk costs a bounded number of verifications per peer.
    let Message::Vote(mut junk) = next(1, 0) else { unreachable!() };
    junk.signature.0[3] ^= 1;
    for _ in 0..FUTURE_FAILURES_PER_PEER_MAX {
        c.handle(Input::Message { from: 6, message: Message::Vote(junk) }, &mut out);
    }
    assert_eq!(c.screen(6, &next(1, 0)), Screen::Known, "peer 6 is no longer heard on height 2");
    assert_eq!(c.screen(5, &next(1, 0)), Screen::Future);
    c.handle(Input::Message { from: 5, message: next(1, 0) }, &mut out);

    // An equivocating voter: proofs up to the bound per height.
    out.clear();
    for round in 0..10 {
        c.handle(prevote(&keys, 1, round, None), &mut out);
        c.handle(prevote(&keys, 1, round, Some(Hash([round as u8; 32]))), &mut out);
    }
    let proofs = out.iter().filter(|e| matches!(e, Effect::Evidence(_))).count();
    assert_eq!(proofs, EVIDENCE_PER_VALIDATOR_MAX);
    // A new height proves again.
    let mut redelivered = Vec::new();
    c.handle(Input::Start { height: 2, validators: set }, &mut out);
    for e in &out {
        if let Effect::Redeliver(m) = e {
            redelivered.extend(m.iter().cloned());
        }
    }
    assert_eq!(redelivered.len(), FUTURE_PER_SIGNER_MAX + 1, "signer 3's bound, and signer 1's one");
}

/// `Resume` (what a host logs to compact its log, or after a restart without one) goes to
/// the round with the lock kept and everything else forgotten: the validator still refuses
/// another fresh value and signs no second vote of a round it already voted in.
#[test]
fn a_resumed_core_keeps_its_lock_and_starts_over_at_the_round() {
    let (set, keys) = keys(4);
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
    let v = value(1, 7);
    let id = v.id(CHAIN);
    c.handle(proposal(&keys, &set, 0, None, v), &mut out);
    c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
    for i in 1..3 {
        c.handle(prevote(&keys, i, 0, Some(id)), &mut out);
    }
    assert_eq!(c.locked(), Some((0, id)));
    // A fresh core resumed from the persisted lock, as after a restart without the log.
    let mut fresh = core(&keys[0]);
    let mut out = Vec::new();
    fresh.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
    fresh.handle(Input::Resume { height: 1, round: 1, locked: Some((0, id)), valid: None }, &mut out);
    assert_eq!((fresh.round(), fresh.locked()), (1, Some((0, id))));
    // Earlier rounds are not resumed to.
    fresh.handle(Input::Resume { height: 1, round: 1, locked: None, valid: None }, &mut out);
    assert_eq!(fresh.locked(), Some((0, id)));
    out.clear();
    let w = value(1, 8);
    fresh.handle(proposal(&keys, &set, 1, None, w.clone()), &mut out);
    fresh.handle(Input::Checked { height: 1, value: w.id(CHAIN), valid: true, timely: true }, &mut out);
    assert_eq!(my_votes(&out), vec![Vote { kind: VoteKind::Prevote, height: 1, round: 1, value: None }]);
    // The live core resumed with its proof of lock keeps its valid value, and so
    // re-proposes it when it leads (validator 0 leads round 3 of height 1).
    assert_eq!(c.valid(), Some((0, id)));
    let pol = c.pol().map(Box::new);
    assert_eq!(pol.as_ref().map(|p| p.prevotes.len()), Some(3));
    c.handle(Input::Resume { height: 1, round: 3, locked: c.locked(), valid: pol }, &mut out);
    assert_eq!((c.round(), c.locked(), c.valid()), (3, Some((0, id)), Some((0, id))));
    let reproposed = out.iter().any(|e| {
        matches!(e, Effect::Broadcast(Message::Proposal(p)) if p.proposal.round == 3 && p.proposal.valid_round == Some(0) && p.proposal.value.id(CHAIN) == id)
    });
    assert!(reproposed, "the leader re-proposes its valid value after a resume");
}

#[test]
fn a_locked_validator_prevotes_nil_on_another_fresh_value_and_its_value_with_a_quorum() {
    let (set, keys) = keys(4);
    // Validator 3 leads no round used here (leaders of height 1: rounds 0, 1, 2 → 1, 2, 3).
    let me = 0;
    let mut c = core(&keys[me]);
    let mut out = Vec::new();
    c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
    let v = value(1, 7);
    let id = v.id(CHAIN);
    c.handle(proposal(&keys, &set, 0, None, v.clone()), &mut out);
    c.handle(Input::Checked { height: 1, value: id, valid: true, timely: true }, &mut out);
    for i in 1..3 {
        c.handle(prevote(&keys, i, 0, Some(id)), &mut out);
    }
    // Prevoted v, then locked on it and precommitted it.
    let votes = my_votes(&out);
    assert_eq!(
        votes.iter().map(|v| (v.kind, v.value)).collect::<Vec<_>>(),
        vec![(VoteKind::Prevote, Some(id)), (VoteKind::Precommit, Some(id))]
    );
    // No decision: round 1 after the precommit timeout (a quorum of nil precommits).
    for (i, k) in keys.iter().enumerate().take(3).skip(1) {
        let vote = Vote { kind: VoteKind::Precommit, height: 1, round: 0, value: None };
        let m = Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, k));
        c.handle(Input::Message { from: 9, message: m }, &mut out);
    }
    c.handle(Input::Timeout(Timeout { kind: TimeoutKind::Precommit, height: 1, round: 0 }), &mut out);
    assert_eq!(c.round(), 1);
    out.clear();
    let w = value(1, 8);
    c.handle(proposal(&keys, &set, 1, None, w.clone()), &mut out);
    c.handle(Input::Checked { height: 1, value: w.id(CHAIN), valid: true, timely: true }, &mut out);
    assert_eq!(my_votes(&out), vec![Vote { kind: VoteKind::Prevote, height: 1, round: 1, value: None }]);
    // Round 2: v re-proposed with its round-0 quorum: prevoted.
    for (i, k) in keys.iter().enumerate().skip(1) {
        let vote = Vote { kind: VoteKind::Precommit, height: 1, round: 1, value: None };
        let m = Message::Vote(SignedVote::sign(vote, CHAIN, i as u8, k));
        c.handle(Input::Message { from: 9, message: m }, &mut out);
    }
    c.handle(Input::Timeout(Timeout { kind: TimeoutKind::Precommit, height: 1, round: 1 }), &mut out);
    out.clear();
    c.handle(proposal(&keys, &set, 2, Some(0), v), &mut out);
    assert_eq!(my_votes(&out), vec![Vote { kind: VoteKind::Prevote, height: 1, round: 2, value: Some(id) }]);
}

#[test]
fn a_replay_signs_the_same_bytes_and_does_not_build_again() {
    let (set, keys) = keys(4);
    // Height 1, round 0: the leader is validator 1.
    let leader = usize::from(Core::proposer(&set, 1, 0));
    let mut c = core(&keys[leader]);
    let mut log = Vec::new();
    let mut out = Vec::new();
    for input in [
        Input::Start { height: 1, validators: set },
        Input::Proposed { height: 1, round: 0, value: value(1, 3) },
    ] {
        log.push(input.clone());
        c.handle(input, &mut out);
    }
    let sent: Vec<Message> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2, "the proposal and the leader's prevote");
    let mut again = core(&keys[leader]);
    let effects = again.replay(log);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Build { .. })));
    let resent: Vec<Message> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resent, sent);
}

#[test]
fn a_double_vote_yields_one_proof_and_both_votes_count() {
    let (set, keys) = keys(4);
    let mut c = core(&keys[0]);
    let mut out = Vec::new();
    c.handle(Input::Start { height: 1, validators: set.clone() }, &mut out);
    out.clear();
    let a = Some(Hash([1; 32]));
    c.handle(prevote(&keys, 3, 0, a), &mut out);
    c.handle(prevote(&keys, 3, 0, None), &mut out);
    c.handle(prevote(&keys, 3, 0, None), &mut out);
    let proofs: Vec<&Equivocation> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Evidence(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(proofs.len(), 1);
    assert_eq!(proofs[0].check(CHAIN, &set, Backend::K256), Ok(set.validators()[3].public_key));
    assert_eq!(c.stats().equivocations, 1);
    assert_eq!(c.votes.weight_for(VoteKind::Prevote, 0, a), 1);
    assert_eq!(c.votes.weight_for(VoteKind::Prevote, 0, None), 1);
    assert_eq!(c.votes.total(VoteKind::Prevote, 0), 1);
}
