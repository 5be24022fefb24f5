//! Property tests: codec canonicality, decoders on hostile bytes, conservation of value over
//! random transaction sequences, proofs, and agreement of the two signature backends.

use caasiope_engine::{
    Address, AddressType, Backend, Currency, Declaration, HashType, MultiSig, PaymentChannel, PublicKey,
    SecretKey, Signature, ValidatorUpdate, Voucher,
    account::Account,
    codec::{Decode, Encode, decode_exact},
    keys::verify,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    merkle::{StateProof, TxProof, tx_proof},
    proof::{AccountStateProof, TxInclusionProof, verify_account_state, verify_tx_inclusion},
    state::{State, build_block, execute_build, execute_build_ahead, execute_verified},
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction, TxId, TxSignature},
    validate::{VerifiedTx, verify as verify_tx},
};
use proptest::prelude::*;

use crate::common::*;

fn address() -> impl Strategy<Value = Address> {
    (
        prop::sample::select(vec![
            AddressType::Ecdsa,
            AddressType::MultiSig,
            AddressType::HashLock,
            AddressType::TimeLock,
            AddressType::PaymentChannel,
        ]),
        any::<[u8; 20]>(),
    )
        .prop_map(|(t, body)| Address::new(t, body))
}

fn ecdsa_address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(|b| Address::new(AddressType::Ecdsa, b))
}

fn currency() -> impl Strategy<Value = Currency> {
    "[A-Z0-9]{1,8}".prop_map(|s| Currency::new(&s).unwrap())
}

fn leg() -> impl Strategy<Value = Leg> {
    (address(), currency(), any::<i64>()).prop_map(|(address, currency, amount)| Leg {
        address,
        currency,
        amount,
    })
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    prop::collection::vec(any::<u8>(), 65).prop_map(|v| PublicKey(v.try_into().unwrap()))
}

fn signature() -> impl Strategy<Value = Signature> {
    prop::collection::vec(any::<u8>(), 64).prop_map(|v| Signature(v.try_into().unwrap()))
}

fn declaration() -> impl Strategy<Value = Declaration> {
    prop_oneof![
        (prop::collection::btree_set(address(), 1..20), any::<u16>()).prop_map(|(signers, r)| {
            let n = signers.len() as u16;
            Declaration::MultiSig(MultiSig::new(signers.into_iter().collect(), (r % n + 1) as i16).unwrap())
        }),
        (any::<bool>(), any::<[u8; 32]>()).prop_map(|(k, hash)| Declaration::HashLock {
            hash_type: if k { HashType::Keccak256 } else { HashType::Sha256 },
            hash
        }),
        any::<[u8; 32]>().prop_map(|preimage| Declaration::Secret { preimage }),
        any::<i64>().prop_map(|unix_seconds| Declaration::TimeLock { unix_seconds }),
        (ecdsa_address(), address(), currency(), 1..i64::MAX).prop_map(
            |(payer, payee, currency, expiry_ms)| {
                Declaration::PaymentChannel(PaymentChannel { payer, payee, currency, expiry_ms })
            }
        ),
        (any::<[u8; 20]>(), 1..i64::MAX, public_key(), signature()).prop_map(
            |(b, cumulative, public_key, signature)| {
                Declaration::Voucher(Voucher {
                    channel: Address::new(AddressType::PaymentChannel, b),
                    cumulative,
                    public_key,
                    signature,
                })
            }
        ),
        (public_key(), 0..=caasiope_engine::limits::VALIDATOR_WEIGHT_MAX).prop_map(|(public_key, weight)| {
            Declaration::ValidatorUpdate(ValidatorUpdate { public_key, weight })
        }),
    ]
}

fn transaction() -> impl Strategy<Value = SignedTransaction> {
    (
        any::<i64>(),
        prop::collection::vec(declaration(), 0..4),
        prop::collection::vec(leg(), 0..5),
        prop::collection::vec(leg(), 0..5),
        prop::collection::vec(any::<u8>(), 0..=128),
        address(),
        any::<i64>(),
        prop::collection::btree_map(public_key(), signature(), 0..4),
    )
        .prop_map(|(expiration_ms, declarations, inputs, outputs, message, payer, fee, sigs)| {
            SignedTransaction {
                tx: Transaction {
                    version: TX_VERSION,
                    expiration_ms,
                    declarations,
                    inputs,
                    outputs,
                    message,
                    fee: Fee { payer, amount: fee },
                },
                signatures: sigs
                    .into_iter()
                    .map(|(public_key, signature)| TxSignature { public_key, signature })
                    .collect(),
            }
        })
}

/// Decodes `bytes` as `T`; whenever that succeeds, the value re-encodes to exactly `bytes`.
fn canonical<T: Decode + Encode>(bytes: &[u8]) -> bool {
    match decode_exact::<T>(bytes) {
        Ok(v) => v.to_bytes() == bytes,
        Err(_) => true,
    }
}

fn all_decoders_canonical(bytes: &[u8]) {
    assert!(canonical::<SignedTransaction>(bytes));
    assert!(canonical::<Transaction>(bytes));
    assert!(canonical::<Declaration>(bytes));
    assert!(canonical::<LedgerHeader>(bytes));
    assert!(canonical::<Certificate>(bytes));
    assert!(canonical::<ValidatorSet>(bytes));
    assert!(canonical::<Account>(bytes));
    assert!(canonical::<TxProof>(bytes));
    assert!(canonical::<StateProof>(bytes));
    assert!(canonical::<TxInclusionProof>(bytes));
    assert!(canonical::<AccountStateProof>(bytes));
    let _ = SignedTransaction::decode_with_id(bytes, CHAIN);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn transactions_round_trip(tx in transaction()) {
        let bytes = tx.to_bytes();
        let back = SignedTransaction::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &tx);
        prop_assert_eq!(&back.to_bytes(), &bytes);
        let (with_id, id) = SignedTransaction::decode_with_id(&bytes, CHAIN).unwrap();
        prop_assert_eq!(&with_id, &tx);
        prop_assert_eq!(id, tx.id(CHAIN));
        // Every strict prefix is refused.
        for cut in [0, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(SignedTransaction::from_bytes(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_bytes_are_canonical(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        all_decoders_canonical(&bytes);
    }

    #[test]
    fn mutated_transactions_never_panic_and_stay_canonical(
        tx in transaction(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = tx.to_bytes();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        all_decoders_canonical(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics_address_or_genesis(text in "\\PC{0,64}") {
        let _ = text.parse::<Address>();
        let _ = caasiope_engine::genesis::Genesis::from_toml(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn backends_agree_on_random_and_malformed_signatures(
        secret in any::<[u8; 32]>(),
        msg in any::<[u8; 32]>(),
        mutation in 0u8..6,
        pos in any::<prop::sample::Index>(),
        junk in any::<[u8; 32]>(),
    ) {
        let Ok(sk) = SecretKey::from_bytes(&secret) else { return Ok(()) };
        let mut pk = sk.public_key();
        let mut sig = sk.sign_prehash(&msg);
        let mut m = msg;
        match mutation {
            0 => {}
            1 => sig.0[pos.index(64)] ^= 1 << (junk[0] % 8),
            2 => pk.0[pos.index(65)] ^= 1 << (junk[0] % 8),
            3 => m[pos.index(32)] ^= 1 << (junk[0] % 8),
            4 => sig = Signature([junk, junk].concat().try_into().unwrap()),
            _ => {
                // The high-S twin of a valid signature.
                let parsed = k256::ecdsa::Signature::from_slice(&sig.0).unwrap();
                let (r, s) = parsed.split_scalars();
                sig = Signature(k256::ecdsa::Signature::from_scalars(r, -*s).unwrap().to_bytes().into());
            }
        }
        let a = verify(Backend::K256, &pk, &m, &sig);
        let b = verify(Backend::Libsecp256k1, &pk, &m, &sig);
        prop_assert_eq!(a, b);
        prop_assert_eq!(a, mutation == 0, "mutation {} verdict {}", mutation, a);
    }
}

/// Everything a state reads as: head, root, accounts and replay window, in a fixed order.
type Snapshot =
    (caasiope_engine::Hash, caasiope_engine::Hash, Vec<Account>, Vec<(caasiope_engine::Hash, i64)>);

fn snapshot(s: &State) -> Snapshot {
    let mut accounts: Vec<Account> = s.accounts().cloned().collect();
    accounts.sort_by_key(|a| a.address);
    let mut replay: Vec<_> = s.replay_entries().collect();
    replay.sort();
    (s.head_hash(), s.state_root(), accounts, replay)
}

#[derive(Clone, Debug)]
enum Op {
    Pay { from: usize, to: usize, currency: u8, permille: u16 },
    Swap { a: usize, b: usize, permille: u16 },
    Issue { to: usize, amount: i64 },
    Destroy { from: usize, permille: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..USERS, 0..USERS + 2, 0u8..3, 0u16..1200).prop_map(|(from, to, currency, permille)| Op::Pay { from, to, currency, permille }),
        1 => (0..USERS, 0..USERS, 1u16..1200).prop_map(|(a, b, permille)| Op::Swap { a, b, permille }),
        1 => (0..USERS, 1i64..1_000 * COIN).prop_map(|(to, amount)| Op::Issue { to, amount }),
        1 => (0..USERS, 1u16..1200).prop_map(|(from, permille)| Op::Destroy { from, permille }),
    ]
}

fn share(balance: i64, permille: u16) -> i64 {
    // Up to 120 % of the balance, so some payments are (rightly) refused for lack of funds.
    (i128::from(balance) * i128::from(permille) / 1000).max(1) as i64
}

fn build(net: &Net, op: &Op) -> SignedTransaction {
    let currencies = [Currency::CAS, btc(), eth()];
    let fresh = |i: usize| Address::new(AddressType::Ecdsa, [i as u8 + 100; 20]);
    match *op {
        Op::Pay { from, to, currency, permille } => {
            let c = currencies[usize::from(currency)];
            let to = if to < USERS { user(to) } else { fresh(to) };
            let amount = share(net.balance(&user(from), &c), permille);
            net.tx()
                .input(user(from), c, amount)
                .output(to, c, amount)
                .fee(user(from), MIN_FEE)
                .sign(&[&key(from as u8)])
        }
        Op::Swap { a, b, permille } => {
            let x = share(net.balance(&user(a), &Currency::CAS), permille);
            let y = share(net.balance(&user(b), &eth()), permille);
            net.tx()
                .input(user(a), Currency::CAS, x)
                .input(user(b), eth(), y)
                .output(user(b), Currency::CAS, x)
                .output(user(a), eth(), y)
                .fee(user(a), MIN_FEE)
                .sign(&[&key(a as u8), &key(b as u8)])
        }
        Op::Issue { to, amount } => net
            .tx()
            .input(eth_issuer(), eth(), amount)
            .output(user(to), eth(), amount)
            .fee(user(to), MIN_FEE)
            .sign(&[&key(30), &key(to as u8)]),
        Op::Destroy { from, permille } => {
            let amount = share(net.balance(&user(from), &eth()), permille);
            net.tx()
                .input(user(from), eth(), amount)
                .output(eth_issuer(), eth(), amount)
                .fee(user(from), MIN_FEE)
                .sign(&[&key(from as u8)])
        }
    }
}

/// Accounts as checks see them: everything but `last_height`, which marks what an execution
/// journaled.
fn contents(s: &State) -> Vec<Account> {
    let mut v: Vec<Account> = s
        .accounts()
        .cloned()
        .map(|mut a| {
            a.last_height = 0;
            a
        })
        .collect();
    v.sort_by_key(|a| a.address);
    v
}

/// The replay set's ids and expirations, sorted.
fn replay(s: &State) -> Vec<(TxId, i64)> {
    let mut v: Vec<_> = s.replay_entries().collect();
    v.sort();
    v
}

/// The transactions of `ops` built on `net`'s balances, those whose signatures verify.
fn verified_ops(net: &Net, ops: &[Op]) -> Vec<VerifiedTx> {
    let params = net.state.params();
    ops.iter()
        .map(|o| build(net, o))
        .filter_map(|t| {
            let id = t.id(CHAIN);
            verify_tx(t, id, params, Backend::K256).ok()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_conserve_every_currency(blocks in prop::collection::vec(prop::collection::vec(op(), 1..8), 1..5)) {
        let mut net = Net::new();
        let params = net.state.params().clone();
        for ops in blocks {
            let txs: Vec<_> = ops.iter().map(|o| build(&net, o)).collect();
            let verified: Vec<_> = txs.into_iter().map(|t| {
                let id = t.id(CHAIN);
                verify_tx(t, id, &params, Backend::K256)
            }).filter_map(Result::ok).collect();
            net.now += 1000;
            build_block(&mut net.state, net.now, &verified, 1000).unwrap();
            // Tokens: all balances, the issuer's included, sum to zero.
            prop_assert_eq!(net.state.check_conservation(), Ok(()));
            // CAS: the genesis supply, held outside the (unspendable) CAS issuer, is unchanged.
            let held: i128 = net.state.accounts().filter(|a| a.address != Address::timelock(0))
                .map(|a| i128::from(a.balance(&Currency::CAS))).sum();
            prop_assert_eq!(held, USERS as i128 * i128::from(USER_CAS));
            for a in net.state.accounts() {
                for (c, v) in a.balances() {
                    prop_assert!(*v > 0 || params.is_issuer(&a.address, c), "{} holds {} {}", a.address, v, c);
                }
            }
        }
    }

    #[test]
    fn a_sealed_diff_leaves_the_state_and_applies_as_building_in_place(blocks in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..5)) {
        let mut net = Net::new();
        let mut in_place = net.state.clone();
        for ops in blocks {
            let verified = verified_ops(&net, &ops);
            net.now += 1000;
            let before = snapshot(&net.state);
            let (diff, rejected) = execute_build(&mut net.state, net.now, &verified, 1000).unwrap();
            prop_assert_eq!(&snapshot(&net.state), &before, "sealing changed the state");
            prop_assert_eq!(diff.base(), net.state.head_hash());
            let (applied, rejected_in_place) = build_block(&mut in_place, net.now, &verified, 1000).unwrap();
            prop_assert_eq!(rejected.len(), rejected_in_place.len());
            prop_assert_eq!(diff.applied(), &applied);
            let from_diff = net.state.apply_diff(diff.clone()).unwrap();
            prop_assert_eq!(&from_diff, &applied);
            prop_assert_eq!(snapshot(&net.state), snapshot(&in_place));
            prop_assert!(net.state.apply_diff(diff).is_err(), "a diff applies to its base only");
            prop_assert_eq!(net.state.check_conservation(), Ok(()));
        }
    }

    #[test]
    fn a_ledger_sealed_ahead_commits_in_place_or_is_put_back(
        blocks in prop::collection::vec((prop::collection::vec(op(), 0..8), any::<bool>()), 1..5),
    ) {
        let mut net = Net::new();
        let mut in_place = net.state.clone();
        for (ops, last) in blocks {
            let verified = verified_ops(&net, &ops);
            net.now += 1000;
            let before = snapshot(&net.state);
            // Two values of the height: the candidates, and the same reversed a millisecond later.
            let (first, _) = execute_build_ahead(&mut net.state, net.now, &verified, 1000).unwrap();
            prop_assert!(net.state.is_ahead());
            let reversed: Vec<_> = verified.iter().rev().cloned().collect();
            let (second, _) = execute_build_ahead(&mut net.state, net.now + 1, &reversed, 1000).unwrap();
            let mut settled = net.state.clone();
            settled.settle();
            prop_assert_eq!(snapshot(&settled), before.clone(), "put back, the state reads as before");
            // The value executed last commits in place; the other puts it back first.
            let (diff, at, order) = if last { (second, net.now + 1, &reversed) } else { (first, net.now, &verified) };
            net.now = at;
            let applied = net.state.apply_shared_diff(&diff).unwrap();
            prop_assert!(!net.state.is_ahead());
            let (expected, _) = build_block(&mut in_place, at, order, 1000).unwrap();
            prop_assert_eq!(&applied, &expected);
            prop_assert_eq!(snapshot(&net.state), snapshot(&in_place));
            prop_assert_eq!(net.state.check_conservation(), Ok(()));
        }
    }

    #[test]
    fn an_open_ledger_rebased_on_its_first_transactions_is_the_rest_applied_again(
        rounds in prop::collection::vec(
            (prop::collection::vec(op(), 0..8), any::<prop::sample::Index>(), any::<bool>()),
            1..5,
        ),
    ) {
        let mut net = Net::new();
        let params = net.state.params().clone();
        let mut post = net.state.clone();
        let mut exec = post.begin_block(net.now + 700).unwrap();
        // The transactions applied on the open ledger and not yet committed, in order.
        let mut open: Vec<VerifiedTx> = Vec::new();
        for (ops, cut, share) in rounds {
            for t in ops.iter().map(|o| build(&net, o)) {
                let id = t.id(CHAIN);
                let Ok(v) = verify_tx(t, id, &params, Backend::K256) else { continue };
                if exec.apply_tx(&v).is_ok() {
                    open.push(v);
                }
            }
            let ids: Vec<_> = open.iter().map(|v| v.id).collect();
            prop_assert_eq!(exec.tx_ids(), ids.as_slice());
            // The committed ledger: the first `k` at another time than the open ledger's.
            let k = cut.index(open.len() + 1);
            let rest = open.split_off(k);
            net.now += 1000;
            let diff = execute_verified(&mut net.state, net.now - 300, &open).unwrap();
            net.state.apply_diff(diff.clone()).unwrap();
            // The committed state's replay window shared, or the post-state's own kept.
            let window = share.then(|| net.state.replay_window());
            prop_assert!(exec.rebase(&diff, net.now + 700, window));
            prop_assert_eq!(exec.state().head_hash(), net.state.head_hash());
            // What the slow way gives: the rest applied again on the committed state.
            let mut again = net.state.clone();
            let mut slow = again.begin_block(net.now + 700).unwrap();
            for v in &rest {
                prop_assert!(slow.apply_tx(v).is_ok());
            }
            prop_assert_eq!(contents(exec.state()), contents(slow.state()));
            // No more kept to roll back than the rest journals (an account once each).
            prop_assert!(exec.journaled() <= slow.journaled());
            prop_assert_eq!(replay(exec.state()), replay(slow.state()));
            for v in &rest {
                prop_assert!(exec.state().is_included(&v.id, v.tx.tx.expiration_ms));
            }
            open = rest;
        }
        // Rolled back, the open ledger leaves exactly the committed state.
        drop(exec);
        prop_assert_eq!(snapshot(&post), snapshot(&net.state));
        prop_assert_eq!(post.check_conservation(), Ok(()));
    }

    #[test]
    fn an_open_ledger_rebased_on_its_transactions_in_another_order_is_the_rest_applied_again(
        rounds in prop::collection::vec(
            (
                prop::collection::vec(op(), 0..10),
                prop::collection::vec(any::<bool>(), 10),
                any::<u64>(),
                any::<bool>(),
                prop::option::of(op()),
            ),
            1..6,
        ),
    ) {
        let mut net = Net::new();
        let params = net.state.params().clone();
        let mut post = net.state.clone();
        let mut exec = post.begin_block(net.now + 700).unwrap();
        let mut open: Vec<VerifiedTx> = Vec::new();
        for (round, (ops, picked, seed, share, foreign)) in rounds.into_iter().enumerate() {
            for t in ops.iter().map(|o| build(&net, o)) {
                let id = t.id(CHAIN);
                let Ok(v) = verify_tx(t, id, &params, Backend::K256) else { continue };
                if exec.apply_tx(&v).is_ok() {
                    open.push(v);
                }
            }
            // The committed ledger: some of the open transactions in a shuffled order, and
            // perhaps one never applied here, those valid in that order (a proposer's pool is
            // another validator's, reordered, and it may hold what this one has not seen yet).
            let mut chosen: Vec<VerifiedTx> =
                open.iter().zip(picked.iter().cycle()).filter(|(_, p)| **p).map(|(v, _)| v.clone()).collect();
            if let Some(op) = foreign {
                let mut t = build(&net, &op);
                t.tx.message = format!("foreign {round}").into_bytes();
                let keys: Vec<SecretKey> = match op {
                    Op::Pay { from, .. } | Op::Destroy { from, .. } => vec![key(from as u8)],
                    Op::Swap { a, b, .. } => vec![key(a as u8), key(b as u8)],
                    Op::Issue { to, .. } => vec![key(30), key(to as u8)],
                };
                let refs: Vec<&SecretKey> = keys.iter().collect();
                let t = t.tx.sign(CHAIN, &refs);
                let id = t.id(CHAIN);
                if let Ok(v) = verify_tx(t, id, &params, Backend::K256) {
                    chosen.push(v);
                }
            }
            let mut x = seed | 1;
            for i in (1..chosen.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chosen.swap(i, (x % (i as u64 + 1)) as usize);
            }
            net.now += 1000;
            let (diff, _) = execute_build(&mut net.state, net.now - 300, &chosen, 1000).unwrap();
            let committed: std::collections::HashSet<_> = diff.applied().tx_ids.iter().copied().collect();
            let rest: Vec<VerifiedTx> = open.iter().filter(|v| !committed.contains(&v.id)).cloned().collect();
            net.state.apply_diff(diff.clone()).unwrap();
            let window = share.then(|| net.state.replay_window());
            let ids = exec.tx_ids().to_vec();
            let before = contents(exec.state());
            if exec.rebase(&diff, net.now + 700, window) {
                // What the slow way gives: the rest applied again, in order, on the ledger.
                let mut again = net.state.clone();
                let mut slow = again.begin_block(net.now + 700).unwrap();
                for v in &rest {
                    prop_assert!(slow.apply_tx(v).is_ok(), "a pending transaction refused the slow way");
                }
                let rest_ids: Vec<_> = rest.iter().map(|v| v.id).collect();
                prop_assert_eq!(exec.tx_ids(), rest_ids.as_slice());
                prop_assert_eq!(exec.state().head_hash(), net.state.head_hash());
                prop_assert_eq!(contents(exec.state()), contents(slow.state()));
                prop_assert_eq!(replay(exec.state()), replay(slow.state()));
                prop_assert!(exec.journaled() <= slow.journaled());
                open = rest;
            } else {
                // Left as it was; the slow way then.
                prop_assert_eq!(exec.tx_ids(), ids.as_slice());
                prop_assert_eq!(contents(exec.state()), before);
                drop(exec);
                post.apply_diff(diff).unwrap();
                exec = post.begin_block(net.now + 700).unwrap();
                open = rest.into_iter().filter(|v| exec.apply_tx(v).is_ok()).collect();
            }
        }
        drop(exec);
        prop_assert_eq!(snapshot(&post), snapshot(&net.state));
        prop_assert_eq!(post.check_conservation(), Ok(()));
    }

    #[test]
    fn proofs_verify_and_fail_on_any_changed_byte(ops in prop::collection::vec(op(), 1..8), pick in any::<prop::sample::Index>()) {
        let mut net = Net::new();
        let params = net.state.params().clone();
        let validators = net.state.validators().clone();
        let txs: Vec<_> = ops.iter().map(|o| build(&net, o)).collect();
        let verified: Vec<_> = txs.into_iter().filter_map(|t| { let id = t.id(CHAIN); verify_tx(t, id, &params, Backend::K256).ok() }).collect();
        net.now += 1000;
        let (applied, _) = build_block(&mut net.state, net.now, &verified, 1000).unwrap();
        // Three of four equal-weight validators sign.
        let mut certificate = Certificate::new(0);
        let mut vkeys: Vec<SecretKey> = (60..64).map(key).collect();
        vkeys.sort_by_key(SecretKey::public_key);
        for (i, k) in vkeys.iter().enumerate().take(3) {
            certificate.add(CHAIN, i as u8, k, applied.header.height, &applied.hash);
        }
        let accounts: Vec<Address> = net.state.accounts().map(|a| a.address).collect();
        for (n, address) in accounts.iter().enumerate() {
            let (account, branch) = net.state.prove_account(address).unwrap();
            let proof = AccountStateProof { header: applied.header, certificate: certificate.clone(), account, branch };
            prop_assert_eq!(verify_account_state(CHAIN, &validators, &proof, Backend::K256), Ok(()));
            if n == pick.index(accounts.len()) {
                let bytes = proof.to_bytes();
                prop_assert_eq!(decode_exact::<AccountStateProof>(&bytes).unwrap(), proof.clone());
                for i in 0..bytes.len() {
                    let mut b = bytes.clone();
                    b[i] ^= 0x01;
                    if let Ok(p) = decode_exact::<AccountStateProof>(&b) {
                        prop_assert!(verify_account_state(CHAIN, &validators, &p, Backend::Libsecp256k1).is_err(), "byte {} flipped still verifies", i);
                    }
                }
            }
        }
        for (index, id) in applied.tx_ids.iter().enumerate() {
            let branch = tx_proof(&applied.tx_ids, index).unwrap();
            let proof = TxInclusionProof { header: applied.header, certificate: certificate.clone(), tx_id: *id, branch };
            prop_assert_eq!(verify_tx_inclusion(CHAIN, &validators, &proof, Backend::K256), Ok(()));
            if index == pick.index(applied.tx_ids.len()) {
                let bytes = proof.to_bytes();
                for i in 0..bytes.len() {
                    let mut b = bytes.clone();
                    b[i] ^= 0x80;
                    if let Ok(p) = decode_exact::<TxInclusionProof>(&b) {
                        prop_assert!(verify_tx_inclusion(CHAIN, &validators, &p, Backend::Libsecp256k1).is_err(), "byte {} flipped still verifies", i);
                    }
                }
            }
        }
        // Another chain's id, or too few signers, fails.
        if let Some(address) = accounts.first() {
            let (account, branch) = net.state.prove_account(address).unwrap();
            let mut proof = AccountStateProof { header: applied.header, certificate: certificate.clone(), account, branch };
            prop_assert!(verify_account_state("othernet", &validators, &proof, Backend::K256).is_err());
            proof.certificate.signatures.pop();
            prop_assert!(verify_account_state(CHAIN, &validators, &proof, Backend::K256).is_err());
        }
    }
}
