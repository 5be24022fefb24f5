//! Hashed time-locked contracts with SHA-256 secrets (DESIGN §3.3): the building block of
//! atomic swaps with Bitcoin-family chains, which lock with the same hash.
//!
//! `create` pays into the HTLC address (`engine::declaration::htlc`) and writes its terms to a
//! file — before submitting, so coins are never locked under terms nobody kept. The file holds
//! no secret: it is what the sender hands the receiver, who re-derives the address from the terms
//! on loading. `claim` spends with the secret (revealing it on chain); `refund` spends after the
//! lock time, judged by ledger time.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use engine::{
    Address, Currency, Declaration, Hash, HashType, currency::format_amount, hash::sha256, tx::Transaction,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    build::{ChainView, Draft, SEND_TTL_MS_DEFAULT, TxOptions},
    files,
};

/// The HTLC file format.
pub(crate) const FORMAT: &str = "caasiope-htlc/1";

/// What defines an HTLC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HtlcTerms {
    /// Pays in; takes the coins back after the lock time.
    pub(crate) sender: Address,
    /// Takes the coins with the secret.
    pub(crate) receiver: Address,
    /// Always SHA-256 from this wallet (accepted as written otherwise).
    pub(crate) hash_type: HashType,
    /// The hash of the secret.
    pub(crate) hash: Hash,
    /// From this ledger time (unix seconds) on, the sender may refund.
    pub(crate) refund_after_unix_seconds: i64,
}

impl HtlcTerms {
    /// Every declaration needed to spend it, the outer MultiSig first.
    pub(crate) fn declarations(&self) -> anyhow::Result<Vec<Declaration>> {
        Ok(engine::declaration::htlc(
            self.sender,
            self.receiver,
            self.hash_type,
            self.hash.0,
            self.refund_after_unix_seconds,
        )?)
    }

    /// The HTLC's address.
    pub(crate) fn address(&self) -> anyhow::Result<Address> {
        self.declarations()?.first().and_then(Declaration::address).context("an HTLC has an address")
    }
}

/// An HTLC file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HtlcFile {
    /// [`FORMAT`].
    pub(crate) format: String,
    /// The chain.
    pub(crate) chain_id: String,
    /// The HTLC address (checked against the terms on loading).
    pub(crate) address: Address,
    /// The terms.
    #[serde(flatten)]
    pub(crate) terms: HtlcTerms,
    /// What was paid in.
    pub(crate) currency: Currency,
    /// Raw units paid in.
    pub(crate) amount: i64,
    /// The funding transaction.
    #[serde(default)]
    pub(crate) funding_tx: Option<Hash>,
}

impl HtlcFile {
    /// Reads a file and checks its terms give its address.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let file: Self = files::read_json(path, "HTLC file")?;
        if file.format != FORMAT {
            bail!("{} is not an HTLC file ({:?})", path.display(), file.format);
        }
        let address = file.terms.address()?;
        if address != file.address {
            bail!(
                "HTLC file {}: its terms define {address}, not the address it names ({})",
                path.display(),
                file.address
            );
        }
        Ok(file)
    }
}

/// A fresh random 32-byte secret.
pub(crate) fn new_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// The terms of a new HTLC from `sender` to `receiver` locked by `hash` for `lock_seconds` of
/// ledger time from now.
pub(crate) fn terms(
    chain: &ChainView,
    sender: Address,
    receiver: Address,
    hash: [u8; 32],
    lock_seconds: u64,
) -> anyhow::Result<HtlcTerms> {
    let lock = i64::try_from(lock_seconds).context("lock time overflows")?;
    let refund_after_unix_seconds =
        (chain.now_ms / 1000).checked_add(lock).context("lock time overflows")?.max(1);
    Ok(HtlcTerms {
        sender,
        receiver,
        hash_type: HashType::Sha256,
        hash: Hash(hash),
        refund_after_unix_seconds,
    })
}

/// Pays `amount` of `currency` from the sender into the HTLC.
pub(crate) fn fund(
    chain: &ChainView,
    terms: &HtlcTerms,
    currency: Currency,
    amount: i64,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    let address = terms.address()?;
    Draft::new(terms.sender).input(terms.sender, currency, amount).output(address, currency, amount).finish(
        chain,
        options,
        SEND_TTL_MS_DEFAULT,
    )
}

/// The receiver takes `amount` of `currency` with `secret`, to `to`; the receiver pays the fee.
pub(crate) fn claim(
    chain: &ChainView,
    terms: &HtlcTerms,
    secret: [u8; 32],
    currency: Currency,
    amount: i64,
    to: Address,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    if terms.hash_type.digest(&secret) != terms.hash.0 {
        bail!("this secret does not match the HTLC's hash {}", terms.hash);
    }
    let address = terms.address()?;
    Draft::new(terms.receiver)
        .input(address, currency, amount)
        .output(to, currency, amount)
        .declare_all(terms.declarations()?)
        .declare(Declaration::Secret { preimage: secret })
        .finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// The sender takes back everything in `balances` to `to`, once the lock time has passed in
/// ledger time; the sender pays the fee.
pub(crate) fn refund(
    chain: &ChainView,
    terms: &HtlcTerms,
    balances: &[(Currency, i64)],
    to: Address,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    let lock_ms = terms.refund_after_unix_seconds.saturating_mul(1000);
    let at = chain.earliest_inclusion_ms();
    if at < lock_ms {
        bail!(
            "the HTLC can be refunded from ledger time {} (unix seconds); the latest ledger is at {}, {} s before",
            terms.refund_after_unix_seconds,
            chain.now_ms / 1000,
            (lock_ms - at + 999) / 1000
        );
    }
    let address = terms.address()?;
    let mut draft = Draft::new(terms.sender);
    let mut any = false;
    for &(currency, amount) in balances.iter().filter(|(_, a)| *a > 0) {
        draft = draft.input(address, currency, amount).output(to, currency, amount);
        any = true;
    }
    if !any {
        bail!("the HTLC {address} holds nothing to refund");
    }
    draft.declare_all(terms.declarations()?).finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// The command-line side: explorer, keystore, files.
pub(crate) mod command {
    use super::*;
    use crate::{Common, client::Api, flow};
    use exit::Output;

    /// `wallet htlc create`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create(
        common: &Common,
        from: &str,
        receiver: Address,
        amount: i64,
        currency: Currency,
        lock_seconds: u64,
        hash: Option<[u8; 32]>,
        out: &PathBuf,
        options: &TxOptions,
    ) -> anyhow::Result<Output> {
        let api = common.api()?;
        let key = common.key(from)?;
        let chain = api.chain()?;
        let (hash, secret) = match hash {
            Some(h) => (h, None),
            None => {
                let s = new_secret();
                (sha256(&s), Some(s))
            }
        };
        let terms = terms(&chain, key.public_key().address(), receiver, hash, lock_seconds)?;
        let tx = fund(&chain, &terms, currency, amount, options)?;
        let address = terms.address()?;
        let file = HtlcFile {
            format: FORMAT.into(),
            chain_id: chain.chain_id().into(),
            address,
            terms: terms.clone(),
            currency,
            amount,
            funding_tx: Some(tx.id(chain.chain_id())),
        };
        // The terms are saved before any coin moves.
        files::write_json_new(out, &file, 0o644)?;
        let submitted = flow::sign_and_submit(&api, &chain, tx, &[&key], common)?;
        let mut answer = json!({
            "htlc": address,
            "file": out,
            "hash": terms.hash,
            "refund_after_unix_seconds": terms.refund_after_unix_seconds,
            "amount": format_amount(amount),
            "currency": currency,
        });
        flow::merge(&mut answer, submitted);
        if let Some(secret) = secret {
            // Printed once, never stored: whoever holds it can claim.
            answer["secret"] = json!(hex::encode(secret));
        }
        Output::json(&answer)
    }

    /// `wallet htlc claim`.
    pub(crate) fn claim(
        common: &Common,
        name: &str,
        htlc: &Path,
        secret: [u8; 32],
        to: Option<Address>,
        amount: Option<i64>,
        options: &TxOptions,
    ) -> anyhow::Result<Output> {
        let file = HtlcFile::load(htlc)?;
        let api = common.api()?;
        let chain = flow::chain_of(&api, &file.chain_id)?;
        // Checked before the passphrase is asked.
        if file.terms.hash_type.digest(&secret) != file.terms.hash.0 {
            bail!("this secret does not match the HTLC's hash {}", file.terms.hash);
        }
        let amount = match amount {
            Some(a) => a,
            None => held(&api, &file.address, &file.currency)?,
        };
        let key = common.key_of(name, &file.terms.receiver, "HTLC's receiver")?;
        let to = to.unwrap_or(file.terms.receiver);
        let tx = super::claim(&chain, &file.terms, secret, file.currency, amount, to, options)?;
        let submitted = flow::sign_and_submit(&api, &chain, tx, &[&key], common)?;
        Output::json(&submitted)
    }

    /// `wallet htlc refund`.
    pub(crate) fn refund(
        common: &Common,
        name: &str,
        htlc: &Path,
        to: Option<Address>,
        options: &TxOptions,
    ) -> anyhow::Result<Output> {
        let file = HtlcFile::load(htlc)?;
        let api = common.api()?;
        let chain = flow::chain_of(&api, &file.chain_id)?;
        let account = api.account(&file.address)?;
        let balances: Vec<(Currency, i64)> =
            account.balances.iter().map(|b| (b.currency, b.amount)).collect();
        let to = to.unwrap_or(file.terms.sender);
        // Built first: a refund before the lock time fails here, before the passphrase.
        let tx = super::refund(&chain, &file.terms, &balances, to, options)?;
        let key = common.key_of(name, &file.terms.sender, "HTLC's sender")?;
        let submitted = flow::sign_and_submit(&api, &chain, tx, &[&key], common)?;
        Output::json(&submitted)
    }

    fn held(api: &Api, address: &Address, currency: &Currency) -> anyhow::Result<i64> {
        let amount = api.account(address)?.balance(currency);
        if amount <= 0 {
            bail!("{address} holds no {currency} to claim");
        }
        Ok(amount)
    }
}
