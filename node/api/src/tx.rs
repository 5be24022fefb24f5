//! `POST /v1/transactions` and `GET /v1/transactions/{id}`.

use engine::Hash;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::HashHex;

/// The JSON form of a submission (the other is the signed transaction's bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitHex {
    /// The signed transaction's canonical bytes, hex.
    pub hex: String,
}

/// 202: a submission decoded, its signatures verified and checked against the latest state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The transaction id.
    #[schema(value_type = HashHex)]
    pub id: Hash,
    /// Always `pending`.
    pub status: AcceptedStatus,
}

/// The status of an accepted submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    /// Handed to the intake; not committed yet.
    Pending,
}

/// A transaction's fate as this explorer knows it. `height`, `index`, `transaction` and `bytes`
/// come with `committed`, `reason` with `rejected`; absent fields are left out, never null.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TxStatus {
    /// The transaction id.
    #[schema(value_type = HashHex)]
    pub id: Hash,
    /// Where it stands.
    pub status: TxState,
    /// Height of its ledger, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub height: Option<u64>,
    /// Position in its block, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub index: Option<u32>,
    /// Its expiration, unix ms (0 for a submission rejected before it was decoded in full).
    pub expiration_ms: i64,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// The label of the rule that refused it (docs/PROTOCOL.md §7), when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub kind: Option<String>,
    /// The committed transaction, as the engine renders it in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = crate::tx_schema::TransactionJson, nullable = false)]
    pub transaction: Option<serde_json::Value>,
    /// The committed transaction's canonical bytes, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub bytes: Option<String>,
}

/// Where a transaction stands. Pending, rejected and expired are known only for transactions
/// submitted through this explorer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Accepted here, not committed yet, not expired.
    Pending,
    /// In a committed ledger.
    Committed,
    /// Refused by the rules (see `reason`).
    Rejected,
    /// Not committed before its expiration.
    Expired,
}

impl TxState {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Committed => "committed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}
