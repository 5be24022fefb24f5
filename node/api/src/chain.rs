//! `GET /v1/status` and ledgers (`GET /v1/ledgers/…`, the stream's `ledger` events).

use std::collections::BTreeMap;

use engine::{Address, Currency, Hash, PublicKey, genesis::ChainParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::{AddressText, HashHex, PublicKeyHex};

/// Chain parameters and the latest ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// Chain id, mixed into every signed hash.
    pub chain_id: String,
    /// Height of the latest ledger.
    pub height: u64,
    /// Hash of the latest ledger.
    #[schema(value_type = HashHex)]
    pub ledger_hash: Hash,
    /// Latest ledger time, unix ms: the base of expirations and lock times.
    pub timestamp_ms: i64,
    /// Minimum fee, raw CAS units.
    pub min_fee: i64,
    /// Longest allowed distance from ledger time to a transaction's expiration.
    pub max_ttl_ms: i64,
    /// Receives every fee.
    #[schema(value_type = AddressText)]
    pub fee_account: Address,
    /// Authorizes validator-set changes.
    #[schema(value_type = AddressText)]
    pub governance: Address,
    /// The issuer of each currency, by symbol.
    #[schema(value_type = BTreeMap<String, AddressText>)]
    pub issuers: BTreeMap<Currency, Address>,
    /// The validator set certifying the next ledger.
    pub validators: Vec<Validator>,
}

impl Status {
    /// The chain parameters this status tells.
    pub fn params(&self) -> ChainParams {
        ChainParams {
            chain_id: self.chain_id.clone(),
            min_fee: self.min_fee,
            max_ttl_ms: self.max_ttl_ms,
            fee_account: self.fee_account,
            governance: self.governance,
            issuers: self.issuers.clone(),
        }
    }
}

/// A validator of the current set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Validator {
    /// Consensus key.
    #[schema(value_type = PublicKeyHex)]
    pub public_key: PublicKey,
    /// Voting weight.
    pub weight: u64,
}

/// The validator set in force and the one after the changes committed so far
/// (`GET /v1/validators`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidatorsNow {
    /// The latest ledger's height.
    pub height: u64,
    /// The set that certified it.
    pub in_force: ValidatorList,
    /// The set that certifies the next ledger, `height + 1`: the one in force with the
    /// changes (`ValidatorUpdate` transactions) the latest ledger committed.
    pub next: ValidatorList,
    /// What differs from the set in force to the next, by key.
    pub changes: Vec<ValidatorChange>,
}

/// A validator set, readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidatorList {
    /// The set's hash (what headers commit to).
    #[schema(value_type = HashHex)]
    pub hash: Hash,
    /// Its validators, in the set's order (a certificate's signer indexes).
    pub validators: Vec<Validator>,
    /// The sum of their weights.
    pub total_weight: u64,
}

/// One validator's weight before and after a change; 0 is absent from the set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidatorChange {
    /// Consensus key.
    #[schema(value_type = PublicKeyHex)]
    pub public_key: PublicKey,
    /// Weight in the set in force (0: joins).
    pub weight_before: u64,
    /// Weight from the next ledger on (0: leaves).
    pub weight_after: u64,
}

/// A committed ledger: its header, certificate and transaction ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ledger {
    /// Height; genesis is 0.
    pub height: u64,
    /// The ledger hash: what validators sign.
    #[schema(value_type = HashHex)]
    pub hash: Hash,
    /// Leader's time, unix ms.
    pub timestamp_ms: i64,
    /// Hash of the previous ledger (zero for genesis).
    #[schema(value_type = HashHex)]
    pub previous_hash: Hash,
    /// Merkle root over the block's transaction ids.
    #[schema(value_type = HashHex)]
    pub tx_root: Hash,
    /// Root of the state trie after this ledger.
    #[schema(value_type = HashHex)]
    pub state_root: Hash,
    /// Hash of the validator set that certifies the next ledger.
    #[schema(value_type = HashHex)]
    pub validator_set_hash: Hash,
    /// The precommits that made it final.
    pub certificate: Certificate,
    /// Transactions in its block.
    pub tx_count: u64,
    /// Their ids, in block order.
    #[schema(value_type = Vec<HashHex>)]
    pub transactions: Vec<Hash>,
}

/// A ledger's certificate, without its signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    /// The consensus round whose precommits these are.
    pub round: u32,
    /// Indexes, in the validator set, of the validators that signed.
    pub signers: Vec<u8>,
}
