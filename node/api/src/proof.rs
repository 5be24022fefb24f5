//! `GET /v1/proofs/…` and `GET /v1/validators/{height}`: engine codec payloads in hex, which a
//! light client verifies offline.

use engine::Hash;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::HashHex;

/// A proof at a height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Proof {
    /// What it proves.
    pub kind: ProofKind,
    /// Height of the ledger it is proved against.
    pub height: u64,
    /// The engine codec of a `TxInclusionProof` or an `AccountStateProof`, hex.
    pub proof: String,
}

/// The kinds of proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProofKind {
    /// A transaction's inclusion in a committed ledger.
    Transaction,
    /// An account's state at the latest ledger.
    Account,
}

/// The validator set certifying the ledger at `height`: the set whose `hash` the header at
/// `height − 1` commits to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Validators {
    /// The certified height.
    pub height: u64,
    /// The set's hash.
    #[schema(value_type = HashHex)]
    pub hash: Hash,
    /// The engine codec of the `ValidatorSet`, hex.
    pub validators: String,
}
