//! `GET /v1/evidence`: equivocation proofs by pages.

use engine::PublicKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::PublicKeyHex;

/// A page of equivocation proofs, oldest offence first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EvidencePage {
    /// The proofs.
    pub items: Vec<EvidenceItem>,
    /// Present when the page is full: pass it back as `cursor` for the next (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// One equivocation proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EvidenceItem {
    /// Height of the offence.
    pub height: u64,
    /// Its round.
    pub round: u32,
    /// The offender's index in the validator set of that height.
    pub validator: u8,
    /// The offender's consensus key.
    #[schema(value_type = PublicKeyHex)]
    pub public_key: PublicKey,
    /// What it signed twice.
    pub kind: EvidenceKind,
    /// The `Equivocation` (docs/CONSENSUS.md), hex: what `caasiope evidence check` takes.
    pub proof: String,
    /// The first signed message (consensus `Message` encoding), hex.
    pub first: String,
    /// The second signed message, hex.
    pub second: String,
}

/// The kinds of equivocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Two proposals for one height and round.
    DoubleProposal,
    /// Two prevotes.
    DoublePrevote,
    /// Two precommits.
    DoublePrecommit,
    /// A kind code the consensus layer does not name (a checked proof never has one).
    Unknown,
}

impl EvidenceKind {
    /// From the wire name, as the consensus layer names its kinds (`unknown` for any other).
    pub fn from_name(name: &str) -> Self {
        match name {
            "double_proposal" => Self::DoubleProposal,
            "double_prevote" => Self::DoublePrevote,
            "double_precommit" => Self::DoublePrecommit,
            _ => Self::Unknown,
        }
    }
}
