//! The write path: one write transaction per ledger, and the index rows gathered over a batch of
//! ledgers then written in key order.

use std::sync::Arc;

use engine::{
    Address,
    account::Account,
    ledger::{Certificate, ValidatorSet},
    state::Applied,
    tx::{SignedTransaction, TxId},
};
use libmdbx::{RW, WriteFlags};

use crate::{
    StoreError, TxLocation,
    history::write_history,
    layout::{Accounts, Blocks, EncodedBlock, Headers, Meta, Replay, ReplayKey, TxIndex, meta},
    pending::{IndexBatch, Pending},
    reader::{self, head_height, head_height_in, missing},
    store::{BatchWrite, Env, LedgerToCommit, Store},
    table::{Table, Txn, open},
};

impl Store {
    /// Writes one ledger in one MDBX write transaction: its header and certificate, its block,
    /// the transaction index, every touched account (sorted by address, each written once), the
    /// history rows, the replay window (new ids in, expired ones out) and the new head and
    /// validator set. Either all of it is stored or, after a crash, none of it.
    ///
    /// Refuses a ledger that is not the stored head's child, and one whose parts disagree.
    pub fn commit(&mut self, ledger: LedgerToCommit<'_>) -> Result<(), StoreError> {
        let LedgerToCommit { applied, transactions, certificate, state } = ledger;
        if state.head() != &applied.header {
            return Err(StoreError::InconsistentLedger("the state is not at the ledger's head"));
        }
        let accounts: Vec<Account> =
            applied.touched.iter().filter_map(|a| state.account(a).cloned()).collect();
        self.commit_sealed(applied, transactions, certificate, accounts, state.validators())
    }

    /// [`Store::commit`] with the touched accounts' new values taken out of the state:
    /// `accounts` are the accounts of `applied.touched`, in that (sorted) order, and `validators`
    /// the set certifying the next ledger.
    fn commit_sealed(
        &mut self,
        applied: &Applied,
        transactions: &[SignedTransaction],
        certificate: &Certificate,
        accounts: Vec<Account>,
        validators: &ValidatorSet,
    ) -> Result<(), StoreError> {
        let header = &applied.header;
        let height = header.height;
        if transactions.len() != applied.tx_ids.len() {
            return Err(StoreError::InconsistentLedger("transaction count differs from the id count"));
        }
        if accounts.len() != applied.touched.len()
            || accounts.iter().zip(&applied.touched).any(|(a, t)| a.address != *t)
        {
            return Err(StoreError::InconsistentLedger("the accounts are not the ledger's touched accounts"));
        }
        if validators.hash() != header.validator_set_hash {
            return Err(StoreError::InconsistentLedger("the validators are not the header's"));
        }
        if self.failed {
            return Err(StoreError::Failed);
        }
        if self.writing.as_ref().is_some_and(|w| w.thread.is_finished()) {
            self.join_batch()?;
        }
        let rows =
            LedgerRows::new(applied, transactions, &self.chain_id, !self.options.without_query_indexes)?;

        let txn = self.reader.env().begin_rw_txn()?;
        let t_meta = open::<Meta, RW>(&txn)?;
        // The cheap invariant that keeps the chain a chain: this ledger is the head's child.
        let head_height = head_height_in(&t_meta)?;
        if height != head_height.wrapping_add(1) {
            return Err(StoreError::WrongHeight { head: head_height, got: height });
        }
        let (head, _) = reader::header(&txn, head_height)?
            .ok_or_else(|| missing(Headers::NAME, format!("no header at the head height {head_height}")))?;
        let head_hash = head.hash(&self.chain_id);
        if header.previous != head_hash {
            return Err(StoreError::WrongParent { height, expected: head_hash, got: header.previous });
        }

        let mut buf = Vec::new();
        crate::snapshot::record_set_change(&txn, &head, header, certificate, validators)?;
        open::<Headers, RW>(&txn)?.put(&height, (header, certificate), WriteFlags::APPEND, &mut buf)?;
        open::<Blocks, RW>(&txn)?.put(&height, &rows.block, WriteFlags::APPEND, &mut buf)?;
        t_meta.put_field::<meta::HeadHeight>(&height, WriteFlags::UPSERT)?;

        // From here the gathered rows run ahead of the tables until the commit succeeds.
        self.failed = true;
        gather(&mut self.pending, applied, rows, accounts, validators);
        let write = self.pending.is_due(self.next_batch.unwrap_or(self.options.index_batch));
        let inline = write && !self.options.index_in_background;
        if inline {
            write_pending(&txn, &self.pending, height)?;
        }
        let first_kept = match self.options.retention {
            Some(retention) => crate::prune::prune(&txn, &t_meta, height, retention)?,
            None => self.first_kept,
        };
        txn.commit()?;
        self.first_kept = first_kept;
        if write {
            self.next_batch = None;
        }
        if inline {
            self.pending = Pending::default();
        } else if write {
            self.write_in_background(height)?;
        }
        self.failed = false;
        Ok(())
    }

    /// Hands the gathered rows, due at `height`, to a thread that writes them.
    fn write_in_background(&mut self, height: u64) -> Result<(), StoreError> {
        // Batches land in order: the history rows of one link to the heads the previous
        // wrote. The previous was due ledgers ago and is normally written by now.
        self.join_batch()?;
        let rows = Arc::new(std::mem::take(&mut self.pending));
        let (env, batch) = (Arc::clone(self.reader.env_arc()), Arc::clone(&rows));
        match std::thread::Builder::new()
            .name("store-index".into())
            .spawn(move || write_batch(&env, &batch, height))
        {
            Ok(thread) => self.writing = Some(BatchWrite { rows, height, thread }),
            // No thread to be had: written here, as without the option.
            Err(_) => write_batch(self.env(), &rows, height)?,
        }
        Ok(())
    }

    /// From now on, gathers index rows in batches of `batch` (the next batch included, unless
    /// [`Store::stagger_index_batch`] is called after).
    pub fn set_index_batch(&mut self, batch: IndexBatch) {
        self.options.index_batch = batch;
    }

    /// Makes the next batch of index rows due at `share` (clamped to 1/64..=1) of
    /// [`crate::StoreOptions::index_batch`], the ones after it at the whole of it. Stores that
    /// commit the same ledgers at the same time — the validators of a network run on one
    /// machine — then write their batches at different heights rather than all at the one that
    /// completes a batch everywhere (measured on the 4-validator localnet: that height's
    /// interval grew by 0.4–1.6 s; docs/PERFORMANCE.md).
    pub fn stagger_index_batch(&mut self, share: f64) {
        let share = if share.is_nan() { 1.0 } else { share.clamp(1.0 / 64.0, 1.0) };
        let IndexBatch { txs, ledgers } = self.options.index_batch;
        self.next_batch = Some(IndexBatch {
            txs: ((txs as f64 * share).ceil() as usize).max(1),
            ledgers: ((ledgers as f64 * share).ceil() as u64).max(1),
        });
    }

    /// Waits for the batch being written, if any. A batch that failed to write leaves its rows
    /// in neither the tables nor memory: the store then refuses every write until reopened
    /// (which re-gathers them from the blocks).
    pub(crate) fn join_batch(&mut self) -> Result<(), StoreError> {
        let Some(w) = self.writing.take() else { return Ok(()) };
        let result = w.thread.join().unwrap_or_else(|_| Err(StoreError::Failed));
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Writes the gathered index rows now (a clean shutdown does, so the tables are complete for
    /// outside readers and the next open re-executes nothing), in one write transaction.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Failed);
        }
        self.join_batch()?;
        if self.pending.ledgers == 0 {
            return Ok(());
        }
        let txn = self.reader.env().begin_rw_txn()?;
        let head_height = head_height(&txn)?;
        self.failed = true;
        write_pending(&txn, &self.pending, head_height)?;
        txn.commit()?;
        self.pending = Pending::default();
        self.failed = false;
        Ok(())
    }
}

/// The rows one ledger adds, computed before the write transaction opens so it stays short.
pub(crate) struct LedgerRows {
    /// The `blocks` value.
    block: EncodedBlock,
    /// `tx_index` rows.
    tx_index: Vec<(TxId, TxLocation)>,
    /// `history` rows, in key (chain) order: location, address, id.
    history: Vec<(TxLocation, Address, TxId)>,
    /// `replay` keys.
    replay: Vec<ReplayKey>,
}

impl LedgerRows {
    /// The rows of a ledger; `tx_index` and `history` ones only if `query_indexes` are kept.
    pub(crate) fn new(
        applied: &Applied,
        transactions: &[SignedTransaction],
        chain_id: &str,
        query_indexes: bool,
    ) -> Result<Self, StoreError> {
        let height = applied.header.height;
        let n = transactions.len();
        let mut block = EncodedBlock::new(n, 4 + n * 256);
        let indexed = if query_indexes { n } else { 0 };
        let mut tx_index = Vec::with_capacity(indexed);
        let mut history = Vec::with_capacity(indexed * 2);
        let mut replay = Vec::with_capacity(n);
        let mut addresses: Vec<Address> = Vec::new();
        for (i, (tx, expected)) in transactions.iter().zip(&applied.tx_ids).enumerate() {
            let id = block.push(tx, chain_id);
            if id != *expected {
                return Err(StoreError::InconsistentLedger("a transaction does not match its id"));
            }
            if query_indexes {
                let at = TxLocation { height, index: i as u32 };
                tx_index.push((id, at));
                addresses.clear();
                addresses.extend(tx.tx.inputs.iter().chain(&tx.tx.outputs).map(|l| l.address));
                addresses.push(tx.tx.fee.payer);
                // Raw byte order, the order of the keys.
                addresses.sort_unstable_by_key(|a| *a.raw());
                addresses.dedup();
                history.extend(addresses.iter().map(|a| (at, *a, id)));
            }
            let key = ReplayKey::new(tx.tx.expiration_ms, id)
                .ok_or(StoreError::InconsistentLedger("a transaction expires before 1970"))?;
            replay.push(key);
        }
        Ok(Self { block, tx_index, history, replay })
    }
}

/// Adds one committed ledger's index rows to the gathered ones.
pub(crate) fn gather(
    pending: &mut Pending,
    applied: &Applied,
    mut rows: LedgerRows,
    accounts: Vec<Account>,
    validators: &ValidatorSet,
) {
    rows.tx_index.sort_unstable_by_key(|(id, _)| *id);
    pending.tx_index.push(rows.tx_index);
    pending.history.extend(rows.history);
    pending.replay.extend(rows.replay);
    pending.accounts.push(accounts);
    pending.validators = Some(validators.clone());
    pending.timestamp_ms = applied.header.timestamp_ms;
    pending.ledgers += 1;
    pending.txs += applied.tx_ids.len();
}

/// Writes the gathered rows into `txn`, each table's in key order through one cursor (MDBX then
/// finds each key from the page it just wrote instead of descending from the root), and makes
/// `height` the indexed height.
fn write_pending(txn: &Txn<'_, RW>, pending: &Pending, height: u64) -> Result<(), StoreError> {
    let mut rows: Vec<&(TxId, TxLocation)> = pending.tx_index.iter().flatten().collect();
    rows.sort_unstable_by_key(|(id, _)| *id);
    let mut cursor = open::<TxIndex, RW>(txn)?.cursor()?;
    for (id, at) in rows {
        // An id is unique in a valid chain: its expiration is part of it, and the replay window
        // covers every ledger before that expiration.
        match cursor.put(id, at, WriteFlags::NO_OVERWRITE) {
            Err(StoreError::Mdbx(libmdbx::Error::KeyExist)) => {
                return Err(StoreError::InconsistentLedger("a transaction id is already indexed"));
            }
            other => other?,
        }
    }
    drop(cursor);

    let mut cursor = open::<Accounts, RW>(txn)?.cursor()?;
    // The engine never removes an account, so every touched account has a value to write.
    for account in pending.latest_accounts() {
        cursor.put(&account.address, account, WriteFlags::UPSERT)?;
    }
    drop(cursor);

    write_history(txn, &pending.history)?;
    write_replay(txn, pending)?;

    let t_meta = open::<Meta, RW>(txn)?;
    t_meta.put_field::<meta::IndexedHeight>(&height, WriteFlags::UPSERT)?;
    if let Some(v) = &pending.validators {
        t_meta.put_field::<meta::Validators>(v, WriteFlags::UPSERT)?;
    }
    Ok(())
}

/// Drops the replay entries expired at the last gathered ledger's time (they can never reject a
/// transaction again) and adds the gathered ones that are not.
fn write_replay(txn: &Txn<'_, RW>, pending: &Pending) -> Result<(), StoreError> {
    let now = pending.timestamp_ms;
    let mut cursor = open::<Replay, RW>(txn)?.cursor()?;
    while let Some((key, ())) = cursor.first()? {
        if key.expiration_ms > now {
            break;
        }
        cursor.del()?;
    }
    let mut replay: Vec<&ReplayKey> = pending.replay.iter().collect();
    replay.sort_unstable();
    for key in replay {
        if key.expiration_ms > now {
            cursor.put(key, (), WriteFlags::UPSERT)?;
        }
    }
    Ok(())
}

/// Writes a batch of gathered rows in a write transaction of its own (the thread of
/// [`crate::StoreOptions::index_in_background`]), making `height` the indexed height.
fn write_batch(env: &Env, pending: &Pending, height: u64) -> Result<(), StoreError> {
    let txn = env.begin_rw_txn()?;
    write_pending(&txn, pending, height)?;
    txn.commit()?;
    Ok(())
}
