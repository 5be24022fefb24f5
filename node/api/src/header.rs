//! Certified headers (`GET /v1/headers/…`) and the chain of validator-set changes
//! (`GET /v1/validator-sets`): what a light client follows from genesis (docs/API.md, "Light
//! clients").

use engine::Hash;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::HashHex;

/// A ledger header with the certificate that made it final, as fields and as canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertifiedHeader {
    /// Height; genesis is 0.
    pub height: u64,
    /// The ledger hash (what the certificate's precommits sign, docs/PROTOCOL.md §4.8).
    #[schema(value_type = HashHex)]
    pub hash: Hash,
    /// Header format version.
    pub version: u8,
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
    /// The precommits of one round that certify this ledger (empty for genesis).
    pub certificate: SignedCertificate,
    /// `LedgerHeader ‖ Certificate` in the engine codec (PROTOCOL.md §4.8, §4.10), hex: what a
    /// client verifies.
    pub bytes: String,
}

/// A certificate with its signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedCertificate {
    /// The round whose precommits these are.
    pub round: u32,
    /// By validator index, ascending.
    pub signatures: Vec<CertificateSignature>,
}

/// One validator's precommit signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateSignature {
    /// Index in the set that certifies the ledger (the set named by the previous header).
    pub validator: u8,
    /// ECDSA `r ‖ s` over the precommit's digest, hex (64 bytes).
    pub signature: String,
}

/// A page of consecutive certified headers (`GET /v1/headers?from=H&limit=N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeaderPage {
    /// Ascending heights from `from`.
    pub headers: Vec<CertifiedHeader>,
    /// The `from` of the next page, absent past the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// A change of the validator set: the certified header that names the new set, and that set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetChange {
    /// The header (certified by the set before the change) whose `validator_set_hash` names the
    /// new set; the new set certifies the ledgers from `header.height + 1`.
    pub header: CertifiedHeader,
    /// The new set in the engine codec (`ValidatorSet`, PROTOCOL.md §4.9), hex; its hash is
    /// `header.validator_set_hash`.
    pub validators: String,
}

/// A page of validator-set changes, oldest first (`GET /v1/validator-sets?from=H&limit=N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetChanges {
    /// Changes named by headers at heights `from` and above, ascending.
    pub changes: Vec<SetChange>,
    /// The `from` of the next page, absent when there are no more changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}
