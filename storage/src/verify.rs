//! Offline verification of a store: re-execute the whole chain and compare every table.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use engine::{
    Address, Backend, Hash,
    state::{Block, State, apply_block},
    tx::TxId,
};
use libmdbx::RO;

use crate::{
    Durability, StoreError,
    layout::{
        Accounts, Blocks, Headers, History, HistoryHeads, HistoryKey, HistoryValue, Replay, TxIndex,
        TxLocation,
    },
    reader::{
        StoredMeta, block as read_block, check_account, header as read_header, read_meta,
        replay as read_replay,
    },
    store::{Env, open_env, require_env},
    table::{Table, TableRef, Txn, open},
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
    /// Whether the transaction index and account history are kept (and were checked).
    pub query_indexes: bool,
    /// The lowest height above 0 the store keeps (1: nothing pruned). A pruned store is
    /// checked from its stored state instead of from genesis (see [`verify`]).
    pub first_kept: u64,
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
/// A pruned store ([`crate::Retention`]) no longer has the ledgers to re-execute from genesis:
/// what it keeps is checked instead — the stored accounts hash to the indexed height's state
/// root, the ledgers above it re-execute to their stored headers (as at open), the kept
/// headers form one chain from the first kept height to the head, each kept block is the one
/// its header commits to (its transaction root), the tables hold exactly genesis's ledger and
/// the kept ones, and value is conserved.
///
/// Certificates are not checked: the store knows nothing of consensus.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, StoreError> {
    let dir = dir.as_ref();
    require_env(dir)?;
    let env = open_read_only(dir)?;
    let txn = env.begin_ro_txn()?;
    let m = read_meta(&txn, dir)?;
    if m.first_kept > 1 {
        drop(txn);
        return verify_pruned(dir, &std::sync::Arc::new(env), &m);
    }
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

    let mut tx_count = 0u64;
    let mut index = IndexCheck::new(&txn)?;
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
        // A store without the query indexes has none to check (their counts must be 0).
        if height <= w && m.query_indexes {
            index.check_ledger(&block, &applied.tx_ids)?;
        }
    }

    let head = m.head_height;
    index.check_heads_and_counts(&txn, w, head)?;

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
        query_indexes: m.query_indexes,
        first_kept: 1,
    })
}

/// [`verify`] of a pruned store: from its stored state, over the ledgers it keeps.
fn verify_pruned(dir: &Path, env: &std::sync::Arc<Env>, m: &StoredMeta) -> Result<VerifyReport, StoreError> {
    let txn = env.begin_ro_txn()?;
    let fail = |height: u64, what: String| StoreError::Verify { height, what };
    // The accounts against the indexed height's state root, the ledgers above re-executed to
    // their headers: as a store is opened.
    let (chain_id, state, _) = crate::store::restore(env, &txn, dir, 0)?;
    let genesis = State::from_genesis(&m.genesis);
    match read_header(&txn, 0)? {
        Some((header, _)) if header == *genesis.head() => {}
        _ => return Err(fail(0, "the genesis header is missing or not the genesis's".into())),
    }
    let (first, head) = (m.first_kept, m.head_height);
    let mut tx_count = 0u64;
    let mut previous: Option<engine::ledger::LedgerHeader> = None;
    for height in first..=head {
        let (header, _) = read_header(&txn, height)?.ok_or_else(|| fail(height, "no header".into()))?;
        let transactions = read_block(&txn, height)?.ok_or_else(|| fail(height, "no block".into()))?;
        if header.height != height {
            return Err(fail(height, format!("the header says height {}", header.height)));
        }
        if let Some(p) = previous {
            if header.previous != p.hash(&chain_id) || header.timestamp_ms <= p.timestamp_ms {
                return Err(fail(height, "the header does not follow the one below".into()));
            }
        }
        let ids: Vec<TxId> = transactions.iter().map(|tx| tx.id(&chain_id)).collect();
        if engine::merkle::tx_root(&ids) != header.tx_root {
            return Err(fail(height, "the block is not the one its header commits to".into()));
        }
        tx_count += ids.len() as u64;
        previous = Some(header);
    }
    if previous.map(|h| h.hash(&chain_id)) != Some(state.head_hash()) {
        return Err(fail(head, "the kept headers do not lead to the restored head".into()));
    }
    let kept = head - first + 2;
    for (name, found) in [
        (Headers::NAME, open::<Headers, _>(&txn)?.entries()?),
        (Blocks::NAME, open::<Blocks, _>(&txn)?.entries()?),
    ] {
        if found as u64 != kept {
            return Err(fail(
                head,
                format!("table {name} holds {found} rows, not {kept} (genesis and {first}..={head})"),
            ));
        }
    }
    if let Err(currency) = state.check_conservation() {
        return Err(fail(head, format!("{currency} is not conserved")));
    }
    Ok(VerifyReport {
        heights_checked: kept,
        tx_count,
        accounts: state.accounts().count() as u64,
        indexed_height: m.indexed_height,
        head_hash: state.head_hash(),
        state_root: state.state_root(),
        query_indexes: m.query_indexes,
        first_kept: first,
    })
}

/// Opens the environment of `dir` read-only.
pub(crate) fn open_read_only(dir: &Path) -> Result<Env, StoreError> {
    match open_env(dir, None) {
        // The last commit of a writer that died in `SafeNoSync` mode is intact but not yet
        // flushed ("weak"); MDBX makes it steady at the next read-write open, and refuses a
        // read-only one until then. Only the first process to open the store gets this, so no
        // node is running on it: open it once for writing, as a node start would, and retry.
        Err(StoreError::Mdbx(libmdbx::Error::WannaRecovery)) => {
            drop(open_env(dir, Some(Durability::Durable))?);
            open_env(dir, None)
        }
        other => other,
    }
}

/// The check of the index tables against the re-executed ledgers up to the indexed height.
struct IndexCheck<'t, 'env> {
    t_index: TableRef<'t, 'env, TxIndex, RO>,
    t_history: TableRef<'t, 'env, History, RO>,
    indexed_txs: u64,
    history_rows: u64,
    /// Each address's newest history entry so far: what its next row must link to.
    newest: HashMap<Address, TxLocation>,
    /// A transaction's distinct addresses (reused).
    addresses: Vec<Address>,
}

impl<'t, 'env> IndexCheck<'t, 'env> {
    fn new(txn: &'t Txn<'env, RO>) -> Result<Self, StoreError> {
        Ok(Self {
            t_index: open(txn)?,
            t_history: open(txn)?,
            indexed_txs: 0,
            history_rows: 0,
            newest: HashMap::new(),
            addresses: Vec::new(),
        })
    }

    /// Every transaction of `block` is indexed at its position and in the history of each of
    /// its addresses, linked to the address's previous entry.
    fn check_ledger(&mut self, block: &Block, ids: &[TxId]) -> Result<(), StoreError> {
        let height = block.height;
        let fail = |what: String| StoreError::Verify { height, what };
        self.indexed_txs += block.transactions.len() as u64;
        for (i, (tx, id)) in block.transactions.iter().zip(ids).enumerate() {
            let at = TxLocation { height, index: i as u32 };
            let stored_at = self.t_index.get(id)?;
            if stored_at != Some(at) {
                return Err(fail(format!("transaction {id} is indexed at {stored_at:?}, not {at:?}")));
            }
            let addresses = &mut self.addresses;
            addresses.clear();
            addresses.extend(tx.tx.inputs.iter().chain(&tx.tx.outputs).map(|l| l.address));
            addresses.push(tx.tx.fee.payer);
            addresses.sort_unstable();
            addresses.dedup();
            for a in addresses.iter() {
                let row = self.t_history.get(&HistoryKey { at, address: *a })?;
                let expected = HistoryValue { id: *id, previous: self.newest.insert(*a, at) };
                if row != Some(expected) {
                    return Err(fail(format!("history of {a} lacks transaction {id} (or its link)")));
                }
            }
            self.history_rows += addresses.len() as u64;
        }
        Ok(())
    }

    /// Each address's head row names its newest entry, and no table holds a row more than the
    /// ledgers up to `head` (the index tables: up to the indexed height `w`) make.
    fn check_heads_and_counts(&self, txn: &Txn<'_, RO>, w: u64, head: u64) -> Result<(), StoreError> {
        let t_heads = open::<HistoryHeads, _>(txn)?;
        for (a, at) in &self.newest {
            let stored = t_heads.get(a)?;
            if stored != Some(*at) {
                let what = format!("the history head of {a} is {stored:?}, not {at:?}");
                return Err(StoreError::Verify { height: w, what });
            }
        }
        for (name, found, expected) in [
            (Headers::NAME, open::<Headers, _>(txn)?.entries()?, head + 1),
            (Blocks::NAME, open::<Blocks, _>(txn)?.entries()?, head + 1),
            (TxIndex::NAME, self.t_index.entries()?, self.indexed_txs),
            (History::NAME, self.t_history.entries()?, self.history_rows),
            (HistoryHeads::NAME, t_heads.entries()?, self.newest.len() as u64),
        ] {
            let found = found as u64;
            if found != expected {
                let what = format!("table {name} holds {found} rows, not {expected}");
                return Err(StoreError::Verify { height: head, what });
            }
        }
        Ok(())
    }
}

/// Compares the index-height tables with the re-executed `state`: every stored account equals
/// the state's and none is missing, the replay table is the state's replay window, the stored
/// validator set is its next set. Returns the number of accounts.
fn check_indexed_state(
    txn: &Txn<'_, RO>,
    state: &State,
    validators: &engine::ledger::ValidatorSet,
) -> Result<u64, StoreError> {
    let height = state.head().height;
    let fail = |what: String| StoreError::Verify { height, what };
    let mut cursor = open::<Accounts, _>(txn)?.cursor()?;
    let mut accounts = 0u64;
    for row in cursor.rows(None) {
        let (address, account) = row?;
        let stored = check_account(&address, account)?;
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
            "table {} holds {} entries, the replay window {}",
            Replay::NAME,
            stored.len(),
            window.len()
        )));
    }
    if state.validators() != validators {
        return Err(fail("the stored validator set is not the re-executed one".into()));
    }
    Ok(accounts)
}
