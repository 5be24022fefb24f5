//! What `GET /v1/stream` says besides ledgers and transactions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Data of the last event of a stream the server ends ([`crate::routes::STREAM_EVENT_END`]).
/// A client reconnects with `Last-Event-ID` (the id of the last event it got) and misses
/// nothing: a cut subscriber resumes from the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamEnd {
    /// Why the stream ends: `lagged` (the client read more slowly than ledgers were committed,
    /// further behind than the server buffers) or `stopping` (the process is stopping).
    pub reason: StreamEndReason,
    /// For people; its wording is not part of the contract.
    pub message: String,
}

/// Why a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamEndReason {
    /// The subscriber fell further behind the head than the server keeps for live streams.
    Lagged,
    /// The process is stopping.
    Stopping,
}
