//! The stateful rules of one transaction: what it may do to the state as the block's earlier
//! transactions left it, and the [`Plan`] of what it will change.

use super::{State, accounts::Accounts};
use crate::{
    address::Address,
    currency::Currency,
    declaration::Declaration,
    genesis::ChainParams,
    ledger::ValidatorSet,
    spend::{Published, SpendRules},
    validate::{TxError, VerifiedTx, check_stateless},
};

/// Every stateful rule of `vtx` against `state` in a block at `now` whose earlier transactions
/// already changed the next validator set to `pending_validators` (if any).
pub(super) fn check_tx(
    state: &State,
    now: i64,
    pending_validators: Option<&ValidatorSet>,
    vtx: &VerifiedTx,
) -> Result<Plan, TxError> {
    let params = &state.params;
    let tx = &vtx.tx.tx;
    // Cheap (tens of ns) and makes this function safe on any `VerifiedTx`, even one built
    // without `validate::verify`: value is conserved whatever the caller did.
    check_stateless(tx, params)?;
    if tx.expiration_ms <= now {
        return Err(TxError::Expired { expiration_ms: tx.expiration_ms, ledger_time_ms: now });
    }
    if tx.expiration_ms > now.saturating_add(params.max_ttl_ms) {
        return Err(TxError::ExpirationTooFar { expiration_ms: tx.expiration_ms, ledger_time_ms: now });
    }
    if state.replay.contains_expiring(&vtx.id, tx.expiration_ms) {
        return Err(TxError::Replayed(vtx.id));
    }

    let mut rules = SpendRules::new(&state.accounts, &tx.declarations, &vtx.signers, now);
    // The first rule not satisfied is the transaction's error.
    let claims = rules.judge(tx, Some(&params.governance), |_, why| Err(why))?;
    let mut next_validators = None;
    let updates = tx.declarations.iter().filter_map(|d| match d {
        Declaration::ValidatorUpdate(u) => Some(u),
        _ => None,
    });
    for u in updates {
        let current = next_validators.as_ref().or(pending_validators).unwrap_or(&state.validators);
        next_validators = Some(current.with_update(u.public_key, u.weight)?);
    }
    if let Some(signer) = rules.unneeded().next() {
        return Err(TxError::UnneededSignature(signer));
    }

    let deltas = net_deltas(tx, params)?;
    for &(address, currency, change) in &deltas {
        let balance = state.balance(&address, &currency);
        let after = balance.checked_add(change).ok_or(TxError::Overflow)?;
        if after < 0 && !params.is_issuer(&address, &currency) {
            return Err(TxError::InsufficientBalance { address, currency, balance, change });
        }
    }
    Ok(Plan { deltas, claims, next_validators })
}

/// The ledger judges spend rules against the state's accounts.
impl Published for Accounts {
    fn declaration(&self, address: &Address) -> Option<&Declaration> {
        self.get(address).and_then(|a| a.declaration.as_deref())
    }

    fn channel_claimed(&self, address: &Address) -> i64 {
        self.get(address).map_or(0, |a| a.channel_claimed)
    }
}

/// What a valid transaction will change.
pub(super) struct Plan {
    /// Net change per (address, currency), sorted, zero changes dropped.
    pub(super) deltas: Vec<(Address, Currency, i64)>,
    /// New cumulative claimed amount per channel.
    pub(super) claims: Vec<(Address, i64)>,
    pub(super) next_validators: Option<ValidatorSet>,
}

/// Net balance changes of a transaction, fee included, merged per (address, currency).
fn net_deltas(
    tx: &crate::tx::Transaction,
    params: &ChainParams,
) -> Result<Vec<(Address, Currency, i64)>, TxError> {
    let mut raw: Vec<(Address, Currency, i64)> = Vec::with_capacity(tx.inputs.len() + tx.outputs.len() + 2);
    raw.extend(tx.inputs.iter().map(|l| (l.address, l.currency, -l.amount)));
    raw.extend(tx.outputs.iter().map(|l| (l.address, l.currency, l.amount)));
    if tx.fee.amount != 0 {
        raw.push((tx.fee.payer, Currency::CAS, -tx.fee.amount));
        raw.push((params.fee_account, Currency::CAS, tx.fee.amount));
    }
    raw.sort_unstable_by_key(|d| (d.0, d.1));
    let mut merged: Vec<(Address, Currency, i64)> = Vec::with_capacity(raw.len());
    for (a, c, v) in raw {
        match merged.last_mut() {
            Some(last) if last.0 == a && last.1 == c => {
                last.2 = last.2.checked_add(v).ok_or(TxError::Overflow)?
            }
            _ => merged.push((a, c, v)),
        }
    }
    merged.retain(|d| d.2 != 0);
    // Conservation: what leaves accounts reaches accounts, per currency. Stateless checks
    // guarantee it; a failure here is an engine bug, and applying it would corrupt the ledger.
    let mut per_currency: Vec<(Currency, i128)> = Vec::with_capacity(2);
    for (_, c, v) in &merged {
        match per_currency.iter_mut().find(|(pc, _)| pc == c) {
            Some((_, s)) => *s += i128::from(*v),
            None => per_currency.push((*c, i128::from(*v))),
        }
    }
    assert!(
        per_currency.iter().all(|(_, s)| *s == 0),
        "transaction does not conserve value: {per_currency:?}"
    );
    Ok(merged)
}
