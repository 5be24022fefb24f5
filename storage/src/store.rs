//! The MDBX store: one environment in a directory, one write transaction per ledger. Here: the
//! environment, `create` and `open`, and the store's reads (the write path is in `commit.rs`,
//! the readers in `reader.rs`).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    thread::JoinHandle,
};

use engine::{
    Address, Backend,
    account::Account,
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader},
    state::{Applied, Block, State, apply_block},
    tx::{SignedTransaction, TxId},
};
use libmdbx::{
    Database, DatabaseOptions, Mode, NoWriteMap, ReadWriteOptions, SyncMode, TableFlags, WriteFlags,
};

pub(crate) use crate::commit::LedgerRows;
use crate::{
    StoreError, StoreReader,
    commit::gather,
    layout::{
        Accounts, Blocks, EncodedBlock, Headers, History, HistoryHeads, Meta, MetaField, MetaKey,
        SCHEMA_VERSION, TABLES, TxIndex, TxLocation, meta,
    },
    pending::{IndexBatch, Pending},
    reader::{self, Gathered, missing},
    table::{Table, Txn, open},
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
pub(crate) const DATA_FILE: &str = "mdbx.dat";

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
    /// Keep neither the transaction index nor the account history (`tx_index`, `history`,
    /// `history_heads`: only the explorer's API queries them) — a validator's or a node's store.
    /// At open, a store that kept them drops them (their pages are reused); a store made
    /// without them cannot be opened with them ([`StoreError::NoQueryIndexes`]): they would
    /// lack every ledger before.
    pub without_query_indexes: bool,
    /// Bytes of the filter in front of the replay table, or 0 to keep the replay window in
    /// memory. With a filter, the state the store returns keeps in memory only the ids of the
    /// ledgers above the indexed height; the rest are in the table, behind the filter
    /// ([`State::attach_replay_store`]; the host calls [`State::spill_replay`] after each
    /// commit). The window's memory then stays within the filter's bytes whatever the rate,
    /// and a lookup the filter cannot rule out reads the table.
    pub replay_filter_bytes: usize,
    /// Keep only the last ledgers ([`crate::Retention`]): the headers and blocks below are deleted a
    /// few at each commit (`None`: every ledger is kept). Needs
    /// [`StoreOptions::without_query_indexes`] (the indexes would name deleted blocks).
    pub retention: Option<crate::Retention>,
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
    /// The environment, and the readers the store shares with its [`StoreReader`]s.
    pub(crate) reader: StoreReader,
    dir: PathBuf,
    pub(crate) chain_id: String,
    pub(crate) options: StoreOptions,
    /// Index rows of the ledgers after the indexed height (and after the batch being written).
    pub(crate) pending: Pending,
    /// The batch a thread is writing ([`StoreOptions::index_in_background`]).
    pub(crate) writing: Option<BatchWrite>,
    /// When the next batch is due if not at [`StoreOptions::index_batch`]
    /// ([`Store::stagger_index_batch`]).
    pub(crate) next_batch: Option<IndexBatch>,
    /// A commit failed after its rows were gathered: the gathered rows may be ahead of the
    /// tables, so nothing more is written until the store is reopened.
    pub(crate) failed: bool,
    /// The lowest height above 0 whose ledger is kept, as the last commit left it.
    pub(crate) first_kept: u64,
}

/// A batch of index rows being written by a thread of its own.
pub(crate) struct BatchWrite {
    /// The rows, read like the gathered ones until the tables hold them.
    pub(crate) rows: Arc<Pending>,
    /// The indexed height once written.
    pub(crate) height: u64,
    pub(crate) thread: JoinHandle<Result<(), StoreError>>,
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

/// Creates (if missing) the tables added after schema version 4's first stores, which are not
/// in [`TABLES`]: the evidence tables and `set_changes`.
pub(crate) fn create_later_tables(
    txn: &libmdbx::Transaction<'_, libmdbx::RW, NoWriteMap>,
) -> Result<(), StoreError> {
    crate::evidence::create_tables(txn)?;
    crate::snapshot::create_tables(txn)
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
        if options.retention.is_some() && !options.without_query_indexes {
            return Err(StoreError::RetentionWithQueryIndexes);
        }
        let genesis = Genesis::from_toml(genesis_toml)?;
        let state = State::from_genesis(&genesis);
        std::fs::create_dir_all(dir)?;
        let env = open_env(dir, Some(options.durability))?;
        {
            let txn = env.begin_rw_txn()?;
            for name in TABLES {
                txn.create_table(Some(name), TableFlags::default())?;
            }
            create_later_tables(&txn)?;
            let t_meta = open::<Meta, _>(&txn)?;
            if t_meta.contains(&MetaKey(<meta::SchemaVersion as MetaField>::KEY))? {
                return Err(StoreError::AlreadyExists(dir.to_owned()));
            }
            let flags = WriteFlags::empty();
            t_meta.put_field::<meta::SchemaVersion>(&SCHEMA_VERSION, flags)?;
            t_meta.put_field::<meta::ChainId>(&genesis.params.chain_id, flags)?;
            t_meta.put_field::<meta::Genesis>(genesis_toml, flags)?;
            t_meta.put_field::<meta::HeadHeight>(&0, flags)?;
            t_meta.put_field::<meta::IndexedHeight>(&0, flags)?;
            t_meta.put_field::<meta::Validators>(state.validators(), flags)?;
            // Written only when they are not kept: a store that keeps them holds the bytes of
            // schema version 4 exactly (format_tests.rs), as before the field existed.
            if options.without_query_indexes {
                t_meta.put_field::<meta::QueryIndexes>(&0, flags)?;
            }
            let mut buf = Vec::new();
            let genesis_header = (state.head(), &Certificate::default());
            open::<Headers, _>(&txn)?.put(&0, genesis_header, WriteFlags::APPEND, &mut buf)?;
            let block = EncodedBlock::new(0, 4);
            open::<Blocks, _>(&txn)?.put(&0, &block, WriteFlags::APPEND, &mut buf)?;
            let mut accounts: Vec<&Account> = state.accounts().collect();
            accounts.sort_unstable_by_key(|a| a.address);
            let t_accounts = open::<Accounts, _>(&txn)?;
            for a in accounts {
                t_accounts.put(&a.address, a, WriteFlags::APPEND, &mut buf)?;
            }
            txn.commit()?;
        }
        let env = Arc::new(env);
        let mut state = state;
        if options.replay_filter_bytes > 0 {
            let table = crate::replay::ReplayTable::new(&env);
            state.attach_replay_store(Arc::new(table), options.replay_filter_bytes, []);
        }
        let store = Self::new(env, dir, genesis.params.chain_id, options, Pending::default());
        Ok((store, state))
    }

    fn new(env: Arc<Env>, dir: &Path, chain_id: String, options: StoreOptions, pending: Pending) -> Self {
        Self {
            reader: StoreReader::new(env),
            dir: dir.to_owned(),
            chain_id,
            options,
            pending,
            writing: None,
            next_batch: None,
            failed: false,
            first_kept: 1,
        }
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
        if options.retention.is_some() && !options.without_query_indexes {
            return Err(StoreError::RetentionWithQueryIndexes);
        }
        require_env(dir)?;
        let env = open_env(dir, Some(options.durability))?;
        {
            // A store made before them gains them (empty).
            let txn = env.begin_rw_txn()?;
            create_later_tables(&txn)?;
            txn.commit()?;
        }
        let kept = reader::read_meta(&env.begin_ro_txn()?, dir)?.query_indexes;
        if !kept && !options.without_query_indexes {
            return Err(StoreError::NoQueryIndexes(dir.to_owned()));
        }
        if kept && options.without_query_indexes {
            drop_query_indexes(&env)?;
        }
        let env = Arc::new(env);
        let (chain_id, state, pending) =
            restore(&env, &env.begin_ro_txn()?, dir, options.replay_filter_bytes)?;
        let mut store = Self::new(env, dir, chain_id, options, pending);
        store.first_kept = store.reader.first_kept()?;
        Ok((store, state))
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lowest height above 0 whose ledger the store keeps, as its last commit left it (no
    /// read: [`StoreReader::first_kept`] reads it from another thread).
    pub const fn first_kept(&self) -> u64 {
        self.first_kept
    }

    /// The chain id of the stored genesis.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// A reader of this store for other threads: it sees what the tables hold — every ledger's
    /// header and block at once, the index rows (accounts, transaction index, history) up to
    /// [`Store::indexed_height`], which is the head with [`IndexBatch::EVERY_LEDGER`].
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    pub(crate) fn env(&self) -> &Env {
        self.reader.env()
    }

    /// The index rows not in the tables yet, which the store's reads consult first.
    fn gathered(&self) -> Gathered<'_> {
        Gathered {
            pending: Some(&self.pending),
            writing: self.writing.as_ref().map(|w| (&*w.rows, w.height)),
        }
    }

    /// Height up to which the index tables (accounts, transaction index, history, replay) are
    /// written; the store's readers also see the rows gathered after it.
    pub fn indexed_height(&self) -> Result<u64, StoreError> {
        self.reader.indexed_height()
    }

    /// The header of the last committed ledger.
    pub fn head(&self) -> Result<LedgerHeader, StoreError> {
        self.reader.head()
    }

    /// The header and certificate of ledger `height`, if committed.
    pub fn header(&self, height: u64) -> Result<Option<(LedgerHeader, Certificate)>, StoreError> {
        self.reader.header(height)
    }

    /// The transactions of ledger `height`, in block order, if committed.
    pub fn block(&self, height: u64) -> Result<Option<Vec<SignedTransaction>>, StoreError> {
        self.reader.block(height)
    }

    /// Where transaction `id` was included, if it was.
    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        self.reader.tx_location_with(self.gathered(), id)
    }

    /// The stored state of `address`, if it exists.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StoreError> {
        self.reader.account_with(self.gathered(), address)
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
        self.reader.history_with(self.gathered(), address, before, limit)
    }
}

/// Empties `tx_index`, `history` and `history_heads` and records that they are not kept, in one
/// write transaction (their pages go to the free list, reused before the file grows).
fn drop_query_indexes(env: &Env) -> Result<(), StoreError> {
    let txn = env.begin_rw_txn()?;
    for name in [TxIndex::NAME, History::NAME, HistoryHeads::NAME] {
        let table = txn.open_table(Some(name))?;
        txn.clear_table(&table)?;
    }
    open::<Meta, _>(&txn)?.put_field::<meta::QueryIndexes>(&0, WriteFlags::UPSERT)?;
    txn.commit()?;
    Ok(())
}

/// Rebuilds the state at the head from a store's tables: the state as of the indexed height,
/// checked against its header, then the blocks above it re-executed (see [`Store::open_with`]).
/// Returns the chain id, the state and the re-gathered index rows.
pub(crate) fn restore<K: libmdbx::TransactionKind>(
    env: &Arc<Env>,
    txn: &Txn<'_, K>,
    dir: &Path,
    replay_filter_bytes: usize,
) -> Result<(String, State, Pending), StoreError> {
    let m = reader::read_meta(txn, dir)?;
    if m.indexed_height > m.head_height {
        return Err(StoreError::Corrupt {
            table: Meta::NAME,
            why: format!("indexed height {} is above the head {}", m.indexed_height, m.head_height),
        });
    }
    for (table, last) in [
        (Headers::NAME, reader::last_height::<Headers, K>(txn)?),
        (Blocks::NAME, reader::last_height::<Blocks, K>(txn)?),
    ] {
        if last != Some(m.head_height) {
            return Err(StoreError::Corrupt {
                table,
                why: format!("the last height is {last:?}, the head is {}", m.head_height),
            });
        }
    }
    let base = reader::header(txn, m.indexed_height)?
        .ok_or_else(|| {
            missing(Headers::NAME, format!("no header at the indexed height {}", m.indexed_height))
        })?
        .0;
    let chain_id = m.genesis.params.chain_id.clone();
    // With a filter, the replay window stays in its table (attached below).
    let replay = if replay_filter_bytes > 0 { Vec::new() } else { reader::replay(txn)? };
    let (params, validators) = (m.genesis.params, m.validators);
    let mut state =
        reader::with_accounts(txn, |accounts| State::restore(params, validators, base, accounts, replay))??;
    if replay_filter_bytes > 0 {
        crate::replay::attach(&mut state, env, txn, replay_filter_bytes)?;
    }
    let mut pending = Pending::default();
    for height in m.indexed_height + 1..=m.head_height {
        let (stored, _) = reader::header(txn, height)?
            .ok_or_else(|| missing(Headers::NAME, format!("no header at {height}")))?;
        let transactions = reader::block(txn, height)?
            .ok_or_else(|| missing(Blocks::NAME, format!("no block at {height}")))?;
        let block = Block { height, timestamp_ms: stored.timestamp_ms, transactions };
        let applied =
            apply_block(&mut state, &block, Backend::Libsecp256k1).map_err(|e| StoreError::Corrupt {
                table: Blocks::NAME,
                why: format!("ledger {height} does not re-execute: {e}"),
            })?;
        if applied.header != stored {
            return Err(StoreError::Corrupt {
                table: Headers::NAME,
                why: format!("ledger {height} re-executes to another header than the stored one"),
            });
        }
        let rows = LedgerRows::new(&applied, &block.transactions, &chain_id, m.query_indexes)?;
        let accounts: Vec<Account> =
            applied.touched.iter().filter_map(|a| state.account(a).cloned()).collect();
        gather(&mut pending, &applied, rows, accounts, state.validators());
    }
    Ok((chain_id, state, pending))
}
