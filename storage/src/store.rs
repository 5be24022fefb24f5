//! The MDBX store: one environment in a directory, one write transaction per ledger.

use std::{
    borrow::Cow,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    thread::JoinHandle,
};

use engine::{
    Address, Backend, Encode,
    account::Account,
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    state::{Applied, Block, State, apply_block},
    tx::{SignedTransaction, TxId},
};
use libmdbx::{
    Database, DatabaseOptions, Mode, NoWriteMap, RO, ReadWriteOptions, SyncMode, TableFlags, Transaction,
    WriteFlags,
};

use crate::{
    StoreError,
    layout::{
        self, ACCOUNTS, BLOCKS, HEADERS, HISTORY, HISTORY_HEADS, HistoryValue, META, REPLAY, SCHEMA_VERSION,
        TABLES, TX_INDEX, TxLocation, decode_value, height_key, meta,
    },
    pending::{IndexBatch, Pending},
};

/// Most history entries one [`Store::history`] call returns; callers page with
/// [`TxLocation::next`].
pub const HISTORY_PAGE_MAX: usize = 1_000;

/// Largest the data file may grow to. Address space only until used: the file grows by
/// [`GROWTH_STEP_BYTES`]. (A 64-bit constant: the store is built for 64-bit hosts.)
pub const MAP_SIZE_MAX_BYTES: isize = 256 << 30;
/// Step by which the data file grows (and the free tail above which it shrinks, twice this).
/// MDBX allocates each step on disk (`fallocate`), and in `SafeNoSync` mode flushes before
/// growing, so a small step costs a flush every few large ledgers (~20 MB of file each at
/// 10,000 transfers; measured: 64 MiB steps doubled the slowest commits).
pub const GROWTH_STEP_BYTES: isize = 256 << 20;
/// Most dirty pages a write transaction keeps in memory before MDBX spills some to the file
/// (16 MiB of 4 KiB pages): an index batch into large tables dirties a page per row at worst,
/// and without this bound the memory of a batch's transaction grows with the tables (measured,
/// peak anonymous memory from 200k to 1M transactions: 16,384 pages +22 %, 8,192 pages +16 %
/// and, once accounts shrank to 88 bytes, 255–270 → 371–393 MiB; 4,096 pages 233–303 →
/// 267–269 MiB with the same commit CPU).
const TXN_DIRTY_PAGES_MAX: u64 = 4 * 1024;
/// Named tables the environment may hold: ours plus room for later ones.
const TABLES_MAX: u64 = 32;

/// The MDBX data file inside a store's directory (MDBX's default name).
const DATA_FILE: &str = "mdbx.dat";

pub(crate) type Env = Database<NoWriteMap>;

/// How durable a commit is.
///
/// Both modes keep the store consistent: MDBX never overwrites the pages of the last steady
/// commit, so whatever happens the store opens at some committed ledger, whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is flushed to the disk (`fsync`) before [`Store::commit`] returns: a process
    /// kill or a power loss loses nothing that was committed. Costs one or two flushes per ledger.
    #[default]
    Durable,
    /// Commits reach the OS page cache, not the disk (MDBX `SAFE_NOSYNC`): a process kill loses
    /// nothing (the kernel still writes the pages), but a power loss or kernel crash may lose
    /// the last ledgers — the store then opens at an older, intact ledger and the node re-syncs
    /// the rest from its peers. It never corrupts the store. MDBX flushes by itself when the
    /// file must grow.
    SafeNoSync,
}

/// Settings of a store, at create or open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Durability of commits.
    pub durability: Durability,
    /// How many ledgers' index rows are gathered before they are written.
    pub index_batch: IndexBatch,
    /// Write a due batch of index rows in a write transaction of its own on a thread of its own,
    /// after the ledger that completed it is committed, rather than inside that ledger's
    /// transaction: the caller's commit then costs the same at every ledger. The rows stay
    /// readable through the [`Store`] until the tables hold them (its [`StoreReader`]s see them
    /// once written, as with any batch). One batch is written at a time, in order; a batch
    /// that fails to write fails the store's next commit.
    pub index_in_background: bool,
}

/// What [`Store::commit`] writes: a ledger as the engine applied it.
#[derive(Clone, Copy, Debug)]
pub struct LedgerToCommit<'a> {
    /// The result of applying the block (header, ids, touched accounts).
    pub applied: &'a Applied,
    /// The block's transactions, in block order (their ids are `applied.tx_ids`).
    pub transactions: &'a [SignedTransaction],
    /// The certificate of the ledger (may be empty where consensus is not run, e.g. tests).
    pub certificate: &'a Certificate,
    /// The state after the ledger: source of the touched accounts and the next validator set.
    pub state: &'a State,
}

/// One entry of an account's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Where the transaction sits.
    pub location: TxLocation,
    /// Its id.
    pub id: TxId,
}

/// The embedded store of a node: ledgers, blocks, transaction index, accounts, account history
/// and the replay window, over one MDBX environment. See the crate documentation for the
/// tables.
pub struct Store {
    env: Arc<Env>,
    dir: PathBuf,
    chain_id: String,
    options: StoreOptions,
    /// Index rows of the ledgers after the indexed height (and after the batch being written).
    pending: Pending,
    /// The batch a thread is writing ([`StoreOptions::index_in_background`]).
    writing: Option<BatchWrite>,
    /// When the next batch is due if not at [`StoreOptions::index_batch`]
    /// ([`Store::stagger_index_batch`]).
    next_batch: Option<IndexBatch>,
    /// A commit failed after its rows were gathered: the gathered rows may be ahead of the
    /// tables, so nothing more is written until the store is reopened.
    failed: bool,
}

/// A batch of index rows being written by a thread of its own.
struct BatchWrite {
    /// The rows, read like the gathered ones until the tables hold them.
    rows: Arc<Pending>,
    /// The indexed height once written.
    height: u64,
    thread: JoinHandle<Result<(), StoreError>>,
}

impl Drop for Store {
    /// Waits for the batch being written (a store dropped without [`Store::flush`] loses no
    /// row either way: the next open re-gathers what the tables lack).
    fn drop(&mut self) {
        let _ = self.join_batch();
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("chain_id", &self.chain_id).finish()
    }
}

/// Opens the environment of `dir`; read-only when `durability` is `None`.
pub(crate) fn open_env(dir: &Path, durability: Option<Durability>) -> Result<Env, StoreError> {
    let mode = match durability {
        None => Mode::ReadOnly,
        Some(d) => Mode::ReadWrite(ReadWriteOptions {
            sync_mode: match d {
                Durability::Durable => SyncMode::Durable,
                Durability::SafeNoSync => SyncMode::SafeNoSync,
            },
            min_size: None,
            max_size: Some(MAP_SIZE_MAX_BYTES),
            growth_step: Some(GROWTH_STEP_BYTES),
            shrink_threshold: Some(2 * GROWTH_STEP_BYTES),
        }),
    };
    let options = DatabaseOptions {
        max_tables: Some(TABLES_MAX),
        txn_dp_limit: Some(TXN_DIRTY_PAGES_MAX),
        mode,
        ..Default::default()
    };
    Ok(Database::open_with_options(dir, options)?)
}

/// Whether `dir` holds an MDBX environment at all (checked before opening, which would create
/// one).
pub(crate) fn require_env(dir: &Path) -> Result<(), StoreError> {
    if dir.join(DATA_FILE).is_file() { Ok(()) } else { Err(StoreError::NotAStore(dir.to_owned())) }
}

impl Store {
    /// Creates a store in `dir` (created if missing) from a genesis TOML text, with durable
    /// commits. Returns the store and the state of ledger 0.
    pub fn create(dir: impl AsRef<Path>, genesis_toml: &str) -> Result<(Self, State), StoreError> {
        Self::create_with(dir, genesis_toml, StoreOptions::default())
    }

    /// [`Store::create`] with options. Refuses a directory that already holds a store. The whole
    /// genesis is one write transaction: a crash during `create` leaves no store, and `create`
    /// may simply be run again.
    pub fn create_with(
        dir: impl AsRef<Path>,
        genesis_toml: &str,
        options: StoreOptions,
    ) -> Result<(Self, State), StoreError> {
        let dir = dir.as_ref();
        let genesis = Genesis::from_toml(genesis_toml)?;
        let state = State::from_genesis(&genesis);
        std::fs::create_dir_all(dir)?;
        let env = open_env(dir, Some(options.durability))?;
        {
            let txn = env.begin_rw_txn()?;
            for name in TABLES {
                txn.create_table(Some(name), TableFlags::default())?;
            }
            crate::evidence::create_tables(&txn)?;
            let t_meta = txn.open_table(Some(META))?;
            if txn.get::<()>(&t_meta, meta::SCHEMA_VERSION)?.is_some() {
                return Err(StoreError::AlreadyExists(dir.to_owned()));
            }
            txn.put(&t_meta, meta::SCHEMA_VERSION, SCHEMA_VERSION.to_bytes(), WriteFlags::empty())?;
            txn.put(&t_meta, meta::CHAIN_ID, genesis.params.chain_id.as_bytes(), WriteFlags::empty())?;
            txn.put(&t_meta, meta::GENESIS, genesis_toml.as_bytes(), WriteFlags::empty())?;
            txn.put(&t_meta, meta::HEAD_HEIGHT, 0u64.to_bytes(), WriteFlags::empty())?;
            txn.put(&t_meta, meta::INDEXED_HEIGHT, 0u64.to_bytes(), WriteFlags::empty())?;
            txn.put(&t_meta, meta::VALIDATORS, state.validators().to_bytes(), WriteFlags::empty())?;
            let header = layout::encode_header(state.head(), &Certificate::default());
            txn.put(&txn.open_table(Some(HEADERS))?, height_key(0), header, WriteFlags::APPEND)?;
            let mut block = Vec::new();
            layout::begin_block(0, &mut block);
            txn.put(&txn.open_table(Some(BLOCKS))?, height_key(0), block, WriteFlags::APPEND)?;
            let mut accounts: Vec<&Account> = state.accounts().collect();
            accounts.sort_unstable_by_key(|a| a.address);
            let t_accounts = txn.open_table(Some(ACCOUNTS))?;
            let mut buf = Vec::new();
            for a in accounts {
                buf.clear();
                a.encode(&mut buf);
                txn.put(&t_accounts, a.address.raw(), &buf, WriteFlags::APPEND)?;
            }
            txn.commit()?;
        }
        let store = Self {
            env: Arc::new(env),
            dir: dir.to_owned(),
            chain_id: genesis.params.chain_id,
            options,
            pending: Pending::default(),
            writing: None,
            next_batch: None,
            failed: false,
        };
        Ok((store, state))
    }

    /// Opens the store in `dir` with durable commits and rebuilds the state at its head.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Self, State), StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// [`Store::open`] with options. The state is rebuilt from the stored genesis parameters and
    /// the tables as of the indexed height (validator set, header, accounts, replay window),
    /// checked by [`State::restore`] against that header's state root and validator-set hash;
    /// then the blocks after it, up to the head, are re-executed (signatures verified) and each
    /// re-computed header must equal the stored one. Their index rows are gathered again.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<(Self, State), StoreError> {
        let dir = dir.as_ref();
        require_env(dir)?;
        let env = open_env(dir, Some(options.durability))?;
        crate::evidence::ensure_tables(&env)?;
        let (chain_id, state, pending) = {
            let txn = env.begin_ro_txn()?;
            let m = read_meta(&txn, dir)?;
            if m.indexed_height > m.head_height {
                return Err(StoreError::Corrupt {
                    table: META,
                    why: format!("indexed height {} is above the head {}", m.indexed_height, m.head_height),
                });
            }
            for table in [HEADERS, BLOCKS] {
                let last = last_height(&txn, table)?;
                if last != Some(m.head_height) {
                    return Err(StoreError::Corrupt {
                        table,
                        why: format!("the last height is {last:?}, the head is {}", m.head_height),
                    });
                }
            }
            let base = read_header(&txn, m.indexed_height)?
                .ok_or_else(|| {
                    missing(HEADERS, format!("no header at the indexed height {}", m.indexed_height))
                })?
                .0;
            let accounts = read_accounts(&txn)?;
            let replay = read_replay(&txn)?;
            let chain_id = m.genesis.params.chain_id.clone();
            let mut state = State::restore(m.genesis.params, m.validators, base, accounts, replay)?;
            let mut pending = Pending::default();
            for height in m.indexed_height + 1..=m.head_height {
                let (stored, _) = read_header(&txn, height)?
                    .ok_or_else(|| missing(HEADERS, format!("no header at {height}")))?;
                let transactions = read_block(&txn, height)?
                    .ok_or_else(|| missing(BLOCKS, format!("no block at {height}")))?;
                let block = Block { height, timestamp_ms: stored.timestamp_ms, transactions };
                let applied = apply_block(&mut state, &block, Backend::Libsecp256k1).map_err(|e| {
                    StoreError::Corrupt {
                        table: BLOCKS,
                        why: format!("ledger {height} does not re-execute: {e}"),
                    }
                })?;
                if applied.header != stored {
                    return Err(StoreError::Corrupt {
                        table: HEADERS,
                        why: format!("ledger {height} re-executes to another header than the stored one"),
                    });
                }
                let rows = LedgerRows::new(&applied, &block.transactions, &chain_id)?;
                let accounts: Vec<Account> =
                    applied.touched.iter().filter_map(|a| state.account(a).cloned()).collect();
                gather(&mut pending, &applied, rows, accounts, state.validators());
            }
            (chain_id, state, pending)
        };
        Ok((
            Self {
                env: Arc::new(env),
                dir: dir.to_owned(),
                chain_id,
                options,
                pending,
                writing: None,
                next_batch: None,
                failed: false,
            },
            state,
        ))
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chain id of the stored genesis.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// A reader of this store for other threads: it sees what the tables hold — every ledger's
    /// header and block at once, the index rows (accounts, transaction index, history) up to
    /// [`Store::indexed_height`], which is the head with [`IndexBatch::EVERY_LEDGER`].
    pub fn reader(&self) -> StoreReader {
        StoreReader { env: self.env.clone() }
    }

    pub(crate) fn env(&self) -> &Env {
        &self.env
    }

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

    /// [`Store::commit`] for a caller that holds the touched accounts' new values rather than the
    /// state (the node's commit thread, which runs beside the single writer that owns the state):
    /// `accounts` are the accounts of `applied.touched`, in that (sorted) order, and `validators`
    /// the set certifying the next ledger.
    pub fn commit_sealed(
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
        let rows = LedgerRows::new(applied, transactions, &self.chain_id)?;

        let txn = self.env.begin_rw_txn()?;
        let t_meta = txn.open_table(Some(META))?;
        // The cheap invariant that keeps the chain a chain: this ledger is the head's child.
        let head_height = read_head_height(&txn, &t_meta)?;
        if height != head_height.wrapping_add(1) {
            return Err(StoreError::WrongHeight { head: head_height, got: height });
        }
        let (head, _) = read_header(&txn, head_height)?
            .ok_or_else(|| missing(HEADERS, format!("no header at the head height {head_height}")))?;
        let head_hash = head.hash(&self.chain_id);
        if header.previous != head_hash {
            return Err(StoreError::WrongParent { height, expected: head_hash, got: header.previous });
        }

        let key = height_key(height);
        txn.put(
            &txn.open_table(Some(HEADERS))?,
            key,
            layout::encode_header(header, certificate),
            WriteFlags::APPEND,
        )?;
        txn.put(&txn.open_table(Some(BLOCKS))?, key, &rows.block, WriteFlags::APPEND)?;
        txn.put(&t_meta, meta::HEAD_HEIGHT, height.to_bytes(), WriteFlags::UPSERT)?;

        // From here the gathered rows run ahead of the tables until the commit succeeds.
        self.failed = true;
        gather(&mut self.pending, applied, rows, accounts, validators);
        let write = self.pending.is_due(self.next_batch.unwrap_or(self.options.index_batch));
        let inline = write && !self.options.index_in_background;
        if inline {
            write_pending(&txn, &self.pending, height)?;
        }
        txn.commit()?;
        if write {
            self.next_batch = None;
        }
        if inline {
            self.pending = Pending::default();
        } else if write {
            // Batches land in order: the history rows of one link to the heads the previous
            // wrote. The previous was due ledgers ago and is normally written by now.
            self.join_batch()?;
            let rows = Arc::new(std::mem::take(&mut self.pending));
            let (env, batch) = (Arc::clone(&self.env), Arc::clone(&rows));
            match std::thread::Builder::new()
                .name("store-index".into())
                .spawn(move || write_batch(&env, &batch, height))
            {
                Ok(thread) => self.writing = Some(BatchWrite { rows, height, thread }),
                // No thread to be had: written here, as without the option.
                Err(_) => write_batch(&self.env, &rows, height)?,
            }
        }
        self.failed = false;
        Ok(())
    }

    /// Makes the next batch of index rows due at `share` (clamped to 1/64..=1) of
    /// [`StoreOptions::index_batch`], the ones after it at the whole of it. Stores that commit
    /// the same ledgers at the same time — the validators of a network run on one machine —
    /// then write their batches at different heights rather than all at the one that completes
    /// a batch everywhere (measured on the 4-validator localnet: that height's interval grew
    /// by 0.4–1.6 s; docs/PERFORMANCE.md).
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
        let txn = self.env.begin_rw_txn()?;
        let t_meta = txn.open_table(Some(META))?;
        let head_height = read_head_height(&txn, &t_meta)?;
        self.failed = true;
        write_pending(&txn, &self.pending, head_height)?;
        txn.commit()?;
        self.pending = Pending::default();
        self.failed = false;
        Ok(())
    }

    /// Height up to which the index tables (accounts, transaction index, history, replay) are
    /// written; the store's readers also see the rows gathered after it.
    pub fn indexed_height(&self) -> Result<u64, StoreError> {
        read_indexed_height(&self.env.begin_ro_txn()?)
    }

    /// The header of the last committed ledger.
    pub fn head(&self) -> Result<LedgerHeader, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        let t_meta = txn.open_table(Some(META))?;
        let height = read_head_height(&txn, &t_meta)?;
        Ok(read_header(&txn, height)?
            .ok_or_else(|| missing(HEADERS, format!("no header at the head height {height}")))?
            .0)
    }

    /// The header and certificate of ledger `height`, if committed.
    pub fn header(&self, height: u64) -> Result<Option<(LedgerHeader, Certificate)>, StoreError> {
        read_header(&self.env.begin_ro_txn()?, height)
    }

    /// The transactions of ledger `height`, in block order, if committed.
    pub fn block(&self, height: u64) -> Result<Option<Vec<SignedTransaction>>, StoreError> {
        read_block(&self.env.begin_ro_txn()?, height)
    }

    /// Where transaction `id` was included, if it was.
    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        match self.pending.tx_location(id).or_else(|| self.writing.as_ref()?.rows.tx_location(id)) {
            Some(at) => Ok(Some(at)),
            None => self.reader().tx_location(id),
        }
    }

    /// The stored state of `address`, if it exists.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StoreError> {
        match self.pending.account(address).or_else(|| self.writing.as_ref()?.rows.account(address)) {
            Some(a) => Ok(Some(a.clone())),
            None => self.reader().account(address),
        }
    }

    /// Up to `limit` (at most [`HISTORY_PAGE_MAX`]) transactions of `address`, newest first,
    /// located before `before` (from the newest when `None`). A transaction is in the history of
    /// every distinct address among its inputs, outputs and fee payer — not of the fee account,
    /// which would receive every transaction of the chain. The next page is
    /// `before = Some(last entry's location)`: one lookup per entry, however deep the page.
    pub fn history(
        &self,
        address: &Address,
        before: Option<TxLocation>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let limit = limit.min(HISTORY_PAGE_MAX);
        let txn = self.env.begin_ro_txn()?;
        // The batch being written, until this reading's snapshot of the tables holds it.
        let writing = match &self.writing {
            Some(w) if read_indexed_height(&txn)? < w.height => Some(w),
            _ => None,
        };
        // Gathered rows are of ledgers above every indexed one: they come first.
        let mut out: Vec<HistoryEntry> = self
            .pending
            .history_of(address, before)
            .chain(writing.into_iter().flat_map(|w| w.rows.history_of(address, before)))
            .take(limit)
            .map(|(location, id)| HistoryEntry { location, id })
            .collect();
        if out.len() >= limit {
            return Ok(out);
        }
        read_history(&txn, address, before, limit, &mut out)?;
        Ok(out)
    }
}

/// The indexed height in `txn`'s snapshot.
fn read_indexed_height<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
) -> Result<u64, StoreError> {
    get_value(txn, &txn.open_table(Some(META))?, META, meta::INDEXED_HEIGHT)?
        .ok_or_else(|| missing(META, "no indexed height".into()))
}

/// Appends to `out`, up to `limit` entries, the history of `address` in the tables, newest first,
/// before `before`.
fn read_history<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
    address: &Address,
    before: Option<TxLocation>,
    limit: usize,
    out: &mut Vec<HistoryEntry>,
) -> Result<(), StoreError> {
    let t_history = txn.open_table(Some(HISTORY))?;
    let row = |at: TxLocation| -> Result<Option<HistoryValue>, StoreError> {
        txn.get::<Cow<'_, [u8]>>(&t_history, &layout::history_key(at, address))?
            .map(|v| HistoryValue::from_bytes(&v))
            .transpose()
    };
    let head = txn
        .get::<Cow<'_, [u8]>>(&txn.open_table(Some(HISTORY_HEADS))?, address.raw())?
        .map(|v| TxLocation::from_bytes(&v, HISTORY_HEADS))
        .transpose()?;
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
                table: HISTORY,
                why: format!("the history of {address} does not go back in time at {at:?}"),
            });
        }
        out.push(HistoryEntry { location: at, id: value.id });
        next = value.previous;
    }
    Ok(())
}

/// Reads a store from any thread while its [`Store`] commits (MDBX readers never block the
/// writer). Cheap to clone. Sees the tables only: see [`Store::reader`].
#[derive(Clone)]
pub struct StoreReader {
    env: Arc<Env>,
}

impl fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreReader").finish_non_exhaustive()
    }
}

impl StoreReader {
    pub(crate) fn env(&self) -> &Env {
        &self.env
    }

    /// Height of the last committed ledger.
    pub fn head_height(&self) -> Result<u64, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        read_head_height(&txn, &txn.open_table(Some(META))?)
    }

    /// Height up to which the index tables are written.
    pub fn indexed_height(&self) -> Result<u64, StoreError> {
        read_indexed_height(&self.env.begin_ro_txn()?)
    }

    /// The header and certificate of ledger `height`, if committed.
    pub fn header(&self, height: u64) -> Result<Option<(LedgerHeader, Certificate)>, StoreError> {
        read_header(&self.env.begin_ro_txn()?, height)
    }

    /// The transactions of ledger `height`, in block order, if committed.
    pub fn block(&self, height: u64) -> Result<Option<Vec<SignedTransaction>>, StoreError> {
        read_block(&self.env.begin_ro_txn()?, height)
    }

    /// Where transaction `id` was included, if it was (and is indexed).
    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        let table = txn.open_table(Some(TX_INDEX))?;
        txn.get::<Cow<'_, [u8]>>(&table, id.0)?.map(|v| TxLocation::from_bytes(&v, TX_INDEX)).transpose()
    }

    /// The indexed state of `address`, if it exists.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        let table = txn.open_table(Some(ACCOUNTS))?;
        let Some(bytes) = txn.get::<Cow<'_, [u8]>>(&table, address.raw())? else {
            return Ok(None);
        };
        decode_account(address.raw(), &bytes).map(Some)
    }

    /// As [`Store::history`], over the indexed ledgers.
    pub fn history(
        &self,
        address: &Address,
        before: Option<TxLocation>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        read_history(&self.env.begin_ro_txn()?, address, before, limit.min(HISTORY_PAGE_MAX), &mut out)?;
        Ok(out)
    }
}

impl crate::analytics::LedgerSource for StoreReader {
    fn head(&self) -> Result<u64, StoreError> {
        self.head_height()
    }

    fn ledger(&self, height: u64) -> Result<Option<crate::analytics::SourceLedger>, StoreError> {
        // One read transaction: the header and block of one commit.
        let txn = self.env.begin_ro_txn()?;
        let Some((header, certificate)) = read_header(&txn, height)? else { return Ok(None) };
        let block = read_block(&txn, height)?.ok_or_else(|| StoreError::Corrupt {
            table: BLOCKS,
            why: format!("ledger {height} has a header but no block"),
        })?;
        Ok(Some((header, certificate, block)))
    }

    fn timestamp_ms(&self, height: u64) -> Result<Option<i64>, StoreError> {
        Ok(self.header(height)?.map(|(header, _)| header.timestamp_ms))
    }
}

fn broken_chain(address: &Address, at: TxLocation) -> StoreError {
    StoreError::Corrupt {
        table: HISTORY,
        why: format!("the history of {address} links to a missing row at {at:?}"),
    }
}

/// The rows one ledger adds, computed before the write transaction opens so it stays short.
pub(crate) struct LedgerRows {
    /// The `blocks` value.
    block: Vec<u8>,
    /// `tx_index` rows.
    tx_index: Vec<(TxId, TxLocation)>,
    /// `history` rows, in key (chain) order: location, address, id.
    history: Vec<(TxLocation, Address, TxId)>,
    /// `replay` keys.
    replay: Vec<[u8; layout::REPLAY_KEY_LEN]>,
}

impl LedgerRows {
    pub(crate) fn new(
        applied: &Applied,
        transactions: &[SignedTransaction],
        chain_id: &str,
    ) -> Result<Self, StoreError> {
        let height = applied.header.height;
        let n = transactions.len();
        let mut block = Vec::with_capacity(4 + n * 256);
        layout::begin_block(n, &mut block);
        let mut tx_index = Vec::with_capacity(n);
        let mut history = Vec::with_capacity(n * 2);
        let mut replay = Vec::with_capacity(n);
        let mut addresses: Vec<Address> = Vec::new();
        for (i, (tx, expected)) in transactions.iter().zip(&applied.tx_ids).enumerate() {
            let id = layout::encode_tx_with_id(tx, chain_id, &mut block);
            if id != *expected {
                return Err(StoreError::InconsistentLedger("a transaction does not match its id"));
            }
            let at = TxLocation { height, index: i as u32 };
            tx_index.push((id, at));
            addresses.clear();
            addresses.extend(tx.tx.inputs.iter().chain(&tx.tx.outputs).map(|l| l.address));
            addresses.push(tx.tx.fee.payer);
            // Raw byte order, the order of the keys.
            addresses.sort_unstable_by_key(|a| *a.raw());
            addresses.dedup();
            history.extend(addresses.iter().map(|a| (at, *a, id)));
            let key = layout::replay_key(tx.tx.expiration_ms, &id)
                .ok_or(StoreError::InconsistentLedger("a transaction expires before 1970"))?;
            replay.push(key);
        }
        Ok(Self { block, tx_index, history, replay })
    }
}

/// The `meta` table, read and checked.
pub(crate) struct Meta {
    pub(crate) genesis: Genesis,
    pub(crate) head_height: u64,
    /// Height up to which the index tables are written.
    pub(crate) indexed_height: u64,
    /// The validator set certifying the ledger after the indexed height.
    pub(crate) validators: ValidatorSet,
}

pub(crate) fn read_meta(txn: &Transaction<'_, RO, NoWriteMap>, dir: &Path) -> Result<Meta, StoreError> {
    let t_meta = match txn.open_table(Some(META)) {
        Ok(t) => t,
        Err(libmdbx::Error::NotFound) => return Err(StoreError::NotAStore(dir.to_owned())),
        Err(e) => return Err(e.into()),
    };
    let version: u64 = get_value(txn, &t_meta, META, meta::SCHEMA_VERSION)?
        .ok_or_else(|| StoreError::NotAStore(dir.to_owned()))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion { found: version, expected: SCHEMA_VERSION });
    }
    let text = |key: &[u8]| -> Result<String, StoreError> {
        let bytes = txn
            .get::<Cow<'_, [u8]>>(&t_meta, key)?
            .ok_or_else(|| missing(META, format!("no {}", layout::hex(key))))?;
        String::from_utf8(bytes.into_owned()).map_err(|_| StoreError::Corrupt {
            table: META,
            why: format!("{} is not UTF-8", layout::hex(key)),
        })
    };
    let genesis_toml = text(meta::GENESIS)?;
    let chain_id = text(meta::CHAIN_ID)?;
    let genesis = Genesis::from_toml(&genesis_toml)?;
    if chain_id != genesis.params.chain_id {
        return Err(StoreError::Corrupt { table: META, why: "chain id differs from the genesis's".into() });
    }
    let head_height = read_head_height(txn, &t_meta)?;
    let indexed_height = get_value(txn, &t_meta, META, meta::INDEXED_HEIGHT)?
        .ok_or_else(|| missing(META, "no indexed height".into()))?;
    let validators = get_value(txn, &t_meta, META, meta::VALIDATORS)?
        .ok_or_else(|| missing(META, "no validator set".into()))?;
    Ok(Meta { genesis, head_height, indexed_height, validators })
}

/// The `head_height` of the `meta` table.
fn read_head_height<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
    t_meta: &libmdbx::Table<'_>,
) -> Result<u64, StoreError> {
    get_value(txn, t_meta, META, meta::HEAD_HEIGHT)?.ok_or_else(|| missing(META, "no head height".into()))
}

/// A value of `table` decoded with the engine codec.
fn get_value<K: libmdbx::TransactionKind, T: engine::Decode>(
    txn: &Transaction<'_, K, NoWriteMap>,
    table: &libmdbx::Table<'_>,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    txn.get::<Cow<'_, [u8]>>(table, key)?.map(|bytes| decode_value(name, key, &bytes)).transpose()
}

pub(crate) fn read_header<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
    height: u64,
) -> Result<Option<(LedgerHeader, Certificate)>, StoreError> {
    let table = txn.open_table(Some(HEADERS))?;
    let key = height_key(height);
    let Some(bytes) = txn.get::<Cow<'_, [u8]>>(&table, key)? else { return Ok(None) };
    let (header, certificate) =
        layout::decode_header(&bytes).map_err(|e| layout::decode_error(HEADERS, &key, e))?;
    if header.height != height {
        return Err(StoreError::Corrupt {
            table: HEADERS,
            why: format!("the header stored at {height} is of height {}", header.height),
        });
    }
    Ok(Some((header, certificate)))
}

pub(crate) fn read_block<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
    height: u64,
) -> Result<Option<Vec<SignedTransaction>>, StoreError> {
    let table = txn.open_table(Some(BLOCKS))?;
    let key = height_key(height);
    let Some(bytes) = txn.get::<Cow<'_, [u8]>>(&table, key)? else { return Ok(None) };
    layout::decode_block(&bytes).map(Some).map_err(|e| layout::decode_error(BLOCKS, &key, e))
}

/// The highest height stored in `table` (`headers` or `blocks`).
pub(crate) fn last_height<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
    name: &'static str,
) -> Result<Option<u64>, StoreError> {
    let table = txn.open_table(Some(name))?;
    let mut cursor = txn.cursor(&table)?;
    let Some((key, ())) = cursor.last::<Cow<'_, [u8]>, ()>()? else { return Ok(None) };
    let key = <[u8; 8]>::try_from(key.as_ref())
        .map_err(|_| StoreError::Corrupt { table: name, why: "a height key is not 8 bytes".into() })?;
    Ok(Some(u64::from_be_bytes(key)))
}

pub(crate) fn decode_account(key: &[u8], bytes: &[u8]) -> Result<Account, StoreError> {
    let account: Account = decode_value(ACCOUNTS, key, bytes)?;
    if account.address.raw().as_slice() != key {
        return Err(StoreError::Corrupt {
            table: ACCOUNTS,
            why: format!("the account stored at {} is {}", layout::hex(key), account.address),
        });
    }
    Ok(account)
}

pub(crate) fn read_accounts<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
) -> Result<Vec<Account>, StoreError> {
    let table = txn.open_table(Some(ACCOUNTS))?;
    let mut cursor = txn.cursor(&table)?;
    let mut accounts = Vec::with_capacity(txn.table_stat(&table)?.entries());
    for row in cursor.iter_start::<Cow<'_, [u8]>, Cow<'_, [u8]>>() {
        let (key, value) = row?;
        accounts.push(decode_account(&key, &value)?);
    }
    Ok(accounts)
}

pub(crate) fn read_replay<K: libmdbx::TransactionKind>(
    txn: &Transaction<'_, K, NoWriteMap>,
) -> Result<Vec<(TxId, i64)>, StoreError> {
    let table = txn.open_table(Some(REPLAY))?;
    let mut cursor = txn.cursor(&table)?;
    let mut out = Vec::new();
    for row in cursor.iter_start::<Cow<'_, [u8]>, ()>() {
        let (key, ()) = row?;
        let (expiration_ms, id) = layout::parse_replay_key(&key)?;
        out.push((id, expiration_ms));
    }
    Ok(out)
}

pub(crate) const fn missing(table: &'static str, why: String) -> StoreError {
    StoreError::Corrupt { table, why }
}

/// Adds one committed ledger's index rows to the gathered ones.
fn gather(
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
fn write_pending(
    txn: &Transaction<'_, libmdbx::RW, NoWriteMap>,
    pending: &Pending,
    height: u64,
) -> Result<(), StoreError> {
    let t_index = txn.open_table(Some(TX_INDEX))?;
    let mut rows: Vec<&(TxId, TxLocation)> = pending.tx_index.iter().flatten().collect();
    rows.sort_unstable_by_key(|(id, _)| *id);
    let mut cursor = txn.cursor(&t_index)?;
    for (id, at) in rows {
        // An id is unique in a valid chain: its expiration is part of it, and the replay window
        // covers every ledger before that expiration.
        match cursor.put(&id.0, &at.to_bytes(), WriteFlags::NO_OVERWRITE) {
            Err(libmdbx::Error::KeyExist) => {
                return Err(StoreError::InconsistentLedger("a transaction id is already indexed"));
            }
            other => other?,
        }
    }
    drop(cursor);

    let t_accounts = txn.open_table(Some(ACCOUNTS))?;
    let mut buf = Vec::with_capacity(128);
    let mut cursor = txn.cursor(&t_accounts)?;
    // The engine never removes an account, so every touched account has a value to write.
    for account in pending.latest_accounts() {
        buf.clear();
        account.encode(&mut buf);
        cursor.put(account.address.raw(), &buf, WriteFlags::UPSERT)?;
    }
    drop(cursor);

    write_history(txn, &pending.history)?;

    let t_replay = txn.open_table(Some(REPLAY))?;
    let now = pending.timestamp_ms;
    let mut cursor = txn.cursor(&t_replay)?;
    // Entries expired at the last gathered ledger's time can never reject a transaction again.
    while let Some((key, ())) = cursor.first::<Cow<'_, [u8]>, ()>()? {
        let (expiration_ms, _) = layout::parse_replay_key(&key)?;
        if expiration_ms > now {
            break;
        }
        cursor.del(WriteFlags::empty())?;
    }
    let mut replay: Vec<&[u8; layout::REPLAY_KEY_LEN]> = pending.replay.iter().collect();
    replay.sort_unstable();
    for key in replay {
        let (expiration_ms, _) = layout::parse_replay_key(key)?;
        if expiration_ms > now {
            cursor.put(key, &[], WriteFlags::UPSERT)?;
        }
    }
    drop(cursor);

    let t_meta = txn.open_table(Some(META))?;
    txn.put(&t_meta, meta::INDEXED_HEIGHT, height.to_bytes(), WriteFlags::UPSERT)?;
    if let Some(v) = &pending.validators {
        txn.put(&t_meta, meta::VALIDATORS, v.to_bytes(), WriteFlags::UPSERT)?;
    }
    Ok(())
}

/// Writes a batch of gathered rows in a write transaction of its own (the thread of
/// [`StoreOptions::index_in_background`]), making `height` the indexed height.
fn write_batch(env: &Env, pending: &Pending, height: u64) -> Result<(), StoreError> {
    let txn = env.begin_rw_txn()?;
    write_pending(&txn, pending, height)?;
    txn.commit()?;
    Ok(())
}

/// Appends gathered `history` rows (in chain order, above every stored one), each linked to the
/// address's previous entry, and moves each address's `history_heads` row to its newest entry.
/// Every row appends; only the heads — one per address, a table bounded by the accounts — are
/// written at random places.
fn write_history(
    txn: &Transaction<'_, libmdbx::RW, NoWriteMap>,
    rows: &[(TxLocation, Address, TxId)],
) -> Result<(), StoreError> {
    type Map<V> = std::collections::HashMap<Address, V, foldhash::fast::RandomState>;
    let mut newest: Map<TxLocation> = Map::default();
    let previous_in_batch: Vec<Option<TxLocation>> =
        rows.iter().map(|(at, address, _)| newest.insert(*address, *at)).collect();
    let mut heads: Vec<(Address, TxLocation)> = newest.into_iter().collect();
    heads.sort_unstable_by_key(|(a, _)| *a.raw());
    let mut stored_heads: Map<TxLocation> = Map::default();
    let t_heads = txn.open_table(Some(HISTORY_HEADS))?;
    let mut cursor = txn.cursor(&t_heads)?;
    for (address, at) in &heads {
        if let Some(v) = cursor.set::<Cow<'_, [u8]>>(address.raw())? {
            stored_heads.insert(*address, TxLocation::from_bytes(&v, HISTORY_HEADS)?);
        }
        cursor.put(address.raw(), &at.to_bytes(), WriteFlags::UPSERT)?;
    }
    drop(cursor);
    let t_history = txn.open_table(Some(HISTORY))?;
    let mut cursor = txn.cursor(&t_history)?;
    for ((at, address, id), previous) in rows.iter().zip(previous_in_batch) {
        let previous = previous.or_else(|| stored_heads.get(address).copied());
        let value = HistoryValue { id: *id, previous };
        match cursor.put(&layout::history_key(*at, address), &value.to_bytes(), WriteFlags::APPEND) {
            Err(libmdbx::Error::KeyMismatch) => {
                return Err(StoreError::Corrupt {
                    table: HISTORY,
                    why: format!("a row at {at:?} is not above the stored ones"),
                });
            }
            other => other?,
        }
    }
    Ok(())
}
