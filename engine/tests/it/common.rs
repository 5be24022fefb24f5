//! A small chain to test against: keys, genesis, and a transaction builder.

use caasiope_engine::{
    Address, Backend, Currency, Declaration, MultiSig, SecretKey,
    genesis::{BalanceSpec, CurrencySpec, DeclarationSpec, Genesis, GenesisConfig},
    ledger::Validator,
    state::{Applied, Block, BlockError, State, apply_block},
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction},
    validate::TxError,
};

pub(crate) const CHAIN: &str = "testnet";
pub(crate) const GENESIS_MS: i64 = 1_767_225_600_000;
pub(crate) const MIN_FEE: i64 = 1_000;
pub(crate) const COIN: i64 = 100_000_000;
/// CAS each user holds at genesis.
pub(crate) const USER_CAS: i64 = 1_000 * COIN;
pub(crate) const USERS: usize = 6;

pub(crate) fn key(i: u8) -> SecretKey {
    SecretKey::from_bytes(&[i + 1; 32]).unwrap()
}

pub(crate) fn btc() -> Currency {
    Currency::new("BTC").unwrap()
}

pub(crate) fn eth() -> Currency {
    Currency::new("ETH").unwrap()
}

/// Keys: users 0..6; BTC issuer 2-of-3 MultiSig of keys 20, 21, 22; ETH issuer key 30;
/// governance 2-of-3 MultiSig of keys 40, 41, 42; fee account key 50; validators 60..64.
pub(crate) struct Net {
    pub(crate) state: State,
    pub(crate) now: i64,
    pub(crate) backend: Backend,
}

pub(crate) fn user(i: usize) -> Address {
    key(i as u8).public_key().address()
}

pub(crate) fn multisig(keys: &[u8], required: i16) -> MultiSig {
    MultiSig::new(keys.iter().map(|&k| key(k).public_key().address()).collect(), required).unwrap()
}

pub(crate) fn address_of(d: &Declaration) -> Address {
    d.address().unwrap()
}

pub(crate) fn btc_issuer() -> Declaration {
    Declaration::MultiSig(multisig(&[20, 21, 22], 2))
}

pub(crate) fn governance() -> Declaration {
    Declaration::MultiSig(multisig(&[40, 41, 42], 2))
}

pub(crate) fn eth_issuer() -> Address {
    key(30).public_key().address()
}

pub(crate) fn fee_account() -> Address {
    key(50).public_key().address()
}

pub(crate) fn genesis_config() -> GenesisConfig {
    let mut balances: Vec<BalanceSpec> = (0..USERS)
        .map(|i| BalanceSpec { address: user(i), currency: Currency::CAS, amount: USER_CAS })
        .collect();
    balances.push(BalanceSpec { address: user(0), currency: btc(), amount: 2 * COIN });
    balances.push(BalanceSpec { address: user(1), currency: eth(), amount: 30 * COIN });
    let spec = |d: &Declaration| match d {
        Declaration::MultiSig(ms) => {
            DeclarationSpec::Multisig { required: ms.required(), signers: ms.signers().to_vec() }
        }
        _ => unreachable!(),
    };
    GenesisConfig {
        generated: vec![],
        chain_id: CHAIN.into(),
        timestamp_ms: GENESIS_MS,
        min_fee: MIN_FEE,
        max_ttl_ms: 3_600_000,
        fee_account: fee_account(),
        governance: address_of(&governance()),
        validators: (60..64).map(|k| Validator { public_key: key(k).public_key(), weight: 1 }).collect(),
        currencies: vec![
            CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) },
            CurrencySpec { symbol: btc(), issuer: address_of(&btc_issuer()) },
            CurrencySpec { symbol: eth(), issuer: eth_issuer() },
        ],
        declarations: vec![spec(&btc_issuer()), spec(&governance())],
        balances,
    }
}

impl Net {
    pub(crate) fn new() -> Self {
        Self::with_config(genesis_config())
    }

    pub(crate) fn with_config(config: GenesisConfig) -> Self {
        let genesis = Genesis::new(config).unwrap();
        let state = State::from_genesis(&genesis);
        Self { state, now: GENESIS_MS, backend: Backend::K256 }
    }

    pub(crate) fn tx(&self) -> TxBuilder {
        TxBuilder {
            tx: Transaction {
                version: TX_VERSION,
                expiration_ms: self.now + 60_000,
                declarations: vec![],
                inputs: vec![],
                outputs: vec![],
                message: vec![],
                fee: Fee { payer: user(0), amount: MIN_FEE },
            },
        }
    }

    /// A simple CAS transfer from user `from` (who also pays the fee) to `to`.
    pub(crate) fn transfer(&self, from: usize, to: Address, amount: i64) -> SignedTransaction {
        self.tx()
            .input(user(from), Currency::CAS, amount)
            .output(to, Currency::CAS, amount)
            .fee(user(from), MIN_FEE)
            .sign(&[&key(from as u8)])
    }

    /// Applies a block one second after the previous one.
    pub(crate) fn apply(&mut self, txs: Vec<SignedTransaction>) -> Result<Applied, BlockError> {
        self.apply_at(self.now + 1_000, txs)
    }

    pub(crate) fn apply_at(
        &mut self,
        at_ms: i64,
        transactions: Vec<SignedTransaction>,
    ) -> Result<Applied, BlockError> {
        let block = Block { height: self.state.head().height + 1, timestamp_ms: at_ms, transactions };
        let applied = apply_block(&mut self.state, &block, self.backend)?;
        self.now = at_ms;
        assert_eq!(self.state.check_conservation(), Ok(()));
        Ok(applied)
    }

    /// Applies one transaction in its own block; the error it breaks, if any.
    pub(crate) fn apply_one(&mut self, tx: SignedTransaction) -> Result<Applied, TxError> {
        match self.apply(vec![tx]) {
            Ok(a) => Ok(a),
            Err(BlockError::InvalidTx { index: 0, error }) => Err(error),
            Err(other) => panic!("unexpected block error {other}"),
        }
    }

    pub(crate) fn balance(&self, address: &Address, currency: &Currency) -> i64 {
        self.state.balance(address, currency)
    }
}

pub(crate) struct TxBuilder {
    pub(crate) tx: Transaction,
}

impl TxBuilder {
    pub(crate) fn input(mut self, address: Address, currency: Currency, amount: i64) -> Self {
        self.tx.inputs.push(Leg { address, currency, amount });
        self
    }

    pub(crate) fn output(mut self, address: Address, currency: Currency, amount: i64) -> Self {
        self.tx.outputs.push(Leg { address, currency, amount });
        self
    }

    pub(crate) fn fee(mut self, payer: Address, amount: i64) -> Self {
        self.tx.fee = Fee { payer, amount };
        self
    }

    pub(crate) fn declare(mut self, d: Declaration) -> Self {
        self.tx.declarations.push(d);
        self
    }

    pub(crate) fn expire(mut self, ms: i64) -> Self {
        self.tx.expiration_ms = ms;
        self
    }

    pub(crate) fn message(mut self, m: &[u8]) -> Self {
        self.tx.message = m.to_vec();
        self
    }

    pub(crate) fn sign(self, keys: &[&SecretKey]) -> SignedTransaction {
        self.tx.sign(CHAIN, keys)
    }
}
