//! Transaction validation: one error per rule, and the stateless half of the checks.
//!
//! Validation is split by cost and by what it needs:
//! 1. [`check_stateless`]: shape rules that need only the chain parameters (amounts, balance per
//!    currency, duplicates, fee, known currencies);
//! 2. [`verify_signatures`]: every signature and voucher signature — the expensive part, done
//!    once per transaction (the pipeline runs it in parallel and caches the result by id);
//! 3. the stateful rules (expiration, replay, spend rules, balances), checked and applied
//!    atomically by [`crate::state::BlockExecution::apply_tx`].

use crate::{
    address::Address,
    codec::CodecError,
    currency::Currency,
    declaration::Declaration,
    genesis::ChainParams,
    keys::{self, Backend},
    ledger::ValidatorSetError,
    tx::{Leg, SignedTransaction, Transaction, TxId},
};

/// Why a transaction is invalid. One variant per rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TxError {
    /// The bytes are not a canonical transaction within limits.
    #[error("undecodable transaction: {0}")]
    Decode(#[from] CodecError),
    /// An input or output amount is zero or negative.
    #[error("amount {amount} of {currency} at {address} is not positive")]
    AmountNotPositive {
        /// Account of the leg.
        address: Address,
        /// Currency of the leg.
        currency: Currency,
        /// The amount.
        amount: i64,
    },
    /// The fee is below the genesis minimum (or negative).
    #[error("fee {fee} is below the minimum {min}")]
    FeeTooLow {
        /// Offered fee.
        fee: i64,
        /// Minimum fee.
        min: i64,
    },
    /// Inputs and outputs of a currency do not sum to the same amount.
    #[error("inputs and outputs of {0} do not balance")]
    Unbalanced(Currency),
    /// A currency with no issuer in genesis.
    #[error("unknown currency {0}")]
    UnknownCurrency(Currency),
    /// The same (address, currency) twice among inputs.
    #[error("duplicate input {address} {currency}")]
    DuplicateInput {
        /// Account.
        address: Address,
        /// Currency.
        currency: Currency,
    },
    /// The same (address, currency) twice among outputs.
    #[error("duplicate output {address} {currency}")]
    DuplicateOutput {
        /// Account.
        address: Address,
        /// Currency.
        currency: Currency,
    },
    /// The same declaration twice, or two vouchers for one channel.
    #[error("duplicate declaration")]
    DuplicateDeclaration,
    /// Some sum overflowed i64.
    #[error("amount overflow")]
    Overflow,
    /// A signature that does not verify.
    #[error("signature {index} does not verify")]
    BadSignature {
        /// Its position.
        index: usize,
    },
    /// A voucher whose signature does not verify.
    #[error("voucher signature does not verify")]
    BadVoucherSignature,
    /// The ledger time is at or past the expiration.
    #[error("expired: expiration {expiration_ms} ≤ ledger time {ledger_time_ms}")]
    Expired {
        /// Expiration.
        expiration_ms: i64,
        /// Ledger time.
        ledger_time_ms: i64,
    },
    /// The expiration is further than the max TTL from the ledger time.
    #[error("expiration {expiration_ms} is more than the max TTL after ledger time {ledger_time_ms}")]
    ExpirationTooFar {
        /// Expiration.
        expiration_ms: i64,
        /// Ledger time.
        ledger_time_ms: i64,
    },
    /// The same transaction id was already included within the TTL window.
    #[error("transaction {0} was already included")]
    Replayed(TxId),
    /// An input address or the fee payer whose spend rule is not satisfied.
    #[error("spend rule of {0} is not satisfied")]
    Unsatisfied(Address),
    /// Spend rules nested deeper than the limit.
    #[error("spend rules nested deeper than {max} at {0}", max = crate::limits::SPEND_DEPTH_MAX)]
    TooDeep(Address),
    /// Spend rules whose evaluation exceeds the work limit.
    #[error("spend rules need more than {max} evaluations", max = crate::limits::SPEND_EVALUATIONS_MAX)]
    TooComplex,
    /// A signature that no spend rule needed.
    #[error("signature by {0} is not needed by any spend rule")]
    UnneededSignature(Address),
    /// A balance (other than an issuer's in its currency) would go negative.
    #[error("insufficient {currency} at {address}: balance {balance}, change {change}")]
    InsufficientBalance {
        /// Account.
        address: Address,
        /// Currency.
        currency: Currency,
        /// Balance before.
        balance: i64,
        /// Net change asked for.
        change: i64,
    },
    /// A channel claim before expiry in a currency other than the channel's.
    #[error("channel {0} pays only its own currency before expiry")]
    ChannelCurrency(Address),
    /// A channel claim before expiry with no voucher.
    #[error("claim from channel {0} carries no voucher")]
    VoucherMissing(Address),
    /// A voucher signed by someone other than the channel's payer.
    #[error("voucher for channel {0} is not signed by its payer")]
    VoucherWrongPayer(Address),
    /// A claim past the voucher's cumulative amount.
    #[error("claim exceeds voucher: claimed {claimed} + {amount} > {cumulative}")]
    VoucherExceeded {
        /// Already claimed.
        claimed: i64,
        /// This claim.
        amount: i64,
        /// Voucher's cumulative amount.
        cumulative: i64,
    },
    /// A validator update that would make an invalid set.
    #[error("invalid validator update: {0}")]
    ValidatorUpdate(#[from] ValidatorSetError),
}

impl TxError {
    /// Every kind, in declaration order: the labels of rejection metrics.
    pub const KINDS: [&'static str; 24] = [
        "decode",
        "amount_not_positive",
        "fee_too_low",
        "unbalanced",
        "unknown_currency",
        "duplicate_input",
        "duplicate_output",
        "duplicate_declaration",
        "overflow",
        "bad_signature",
        "bad_voucher_signature",
        "expired",
        "expiration_too_far",
        "replayed",
        "unsatisfied",
        "too_deep",
        "too_complex",
        "unneeded_signature",
        "insufficient_balance",
        "channel_currency",
        "voucher_missing",
        "voucher_wrong_payer",
        "voucher_exceeded",
        "validator_update",
    ];

    /// A stable snake_case name of the rule broken, for metrics and machine-readable errors.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Decode { .. } => "decode",
            Self::AmountNotPositive { .. } => "amount_not_positive",
            Self::FeeTooLow { .. } => "fee_too_low",
            Self::Unbalanced { .. } => "unbalanced",
            Self::UnknownCurrency { .. } => "unknown_currency",
            Self::DuplicateInput { .. } => "duplicate_input",
            Self::DuplicateOutput { .. } => "duplicate_output",
            Self::DuplicateDeclaration { .. } => "duplicate_declaration",
            Self::Overflow { .. } => "overflow",
            Self::BadSignature { .. } => "bad_signature",
            Self::BadVoucherSignature { .. } => "bad_voucher_signature",
            Self::Expired { .. } => "expired",
            Self::ExpirationTooFar { .. } => "expiration_too_far",
            Self::Replayed { .. } => "replayed",
            Self::Unsatisfied { .. } => "unsatisfied",
            Self::TooDeep { .. } => "too_deep",
            Self::TooComplex { .. } => "too_complex",
            Self::UnneededSignature { .. } => "unneeded_signature",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::ChannelCurrency { .. } => "channel_currency",
            Self::VoucherMissing { .. } => "voucher_missing",
            Self::VoucherWrongPayer { .. } => "voucher_wrong_payer",
            Self::VoucherExceeded { .. } => "voucher_exceeded",
            Self::ValidatorUpdate { .. } => "validator_update",
        }
    }
}

/// A transaction whose stateless checks and signatures passed, ready for the stateful rules.
#[derive(Clone, Debug)]
pub struct VerifiedTx {
    /// Its id.
    pub id: TxId,
    /// The transaction.
    pub tx: SignedTransaction,
    /// The ECDSA addresses of its signers, in signature order.
    pub signers: Vec<Address>,
}

/// Decodes, hashes and fully verifies (stateless rules and every signature) untrusted bytes.
pub fn verify_bytes(bytes: &[u8], params: &ChainParams, backend: Backend) -> Result<VerifiedTx, TxError> {
    let (tx, id) = SignedTransaction::decode_with_id(bytes, &params.chain_id)?;
    verify(tx, id, params, backend)
}

/// Fully verifies a decoded transaction whose id is already known.
pub fn verify(
    tx: SignedTransaction,
    id: TxId,
    params: &ChainParams,
    backend: Backend,
) -> Result<VerifiedTx, TxError> {
    check_stateless(&tx.tx, params)?;
    let signers = verify_signatures(&tx, &id, &params.chain_id, backend)?;
    Ok(VerifiedTx { id, tx, signers })
}

/// The rules that need only the transaction and the chain parameters.
pub fn check_stateless(tx: &Transaction, params: &ChainParams) -> Result<(), TxError> {
    check_shape(tx)?;
    for leg in tx.inputs.iter().chain(&tx.outputs) {
        if leg.amount <= 0 {
            return Err(TxError::AmountNotPositive {
                address: leg.address,
                currency: leg.currency,
                amount: leg.amount,
            });
        }
        if !params.issuers.contains_key(&leg.currency) {
            return Err(TxError::UnknownCurrency(leg.currency));
        }
    }
    if tx.fee.amount < params.min_fee || tx.fee.amount < 0 {
        return Err(TxError::FeeTooLow { fee: tx.fee.amount, min: params.min_fee });
    }
    if let Some((address, currency)) = first_duplicate(&tx.inputs) {
        return Err(TxError::DuplicateInput { address, currency });
    }
    if let Some((address, currency)) = first_duplicate(&tx.outputs) {
        return Err(TxError::DuplicateOutput { address, currency });
    }
    check_balanced(tx)?;
    check_declarations_unique(&tx.declarations)
}

/// The limits the decoder enforces, checked again for transactions built in memory: what is
/// validated must be what peers can decode.
fn check_shape(tx: &Transaction) -> Result<(), TxError> {
    use crate::limits::{DECLARATIONS_MAX, INPUTS_MAX, MESSAGE_LEN_MAX, OUTPUTS_MAX};
    let over = |what: &'static str, got: usize, max: usize| {
        if got > max { Err(TxError::Decode(CodecError::OverLimit { what, got, max })) } else { Ok(()) }
    };
    if tx.version != crate::tx::TX_VERSION {
        return Err(TxError::Decode(CodecError::UnknownTag { what: "transaction version", tag: tx.version }));
    }
    over("declarations", tx.declarations.len(), DECLARATIONS_MAX)?;
    over("inputs", tx.inputs.len(), INPUTS_MAX)?;
    over("outputs", tx.outputs.len(), OUTPUTS_MAX)?;
    over("message length", tx.message.len(), MESSAGE_LEN_MAX)
}

fn first_duplicate(legs: &[Leg]) -> Option<(Address, Currency)> {
    // Transactions are small (≤ 64 legs); a quadratic scan beats sorting for the common 1–4.
    for (i, a) in legs.iter().enumerate() {
        if legs[i + 1..].iter().any(|b| a.address == b.address && a.currency == b.currency) {
            return Some((a.address, a.currency));
        }
    }
    None
}

fn check_balanced(tx: &Transaction) -> Result<(), TxError> {
    // Per currency, Σ inputs − Σ outputs must be 0. i128 cannot overflow over ≤ 128 i64 legs.
    let mut sums: Vec<(Currency, i128)> = Vec::with_capacity(2);
    let legs = tx.inputs.iter().map(|l| (l, 1i128)).chain(tx.outputs.iter().map(|l| (l, -1i128)));
    for (leg, sign) in legs {
        match sums.iter_mut().find(|(c, _)| *c == leg.currency) {
            Some((_, s)) => *s += sign * i128::from(leg.amount),
            None => sums.push((leg.currency, sign * i128::from(leg.amount))),
        }
    }
    match sums.iter().find(|(_, s)| *s != 0) {
        Some((c, _)) => Err(TxError::Unbalanced(*c)),
        None => Ok(()),
    }
}

fn check_declarations_unique(decls: &[Declaration]) -> Result<(), TxError> {
    for (i, a) in decls.iter().enumerate() {
        for b in &decls[i + 1..] {
            let same_channel = matches!((a, b), (Declaration::Voucher(x), Declaration::Voucher(y)) if x.channel == y.channel);
            let same_validator = matches!((a, b), (Declaration::ValidatorUpdate(x), Declaration::ValidatorUpdate(y)) if x.public_key == y.public_key);
            if a == b || same_channel || same_validator {
                return Err(TxError::DuplicateDeclaration);
            }
        }
    }
    Ok(())
}

/// Verifies every transaction signature over the id and every voucher signature; returns the
/// signers' ECDSA addresses in signature order.
pub fn verify_signatures(
    tx: &SignedTransaction,
    id: &TxId,
    chain_id: &str,
    backend: Backend,
) -> Result<Vec<Address>, TxError> {
    if tx.signatures.len() > crate::limits::SIGNATURES_MAX {
        return Err(TxError::Decode(CodecError::OverLimit {
            what: "signatures",
            got: tx.signatures.len(),
            max: crate::limits::SIGNATURES_MAX,
        }));
    }
    if !tx.signatures.windows(2).all(|w| w[0].public_key < w[1].public_key) {
        return Err(TxError::Decode(CodecError::NotCanonicalOrder("signatures")));
    }
    let mut signers = Vec::with_capacity(tx.signatures.len());
    for (index, s) in tx.signatures.iter().enumerate() {
        if !keys::verify(backend, &s.public_key, &id.0, &s.signature) {
            return Err(TxError::BadSignature { index });
        }
        signers.push(s.public_key.address());
    }
    for d in &tx.tx.declarations {
        if let Declaration::Voucher(v) = d
            && !v.verify(chain_id, backend)
        {
            return Err(TxError::BadVoucherSignature);
        }
    }
    Ok(signers)
}
