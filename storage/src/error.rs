//! The one error type of the store.

use std::path::PathBuf;

use engine::{CodecError, Hash, genesis::GenesisError, state::RestoreError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MDBX refused an operation (I/O, map full, a lock, a corrupted page…).
    #[error("mdbx: {0}")]
    Mdbx(#[from] libmdbx::Error),
    /// A file-system operation around the environment failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value does not decode with the engine's canonical codec.
    #[error("corrupt value in table {table} at key {key}: {error}")]
    Decode {
        /// Table of the value.
        table: &'static str,
        /// Its key, in hex.
        key: String,
        /// What the decoder refused.
        error: CodecError,
    },
    /// A stored key or value breaks the store's layout (wrong length, missing row, …).
    #[error("corrupt table {table}: {why}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The ledger to commit is not the next height.
    #[error("ledger {got} does not follow the stored head {head}")]
    WrongHeight {
        /// Stored head height.
        head: u64,
        /// Height of the ledger offered.
        got: u64,
    },
    /// The ledger to commit does not extend the stored head.
    #[error("ledger {height} names parent {got}, but the stored head's hash is {expected}")]
    WrongParent {
        /// Height of the ledger offered.
        height: u64,
        /// Hash of the stored head.
        expected: Hash,
        /// The `previous` hash of the ledger offered.
        got: Hash,
    },
    /// The parts of a [`crate::LedgerToCommit`] do not describe one ledger.
    #[error("ledger to commit is inconsistent: {0}")]
    InconsistentLedger(&'static str),
    /// `create` on a directory that already holds a store.
    #[error("{} already holds a store", .0.display())]
    AlreadyExists(PathBuf),
    /// Opened for the explorer's queries, a store made without their indexes.
    #[error(
        "{} was kept without the transaction index and account history (a validator's or a node's store); an explorer needs a store that kept them from genesis",
        .0.display()
    )]
    NoQueryIndexes(PathBuf),
    /// A retention was asked of a store that keeps the query indexes (an explorer's keeps every
    /// ledger: its indexes name them).
    #[error("a store that keeps the transaction index and account history keeps every ledger: no retention")]
    RetentionWithQueryIndexes,
    /// `open` on a directory that holds no store.
    #[error("{} holds no store", .0.display())]
    NotAStore(PathBuf),
    /// The store was written by an incompatible version.
    #[error("store schema version {found}, this build reads version {expected}")]
    SchemaVersion {
        /// Version found.
        found: u64,
        /// Version this build reads and writes.
        expected: u64,
    },
    /// The genesis given to `create`, or the one stored, is invalid.
    #[error("genesis: {0}")]
    Genesis(#[from] GenesisError),
    /// The stored accounts, validators and head do not make a state.
    #[error("stored state does not restore: {0}")]
    Restore(#[from] RestoreError),
    /// An earlier commit failed part-way: the store writes nothing more until it is reopened
    /// (which resumes from what is on disk).
    #[error("an earlier commit failed; reopen the store")]
    Failed,
    /// A snapshot file is malformed, or does not hold what the chain certifies
    /// ([`crate::restore`]), or a store cannot give one ([`crate::snapshot`]).
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// [`crate::verify`] found the stored chain inconsistent with its re-execution.
    #[error("verification failed at height {height}: {what}")]
    Verify {
        /// Height of the ledger (or the head, for whole-table checks).
        height: u64,
        /// What differs.
        what: String,
    },
}
