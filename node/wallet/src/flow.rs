//! The commands' common path — build, sign, then submit (and wait) or save for co-signers — and
//! the plain commands: queries, send, build/sign/submit of partially signed files, MultiSig.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use api::TxState;
use engine::{
    Address, Currency, Declaration, Hash, MultiSig, PublicKey, SecretKey, ValidatorUpdate,
    codec::Encode,
    ledger::{Validator, ValidatorSet},
    tx::{Leg, SignedTransaction, Transaction},
};
use exit::Output;
use serde_json::{Value, json};

use super::{
    Common,
    build::{self, ChainView, Draft, SEND_TTL_MS_DEFAULT, TxOptions},
    client::Api,
    partial::Partial,
};

/// The chain the explorer serves, refused unless it is `chain_id` (a file made for one
/// network submitted to another would only be rejected there, less clearly).
pub(crate) fn chain_of(api: &Api, chain_id: &str) -> anyhow::Result<ChainView> {
    let chain = api.chain()?;
    if chain.chain_id() != chain_id {
        bail!("the explorer serves chain {:?}, not {chain_id:?}", chain.chain_id());
    }
    Ok(chain)
}

/// The chain's declarations of `tx`'s special accounts, as the explorer gives them (each
/// checked against its address).
pub(crate) fn fetch_context(api: &Api, tx: &Transaction) -> anyhow::Result<Vec<Declaration>> {
    build::resolve_context(tx, |address| {
        let account = api.account(address)?;
        account.declaration.map(|v| build::declaration_from_json(&v, address)).transpose()
    })
}

/// Signs `tx` with `key` (if any); then, with `out`, saves it for the other signers, else
/// submits it (complete, or refused) and waits if asked. Returns what to print.
pub(crate) fn sign_submit_or_save(
    api: &Api,
    chain: &ChainView,
    tx: Transaction,
    key: Option<&SecretKey>,
    out: Option<&Path>,
    common: &Common,
) -> anyhow::Result<Value> {
    let context = fetch_context(api, &tx)?;
    let mut partial = Partial::new(chain.chain_id(), tx, context)?;
    let at = chain.earliest_inclusion_ms();
    if let Some(key) = key {
        partial.sign(key, at)?;
    }
    match out {
        Some(path) => {
            partial.save_new(path)?;
            Ok(file_status(&partial, path, at))
        }
        None => submit(api, chain.chain_id(), &partial.complete(at)?, common),
    }
}

/// Signs `tx` with every key and submits it.
pub(crate) fn sign_and_submit(
    api: &Api,
    chain: &ChainView,
    tx: Transaction,
    keys: &[&SecretKey],
    common: &Common,
) -> anyhow::Result<Value> {
    let context = fetch_context(api, &tx)?;
    let mut partial = Partial::new(chain.chain_id(), tx, context)?;
    let at = chain.earliest_inclusion_ms();
    for key in keys {
        partial.sign(key, at)?;
    }
    submit(api, chain.chain_id(), &partial.complete(at)?, common)
}

/// Submits a signed transaction; with `--wait`, polls it to its end and fails unless committed.
pub(crate) fn submit(
    api: &Api,
    chain_id: &str,
    signed: &SignedTransaction,
    common: &Common,
) -> anyhow::Result<Value> {
    let id = signed.id(chain_id);
    let answered = api.submit(&signed.to_bytes())?;
    if answered != id {
        bail!("the explorer computed id {answered} for transaction {id}: is it serving another chain?");
    }
    if !common.wait {
        return Ok(json!({ "id": id, "status": "pending" }));
    }
    let status = api.wait(&id, common.wait_timeout)?;
    match status.status {
        TxState::Committed => {
            Ok(json!({ "id": id, "status": "committed", "height": status.height, "index": status.index }))
        }
        TxState::Rejected => {
            bail!("transaction {id} was rejected: {}", status.reason.as_deref().unwrap_or("no reason given"))
        }
        TxState::Expired => bail!("transaction {id} expired before a ledger included it"),
        TxState::Pending => bail!("transaction {id} is still pending"),
    }
}

/// Adds `other`'s fields to `answer`.
pub(crate) fn merge(answer: &mut Value, other: Value) {
    if let (Some(a), Value::Object(b)) = (answer.as_object_mut(), other) {
        a.extend(b);
    }
}

/// What a partially signed file holds now.
fn file_status(partial: &Partial, path: &Path, now_ms: i64) -> Value {
    let verdict = partial.verdict(now_ms);
    json!({
        "id": partial.id(),
        "file": path,
        "complete": verdict.complete(),
        "signed_by": partial.signers(),
        "unsatisfied": verdict.unsatisfied.iter().map(|(a, _)| a).collect::<Vec<_>>(),
        "can_sign": verdict.eligible,
    })
}

/// `wallet status`.
pub(crate) fn status(common: &Common) -> anyhow::Result<Output> {
    Output::json(&common.api()?.status()?)
}

/// `wallet balance`.
pub(crate) fn balance(
    common: &Common,
    name: Option<&str>,
    address: Option<Address>,
) -> anyhow::Result<Output> {
    let address = match (name, address) {
        (_, Some(a)) => a,
        (Some(name), None) => common.keystore()?.info(name)?.address,
        (None, None) => bail!("give --name or --address"),
    };
    let mut answer = serde_json::to_value(common.api()?.account(&address)?)?;
    // Decimal text beside each raw amount, for people.
    if let Some(balances) = answer.get_mut("balances").and_then(Value::as_array_mut) {
        for b in balances {
            if let Some(raw) = b.get("amount").and_then(Value::as_i64) {
                b["amount_text"] = json!(engine::currency::format_amount(raw));
            }
        }
    }
    Output::json(&answer)
}

/// `wallet tx`.
pub(crate) fn tx_status(common: &Common, id: &Hash) -> anyhow::Result<Output> {
    match common.api()?.tx_status(id)? {
        Some(v) => Output::json(&v),
        None => bail!("transaction {id} is neither committed nor known to this explorer"),
    }
}

/// `wallet history`.
pub(crate) fn history(
    common: &Common,
    address: &Address,
    limit: u32,
    cursor: Option<&str>,
) -> anyhow::Result<Output> {
    Output::json(&common.api()?.history(address, limit, cursor)?)
}

/// `wallet send`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send(
    common: &Common,
    from: &str,
    to: Address,
    amount: i64,
    currency: Currency,
    declare: &[PathBuf],
    out: Option<&Path>,
    options: &TxOptions,
) -> anyhow::Result<Output> {
    let declarations = load_all(declare)?;
    let api = common.api()?;
    let chain = api.chain()?;
    let key = common.key(from)?;
    let tx = transfer(&chain, key.public_key().address(), to, currency, amount, declarations, options)?;
    let answer = sign_submit_or_save(&api, &chain, tx, Some(&key), out, common)?;
    match (out, common.wait, answer.get("id").and_then(Value::as_str)) {
        (None, false, Some(id)) => Ok(Output::Line(id.to_owned())),
        _ => Output::json(&answer),
    }
}

/// A payment of `amount` `currency` from `from` (who pays the fee) to `to`, publishing
/// `declarations` on the way (e.g. the MultiSig being funded).
pub(crate) fn transfer(
    chain: &ChainView,
    from: Address,
    to: Address,
    currency: Currency,
    amount: i64,
    declarations: Vec<Declaration>,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    Draft::new(from)
        .input(from, currency, amount)
        .output(to, currency, amount)
        .declare_all(declarations)
        .finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// Any transaction from explicit legs: swaps, MultiSig spends. Its default time to expiration
/// is the chain's max TTL, as the co-signers may take a while.
pub(crate) fn legs(
    chain: &ChainView,
    inputs: &[Leg],
    outputs: &[Leg],
    fee_payer: Address,
    declarations: Vec<Declaration>,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    let mut draft = Draft::new(fee_payer);
    for l in inputs {
        draft = draft.input(l.address, l.currency, l.amount);
    }
    for l in outputs {
        draft = draft.output(l.address, l.currency, l.amount);
    }
    draft.declare_all(declarations).finish(chain, options, chain.params.max_ttl_ms)
}

/// `wallet build`.
pub(crate) fn build_file(
    common: &Common,
    inputs: &[Leg],
    outputs: &[Leg],
    fee_payer: Address,
    declare: &[PathBuf],
    out: &Path,
    options: &TxOptions,
) -> anyhow::Result<Output> {
    let declarations = load_all(declare)?;
    let api = common.api()?;
    let chain = api.chain()?;
    let tx = legs(&chain, inputs, outputs, fee_payer, declarations, options)?;
    Output::json(&sign_submit_or_save(&api, &chain, tx, None, Some(out), common)?)
}

/// `wallet sign` (offline).
pub(crate) fn sign_file(common: &Common, name: &str, file: &Path) -> anyhow::Result<Output> {
    let mut partial = Partial::load(file)?;
    // This machine's clock: only for judging time rules offline (`wallet sign`); every
    // transaction's times come from ledger time.
    let now_ms = engine::clock::now_ms();
    // What is signed is shown before the passphrase is asked: the bytes, not the file's own
    // rendering, are what the lines describe.
    let info = common.keystore()?.info(name)?;
    let mut lines = build::summary(&partial.tx, &partial.chain_id, Some(now_ms));
    lines.push(format!("  signing with key {name:?} ({})", info.address));
    eprintln!("{}", lines.join("\n"));
    // Refused before the passphrase is asked.
    partial.check_signer(&info.address, now_ms)?;
    let key = common.key(name)?;
    partial.sign(&key, now_ms)?;
    partial.save_replace(file)?;
    Output::json(&file_status(&partial, file, now_ms))
}

/// `wallet submit`.
pub(crate) fn submit_file(common: &Common, file: &Path) -> anyhow::Result<Output> {
    let partial = Partial::load(file)?;
    let api = common.api()?;
    let chain = chain_of(&api, &partial.chain_id)?;
    let signed = partial.complete(chain.earliest_inclusion_ms())?;
    Output::json(&submit(&api, &partial.chain_id, &signed, common)?)
}

/// A change of the validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetChange {
    /// A new validator of this weight.
    Add(u64),
    /// A validator's new weight.
    Weight(u64),
    /// A validator out.
    Remove,
}

/// `wallet governance …`: the `ValidatorUpdate`, checked against the set the next ledger will
/// have, saved unsigned for the governance account's signers.
pub(crate) fn governance(
    common: &Common,
    public_key: PublicKey,
    change: SetChange,
    out: &Path,
    options: &TxOptions,
) -> anyhow::Result<Output> {
    let api = common.api()?;
    let status = api.status()?;
    let chain = ChainView { params: status.params(), now_ms: status.timestamp_ms };
    let set = ValidatorSet::new(
        status.validators.iter().map(|v| Validator { public_key: v.public_key, weight: v.weight }).collect(),
    )
    .context("the explorer's validator set")?;
    let current = set.validators().iter().find(|v| v.public_key == public_key).map(|v| v.weight);
    let key = public_key.to_hex();
    let weight = match (change, current) {
        (SetChange::Add(_), Some(w)) => {
            bail!("{key} is a validator already (weight {w}): set-weight changes it")
        }
        (SetChange::Weight(_) | SetChange::Remove, None) => bail!("{key} is not a validator"),
        (SetChange::Weight(w), Some(now)) if w == now => bail!("{key} has weight {w} already"),
        (SetChange::Add(w) | SetChange::Weight(w), _) => w,
        (SetChange::Remove, Some(_)) => 0,
    };
    // The chain refuses a set it cannot run (none left, too many, a weight too large).
    set.with_update(public_key, weight).map_err(|e| anyhow::anyhow!("the new validator set: {e}"))?;
    let update = Declaration::ValidatorUpdate(ValidatorUpdate { public_key, weight });
    // Signers may take a while to gather: the longest time to live the chain allows.
    let tx = Draft::new(chain.params.governance).declare(update).finish(
        &chain,
        options,
        chain.params.max_ttl_ms,
    )?;
    Output::json(&sign_submit_or_save(&api, &chain, tx, None, Some(out), common)?)
}

/// `wallet multisig address`.
pub(crate) fn multisig_address(
    required: i16,
    signers: Vec<Address>,
    out: Option<&Path>,
) -> anyhow::Result<Output> {
    let mut seen = std::collections::BTreeSet::new();
    for signer in &signers {
        if !seen.insert(signer) {
            bail!("signer {signer} is given more than once");
        }
    }
    let declaration = Declaration::MultiSig(MultiSig::new(signers, required)?);
    let address = match out {
        Some(path) => build::write_declaration_file(path, &declaration)?,
        None => declaration.address().context("a MultiSig has an address")?,
    };
    Ok(Output::Line(address.to_text()))
}

/// A transaction that only publishes declarations, its fee paid by `payer`.
pub(crate) fn declare_only(
    chain: &ChainView,
    payer: Address,
    declarations: Vec<Declaration>,
    options: &TxOptions,
) -> anyhow::Result<Transaction> {
    if declarations.is_empty() {
        bail!("nothing to declare");
    }
    Draft::new(payer).declare_all(declarations).finish(chain, options, SEND_TTL_MS_DEFAULT)
}

/// `wallet multisig declare`.
pub(crate) fn multisig_declare(
    common: &Common,
    from: &str,
    file: &Path,
    options: &TxOptions,
) -> anyhow::Result<Output> {
    let declarations = build::load_declarations(file)?;
    let api = common.api()?;
    let chain = api.chain()?;
    let key = common.key(from)?;
    let tx = declare_only(&chain, key.public_key().address(), declarations, options)?;
    Output::json(&sign_submit_or_save(&api, &chain, tx, Some(&key), None, common)?)
}

/// The declarations of every `--declare` file.
pub(crate) fn load_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Declaration>> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(build::load_declarations(p)?);
    }
    Ok(all)
}

/// How long `--wait` waits by default.
pub(crate) const WAIT_DEFAULT: Duration = Duration::from_secs(120);
