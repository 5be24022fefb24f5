//! What the fuzz targets check, and the small chain they check it against.
//!
//! The checks live here rather than in `fuzz_targets/` so that `examples/replay.rs` can run any
//! input (a crash artifact, a whole corpus) through exactly the same code on a stable toolchain,
//! without libFuzzer; `examples/seeds.rs` writes seed corpora built from [`fixture`].
//!
//! Every check is an assertion: a panic is a bug in the engine (or in a check), never an
//! expected outcome of bad input — the engine refuses bad input with an error.

use std::{any::type_name, fmt::Debug, sync::LazyLock};

use caasiope_engine::{
    Address, Backend, Currency, Declaration, HashType, MultiSig, SecretKey, ValidatorUpdate,
    account::Account,
    codec::{Decode, Encode, decode_exact},
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    hash::sha256,
    ledger::{Certificate, LedgerHeader, Validator, ValidatorSet},
    merkle::{StateTrie, tx_proof, verify_state_proof, verify_tx_proof},
    proof::{AccountStateProof, ProofError, TxInclusionProof, verify_account_state, verify_tx_inclusion},
    state::{Applied, State},
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction},
    validate::{TxError, VerifiedTx, check_stateless, verify_signatures},
};

/// Chain id of the fixture chain.
pub const CHAIN: &str = "fuzz";
/// Genesis time of the fixture chain (2026-01-01).
pub const GENESIS_MS: i64 = 1_767_225_600_000;
/// Time of the fixture's first block, and of the block `tx_apply` opens.
pub const BLOCK_MS: i64 = GENESIS_MS + 1_000;
/// Expiration of the fixture's transactions: inside the TTL window of [`BLOCK_MS`].
pub const EXPIRATION_MS: i64 = BLOCK_MS + 60_000;
/// Minimum fee of the fixture chain.
pub const MIN_FEE: i64 = 1_000;
const COIN: i64 = 100_000_000;

/// A small chain: four validators of weight 1, three users, CAS and USD, and a first ledger of
/// valid transactions (transfer, swap, message, MultiSig and HashLock funding, validator update)
/// certified by every validator, with the state after it.
#[derive(Debug)]
pub struct Fixture {
    /// Genesis; `genesis.params` are the chain parameters of every check.
    pub genesis: Genesis,
    /// State of ledger 0.
    pub genesis_state: State,
    /// Validator keys, in the order of `genesis.validators` (the certificate's indices).
    pub validator_keys: Vec<SecretKey>,
    /// Funded users.
    pub users: Vec<SecretKey>,
    /// The second currency.
    pub usd: Currency,
    /// The transactions of ledger 1, in block order.
    pub block: Vec<SignedTransaction>,
    /// Ledger 1.
    pub applied: Applied,
    /// Ledger 1's certificate, signed by every validator of `genesis.validators`.
    pub certificate: Certificate,
    /// State after ledger 1.
    pub state: State,
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: LazyLock<Fixture> = LazyLock::new(build_fixture);
    &FIXTURE
}

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32]).unwrap_or_else(|e| panic!("fixture key {byte}: {e}"))
}

fn address(k: &SecretKey) -> Address {
    k.public_key().address()
}

fn leg(address: Address, currency: Currency, amount: i64) -> Leg {
    Leg { address, currency, amount }
}

fn tx(inputs: Vec<Leg>, outputs: Vec<Leg>, payer: Address) -> Transaction {
    Transaction {
        version: TX_VERSION,
        expiration_ms: EXPIRATION_MS,
        declarations: vec![],
        inputs,
        outputs,
        message: vec![],
        fee: Fee { payer, amount: MIN_FEE },
    }
}

fn build_fixture() -> Fixture {
    let mut validator_keys: Vec<SecretKey> = (1..=4).map(key).collect();
    validator_keys.sort_by_key(SecretKey::public_key);
    let users: Vec<SecretKey> = (0x11..=0x13).map(key).collect();
    let governance = address(&validator_keys[0]);
    let usd = Currency::new("USD").unwrap_or_else(|e| panic!("{e}"));
    let mut balances: Vec<BalanceSpec> = users
        .iter()
        .chain([&validator_keys[0]])
        .map(|k| BalanceSpec { address: address(k), currency: Currency::CAS, amount: 1_000 * COIN })
        .collect();
    balances.push(BalanceSpec { address: address(&users[1]), currency: usd, amount: 1_000_000 });
    let config = GenesisConfig {
        chain_id: CHAIN.into(),
        timestamp_ms: GENESIS_MS,
        min_fee: MIN_FEE,
        max_ttl_ms: 3_600_000,
        fee_account: address(&key(0x21)),
        governance,
        validators: validator_keys
            .iter()
            .map(|k| Validator { public_key: k.public_key(), weight: 1 })
            .collect(),
        currencies: vec![
            CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) },
            CurrencySpec { symbol: usd, issuer: address(&key(0x20)) },
        ],
        declarations: vec![],
        balances,
    };
    let genesis = Genesis::new(config).unwrap_or_else(|e| panic!("fixture genesis: {e}"));
    let genesis_state = State::from_genesis(&genesis);

    let [a, b, c] = [&users[0], &users[1], &users[2]].map(address);
    let cas = Currency::CAS;
    let transfer = tx(vec![leg(a, cas, 5 * COIN)], vec![leg(b, cas, 5 * COIN)], a).sign(CHAIN, &[&users[0]]);
    let swap = tx(vec![leg(a, cas, COIN), leg(b, usd, 700)], vec![leg(b, cas, COIN), leg(a, usd, 700)], a)
        .sign(CHAIN, &[&users[0], &users[1]]);
    let mut with_message = tx(vec![leg(c, cas, 42)], vec![leg(a, cas, 42)], c);
    with_message.message = b"deposit ref 0001".to_vec();
    let with_message = with_message.sign(CHAIN, &[&users[2]]);
    let multisig = Declaration::MultiSig(MultiSig::new(vec![a, b], 2).unwrap_or_else(|e| panic!("{e}")));
    let multisig_address = multisig.address().unwrap_or_else(|| panic!("a MultiSig has an address"));
    let mut fund_multisig = tx(vec![leg(a, cas, COIN)], vec![leg(multisig_address, cas, COIN)], a);
    fund_multisig.declarations = vec![multisig];
    let fund_multisig = fund_multisig.sign(CHAIN, &[&users[0]]);
    let hashlock = Declaration::HashLock { hash_type: HashType::Sha256, hash: sha256(&[7; 32]) };
    let hashlock_address = hashlock.address().unwrap_or_else(|| panic!("a HashLock has an address"));
    let mut fund_hashlock = tx(vec![leg(b, usd, 10)], vec![leg(hashlock_address, usd, 10)], b);
    fund_hashlock.declarations = vec![hashlock];
    let fund_hashlock = fund_hashlock.sign(CHAIN, &[&users[1]]);
    let mut add_validator = tx(vec![], vec![], governance);
    add_validator.declarations =
        vec![Declaration::ValidatorUpdate(ValidatorUpdate { public_key: key(5).public_key(), weight: 1 })];
    let add_validator = add_validator.sign(CHAIN, &[&validator_keys[0]]);
    let block = vec![transfer, swap, with_message, fund_multisig, fund_hashlock, add_validator];

    let mut state = genesis_state.clone();
    let verified: Vec<VerifiedTx> = block
        .iter()
        .map(|t| {
            caasiope_engine::validate::verify(t.clone(), t.id(CHAIN), &genesis.params, Backend::K256)
                .unwrap_or_else(|e| panic!("fixture transaction: {e}"))
        })
        .collect();
    let applied = caasiope_engine::state::apply_verified(&mut state, BLOCK_MS, &verified)
        .unwrap_or_else(|e| panic!("fixture block: {e}"));
    let mut certificate = Certificate::new(0);
    for (i, k) in validator_keys.iter().enumerate() {
        certificate.add(CHAIN, i as u8, k, applied.header.height, &applied.hash);
    }
    Fixture { genesis, genesis_state, validator_keys, users, usd, block, applied, certificate, state }
}

/// Decodes `bytes` as exactly one `T`; when it is accepted, asserts it is the canonical encoding.
fn canonical<T: Decode + Encode>(bytes: &[u8]) -> Option<T> {
    let value = decode_exact::<T>(bytes).ok()?;
    assert!(value.to_bytes() == bytes, "{}: an accepted encoding is not the canonical one", type_name::<T>());
    Some(value)
}

/// Runs `f` with each signature backend and asserts they agree (the engine promises identical
/// verdicts on every input).
fn both_backends<T: PartialEq + Debug>(f: impl Fn(Backend) -> T) -> T {
    let k256 = f(Backend::K256);
    let libsecp = f(Backend::Libsecp256k1);
    assert_eq!(k256, libsecp, "the k256 and libsecp256k1 backends disagree");
    k256
}

/// `tx_decode`: `from_bytes` and `decode_with_id` accept and refuse the same bytes with the same
/// error; what they accept re-encodes to exactly the input and has the id `Transaction::id`
/// computes; the stateless rules and both signature backends run without panicking and agree.
pub fn tx_decode(data: &[u8]) {
    let (tx, id) = match (SignedTransaction::from_bytes(data), SignedTransaction::decode_with_id(data, CHAIN))
    {
        (Ok(tx), Ok((same, id))) => {
            assert_eq!(tx, same, "from_bytes and decode_with_id decode differently");
            (tx, id)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "from_bytes and decode_with_id refuse with different errors");
            return;
        }
        (a, b) => panic!("from_bytes and decode_with_id disagree: {a:?} / {b:?}"),
    };
    assert!(tx.to_bytes() == data, "an accepted transaction is not in canonical form");
    assert_eq!(id, tx.id(CHAIN), "decode_with_id hashed something other than the unsigned prefix");
    let _ = check_stateless(&tx.tx, &fixture().genesis.params);
    for d in &tx.tx.declarations {
        let _ = d.address();
    }
    let _ = both_backends(|b| verify_signatures(&tx, &id, CHAIN, b));
}

/// Every account's canonical encoding, sorted: two states hold the same accounts iff equal.
fn snapshot(state: &State) -> Vec<Vec<u8>> {
    let mut accounts: Vec<Vec<u8>> = state.accounts().map(Encode::to_bytes).collect();
    accounts.sort();
    accounts
}

/// `tx_apply`: a transaction that decodes and passes the stateless rules is applied to the
/// genesis state with its signatures taken as given (the fuzzer cannot sign; what is under test
/// is what the stateful rules do with any set of signers). Applied: value is conserved, only
/// issuers go negative, a second application is a replay, and the sealed state root is the root
/// of the accounts rebuilt from scratch. Refused: the state is exactly as before. Returns whether
/// the transaction was applied.
pub fn tx_apply(data: &[u8]) -> bool {
    let Ok((tx, id)) = SignedTransaction::decode_with_id(data, CHAIN) else { return false };
    let f = fixture();
    let params = &f.genesis.params;
    if check_stateless(&tx.tx, params).is_err() {
        return false;
    }
    let signers = tx.signatures.iter().map(|s| s.public_key.address()).collect();
    let vtx = VerifiedTx { id, tx, signers };
    let mut state = f.genesis_state.clone();
    let before = snapshot(&state);
    let mut exec = state.begin_block(BLOCK_MS).unwrap_or_else(|e| panic!("begin: {e}"));
    let Ok(receipt) = exec.apply_tx(&vtx) else {
        drop(exec);
        assert!(snapshot(&state) == before, "a refused transaction changed the state");
        assert!(!state.is_included(&id), "a refused transaction is in the replay set");
        return false;
    };
    assert_eq!((receipt.id, receipt.index, receipt.fee), (id, 0, vtx.tx.tx.fee.amount));
    assert_eq!(exec.state().check_conservation(), Ok(()), "apply broke conservation");
    assert!(matches!(exec.apply_tx(&vtx), Err(TxError::Replayed(_))), "a transaction applied twice");
    let applied = exec.finish();
    assert_eq!(applied.tx_ids, vec![id]);
    for account in state.accounts() {
        for (currency, balance) in account.balances() {
            assert!(
                *balance > 0 || params.is_issuer(&account.address, currency),
                "{} holds {balance} {currency} and is not its issuer",
                account.address
            );
        }
    }
    let mut leaves: Vec<_> = state.accounts().map(|a| (*a.address.raw(), a.leaf_hash())).collect();
    assert_eq!(state.state_root(), StateTrie::from_entries(&mut leaves).root(), "incremental root drifted");
    true
}

/// `ledger_decode`: the first byte picks the type (modulo 6), the rest is decoded as exactly one
/// value of it — header, certificate, validator set, account, transaction-inclusion proof or
/// account-state proof. What decodes must be canonical, and is then used: certificates and
/// proofs are verified against the fixture's validator set with both backends, whose verdicts
/// must agree, and anything that verifies must be true of the fixture's ledger 1 (a forged
/// signature or Merkle branch would show here).
pub fn ledger_decode(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let f = fixture();
    let validators = &f.genesis.validators;
    match kind % 6 {
        0 => {
            if let Some(header) = canonical::<LedgerHeader>(bytes) {
                let _ = header.hash(CHAIN);
            }
        }
        1 => {
            if let Some(cert) = canonical::<Certificate>(bytes) {
                let verdict = both_backends(|b| cert.verify(validators, CHAIN, f.applied.header.height, &f.applied.hash, b));
                if verdict.is_ok() {
                    certified_by_fixture(&cert);
                }
            }
        }
        2 => {
            if let Some(set) = canonical::<ValidatorSet>(bytes) {
                let _ = set.hash();
                let total: u64 = set.validators().iter().map(|v| v.weight).sum();
                assert_eq!(set.total_weight(), total);
                assert!(set.is_quorum(total) && !set.is_quorum(0));
                for (i, v) in set.validators().iter().enumerate() {
                    assert_eq!(set.index_of(&v.public_key), Some(i));
                }
                assert_eq!(ValidatorSet::new(set.validators().to_vec()).as_ref(), Ok(&set));
            }
        }
        3 => {
            if let Some(account) = canonical::<Account>(bytes) {
                let _ = account.leaf_hash();
            }
        }
        4 => {
            if let Some(proof) = canonical::<TxInclusionProof>(bytes) {
                let verdict = both_backends(|b| verify_tx_inclusion(CHAIN, validators, &proof, b));
                let branch = verify_tx_proof(&proof.header.tx_root, &proof.tx_id, &proof.branch);
                expect_verdict(&verdict, &proof.certificate, &proof.header, branch);
                if verdict.is_ok() {
                    certified_by_fixture(&proof.certificate);
                    assert_eq!(proof.header, f.applied.header);
                    let index = proof.branch.index() as usize;
                    assert_eq!(proof.branch.count() as usize, f.applied.tx_ids.len());
                    assert_eq!(f.applied.tx_ids.get(index), Some(&proof.tx_id), "a forged inclusion proof");
                }
            }
        }
        _ => {
            if let Some(proof) = canonical::<AccountStateProof>(bytes) {
                let verdict = both_backends(|b| verify_account_state(CHAIN, validators, &proof, b));
                let branch = verify_state_proof(
                    &proof.header.state_root,
                    proof.account.address.raw(),
                    &proof.account.leaf_hash(),
                    &proof.branch,
                );
                expect_verdict(&verdict, &proof.certificate, &proof.header, branch);
                if verdict.is_ok() {
                    certified_by_fixture(&proof.certificate);
                    assert_eq!(proof.header, f.applied.header);
                    assert_eq!(
                        f.state.account(&proof.account.address),
                        Some(&proof.account),
                        "a forged account-state proof"
                    );
                }
            }
        }
    }
}

/// A proof's verdict is the certificate's, then the branch's.
fn expect_verdict(verdict: &Result<(), ProofError>, cert: &Certificate, header: &LedgerHeader, branch: bool) {
    let validators = &fixture().genesis.validators;
    let expected = match cert.verify(validators, CHAIN, header.height, &header.hash(CHAIN), Backend::K256) {
        Err(e) => Err(ProofError::Certificate(e)),
        Ok(()) if !branch => Err(ProofError::Branch),
        Ok(()) => Ok(()),
    };
    assert_eq!(verdict, &expected);
}

/// Every signature of a certificate that verified is the one the fixture's validator made:
/// RFC 6979 signing and the low-S rule leave no other valid signature to find.
fn certified_by_fixture(cert: &Certificate) {
    let real = &fixture().certificate.signatures;
    for (index, signature) in &cert.signatures {
        let made = real.iter().find(|(i, _)| i == index).map(|(_, s)| s);
        assert_eq!(made, Some(signature), "validator {index} has a second valid signature");
    }
}

/// Seed inputs per target, built from the fixture: every transaction of ledger 1 and one that
/// carries a declaration of each kind (`tx_decode`, `tx_apply`); each ledger type, and the
/// inclusion proof of every transaction and the state proof of every touched account, all valid
/// (`ledger_decode`).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let f = fixture();
    let mut out = Vec::new();
    let named = f.block.iter().enumerate().map(|(i, t)| (format!("block-tx-{i}"), t.clone()));
    for (name, t) in named.chain([("every-declaration".to_owned(), every_declaration(f))]) {
        for target in ["tx_decode", "tx_apply"] {
            out.push((target, name.clone(), t.to_bytes()));
        }
    }
    let mut ledger = |kind: u8, name: String, value: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = vec![kind];
        value(&mut bytes);
        out.push(("ledger_decode", name, bytes));
    };
    ledger(0, "header".into(), &|b| f.applied.header.encode(b));
    ledger(1, "certificate".into(), &|b| f.certificate.encode(b));
    ledger(2, "validators-1".into(), &|b| f.genesis.validators.encode(b));
    ledger(2, "validators-2".into(), &|b| f.state.validators().encode(b));
    for (i, id) in f.applied.tx_ids.iter().enumerate() {
        let branch = tx_proof(&f.applied.tx_ids, i).unwrap_or_else(|| panic!("tx {i} is in the block"));
        let proof = TxInclusionProof {
            header: f.applied.header,
            certificate: f.certificate.clone(),
            tx_id: *id,
            branch,
        };
        assert_eq!(verify_tx_inclusion(CHAIN, &f.genesis.validators, &proof, Backend::K256), Ok(()));
        ledger(4, format!("tx-proof-{i}"), &|b| proof.encode(b));
    }
    let mut touched: Vec<&Account> = f.state.accounts().filter(|a| a.last_height == 1).collect();
    touched.sort_by_key(|a| a.address);
    for (i, account) in touched.iter().enumerate() {
        ledger(3, format!("account-{i}"), &|b| account.encode(b));
        let (account, branch) =
            f.state.prove_account(&account.address).unwrap_or_else(|| panic!("account {i} exists"));
        let proof = AccountStateProof {
            header: f.applied.header,
            certificate: f.certificate.clone(),
            account,
            branch,
        };
        assert_eq!(verify_account_state(CHAIN, &f.genesis.validators, &proof, Backend::K256), Ok(()));
        ledger(5, format!("state-proof-{i}"), &|b| proof.encode(b));
    }
    out
}

/// A transaction (not valid on the chain) that carries one declaration of each kind.
fn every_declaration(f: &Fixture) -> SignedTransaction {
    let a = address(&f.users[0]);
    let channel = caasiope_engine::PaymentChannel {
        payer: a,
        payee: address(&f.users[1]),
        currency: f.usd,
        expiry_ms: EXPIRATION_MS,
    };
    let channel_address = Declaration::PaymentChannel(channel.clone())
        .address()
        .unwrap_or_else(|| panic!("a channel has an address"));
    let mut t = tx(vec![leg(a, Currency::CAS, 1)], vec![leg(Address::timelock(1), Currency::CAS, 1)], a);
    t.declarations = vec![
        Declaration::MultiSig(
            MultiSig::new(vec![a, Address::timelock(2)], 1).unwrap_or_else(|e| panic!("{e}")),
        ),
        Declaration::HashLock { hash_type: HashType::Keccak256, hash: [3; 32] },
        Declaration::Secret { preimage: [7; 32] },
        Declaration::TimeLock { unix_seconds: 1 },
        Declaration::PaymentChannel(channel),
        Declaration::Voucher(caasiope_engine::Voucher::sign(CHAIN, channel_address, 5, &f.users[0])),
        Declaration::ValidatorUpdate(ValidatorUpdate { public_key: key(6).public_key(), weight: 0 }),
    ];
    t.message = vec![0xff; 128];
    t.sign(CHAIN, &[&f.users[0], &f.users[1]])
}
