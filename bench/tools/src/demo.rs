//! `caasiope demo`: the engine end to end, in memory, until the network exists.
//!
//! Creates a genesis with a BTC issuer MultiSig, an ETH gateway and three users, then applies and
//! certifies five ledgers — a block of transfers (one a gateway deposit with its reference in the
//! message), an atomic BTC/ETH swap, an HTLC lock with a SHA-256 secret, its claim, and a 2-of-3
//! MultiSig spend — and prints each ledger and the final balances. Every ledger's certificate and
//! an account-state proof are verified offline, and conservation of every currency is checked.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use engine::{
    Address, Backend, Currency, Declaration, HashType, MultiSig, SecretKey,
    currency::format_amount,
    declaration::htlc,
    genesis::{BalanceSpec, CurrencySpec, DeclarationSpec, Genesis, GenesisConfig},
    hash::sha256,
    ledger::{Certificate, Validator},
    proof::{AccountStateProof, verify_account_state},
    state::{Applied, Block, State, apply_block},
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction},
};
use serde_json::json;

use exit::Output;

const CHAIN: &str = "demo";
const GENESIS_MS: i64 = 1_767_225_600_000;
const COIN: i64 = 100_000_000;
const FEE: i64 = 10_000;

/// Demo keys are derived from their names so every run prints the same ledgers.
fn key(name: &str) -> SecretKey {
    bench::workload::labelled_key(&format!("caasiope demo key {name}"))
}

fn addr(name: &str) -> Address {
    key(name).public_key().address()
}

fn currency(symbol: &str) -> Currency {
    // Only the demo's own constant symbols reach here.
    Currency::new(symbol).unwrap_or(Currency::CAS)
}

struct Demo {
    state: State,
    validator: SecretKey,
    now_ms: i64,
    backend: Backend,
    ledgers: Vec<serde_json::Value>,
    text: String,
}

impl Demo {
    fn tx(
        &self,
        inputs: &[(Address, &str, i64)],
        outputs: &[(Address, &str, i64)],
        payer: Address,
    ) -> Transaction {
        let leg =
            |&(address, c, amount): &(Address, &str, i64)| Leg { address, currency: currency(c), amount };
        Transaction {
            version: TX_VERSION,
            expiration_ms: self.now_ms + 600_000,
            declarations: vec![],
            inputs: inputs.iter().map(leg).collect(),
            outputs: outputs.iter().map(leg).collect(),
            message: vec![],
            fee: Fee { payer, amount: FEE },
        }
    }

    /// Applies, certifies and verifies one ledger.
    fn ledger(&mut self, title: &str, txs: Vec<SignedTransaction>) -> anyhow::Result<Applied> {
        self.now_ms += 1_000;
        let validators = self.state.validators().clone();
        let block =
            Block { height: self.state.head().height + 1, timestamp_ms: self.now_ms, transactions: txs };
        let applied = apply_block(&mut self.state, &block, self.backend)
            .with_context(|| format!("ledger {title:?}"))?;
        let mut certificate = Certificate::new(0);
        let height = applied.header.height;
        certificate.add(CHAIN, 0, &self.validator, height, &applied.hash);
        certificate.verify(&validators, CHAIN, height, &applied.hash, self.backend)?;
        if let Err(c) = self.state.check_conservation() {
            bail!("conservation of {c} broken after ledger {}", applied.header.height);
        }
        let h = &applied.header;
        self.text.push_str(&format!(
            "ledger {:>2}  {:<34} txs {}  hash {}…  state {}…\n",
            h.height,
            title,
            applied.tx_ids.len(),
            &applied.hash.to_hex()[..16],
            &h.state_root.to_hex()[..16],
        ));
        self.ledgers.push(json!({
            "title": title,
            "header": h,
            "hash": applied.hash,
            "tx_ids": applied.tx_ids,
            "certificate_signers": certificate.signatures.len(),
        }));
        Ok(applied)
    }
}

fn genesis_config(validator: &SecretKey) -> anyhow::Result<(GenesisConfig, MultiSig)> {
    let btc_issuer = MultiSig::new(vec![addr("issuer-1"), addr("issuer-2"), addr("issuer-3")], 2)?;
    let btc_issuer_addr =
        Declaration::MultiSig(btc_issuer.clone()).address().context("a MultiSig has an address")?;
    let balance = |who: &str, c: &str, coins: i64| BalanceSpec {
        address: addr(who),
        currency: currency(c),
        amount: coins * COIN,
    };
    let config = GenesisConfig {
        generated: vec![],
        chain_id: CHAIN.into(),
        timestamp_ms: GENESIS_MS,
        min_fee: FEE,
        max_ttl_ms: 3_600_000,
        fee_account: addr("fees"),
        governance: btc_issuer_addr,
        validators: vec![Validator { public_key: validator.public_key(), weight: 1 }],
        currencies: vec![
            CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) },
            CurrencySpec { symbol: currency("BTC"), issuer: btc_issuer_addr },
            CurrencySpec { symbol: currency("ETH"), issuer: addr("eth-gateway") },
        ],
        declarations: vec![DeclarationSpec::Multisig {
            required: btc_issuer.required(),
            signers: btc_issuer.signers().to_vec(),
        }],
        balances: vec![
            balance("alice", "CAS", 1_000),
            balance("alice", "BTC", 2),
            balance("bob", "CAS", 1_000),
            balance("bob", "ETH", 30),
            balance("carol", "CAS", 500),
        ],
    };
    Ok((config, btc_issuer))
}

/// Ledgers 1 and 2: transfers, one of them a gateway deposit carrying the depositor's
/// reference; then an atomic swap of 1 BTC from alice for 15 ETH from bob, one transaction,
/// both sign.
fn transfers_and_swap(d: &mut Demo) -> anyhow::Result<()> {
    let (alice, bob, carol, dave) = (addr("alice"), addr("bob"), addr("carol"), addr("dave"));
    let mut deposit = d.tx(&[(addr("eth-gateway"), "ETH", 2 * COIN)], &[(carol, "ETH", 2 * COIN)], carol);
    deposit.message = b"deposit eth:0x5e1f...c0de #4711".to_vec();
    let transfers = vec![
        d.tx(&[(alice, "CAS", 25 * COIN)], &[(carol, "CAS", 25 * COIN)], alice).sign(CHAIN, &[&key("alice")]),
        d.tx(&[(bob, "CAS", 5 * COIN)], &[(dave, "CAS", 5 * COIN)], bob).sign(CHAIN, &[&key("bob")]),
        deposit.sign(CHAIN, &[&key("eth-gateway"), &key("carol")]),
    ];
    d.ledger("transfers + ETH gateway deposit", transfers)?;

    let swap = d.tx(
        &[(alice, "BTC", COIN), (bob, "ETH", 15 * COIN)],
        &[(bob, "BTC", COIN), (alice, "ETH", 15 * COIN)],
        alice,
    );
    d.ledger("atomic swap 1 BTC <-> 15 ETH", vec![swap.sign(CHAIN, &[&key("alice"), &key("bob")])])?;
    Ok(())
}

/// Ledgers 3 and 4, an HTLC: alice locks 100 CAS for bob under a SHA-256 secret; bob claims
/// with it. Returns the HTLC's address.
fn htlc_lock_and_claim(d: &mut Demo) -> anyhow::Result<Address> {
    let (alice, bob) = (addr("alice"), addr("bob"));
    let secret = sha256(b"demo secret");
    let refund_after_s = (d.now_ms + 3_600_000) / 1000;
    let htlc_decls = htlc(alice, bob, HashType::Sha256, sha256(&secret), refund_after_s)?;
    let htlc_addr = htlc_decls.first().and_then(Declaration::address).context("HTLC address")?;
    let lock = d.tx(&[(alice, "CAS", 100 * COIN)], &[(htlc_addr, "CAS", 100 * COIN)], alice);
    d.ledger("HTLC lock 100 CAS (SHA-256)", vec![lock.sign(CHAIN, &[&key("alice")])])?;
    let mut claim = d.tx(&[(htlc_addr, "CAS", 100 * COIN)], &[(bob, "CAS", 100 * COIN)], bob);
    claim.declarations = htlc_decls;
    claim.declarations.push(Declaration::Secret { preimage: secret });
    d.ledger("HTLC claim by bob with the secret", vec![claim.sign(CHAIN, &[&key("bob")])])?;
    Ok(htlc_addr)
}

/// Ledgers 5 and 6: a 2-of-3 treasury MultiSig (carol, dave, bob), funded, then spent with two
/// signatures. Returns the treasury's address.
fn treasury(d: &mut Demo) -> anyhow::Result<Address> {
    let (bob, carol, dave) = (addr("bob"), addr("carol"), addr("dave"));
    let treasury = Declaration::MultiSig(MultiSig::new(vec![carol, dave, bob], 2)?);
    let treasury_addr = treasury.address().context("treasury address")?;
    let fund = d.tx(&[(carol, "CAS", 50 * COIN)], &[(treasury_addr, "CAS", 50 * COIN)], carol);
    d.ledger("fund 2-of-3 treasury", vec![fund.sign(CHAIN, &[&key("carol")])])?;
    let mut spend = d.tx(&[(treasury_addr, "CAS", 20 * COIN)], &[(dave, "CAS", 20 * COIN)], dave);
    spend.declarations.push(treasury);
    d.ledger("treasury spend, signed 2 of 3", vec![spend.sign(CHAIN, &[&key("carol"), &key("dave")])])?;
    Ok(treasury_addr)
}

/// An offline check of `who`'s final state against the last certified header.
fn verify_offline(d: &Demo, who: &Address) -> anyhow::Result<()> {
    let validators = d.state.validators().clone();
    let (account, branch) = d.state.prove_account(who).context("alice has an account")?;
    let mut certificate = Certificate::new(0);
    certificate.add(CHAIN, 0, &d.validator, d.state.head().height, &d.state.head_hash());
    let proof = AccountStateProof { header: *d.state.head(), certificate, account, branch };
    verify_account_state(CHAIN, &validators, &proof, d.backend)?;
    Ok(())
}

/// Every named account's balances: appended to the text, and returned for the JSON.
fn balances(d: &mut Demo, names: &[(&str, Address)]) -> serde_json::Map<String, serde_json::Value> {
    let currencies: BTreeSet<Currency> = d.state.params().issuers.keys().copied().collect();
    d.text.push_str("\nbalances\n");
    let mut balances = serde_json::Map::new();
    for &(name, a) in names {
        let held: Vec<String> = currencies
            .iter()
            .filter_map(|c| {
                let v = d.state.balance(&a, c);
                (v != 0).then(|| format!("{} {c}", format_amount(v)))
            })
            .collect();
        d.text.push_str(&format!(
            "  {name:<12} {a}  {}\n",
            if held.is_empty() { "-".into() } else { held.join(", ") }
        ));
        let map: serde_json::Map<String, serde_json::Value> =
            currencies.iter().map(|c| (c.to_string(), json!(d.state.balance(&a, c)))).collect();
        balances.insert(name.into(), json!({ "address": a, "balances": map }));
    }
    balances
}

/// Runs the demo; `json` selects the output form.
pub fn run(json_output: bool, backend: Backend) -> anyhow::Result<Output> {
    let validator = key("validator");
    let (config, _) = genesis_config(&validator)?;
    let genesis = Genesis::new(config)?;
    let state = State::from_genesis(&genesis);
    let mut d = Demo { state, validator, now_ms: GENESIS_MS, backend, ledgers: vec![], text: String::new() };
    d.text.push_str(&format!(
        "caasiope demo — chain {CHAIN:?}, genesis {}…, signature backend {backend}\n\n",
        &d.state.head_hash().to_hex()[..16]
    ));
    transfers_and_swap(&mut d)?;
    let htlc_addr = htlc_lock_and_claim(&mut d)?;
    let treasury_addr = treasury(&mut d)?;
    verify_offline(&d, &addr("alice"))?;

    let names = [
        ("alice", addr("alice")),
        ("bob", addr("bob")),
        ("carol", addr("carol")),
        ("dave", addr("dave")),
        ("treasury", treasury_addr),
        ("htlc", htlc_addr),
        ("eth-gateway", addr("eth-gateway")),
        ("btc-issuer", d.state.params().issuers[&currency("BTC")]),
        ("fees", addr("fees")),
        ("cas-issuer", Address::timelock(0)),
    ];
    let balances = balances(&mut d, &names);
    d.text.push_str("\nconservation holds for every currency; alice's state proof verifies offline\n");
    if json_output {
        Output::json(&json!({
            "chain_id": CHAIN,
            "backend": backend.name(),
            "ledgers": d.ledgers,
            "balances": balances,
            "conservation": "ok",
            "account_proof": "verified",
        }))
    } else {
        Ok(Output::Line(d.text.trim_end().to_owned()))
    }
}
