//! The readers of the store, written once: functions over any transaction (the writer's commit
//! reads the head in its write transaction, `open` and `verify` in a read one), and
//! [`StoreReader`], whose methods take the index rows the tables do not hold yet
//! ([`Gathered`]): none for a reader of the tables, a [`crate::Store`]'s own for the store.

use std::{fmt, path::Path, sync::Arc};

use engine::{
    Address,
    account::Account,
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    tx::{SignedTransaction, TxId},
};
use libmdbx::TransactionKind;

use crate::{
    StoreError, TxLocation,
    history::read_history,
    layout::{Accounts, Blocks, Headers, Meta, Replay, SCHEMA_VERSION, TxIndex, hex, meta},
    pending::Pending,
    store::{Env, HISTORY_PAGE_MAX, HistoryEntry},
    table::{Table, TableRef, Txn, get, get_meta, open},
};

/// Index rows not yet in the tables, which a read consults before them: the rows a store
/// gathered, and the batch its thread is writing with the indexed height it brings.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gathered<'a> {
    pub(crate) pending: Option<&'a Pending>,
    pub(crate) writing: Option<(&'a Pending, u64)>,
}

impl Gathered<'_> {
    fn tx_location(&self, id: &TxId) -> Option<TxLocation> {
        self.pending.and_then(|p| p.tx_location(id)).or_else(|| self.writing?.0.tx_location(id))
    }

    fn account(&self, address: &Address) -> Option<&Account> {
        self.pending.and_then(|p| p.account(address)).or_else(|| self.writing?.0.account(address))
    }
}

/// What a store takes on disk ([`StoreReader::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSpace {
    /// The data file's size (it grows and shrinks by [`crate::GROWTH_STEP_BYTES`]).
    pub file_bytes: u64,
    /// The bytes of it in use: pages allocated and not free for reuse.
    pub used_bytes: u64,
    /// Free pages, bytes: reused by later writes before the file grows.
    pub free_bytes: u64,
}

/// Reads a store from any thread while its [`crate::Store`] commits (MDBX readers never block
/// the writer). Cheap to clone. Sees the tables only: see [`crate::Store::reader`].
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
    pub(crate) const fn new(env: Arc<Env>) -> Self {
        Self { env }
    }

    pub(crate) fn env(&self) -> &Env {
        &self.env
    }

    pub(crate) const fn env_arc(&self) -> &Arc<Env> {
        &self.env
    }

    /// The data file's size and the bytes of it in use (pages up to the last one allocated,
    /// less those free for reuse): what the store takes on disk, and what its contents need.
    pub fn space(&self) -> Result<StoreSpace, StoreError> {
        let info = self.env.info()?;
        let page = self.env.stat()?.page_size() as u64;
        let allocated = (info.last_pgno() as u64 + 1) * page;
        let free = self.env.freelist()? as u64 * page;
        Ok(StoreSpace {
            file_bytes: info.geometry().current_size(),
            used_bytes: allocated.saturating_sub(free),
            free_bytes: free,
        })
    }

    /// Height of the last committed ledger.
    pub fn head_height(&self) -> Result<u64, StoreError> {
        head_height(&self.env.begin_ro_txn()?)
    }

    /// The lowest height above 0 whose ledger (header, certificate, block) the store keeps: 1
    /// unless it prunes ([`crate::Retention`]); genesis's is always kept.
    pub fn first_kept(&self) -> Result<u64, StoreError> {
        Ok(get_meta::<meta::FirstKept, _>(&self.env.begin_ro_txn()?)?.unwrap_or(1))
    }

    /// Height up to which the index tables are written.
    pub fn indexed_height(&self) -> Result<u64, StoreError> {
        indexed_height(&self.env.begin_ro_txn()?)
    }

    /// The header of the last committed ledger.
    pub(crate) fn head(&self) -> Result<LedgerHeader, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        let height = head_height(&txn)?;
        Ok(header(&txn, height)?
            .ok_or_else(|| missing(Headers::NAME, format!("no header at the head height {height}")))?
            .0)
    }

    /// The header and certificate of ledger `height`, if committed.
    pub fn header(&self, height: u64) -> Result<Option<(LedgerHeader, Certificate)>, StoreError> {
        header(&self.env.begin_ro_txn()?, height)
    }

    /// The genesis text the store was made from.
    pub fn genesis_toml(&self) -> Result<String, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        open::<Meta, _>(&txn)?
            .field::<meta::Genesis>()?
            .ok_or_else(|| missing(Meta::NAME, "no genesis".into()))
    }

    /// The transactions of ledger `height`, in block order, if committed.
    pub fn block(&self, height: u64) -> Result<Option<Vec<SignedTransaction>>, StoreError> {
        block(&self.env.begin_ro_txn()?, height)
    }

    /// Where transaction `id` was included, if it was (and is indexed).
    pub fn tx_location(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        self.tx_location_with(Gathered::default(), id)
    }

    pub(crate) fn tx_location_with(
        &self,
        gathered: Gathered<'_>,
        id: &TxId,
    ) -> Result<Option<TxLocation>, StoreError> {
        match gathered.tx_location(id) {
            Some(at) => Ok(Some(at)),
            None => get::<TxIndex, _>(&self.env.begin_ro_txn()?, id),
        }
    }

    /// The indexed state of `address`, if it exists.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StoreError> {
        self.account_with(Gathered::default(), address)
    }

    pub(crate) fn account_with(
        &self,
        gathered: Gathered<'_>,
        address: &Address,
    ) -> Result<Option<Account>, StoreError> {
        match gathered.account(address) {
            Some(a) => Ok(Some(a.clone())),
            None => account(&self.env.begin_ro_txn()?, address),
        }
    }

    /// As [`crate::Store::history`], over the indexed ledgers.
    pub fn history(
        &self,
        address: &Address,
        before: Option<TxLocation>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_with(Gathered::default(), address, before, limit)
    }

    pub(crate) fn history_with(
        &self,
        gathered: Gathered<'_>,
        address: &Address,
        before: Option<TxLocation>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let limit = limit.min(HISTORY_PAGE_MAX);
        let txn = self.env.begin_ro_txn()?;
        // The batch being written, until this reading's snapshot of the tables holds it.
        let writing = match gathered.writing {
            Some((rows, height)) if indexed_height(&txn)? < height => Some(rows),
            _ => None,
        };
        // Gathered rows are of ledgers above every indexed one: they come first.
        let mut out: Vec<HistoryEntry> = gathered
            .pending
            .into_iter()
            .chain(writing)
            .flat_map(|rows| rows.history_of(address, before))
            .take(limit)
            .map(|(location, id)| HistoryEntry { location, id })
            .collect();
        if out.len() < limit {
            read_history(&txn, address, before, limit, &mut out)?;
        }
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
        let Some((header, certificate)) = header(&txn, height)? else { return Ok(None) };
        let block = block(&txn, height)?.ok_or_else(|| StoreError::Corrupt {
            table: Blocks::NAME,
            why: format!("ledger {height} has a header but no block"),
        })?;
        Ok(Some((header, certificate, block)))
    }

    fn timestamp_ms(&self, height: u64) -> Result<Option<i64>, StoreError> {
        Ok(self.header(height)?.map(|(header, _)| header.timestamp_ms))
    }
}

/// The `meta` table, read and checked.
pub(crate) struct StoredMeta {
    pub(crate) genesis: Genesis,
    pub(crate) head_height: u64,
    /// Height up to which the index tables are written.
    pub(crate) indexed_height: u64,
    /// The validator set certifying the ledger after the indexed height.
    pub(crate) validators: ValidatorSet,
    /// Whether the transaction index and the account history are kept.
    pub(crate) query_indexes: bool,
    /// The lowest height above 0 whose ledger is kept (1: nothing pruned).
    pub(crate) first_kept: u64,
}

pub(crate) fn read_meta<K: TransactionKind>(txn: &Txn<'_, K>, dir: &Path) -> Result<StoredMeta, StoreError> {
    let t_meta = match open::<Meta, K>(txn) {
        Ok(t) => t,
        Err(StoreError::Mdbx(libmdbx::Error::NotFound)) => return Err(StoreError::NotAStore(dir.to_owned())),
        Err(e) => return Err(e),
    };
    let version =
        t_meta.field::<meta::SchemaVersion>()?.ok_or_else(|| StoreError::NotAStore(dir.to_owned()))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion { found: version, expected: SCHEMA_VERSION });
    }
    let genesis_toml =
        t_meta.field::<meta::Genesis>()?.ok_or_else(|| missing(Meta::NAME, "no genesis".into()))?;
    let chain_id =
        t_meta.field::<meta::ChainId>()?.ok_or_else(|| missing(Meta::NAME, "no chain_id".into()))?;
    let genesis = Genesis::from_toml(&genesis_toml)?;
    if chain_id != genesis.params.chain_id {
        return Err(StoreError::Corrupt {
            table: Meta::NAME,
            why: "chain id differs from the genesis's".into(),
        });
    }
    let head_height = head_height_in(&t_meta)?;
    let indexed_height = indexed_height(txn)?;
    let validators =
        t_meta.field::<meta::Validators>()?.ok_or_else(|| missing(Meta::NAME, "no validator set".into()))?;
    let query_indexes = t_meta.field::<meta::QueryIndexes>()?.is_none_or(|kept| kept != 0);
    let first_kept = t_meta.field::<meta::FirstKept>()?.unwrap_or(1);
    if first_kept == 0 || first_kept > indexed_height.max(1) {
        return Err(StoreError::Corrupt {
            table: Meta::NAME,
            why: format!("the first kept height {first_kept} is not within 1..={}", indexed_height.max(1)),
        });
    }
    Ok(StoredMeta { genesis, head_height, indexed_height, validators, query_indexes, first_kept })
}

/// The head height in `txn`'s snapshot.
pub(crate) fn head_height<K: TransactionKind>(txn: &Txn<'_, K>) -> Result<u64, StoreError> {
    head_height_in(&open::<Meta, K>(txn)?)
}

/// The head height, from `meta` already open.
pub(crate) fn head_height_in<K: TransactionKind>(
    t_meta: &TableRef<'_, '_, Meta, K>,
) -> Result<u64, StoreError> {
    t_meta.field::<meta::HeadHeight>()?.ok_or_else(|| missing(Meta::NAME, "no head height".into()))
}

/// The indexed height in `txn`'s snapshot.
pub(crate) fn indexed_height<K: TransactionKind>(txn: &Txn<'_, K>) -> Result<u64, StoreError> {
    get_meta::<meta::IndexedHeight, K>(txn)?.ok_or_else(|| missing(Meta::NAME, "no indexed height".into()))
}

pub(crate) fn header<K: TransactionKind>(
    txn: &Txn<'_, K>,
    height: u64,
) -> Result<Option<(LedgerHeader, Certificate)>, StoreError> {
    let Some((header, certificate)) = get::<Headers, K>(txn, &height)? else { return Ok(None) };
    if header.height != height {
        return Err(StoreError::Corrupt {
            table: Headers::NAME,
            why: format!("the header stored at {height} is of height {}", header.height),
        });
    }
    Ok(Some((header, certificate)))
}

pub(crate) fn block<K: TransactionKind>(
    txn: &Txn<'_, K>,
    height: u64,
) -> Result<Option<Vec<SignedTransaction>>, StoreError> {
    get::<Blocks, K>(txn, &height)
}

/// The highest height stored in `T` (`headers` or `blocks`).
pub(crate) fn last_height<T: Table<Key = u64>, K: TransactionKind>(
    txn: &Txn<'_, K>,
) -> Result<Option<u64>, StoreError> {
    open::<T, K>(txn)?.last_key()
}

/// The account stored at `key`, checked to be of that address.
pub(crate) fn check_account(key: &Address, account: Account) -> Result<Account, StoreError> {
    if account.address != *key {
        return Err(StoreError::Corrupt {
            table: Accounts::NAME,
            why: format!("the account stored at {} is {}", hex(key.raw()), account.address),
        });
    }
    Ok(account)
}

pub(crate) fn account<K: TransactionKind>(
    txn: &Txn<'_, K>,
    address: &Address,
) -> Result<Option<Account>, StoreError> {
    get::<Accounts, K>(txn, address)?.map(|a| check_account(address, a)).transpose()
}

/// Calls `with` on every stored account, in address order, as read (none held in between: at a
/// million accounts a vector of them all was 88 MB more to touch at every open). The iterator
/// tells its length, so a map built from it is sized once. A row that does not read stops the
/// iteration, and its error is returned after `with`.
pub(crate) fn with_accounts<K: TransactionKind, T>(
    txn: &Txn<'_, K>,
    with: impl FnOnce(&mut dyn Iterator<Item = Account>) -> T,
) -> Result<T, StoreError> {
    /// Rows as accounts, the first failure kept aside.
    struct Rows<'e, I> {
        rows: I,
        left: usize,
        failed: &'e mut Option<StoreError>,
    }
    impl<I: Iterator<Item = Result<(Address, Account), StoreError>>> Iterator for Rows<'_, I> {
        type Item = Account;
        fn next(&mut self) -> Option<Account> {
            match self.rows.next()?.and_then(|(address, account)| check_account(&address, account)) {
                Ok(account) => {
                    self.left = self.left.saturating_sub(1);
                    Some(account)
                }
                Err(e) => {
                    *self.failed = Some(e);
                    None
                }
            }
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (self.left, Some(self.left))
        }
    }
    let table = open::<Accounts, K>(txn)?;
    let left = table.entries()?;
    let mut cursor = table.cursor()?;
    let mut failed = None;
    let out = with(&mut Rows { rows: cursor.rows(None), left, failed: &mut failed });
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The replay window: (id, expiration).
pub(crate) fn replay<K: TransactionKind>(txn: &Txn<'_, K>) -> Result<Vec<(TxId, i64)>, StoreError> {
    let mut out = Vec::new();
    for row in open::<Replay, K>(txn)?.cursor()?.rows(None) {
        let (key, ()) = row?;
        out.push((key.id, key.expiration_ms));
    }
    Ok(out)
}

pub(crate) const fn missing(table: &'static str, why: String) -> StoreError {
    StoreError::Corrupt { table, why }
}
