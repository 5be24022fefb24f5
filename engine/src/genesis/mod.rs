//! Genesis: the chain's parameters and first state, read from a TOML file.
//!
//! ```toml
//! chain_id = "localnet"
//! timestamp_ms = 1767225600000
//! min_fee = 1000                 # raw CAS units
//! max_ttl_ms = 3600000
//! fee_account = "qy…"
//! governance = "qg…"             # authorizes validator-set changes
//!
//! [[validators]]
//! public_key = "04…"             # 65-byte uncompressed consensus key, hex
//! weight = 1
//!
//! [[currencies]]
//! symbol = "CAS"
//! issuer = "qsqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqxdpx0l"   # CAS is always issued by TimeLock(0)
//!
//! [[declarations]]               # published at genesis, e.g. an issuer's MultiSig
//! type = "multisig"
//! required = 2
//! signers = ["qy…", "qy…", "qy…"]
//!
//! [[balances]]
//! address = "qy…"
//! currency = "CAS"
//! amount = 100000000000          # raw units; the issuer's balance becomes −Σ
//!
//! [[generated]]                  # test and benchmark chains: accounts whose keys follow
//! seed = "bench"                 # from a public seed (see [`generated`])
//! count = 10000000
//! currency = "CAS"
//! amount = 100000000000          # each
//! ```

pub mod generated;

use std::collections::BTreeMap;

use crate::{
    address::Address,
    currency::Currency,
    declaration::{Declaration, HashType, MultiSig, PaymentChannel},
    hash::Hash,
    ledger::{Validator, ValidatorSet, ValidatorSetError},
    limits::{
        ACCOUNT_CURRENCIES_MAX, CHAIN_ID_LEN_MAX, GENERATED_ACCOUNTS_MAX, GENERATED_SEED_LEN_MAX,
        GENESIS_BYTES_MAX,
    },
};

/// The parameters every validation needs, fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    /// Mixed into every signed hash.
    pub chain_id: String,
    /// Minimum fee, raw CAS units.
    pub min_fee: i64,
    /// Longest allowed distance from ledger time to a transaction's expiration.
    pub max_ttl_ms: i64,
    /// Receives every fee.
    pub fee_account: Address,
    /// Authorizes validator-set changes.
    pub governance: Address,
    /// The issuer of each currency; only it may hold a negative balance of that currency.
    pub issuers: BTreeMap<Currency, Address>,
}

impl ChainParams {
    /// Whether `address` issues `currency`.
    pub fn is_issuer(&self, address: &Address, currency: &Currency) -> bool {
        self.issuers.get(currency) == Some(address)
    }
}

/// A genesis file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisConfig {
    /// Chain id, `[a-z0-9-]`, 1 to 32 characters.
    pub chain_id: String,
    /// Timestamp of ledger 0, unix ms.
    pub timestamp_ms: i64,
    /// Minimum fee, raw CAS units.
    pub min_fee: i64,
    /// Max TTL of a transaction, ms (default one hour).
    #[serde(default = "default_ttl")]
    pub max_ttl_ms: i64,
    /// Fee account.
    pub fee_account: Address,
    /// Governance account.
    pub governance: Address,
    /// Initial validators.
    pub validators: Vec<Validator>,
    /// Currencies and their issuers.
    pub currencies: Vec<CurrencySpec>,
    /// Declarations published at genesis.
    #[serde(default)]
    pub declarations: Vec<DeclarationSpec>,
    /// Initial balances.
    #[serde(default)]
    pub balances: Vec<BalanceSpec>,
    /// Generated accounts: funded accounts whose keys follow from a public seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated: Vec<GeneratedSpec>,
}

const fn default_ttl() -> i64 {
    3_600_000
}

/// A currency and its issuer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencySpec {
    /// Symbol.
    pub symbol: Currency,
    /// Issuer.
    pub issuer: Address,
}

/// An initial balance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceSpec {
    /// Account.
    pub address: Address,
    /// Currency.
    pub currency: Currency,
    /// Raw units, positive.
    pub amount: i64,
}

/// Generated accounts: keys `0..count` of `seed` ([`generated::generated_key`]), each given
/// `amount` of `currency`. Whoever knows the seed holds the keys: test and benchmark chains only.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedSpec {
    /// Public seed, 1 to [`GENERATED_SEED_LEN_MAX`] bytes.
    pub seed: String,
    /// Accounts, at least one; all entries together at most [`GENERATED_ACCOUNTS_MAX`].
    pub count: u64,
    /// Currency.
    pub currency: Currency,
    /// Raw units given to each account, positive.
    pub amount: i64,
}

/// A declaration in a genesis file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeclarationSpec {
    /// A MultiSig.
    Multisig {
        /// Required signers.
        required: i16,
        /// Signers.
        signers: Vec<Address>,
    },
    /// A HashLock.
    Hashlock {
        /// Hash function.
        hash_type: HashType,
        /// Hash.
        hash: Hash,
    },
    /// A payment channel.
    PaymentChannel {
        /// Payer.
        payer: Address,
        /// Payee.
        payee: Address,
        /// Currency.
        currency: Currency,
        /// Expiry, unix ms.
        expiry_ms: i64,
    },
}

impl DeclarationSpec {
    /// The declaration.
    pub fn to_declaration(&self) -> Result<Declaration, GenesisError> {
        Ok(match self {
            Self::Multisig { required, signers } => Declaration::MultiSig(
                MultiSig::new(signers.clone(), *required)
                    .map_err(|e| GenesisError::Invalid(format!("multisig: {e}")))?,
            ),
            Self::Hashlock { hash_type, hash } => {
                Declaration::HashLock { hash_type: *hash_type, hash: hash.0 }
            }
            Self::PaymentChannel { payer, payee, currency, expiry_ms } => {
                let d = Declaration::PaymentChannel(PaymentChannel {
                    payer: *payer,
                    payee: *payee,
                    currency: *currency,
                    expiry_ms: *expiry_ms,
                });
                // Round-trip through the decoder so genesis obeys the same rules as transactions.
                crate::codec::decode_exact::<Declaration>(&crate::codec::Encode::to_bytes(&d))
                    .map_err(|e| GenesisError::Invalid(format!("payment channel: {e}")))?
            }
        })
    }
}

/// Why a genesis file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenesisError {
    /// Not valid TOML for a genesis file.
    #[error("genesis file: {0}")]
    Parse(String),
    /// Larger than the limit.
    #[error("genesis file is larger than {GENESIS_BYTES_MAX} bytes")]
    TooLarge,
    /// A rule of genesis broken.
    #[error("invalid genesis: {0}")]
    Invalid(String),
    /// Validators.
    #[error("invalid genesis validators: {0}")]
    Validators(#[from] ValidatorSetError),
    /// Chain id.
    #[error("invalid genesis: {0}")]
    ChainId(#[from] ChainIdError),
}

/// A checked genesis: parameters, validators, declarations and balances (issuers included).
#[derive(Clone, Debug)]
pub struct Genesis {
    /// The file it came from.
    pub config: GenesisConfig,
    /// Chain parameters.
    pub params: ChainParams,
    /// Validators of height 1.
    pub validators: ValidatorSet,
    /// Declarations to publish.
    pub declarations: Vec<Declaration>,
    /// Every listed initial balance and the issuers' negative ones (which count the generated
    /// accounts too), sorted. The generated accounts' own balances are not here: they are
    /// derived when needed ([`Genesis::for_each_generated`]).
    pub balances: BTreeMap<(Address, Currency), i64>,
}

/// Generated addresses handed over at once by [`Genesis::for_each_generated`].
pub const GENERATED_CHUNK: u64 = 1 << 20;

/// A chain id that is not 1 to 32 characters of `[a-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain id {0:?} is not 1 to 32 characters of [a-z0-9-]")]
pub struct ChainIdError(pub String);

/// Checks a chain id: `[a-z0-9-]`, 1 to 32 characters.
pub fn check_chain_id(chain_id: &str) -> Result<(), ChainIdError> {
    let ok = !chain_id.is_empty()
        && chain_id.len() <= CHAIN_ID_LEN_MAX
        && chain_id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok { Ok(()) } else { Err(ChainIdError(chain_id.chars().take(40).collect())) }
}

impl Genesis {
    /// Parses and checks a genesis TOML text.
    pub fn from_toml(text: &str) -> Result<Self, GenesisError> {
        if text.len() > GENESIS_BYTES_MAX {
            return Err(GenesisError::TooLarge);
        }
        let config: GenesisConfig =
            toml::from_str(text).map_err(|e| GenesisError::Parse(e.message().to_owned()))?;
        Self::new(config)
    }

    /// Checks a genesis config.
    pub fn new(config: GenesisConfig) -> Result<Self, GenesisError> {
        let invalid = |s: String| GenesisError::Invalid(s);
        check_chain_id(&config.chain_id)?;
        if config.min_fee < 0 {
            return Err(invalid("min_fee is negative".into()));
        }
        if config.max_ttl_ms <= 0 {
            return Err(invalid("max_ttl_ms is not positive".into()));
        }
        if config.currencies.len() > ACCOUNT_CURRENCIES_MAX {
            return Err(invalid(format!("more than {ACCOUNT_CURRENCIES_MAX} currencies")));
        }
        let mut issuers = BTreeMap::new();
        for c in &config.currencies {
            if issuers.insert(c.symbol, c.issuer).is_some() {
                return Err(invalid(format!("currency {} listed twice", c.symbol)));
            }
        }
        match issuers.get(&Currency::CAS) {
            Some(a) if *a == Address::timelock(0) => {}
            Some(a) => {
                return Err(invalid(format!("the CAS issuer must be TimeLock(0), not {a}")));
            }
            None => return Err(invalid("CAS is not listed among currencies".into())),
        }
        let validators = ValidatorSet::new(config.validators.clone())?;
        let declarations =
            config.declarations.iter().map(DeclarationSpec::to_declaration).collect::<Result<Vec<_>, _>>()?;
        let mut balances = BTreeMap::new();
        let mut supply: BTreeMap<Currency, i64> = BTreeMap::new();
        for b in &config.balances {
            let Some(issuer) = issuers.get(&b.currency) else {
                return Err(invalid(format!("balance in unknown currency {}", b.currency)));
            };
            if b.amount <= 0 {
                return Err(invalid(format!("balance of {} {} is not positive", b.address, b.currency)));
            }
            if *issuer == b.address {
                return Err(invalid(format!(
                    "{} is the issuer of {}; its balance is derived",
                    b.address, b.currency
                )));
            }
            if balances.insert((b.address, b.currency), b.amount).is_some() {
                return Err(invalid(format!("balance of {} {} listed twice", b.address, b.currency)));
            }
            let s = supply.entry(b.currency).or_insert(0);
            *s = s
                .checked_add(b.amount)
                .ok_or_else(|| invalid(format!("supply of {} overflows", b.currency)))?;
        }
        let mut generated_total: u64 = 0;
        for g in &config.generated {
            if g.seed.is_empty() || g.seed.len() > GENERATED_SEED_LEN_MAX {
                return Err(invalid(format!("generated seed is not 1 to {GENERATED_SEED_LEN_MAX} bytes")));
            }
            if !issuers.contains_key(&g.currency) {
                return Err(invalid(format!("generated accounts in unknown currency {}", g.currency)));
            }
            if g.amount <= 0 {
                return Err(invalid(format!("generated amount of seed {:?} is not positive", g.seed)));
            }
            generated_total = generated_total.saturating_add(g.count);
            if g.count == 0 || generated_total > GENERATED_ACCOUNTS_MAX {
                return Err(invalid(format!(
                    "generated counts must be 1 or more, {GENERATED_ACCOUNTS_MAX} in all"
                )));
            }
            if !generated::seed_covers(&g.seed, g.count) {
                return Err(invalid(format!(
                    "seed {:?} gives a zero key below {}: choose another",
                    g.seed, g.count
                )));
            }
            let s = supply.entry(g.currency).or_insert(0);
            *s = i64::try_from(g.count)
                .ok()
                .and_then(|n| n.checked_mul(g.amount))
                .and_then(|x| s.checked_add(x))
                .ok_or_else(|| invalid(format!("supply of {} overflows", g.currency)))?;
        }
        for (currency, total) in supply {
            balances.insert((issuers[&currency], currency), -total);
        }
        let params = ChainParams {
            chain_id: config.chain_id.clone(),
            min_fee: config.min_fee,
            max_ttl_ms: config.max_ttl_ms,
            fee_account: config.fee_account,
            governance: config.governance,
            issuers,
        };
        Ok(Self { config, params, validators, declarations, balances })
    }

    /// Accounts given a balance by `[[generated]]` entries, in all.
    pub fn generated_count(&self) -> u64 {
        self.config.generated.iter().map(|g| g.count).sum()
    }

    /// Calls `f` with the generated accounts, entry by entry and in index order, at most
    /// [`GENERATED_CHUNK`] addresses at a time (derived on the rayon pool), with the currency and
    /// amount each is given. An account may appear in several entries and in `balances`: the
    /// amounts add up.
    pub fn for_each_generated(&self, mut f: impl FnMut(&[Address], Currency, i64)) {
        for g in &self.config.generated {
            let mut start = 0;
            while start < g.count {
                let n = (g.count - start).min(GENERATED_CHUNK);
                f(&generated::generated_addresses(&g.seed, start, n), g.currency, g.amount);
                start += n;
            }
        }
    }

    /// The hash of the genesis file as parsed: SHA-256 of its TOML as this build writes it back
    /// ([`Genesis::to_toml`]), so files laid out differently but saying the same have the same
    /// one, and any difference — a chain parameter included — changes it. The genesis ledger's
    /// hash commits the state, the validators and the chain id, but not the parameters
    /// (`min_fee`, `max_ttl_ms`, the fee and governance accounts, the issuers): members of a
    /// ceremony compare both.
    pub fn file_hash(&self) -> Hash {
        Hash(crate::hash::sha256(self.to_toml().as_bytes()))
    }

    /// The TOML text of this genesis.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn key_hex(i: u8) -> String {
        SecretKey::from_bytes(&[i; 32]).unwrap().public_key().to_hex()
    }

    fn addr(i: u8) -> Address {
        SecretKey::from_bytes(&[i; 32]).unwrap().public_key().address()
    }

    fn sample() -> String {
        format!(
            r#"
chain_id = "localnet"
timestamp_ms = 1767225600000
min_fee = 1000
fee_account = "{fee}"
governance = "{gov}"

[[validators]]
public_key = "{v1}"
weight = 1

[[validators]]
public_key = "{v2}"
weight = 2

[[currencies]]
symbol = "CAS"
issuer = "qsqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqxdpx0l"

[[currencies]]
symbol = "BTC"
issuer = "{gov}"

[[declarations]]
type = "multisig"
required = 1
signers = ["{a}", "{b}"]

[[balances]]
address = "{a}"
currency = "CAS"
amount = 500

[[balances]]
address = "{b}"
currency = "CAS"
amount = 700

[[balances]]
address = "{b}"
currency = "BTC"
amount = 3
"#,
            fee = addr(9),
            gov = Declaration::MultiSig(MultiSig::new(vec![addr(1), addr(2)], 1).unwrap()).address().unwrap(),
            v1 = key_hex(5),
            v2 = key_hex(6),
            a = addr(1),
            b = addr(2),
        )
    }

    #[test]
    fn parses_and_derives_issuer_balances() {
        let g = Genesis::from_toml(&sample()).unwrap();
        assert_eq!(g.params.chain_id, "localnet");
        assert_eq!(g.params.max_ttl_ms, 3_600_000, "default TTL is one hour");
        assert_eq!(g.validators.total_weight(), 3);
        assert_eq!(g.balances[&(Address::timelock(0), Currency::CAS)], -1200);
        assert_eq!(g.balances[&(g.params.governance, Currency::new("BTC").unwrap())], -3);
        assert_eq!(g.declarations.len(), 1);
        // Written back and read again, it is the same genesis.
        let again = Genesis::from_toml(&g.to_toml()).unwrap();
        assert_eq!(again.config, g.config);
        // The file hash: the same for the same genesis laid out otherwise, another for a
        // parameter the genesis ledger does not commit.
        assert_eq!(Genesis::from_toml(&format!("# note\n{}", sample())).unwrap().file_hash(), g.file_hash());
        let fee = Genesis::from_toml(&sample().replace("min_fee = 1000", "min_fee = 1001")).unwrap();
        assert_ne!(fee.file_hash(), g.file_hash());
        let (a, b) = (crate::state::State::from_genesis(&fee), crate::state::State::from_genesis(&g));
        assert_eq!(a.head_hash(), b.head_hash(), "the genesis ledger does not commit min_fee");
    }

    #[test]
    fn generated_accounts_are_the_same_state_as_listed_ones() {
        let generated = format!(
            "{}\n[[generated]]\nseed = \"s\"\ncount = 40\ncurrency = \"CAS\"\namount = 5\n\n[[generated]]\nseed = \"s\"\ncount = 3\ncurrency = \"BTC\"\namount = 2\n",
            sample()
        );
        let g = Genesis::from_toml(&generated).unwrap();
        assert_eq!(g.generated_count(), 43);
        assert_eq!(
            g.balances[&(Address::timelock(0), Currency::CAS)],
            -1200 - 40 * 5,
            "the issuer counts them"
        );
        // The same accounts listed one by one: the same state, hence the same genesis hash.
        let mut listed = g.config.clone();
        listed.generated.clear();
        let keys: Vec<Address> =
            (0..40).map(|i| generated::generated_key("s", i).unwrap().public_key().address()).collect();
        for (i, a) in keys.iter().enumerate() {
            listed.balances.push(BalanceSpec { address: *a, currency: Currency::CAS, amount: 5 });
            if i < 3 {
                listed.balances.push(BalanceSpec {
                    address: *a,
                    currency: Currency::new("BTC").unwrap(),
                    amount: 2,
                });
            }
        }
        let listed = Genesis::new(listed).unwrap();
        let (a, b) = (crate::state::State::from_genesis(&g), crate::state::State::from_genesis(&listed));
        assert_eq!(a.head_hash(), b.head_hash());
        assert_eq!(a.account(&keys[0]).unwrap().balances().len(), 2);
        assert_eq!(a.check_conservation(), Ok(()));
        // A listed balance of a generated account adds to it.
        let mut both = g.config;
        both.balances.push(BalanceSpec { address: keys[7], currency: Currency::CAS, amount: 1 });
        let both = crate::state::State::from_genesis(&Genesis::new(both).unwrap());
        assert_eq!(both.account(&keys[7]).unwrap().balance(&Currency::CAS), 6);
        assert_eq!(both.check_conservation(), Ok(()));
    }

    #[test]
    fn refuses_what_a_genesis_may_not_say() {
        let base = sample();
        let cases = [
            (base.replace("\"localnet\"", "\"Local Net\""), "chain id"),
            (base.replace("min_fee = 1000", "min_fee = -1"), "min_fee"),
            (base.replace("qsqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqxdpx0l", &addr(3).to_text()), "CAS issuer"),
            (base.replace("symbol = \"BTC\"", "symbol = \"CAS\""), "listed twice"),
            (base.replace("amount = 3", "amount = 0"), "not positive"),
            (base.replace("currency = \"BTC\"", "currency = \"ETH\""), "unknown currency"),
            (base.replace("weight = 2", "weight = 0"), "weight"),
            (base.replace("min_fee = 1000", "min_fee = 1000\nsurprise = 1"), "unknown field"),
            (base.replace("amount = 700", "amount = 9223372036854775800"), "overflows"),
            (base.replace("required = 1", "required = 3"), "multisig"),
            ("not toml at all [".to_owned(), ""),
        ];
        for (text, why) in cases {
            let err = Genesis::from_toml(&text).expect_err(why);
            assert!(err.to_string().contains(why), "{why}: got {err}");
        }
        let generated =
            format!("{base}\n[[generated]]\nseed = \"s\"\ncount = 10\ncurrency = \"CAS\"\namount = 77\n");
        assert!(Genesis::from_toml(&generated).is_ok());
        let cases = [
            (generated.replace("seed = \"s\"", "seed = \"\""), "seed"),
            (generated.replace("seed = \"s\"", &format!("seed = \"{}\"", "x".repeat(65))), "seed"),
            (generated.replace("count = 10", "count = 0"), "counts"),
            (generated.replace("count = 10", &format!("count = {}", GENERATED_ACCOUNTS_MAX + 1)), "counts"),
            (generated.replace("amount = 77", "amount = 0"), "not positive"),
            (
                generated.replace("currency = \"CAS\"\namount = 77", "currency = \"ETH\"\namount = 77"),
                "unknown currency",
            ),
            (generated.replace("amount = 77", "amount = 922337203685477580"), "overflows"),
            (generated.replace("amount = 77", "amount = 77\nsurprise = 1"), "unknown field"),
        ];
        for (text, why) in cases {
            let err = Genesis::from_toml(&text).expect_err(why);
            assert!(err.to_string().contains(why), "{why}: got {err}");
        }
        assert_eq!(
            Genesis::from_toml(&" ".repeat(GENESIS_BYTES_MAX + 1)).err(),
            Some(GenesisError::TooLarge)
        );
    }
}
