//! The staged ingest path of a Caasiope node.
//!
//! Transactions flow decode → signature batch verification (a dedicated rayon pool) → post-state
//! apply (a single writer) → parallel Merkle update → commit hand-off. Stages exchange batches
//! over bounded lock-free queues so a full stage pushes back on ingest instead of growing memory,
//! and each stage reports its queue depth, batch size and nanoseconds per transaction.
//!
//! This crate knows nothing of sockets or databases: it is driven by the node and hands committed
//! ledgers to whoever stores them. It is filled in by the pipeline issue; the layout is fixed now.
