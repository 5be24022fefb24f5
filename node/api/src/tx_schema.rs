//! The schema of a transaction's JSON form — what `GET /v1/transactions/{id}` answers as
//! `transaction`: the engine's serde form of a signed transaction, described field by field.
//! These types are schema markers only (the engine serializes its own types); a test checks
//! that every field the engine writes is described here.

#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

use crate::schema::{AddressText, HashHex, PublicKeyHex};

/// A signed transaction as JSON (docs/PROTOCOL.md §4.5, §4.6).
#[derive(Serialize, ToSchema)]
#[schema(as = Transaction)]
pub(crate) struct TransactionJson {
    /// Format version (1).
    version: u8,
    /// Ledger time (unix ms) from which the transaction is void.
    expiration_ms: i64,
    /// Declarations published or used by the transaction.
    declarations: Vec<DeclarationJson>,
    /// What leaves accounts.
    inputs: Vec<LegJson>,
    /// What reaches accounts.
    outputs: Vec<LegJson>,
    /// Free-form bytes, hex (at most 128 bytes).
    #[schema(pattern = "^([0-9a-f]{2}){0,128}$")]
    message: String,
    /// Who pays the fee, in CAS.
    fee: FeeJson,
    /// One per key, sorted by public key.
    signatures: Vec<TxSignatureJson>,
}

/// An amount of a currency leaving or reaching an account.
#[derive(Serialize, ToSchema)]
#[schema(as = Leg)]
pub(crate) struct LegJson {
    #[schema(value_type = AddressText)]
    address: String,
    /// Currency symbol, 1 to 8 characters `[A-Z0-9]`.
    #[schema(pattern = "^[A-Z0-9]{1,8}$")]
    currency: String,
    /// Raw units (10⁻⁸), positive.
    #[schema(minimum = 1)]
    amount: i64,
}

/// The fee.
#[derive(Serialize, ToSchema)]
#[schema(as = Fee)]
pub(crate) struct FeeJson {
    #[schema(value_type = AddressText)]
    payer: String,
    /// Raw CAS units.
    amount: i64,
}

/// A signature of a transaction's id.
#[derive(Serialize, ToSchema)]
#[schema(as = TxSignature)]
pub(crate) struct TxSignatureJson {
    #[schema(value_type = PublicKeyHex)]
    public_key: String,
    /// ECDSA `r ‖ s`, 128 lower-case hex characters.
    #[schema(pattern = "^[0-9a-f]{128}$")]
    signature: String,
}

/// The hash function of a hash lock.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HashType {
    Keccak256,
    Sha256,
}

/// A declaration (docs/PROTOCOL.md §4.4), tagged by `type`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = Declaration)]
pub(crate) enum DeclarationJson {
    /// Defines a MultiSig account: `required` of `signers`.
    #[serde(rename = "multisig")]
    MultiSig {
        #[schema(value_type = Vec<AddressText>)]
        signers: Vec<String>,
        required: i16,
    },
    /// Defines a HashLock account.
    #[serde(rename = "hashlock")]
    HashLock {
        hash_type: HashType,
        #[schema(value_type = HashHex)]
        hash: String,
    },
    /// Reveals a preimage that unlocks hash locks.
    Secret {
        #[schema(value_type = HashHex)]
        preimage: String,
    },
    /// Declares a TimeLock (unix seconds).
    #[serde(rename = "timelock")]
    TimeLock { unix_seconds: i64 },
    /// Defines a payment channel.
    #[serde(rename = "payment_channel")]
    PaymentChannel {
        #[schema(value_type = AddressText)]
        payer: String,
        #[schema(value_type = AddressText)]
        payee: String,
        #[schema(pattern = "^[A-Z0-9]{1,8}$")]
        currency: String,
        expiry_ms: i64,
    },
    /// A payer's voucher for a channel claim.
    Voucher {
        #[schema(value_type = AddressText)]
        channel: String,
        cumulative: i64,
        #[schema(value_type = PublicKeyHex)]
        public_key: String,
        #[schema(pattern = "^[0-9a-f]{128}$")]
        signature: String,
    },
    /// A validator-set change (weight 0 removes the validator).
    ValidatorUpdate {
        #[schema(value_type = PublicKeyHex)]
        public_key: String,
        weight: u64,
    },
}
