//! Tokens (DESIGN §3.3): an issuer creates tokens by sending them — its own balance goes
//! negative, −balance being the outstanding supply — and anyone destroys tokens by sending them
//! back to the issuer. An issuer (or holder) that is a MultiSig goes through the partially
//! signed file flow: `--issuer-file`/`--holder-file` name its declaration file, `--out` the file
//! the co-signers pass around.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use engine::{Address, Currency, Declaration, tx::Transaction};
use exit::Output;

use super::{
    Common,
    build::{self, ChainView, Draft, SEND_TTL_MS_DEFAULT, TxOptions},
    flow,
};

/// `issuer` sends `amount` new `currency` tokens to `to`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn issue(
    chain: &ChainView,
    issuer: Address,
    to: Address,
    currency: Currency,
    amount: i64,
    fee_payer: Address,
    declarations: Vec<Declaration>,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    let actual = chain.issuer(&currency)?;
    if actual != issuer {
        bail!("{issuer} does not issue {currency}: its issuer is {actual}");
    }
    if to == issuer {
        bail!("the issuer cannot issue to itself");
    }
    Draft::new(fee_payer)
        .input(issuer, currency, amount)
        .output(to, currency, amount)
        .declare_all(declarations)
        .finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// `holder` destroys `amount` `currency` tokens by sending them to the issuer.
pub(crate) fn destroy(
    chain: &ChainView,
    holder: Address,
    currency: Currency,
    amount: i64,
    fee_payer: Address,
    declarations: Vec<Declaration>,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    let issuer = chain.issuer(&currency)?;
    if holder == issuer {
        bail!("the issuer holds no {currency} of its own to destroy");
    }
    Draft::new(fee_payer)
        .input(holder, currency, amount)
        .output(issuer, currency, amount)
        .declare_all(declarations)
        .finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// Who spends: a key, a declared account (MultiSig), or both (a key co-signing for it).
pub(crate) struct Spender<'a> {
    /// `--from NAME`.
    pub(crate) key: Option<&'a str>,
    /// `--issuer-file` / `--holder-file`.
    pub(crate) declaration_file: Option<&'a Path>,
    /// `--fee-payer`.
    pub(crate) fee_payer: Option<Address>,
    /// `--out`.
    pub(crate) out: Option<&'a PathBuf>,
}

impl Spender<'_> {
    fn resolve(&self, common: &Common) -> anyhow::Result<Resolved> {
        let key = self.key.map(|name| common.key(name)).transpose()?;
        let (address, declarations) = match self.declaration_file {
            Some(path) => {
                let declarations = build::load_declarations(path)?;
                let address = declarations
                    .first()
                    .and_then(Declaration::address)
                    .with_context(|| format!("{} defines no address", path.display()))?;
                (address, declarations)
            }
            None => match &key {
                Some(k) => (k.public_key().address(), Vec::new()),
                None => bail!("give --from NAME, or a declaration file with --out"),
            },
        };
        Ok(Resolved { fee_payer: self.fee_payer.unwrap_or(address), address, declarations, key })
    }
}

struct Resolved {
    address: Address,
    declarations: Vec<Declaration>,
    fee_payer: Address,
    key: Option<engine::SecretKey>,
}

/// `wallet issue`.
pub(crate) fn issue_command(
    common: &Common,
    spender: &Spender<'_>,
    to: Address,
    amount: i64,
    currency: Currency,
    options: &TxOptions,
) -> anyhow::Result<Output> {
    let api = common.api()?;
    let chain = api.chain()?;
    let r = spender.resolve(common)?;
    let tx = issue(&chain, r.address, to, currency, amount, r.fee_payer, r.declarations, options)?;
    let out = spender.out.map(PathBuf::as_path);
    Output::json(&flow::sign_submit_or_save(&api, &chain, tx, r.key.as_ref(), out, common)?)
}

/// `wallet destroy`.
pub(crate) fn destroy_command(
    common: &Common,
    spender: &Spender<'_>,
    amount: i64,
    currency: Currency,
    options: &TxOptions,
) -> anyhow::Result<Output> {
    let api = common.api()?;
    let chain = api.chain()?;
    let r = spender.resolve(common)?;
    let tx = destroy(&chain, r.address, currency, amount, r.fee_payer, r.declarations, options)?;
    let out = spender.out.map(PathBuf::as_path);
    Output::json(&flow::sign_submit_or_save(&api, &chain, tx, r.key.as_ref(), out, common)?)
}
