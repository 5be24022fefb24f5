//! Pruning: a validator's or a node's store keeps the state, the replay window and the last
//! ledgers — by count, by bytes, or both ([`Retention`]) — and deletes the headers and blocks
//! below, a few at each commit, in the commit's own write transaction. Explorers and archives
//! keep every ledger (a store with the query indexes refuses a retention: they would name
//! deleted blocks).
//!
//! MDBX puts the deleted pages on its free list and reuses them before the file grows, so once
//! pruning keeps up the data file stops growing. Pruning never goes above the indexed height:
//! the ledgers after it are re-executed when the store opens, and the indexed height's header
//! is the one the stored state is checked against.

use libmdbx::RW;

use crate::{
    StoreError,
    layout::{Blocks, Headers, Meta, meta},
    table::{TableRef, Txn, open},
};

/// Ledgers one commit deletes at most: pruning outruns commits (one ledger each) while keeping
/// every write transaction short — a store opened with a smaller retention, or one whose
/// ledgers are large, catches up over later commits.
pub const PRUNE_LEDGERS_PER_COMMIT: u64 = 32;

/// How much of the chain a pruning store keeps: the last `ledgers` ledgers, fewer if their
/// headers and blocks take more than `bytes` (their tables' pages). The ledgers the store
/// re-executes at open (above the indexed height) and the indexed height's are always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Ledgers kept, the head included (at least 1).
    pub ledgers: u64,
    /// Bytes the kept ledgers' headers and blocks may take; `u64::MAX` for no limit.
    pub bytes: u64,
}

/// The bytes of the pages of the headers and blocks tables in `txn` (its own changes included).
fn ledger_bytes(
    headers: &TableRef<'_, '_, Headers, RW>,
    blocks: &TableRef<'_, '_, Blocks, RW>,
) -> Result<u64, StoreError> {
    Ok(headers.bytes()? + blocks.bytes()?)
}

/// Deletes, in the commit's write transaction, the oldest ledgers the retention no longer keeps
/// (at most [`PRUNE_LEDGERS_PER_COMMIT`]), with the store at head `head`; records the new first
/// kept height. Returns it.
pub(crate) fn prune(
    txn: &Txn<'_, RW>,
    t_meta: &TableRef<'_, '_, Meta, RW>,
    head: u64,
    retention: Retention,
) -> Result<u64, StoreError> {
    let first = t_meta.field::<meta::FirstKept>()?.unwrap_or(1);
    let indexed = t_meta.field::<meta::IndexedHeight>()?.unwrap_or(0);
    // Never above the indexed height (its header checks the stored state; the blocks after it
    // are re-executed at open), and the head's own is kept.
    let ceiling = indexed.min(head).max(first);
    let by_count = head.saturating_sub(retention.ledgers.max(1)).saturating_add(1);
    let stop = first.saturating_add(PRUNE_LEDGERS_PER_COMMIT).min(ceiling);
    let (headers, blocks) = (open::<Headers, RW>(txn)?, open::<Blocks, RW>(txn)?);
    let mut next = first;
    while next < stop {
        let over_bytes = retention.bytes != u64::MAX && ledger_bytes(&headers, &blocks)? > retention.bytes;
        if next >= by_count && !over_bytes {
            break;
        }
        headers.delete(&next)?;
        blocks.delete(&next)?;
        next += 1;
    }
    if next != first {
        t_meta.put_field::<meta::FirstKept>(&next, libmdbx::WriteFlags::UPSERT)?;
    }
    Ok(next)
}
