//! Payment channels (DESIGN §3.3): the payer locks coins at the channel address, then pays the
//! payee off chain with vouchers — signatures over (channel, cumulative amount) — which the
//! payee claims on chain when it likes; after expiry the payer takes what is left.
//!
//! The engine's rules, which the builders here follow: the payer is an ECDSA key; before expiry
//! only the payee spends, only in the channel's currency, carrying a voucher by the payer, and
//! the chain keeps the total claimed so far (a claim takes at most `cumulative − claimed`);
//! from expiry (ledger time) on, only the payer spends, in any currency. Vouchers are written
//! offline and need no explorer.

use std::path::Path;

use anyhow::{Context, bail};
use engine::{
    Address, Backend, Currency, Declaration, Hash, PaymentChannel, SecretKey, Voucher,
    codec::{Encode, decode_exact},
    currency::format_amount,
    tx::Transaction,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    build::{ChainView, Draft, SEND_TTL_MS_DEFAULT, TxOptions},
    files,
};

/// The channel file format.
pub(crate) const FORMAT: &str = "caasiope-channel/1";
const VOUCHER_FORMAT: &str = "caasiope-voucher/1";

/// A channel file: what `channel open` writes and the other commands read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChannelFile {
    /// [`FORMAT`].
    pub(crate) format: String,
    /// The chain.
    pub(crate) chain_id: String,
    /// The channel's address (checked against its terms on loading).
    pub(crate) address: Address,
    /// Signs vouchers; takes the rest after expiry.
    pub(crate) payer: Address,
    /// Claims with vouchers before expiry.
    pub(crate) payee: Address,
    /// The channel's currency.
    pub(crate) currency: Currency,
    /// Ledger time (unix ms) from which the payer may take the rest.
    pub(crate) expiry_ms: i64,
    /// Raw units paid in when opened.
    pub(crate) amount: i64,
    /// The opening transaction.
    #[serde(default)]
    pub(crate) funding_tx: Option<Hash>,
}

impl ChannelFile {
    /// The channel's terms.
    pub(crate) const fn channel(&self) -> PaymentChannel {
        PaymentChannel {
            payer: self.payer,
            payee: self.payee,
            currency: self.currency,
            expiry_ms: self.expiry_ms,
        }
    }

    /// Its declaration.
    pub(crate) const fn declaration(&self) -> Declaration {
        Declaration::PaymentChannel(self.channel())
    }

    /// Reads a file and checks its terms (by the engine's decoder) and address.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let file: Self = files::read_json(path, "channel file")?;
        let what = || format!("channel file {}", path.display());
        if file.format != FORMAT {
            bail!("{} is not a channel file ({:?})", path.display(), file.format);
        }
        let declaration: Declaration = decode_exact(&file.declaration().to_bytes()).with_context(what)?;
        if declaration.address() != Some(file.address) {
            bail!("{}: its terms do not define the address it names ({})", what(), file.address);
        }
        Ok(file)
    }
}

/// A voucher file: what the payer hands the payee.
#[derive(Debug, Serialize, Deserialize)]
struct VoucherFile {
    format: String,
    chain_id: String,
    channel: Address,
    cumulative: i64,
    #[serde(default, skip_deserializing)]
    cumulative_text: String,
    /// The voucher declaration's canonical bytes, authoritative.
    hex: String,
}

/// Writes a voucher file (never overwriting).
pub(crate) fn save_voucher(path: &Path, chain_id: &str, voucher: &Voucher) -> anyhow::Result<()> {
    let file = VoucherFile {
        format: VOUCHER_FORMAT.into(),
        chain_id: chain_id.into(),
        channel: voucher.channel,
        cumulative: voucher.cumulative,
        cumulative_text: format_amount(voucher.cumulative),
        hex: hex::encode(Declaration::Voucher(voucher.clone()).to_bytes()),
    };
    files::write_json_new(path, &file, 0o644)
}

/// Reads a voucher file for `channel` on `chain_id` and checks its signature.
pub(crate) fn load_voucher(path: &Path, chain_id: &str, channel: &ChannelFile) -> anyhow::Result<Voucher> {
    let file: VoucherFile = files::read_json(path, "voucher file")?;
    let what = || format!("voucher file {}", path.display());
    if file.format != VOUCHER_FORMAT {
        bail!("{} is not a voucher file ({:?})", path.display(), file.format);
    }
    if file.chain_id != chain_id {
        bail!("{} is for chain {:?}, not {chain_id:?}", what(), file.chain_id);
    }
    let bytes = hex::decode(file.hex.trim()).with_context(what)?;
    let Declaration::Voucher(voucher) = decode_exact::<Declaration>(&bytes).with_context(what)? else {
        bail!("{} does not hold a voucher", what());
    };
    if voucher.channel != file.channel || voucher.cumulative != file.cumulative {
        bail!("{}: its voucher does not say what the file says", what());
    }
    if voucher.channel != channel.address {
        bail!("{} is for channel {}, not {}", what(), voucher.channel, channel.address);
    }
    if !voucher.verify(chain_id, Backend::K256) {
        bail!("{}: the voucher's signature does not verify", what());
    }
    if voucher.public_key.address() != channel.payer {
        bail!("{}: the voucher is not signed by the channel's payer {}", what(), channel.payer);
    }
    Ok(voucher)
}

/// Opens a channel: the payer pays `amount` in, publishing the channel's declaration; it
/// expires `expiry_seconds` of ledger time from now.
pub(crate) fn open(
    chain: &ChainView,
    payer: Address,
    payee: Address,
    currency: Currency,
    amount: i64,
    expiry_seconds: u64,
    options: &TxOptions,
) -> anyhow::Result<(ChannelFile, Transaction)> {
    let span_ms =
        i64::try_from(expiry_seconds).ok().and_then(|s| s.checked_mul(1000)).context("expiry overflows")?;
    let expiry_ms = chain.now_ms.checked_add(span_ms).context("expiry overflows")?;
    let channel = PaymentChannel { payer, payee, currency, expiry_ms };
    // Through the decoder: the engine's rules on channels (an ECDSA payer) apply here too.
    let declaration: Declaration =
        decode_exact(&Declaration::PaymentChannel(channel).to_bytes()).context("invalid channel")?;
    let address = declaration.address().context("a channel has an address")?;
    let tx = Draft::new(payer)
        .input(payer, currency, amount)
        .output(address, currency, amount)
        .declare(declaration)
        .finish(chain, options, SEND_TTL_MS_DEFAULT)?;
    let file = ChannelFile {
        format: FORMAT.into(),
        chain_id: chain.chain_id().into(),
        address,
        payer,
        payee,
        currency,
        expiry_ms,
        amount,
        funding_tx: Some(tx.id(chain.chain_id())),
    };
    Ok((file, tx))
}

/// The payer's voucher for a cumulative `cumulative` from the channel.
pub(crate) fn voucher(channel: &ChannelFile, cumulative: i64, payer: &SecretKey) -> anyhow::Result<Voucher> {
    if payer.public_key().address() != channel.payer {
        bail!("this key is not the channel's payer {}", channel.payer);
    }
    if cumulative <= 0 {
        bail!("a voucher's cumulative amount is positive");
    }
    Ok(Voucher::sign(&channel.chain_id, channel.address, cumulative, payer))
}

/// The payee claims with `voucher`, to `to`: `amount`, or by default all the voucher still
/// covers (`cumulative − claimed`, at most the channel's `balance`). Before expiry only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn claim(
    chain: &ChainView,
    channel: &ChannelFile,
    voucher: &Voucher,
    claimed: i64,
    balance: i64,
    amount: Option<i64>,
    to: Address,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    if chain.earliest_inclusion_ms() >= channel.expiry_ms {
        bail!(
            "channel {} expired at ledger time {} ms (now {}): only the payer can take what is left",
            channel.address,
            channel.expiry_ms,
            chain.now_ms
        );
    }
    let covered = voucher.cumulative.saturating_sub(claimed);
    let amount = match amount {
        Some(a) => a,
        None => covered.min(balance),
    };
    if amount <= 0 {
        bail!(
            "nothing to claim: the voucher covers {} and {} was already claimed (channel balance {})",
            format_amount(voucher.cumulative),
            format_amount(claimed),
            format_amount(balance)
        );
    }
    if amount > covered {
        bail!("the voucher covers {} more, not {}", format_amount(covered), format_amount(amount));
    }
    Draft::new(channel.payee)
        .input(channel.address, channel.currency, amount)
        .output(to, channel.currency, amount)
        .declare(channel.declaration())
        .declare(Declaration::Voucher(voucher.clone()))
        .finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// The payer takes everything left in the channel (`balances`) to `to`, from expiry on.
pub(crate) fn close(
    chain: &ChainView,
    channel: &ChannelFile,
    balances: &[(Currency, i64)],
    to: Address,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    let at = chain.earliest_inclusion_ms();
    if at < channel.expiry_ms {
        bail!(
            "channel {} expires at ledger time {} ms; the latest ledger is at {}, {} s before",
            channel.address,
            channel.expiry_ms,
            chain.now_ms,
            (channel.expiry_ms - at + 999) / 1000
        );
    }
    let mut draft = Draft::new(channel.payer);
    let mut any = false;
    for &(currency, amount) in balances.iter().filter(|(_, a)| *a > 0) {
        draft = draft.input(channel.address, currency, amount).output(to, currency, amount);
        any = true;
    }
    if !any {
        bail!("channel {} holds nothing", channel.address);
    }
    draft.declare(channel.declaration()).finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// The command-line side: explorer, keystore, files.
pub(crate) mod command {
    use std::path::PathBuf;

    use super::*;
    use crate::{Common, flow};
    use exit::Output;

    /// `wallet channel open`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        common: &Common,
        from: &str,
        payee: Address,
        currency: Currency,
        amount: i64,
        expiry_seconds: u64,
        out: &PathBuf,
        options: &TxOptions,
    ) -> anyhow::Result<Output> {
        let api = common.api()?;
        let key = common.key(from)?;
        let chain = api.chain()?;
        let (file, tx) = super::open(
            &chain,
            key.public_key().address(),
            payee,
            currency,
            amount,
            expiry_seconds,
            options,
        )?;
        // The terms are saved before any coin moves.
        files::write_json_new(out, &file, 0o644)?;
        let submitted = flow::sign_and_submit(&api, &chain, tx, &[&key], common)?;
        let mut answer = json!({
            "channel": file.address,
            "file": out,
            "expiry_ms": file.expiry_ms,
            "amount": format_amount(amount),
            "currency": currency,
        });
        flow::merge(&mut answer, submitted);
        Output::json(&answer)
    }

    /// `wallet channel voucher` (offline).
    pub(crate) fn voucher(
        common: &Common,
        name: &str,
        channel: &Path,
        cumulative: i64,
        out: &Path,
    ) -> anyhow::Result<Output> {
        let file = ChannelFile::load(channel)?;
        let key = common.key_of(name, &file.payer, "channel's payer")?;
        let voucher = super::voucher(&file, cumulative, &key)?;
        save_voucher(out, &file.chain_id, &voucher)?;
        Output::json(&json!({
            "channel": file.address,
            "cumulative": voucher.cumulative,
            "cumulative_text": format_amount(voucher.cumulative),
            "file": out,
        }))
    }

    /// `wallet channel claim`.
    pub(crate) fn claim(
        common: &Common,
        name: &str,
        channel: &Path,
        voucher: &Path,
        amount: Option<i64>,
        to: Option<Address>,
        options: &TxOptions,
    ) -> anyhow::Result<Output> {
        let file = ChannelFile::load(channel)?;
        let voucher = load_voucher(voucher, &file.chain_id, &file)?;
        let api = common.api()?;
        let chain = flow::chain_of(&api, &file.chain_id)?;
        let account = api.account(&file.address)?;
        let to = to.unwrap_or(file.payee);
        let tx = super::claim(
            &chain,
            &file,
            &voucher,
            account.channel_claimed.unwrap_or(0),
            account.balance(&file.currency),
            amount,
            to,
            options,
        )?;
        let key = common.key_of(name, &file.payee, "channel's payee")?;
        Output::json(&flow::sign_and_submit(&api, &chain, tx, &[&key], common)?)
    }

    /// `wallet channel close`.
    pub(crate) fn close(
        common: &Common,
        name: &str,
        channel: &Path,
        to: Option<Address>,
        options: &TxOptions,
    ) -> anyhow::Result<Output> {
        let file = ChannelFile::load(channel)?;
        let api = common.api()?;
        let chain = flow::chain_of(&api, &file.chain_id)?;
        let account = api.account(&file.address)?;
        let balances: Vec<(Currency, i64)> =
            account.balances.iter().map(|b| (b.currency, b.amount)).collect();
        let tx = super::close(&chain, &file, &balances, to.unwrap_or(file.payer), options)?;
        let key = common.key_of(name, &file.payer, "channel's payer")?;
        Output::json(&flow::sign_and_submit(&api, &chain, tx, &[&key], common)?)
    }
}
