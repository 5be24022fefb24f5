//! Building transactions: the chain as the wallet sees it, a draft that becomes an engine
//! [`Transaction`], the `ADDR:CUR:AMT` legs of the command line, declaration files, and a
//! readable rendering of what is signed.
//!
//! Everything here is pure, so every builder is tested against an in-memory engine state.

use std::path::Path;

use anyhow::{Context, bail};
use engine::{
    Address, Currency, Declaration, Hash, HashType, MultiSig, PaymentChannel,
    codec::{Encode, decode_exact},
    currency::{format_amount, parse_amount},
    genesis::ChainParams,
    limits::MESSAGE_LEN_MAX,
    tx::{Fee, Leg, TX_VERSION, Transaction},
    validate::check_stateless,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::files;

/// How long a transaction signed and submitted at once stays valid: long enough for a busy
/// network to include it, short enough that a lost one is known to be void soon.
pub(crate) const SEND_TTL_MS_DEFAULT: i64 = 10 * 60 * 1000;

/// What a builder needs of the chain: its parameters and the latest ledger time.
#[derive(Clone, Debug)]
pub(crate) struct ChainView {
    /// Chain parameters (from `/v1/status`).
    pub(crate) params: ChainParams,
    /// The latest ledger's time, unix ms: expirations, lock times and channel expiries count
    /// from it, not from this machine's clock.
    pub(crate) now_ms: i64,
}

impl ChainView {
    /// The chain id.
    pub(crate) fn chain_id(&self) -> &str {
        &self.params.chain_id
    }

    /// The earliest ledger time that can include a transaction built now: ledger times only
    /// grow, so the next ledger is at least a millisecond after the latest. Time rules (lock
    /// times, channel expiries) are judged at that time.
    pub(crate) const fn earliest_inclusion_ms(&self) -> i64 {
        self.now_ms.saturating_add(1)
    }

    /// The issuer of `currency`.
    pub(crate) fn issuer(&self, currency: &Currency) -> anyhow::Result<Address> {
        self.params
            .issuers
            .get(currency)
            .copied()
            .with_context(|| format!("the chain has no currency {currency}"))
    }
}

/// Options of every transaction built from the command line.
#[derive(Clone, Debug, Default)]
pub(crate) struct TxOptions {
    /// Fee in raw CAS units; the chain's minimum when None.
    pub(crate) fee: Option<i64>,
    /// Time to expiration from the latest ledger time; a default per command when None.
    pub(crate) ttl_ms: Option<i64>,
    /// The message bytes.
    pub(crate) message: Vec<u8>,
}

/// A transaction being put together.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    declarations: Vec<Declaration>,
    inputs: Vec<Leg>,
    outputs: Vec<Leg>,
    fee_payer: Address,
}

impl Draft {
    /// An empty transaction whose fee `fee_payer` pays.
    pub(crate) const fn new(fee_payer: Address) -> Self {
        Self { declarations: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), fee_payer }
    }

    /// Adds an input.
    pub(crate) fn input(mut self, address: Address, currency: Currency, amount: i64) -> Self {
        self.inputs.push(Leg { address, currency, amount });
        self
    }

    /// Adds an output.
    pub(crate) fn output(mut self, address: Address, currency: Currency, amount: i64) -> Self {
        self.outputs.push(Leg { address, currency, amount });
        self
    }

    /// Adds a declaration, once (the engine refuses a declaration given twice).
    pub(crate) fn declare(mut self, declaration: Declaration) -> Self {
        if !self.declarations.contains(&declaration) {
            self.declarations.push(declaration);
        }
        self
    }

    /// Adds declarations (see [`Draft::declare`]).
    pub(crate) fn declare_all(self, declarations: impl IntoIterator<Item = Declaration>) -> Self {
        declarations.into_iter().fold(self, Self::declare)
    }

    /// The transaction, checked against every rule that needs no state, so a mistake is caught
    /// before anyone signs. `default_ttl_ms` applies when the options give none; either is
    /// capped at the chain's max TTL.
    pub(crate) fn finish(
        self,
        chain: &ChainView,
        options: &TxOptions,
        default_ttl_ms: i64,
    ) -> anyhow::Result<Transaction> {
        let params = &chain.params;
        let fee = options.fee.unwrap_or(params.min_fee);
        if fee < params.min_fee {
            bail!(
                "fee {} CAS is below the chain's minimum of {} CAS",
                format_amount(fee),
                format_amount(params.min_fee)
            );
        }
        if options.message.len() > MESSAGE_LEN_MAX {
            bail!("a message is at most {MESSAGE_LEN_MAX} bytes, not {}", options.message.len());
        }
        let ttl_ms = options.ttl_ms.unwrap_or(default_ttl_ms).min(params.max_ttl_ms);
        if ttl_ms <= 0 {
            bail!("the time to expiration must be positive");
        }
        // Valid from the next ledger on: ledger time < expiration ≤ ledger time + max TTL holds
        // for every ledger time from now until expiration, since ledger time only grows.
        let expiration_ms = chain.now_ms.checked_add(ttl_ms).context("expiration overflows")?;
        let tx = Transaction {
            version: TX_VERSION,
            expiration_ms,
            declarations: self.declarations,
            inputs: self.inputs,
            outputs: self.outputs,
            message: options.message.clone(),
            fee: Fee { payer: self.fee_payer, amount: fee },
        };
        check_stateless(&tx, params).context("the transaction would be invalid")?;
        Ok(tx)
    }
}

/// A positive decimal amount (`1.5`) as raw units.
pub(crate) fn parse_positive_amount(text: &str) -> Result<i64, String> {
    match parse_amount(text) {
        Some(raw) if raw > 0 => Ok(raw),
        Some(_) => Err(format!("amount {text:?} is not positive")),
        None => Err(format!("amount {text:?} is not a decimal number with at most 8 decimals")),
    }
}

/// A non-negative decimal amount (a fee may be 0 on a chain whose minimum is 0).
pub(crate) fn parse_fee(text: &str) -> Result<i64, String> {
    match parse_amount(text) {
        Some(raw) if raw >= 0 => Ok(raw),
        _ => Err(format!("fee {text:?} is not a non-negative decimal number with at most 8 decimals")),
    }
}

/// `ADDR:CUR:AMT`, e.g. `qy…:BTC:1.5`.
pub(crate) fn parse_leg(text: &str) -> Result<Leg, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(address), Some(currency), Some(amount)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("{text:?} is not ADDRESS:CURRENCY:AMOUNT"));
    };
    let address: Address = address.parse().map_err(|e| format!("{address:?}: {e}"))?;
    let currency: Currency = currency.parse().map_err(|e| format!("{e}"))?;
    Ok(Leg { address, currency, amount: parse_positive_amount(amount)? })
}

/// A 32-byte value from exactly 64 hex characters.
pub(crate) fn parse_hex32(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .map_err(|e| format!("expected 64 hex characters (32 bytes), got {} ({e})", text.trim().len()))?;
    Ok(out)
}

/// A transaction id from 64 hex characters.
pub(crate) fn parse_id(text: &str) -> Result<Hash, String> {
    parse_hex32(text).map(Hash)
}

/// The message bytes of `--message TEXT` or `--message-hex HEX`.
pub(crate) fn message_bytes(text: Option<&str>, hex_text: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let bytes = match (text, hex_text) {
        (Some(t), None) => t.as_bytes().to_vec(),
        (None, Some(h)) => hex::decode(h.trim()).context("--message-hex")?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => bail!("give --message or --message-hex, not both"),
    };
    if bytes.len() > MESSAGE_LEN_MAX {
        bail!("a message is at most {MESSAGE_LEN_MAX} bytes, not {}", bytes.len());
    }
    Ok(bytes)
}

/// A declaration as the explorer renders it (the engine's serde form), read back.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeclarationJson {
    #[serde(rename = "multisig")]
    MultiSig {
        signers: Vec<Address>,
        required: i16,
    },
    #[serde(rename = "hashlock")]
    HashLock {
        hash_type: HashType,
        hash: Hash,
    },
    #[serde(rename = "timelock")]
    TimeLock {
        unix_seconds: i64,
    },
    PaymentChannel {
        payer: Address,
        payee: Address,
        currency: Currency,
        expiry_ms: i64,
    },
}

/// An account-defining declaration from the explorer's JSON, refused unless it defines
/// `address` (what the explorer says is checked, not trusted: the address is its hash).
pub(crate) fn declaration_from_json(value: &Value, address: &Address) -> anyhow::Result<Declaration> {
    let parsed: DeclarationJson = serde_json::from_value(value.clone())
        .with_context(|| format!("the declaration of {address} is not one the wallet knows"))?;
    let declaration = match parsed {
        DeclarationJson::MultiSig { signers, required } => {
            Declaration::MultiSig(MultiSig::new(signers, required)?)
        }
        DeclarationJson::HashLock { hash_type, hash } => Declaration::HashLock { hash_type, hash: hash.0 },
        DeclarationJson::TimeLock { unix_seconds } => Declaration::TimeLock { unix_seconds },
        DeclarationJson::PaymentChannel { payer, payee, currency, expiry_ms } => {
            // Through the decoder, so the engine's rules on channels apply.
            let d = Declaration::PaymentChannel(PaymentChannel { payer, payee, currency, expiry_ms });
            decode_exact(&d.to_bytes())?
        }
    };
    if declaration.address() != Some(*address) {
        bail!("the explorer's declaration for {address} defines another address");
    }
    Ok(declaration)
}

/// Resolves the declarations the signing analysis needs that `tx` does not carry: those of its
/// special input and fee-payer accounts, and recursively of their special signers, through
/// `fetch` (the explorer; None for an undeclared account). Bounded by the engine's nesting depth.
pub(crate) fn resolve_context(
    tx: &Transaction,
    mut fetch: impl FnMut(&Address) -> anyhow::Result<Option<Declaration>>,
) -> anyhow::Result<Vec<Declaration>> {
    let mut known: Vec<(Address, Declaration)> =
        tx.declarations.iter().filter_map(|d| d.address().map(|a| (a, d.clone()))).collect();
    let mut asked: Vec<Address> = Vec::new();
    let mut context = Vec::new();
    let mut frontier: Vec<Address> = tx.inputs.iter().map(|l| l.address).chain([tx.fee.payer]).collect();
    for _ in 0..=engine::limits::SPEND_DEPTH_MAX {
        let mut next = Vec::new();
        for address in frontier {
            if !needs_declaration(&address) || asked.contains(&address) {
                continue;
            }
            asked.push(address);
            let declaration = match known.iter().find(|(a, _)| *a == address) {
                Some((_, d)) => Some(d.clone()),
                None => {
                    let fetched = fetch(&address)?;
                    if let Some(d) = &fetched {
                        known.push((address, d.clone()));
                        context.push(d.clone());
                    }
                    fetched
                }
            };
            match declaration {
                Some(Declaration::MultiSig(ms)) => next.extend_from_slice(ms.signers()),
                Some(Declaration::PaymentChannel(ch)) => next.extend([ch.payer, ch.payee]),
                _ => {}
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(context)
}

/// Whether an address's spend rule lives in a declaration (ECDSA and TimeLock ones do not).
fn needs_declaration(address: &Address) -> bool {
    use engine::AddressType::{HashLock, MultiSig, PaymentChannel};
    matches!(address.kind(), MultiSig | HashLock | PaymentChannel)
}

/// A declaration file: `wallet multisig address --out`, given to `--declare`.
#[derive(Debug, Serialize, Deserialize)]
struct DeclarationFile {
    format: String,
    address: Address,
    /// For people; never read back.
    #[serde(default, skip_deserializing)]
    declaration: Value,
    /// The canonical bytes, authoritative.
    hex: String,
}

const DECLARATION_FORMAT: &str = "caasiope-declaration/1";

/// Writes a declaration file (never overwriting).
pub(crate) fn write_declaration_file(path: &Path, declaration: &Declaration) -> anyhow::Result<Address> {
    let address = declaration.address().context("this declaration defines no address")?;
    let file = DeclarationFile {
        format: DECLARATION_FORMAT.into(),
        address,
        declaration: serde_json::to_value(declaration)?,
        hex: hex::encode(declaration.to_bytes()),
    };
    files::write_json_new(path, &file, 0o644)?;
    Ok(address)
}

/// The declarations of a file given to `--declare`: a declaration file, an HTLC file (all the
/// HTLC's declarations) or a channel file (the channel's).
pub(crate) fn load_declarations(path: &Path) -> anyhow::Result<Vec<Declaration>> {
    let value: Value = files::read_json(path, "declaration file")?;
    let format = value.get("format").and_then(Value::as_str).unwrap_or_default().to_owned();
    let what = || format!("declaration file {}", path.display());
    match format.as_str() {
        DECLARATION_FORMAT => {
            let file: DeclarationFile = serde_json::from_value(value).with_context(what)?;
            let bytes = hex::decode(file.hex.trim()).with_context(what)?;
            let declaration: Declaration = decode_exact(&bytes).with_context(what)?;
            if declaration.address() != Some(file.address) {
                bail!("{}: the declaration does not define the address the file names", what());
            }
            Ok(vec![declaration])
        }
        super::htlc::FORMAT => Ok(super::htlc::HtlcFile::load(path)?.terms.declarations()?),
        super::channel::FORMAT => Ok(vec![super::channel::ChannelFile::load(path)?.declaration()]),
        other => bail!("{} has format {other:?}: not a declaration, HTLC or channel file", what()),
    }
}

/// A readable rendering of a transaction: raw amounts with their decimal text, declarations
/// with the addresses they define.
pub(crate) fn render(tx: &Transaction, chain_id: &str) -> Value {
    let leg = |l: &Leg| json!({ "address": l.address, "currency": l.currency, "amount": l.amount, "amount_text": format_amount(l.amount) });
    let declarations: Vec<Value> = tx
        .declarations
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
            if let (Some(address), Some(map)) = (d.address(), v.as_object_mut()) {
                map.insert("address".into(), json!(address));
            }
            v
        })
        .collect();
    let mut out = json!({
        "id": tx.id(chain_id),
        "chain_id": chain_id,
        "expiration_ms": tx.expiration_ms,
        "inputs": tx.inputs.iter().map(leg).collect::<Vec<_>>(),
        "outputs": tx.outputs.iter().map(leg).collect::<Vec<_>>(),
        "fee": { "payer": tx.fee.payer, "amount": tx.fee.amount, "amount_text": format_amount(tx.fee.amount) },
        "declarations": declarations,
        "message_hex": hex::encode(&tx.message),
    });
    if let (Ok(text), false) = (std::str::from_utf8(&tx.message), tx.message.is_empty()) {
        out["message_text"] = json!(text);
    }
    out
}

/// What a signer reads before signing, one line per fact.
pub(crate) fn summary(tx: &Transaction, chain_id: &str, now_ms: Option<i64>) -> Vec<String> {
    let mut lines = vec![format!("transaction {} on chain {chain_id}", tx.id(chain_id))];
    let expires = match now_ms {
        Some(now) => format!("{} (in {} s)", tx.expiration_ms, (tx.expiration_ms - now) / 1000),
        None => tx.expiration_ms.to_string(),
    };
    lines.push(format!("  expires (unix ms) {expires}"));
    for l in &tx.inputs {
        lines.push(format!("  input   {}  {} {}", l.address, format_amount(l.amount), l.currency));
    }
    for l in &tx.outputs {
        lines.push(format!("  output  {}  {} {}", l.address, format_amount(l.amount), l.currency));
    }
    lines.push(format!("  fee     {}  {} CAS", tx.fee.payer, format_amount(tx.fee.amount)));
    for d in &tx.declarations {
        let what = match d {
            Declaration::MultiSig(ms) => format!(
                "multisig {} of [{}]",
                ms.required(),
                ms.signers().iter().map(Address::to_text).collect::<Vec<_>>().join(", ")
            ),
            Declaration::HashLock { hash_type, hash } => {
                format!("hashlock {hash_type:?} {}", hex::encode(hash))
            }
            Declaration::Secret { .. } => "secret (reveals a preimage)".into(),
            Declaration::TimeLock { unix_seconds } => format!("timelock {unix_seconds}"),
            Declaration::PaymentChannel(ch) => format!(
                "payment channel {} → {} in {} until {}",
                ch.payer, ch.payee, ch.currency, ch.expiry_ms
            ),
            Declaration::Voucher(v) => {
                format!("voucher for {} up to {}", v.channel, format_amount(v.cumulative))
            }
            Declaration::ValidatorUpdate(u) => {
                format!("validator update {} weight {}", u.public_key.to_hex(), u.weight)
            }
        };
        match d.address() {
            Some(a) => lines.push(format!("  declare {what} = {a}")),
            None => lines.push(format!("  declare {what}")),
        }
    }
    if !tx.message.is_empty() {
        match std::str::from_utf8(&tx.message) {
            Ok(text) => lines.push(format!("  message {text:?}")),
            Err(_) => lines.push(format!("  message hex {}", hex::encode(&tx.message))),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use engine::SecretKey;

    use super::*;

    #[test]
    fn legs_and_amounts_parse() {
        let a = SecretKey::from_bytes(&[1; 32]).unwrap().public_key().address();
        let leg = parse_leg(&format!("{a}:BTC:1.5")).unwrap();
        assert_eq!((leg.address, leg.currency.as_str(), leg.amount), (a, "BTC", 150_000_000));
        assert!(parse_leg(&format!("{a}:BTC:0")).is_err());
        assert!(parse_leg(&format!("{a}:btc:1")).is_err());
        assert!(parse_leg(&format!("{a}:BTC")).is_err());
        assert!(parse_leg("nope:BTC:1").is_err());
        assert_eq!(parse_fee("0"), Ok(0));
        assert!(parse_fee("-1").is_err());
        assert!(parse_hex32("ab").is_err());
        assert_eq!(message_bytes(None, Some("00ff")).unwrap(), [0, 255]);
        assert!(message_bytes(Some(&"x".repeat(129)), None).is_err());
    }

    #[test]
    fn explorer_declarations_are_checked_against_their_address() {
        let a = SecretKey::from_bytes(&[1; 32]).unwrap().public_key().address();
        let b = SecretKey::from_bytes(&[2; 32]).unwrap().public_key().address();
        let ms = Declaration::MultiSig(MultiSig::new(vec![a, b], 2).unwrap());
        let address = ms.address().unwrap();
        let json = serde_json::to_value(&ms).unwrap();
        assert_eq!(declaration_from_json(&json, &address).unwrap(), ms);
        let other = Declaration::MultiSig(MultiSig::new(vec![a, b], 1).unwrap()).address().unwrap();
        assert!(declaration_from_json(&json, &other).is_err());
        let ch = Declaration::PaymentChannel(PaymentChannel {
            payer: a,
            payee: b,
            currency: Currency::CAS,
            expiry_ms: 9,
        });
        let json = serde_json::to_value(&ch).unwrap();
        assert_eq!(declaration_from_json(&json, &ch.address().unwrap()).unwrap(), ch);
        let hl = Declaration::HashLock { hash_type: HashType::Sha256, hash: [3; 32] };
        let json = serde_json::to_value(&hl).unwrap();
        assert_eq!(declaration_from_json(&json, &hl.address().unwrap()).unwrap(), hl);
    }
}
