//! Workload builders: a genesis with many funded accounts and pre-signed transfers among them.

use engine::{
    Address, AddressType, Currency, SecretKey,
    codec::Encode,
    genesis::{BalanceSpec, CurrencySpec, GeneratedSpec, Genesis, GenesisConfig, generated::generated_key},
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
        generated: vec![],
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

/// Seed of the benchmark chains' generated accounts (`[[generated]]` in their genesis).
pub const SEED: &str = "bench";

/// Transfers among generated accounts: who sends and who receives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    /// Generated accounts (keys `0..accounts` of [`SEED`]), at least two.
    pub accounts: u64,
    /// Share of transfers between two accounts of the hot set (the first [`Mix::hot_accounts`]
    /// keys), 0 to 1; the rest pick both ends uniformly over all accounts.
    pub hot_share: f64,
}

impl Mix {
    /// Uniform over `accounts` accounts.
    pub const fn uniform(accounts: u64) -> Self {
        Self { accounts, hot_share: 0.0 }
    }

    /// Size of the hot set: 1 % of the accounts, at least two.
    pub const fn hot_accounts(&self) -> u64 {
        let hot = self.accounts / 100;
        if hot < 2 { if self.accounts < 2 { self.accounts } else { 2 } } else { hot }
    }

    /// Sender and receiver of transfer `j` (distinct), the same every run.
    pub fn draw(&self, j: u64) -> (u64, u64) {
        let r = splitmix64(j);
        let hot = ((r >> 11) as f64 / (1u64 << 53) as f64) < self.hot_share;
        let n = if hot { self.hot_accounts() } else { self.accounts }.max(2);
        let from = splitmix64(r) % n;
        // Any other account of the set: an offset of 1 to n − 1.
        let to = (from + 1 + splitmix64(r ^ 0x5851_f42d_4c95_7f2d) % (n - 1)) % n;
        (from, to)
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The genesis of a benchmark chain of `accounts` accounts generated from [`SEED`], each funded
/// with [`FUNDING`]; validated by `validators` (weight 1 each) — a few lines of TOML at any size.
pub fn generated_genesis(chain_id: &str, accounts: u64, validators: &[engine::PublicKey]) -> GenesisConfig {
    GenesisConfig {
        chain_id: chain_id.into(),
        timestamp_ms: GENESIS_MS,
        min_fee: MIN_FEE,
        max_ttl_ms: 3_600_000,
        fee_account: filler(u64::MAX),
        governance: validator_key().public_key().address(),
        validators: validators.iter().map(|&public_key| Validator { public_key, weight: 1 }).collect(),
        currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
        declarations: vec![],
        balances: vec![],
        generated: vec![generated_accounts(accounts)],
    }
}

/// `accounts` accounts generated from [`SEED`], each funded with [`FUNDING`] CAS.
pub fn generated_accounts(accounts: u64) -> GeneratedSpec {
    GeneratedSpec { seed: SEED.into(), count: accounts, currency: Currency::CAS, amount: FUNDING }
}

/// Signed transfer number `j` among the generated accounts of `mix` on chain `chain_id`, as
/// canonical bytes: the ends [`Mix::draw`] picks, an amount distinct per `j` (so every id
/// differs). Derives two public keys and signs: setup work, never timed.
pub fn generated_transfer(chain_id: &str, mix: &Mix, j: u64, expiration_ms: i64) -> Vec<u8> {
    let (from, to) = mix.draw(j);
    // `Genesis::new` refuses a seed with a zero key among its accounts, and SEED has none.
    let key = |i: u64| generated_key(SEED, i).unwrap_or_else(|| panic!("{SEED:?} has no zero key"));
    let sender = key(from);
    let to = key(to).public_key().address();
    let tx = cas_transfer(sender.public_key().address(), to, 1 + j as i64, expiration_ms, vec![]);
    tx.sign(chain_id, &[&sender]).to_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_two_ends_over_all_accounts_or_the_hot_set() {
        let uniform = Mix::uniform(1_000);
        let mut seen = std::collections::BTreeSet::new();
        for j in 0..20_000 {
            let (from, to) = uniform.draw(j);
            assert!(from != to && from < 1_000 && to < 1_000);
            seen.insert(from);
        }
        assert_eq!(seen.len(), 1_000, "every account sends");
        let mixed = Mix { accounts: 1_000, hot_share: 0.5 };
        assert_eq!(mixed.hot_accounts(), 10);
        let hot = (0..20_000).filter(|&j| mixed.draw(j).0 < 10 && mixed.draw(j).1 < 10).count();
        assert!((9_000..11_500).contains(&hot), "about half within the hot set: {hot}");
        assert!((0..1_000).all(|j| Mix { accounts: 2, hot_share: 1.0 }.draw(j) != (0, 0)));
    }

    #[test]
    fn a_generated_transfer_is_signed_by_its_generated_sender() {
        let mix = Mix::uniform(50);
        let bytes = generated_transfer(CHAIN, &mix, 7, GENESIS_MS + 60_000);
        let (tx, id) = engine::tx::SignedTransaction::decode_with_id(&bytes, CHAIN).unwrap();
        let (from, to) = mix.draw(7);
        let genesis = Genesis::new(generated_genesis(CHAIN, 50, &[validator_key().public_key()])).unwrap();
        let addresses = engine::genesis::generated::generated_addresses(SEED, 0, 50);
        assert_eq!(tx.tx.inputs[0].address, addresses[from as usize]);
        assert_eq!(tx.tx.outputs[0].address, addresses[to as usize]);
        assert!(engine::validate::verify_signatures(&tx, &id, CHAIN, engine::Backend::K256).is_ok());
        assert_eq!(genesis.generated_count(), 50);
    }
}
