//! Persistent storage of a Caasiope node.
//!
//! * The embedded MDBX store ([`Store`]): ledger headers and certificates by height, block
//!   contents, transaction id → (height, index), accounts, per-account history and the replay
//!   set, written in one write transaction per ledger so a crash leaves the last committed
//!   ledger intact.
//! * The asynchronous ClickHouse replicator: committed ledgers copied into SQL tables by several
//!   writers, each table tracking its replicated height so a restart resumes exactly once
//!   (not written yet).
//!
//! Storage knows nothing of consensus: it stores what the engine applied and the certificate it
//! is handed.
//!
//! # Tables
//!
//! Heights, indexes and expirations in keys are big-endian, so MDBX's byte order is their
//! numeric order; values use the engine's canonical codec (little-endian, counted, bounded).
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `schema_version`, `chain_id`, `genesis`, `head_height`, `validators` | u64; UTF-8; the genesis TOML text as given; u64; the validator set certifying the next ledger |
//! | `headers` | height u64 BE | header ‖ certificate |
//! | `blocks` | height u64 BE | u32 count ‖ signed transactions, in block order |
//! | `tx_index` | transaction id (32) | height u64 BE ‖ index u32 BE |
//! | `accounts` | raw address (21) | the canonical account |
//! | `history` | raw address (21) ‖ height u64 BE ‖ index u32 BE | transaction id (32) |
//! | `replay` | expiration ms u64 BE ‖ transaction id | empty |
//!
//! * Genesis is height 0: its header (with an empty certificate), an empty block and every
//!   genesis account.
//! * `history` has one row per distinct address among a transaction's inputs, outputs and fee
//!   payer. The fee account gets no row for the fee it receives: it would be in every
//!   transaction's history.
//! * `replay` holds the ids whose expiration is after the head's timestamp: older ones are
//!   deleted as each ledger commits, since no later ledger can include them again.
//!
//! # Writes and crashes
//!
//! [`Store::commit`] writes one ledger in one MDBX write transaction, after checking it is the
//! stored head's child. Every account the ledger touched is written once, in address order, so
//! a ledger costs one B-tree pass per table instead of a random put per balance change; blocks
//! and headers append. MDBX is copy-on-write: a crash at any instant leaves the store at the
//! last committed ledger, whole. See [`Durability`] for what a commit survives.
//!
//! [`Store::open`] rebuilds the in-memory [`engine::state::State`] from the tables and checks it
//! against the head's state root; [`verify`] re-executes the whole chain and compares every
//! table.

mod error;
mod layout;
mod store;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
mod verify;

#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use layout::TxLocation;
pub use store::{
    Durability, GROWTH_STEP_BYTES, HISTORY_PAGE_MAX, HistoryEntry, LedgerToCommit, MAP_SIZE_MAX_BYTES, Store,
    StoreOptions,
};
pub use verify::{VerifyReport, verify};
