//! Applying a whole [`Block`] to a [`State`]: strictly, every transaction valid in order
//! ([`apply_block`], [`apply_verified`], [`execute_verified`]), or as a leader builds one,
//! skipping the invalid candidates ([`build_block`], [`execute_build`]).

use std::borrow::Borrow;

use rayon::prelude::*;

use super::{Applied, BlockError, BlockExecution, State, StateDiff};
use crate::{
    keys::Backend,
    limits::BLOCK_TXS_MAX,
    tx::{SignedTransaction, TxId},
    validate::{TxError, VerifiedTx, verify},
};

/// The input of [`apply_block`]: the transactions of the next ledger and its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Height (head + 1).
    pub height: u64,
    /// Leader's timestamp, unix ms.
    pub timestamp_ms: i64,
    /// Transactions in order.
    pub transactions: Vec<SignedTransaction>,
}

/// Applies a block strictly: every transaction must be valid in order, else the state is left
/// unchanged and the error names the first invalid one. Signatures are verified in parallel on
/// the current rayon pool.
pub fn apply_block(state: &mut State, block: &Block, backend: Backend) -> Result<Applied, BlockError> {
    let expected = state.head.height + 1;
    if block.height != expected {
        return Err(BlockError::Height { head: state.head.height, got: block.height });
    }
    if block.transactions.len() > BLOCK_TXS_MAX {
        return Err(BlockError::TooManyTransactions(block.transactions.len()));
    }
    if block.timestamp_ms <= state.head.timestamp_ms {
        return Err(BlockError::Timestamp { previous: state.head.timestamp_ms, got: block.timestamp_ms });
    }
    let params = &state.params;
    // Signatures are verified in parallel; verdicts are then consumed in block order, so the
    // error always names the first invalid transaction, whatever rule it breaks.
    let verified: Vec<Result<VerifiedTx, TxError>> = block
        .transactions
        .par_iter()
        .map(|tx| verify(tx.clone(), tx.id(&params.chain_id), params, backend))
        .collect();
    let mut exec = state.begin_block(block.timestamp_ms)?;
    for (index, v) in verified.iter().enumerate() {
        let result = match v {
            Ok(v) => exec.apply_tx(v).map(|_| ()),
            Err(e) => Err(e.clone()),
        };
        result.map_err(|error| BlockError::InvalidTx { index, error })?;
    }
    Ok(exec.finish())
}

/// Applies already-verified transactions strictly (see [`apply_block`]).
pub fn apply_verified(
    state: &mut State,
    timestamp_ms: i64,
    txs: &[VerifiedTx],
) -> Result<Applied, BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    apply_strictly(&mut exec, txs)?;
    Ok(exec.finish())
}

/// Executes already-verified transactions strictly on `state` (see [`apply_block`]) and seals the
/// ledger without changing the state ([`BlockExecution::seal`]).
pub fn execute_verified<T: Borrow<VerifiedTx>>(
    state: &mut State,
    timestamp_ms: i64,
    txs: &[T],
) -> Result<StateDiff, BlockError> {
    execute_verified_with(state, timestamp_ms, txs, |e| e.seal())
}

/// As [`execute_verified`], the block's accounts left ahead in the state
/// ([`BlockExecution::seal_ahead`]).
pub fn execute_verified_ahead<T: Borrow<VerifiedTx>>(
    state: &mut State,
    timestamp_ms: i64,
    txs: &[T],
) -> Result<StateDiff, BlockError> {
    execute_verified_with(state, timestamp_ms, txs, |e| e.seal_ahead())
}

fn execute_verified_with<T: Borrow<VerifiedTx>>(
    state: &mut State,
    timestamp_ms: i64,
    txs: &[T],
    seal: fn(BlockExecution<'_>) -> StateDiff,
) -> Result<StateDiff, BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    apply_strictly(&mut exec, txs)?;
    Ok(seal(exec))
}

/// Every transaction valid in order, or the first invalid one's error.
fn apply_strictly<T: Borrow<VerifiedTx>>(exec: &mut BlockExecution<'_>, txs: &[T]) -> Result<(), BlockError> {
    if txs.len() > BLOCK_TXS_MAX {
        return Err(BlockError::TooManyTransactions(txs.len()));
    }
    for (index, tx) in txs.iter().enumerate() {
        exec.apply_tx(tx.borrow()).map_err(|error| BlockError::InvalidTx { index, error })?;
    }
    Ok(())
}

/// As [`build_block`], sealing the ledger without changing the state ([`BlockExecution::seal`]).
pub fn execute_build<'a>(
    state: &mut State,
    timestamp_ms: i64,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Result<(StateDiff, Vec<(TxId, TxError)>), BlockError> {
    execute_build_with(state, timestamp_ms, candidates, max_txs, |e| e.seal())
}

/// As [`execute_build`], the block's accounts left ahead in the state
/// ([`BlockExecution::seal_ahead`]).
pub fn execute_build_ahead<'a>(
    state: &mut State,
    timestamp_ms: i64,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Result<(StateDiff, Vec<(TxId, TxError)>), BlockError> {
    execute_build_with(state, timestamp_ms, candidates, max_txs, |e| e.seal_ahead())
}

fn execute_build_with<'a>(
    state: &mut State,
    timestamp_ms: i64,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
    seal: fn(BlockExecution<'_>) -> StateDiff,
) -> Result<(StateDiff, Vec<(TxId, TxError)>), BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    let rejected = apply_candidates(&mut exec, candidates, max_txs);
    Ok((seal(exec), rejected))
}

/// Builds a ledger as a leader does: applies candidates in order, skipping (and reporting) those
/// that are invalid at their turn, up to `max_txs`.
pub fn build_block<'a>(
    state: &mut State,
    timestamp_ms: i64,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Result<(Applied, Vec<(TxId, TxError)>), BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    let rejected = apply_candidates(&mut exec, candidates, max_txs);
    Ok((exec.finish(), rejected))
}

/// Applies candidates in order up to `max_txs`, skipping those invalid at their turn; returns
/// those skipped, with why.
fn apply_candidates<'a>(
    exec: &mut BlockExecution<'_>,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Vec<(TxId, TxError)> {
    let mut rejected = Vec::new();
    let candidates = candidates.into_iter();
    // Sized once for what the block may take, rather than grown by doubling (each growth a copy
    // of what is there and fresh pages).
    exec.reserve(candidates.size_hint().0.min(max_txs).min(BLOCK_TXS_MAX));
    for tx in candidates {
        if exec.tx_ids.len() >= max_txs.min(BLOCK_TXS_MAX) {
            break;
        }
        if let Err(e) = exec.apply_tx(tx) {
            rejected.push((tx.id, e));
        }
    }
    rejected
}
