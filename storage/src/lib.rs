//! Persistent storage of a Caasiope node.
//!
//! * The embedded MDBX store: ledger headers and certificates by height, block contents,
//!   transaction id → (height, index), accounts, per-account history and the replay set, written
//!   in one write transaction per ledger so a crash leaves the last committed ledger intact.
//! * The asynchronous ClickHouse replicator: committed ledgers copied into SQL tables by several
//!   writers, each table tracking its replicated height so a restart resumes exactly once.
//!
//! Storage knows nothing of consensus. It is filled in by the pipeline/storage issue.
