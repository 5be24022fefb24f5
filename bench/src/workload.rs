//! Workload builders: a genesis with many funded accounts and pre-signed transfers among them.

use engine::{
    Address, AddressType, Currency, SecretKey,
    codec::Encode,
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    ledger::Validator,
    tx::{Fee, Leg, TX_VERSION, Transaction},
};
use rayon::prelude::*;

/// Chain id of benchmark chains.
pub const CHAIN: &str = "bench";
/// Genesis time of benchmark chains (2026-01-01).
pub const GENESIS_MS: i64 = 1_767_225_600_000;
/// Minimum fee of benchmark chains.
pub const MIN_FEE: i64 = 1_000;
/// CAS given to every funded account.
pub const FUNDING: i64 = 1_000 * 100_000_000;

/// The deterministic key of sender `i` (never zero, always below the group order).
pub fn sender_key(i: u64) -> SecretKey {
    let mut b = [0u8; 32];
    b[0] = 1;
    b[24..].copy_from_slice(&i.to_be_bytes());
    // A scalar of this shape is always valid; fall back to a fresh key rather than panic.
    SecretKey::from_bytes(&b).unwrap_or_else(|_| SecretKey::generate())
}

/// A key derived from a label (SHA-256, repeated until the digest is a valid scalar): the same
/// key every run, for demos and tests only — anyone knowing the label knows the key.
pub fn labelled_key(label: &str) -> SecretKey {
    let mut seed = engine::hash::sha256(label.as_bytes());
    // A SHA-256 output is a valid scalar with overwhelming probability; nudge it if not.
    loop {
        if let Ok(k) = SecretKey::from_bytes(&seed) {
            return k;
        }
        seed = engine::hash::sha256(&seed);
    }
}

/// The key of the benchmark chains' single validator (weight 1: a quorum alone).
pub fn validator_key() -> SecretKey {
    sender_key(u64::MAX)
}

/// A filler address: an account that only exists to give the state its size.
pub fn filler(i: u64) -> Address {
    let h = engine::hash::keccak256(&i.to_le_bytes());
    let mut body = [0u8; 20];
    body.copy_from_slice(&h[..20]);
    Address::new(AddressType::Ecdsa, body)
}

/// A workload: the genesis and the senders' keys.
#[derive(Debug)]
pub struct Workload {
    /// Genesis with `senders` funded senders and `accounts − senders` funded fillers.
    pub genesis: Genesis,
    /// Sender keys.
    pub keys: Vec<SecretKey>,
}

/// A genesis of `accounts` funded accounts, of which the first `senders` have known keys.
pub fn workload(senders: usize, accounts: usize) -> Workload {
    let keys: Vec<SecretKey> = (0..senders as u64).into_par_iter().map(sender_key).collect();
    let mut balances: Vec<BalanceSpec> = keys
        .par_iter()
        .map(|k| BalanceSpec { address: k.public_key().address(), currency: Currency::CAS, amount: FUNDING })
        .collect();
    balances.par_extend(
        (senders as u64..accounts.max(senders) as u64).into_par_iter().map(|i| BalanceSpec {
            address: filler(i),
            currency: Currency::CAS,
            amount: FUNDING,
        }),
    );
    let validator = validator_key();
    let config = GenesisConfig {
        chain_id: CHAIN.into(),
        timestamp_ms: GENESIS_MS,
        min_fee: MIN_FEE,
        max_ttl_ms: 3_600_000,
        fee_account: filler(u64::MAX),
        governance: validator.public_key().address(),
        validators: vec![Validator { public_key: validator.public_key(), weight: 1 }],
        currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
        declarations: vec![],
        balances,
    };
    // Every input above is well-formed by construction.
    let genesis = Genesis::new(config).unwrap_or_else(|e| panic!("benchmark genesis is invalid: {e}"));
    Workload { genesis, keys }
}

/// Signed transfer number `j`, as canonical bytes: from sender `j % senders` to a filler when the
/// workload has any (accounts beyond the senders), else to another sender; each with a distinct
/// amount so every id differs.
pub fn transfer_bytes(w: &Workload, j: usize, accounts: usize, expiration_ms: i64) -> Vec<u8> {
    transfer_bytes_on(w, CHAIN, j, accounts, expiration_ms)
}

/// [`transfer_bytes`] signed for chain `chain_id` (a localnet's genesis funding the same keys).
pub fn transfer_bytes_on(
    w: &Workload,
    chain_id: &str,
    j: usize,
    accounts: usize,
    expiration_ms: i64,
) -> Vec<u8> {
    let senders = w.keys.len().max(1);
    let key = &w.keys[j % senders];
    let from = key.public_key().address();
    let fillers = accounts.saturating_sub(senders) as u64;
    let to = if fillers > 0 {
        filler(senders as u64 + (j as u64 * 7919) % fillers)
    } else {
        // Another sender, never the same one (a self-transfer is valid but moves nothing).
        let k = (j.wrapping_mul(7919) + 1) % senders;
        let k = if k == j % senders { (k + 1) % senders } else { k };
        w.keys[k].public_key().address()
    };
    let tx = cas_transfer(from, to, 1 + j as i64, expiration_ms, vec![]);
    tx.sign(chain_id, &[key]).to_bytes()
}

/// An unsigned transfer of `amount` raw CAS units from `from` to `to`, the sender paying
/// [`MIN_FEE`]: the shape of every benchmark transfer.
pub fn cas_transfer(
    from: Address,
    to: Address,
    amount: i64,
    expiration_ms: i64,
    message: Vec<u8>,
) -> Transaction {
    Transaction {
        version: TX_VERSION,
        expiration_ms,
        declarations: vec![],
        inputs: vec![Leg { address: from, currency: Currency::CAS, amount }],
        outputs: vec![Leg { address: to, currency: Currency::CAS, amount }],
        message,
        fee: Fee { payer: from, amount: MIN_FEE },
    }
}

/// `n` signed transfers ([`transfer_bytes`] 0 to n − 1), signed in parallel: setup, not what
/// benchmarks time.
pub fn signed_transfers(w: &Workload, n: usize, accounts: usize, expiration_ms: i64) -> Vec<Vec<u8>> {
    (0..n).into_par_iter().map(|j| transfer_bytes(w, j, accounts, expiration_ms)).collect()
}
