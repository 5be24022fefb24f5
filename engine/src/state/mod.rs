//! The ledger state and its deterministic transition: `state(h) + block(h+1) = state(h+1)`.
//!
//! A block is applied by a [`BlockExecution`]: each transaction is checked in full against the
//! state as left by the transactions before it, then applied — all or nothing per transaction.
//! The execution journals the first value of every account it touches, so dropping it without
//! [`BlockExecution::finish`] restores the state exactly (an invalid proposal leaves no trace),
//! and `finish` rehashes only those accounts into the state trie, in parallel.
//!
//! The parts: `block` applies whole blocks (strictly, or building one as a leader does),
//! `execution` is the [`BlockExecution`] with its journal, `check` holds the stateful rules of
//! one transaction, `diff` the [`StateDiff`] a sealed execution leaves, `replay` the set of
//! recent transaction ids, and `accounts` the table of accounts found by their own address.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::{
    account::Account,
    address::Address,
    currency::Currency,
    genesis::{ChainParams, Genesis},
    hash::Hash,
    ledger::{LEDGER_VERSION, LedgerHeader, ValidatorSet},
    limits::BLOCK_TXS_MAX,
    merkle::{StateProof, StateTrie, tx_root},
    tx::TxId,
    validate::{TxError, VerifiedTx},
};

mod accounts;
mod block;
mod check;
mod diff;
mod execution;
mod filter;
mod replay;

use self::{accounts::Accounts, check::check_tx, replay::ReplaySet};
pub use self::{
    block::{
        Block, apply_block, apply_verified, build_block, execute_build, execute_build_ahead,
        execute_verified, execute_verified_ahead,
    },
    diff::{DiffBaseError, StateDiff},
    execution::BlockExecution,
};

/// Why a block cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockError {
    /// Not the next height.
    #[error("block height {got} does not follow {head}")]
    Height {
        /// Current head height.
        head: u64,
        /// Block height.
        got: u64,
    },
    /// Timestamp not after the previous ledger's.
    #[error("block timestamp {got} is not after the previous ledger's {previous}")]
    Timestamp {
        /// Previous ledger time.
        previous: i64,
        /// Block time.
        got: i64,
    },
    /// More transactions than a block may hold.
    #[error("block holds {0} transactions, over the limit of {BLOCK_TXS_MAX}")]
    TooManyTransactions(usize),
    /// A transaction of the block is invalid at its position.
    #[error("transaction {index} is invalid: {error}")]
    InvalidTx {
        /// Position in the block.
        index: usize,
        /// The rule it breaks.
        error: TxError,
    },
}

/// What applying one transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    /// Transaction id.
    pub id: TxId,
    /// Position in the block.
    pub index: u32,
    /// Fee paid, raw CAS units.
    pub fee: i64,
}

/// The result of applying a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The new ledger's header.
    pub header: LedgerHeader,
    /// Its hash.
    pub hash: Hash,
    /// Transaction ids in block order.
    pub tx_ids: Vec<TxId>,
    /// One receipt per transaction, in block order.
    pub receipts: Vec<Receipt>,
    /// Every account the ledger changed, sorted by address: what a store writes back.
    pub touched: Vec<Address>,
}

/// Why a stored state could not be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestoreError {
    /// The accounts do not hash to the header's state root.
    #[error("stored accounts hash to {computed}, not the head's state root {expected}")]
    StateRoot {
        /// Root of the stored accounts.
        computed: Hash,
        /// Root in the stored head.
        expected: Hash,
    },
    /// The validator set does not match the head's commitment.
    #[error("stored validator set does not match the head's validator-set hash")]
    Validators,
    /// Two accounts for one address.
    #[error("account {0} stored twice")]
    DuplicateAccount(Address),
}

/// Where a state's replay window keeps the ids of the ledgers a store holds (its replay table),
/// behind a filter of fixed size ([`State::attach_replay_store`]).
pub trait ReplayStore: Send + Sync {
    /// Whether the store holds the id of a transaction expiring at `expiration_ms` (read when
    /// the filter says it may).
    fn holds(&self, id: &TxId, expiration_ms: i64) -> Result<bool, String>;
    /// The height up to which the store holds every ledger's ids.
    fn stored_height(&self) -> Result<u64, String>;
}

/// Hash maps keyed by addresses and ids. Keys are chosen by users, so the hasher is seeded per
/// process (foldhash's `RandomState`); it is several times faster than SipHash on 21–32 bytes.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The full state of the ledger at its head.
#[derive(Clone, Debug)]
pub struct State {
    params: ChainParams,
    accounts: Accounts,
    trie: StateTrie,
    replay: ReplaySet,
    validators: ValidatorSet,
    head: LedgerHeader,
    head_hash: Hash,
    /// A sealed ledger whose accounts were left in the map ([`BlockExecution::seal_ahead`]):
    /// the accounts read ahead of the rest of the state until [`State::settle`] puts the
    /// journaled values back (every execution does first) or [`State::apply_diff`] of that
    /// ledger keeps them.
    ahead: Option<Box<Ahead>>,
    /// Whether this copy keeps no trie ([`State::detach_trie`]): it checks and applies
    /// transactions but never seals a ledger.
    trie_detached: bool,
}

/// The replay window of a ledger, shared between copies of its state ([`State::replay_window`]).
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The ledger whose window it is.
    ledger: Hash,
    set: ReplaySet,
}

impl ReplayWindow {
    /// The ledger whose window it is.
    pub const fn ledger(&self) -> Hash {
        self.ledger
    }
}

/// The accounts of a sealed ledger left in place, and how to take them back.
#[derive(Clone, Debug)]
struct Ahead {
    /// The sealed ledger's hash.
    hash: Hash,
    /// The value of every account before the ledger first touched it (`None`: it did not
    /// exist), in touch order.
    undo: Vec<(Address, Option<Account>)>,
    /// Whether the trie is ahead too (updated in place; the ledger created no account, so
    /// setting the undo values' leaves back restores it).
    trie: bool,
}

impl State {
    /// The state of ledger 0.
    pub fn from_genesis(genesis: &Genesis) -> Self {
        let mut accounts = Accounts::default();
        // Sized once (see `restore`): generated geneses run to millions of accounts.
        accounts.reserve(
            genesis.balances.len() + genesis.declarations.len() + genesis.generated_count() as usize,
        );
        for d in &genesis.declarations {
            if let Some(address) = d.address() {
                accounts.get_or_insert_with(address, || Account::new(address)).0.declaration =
                    Some(Box::new(d.clone()));
            }
        }
        for ((address, currency), amount) in &genesis.balances {
            accounts
                .get_or_insert_with(*address, || Account::new(*address))
                .0
                .set_balance(*currency, *amount);
        }
        genesis.for_each_generated(|addresses, currency, amount| {
            for address in addresses {
                let (account, _) = accounts.get_or_insert_with(*address, || Account::new(*address));
                // Every amount given an account adds up; the supply check of `Genesis::new`
                // bounds each sum by the currency's supply.
                let sum = account.balance(&currency).saturating_add(amount);
                account.set_balance(currency, sum);
            }
        });
        let mut trie = StateTrie::new();
        let mut leaves: Vec<([u8; 21], Hash)> =
            accounts.par_values().map(|a| (*a.address.raw(), a.leaf_hash())).collect();
        trie.update(&mut leaves);
        let head = LedgerHeader {
            version: LEDGER_VERSION,
            height: 0,
            timestamp_ms: genesis.config.timestamp_ms,
            previous: Hash::ZERO,
            tx_root: tx_root(&[]),
            state_root: trie.root(),
            validator_set_hash: genesis.validators.hash(),
        };
        let head_hash = head.hash(&genesis.params.chain_id);
        let state = Self {
            params: genesis.params.clone(),
            accounts,
            trie,
            replay: ReplaySet::default(),
            validators: genesis.validators.clone(),
            head,
            head_hash,
            ahead: None,
            trie_detached: false,
        };
        debug_assert_eq!(state.check_conservation(), Ok(()));
        state
    }

    /// A state rebuilt from storage: the head, the validator set that certifies the next ledger,
    /// every account and the replay window. The accounts must hash to the head's state root and
    /// the set to its validator-set hash.
    pub fn restore(
        params: ChainParams,
        validators: ValidatorSet,
        head: LedgerHeader,
        accounts: impl IntoIterator<Item = Account>,
        replay: impl IntoIterator<Item = (TxId, i64)>,
    ) -> Result<Self, RestoreError> {
        if validators.hash() != head.validator_set_hash {
            return Err(RestoreError::Validators);
        }
        // Sized once: grown by doubling, a million accounts' table is rehashed and its fresh
        // pages zeroed again at every step (measured: most of a store's open at 1M accounts).
        let accounts = accounts.into_iter();
        let mut map = Accounts::default();
        map.reserve(accounts.size_hint().0);
        for a in accounts {
            let address = a.address;
            if map.insert(a).is_some() {
                return Err(RestoreError::DuplicateAccount(address));
            }
        }
        let mut leaves: Vec<([u8; 21], Hash)> =
            map.par_values().map(|a| (*a.address.raw(), a.leaf_hash())).collect();
        let mut trie = StateTrie::new();
        trie.update(&mut leaves);
        if trie.root() != head.state_root {
            return Err(RestoreError::StateRoot { computed: trie.root(), expected: head.state_root });
        }
        let mut replay_set = ReplaySet::default();
        let replay = replay.into_iter();
        replay_set.reserve(replay.size_hint().0);
        for (id, expiration_ms) in replay {
            if expiration_ms > head.timestamp_ms {
                replay_set.insert(id, expiration_ms);
            }
        }
        // Sealed now, so that cloning the restored state does not copy a large window.
        replay_set.prune(head.timestamp_ms, head.height);
        let head_hash = head.hash(&params.chain_id);
        Ok(Self {
            params,
            accounts: map,
            trie,
            replay: replay_set,
            validators,
            head,
            head_hash,
            ahead: None,
            trie_detached: false,
        })
    }

    /// This state's replay window, to be shared by another copy of the same ledger
    /// ([`State::adopt_replay`], [`BlockExecution::rebase`]): its sealed generations by
    /// reference, its open one (at most a few ledgers' ids) copied.
    pub fn replay_window(&self) -> ReplayWindow {
        ReplayWindow { ledger: self.head_hash, set: self.replay.clone() }
    }

    /// Takes `window` as this state's replay window, if it is that of this state's ledger
    /// (returns whether it did): the same ids, held once by both copies instead of twice.
    pub fn adopt_replay(&mut self, window: ReplayWindow) -> bool {
        if window.ledger != self.head_hash || self.ahead.is_some() {
            return false;
        }
        self.replay = window.set;
        true
    }

    /// Attaches the store that holds this state's ledgers up to its
    /// [`ReplayStore::stored_height`], and `stored`, the ids it holds (its replay table), to the
    /// replay window: those ids go into a filter of `filter_bytes` (taken at once), and from
    /// then on [`State::spill_replay`] moves the ids of the ledgers it stores there too. The
    /// window's memory then stays within the filter's bytes and the ids of ledgers not stored
    /// yet, whatever the rate. Copies of this state made after share the store and the filter.
    pub fn attach_replay_store(
        &mut self,
        store: std::sync::Arc<dyn ReplayStore>,
        filter_bytes: usize,
        stored: impl IntoIterator<Item = (TxId, i64)>,
    ) {
        let now = self.head.timestamp_ms;
        let stored = stored.into_iter().filter(move |(_, exp)| *exp > now);
        self.replay.attach(store, filter_bytes, self.params.max_ttl_ms, stored);
    }

    /// Moves the replay ids of the ledgers the attached store holds out of memory (into its
    /// filter); returns how many left. To be called on the state of the committed chain only,
    /// after its ledgers are stored: a copy executing another ledger of a stored height would
    /// lose that ledger's ids. Without a store, does nothing.
    pub fn spill_replay(&mut self) -> Result<usize, String> {
        self.replay.spill(self.head.timestamp_ms)
    }

    /// Replay ids held in memory, and the bytes of the attached store's filter (if any).
    pub fn replay_memory(&self) -> (usize, Option<usize>) {
        (self.replay.len_in_memory(), self.replay.filter_bytes())
    }

    /// The replay window held in memory: every included transaction id that has not expired,
    /// with its expiration — all of them unless a store is attached
    /// ([`State::attach_replay_store`]), which holds the rest.
    pub fn replay_entries(&self) -> impl Iterator<Item = (TxId, i64)> + '_ {
        self.replay.entries(self.head.timestamp_ms)
    }

    /// Chain parameters.
    pub const fn params(&self) -> &ChainParams {
        &self.params
    }

    /// Header of the last applied ledger.
    pub const fn head(&self) -> &LedgerHeader {
        &self.head
    }

    /// Hash of the last applied ledger.
    pub const fn head_hash(&self) -> Hash {
        self.head_hash
    }

    /// The validator set that certifies the next ledger.
    pub const fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// An account, if it exists.
    pub fn account(&self, address: &Address) -> Option<&Account> {
        self.debug_assert_settled();
        self.accounts.get(address)
    }

    /// The balance of `address` in `currency`.
    pub fn balance(&self, address: &Address, currency: &Currency) -> i64 {
        self.debug_assert_settled();
        self.accounts.get(address).map_or(0, |a| a.balance(currency))
    }

    /// How many accounts exist.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Every account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.debug_assert_settled();
        self.accounts.values()
    }

    /// Whether a sealed ledger's accounts are in the map ahead of the rest of the state
    /// ([`BlockExecution::seal_ahead`]).
    pub fn is_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// Whether the trie is ahead too: updated in place by the sealed ledger whose accounts are
    /// ahead (one that created no account), its branches not copied.
    pub fn is_trie_ahead(&self) -> bool {
        self.ahead.as_ref().is_some_and(|a| a.trie)
    }

    /// Bytes held to take a sealed ledger's accounts back (0 when none is ahead).
    pub fn ahead_bytes(&self) -> usize {
        self.ahead.as_ref().map_or(0, |a| a.undo.len() * size_of::<(Address, Option<Account>)>())
    }

    /// Puts back the accounts a sealed ledger left ahead ([`BlockExecution::seal_ahead`]): the
    /// state reads as its head again. Every execution starts with it.
    pub fn settle(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            if ahead.trie {
                // Every undo value is an account's (none was created): its leaf goes back. An
                // account journaled twice holds the same value in both entries.
                let mut leaves: Vec<([u8; 21], Hash)> = ahead
                    .undo
                    .par_iter()
                    .filter_map(|(address, old)| old.as_ref().map(|a| (*address.raw(), a.leaf_hash())))
                    .collect();
                self.trie.update(&mut leaves);
            }
            // Newest first, so an account journaled twice ends at its first value.
            for (address, old) in ahead.undo.into_iter().rev() {
                match old {
                    Some(account) => self.accounts.insert(account),
                    None => self.accounts.remove(&address),
                };
            }
        }
    }

    /// Account readers see the head's accounts only: a caller that sealed ahead settles first.
    fn debug_assert_settled(&self) {
        debug_assert!(self.ahead.is_none(), "accounts read while a sealed ledger's are ahead");
    }

    /// Root of the state trie (the head's: not that of a ledger whose trie is ahead).
    pub fn state_root(&self) -> Hash {
        if self.trie_detached || self.ahead.as_ref().is_some_and(|a| a.trie) {
            self.head.state_root
        } else {
            self.trie.root()
        }
    }

    /// Drops this copy's trie, and keeps none from now on: for a copy that checks and applies
    /// transactions (admission's post-state) but never seals a ledger, so that the trie of the
    /// state that does is not shared and its ledgers update it in place rather than copying
    /// every branch on their paths. Sealing ([`BlockExecution::finish`], `seal`, `seal_ahead`)
    /// then panics, and proofs are not available.
    pub fn detach_trie(&mut self) {
        self.settle();
        self.trie = StateTrie::new();
        self.trie_detached = true;
    }

    /// Whether this copy keeps no trie ([`State::detach_trie`]).
    pub const fn trie_detached(&self) -> bool {
        self.trie_detached
    }

    /// Whether the transaction `id`, expiring at `expiration_ms`, is in the replay window
    /// (included, and not expired at the head).
    pub fn is_included(&self, id: &TxId, expiration_ms: i64) -> bool {
        expiration_ms > self.head.timestamp_ms && self.replay.contains_expiring(id, expiration_ms)
    }

    /// A proof of an account's state against [`State::state_root`].
    pub fn prove_account(&self, address: &Address) -> Option<(Account, StateProof)> {
        self.debug_assert_settled();
        let account = self.accounts.get(address)?.clone();
        let proof = self.trie.prove(address.raw())?;
        Some((account, proof))
    }

    /// Whether `vtx` passes every stateful rule against this state, as the only transaction of a
    /// block at `timestamp_ms` (what a submission is told at once; a block may still refuse it
    /// if another transaction spends the same balance first). Changes nothing.
    pub fn check_tx(&self, vtx: &VerifiedTx, timestamp_ms: i64) -> Result<(), TxError> {
        self.debug_assert_settled();
        check_tx(self, timestamp_ms, None, vtx).map(|_| ())
    }

    /// Checks the ledger's first invariant: every currency's balances, the issuer's negative one
    /// included, sum to zero. Returns the first currency that does not.
    pub fn check_conservation(&self) -> Result<(), Currency> {
        self.debug_assert_settled();
        let mut sums: HashMap<Currency, i128> = HashMap::new();
        for a in self.accounts.values() {
            for (c, v) in a.balances() {
                *sums.entry(*c).or_default() += i128::from(*v);
            }
        }
        match sums.into_iter().find(|(_, s)| *s != 0) {
            Some((c, _)) => Err(c),
            None => Ok(()),
        }
    }
}
