//! Every builder's transaction applied to an in-memory engine state: what the wallet produces
//! is what the chain accepts (and refuses what it refuses).

use engine::{
    Address, Backend, Currency, Declaration, MultiSig, SecretKey,
    codec::Encode,
    genesis::{BalanceSpec, CurrencySpec, DeclarationSpec, Genesis, GenesisConfig},
    hash::sha256,
    ledger::{Certificate, Validator, ValidatorSet},
    merkle::tx_proof,
    proof::{AccountStateProof, TxInclusionProof},
    state::{Applied, Block, BlockError, State, apply_block},
    tx::{Leg, SignedTransaction, Transaction},
    validate::TxError,
};
use serde_json::json;

use super::{
    build::{self, ChainView, TxOptions},
    channel, flow, htlc,
    keystore::{KdfCost, Keystore, Passphrase},
    partial::Partial,
    proof, token,
};

const CHAIN: &str = "wallet-test";
const T0_MS: i64 = 1_767_225_600_000;
const COIN: i64 = 100_000_000;
const MIN_FEE: i64 = 10_000;

fn key(name: &str) -> SecretKey {
    bench::workload::labelled_key(&format!("wallet test key {name}"))
}

fn addr(name: &str) -> Address {
    key(name).public_key().address()
}

fn cur(symbol: &str) -> Currency {
    Currency::new(symbol).unwrap()
}

fn btc_issuer() -> MultiSig {
    MultiSig::new(vec![addr("issuer-1"), addr("issuer-2"), addr("issuer-3")], 2).unwrap()
}

fn address_of(d: &Declaration) -> Address {
    d.address().unwrap()
}

struct Net {
    genesis: Genesis,
    state: State,
    /// The validator set that certified each ledger, by height.
    certified_by: Vec<ValidatorSet>,
}

impl Net {
    fn new() -> Self {
        let btc_issuer_address = address_of(&Declaration::MultiSig(btc_issuer()));
        let balance = |who: Address, c: &str, coins: i64| BalanceSpec {
            address: who,
            currency: cur(c),
            amount: coins * COIN,
        };
        let config = GenesisConfig {
            generated: vec![],
            chain_id: CHAIN.into(),
            timestamp_ms: T0_MS,
            min_fee: MIN_FEE,
            max_ttl_ms: 3_600_000,
            fee_account: addr("fees"),
            governance: btc_issuer_address,
            validators: vec![Validator { public_key: key("validator").public_key(), weight: 1 }],
            currencies: vec![
                CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) },
                CurrencySpec { symbol: cur("BTC"), issuer: btc_issuer_address },
                CurrencySpec { symbol: cur("ETH"), issuer: addr("eth-gateway") },
            ],
            declarations: vec![DeclarationSpec::Multisig {
                required: btc_issuer().required(),
                signers: btc_issuer().signers().to_vec(),
            }],
            balances: vec![
                balance(addr("alice"), "CAS", 1_000),
                balance(addr("alice"), "BTC", 2),
                balance(addr("bob"), "CAS", 1_000),
                balance(addr("bob"), "ETH", 30),
                balance(addr("carol"), "CAS", 500),
                balance(addr("eth-gateway"), "CAS", 10),
                balance(btc_issuer_address, "CAS", 10),
            ],
        };
        // Through TOML, as `verify-proof` reads it.
        let genesis = Genesis::from_toml(&Genesis::new(config).unwrap().to_toml()).unwrap();
        let state = State::from_genesis(&genesis);
        Self { certified_by: vec![genesis.validators.clone()], genesis, state }
    }

    fn now(&self) -> i64 {
        self.state.head().timestamp_ms
    }

    /// The chain as `/v1/status` would describe it.
    fn chain(&self) -> ChainView {
        ChainView { params: self.state.params().clone(), now_ms: self.now() }
    }

    fn balance(&self, a: &Address, c: &str) -> i64 {
        self.state.balance(a, &cur(c))
    }

    /// The explorer's side of `fetch_context`: each account's declaration as JSON, read back.
    fn context(&self, tx: &Transaction) -> Vec<Declaration> {
        build::resolve_context(tx, |a| {
            let json =
                self.state.account(a).and_then(|acc| acc.declaration.as_deref()).map(serde_json::to_value);
            json.transpose()?.map(|v| build::declaration_from_json(&v, a)).transpose()
        })
        .unwrap()
    }

    fn partial(&self, tx: &Transaction) -> Partial {
        Partial::new(CHAIN, tx.clone(), self.context(tx)).unwrap()
    }

    /// Signs with every key through the wallet's own path and checks it is complete.
    fn signed(&self, tx: Transaction, keys: &[&SecretKey]) -> SignedTransaction {
        let context = self.context(&tx);
        let mut p = Partial::new(CHAIN, tx, context).unwrap();
        for k in keys {
            p.sign(k, self.now()).unwrap();
        }
        p.complete(self.now()).unwrap()
    }

    fn apply_at(
        &mut self,
        timestamp_ms: i64,
        transactions: Vec<SignedTransaction>,
    ) -> Result<Applied, BlockError> {
        let certifying = self.state.validators().clone();
        let block = Block { height: self.state.head().height + 1, timestamp_ms, transactions };
        let applied = apply_block(&mut self.state, &block, Backend::K256)?;
        assert_eq!(self.state.check_conservation(), Ok(()));
        self.certified_by.push(certifying);
        Ok(applied)
    }

    fn apply(&mut self, tx: SignedTransaction) -> Result<Applied, BlockError> {
        self.apply_at(self.now() + 1_000, vec![tx])
    }

    fn certificate(&self, applied: &Applied) -> Certificate {
        let mut c = Certificate::new(0);
        c.add(CHAIN, 0, &key("validator"), applied.header.height, &applied.hash);
        c
    }
}

fn tx_error(r: Result<Applied, BlockError>) -> TxError {
    match r {
        Err(BlockError::InvalidTx { error, .. }) => error,
        other => panic!("expected an invalid transaction, got {other:?}"),
    }
}

fn opts() -> TxOptions {
    TxOptions::default()
}

#[test]
fn send_is_accepted_and_pays_the_minimum_fee() {
    let mut net = Net::new();
    let (alice, carol) = (addr("alice"), addr("carol"));
    let options = TxOptions { message: b"invoice 42".to_vec(), ..TxOptions::default() };
    let tx =
        flow::transfer(&net.chain(), alice, carol, Currency::CAS, 150_000_000, vec![], &options).unwrap();
    assert_eq!(tx.fee.amount, MIN_FEE);
    assert_eq!(tx.expiration_ms, net.now() + build::SEND_TTL_MS_DEFAULT);
    net.apply(net.signed(tx, &[&key("alice")])).unwrap();
    assert_eq!(net.balance(&carol, "CAS"), 501 * COIN + 50_000_000);
    assert_eq!(net.balance(&addr("fees"), "CAS"), MIN_FEE);
    // What the engine would refuse is refused before signing.
    let low = TxOptions { fee: Some(MIN_FEE - 1), ..TxOptions::default() };
    assert!(flow::transfer(&net.chain(), alice, carol, Currency::CAS, 1, vec![], &low).is_err());
    let err = flow::transfer(&net.chain(), alice, carol, cur("XYZ"), 1, vec![], &opts()).unwrap_err();
    assert!(format!("{err:#}").contains("unknown currency"), "{err:#}");
    // A TTL past the chain's max is capped to it.
    let long = TxOptions { ttl_ms: Some(10 * 3_600_000), ..TxOptions::default() };
    let tx = flow::transfer(&net.chain(), alice, carol, Currency::CAS, 1, vec![], &long).unwrap();
    assert_eq!(tx.expiration_ms, net.now() + 3_600_000);
    net.apply(net.signed(tx, &[&key("alice")])).unwrap();
}

#[test]
fn swap_is_signed_by_both_parties_through_the_file() {
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Keystore::at(dir.path().join("wallet"), KdfCost::TEST);
    let pass = || Passphrase::new(b"pw".to_vec()).unwrap();
    store.create("alice", &key("alice"), &pass()).unwrap();
    store.create("bob", &key("bob"), &pass()).unwrap();
    store.create("carol", &key("carol"), &pass()).unwrap();
    let (alice, bob) = (addr("alice"), addr("bob"));
    let leg = |address, c: &str, coins| Leg { address, currency: cur(c), amount: coins * COIN };
    let tx = flow::legs(
        &net.chain(),
        &[leg(alice, "BTC", 1), leg(bob, "ETH", 15)],
        &[leg(bob, "BTC", 1), leg(alice, "ETH", 15)],
        alice,
        vec![],
        &opts(),
    )
    .unwrap();
    assert_eq!(tx.expiration_ms, net.now() + 3_600_000, "files default to the max TTL");
    let file = dir.path().join("swap.json");
    net.partial(&tx).save_new(&file).unwrap();
    assert!(net.partial(&Partial::load(&file).unwrap().tx).save_new(&file).is_err(), "never overwritten");

    let mut p = Partial::load(&file).unwrap();
    p.sign(&store.load("alice", &pass()).unwrap(), net.now()).unwrap();
    p.save_replace(&file).unwrap();
    let mut p = Partial::load(&file).unwrap();
    assert_eq!(p.signers(), [alice]);
    let err = p.complete(net.now()).unwrap_err().to_string();
    assert!(err.contains("not complete") && err.contains(&bob.to_text()), "{err}");
    let err = p.sign(&store.load("carol", &pass()).unwrap(), net.now()).unwrap_err().to_string();
    assert!(err.contains("not needed"), "{err}");
    p.sign(&store.load("bob", &pass()).unwrap(), net.now()).unwrap();
    p.save_replace(&file).unwrap();
    let signed = Partial::load(&file).unwrap().complete(net.now()).unwrap();
    net.apply(signed).unwrap();
    assert_eq!(net.balance(&bob, "BTC"), COIN);
    assert_eq!(net.balance(&alice, "ETH"), 15 * COIN);

    // A file whose signature or transaction was altered is refused on loading.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sig = v["signatures"][0]["signature"].as_str().unwrap().to_owned();
    v["signatures"][0]["signature"] =
        json!(format!("{}{}", if sig.starts_with('0') { "1" } else { "0" }, &sig[1..]));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    assert!(Partial::load(&bad).unwrap_err().to_string().contains("does not verify"));
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unsigned = v["unsigned"].as_str().unwrap().to_owned();
    v["unsigned"] = json!(unsigned.replacen("01", "02", 1));
    std::fs::write(&bad, v.to_string()).unwrap();
    assert!(Partial::load(&bad).is_err());
}

#[test]
fn multisig_is_declared_then_co_signed() {
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, carol, dave) = (addr("alice"), addr("bob"), addr("carol"), addr("dave"));
    // Declaration file, published while funding the account.
    let decl_file = dir.path().join("treasury.json");
    let ms = Declaration::MultiSig(MultiSig::new(vec![alice, bob, carol], 2).unwrap());
    let treasury = build::write_declaration_file(&decl_file, &ms).unwrap();
    let declarations = build::load_declarations(&decl_file).unwrap();
    assert_eq!(declarations, std::slice::from_ref(&ms));
    let fund = flow::transfer(&net.chain(), carol, treasury, Currency::CAS, 50 * COIN, declarations, &opts())
        .unwrap();
    net.apply(net.signed(fund, &[&key("carol")])).unwrap();
    assert_eq!(net.state.account(&treasury).unwrap().declaration.as_deref(), Some(&ms));

    // The spend does not carry the declaration: the wallet resolves it from the chain.
    let spend = flow::legs(
        &net.chain(),
        &[Leg { address: treasury, currency: Currency::CAS, amount: 20 * COIN }],
        &[Leg { address: dave, currency: Currency::CAS, amount: 20 * COIN }],
        treasury,
        vec![],
        &opts(),
    )
    .unwrap();
    assert!(spend.declarations.is_empty());
    let mut p = net.partial(&spend);
    assert_eq!(p.context.len(), 1);
    p.sign(&key("carol"), net.now()).unwrap();
    let v = p.verdict(net.now());
    assert_eq!(
        (v.complete(), v.unsatisfied.as_slice()),
        (false, [(treasury, TxError::Unsatisfied(treasury))].as_slice())
    );
    assert!(p.sign(&key("dave"), net.now()).is_err(), "dave is not a signer");
    // Incomplete, the chain refuses it too.
    assert_eq!(tx_error(net.apply(p.signed())), TxError::Unsatisfied(treasury));
    p.sign(&key("alice"), net.now()).unwrap();
    net.apply(p.complete(net.now()).unwrap()).unwrap();
    assert_eq!(net.balance(&dave, "CAS"), 20 * COIN);

    // `multisig declare`: a transaction that only publishes.
    let other = Declaration::MultiSig(MultiSig::new(vec![bob, dave], 1).unwrap());
    let tx = flow::declare_only(&net.chain(), bob, vec![other.clone()], &opts()).unwrap();
    net.apply(net.signed(tx, &[&key("bob")])).unwrap();
    assert_eq!(net.state.account(&address_of(&other)).unwrap().declaration.as_deref(), Some(&other));
}

#[test]
fn htlc_claim_with_the_secret_and_refund_only_after_the_lock() {
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (addr("alice"), addr("bob"));
    let secret = htlc::new_secret();
    let terms = htlc::terms(&net.chain(), alice, bob, sha256(&secret), 3600).unwrap();
    let fund = htlc::fund(&net.chain(), &terms, Currency::CAS, 100 * COIN, &opts()).unwrap();
    net.apply(net.signed(fund, &[&key("alice")])).unwrap();
    let address = terms.address().unwrap();
    assert_eq!(net.balance(&address, "CAS"), 100 * COIN);

    // The file round-trips and re-derives its address; one with altered terms is refused.
    let file = htlc::HtlcFile {
        format: htlc::FORMAT.into(),
        chain_id: CHAIN.into(),
        address,
        terms: terms.clone(),
        currency: Currency::CAS,
        amount: 100 * COIN,
        funding_tx: None,
    };
    let path = dir.path().join("htlc.json");
    super::files::write_json_new(&path, &file, 0o644).unwrap();
    assert_eq!(htlc::HtlcFile::load(&path).unwrap().terms, terms);
    assert_eq!(build::load_declarations(&path).unwrap(), terms.declarations().unwrap());
    let forged = dir.path().join("forged.json");
    let mut other = file;
    other.terms.receiver = addr("carol");
    super::files::write_json_new(&forged, &other, 0o644).unwrap();
    assert!(htlc::HtlcFile::load(&forged).is_err());

    let chain = net.chain();
    assert!(htlc::claim(&chain, &terms, [0; 32], Currency::CAS, COIN, bob, &opts()).is_err(), "wrong secret");
    // The sender cannot take it back before the lock time: the builder says so...
    let balances = [(Currency::CAS, 100 * COIN)];
    let err = htlc::refund(&chain, &terms, &balances, alice, &opts()).unwrap_err().to_string();
    assert!(err.contains("can be refunded from"), "{err}");
    // ...and the chain agrees (a refund built as if the lock had passed).
    let pretend = ChainView { now_ms: terms.refund_after_unix_seconds * 1000, ..net.chain() };
    let mut early = htlc::refund(&pretend, &terms, &balances, alice, &opts()).unwrap();
    early.expiration_ms = net.now() + 600_000;
    let mut p = net.partial(&early);
    p.sign(&key("alice"), pretend.now_ms).unwrap();
    assert_eq!(tx_error(net.apply(p.complete(pretend.now_ms).unwrap())), TxError::Unsatisfied(address));

    // The receiver claims part with the secret.
    let claim = htlc::claim(&net.chain(), &terms, secret, Currency::CAS, 60 * COIN, bob, &opts()).unwrap();
    net.apply(net.signed(claim, &[&key("bob")])).unwrap();
    assert_eq!(net.balance(&bob, "CAS"), 1_060 * COIN - MIN_FEE);

    // After the lock time, the sender takes the rest back.
    net.apply_at(terms.refund_after_unix_seconds * 1000, vec![]).unwrap();
    let rest = [(Currency::CAS, net.balance(&address, "CAS"))];
    let refund = htlc::refund(&net.chain(), &terms, &rest, alice, &opts()).unwrap();
    net.apply(net.signed(refund, &[&key("alice")])).unwrap();
    assert_eq!(net.balance(&address, "CAS"), 0);
    assert_eq!(net.balance(&alice, "CAS"), 940 * COIN - 2 * MIN_FEE);
}

#[test]
fn channel_open_claim_with_vouchers_and_close_after_expiry() {
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (addr("alice"), addr("bob"));
    let (file, open) = channel::open(&net.chain(), alice, bob, cur("BTC"), COIN, 30, &opts()).unwrap();
    net.apply(net.signed(open, &[&key("alice")])).unwrap();
    let ch = file.address;
    assert_eq!(net.balance(&ch, "BTC"), COIN);
    let path = dir.path().join("channel.json");
    super::files::write_json_new(&path, &file, 0o644).unwrap();
    let file = channel::ChannelFile::load(&path).unwrap();

    // Vouchers are signed by the payer only, and travel as files.
    assert!(channel::voucher(&file, 10, &key("bob")).is_err());
    let v30 = channel::voucher(&file, 30_000_000, &key("alice")).unwrap();
    let vpath = dir.path().join("v30.json");
    channel::save_voucher(&vpath, CHAIN, &v30).unwrap();
    let v30 = channel::load_voucher(&vpath, CHAIN, &file).unwrap();
    assert!(channel::load_voucher(&vpath, "other-chain", &file).is_err());

    let claimed = |net: &Net| net.state.account(&ch).unwrap().channel_claimed;
    let claim = channel::claim(&net.chain(), &file, &v30, claimed(&net), COIN, None, bob, &opts()).unwrap();
    net.apply(net.signed(claim, &[&key("bob")])).unwrap();
    assert_eq!(claimed(&net), 30_000_000);
    // The same voucher covers nothing more.
    let err = channel::claim(&net.chain(), &file, &v30, claimed(&net), COIN, None, bob, &opts()).unwrap_err();
    assert!(err.to_string().contains("nothing to claim"), "{err}");
    let v50 = channel::voucher(&file, 50_000_000, &key("alice")).unwrap();
    let claim = channel::claim(&net.chain(), &file, &v50, claimed(&net), COIN, None, bob, &opts()).unwrap();
    assert_eq!(claim.inputs[0].amount, 20_000_000, "cumulative minus claimed");
    net.apply(net.signed(claim, &[&key("bob")])).unwrap();
    assert_eq!(net.balance(&bob, "BTC"), 50_000_000);

    // Before expiry the payer cannot close; the builder refuses, and so would the chain.
    let balances = [(cur("BTC"), net.balance(&ch, "BTC"))];
    assert!(channel::close(&net.chain(), &file, &balances, alice, &opts()).is_err());
    let pretend = ChainView { now_ms: file.expiry_ms, ..net.chain() };
    let early = channel::close(&pretend, &file, &balances, alice, &opts()).unwrap();
    let mut p = net.partial(&early);
    p.sign(&key("alice"), pretend.now_ms).unwrap();
    assert_eq!(tx_error(net.apply(p.complete(pretend.now_ms).unwrap())), TxError::Unsatisfied(ch));

    net.apply_at(file.expiry_ms, vec![]).unwrap();
    let v90 = channel::voucher(&file, 90_000_000, &key("alice")).unwrap();
    assert!(channel::claim(&net.chain(), &file, &v90, claimed(&net), COIN, None, bob, &opts()).is_err());
    let close = channel::close(&net.chain(), &file, &balances, alice, &opts()).unwrap();
    net.apply(net.signed(close, &[&key("alice")])).unwrap();
    assert_eq!(net.balance(&ch, "BTC"), 0);
    assert_eq!(net.balance(&alice, "BTC"), COIN + 50_000_000);
}

#[test]
fn tokens_are_issued_and_destroyed_by_key_and_by_multisig() {
    let mut net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, carol, alice) = (addr("eth-gateway"), addr("carol"), addr("alice"));
    // An ECDSA issuer: its balance goes negative by what it issues.
    let tx =
        token::issue(&net.chain(), gateway, carol, cur("ETH"), 5 * COIN, gateway, vec![], &opts()).unwrap();
    net.apply(net.signed(tx, &[&key("eth-gateway")])).unwrap();
    assert_eq!(net.balance(&gateway, "ETH"), -35 * COIN);
    assert!(token::issue(&net.chain(), carol, alice, cur("ETH"), 1, carol, vec![], &opts()).is_err());
    // Destroying: back to the issuer, the supply shrinks.
    let tx = token::destroy(&net.chain(), carol, cur("ETH"), 2 * COIN, carol, vec![], &opts()).unwrap();
    net.apply(net.signed(tx, &[&key("carol")])).unwrap();
    assert_eq!(net.balance(&gateway, "ETH"), -33 * COIN);
    assert_eq!(net.balance(&carol, "ETH"), 3 * COIN);

    // A 2-of-3 MultiSig issuer, through its declaration file and the partially signed file.
    let issuer_file = dir.path().join("btc-issuer.json");
    let issuer = build::write_declaration_file(&issuer_file, &Declaration::MultiSig(btc_issuer())).unwrap();
    let declarations = build::load_declarations(&issuer_file).unwrap();
    let tx =
        token::issue(&net.chain(), issuer, alice, cur("BTC"), COIN, issuer, declarations, &opts()).unwrap();
    let path = dir.path().join("issue.json");
    let mut p = net.partial(&tx);
    p.sign(&key("issuer-1"), net.now()).unwrap();
    p.save_new(&path).unwrap();
    let mut p = Partial::load(&path).unwrap();
    assert!(p.complete(net.now()).is_err());
    p.sign(&key("issuer-3"), net.now()).unwrap();
    net.apply(p.complete(net.now()).unwrap()).unwrap();
    assert_eq!(net.balance(&alice, "BTC"), 3 * COIN);
    assert_eq!(net.balance(&issuer, "BTC"), -3 * COIN);
    let tx = token::destroy(&net.chain(), alice, cur("BTC"), COIN, alice, vec![], &opts()).unwrap();
    net.apply(net.signed(tx, &[&key("alice")])).unwrap();
    assert_eq!(net.balance(&issuer, "BTC"), -2 * COIN);
}

#[test]
fn proofs_verify_offline_and_tampering_is_refused() {
    let mut net = Net::new();
    let (alice, carol) = (addr("alice"), addr("carol"));
    let t1 = flow::transfer(&net.chain(), alice, carol, Currency::CAS, COIN, vec![], &opts()).unwrap();
    let t2 = flow::transfer(&net.chain(), carol, alice, Currency::CAS, COIN, vec![], &opts()).unwrap();
    let txs = vec![net.signed(t1, &[&key("alice")]), net.signed(t2, &[&key("carol")])];
    let applied = net.apply_at(net.now() + 1_000, txs).unwrap();
    let certificate = net.certificate(&applied);
    let height = applied.header.height;

    let branch = tx_proof(&applied.tx_ids, 1).unwrap();
    let tx_proof = TxInclusionProof {
        header: applied.header,
        certificate: certificate.clone(),
        tx_id: applied.tx_ids[1],
        branch,
    };
    let file = |kind: Option<&str>, height: u64, bytes: &[u8]| {
        let mut v = json!({ "height": height, "proof": hex::encode(bytes) });
        if let Some(k) = kind {
            v["kind"] = json!(k);
        }
        v.to_string()
    };
    let verify = |text: &str| proof::verify(text, &net.genesis, None, None, Backend::K256);
    let bytes = tx_proof.to_bytes();
    let ok = verify(&file(Some("transaction"), height, &bytes)).unwrap();
    assert_eq!(ok["tx_id"], json!(applied.tx_ids[1]));
    assert_eq!(ok["validator_set"]["trusted_as"], "genesis");
    // The kind may be left out (the explorer's bare answer).
    assert_eq!(verify(&file(None, height, &bytes)).unwrap()["kind"], "transaction");
    // A flipped byte anywhere, or a height that is not the header's, is refused.
    for i in [0, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        assert!(verify(&file(Some("transaction"), height, &b)).is_err(), "byte {i}");
    }
    assert!(verify(&file(Some("transaction"), height + 1, &bytes)).is_err());

    let (account, branch) = net.state.prove_account(&alice).unwrap();
    let account_proof = AccountStateProof { header: applied.header, certificate, account, branch };
    let bytes = account_proof.to_bytes();
    let ok = verify(&file(Some("account"), height, &bytes)).unwrap();
    assert_eq!(ok["account"]["address"], json!(alice));
    let mut forged = account_proof;
    forged.account.set_balance(Currency::CAS, 10_000 * COIN);
    assert!(verify(&file(Some("account"), height, &forged.to_bytes())).is_err());
    // Another chain's genesis does not verify it.
    let mut config = net.genesis.config.clone();
    config.chain_id = "elsewhere".into();
    let elsewhere = Genesis::new(config).unwrap();
    assert!(proof::verify(&file(None, height, &bytes), &elsewhere, None, None, Backend::K256).is_err());

    // A validator-set file: the genesis set is accepted as such; another set only with its
    // hash vouched for, and then the certificate must be by that set.
    let set_file = |set: &ValidatorSet| {
        json!({ "height": height, "validators": hex::encode(set.to_bytes()) }).to_string()
    };
    let genesis_set = set_file(&net.certified_by[height as usize]);
    let text = file(Some("account"), height, &bytes);
    let ok = proof::verify(&text, &net.genesis, Some(&genesis_set), None, Backend::K256).unwrap();
    assert_eq!(ok["validator_set"]["trusted_as"], "genesis");
    let other =
        ValidatorSet::new(vec![Validator { public_key: key("mallory").public_key(), weight: 1 }]).unwrap();
    let err = proof::verify(&text, &net.genesis, Some(&set_file(&other)), None, Backend::K256).unwrap_err();
    assert!(err.to_string().contains("--trusted-set-hash"), "{err}");
    let err = proof::verify(&text, &net.genesis, Some(&set_file(&other)), Some(other.hash()), Backend::K256)
        .unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
}
