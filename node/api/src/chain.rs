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
