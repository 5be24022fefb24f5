//! A deterministic test chain: a genesis with funded keys, and signed transfers that depend only
//! on the height, so a process that restarts from a store rebuilds exactly the ledgers it would
//! have written.

use engine::{
    Address, AddressType, Backend, Currency, PublicKey, SecretKey, Signature,
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    hash::keccak256,
    ledger::{Certificate, Validator},
    state::{Applied, Block, State, apply_block},
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction, TxSignature},
};

/// Chain id of test chains.
pub const CHAIN_ID: &str = "storage-test";
/// Time of ledger 0 (2026-01-01).
pub const GENESIS_MS: i64 = 1_767_225_600_000;
/// Ledger `h` is at `GENESIS_MS + h × BLOCK_INTERVAL_MS`.
pub const BLOCK_INTERVAL_MS: i64 = 1_000;
/// Transactions expire this long after their ledger.
pub const TX_TTL_MS: i64 = 20_000;
/// Minimum fee.
pub const MIN_FEE: i64 = 1_000;
/// CAS given to each sender and filler at genesis.
pub const FUNDING: i64 = 1_000 * 100_000_000;

/// A test chain: its genesis text, the senders' keys and the validator's.
#[derive(Debug)]
pub struct TestChain {
    /// Genesis TOML text.
    pub genesis_toml: String,
    /// Funded keys that send the transfers, with their public keys and addresses (computed
    /// once: deriving a public key is a scalar multiplication, as costly as a signature).
    pub senders: Vec<(SecretKey, PublicKey, Address)>,
    /// The senders' keys for libsecp256k1, which signs the transfers.
    signing_keys: Vec<secp256k1::SecretKey>,
    /// Funded accounts without keys, receivers of transfers.
    pub fillers: u64,
    /// The single validator's key.
    pub validator: SecretKey,
}

fn key(tag: u8, i: u64) -> SecretKey {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[24..].copy_from_slice(&i.to_be_bytes());
    SecretKey::from_bytes(&b).unwrap_or_else(|e| panic!("test key {tag}/{i}: {e}"))
}

/// Filler account `i`: exists only to receive and to give the state its size.
pub fn filler(i: u64) -> Address {
    let h = keccak256(&i.to_le_bytes());
    let mut body = [0u8; 20];
    body.copy_from_slice(&h[..20]);
    Address::new(AddressType::Ecdsa, body)
}

/// The fee account of test chains.
pub fn fee_account() -> Address {
    filler(u64::MAX)
}

impl TestChain {
    /// A chain with `senders` funded keys and `fillers` funded keyless accounts.
    pub fn new(senders: usize, fillers: u64) -> Self {
        Self::new_with(senders, fillers, 3_600_000, false)
    }

    /// [`TestChain::new`] with the chain's `max_ttl_ms`, and with sender 0 as the governance
    /// account when `sender_governs` (else the validator's address, which holds nothing).
    pub fn new_with(senders: usize, fillers: u64, max_ttl_ms: i64, sender_governs: bool) -> Self {
        let senders: Vec<(SecretKey, PublicKey, Address)> = (1..=senders as u64)
            .map(|i| {
                let k = key(1, i);
                let pk = k.public_key();
                (k, pk, pk.address())
            })
            .collect();
        let signing_keys = senders
            .iter()
            .map(|(k, _, _)| {
                secp256k1::SecretKey::from_byte_array(&k.to_bytes())
                    .unwrap_or_else(|e| panic!("test key: {e}"))
            })
            .collect();
        let validator = key(2, 1);
        let mut balances: Vec<BalanceSpec> = senders
            .iter()
            .map(|(_, _, address)| BalanceSpec {
                address: *address,
                currency: Currency::CAS,
                amount: FUNDING,
            })
            .collect();
        balances.extend((0..fillers).map(|i| BalanceSpec {
            address: filler(i),
            currency: Currency::CAS,
            amount: FUNDING,
        }));
        let config = GenesisConfig {
            generated: vec![],
            chain_id: CHAIN_ID.into(),
            timestamp_ms: GENESIS_MS,
            min_fee: MIN_FEE,
            max_ttl_ms,
            fee_account: fee_account(),
            governance: match senders.first() {
                Some((_, _, address)) if sender_governs => *address,
                _ => validator.public_key().address(),
            },
            validators: vec![Validator { public_key: validator.public_key(), weight: 1 }],
            currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
            declarations: vec![],
            balances,
        };
        let genesis = Genesis::new(config).unwrap_or_else(|e| panic!("test genesis: {e}"));
        Self { genesis_toml: genesis.to_toml(), senders, signing_keys, fillers, validator }
    }

    /// Time of ledger `height`.
    pub const fn timestamp(height: u64) -> i64 {
        GENESIS_MS + height as i64 * BLOCK_INTERVAL_MS
    }

    /// `count` signed transfers for ledger `height`, each from one sender to `outputs` receivers
    /// (1 to 64): a filler when there are fillers, else a fresh account. Depends only on the
    /// arguments; ids differ across heights (the message carries the height). Signs on every
    /// core.
    pub fn transfers(&self, height: u64, count: usize, outputs: usize) -> Vec<SignedTransaction> {
        assert!((1..=64).contains(&outputs) && !self.senders.is_empty());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(count.max(1));
        let chunk = count.div_ceil(threads).max(1);
        let indexes: Vec<usize> = (0..count).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = indexes
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter().map(|&j| self.transfer(height, j, outputs)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| panic!("signing thread"))).collect()
        })
    }

    fn transfer(&self, height: u64, j: usize, outputs: usize) -> SignedTransaction {
        let n = self.senders.len() as u64;
        let i = ((height * 7_919 + j as u64) % n) as usize;
        let (_, public_key, from) = self.senders[i];
        let mut to: Vec<Address> = (0..outputs as u64)
            .map(|o| {
                let seed =
                    keccak256(&[height.to_le_bytes(), (j as u64).to_le_bytes(), o.to_le_bytes()].concat());
                let r = u64::from_le_bytes(seed[..8].try_into().unwrap_or_default());
                if self.fillers > 0 { filler(r % self.fillers) } else { filler(r | (1 << 63)) }
            })
            .collect();
        to.sort_unstable();
        to.dedup();
        to.retain(|a| *a != from);
        if to.is_empty() {
            to.push(filler(u64::MAX - 1));
        }
        let amount = 1 + (j as i64 % 1_000);
        let outputs: Vec<Leg> =
            to.iter().map(|a| Leg { address: *a, currency: Currency::CAS, amount }).collect();
        let mut message = height.to_be_bytes().to_vec();
        message.extend_from_slice(&(j as u32).to_be_bytes());
        let tx = Transaction {
            version: TX_VERSION,
            expiration_ms: Self::timestamp(height) + TX_TTL_MS,
            declarations: vec![],
            inputs: vec![Leg {
                address: from,
                currency: Currency::CAS,
                amount: amount * outputs.len() as i64,
            }],
            outputs,
            message,
            fee: Fee { payer: from, amount: MIN_FEE },
        };
        // `Transaction::sign` signs with k256, whose generic code runs unoptimized in debug
        // builds (~1 ms a signature); libsecp256k1 gives the same RFC 6979, low-S signature.
        let id = tx.id(CHAIN_ID);
        let message = secp256k1::Message::from_digest(id.0);
        let signature = self.signing_keys[i].sign_ecdsa(message).serialize_compact();
        let signature = TxSignature { public_key, signature: Signature(signature) };
        SignedTransaction { tx, signatures: vec![signature] }
    }

    /// Address of sender `i`.
    pub fn sender(&self, i: usize) -> Address {
        self.senders[i].2
    }

    /// Builds and applies the next ledger of `state` with `count` transfers of `outputs`
    /// receivers each. Returns what was applied and the block's transactions.
    pub fn apply_next(
        &self,
        state: &mut State,
        count: usize,
        outputs: usize,
    ) -> (Applied, Vec<SignedTransaction>) {
        let height = state.head().height + 1;
        let block = Block {
            height,
            timestamp_ms: Self::timestamp(height),
            transactions: self.transfers(height, count, outputs),
        };
        let applied = apply_block(state, &block, Backend::Libsecp256k1)
            .unwrap_or_else(|e| panic!("test ledger {height}: {e}"));
        (applied, block.transactions)
    }

    /// Applies the next ledger of `state` ([`TestChain::apply_next`], `txs` transfers to
    /// `outputs` receivers each), certifies it and commits it to `store`.
    pub fn commit_next(
        &self,
        store: &mut crate::Store,
        state: &mut State,
        txs: usize,
        outputs: usize,
    ) -> (Applied, Vec<SignedTransaction>) {
        let (applied, transactions) = self.apply_next(state, txs, outputs);
        let certificate = self.certify(&applied);
        store
            .commit(crate::LedgerToCommit {
                applied: &applied,
                transactions: &transactions,
                certificate: &certificate,
                state,
            })
            .unwrap_or_else(|e| panic!("test ledger {}: {e}", applied.header.height));
        (applied, transactions)
    }

    /// The validator's certificate of an applied ledger.
    pub fn certify(&self, applied: &Applied) -> Certificate {
        let mut certificate = Certificate::new(0);
        certificate.add(CHAIN_ID, 0, &self.validator, applied.header.height, &applied.hash);
        certificate
    }
}
