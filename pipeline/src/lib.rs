//! The staged way into a Caasiope node: the mempool and the intake that feeds it.
//!
//! Transactions flow decode → signature batch verification (a dedicated rayon pool) →
//! admission against the post-state (a single writer) → the [`Mempool`], from which consensus
//! (`consensus::Chain`) builds each proposal: apply → parallel Merkle seal → commit, on the
//! host's thread. Stages exchange batches over bounded lock-free queues (crossbeam), so a full
//! stage pushes back on ingest instead of growing memory, and each stage reports its queue
//! depth, batch size and nanoseconds per transaction ([`MetricsSnapshot`]). Invalid input
//! (undecodable bytes, bad signatures, expired, replayed, double spends) is refused with its
//! rule, counted, and never stalls the stages behind it.
//!
//! This crate knows nothing of sockets, databases or consensus: bytes enter through
//! [`Intake`] and [`IntakeSubmitter`], transactions leave through the [`Mempool`].
//!
//! ```text
//! submit ─▶ [ingest q] ─▶ decode + verify (pool) ─▶ [admit q] ─▶ admit ─▶ Mempool ─▶ proposals
//!                                                        rebase ▲ (each committed ledger)
//! ```

mod intake;
mod mempool;
mod metrics;

use std::time::Instant;

use engine::{
    Backend,
    tx::{SignedTransaction, TxId},
    validate::{VerifiedTx, check_stateless, verify_signatures},
};
pub use intake::{Admitted, Intake, IntakeConfig, IntakeSubmitter, Origin, Reply};
pub use mempool::{BusyWait, DRAIN_LEDGERS, Mempool, MempoolConfig, PoolError, Verdict};
pub use metrics::{Metrics, MetricsSnapshot, Stage, StageSnapshot};

/// Threads for a verification pool: one a core (the stages' own threads mostly wait on it).
pub fn verify_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Why the intake could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Thread or pool creation failed.
    #[error("cannot start the intake: {0}")]
    Start(String),
}

/// Why a submission was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The ingest queue is full (or the batch is larger than one): back off and retry.
    #[error("ingest queue is full")]
    Full,
    /// The intake has stopped.
    #[error("the intake has stopped")]
    Closed,
}

/// A transaction decoded, with its id.
type Decoded = (SignedTransaction, TxId);

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Decodes untrusted bytes and checks the stateless rules.
fn decode_checked(
    bytes: &[u8],
    params: &engine::genesis::ChainParams,
) -> Result<Decoded, engine::validate::TxError> {
    let (stx, id) = SignedTransaction::decode_with_id(bytes, &params.chain_id)?;
    check_stateless(&stx.tx, params)?;
    Ok((stx, id))
}

/// Verifies every signature of a decoded transaction.
fn verify_decoded(
    stx: SignedTransaction,
    id: TxId,
    chain_id: &str,
    backend: Backend,
) -> Result<VerifiedTx, engine::validate::TxError> {
    let signers = verify_signatures(&stx, &id, chain_id, backend)?;
    Ok(VerifiedTx { id, tx: stx, signers })
}
