//! Index rows of committed ledgers not yet written to their tables.
//!
//! Every ledger's header, block and head pointer are written by its own commit. The rows that
//! land at random places in large tables — accounts, transaction index, history, replay window —
//! are gathered here and written together every few ledgers ([`IndexBatch`]): each table's
//! B-tree pages are then copied once per batch instead of once per ledger, and an account
//! touched by several ledgers of a batch is written once. Readers see these rows through the
//! [`crate::Store`] (which consults them before its tables), and a crash loses nothing: the
//! blocks after the last indexed height are on disk, and opening the store re-executes them.

use engine::{Address, account::Account, ledger::ValidatorSet, tx::TxId};

use crate::layout::{ReplayKey, TxLocation};

/// When the gathered index rows are written: at the first ledger commit that brings the batch to
/// `txs` transactions or `ledgers` ledgers. `ledgers = 1` writes every ledger's rows with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexBatch {
    /// Transactions gathered before a write (bounds the memory of the gathered rows and the
    /// blocks a restart re-executes).
    pub txs: usize,
    /// Ledgers gathered before a write (bounds how stale the tables alone are for an outside
    /// reader, and the restart's work on a quiet chain).
    pub ledgers: u64,
}

impl IndexBatch {
    /// Index rows written with every ledger.
    pub const EVERY_LEDGER: Self = Self { txs: 1, ledgers: 1 };

    /// The batch of a validator's or node's store holding `accounts` accounts: the default up
    /// to 1.25M accounts, then one transaction per 25 accounts, at most 500,000. A batch writes
    /// each account it changed once, in key order, but a B-tree page is written whole: at 10M
    /// accounts (~250,000 leaf pages) a batch of 50,000 transfers (~100,000 accounts) rewrote
    /// ~80 % of them as many pages, ~3.4 KB per account; one of 400,000 writes ~1.2 KB per
    /// account (`bench pipeline --accounts 10000000`, docs/PERFORMANCE.md). A restart then
    /// executes up to that many transactions again (~5 s at 400,000 here) and the gathered rows
    /// swing the memory by up to ~8 % of what the state itself takes.
    pub fn for_accounts(accounts: usize) -> Self {
        Self { txs: (accounts / 25).clamp(50_000, 500_000), ledgers: 64 }
    }
}

impl Default for IndexBatch {
    /// 50,000 transactions or 64 ledgers: at 10,000-transfer ledgers, a write per 5 ledgers,
    /// and a restart re-verifies at most ~50,000 signatures. The gathered rows and the replay
    /// ids not yet in the table make a validator's memory swing by up to a batch's worth (~24
    /// MiB of live heap at 100,000); stores without the query indexes (validators, since the
    /// batch is written on a thread of its own) showed no cost in `bench pipeline` from 100,000
    /// to 50,000 (docs/PERFORMANCE.md). With the query indexes, in the commit, it was measured
    /// at 1M transfers: 9.2 µs/tx with 50,000, 5.3 with 200,000 — explorers index every ledger.
    fn default() -> Self {
        Self { txs: 50_000, ledgers: 64 }
    }
}

/// The rows of the `ledgers` ledgers committed since the index tables were last written.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) ledgers: u64,
    pub(crate) txs: usize,
    /// Per gathered ledger, the new value of each account it touched, sorted by address.
    pub(crate) accounts: Vec<Vec<Account>>,
    /// Per gathered ledger, its `tx_index` rows sorted by id.
    pub(crate) tx_index: Vec<Vec<(TxId, TxLocation)>>,
    /// In chain order (location, then address): the order of the table's keys.
    pub(crate) history: Vec<(TxLocation, Address, TxId)>,
    /// Unsorted; sorted when written.
    pub(crate) replay: Vec<ReplayKey>,
    /// The validator set certifying the ledger after the last gathered one.
    pub(crate) validators: Option<ValidatorSet>,
    /// Timestamp of the last gathered ledger: replay entries expired at it are dropped when the
    /// batch is written.
    pub(crate) timestamp_ms: i64,
}

impl Pending {
    pub(crate) fn is_due(&self, batch: IndexBatch) -> bool {
        self.ledgers > 0 && (self.ledgers >= batch.ledgers.max(1) || self.txs >= batch.txs.max(1))
    }

    /// Where transaction `id` sits, if a gathered ledger holds it.
    pub(crate) fn tx_location(&self, id: &TxId) -> Option<TxLocation> {
        self.tx_index.iter().find_map(|rows| {
            rows.binary_search_by_key(id, |(i, _)| *i).ok().and_then(|k| rows.get(k)).map(|(_, at)| *at)
        })
    }

    /// The latest gathered value of `address`, if a gathered ledger touched it.
    pub(crate) fn account(&self, address: &Address) -> Option<&Account> {
        self.accounts.iter().rev().find_map(|accounts| {
            accounts.binary_search_by_key(address, |a| a.address).ok().and_then(|k| accounts.get(k))
        })
    }

    /// The latest value of every gathered account, sorted by address, each once.
    pub(crate) fn latest_accounts(&self) -> Vec<&Account> {
        // A stable sort keeps ledger order among equal addresses: the last of a run is the latest.
        let mut all: Vec<&Account> = self.accounts.iter().flatten().collect();
        all.sort_by_key(|a| a.address);
        let mut latest: Vec<&Account> = Vec::with_capacity(all.len());
        for a in all {
            match latest.last_mut() {
                Some(last) if last.address == a.address => *last = a,
                _ => latest.push(a),
            }
        }
        latest
    }

    /// History rows of `address` located before `before` (all when `None`), newest first.
    pub(crate) fn history_of<'a>(
        &'a self,
        address: &'a Address,
        before: Option<TxLocation>,
    ) -> impl Iterator<Item = (TxLocation, TxId)> + 'a {
        self.history
            .iter()
            .rev()
            .filter(move |(at, a, _)| a == address && before.is_none_or(|b| *at < b))
            .map(|(at, _, id)| (*at, *id))
    }
}
