//! Every spend rule and every validation error, each with an accepting and a rejecting case.

use caasiope_engine::{
    Address, Currency, Declaration, HashType, MultiSig, PaymentChannel, ValidatorUpdate, Voucher,
    declaration::htlc,
    hash::{keccak256, sha256},
    keys::Signature,
    state::{BlockError, build_block, execute_build_ahead, execute_verified},
    validate::{TxError, verify},
};

use crate::common::*;

#[test]
fn transfer_moves_value_and_pays_the_fee_account() {
    let mut net = Net::new();
    let before_root = net.state.state_root();
    let applied = net.apply_one(net.transfer(0, user(1), 5 * COIN)).unwrap();
    assert_eq!(applied.header.height, 1);
    assert_eq!(applied.receipts.len(), 1);
    assert_eq!(applied.receipts[0].fee, MIN_FEE);
    assert_eq!(net.balance(&user(0), &Currency::CAS), USER_CAS - 5 * COIN - MIN_FEE);
    assert_eq!(net.balance(&user(1), &Currency::CAS), USER_CAS + 5 * COIN);
    assert_eq!(net.balance(&fee_account(), &Currency::CAS), MIN_FEE);
    assert_ne!(net.state.state_root(), before_root);
    assert_eq!(net.state.account(&user(0)).unwrap().last_height, 1);
}

#[test]
fn amounts_must_be_positive() {
    let mut net = Net::new();
    for amount in [0, -5] {
        let tx = net
            .tx()
            .input(user(0), Currency::CAS, amount)
            .output(user(1), Currency::CAS, amount)
            .sign(&[&key(0)]);
        assert!(
            matches!(net.apply_one(tx), Err(TxError::AmountNotPositive { amount: a, .. }) if a == amount)
        );
    }
}

#[test]
fn fee_must_reach_the_minimum() {
    let mut net = Net::new();
    let tx =
        net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).fee(user(0), MIN_FEE - 1);
    assert_eq!(
        net.apply_one(tx.sign(&[&key(0)])),
        Err(TxError::FeeTooLow { fee: MIN_FEE - 1, min: MIN_FEE })
    );
    let tx = net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).fee(user(0), -1);
    assert!(matches!(net.apply_one(tx.sign(&[&key(0)])), Err(TxError::FeeTooLow { .. })));
    // A higher fee is fine, and the fee payer need not be an input.
    let tx =
        net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).fee(user(2), 3 * MIN_FEE);
    net.apply_one(tx.sign(&[&key(0), &key(2)])).unwrap();
    assert_eq!(net.balance(&fee_account(), &Currency::CAS), 3 * MIN_FEE);
}

#[test]
fn every_currency_must_balance() {
    let mut net = Net::new();
    let tx = net.tx().input(user(0), Currency::CAS, 10).output(user(1), Currency::CAS, 9).sign(&[&key(0)]);
    assert_eq!(net.apply_one(tx), Err(TxError::Unbalanced(Currency::CAS)));
    let tx = net.tx().input(user(0), Currency::CAS, 10).output(user(1), btc(), 10).sign(&[&key(0)]);
    assert!(matches!(net.apply_one(tx), Err(TxError::Unbalanced(_))));
}

#[test]
fn currencies_must_have_an_issuer() {
    let mut net = Net::new();
    let doge = Currency::new("DOGE").unwrap();
    let tx = net.tx().input(user(0), doge, 1).output(user(1), doge, 1).sign(&[&key(0)]);
    assert_eq!(net.apply_one(tx), Err(TxError::UnknownCurrency(doge)));
}

#[test]
fn inputs_and_outputs_are_unique_per_address_and_currency() {
    let mut net = Net::new();
    let tx = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .input(user(0), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 2)
        .sign(&[&key(0)]);
    assert_eq!(net.apply_one(tx), Err(TxError::DuplicateInput { address: user(0), currency: Currency::CAS }));
    let tx = net
        .tx()
        .input(user(0), Currency::CAS, 2)
        .output(user(1), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 1)
        .sign(&[&key(0)]);
    assert_eq!(
        net.apply_one(tx),
        Err(TxError::DuplicateOutput { address: user(1), currency: Currency::CAS })
    );
    // Same address, two currencies: fine.
    let tx = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .input(user(0), btc(), 1)
        .output(user(1), Currency::CAS, 1)
        .output(user(1), btc(), 1)
        .sign(&[&key(0)]);
    net.apply_one(tx).unwrap();
}

#[test]
fn declarations_are_unique() {
    let mut net = Net::new();
    let secret = Declaration::Secret { preimage: [1; 32] };
    let tx = net.transfer(0, user(1), 1).tx;
    let mut tx = tx;
    tx.declarations = vec![secret.clone(), secret];
    assert_eq!(net.apply_one(tx.sign(CHAIN, &[&key(0)])), Err(TxError::DuplicateDeclaration));
}

#[test]
fn balances_never_overflow() {
    let mut net = Net::new();
    // The ETH issuer issues i64::MAX − 30 coins' worth on top of user 1's 30 ETH: the sum overflows.
    let big = i64::MAX - 10;
    let tx = net.tx().input(eth_issuer(), eth(), big).output(user(1), eth(), big).fee(user(0), MIN_FEE);
    assert_eq!(net.apply_one(tx.sign(&[&key(30), &key(0)])), Err(TxError::Overflow));
}

#[test]
fn signatures_must_verify() {
    let mut net = Net::new();
    let mut tx = net.transfer(0, user(1), 1);
    tx.signatures[0].signature = Signature([7; 64]);
    assert_eq!(net.apply_one(tx.clone()), Err(TxError::BadSignature { index: 0 }));
    // A signature over another transaction's id.
    let other = net.transfer(0, user(2), 1);
    tx.signatures[0] = other.signatures[0];
    assert_eq!(net.apply_one(tx), Err(TxError::BadSignature { index: 0 }));
    // Signed for another chain.
    let tx = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 1)
        .tx
        .sign("othernet", &[&key(0)]);
    assert_eq!(net.apply_one(tx), Err(TxError::BadSignature { index: 0 }));
}

#[test]
fn expiration_window() {
    let mut net = Net::new();
    let at = net.now + 1_000;
    let expired = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 1)
        .expire(at)
        .sign(&[&key(0)]);
    assert_eq!(net.apply_one(expired), Err(TxError::Expired { expiration_ms: at, ledger_time_ms: at }));
    let far = at + 3_600_000 + 1;
    let too_far = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 1)
        .expire(far)
        .sign(&[&key(0)]);
    assert_eq!(
        net.apply_one(too_far),
        Err(TxError::ExpirationTooFar { expiration_ms: far, ledger_time_ms: at })
    );
    let edge = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 1)
        .expire(far - 1)
        .sign(&[&key(0)]);
    net.apply_one(edge).unwrap();
}

#[test]
fn replays_are_refused_within_the_window_without_nonces() {
    let mut net = Net::new();
    let tx = net.transfer(0, user(1), 1);
    let id = tx.id(CHAIN);
    // Twice in one block.
    assert_eq!(
        net.apply(vec![tx.clone(), tx.clone()]),
        Err(BlockError::InvalidTx { index: 1, error: TxError::Replayed(id) })
    );
    net.apply_one(tx.clone()).unwrap();
    let expiration_ms = tx.tx.expiration_ms;
    assert!(net.state.is_included(&id, expiration_ms));
    assert_eq!(net.apply_one(tx.clone()), Err(TxError::Replayed(id)));
    // Two identical-looking payments are independent transactions if anything differs.
    let again = net
        .tx()
        .input(user(0), Currency::CAS, 1)
        .output(user(1), Currency::CAS, 1)
        .message(b"2")
        .sign(&[&key(0)]);
    net.apply_one(again).unwrap();
    // After expiry the id is forgotten, and the transaction is refused as expired instead.
    let later = net.now + 3_600_000;
    assert!(matches!(
        net.apply_at(later, vec![tx]),
        Err(BlockError::InvalidTx { error: TxError::Expired { .. }, .. })
    ));
    net.apply_at(later, vec![]).unwrap();
    assert!(!net.state.is_included(&id, expiration_ms));
}

#[test]
fn inputs_and_fee_payer_need_their_spend_rule() {
    let mut net = Net::new();
    let tx =
        net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).fee(user(0), MIN_FEE);
    assert_eq!(net.apply_one(tx.sign(&[&key(1)])), Err(TxError::Unsatisfied(user(0))));
    let tx =
        net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).fee(user(2), MIN_FEE);
    assert_eq!(net.apply_one(tx.sign(&[&key(0)])), Err(TxError::Unsatisfied(user(2))));
    let tx = net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1);
    assert_eq!(net.apply_one(tx.sign(&[])), Err(TxError::Unsatisfied(user(0))));
}

#[test]
fn every_signature_must_be_needed() {
    let mut net = Net::new();
    let tx =
        net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).sign(&[&key(0), &key(3)]);
    assert_eq!(net.apply_one(tx), Err(TxError::UnneededSignature(user(3))));
}

#[test]
fn balances_must_suffice_after_the_whole_transaction() {
    let mut net = Net::new();
    // All of user 2's CAS plus the fee: one unit short.
    let tx = net
        .tx()
        .input(user(2), Currency::CAS, USER_CAS)
        .output(user(1), Currency::CAS, USER_CAS)
        .fee(user(2), MIN_FEE);
    assert_eq!(
        net.apply_one(tx.sign(&[&key(2)])),
        Err(TxError::InsufficientBalance {
            address: user(2),
            currency: Currency::CAS,
            balance: USER_CAS,
            change: -USER_CAS - MIN_FEE
        })
    );
    // What an address receives in the same transaction counts: user 2 spends its whole balance
    // and gets 10 back, while user 3 pays the fee.
    let tx = net
        .tx()
        .input(user(2), Currency::CAS, USER_CAS)
        .input(user(3), Currency::CAS, 10)
        .output(user(2), Currency::CAS, 10)
        .output(user(4), Currency::CAS, USER_CAS)
        .fee(user(3), MIN_FEE);
    net.apply_one(tx.sign(&[&key(2), &key(3)])).unwrap();
    assert_eq!(net.balance(&user(2), &Currency::CAS), 10);
}

#[test]
fn issuers_issue_and_destroy_with_negative_balances() {
    let mut net = Net::new();
    let issuer = address_of(&btc_issuer());
    assert_eq!(net.balance(&issuer, &btc()), -2 * COIN);
    // Issue 5 BTC to user 3: the issuer MultiSig needs 2 of its 3 keys.
    let issue =
        net.tx().input(issuer, btc(), 5 * COIN).output(user(3), btc(), 5 * COIN).fee(user(3), MIN_FEE);
    assert_eq!(net.apply_one(issue.sign(&[&key(20), &key(3)])), Err(TxError::Unsatisfied(issuer)));
    let issue =
        net.tx().input(issuer, btc(), 5 * COIN).output(user(3), btc(), 5 * COIN).fee(user(3), MIN_FEE);
    net.apply_one(issue.sign(&[&key(20), &key(22), &key(3)])).unwrap();
    assert_eq!(net.balance(&issuer, &btc()), -7 * COIN);
    // Destroy: send back to the issuer.
    let destroy =
        net.tx().input(user(3), btc(), 4 * COIN).output(issuer, btc(), 4 * COIN).fee(user(3), MIN_FEE);
    net.apply_one(destroy.sign(&[&key(3)])).unwrap();
    assert_eq!(net.balance(&issuer, &btc()), -3 * COIN);
    // The BTC issuer may not go negative in another currency.
    let tx = net.tx().input(issuer, eth(), 1).output(user(3), eth(), 1).fee(user(3), MIN_FEE);
    assert!(matches!(
        net.apply_one(tx.sign(&[&key(20), &key(21), &key(3)])),
        Err(TxError::InsufficientBalance { currency, .. }) if currency == eth()
    ));
}

#[test]
fn the_cas_issuer_can_never_spend() {
    let mut net = Net::new();
    let cas_issuer = Address::timelock(0);
    assert_eq!(net.balance(&cas_issuer, &Currency::CAS), -(USERS as i64) * USER_CAS);
    let tx =
        net.tx().input(cas_issuer, Currency::CAS, 1).output(user(0), Currency::CAS, 1).fee(user(1), MIN_FEE);
    assert_eq!(net.apply_one(tx.sign(&[&key(1)])), Err(TxError::Unsatisfied(cas_issuer)));
    // Not even long after: TimeLock(0) is no lock time at all.
    net.apply_at(net.now + 10_000_000, vec![]).unwrap();
    let tx =
        net.tx().input(cas_issuer, Currency::CAS, 1).output(user(0), Currency::CAS, 1).fee(user(1), MIN_FEE);
    assert_eq!(net.apply_one(tx.sign(&[&key(1)])), Err(TxError::Unsatisfied(cas_issuer)));
}

#[test]
fn multi_currency_swap_is_atomic() {
    let mut net = Net::new();
    // User 0 gives 1 BTC for user 1's 15 ETH, in one transaction signed by both.
    let swap = |net: &Net| {
        net.tx()
            .input(user(0), btc(), COIN)
            .input(user(1), eth(), 15 * COIN)
            .output(user(1), btc(), COIN)
            .output(user(0), eth(), 15 * COIN)
            .fee(user(0), MIN_FEE)
    };
    assert_eq!(net.apply_one(swap(&net).sign(&[&key(0)])), Err(TxError::Unsatisfied(user(1))));
    net.apply_one(swap(&net).sign(&[&key(0), &key(1)])).unwrap();
    assert_eq!(net.balance(&user(0), &eth()), 15 * COIN);
    assert_eq!(net.balance(&user(1), &btc()), COIN);
    assert_eq!(net.balance(&user(0), &btc()), COIN);
}

#[test]
fn multisig_x_of_y_with_partial_reveal() {
    let mut net = Net::new();
    // 2-of-3 over user 3, user 4 and an undeclared nested MultiSig (never revealed).
    let hidden = Declaration::MultiSig(multisig(&[10, 11], 2));
    let ms = Declaration::MultiSig(MultiSig::new(vec![user(3), user(4), address_of(&hidden)], 2).unwrap());
    let ms_addr = address_of(&ms);
    net.apply_one(net.transfer(0, ms_addr, 10 * COIN)).unwrap();
    // Spending needs the declaration (here carried by the spending transaction).
    let spend = |net: &Net, with_decl: bool| {
        let b = net
            .tx()
            .input(ms_addr, Currency::CAS, COIN)
            .output(user(5), Currency::CAS, COIN)
            .fee(user(3), MIN_FEE);
        if with_decl { b.declare(ms.clone()) } else { b }
    };
    assert_eq!(
        net.apply_one(spend(&net, false).sign(&[&key(3), &key(4)])),
        Err(TxError::Unsatisfied(ms_addr))
    );
    assert_eq!(net.apply_one(spend(&net, true).sign(&[&key(3)])), Err(TxError::Unsatisfied(ms_addr)));
    net.apply_one(spend(&net, true).sign(&[&key(3), &key(4)])).unwrap();
    // Now published on chain: later spends need no declaration.
    assert!(net.state.account(&ms_addr).unwrap().declaration.is_some());
    net.apply_one(spend(&net, false).sign(&[&key(4), &key(3)])).unwrap();
    assert_eq!(net.balance(&ms_addr, &Currency::CAS), 8 * COIN);
}

#[test]
fn nested_multisig_depth_is_bounded() {
    let mut net = Net::new();
    // A chain of 1-of-1 MultiSigs, innermost user 3. Depth 5 (outermost at 0) is allowed, 6 is not.
    let mut decls = vec![];
    let mut inner = user(3);
    for _ in 0..7 {
        let d = Declaration::MultiSig(MultiSig::new(vec![inner], 1).unwrap());
        inner = address_of(&d);
        decls.push(d);
    }
    for (levels, ok) in [(5, true), (6, false)] {
        let outer = address_of(&decls[levels - 1]);
        net.apply_one(net.transfer(0, outer, COIN)).unwrap();
        let mut b =
            net.tx().input(outer, Currency::CAS, 1).output(user(5), Currency::CAS, 1).fee(user(3), MIN_FEE);
        for d in &decls[..levels] {
            b = b.declare(d.clone());
        }
        let r = net.apply_one(b.sign(&[&key(3)]));
        if ok {
            r.unwrap();
        } else {
            assert!(matches!(r, Err(TxError::TooDeep(_))), "{r:?}");
        }
    }
}

#[test]
fn spend_rule_work_is_bounded() {
    // Published at genesis: 40 MultiSigs of 20 random ECDSA signers (1-of-20), two MultiSigs over
    // 20 of those each, and a 1-of-2 over the two: 1 + 2 × (1 + 20 × 21) evaluations > 512.
    let mut config = genesis_config();
    let random_ecdsa = |n: u32| {
        Address::new(
            caasiope_engine::AddressType::Ecdsa,
            keccak256(&n.to_le_bytes())[..20].try_into().unwrap(),
        )
    };
    let mut leaves = vec![];
    for i in 0..40u32 {
        let ms = MultiSig::new((0..20).map(|j| random_ecdsa(i * 100 + j)).collect(), 1).unwrap();
        leaves.push(Declaration::MultiSig(ms));
    }
    let mid: Vec<Declaration> = leaves
        .chunks(20)
        .map(|c| Declaration::MultiSig(MultiSig::new(c.iter().map(address_of).collect(), 1).unwrap()))
        .collect();
    let top = Declaration::MultiSig(MultiSig::new(mid.iter().map(address_of).collect(), 1).unwrap());
    for d in leaves.iter().chain(&mid).chain([&top]) {
        let Declaration::MultiSig(ms) = d else { unreachable!() };
        config.declarations.push(caasiope_engine::genesis::DeclarationSpec::Multisig {
            required: ms.required(),
            signers: ms.signers().to_vec(),
        });
    }
    let mut net = Net::with_config(config);
    let top = address_of(&top);
    net.apply_one(net.transfer(0, top, COIN)).unwrap();
    let tx = net.tx().input(top, Currency::CAS, 1).output(user(5), Currency::CAS, 1).fee(user(3), MIN_FEE);
    assert_eq!(net.apply_one(tx.sign(&[&key(3)])), Err(TxError::TooComplex));
}

#[test]
fn hashlock_with_keccak_and_sha256_secrets() {
    let mut net = Net::new();
    for hash_type in [HashType::Keccak256, HashType::Sha256] {
        let preimage = [9u8; 32];
        let hash = match hash_type {
            HashType::Keccak256 => keccak256(&preimage),
            HashType::Sha256 => sha256(&preimage),
        };
        let lock = Declaration::HashLock { hash_type, hash };
        let lock_addr = address_of(&lock);
        net.apply_one(net.transfer(0, lock_addr, COIN)).unwrap();
        let spend = |net: &Net, secret: [u8; 32]| {
            net.tx()
                .input(lock_addr, Currency::CAS, COIN)
                .output(user(5), Currency::CAS, COIN)
                .fee(user(5), MIN_FEE)
                .declare(lock.clone())
                .declare(Declaration::Secret { preimage: secret })
                .sign(&[&key(5)])
        };
        assert_eq!(net.apply_one(spend(&net, [8; 32])), Err(TxError::Unsatisfied(lock_addr)));
        net.apply_one(spend(&net, preimage)).unwrap();
        assert_eq!(net.balance(&lock_addr, &Currency::CAS), 0);
    }
}

#[test]
fn timelock_opens_at_its_time() {
    let mut net = Net::new();
    let unlock_s = (net.now + 10_000) / 1000;
    let lock = Address::timelock(unlock_s);
    net.apply_one(net.transfer(0, lock, COIN)).unwrap();
    let spend = |net: &Net| {
        net.tx()
            .input(lock, Currency::CAS, COIN)
            .output(user(5), Currency::CAS, COIN)
            .fee(user(5), MIN_FEE)
            .sign(&[&key(5)])
    };
    assert_eq!(net.apply_one(spend(&net)), Err(TxError::Unsatisfied(lock)));
    assert_eq!(
        net.apply_at(unlock_s * 1000 - 1, vec![spend(&net)]),
        Err(BlockError::InvalidTx { index: 0, error: TxError::Unsatisfied(lock) })
    );
    // Exactly at the lock time (ledger time ≥ lock time) it opens, to anyone.
    net.apply_at(unlock_s * 1000, vec![spend(&net)]).unwrap();
    assert_eq!(net.balance(&user(5), &Currency::CAS), USER_CAS + COIN - MIN_FEE);
}

#[test]
fn htlc_claim_with_secret_or_refund_after_lock() {
    let mut net = Net::new();
    let secret = [42u8; 32];
    let refund_s = (net.now + 20_000) / 1000;
    let decls = htlc(user(1), user(2), HashType::Sha256, sha256(&secret), refund_s).unwrap();
    let addr = address_of(&decls[0]);
    net.apply_one(net.transfer(1, addr, 2 * COIN)).unwrap();
    net.apply_one(net.transfer(1, addr, 3 * COIN)).unwrap();
    let spend = |net: &Net, amount: i64, to: usize, with_secret: bool| {
        let mut b = net
            .tx()
            .input(addr, Currency::CAS, amount)
            .output(user(to), Currency::CAS, amount)
            .fee(user(to), MIN_FEE);
        for d in &decls {
            b = b.declare(d.clone());
        }
        if with_secret {
            b = b.declare(Declaration::Secret { preimage: secret });
        }
        b.sign(&[&key(to as u8)])
    };
    // Receiver without the secret, sender before the lock: refused.
    assert_eq!(net.apply_one(spend(&net, COIN, 2, false)), Err(TxError::Unsatisfied(addr)));
    assert_eq!(net.apply_one(spend(&net, COIN, 1, false)), Err(TxError::Unsatisfied(addr)));
    // Receiver with the secret claims.
    net.apply_one(spend(&net, 2 * COIN, 2, true)).unwrap();
    // After the lock, the sender takes the rest back.
    net.apply_at(refund_s * 1000, vec![spend(&net, 3 * COIN, 1, false)]).unwrap();
    assert_eq!(net.balance(&addr, &Currency::CAS), 0);
}

/// A payment channel from user 0 (payer) to user 1 (payee) in ETH, expiring 30 s from now,
/// declared and funded with 10 ETH by a transaction of user 1: its address and expiry.
fn funded_channel(net: &mut Net) -> (Address, i64) {
    let expiry = net.now + 30_000;
    let channel = Declaration::PaymentChannel(PaymentChannel {
        payer: user(0),
        payee: user(1),
        currency: eth(),
        expiry_ms: expiry,
    });
    let ch = address_of(&channel);
    let fund = net
        .tx()
        .input(user(1), eth(), 10 * COIN)
        .output(ch, eth(), 10 * COIN)
        .fee(user(1), MIN_FEE)
        .declare(channel)
        .sign(&[&key(1)]);
    net.apply_one(fund).unwrap();
    (ch, expiry)
}

#[test]
fn payment_channel_claims_by_voucher_and_refunds_after_expiry() {
    let mut net = Net::new();
    let payer = key(0);
    let (ch, expiry) = funded_channel(&mut net);
    assert!(net.state.account(&ch).unwrap().declaration.is_some());
    let claim = |net: &Net, amount: i64, voucher: Option<Voucher>, currency: Currency, signer: u8| {
        let mut b =
            net.tx().input(ch, currency, amount).output(user(1), currency, amount).fee(user(1), MIN_FEE);
        if let Some(v) = voucher {
            b = b.declare(Declaration::Voucher(v));
        }
        b.sign(&[&key(signer)])
    };
    let v3 = Voucher::sign(CHAIN, ch, 3 * COIN, &payer);
    assert_eq!(net.apply_one(claim(&net, COIN, None, eth(), 1)), Err(TxError::VoucherMissing(ch)));
    let forged = Voucher::sign(CHAIN, ch, 3 * COIN, &key(5));
    assert_eq!(net.apply_one(claim(&net, COIN, Some(forged), eth(), 1)), Err(TxError::VoucherWrongPayer(ch)));
    let mut bad = v3.clone();
    bad.cumulative += 1;
    assert_eq!(net.apply_one(claim(&net, COIN, Some(bad), eth(), 1)), Err(TxError::BadVoucherSignature));
    assert_eq!(
        net.apply_one(claim(&net, COIN, Some(v3.clone()), Currency::CAS, 1)),
        Err(TxError::ChannelCurrency(ch))
    );
    // Only the payee claims (user 2 signs the fee? no: the payee's rule must hold).
    let by_other = net
        .tx()
        .input(ch, eth(), COIN)
        .output(user(2), eth(), COIN)
        .fee(user(2), MIN_FEE)
        .declare(Declaration::Voucher(v3.clone()))
        .sign(&[&key(2)]);
    assert_eq!(net.apply_one(by_other), Err(TxError::Unsatisfied(ch)));
    assert_eq!(
        net.apply_one(claim(&net, 4 * COIN, Some(v3.clone()), eth(), 1)),
        Err(TxError::VoucherExceeded { claimed: 0, amount: 4 * COIN, cumulative: 3 * COIN })
    );
    net.apply_one(claim(&net, 2 * COIN, Some(v3.clone()), eth(), 1)).unwrap();
    assert_eq!(net.state.account(&ch).unwrap().channel_claimed, 2 * COIN);
    // The same voucher covers one more coin only.
    assert!(matches!(
        net.apply_one(claim(&net, 2 * COIN, Some(v3), eth(), 1)),
        Err(TxError::VoucherExceeded { .. })
    ));
    let v7 = Voucher::sign(CHAIN, ch, 7 * COIN, &payer);
    net.apply_one(claim(&net, 5 * COIN, Some(v7), eth(), 1)).unwrap();
    // Before expiry the payer cannot take the rest; after, only the payer can.
    let refund = |net: &Net, signer: u8| {
        net.tx()
            .input(ch, eth(), 3 * COIN)
            .output(user(0), eth(), 3 * COIN)
            .fee(user(0), MIN_FEE)
            .sign(&[&key(signer)])
    };
    assert_eq!(net.apply_one(refund(&net, 0)), Err(TxError::Unsatisfied(ch)));
    net.apply_at(expiry - 1, vec![]).unwrap();
    let payee_late = net
        .tx()
        .input(ch, eth(), COIN)
        .output(user(1), eth(), COIN)
        .fee(user(1), MIN_FEE)
        .declare(Declaration::Voucher(Voucher::sign(CHAIN, ch, 8 * COIN, &payer)))
        .sign(&[&key(1)]);
    assert!(matches!(
        net.apply_at(expiry, vec![payee_late]),
        Err(BlockError::InvalidTx { error: TxError::Unsatisfied(_), .. })
    ));
    net.apply_at(expiry, vec![refund(&net, 0)]).unwrap();
    assert_eq!(net.balance(&ch, &eth()), 0);
    assert_eq!(net.balance(&user(0), &eth()), 3 * COIN);
}

/// An open ledger (the admission post-state) is not moved in place past a time that changes
/// what its pending transactions may do: a payee's claim admitted before the channel's expiry,
/// or a transaction that expires in between. Moved in place, the claim stayed applied after the
/// expiry — the payer's refund was then refused for funds the claim could no longer take.
#[test]
fn an_open_ledger_is_not_moved_past_a_time_that_changes_its_pending_transactions() {
    let mut net = Net::new();
    let (ch, expiry) = funded_channel(&mut net);
    let verified = |net: &Net, tx: caasiope_engine::tx::SignedTransaction| {
        let id = tx.id(CHAIN);
        caasiope_engine::validate::verify(tx, id, net.state.params(), net.backend).unwrap()
    };
    let first = verified(&net, net.transfer(2, user(3), COIN));
    let claim = verified(
        &net,
        net.tx()
            .input(ch, eth(), COIN)
            .output(user(1), eth(), COIN)
            .fee(user(1), MIN_FEE)
            .declare(Declaration::Voucher(Voucher::sign(CHAIN, ch, 3 * COIN, &key(0))))
            .sign(&[&key(1)]),
    );
    let soon = verified(
        &net,
        net.tx()
            .expire(net.now + 5_000)
            .input(user(4), Currency::CAS, COIN)
            .output(user(5), Currency::CAS, COIN)
            .fee(user(4), MIN_FEE)
            .sign(&[&key(4)]),
    );
    let commit_first = |at: i64| {
        let mut committed = net.state.clone();
        caasiope_engine::state::execute_verified(&mut committed, at, std::slice::from_ref(&first)).unwrap()
    };
    // The claim pending, the first transaction committed after the channel's expiry.
    let mut post = net.state.clone();
    let mut exec = post.begin_block(net.now + 100).unwrap();
    exec.apply_tx(&first).unwrap();
    exec.apply_tx(&claim).unwrap();
    assert!(
        !exec.rebase(&commit_first(expiry + 10), expiry + 20, None),
        "a claim across the channel's expiry"
    );
    assert!(
        !exec.rebase(&commit_first(net.now + 200), net.now + 300, None),
        "a channel spent: never in place"
    );
    drop(exec);
    // A transaction pending that expires by the new time.
    let mut exec = post.begin_block(net.now + 100).unwrap();
    exec.apply_tx(&first).unwrap();
    exec.apply_tx(&soon).unwrap();
    assert!(!exec.rebase(&commit_first(net.now + 1_000), net.now + 6_000, None), "expired by the new time");
    assert!(
        exec.rebase(&commit_first(net.now + 1_000), net.now + 2_000, None),
        "still valid at the new time"
    );
}

/// An open ledger moved in place ledger after ledger holds one journal entry per account it
/// changed, however long it stays open: a busy sender, with a change still pending after every
/// ledger, was journaled again at each new height, and an explorer's admission post-state grew
/// without end (about 250 entries of 120 bytes a second at 3,000 tx/s in a soak).
#[test]
fn an_open_ledger_moved_in_place_journals_each_account_once() {
    let mut net = Net::new();
    let verified = |net: &Net, amount: i64| {
        let tx = net.transfer(2, user(3), amount);
        let id = tx.id(CHAIN);
        verify(tx, id, net.state.params(), net.backend).unwrap()
    };
    let mut post = net.state.clone();
    let mut exec = post.begin_block(net.now + 100).unwrap();
    let mut pending = verified(&net, 1);
    exec.apply_tx(&pending).unwrap();
    // The sender, the payee and the fee account.
    let accounts = exec.journaled();
    for round in 0..50 {
        let next = verified(&net, round + 2);
        exec.apply_tx(&next).unwrap();
        // The ledger commits the older transaction: the newer one stays pending.
        let at = net.now + 1_000;
        let diff = execute_verified(&mut net.state, at, std::slice::from_ref(&pending)).unwrap();
        net.state.apply_diff(diff.clone()).unwrap();
        net.now = at;
        assert!(exec.rebase(&diff, at + 100, None), "round {round}");
        assert_eq!(exec.journaled(), accounts, "round {round}");
        pending = next;
    }
    // Rolled back, the open ledger leaves exactly the committed state.
    drop(exec);
    assert_eq!(post.state_root(), net.state.state_root());
    assert_eq!(post.balance(&user(2), &Currency::CAS), net.balance(&user(2), &Currency::CAS));
}

/// A validator that did not propose admits transactions in another order than the ledger
/// that commits them: its open ledger moves onto that ledger in place when the order does not
/// matter (transfers from other senders, whose debits no committed transaction applied later
/// lowers), and otherwise is left as it was for the slow way.
#[test]
fn an_open_ledger_moves_onto_its_transactions_committed_in_another_order() {
    let net = Net::new();
    let verified = |net: &Net, tx: caasiope_engine::tx::SignedTransaction| {
        let id = tx.id(CHAIN);
        verify(tx, id, net.state.params(), net.backend).unwrap()
    };
    // Three senders pay one payee; the ledger commits the third and the first, in that order.
    let a = verified(&net, net.transfer(1, user(4), COIN));
    let b = verified(&net, net.transfer(2, user(4), 2 * COIN));
    let c = verified(&net, net.transfer(3, user(4), 3 * COIN));
    let at = net.now + 1_000;
    let mut committed = net.state.clone();
    let diff = execute_verified(&mut committed, at, &[c.clone(), a.clone()]).unwrap();
    committed.apply_diff(diff.clone()).unwrap();
    let mut post = net.state.clone();
    let mut exec = post.begin_block(net.now + 100).unwrap();
    for v in [&a, &b, &c] {
        exec.apply_tx(v).unwrap();
    }
    assert!(exec.rebase(&diff, at + 100, None), "the order does not matter");
    assert_eq!(exec.tx_ids(), &[b.id]);
    assert_eq!(exec.state().head_hash(), committed.head_hash());
    for (i, expected) in
        [(1, USER_CAS - COIN - MIN_FEE), (2, USER_CAS - 2 * COIN - MIN_FEE), (4, USER_CAS + 6 * COIN)]
    {
        assert_eq!(exec.state().balance(&user(i), &Currency::CAS), expected, "user {i}");
    }
    assert_eq!(exec.state().balance(&fee_account(), &Currency::CAS), 3 * MIN_FEE);
    // Rolled back, the open ledger leaves the committed ledger.
    drop(exec);
    assert_eq!(post.state_root(), committed.state_root());
    assert_eq!(post.balance(&user(2), &Currency::CAS), USER_CAS);

    // A sender pays, is paid, pays again; the ledger commits its second payment alone. Its
    // first, still pending, no longer finds the funds it spends: not in place, nothing changed.
    let net = Net::new();
    let a = verified(&net, net.transfer(1, user(4), USER_CAS / 10 * 6));
    let b = verified(&net, net.transfer(2, user(1), USER_CAS / 10 * 5));
    let c = verified(&net, net.transfer(1, user(5), USER_CAS / 10 * 8));
    let mut post = net.state.clone();
    let mut exec = post.begin_block(net.now + 100).unwrap();
    for v in [&a, &b, &c] {
        exec.apply_tx(v).unwrap();
    }
    let journaled = exec.journaled();
    let one = exec.state().balance(&user(1), &Currency::CAS);
    let mut committed = net.state.clone();
    let diff = execute_verified(&mut committed, at, std::slice::from_ref(&c)).unwrap();
    assert!(!exec.rebase(&diff, at + 100, None), "a pending debit no longer funded");
    assert_eq!(exec.tx_ids(), &[a.id, b.id, c.id]);
    assert_eq!(exec.journaled(), journaled);
    assert_eq!(exec.state().balance(&user(1), &Currency::CAS), one);
    // A ledger with a transaction never applied here and the payment in, the pending ones
    // still funded: in place, the rest's changes on the ledger's values.
    let other = verified(&net, net.transfer(3, user(5), COIN));
    let mut committed = net.state;
    let diff = execute_verified(&mut committed, at, &[other, b.clone()]).unwrap();
    committed.apply_diff(diff.clone()).unwrap();
    assert!(exec.rebase(&diff, at + 100, None));
    assert_eq!(exec.tx_ids(), &[a.id, c.id]);
    let balances = [
        (1, USER_CAS / 10 * 15 - USER_CAS / 10 * 14 - 2 * MIN_FEE),
        (2, USER_CAS / 10 * 5 - MIN_FEE),
        (3, USER_CAS - COIN - MIN_FEE),
        (5, USER_CAS + COIN + USER_CAS / 10 * 8),
    ];
    for (i, expected) in balances {
        assert_eq!(exec.state().balance(&user(i), &Currency::CAS), expected, "user {i}");
    }
    assert_eq!(exec.state().balance(&fee_account(), &Currency::CAS), 4 * MIN_FEE);
    drop(exec);
    assert_eq!(post.state_root(), committed.state_root());
}

#[test]
fn validator_set_changes_need_governance_and_apply_next_height() {
    let mut net = Net::new();
    let newcomer = key(64).public_key();
    let update = |net: &Net, weight: u64, signers: &[u8]| {
        let keys: Vec<_> = signers.iter().map(|&k| key(k)).collect();
        let refs: Vec<_> = keys.iter().collect();
        net.tx()
            .fee(user(0), MIN_FEE)
            .declare(Declaration::ValidatorUpdate(ValidatorUpdate { public_key: newcomer, weight }))
            .sign(&[&[&key(0)][..], &refs[..]].concat())
    };
    let gov = address_of(&governance());
    assert_eq!(net.apply_one(update(&net, 2, &[40])), Err(TxError::Unsatisfied(gov)));
    let before = net.state.validators().clone();
    let applied = net.apply_one(update(&net, 2, &[40, 42])).unwrap();
    let after = net.state.validators().clone();
    assert_eq!(before.validators().len(), 4);
    assert_eq!(after.validators().len(), 5);
    assert_eq!(after.total_weight(), 6);
    // The header of the ledger that carries the change commits to the set of the next height.
    assert_eq!(applied.header.validator_set_hash, after.hash());
    assert_ne!(applied.header.validator_set_hash, before.hash());
    // Removing every validator is refused.
    let mut b = net.tx().fee(user(0), MIN_FEE);
    for v in after.validators() {
        b = b.declare(Declaration::ValidatorUpdate(ValidatorUpdate { public_key: v.public_key, weight: 0 }));
    }
    let r = net.apply_one(b.sign(&[&key(0), &key(40), &key(41)]));
    assert!(matches!(r, Err(TxError::ValidatorUpdate(_))), "{r:?}");
}

#[test]
fn an_invalid_transaction_leaves_the_block_without_trace() {
    let mut net = Net::new();
    net.apply_one(net.transfer(0, user(1), COIN)).unwrap();
    let root = net.state.state_root();
    let head = *net.state.head();
    let good = net.transfer(2, user(3), COIN);
    let fresh = address_of(&Declaration::MultiSig(multisig(&[1, 2], 1)));
    let creates_account = net.transfer(3, fresh, COIN);
    let bad = net.tx().input(user(4), Currency::CAS, 1).output(user(5), Currency::CAS, 1).sign(&[&key(5)]);
    let r = net.apply(vec![good.clone(), creates_account.clone(), bad]);
    assert_eq!(r, Err(BlockError::InvalidTx { index: 2, error: TxError::Unsatisfied(user(4)) }));
    assert_eq!(net.state.state_root(), root);
    assert_eq!(*net.state.head(), head);
    assert!(net.state.account(&fresh).is_none());
    assert!(!net.state.is_included(&good.id(CHAIN), good.tx.expiration_ms));
    assert_eq!(net.balance(&user(2), &Currency::CAS), USER_CAS);
    // The same transactions are still valid afterwards.
    net.apply(vec![good, creates_account]).unwrap();
}

#[test]
fn block_height_and_time_must_advance() {
    let mut net = Net::new();
    let block = caasiope_engine::state::Block { height: 5, timestamp_ms: net.now + 1, transactions: vec![] };
    assert_eq!(
        caasiope_engine::state::apply_block(&mut net.state, &block, net.backend),
        Err(BlockError::Height { head: 0, got: 5 })
    );
    assert_eq!(net.apply_at(net.now, vec![]), Err(BlockError::Timestamp { previous: net.now, got: net.now }));
}

#[test]
fn leader_skips_invalid_candidates() {
    let mut net = Net::new();
    let params = net.state.params().clone();
    let good = net.transfer(0, user(1), COIN);
    let unfunded = net
        .tx()
        .input(user(2), Currency::CAS, 2 * USER_CAS)
        .output(user(1), Currency::CAS, 2 * USER_CAS)
        .fee(user(2), MIN_FEE)
        .sign(&[&key(2)]);
    let verified: Vec<_> = [good.clone(), unfunded, good.clone()]
        .into_iter()
        .map(|t| {
            let id = t.id(CHAIN);
            caasiope_engine::validate::verify(t, id, &params, net.backend).unwrap()
        })
        .collect();
    let (applied, rejected) =
        caasiope_engine::state::build_block(&mut net.state, net.now + 1000, &verified, 10).unwrap();
    assert_eq!(applied.tx_ids, vec![good.id(CHAIN)]);
    assert_eq!(rejected.len(), 2);
    assert!(matches!(rejected[0].1, TxError::InsufficientBalance { .. }));
    assert_eq!(rejected[1].1, TxError::Replayed(good.id(CHAIN)));
}

#[test]
fn both_backends_apply_identically() {
    let mut a = Net::new();
    let mut b = Net::new();
    b.backend = caasiope_engine::Backend::Libsecp256k1;
    for net in [&mut a, &mut b] {
        let txs = vec![net.transfer(0, user(1), COIN), net.transfer(1, user(2), 2 * COIN)];
        net.apply(txs).unwrap();
    }
    assert_eq!(a.state.head_hash(), b.state.head_hash());
}

#[test]
fn state_restores_from_its_parts() {
    use caasiope_engine::state::{RestoreError, State};
    let mut net = Net::new();
    let tx = net.transfer(0, user(1), COIN);
    let applied = net.apply(vec![tx.clone(), net.transfer(2, user(3), COIN)]).unwrap();
    assert_eq!(applied.touched.len(), 5, "four users and the fee account");
    assert!(applied.touched.windows(2).all(|w| w[0] < w[1]));
    let s = &net.state;
    let accounts: Vec<_> = s.accounts().cloned().collect();
    let replay: Vec<_> = s.replay_entries().collect();
    let restored = State::restore(
        s.params().clone(),
        s.validators().clone(),
        *s.head(),
        accounts.clone(),
        replay.clone(),
    )
    .unwrap();
    assert_eq!(restored.state_root(), s.state_root());
    assert_eq!(restored.head_hash(), s.head_hash());
    let mut again = Net { state: restored, now: net.now, backend: net.backend };
    assert_eq!(again.apply_one(tx), Err(TxError::Replayed(applied.tx_ids[0])));
    // A tampered account or validator set is refused.
    let mut bad = accounts.clone();
    bad[0].last_height += 1;
    assert!(matches!(
        State::restore(s.params().clone(), s.validators().clone(), *s.head(), bad, replay.clone()),
        Err(RestoreError::StateRoot { .. })
    ));
    let other_set = s.validators().with_update(key(64).public_key(), 1).unwrap();
    assert_eq!(
        State::restore(s.params().clone(), other_set, *s.head(), accounts, replay).err(),
        Some(RestoreError::Validators)
    );
}

#[test]
fn a_block_error_names_the_first_invalid_transaction_whatever_its_rule() {
    let mut net = Net::new();
    // Index 1 breaks a stateful rule, index 2 a signature: index 1 is reported.
    let good = net.transfer(0, user(1), COIN);
    let unfunded = net.transfer(2, user(1), 2 * USER_CAS);
    let mut forged = net.transfer(3, user(1), COIN);
    forged.signatures[0].signature = Signature([9; 64]);
    let r = net.apply(vec![good, unfunded, forged]);
    assert!(
        matches!(r, Err(BlockError::InvalidTx { index: 1, error: TxError::InsufficientBalance { .. } })),
        "{r:?}"
    );
}

#[test]
fn transactions_built_in_memory_obey_the_decoder_limits() {
    let mut net = Net::new();
    let mut b = net.tx();
    for i in 0..65u8 {
        b = b.output(Address::new(caasiope_engine::AddressType::Ecdsa, [i; 20]), Currency::CAS, 1);
    }
    let tx = b.input(user(0), Currency::CAS, 65).sign(&[&key(0)]);
    assert!(matches!(net.apply_one(tx), Err(TxError::Decode(_))));
    let tx = net.tx().input(user(0), Currency::CAS, 1).output(user(1), Currency::CAS, 1).message(&[0; 129]);
    assert!(matches!(net.apply_one(tx.sign(&[&key(0)])), Err(TxError::Decode(_))));
    // Signatures out of order (only an in-memory transaction can have that).
    let mut two = net.tx().input(user(0), Currency::CAS, 1).input(user(1), Currency::CAS, 1);
    two = two.output(user(2), Currency::CAS, 2);
    let mut tx = two.sign(&[&key(0), &key(1)]);
    tx.signatures.reverse();
    assert!(matches!(net.apply_one(tx), Err(TxError::Decode(_))));
}

#[test]
fn removing_a_validator_that_is_not_there_is_refused_and_timelocks_are_not_stored() {
    let mut net = Net::new();
    let stranger = key(70).public_key();
    let tx = net
        .tx()
        .fee(user(0), MIN_FEE)
        .declare(Declaration::ValidatorUpdate(ValidatorUpdate { public_key: stranger, weight: 0 }))
        .sign(&[&key(0), &key(40), &key(41)]);
    assert!(matches!(net.apply_one(tx), Err(TxError::ValidatorUpdate(_))));
    // Declaring TimeLock(0) (the CAS issuer) is accepted but changes nothing on its account.
    let root_before = net.state.account(&Address::timelock(0)).unwrap().clone();
    let tx = net.transfer(0, user(1), 1);
    let mut t = tx.tx;
    t.declarations.push(Declaration::TimeLock { unix_seconds: 0 });
    net.apply_one(t.sign(CHAIN, &[&key(0)])).unwrap();
    assert_eq!(net.state.account(&Address::timelock(0)).unwrap(), &root_before);
}

/// A ledger that creates no account is sealed ahead with the trie updated in place (no branch
/// copied); readers see the head's root meanwhile; another value of the height sets the trie
/// back first, and the first value's diff — whose trie shared those branches — still applies
/// and gives its header's root. A ledger that creates an account updates a copy instead.
#[test]
fn the_trie_goes_ahead_in_place_and_comes_back() {
    let mut net = Net::new();
    // The fee account exists from now on.
    net.apply_one(net.transfer(0, user(1), COIN)).unwrap();
    let verified = |net: &Net, tx: caasiope_engine::tx::SignedTransaction| {
        let id = tx.id(CHAIN);
        verify(tx, id, net.state.params(), net.backend).unwrap()
    };
    let a = verified(&net, net.transfer(2, user(3), COIN));
    let b = verified(&net, net.transfer(4, user(5), 2 * COIN));
    let root = net.state.state_root();
    let mut reference = net.state.clone();
    let at = net.now + 1000;

    let (first, _) = execute_build_ahead(&mut net.state, at, [&a], 10).unwrap();
    assert!(net.state.is_trie_ahead(), "no account created: the trie is updated in place");
    assert_eq!(net.state.state_root(), root, "readers see the head's root");
    assert_ne!(first.applied().header.state_root, root);
    let (second, _) = execute_build_ahead(&mut net.state, at + 1, [&b], 10).unwrap();
    assert!(net.state.is_trie_ahead());
    let mut settled = net.state.clone();
    settled.settle();
    assert_eq!(settled.state_root(), root, "put back, the trie is the head's again");
    assert_eq!(
        settled.prove_account(&user(5)).map(|(a, _)| a),
        reference.prove_account(&user(5)).map(|(a, _)| a)
    );

    // The first value commits: the second is put back, the first's diff (sharing the branches
    // the state's trie had when it was ahead) gives its header's root.
    let applied = net.state.apply_shared_diff(&first).unwrap();
    assert!(!net.state.is_ahead());
    assert_eq!(net.state.state_root(), applied.header.state_root);
    let (expected, _) = build_block(&mut reference, at, &[a], 10).unwrap();
    assert_eq!(applied, expected);
    assert_eq!(net.state.state_root(), reference.state_root());
    assert!(net.state.apply_shared_diff(&second).is_err(), "of the other base");

    // A ledger that creates an account: the trie is updated on a copy.
    let fresh = address_of(&Declaration::MultiSig(multisig(&[6, 7], 1)));
    let c = verified(&net, net.transfer(1, fresh, COIN));
    let root = net.state.state_root();
    let (created, rejected) = execute_build_ahead(&mut net.state, at + 1000, [&c], 10).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert!(net.state.is_ahead());
    assert!(!net.state.is_trie_ahead());
    let mut settled = net.state.clone();
    settled.settle();
    assert_eq!(settled.state_root(), root);
    net.state.apply_diff(created).unwrap();
    let (expected, _) = build_block(&mut reference, at + 1000, &[c], 10).unwrap();
    assert_eq!(net.state.state_root(), expected.header.state_root);
}

/// A copy without its trie checks and applies transactions, follows committed diffs, and
/// reports the head's root; it refuses to seal.
#[test]
fn a_copy_without_its_trie_applies_but_never_seals() {
    let mut net = Net::new();
    let mut post = net.state.clone();
    post.detach_trie();
    assert!(post.trie_detached());
    let tx = net.transfer(0, user(1), COIN);
    let id = tx.id(CHAIN);
    let v = verify(tx, id, net.state.params(), net.backend).unwrap();
    let diff = caasiope_engine::state::execute_verified(&mut net.state, net.now + 1000, &[&v]).unwrap();
    post.apply_shared_diff(&diff).unwrap();
    net.state.apply_diff(diff).unwrap();
    assert_eq!(post.state_root(), net.state.state_root());
    assert_eq!(post.balance(&user(1), &Currency::CAS), net.balance(&user(1), &Currency::CAS));
    let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let exec = post.begin_block(net.now + 2000).unwrap();
        exec.finish()
    }));
    assert!(sealed.is_err(), "sealing needs the trie");
}
