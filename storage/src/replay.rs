//! The replay window's store: a state keeps the ids of the ledgers the `replay` table holds
//! behind a filter ([`engine::state::State::attach_replay_store`]), and reads the table for the
//! ids its filter may hold.

use std::sync::{Arc, Weak};

use engine::{state::ReplayStore, tx::TxId};
use libmdbx::TransactionKind;

use crate::{
    StoreError,
    layout::{Replay, ReplayKey},
    reader::indexed_height,
    store::Env,
    table::{Txn, open},
};

/// The `replay` table as a state's replay store: it holds the ids of the ledgers up to the
/// indexed height (the rows gathered above it are not in the table, and the state keeps them).
/// It does not keep the environment open: once the store and its readers are dropped, reads
/// fail (and a failed read counts as held) — the store can then be opened again.
pub(crate) struct ReplayTable {
    env: Weak<Env>,
}

impl ReplayTable {
    pub(crate) fn new(env: &Arc<Env>) -> Self {
        Self { env: Arc::downgrade(env) }
    }

    fn env(&self) -> Result<Arc<Env>, String> {
        self.env.upgrade().ok_or_else(|| "the store is closed".to_owned())
    }
}

impl ReplayStore for ReplayTable {
    fn holds(&self, id: &TxId, expiration_ms: i64) -> Result<bool, String> {
        let Some(key) = ReplayKey::new(expiration_ms, *id) else { return Ok(false) };
        let env = self.env()?;
        let read = || -> Result<bool, StoreError> { open::<Replay, _>(&env.begin_ro_txn()?)?.contains(&key) };
        read().map_err(|e| e.to_string())
    }

    fn stored_height(&self) -> Result<u64, String> {
        let env = self.env()?;
        let read = || -> Result<u64, StoreError> { indexed_height(&env.begin_ro_txn()?) };
        read().map_err(|e| e.to_string())
    }
}

/// Attaches the table of `env` to `state`'s replay window behind a filter of `filter_bytes`,
/// the ids the table holds (as `txn` sees it: at the indexed height) streamed into the filter.
pub(crate) fn attach<K: TransactionKind>(
    state: &mut engine::state::State,
    env: &Arc<Env>,
    txn: &Txn<'_, K>,
    filter_bytes: usize,
) -> Result<(), StoreError> {
    let mut failed = None;
    let table = open::<Replay, K>(txn)?;
    let mut cursor = table.cursor()?;
    let rows = cursor.rows(None).map_while(|row| match row {
        Ok((key, ())) => Some((key.id, key.expiration_ms)),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    state.attach_replay_store(Arc::new(ReplayTable::new(env)), filter_bytes, rows);
    failed.map_or(Ok(()), Err)
}
