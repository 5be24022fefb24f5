//! Persistent storage of a Caasiope node.
//!
//! * The embedded MDBX store ([`Store`]): ledger headers and certificates by height, block
//!   contents, transaction id → (height, index), accounts, per-account history and the replay
//!   set, written in one write transaction per ledger so a crash leaves the last committed
//!   ledger intact.
//! * The asynchronous ClickHouse replicator ([`analytics::Replicator`]): committed ledgers copied
//!   into SQL tables (ledgers, transactions, legs, declarations, balance changes) by several
//!   writer threads, each table tracking its replicated height so a restart resumes exactly
//!   once. See [`analytics`] and `docs/ANALYTICS.md`.
//! * State snapshots ([`snapshot`], [`restore`]): the certified state at one height in a file of
//!   chunks, each checked against the certified state root before a new store keeps it.
//!
//! Storage knows nothing of consensus: it stores what the engine applied and the certificate it
//! is handed.
//!
//! # Tables
//!
//! Heights, indexes and expirations in keys are big-endian, so MDBX's byte order is their
//! numeric order; values use the engine's canonical codec (little-endian, counted, bounded).
//! Each table is declared once, in `layout.rs`, as a typed table (`table.rs`: a name, a key
//! type and a value type, each with its codec), and read and written only through it; the bytes
//! are pinned by a test (`format_tests.rs`).
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `schema_version`, `chain_id`, `genesis`, `head_height`, `indexed_height`, `validators`; `query_indexes`, `first_kept` (only where not kept, pruned) | u64; UTF-8; the genesis TOML text as given; u64; u64; the validator set certifying the ledger after the indexed height; 0; u64 |
//! | `headers` | height u64 BE | header ‖ certificate |
//! | `blocks` | height u64 BE | u32 count ‖ signed transactions, in block order |
//! | `tx_index` | transaction id (32) | height u64 BE ‖ index u32 BE |
//! | `accounts` | raw address (21) | the canonical account |
//! | `history` | height u64 BE ‖ index u32 BE ‖ raw address (21) | transaction id (32) ‖ the address's previous entry: height u64 BE ‖ index u32 BE (zero: none) |
//! | `history_heads` | raw address (21) | the address's newest entry: height u64 BE ‖ index u32 BE |
//! | `replay` | expiration ms u64 BE ‖ transaction id | empty |
//! | `set_changes` | height u64 BE | header ‖ certificate ‖ the validator set it names (a ledger naming another set than its parent's; never pruned) |
//!
//! * Genesis is height 0: its header (with an empty certificate), an empty block and every
//!   genesis account.
//! * `history` has one row per distinct address among a transaction's inputs, outputs and fee
//!   payer. The fee account gets no row for the fee it receives: it would be in every
//!   transaction's history. Rows are keyed in chain order, so they append (DESIGN §7); an
//!   address's rows chain newest to oldest from its `history_heads` row, so a page of history
//!   costs one lookup per entry and only the heads — a table bounded by the accounts — take
//!   writes at random places.
//! * `replay` holds the ids whose expiration is after the head's timestamp: older ones are
//!   deleted as each ledger commits, since no later ledger can include them again. With
//!   [`StoreOptions::replay_filter_bytes`] it is the replay window itself: the state keeps only
//!   the ids of the ledgers above the indexed height in memory, and a filter of fixed size for
//!   the rest, which a lookup the filter cannot rule out reads here.
//! * A pruning store ([`crate::Retention`]: validators and nodes) keeps genesis's ledger and those from
//!   `first_kept` on; the headers and blocks below are deleted a few at each commit
//!   (`prune.rs`), never above the indexed height, and their pages reused.
//!
//! # Writes and crashes
//!
//! [`Store::commit`] writes one ledger in one MDBX write transaction, after checking it is the
//! stored head's child: its header, its block and the head height. The rows that land at random
//! places in large tables — accounts, transaction index, history, replay window — are gathered
//! in memory and written with the ledger that completes an [`IndexBatch`] (by default every
//! 50,000 transactions or 64 ledgers), in key order through one cursor per table, each account
//! once however many ledgers of the batch touched it; that ledger's transaction also moves
//! `indexed_height`. Each table's B-tree pages are so copied once per batch instead of once per
//! ledger (measured in `docs/PERFORMANCE.md`). The store's readers see the gathered rows too.
//! With [`StoreOptions::index_in_background`] a due batch is written instead by a thread of its
//! own in a write transaction of its own, right after the ledger that completed it (one batch at
//! a time, in order), so that no commit of the caller carries it; and
//! [`Store::stagger_index_batch`] brings the first batch forward, so that stores committing the
//! same ledgers on one machine do not all write theirs at the same height.
//!
//! MDBX is copy-on-write: a crash at any instant leaves the store at the last committed ledger,
//! whole. [`Store::open`] rebuilds the in-memory [`engine::state::State`] from the tables as of
//! `indexed_height`, checks it against that ledger's state root, then re-executes the stored
//! blocks above it (signatures verified) and checks each re-computed header against the stored
//! one — a crash loses no committed ledger, and no index row, since they are derived from the
//! blocks. See [`Durability`] for what a commit survives. [`Store::flush`] writes the gathered
//! rows at once (a clean shutdown does). [`verify`] re-executes the whole chain and compares
//! every table (a pruned store: what it keeps).

pub mod analytics;
mod commit;
mod error;
mod evidence;
mod history;
mod layout;
mod pending;
mod prune;
mod reader;
mod replay;
mod snapshot;
mod stats;
mod store;
mod table;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
mod verify;

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod tests;

pub use analytics::{ClickHouseConfig, LedgerSource, ReplicationStatus, Replicator};
pub use error::StoreError;
pub use evidence::{
    EVIDENCE_BYTES_MAX, EVIDENCE_PAGE_MAX, EVIDENCE_PER_VALIDATOR_MAX, EvidenceKey, StoredEvidence,
};
pub use layout::TxLocation;
pub use pending::IndexBatch;
pub use prune::{PRUNE_LEDGERS_PER_COMMIT, Retention};
pub use reader::{StoreReader, StoreSpace};
pub use snapshot::{
    SNAPSHOT_RECORD_BYTES_MAX, SnapshotFile, SnapshotReport, TrustedLedger, append_record, restore,
    restore_from, snapshot, snapshot_of,
};
pub use stats::{StoreStats, TableStats, stats};
pub use store::{
    Durability, GROWTH_STEP_BYTES, HISTORY_PAGE_MAX, HistoryEntry, LedgerToCommit, MAP_SIZE_MAX_BYTES, Store,
    StoreOptions,
};
pub use verify::{VerifyReport, verify};
