//! Offline verification of a store: re-execute the whole chain and compare every table.

use std::{borrow::Cow, collections::HashSet, path::Path};

use engine::{
    Address, Backend, Hash,
    state::{Block, State, apply_block},
    tx::TxId,
};

use crate::{
    Durability, StoreError,
    layout::{
        self, ACCOUNTS, BLOCKS, HEADERS, HISTORY, HISTORY_HEADS, HistoryValue, REPLAY, TX_INDEX, TxLocation,
    },
    store::{decode_account, open_env, read_block, read_header, read_meta, read_replay, require_env},
};

/// What [`verify`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Ledgers checked: heights `0..=head`.
    pub heights_checked: u64,
    /// Transactions re-executed.
    pub tx_count: u64,
    /// Accounts compared (the state at the indexed height).
    pub accounts: u64,
    /// Height up to which the index tables are written; the ledgers above it are in the
    /// headers and blocks only (see [`crate::IndexBatch`]).
    pub indexed_height: u64,
    /// Hash of the head ledger.
    pub head_hash: Hash,
    /// State root after the last ledger.
    pub state_root: Hash,
}

/// Verifies the store in `dir`, read-only (a node may be running on it), except that a store
/// left by a crash in [`Durability::SafeNoSync`] mode is first opened for writing once so MDBX
/// can finish its recovery (it flushes the last commit; nothing of ours is written). Rebuilds the genesis
/// state from the stored genesis text, re-applies every stored block in order with every
/// signature re-verified (libsecp256k1), and checks that
/// * each re-computed header equals the stored one — so the state root matches at every height
///   — and headers and blocks hold exactly heights `0..=head`;
/// * every transaction up to the indexed height is indexed at its position and in the history
///   of each of its addresses, linked to the address's previous entry, each address's head
///   row names its newest entry, with no extra row in any of these tables (none of a later
///   ledger);
/// * the stored accounts are exactly the re-executed state's at the indexed height (count and
///   every value), the replay table is its replay window and the stored validator set its next
///   set;
/// * value is conserved in every currency.
///
/// Certificates are not checked: the store knows nothing of consensus.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, StoreError> {
    let dir = dir.as_ref();
    require_env(dir)?;
    let env = match open_env(dir, None) {
        // The last commit of a writer that died in `SafeNoSync` mode is intact but not yet
        // flushed ("weak"); MDBX makes it steady at the next read-write open, and refuses a
        // read-only one until then. Only the first process to open the store gets this, so no
        // node is running on it: open it once for writing, as a node start would, and retry.
        Err(StoreError::Mdbx(libmdbx::Error::WannaRecovery)) => {
            drop(open_env(dir, Some(Durability::Durable))?);
            open_env(dir, None)?
        }
        other => other?,
    };
    let txn = env.begin_ro_txn()?;
    let m = read_meta(&txn, dir)?;
    let mut state = State::from_genesis(&m.genesis);
    let fail = |height: u64, what: String| StoreError::Verify { height, what };

    let (genesis_header, _) = read_header(&txn, 0)?.ok_or_else(|| fail(0, "no genesis header".into()))?;
    if genesis_header != *state.head() {
        return Err(fail(0, "the stored genesis header is not the genesis's".into()));
    }
    match read_block(&txn, 0)? {
        Some(txs) if txs.is_empty() => {}
        _ => return Err(fail(0, "the genesis block is missing or not empty".into())),
    }

    let t_index = txn.open_table(Some(TX_INDEX))?;
    let t_history = txn.open_table(Some(HISTORY))?;
    let mut tx_count = 0u64;
    let mut indexed_txs = 0u64;
    let mut history_rows = 0u64;
    // Each address's newest history entry so far: what its next row must link to.
    let mut newest: std::collections::HashMap<Address, TxLocation> = std::collections::HashMap::new();
    let mut addresses: Vec<Address> = Vec::new();
    let w = m.indexed_height;
    if w > m.head_height {
        return Err(fail(w, format!("the indexed height is above the head {}", m.head_height)));
    }
    let mut accounts = if w == 0 { check_indexed_state(&txn, &state, &m.validators)? } else { 0 };
    for height in 1..=m.head_height {
        let (stored, _) = read_header(&txn, height)?.ok_or_else(|| fail(height, "no header".into()))?;
        let transactions = read_block(&txn, height)?.ok_or_else(|| fail(height, "no block".into()))?;
        let block = Block { height, timestamp_ms: stored.timestamp_ms, transactions };
        let applied = apply_block(&mut state, &block, Backend::Libsecp256k1)
            .map_err(|e| fail(height, format!("the block does not apply: {e}")))?;
        if applied.header != stored {
            let what = if applied.header.state_root != stored.state_root {
                format!(
                    "re-executed state root {} differs from the stored {}",
                    applied.header.state_root, stored.state_root
                )
            } else {
                "the re-executed header differs from the stored one".into()
            };
            return Err(fail(height, what));
        }
        if height == w {
            accounts = check_indexed_state(&txn, &state, &m.validators)?;
        }
        tx_count += block.transactions.len() as u64;
        if height > w {
            continue;
        }
        indexed_txs += block.transactions.len() as u64;
        for (i, (tx, id)) in block.transactions.iter().zip(&applied.tx_ids).enumerate() {
            let at = TxLocation { height, index: i as u32 };
            let stored_at = txn
                .get::<Cow<'_, [u8]>>(&t_index, id.0)?
                .map(|v| TxLocation::from_bytes(&v, TX_INDEX))
                .transpose()?;
            if stored_at != Some(at) {
                return Err(fail(
                    height,
                    format!("transaction {id} is indexed at {stored_at:?}, not {at:?}"),
                ));
            }
            addresses.clear();
            addresses.extend(tx.tx.inputs.iter().chain(&tx.tx.outputs).map(|l| l.address));
            addresses.push(tx.tx.fee.payer);
            addresses.sort_unstable();
            addresses.dedup();
            for a in &addresses {
                let row = txn.get::<Cow<'_, [u8]>>(&t_history, layout::history_key(at, a))?;
                let row = row.map(|v| HistoryValue::from_bytes(&v)).transpose()?;
                let expected = HistoryValue { id: *id, previous: newest.insert(*a, at) };
                if row != Some(expected) {
                    return Err(fail(height, format!("history of {a} lacks transaction {id} (or its link)")));
                }
            }
            history_rows += addresses.len() as u64;
        }
    }

    let head = m.head_height;
    let entries = |name: &'static str| -> Result<u64, StoreError> {
        Ok(txn.table_stat(&txn.open_table(Some(name))?)?.entries() as u64)
    };
    let t_heads = txn.open_table(Some(HISTORY_HEADS))?;
    for (a, at) in &newest {
        let stored = txn
            .get::<Cow<'_, [u8]>>(&t_heads, a.raw())?
            .map(|v| TxLocation::from_bytes(&v, HISTORY_HEADS))
            .transpose()?;
        if stored != Some(*at) {
            return Err(fail(w, format!("the history head of {a} is {stored:?}, not {at:?}")));
        }
    }
    let heads = newest.len() as u64;
    for (name, expected) in [
        (HEADERS, head + 1),
        (BLOCKS, head + 1),
        (TX_INDEX, indexed_txs),
        (HISTORY, history_rows),
        (HISTORY_HEADS, heads),
    ] {
        let found = entries(name)?;
        if found != expected {
            return Err(fail(head, format!("table {name} holds {found} rows, not {expected}")));
        }
    }

    if let Err(currency) = state.check_conservation() {
        return Err(fail(head, format!("{currency} is not conserved")));
    }
    Ok(VerifyReport {
        heights_checked: head + 1,
        tx_count,
        accounts,
        indexed_height: w,
        head_hash: state.head_hash(),
        state_root: state.state_root(),
    })
}

/// Compares the index-height tables with the re-executed `state`: every stored account equals
/// the state's and none is missing, the replay table is the state's replay window, the stored
/// validator set is its next set. Returns the number of accounts.
fn check_indexed_state(
    txn: &libmdbx::Transaction<'_, libmdbx::RO, libmdbx::NoWriteMap>,
    state: &State,
    validators: &engine::ledger::ValidatorSet,
) -> Result<u64, StoreError> {
    let height = state.head().height;
    let fail = |what: String| StoreError::Verify { height, what };
    let t_accounts = txn.open_table(Some(ACCOUNTS))?;
    let mut cursor = txn.cursor(&t_accounts)?;
    let mut accounts = 0u64;
    for row in cursor.iter_start::<Cow<'_, [u8]>, Cow<'_, [u8]>>() {
        let (key, value) = row?;
        let stored = decode_account(&key, &value)?;
        if state.account(&stored.address) != Some(&stored) {
            return Err(fail(format!("stored account {} differs from the re-executed one", stored.address)));
        }
        accounts += 1;
    }
    let expected_accounts = state.accounts().count() as u64;
    if accounts != expected_accounts {
        return Err(fail(format!("{accounts} accounts stored, {expected_accounts} re-executed")));
    }
    let now = state.head().timestamp_ms;
    let window: HashSet<(TxId, i64)> = state.replay_entries().filter(|(_, exp)| *exp > now).collect();
    let stored: Vec<(TxId, i64)> = read_replay(txn)?;
    if stored.len() != window.len() || !stored.iter().all(|e| window.contains(e)) {
        return Err(fail(format!(
            "table {REPLAY} holds {} entries, the replay window {}",
            stored.len(),
            window.len()
        )));
    }
    if state.validators() != validators {
        return Err(fail("the stored validator set is not the re-executed one".into()));
    }
    Ok(accounts)
}
