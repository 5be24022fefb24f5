//! Account history: rows appended in chain order, each linked to the address's previous row, and
//! one head row per address naming its newest.

use engine::{Address, tx::TxId};
use libmdbx::{RW, TransactionKind, WriteFlags};

use crate::{
    StoreError, TxLocation,
    layout::{History, HistoryHeads, HistoryKey, HistoryValue},
    store::HistoryEntry,
    table::{Table, Txn, open},
};

/// Appends gathered `history` rows (in chain order, above every stored one), each linked to the
/// address's previous entry, and moves each address's `history_heads` row to its newest entry.
/// Every row appends; only the heads — one per address, a table bounded by the accounts — are
/// written at random places.
pub(crate) fn write_history(
    txn: &Txn<'_, RW>,
    rows: &[(TxLocation, Address, TxId)],
) -> Result<(), StoreError> {
    type Map<V> = std::collections::HashMap<Address, V, foldhash::fast::RandomState>;
    let mut newest: Map<TxLocation> = Map::default();
    let previous_in_batch: Vec<Option<TxLocation>> =
        rows.iter().map(|(at, address, _)| newest.insert(*address, *at)).collect();
    let mut heads: Vec<(Address, TxLocation)> = newest.into_iter().collect();
    heads.sort_unstable_by_key(|(a, _)| *a.raw());
    let mut stored_heads: Map<TxLocation> = Map::default();
    let mut cursor = open::<HistoryHeads, RW>(txn)?.cursor()?;
    for (address, at) in &heads {
        if let Some(stored) = cursor.set(address)? {
            stored_heads.insert(*address, stored);
        }
        cursor.put(address, at, WriteFlags::UPSERT)?;
    }
    drop(cursor);
    let mut cursor = open::<History, RW>(txn)?.cursor()?;
    for ((at, address, id), previous) in rows.iter().zip(previous_in_batch) {
        let previous = previous.or_else(|| stored_heads.get(address).copied());
        let value = HistoryValue { id: *id, previous };
        match cursor.put(&HistoryKey { at: *at, address: *address }, &value, WriteFlags::APPEND) {
            Err(StoreError::Mdbx(libmdbx::Error::KeyMismatch)) => {
                return Err(StoreError::Corrupt {
                    table: History::NAME,
                    why: format!("a row at {at:?} is not above the stored ones"),
                });
            }
            other => other?,
        }
    }
    Ok(())
}

/// Appends to `out`, up to `limit` entries, the history of `address` in the tables, newest first,
/// before `before`.
pub(crate) fn read_history<K: TransactionKind>(
    txn: &Txn<'_, K>,
    address: &Address,
    before: Option<TxLocation>,
    limit: usize,
    out: &mut Vec<HistoryEntry>,
) -> Result<(), StoreError> {
    let t_history = open::<History, K>(txn)?;
    let row = |at: TxLocation| t_history.get(&HistoryKey { at, address: *address });
    let head = open::<HistoryHeads, K>(txn)?.get(address)?;
    let mut next = match before {
        None => head,
        Some(b) => match row(b)? {
            // The last entry of the previous page links to the first of this one.
            Some(v) => v.previous,
            // Any other bound: walk down from the newest entry.
            None => {
                let mut at = head;
                while let Some(a) = at.filter(|a| *a >= b) {
                    at = row(a)?.ok_or_else(|| broken_chain(address, a))?.previous;
                }
                at
            }
        },
    };
    while out.len() < limit {
        let Some(at) = next else { break };
        let value = row(at)?.ok_or_else(|| broken_chain(address, at))?;
        if value.previous.is_some_and(|p| p >= at) {
            return Err(StoreError::Corrupt {
                table: History::NAME,
                why: format!("the history of {address} does not go back in time at {at:?}"),
            });
        }
        out.push(HistoryEntry { location: at, id: value.id });
        next = value.previous;
    }
    Ok(())
}

fn broken_chain(address: &Address, at: TxLocation) -> StoreError {
    StoreError::Corrupt {
        table: History::NAME,
        why: format!("the history of {address} links to a missing row at {at:?}"),
    }
}
