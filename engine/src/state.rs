//! The ledger state and its deterministic transition: `state(h) + block(h+1) = state(h+1)`.
//!
//! A block is applied by a [`BlockExecution`]: each transaction is checked in full against the
//! state as left by the transactions before it, then applied — all or nothing per transaction.
//! The execution journals the first value of every account it touches, so dropping it without
//! [`BlockExecution::finish`] restores the state exactly (an invalid proposal leaves no trace),
//! and `finish` rehashes only those accounts into the state trie, in parallel.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    sync::Arc,
};

use rayon::prelude::*;

use crate::{
    account::Account,
    address::Address,
    currency::Currency,
    declaration::Declaration,
    genesis::{ChainParams, Genesis},
    hash::Hash,
    keys::Backend,
    ledger::{LEDGER_VERSION, LedgerHeader, ValidatorSet},
    limits::BLOCK_TXS_MAX,
    merkle::{StateProof, StateTrie, tx_root},
    spend::{Published, SpendRules},
    tx::{SignedTransaction, TxId},
    validate::{TxError, VerifiedTx, check_stateless, verify},
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

/// The input of [`apply_block`]: the transactions of the next ledger and its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Height (head + 1).
    pub height: u64,
    /// Leader's timestamp, unix ms.
    pub timestamp_ms: i64,
    /// Transactions in order.
    pub transactions: Vec<SignedTransaction>,
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

/// Hash maps keyed by addresses and ids. Keys are chosen by users, so the hasher is seeded per
/// process (foldhash's `RandomState`); it is several times faster than SipHash on 21–32 bytes.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Ids a generation of the replay set gathers before it is sealed (shared, never copied again
/// until merged).
const REPLAY_SEAL_IDS: usize = 16_384;

/// Sealed generations kept before the smallest neighbours are merged: a lookup probes at most
/// this many maps, plus the open one.
const REPLAY_GENERATIONS_MAX: usize = 8;

/// One sealed generation of the replay set: ids with their expirations, and the range of those.
#[derive(Debug)]
struct Generation {
    ids: FastMap<TxId, i64>,
    min_expiration_ms: i64,
    max_expiration_ms: i64,
}

impl Generation {
    fn new(ids: FastMap<TxId, i64>) -> Self {
        let (min, max) = ids.values().fold((i64::MAX, i64::MIN), |(lo, hi), &e| (lo.min(e), hi.max(e)));
        Self { ids, min_expiration_ms: min, max_expiration_ms: max }
    }
}

/// Ids of transactions included within the TTL window, with their expirations.
///
/// The window can hold rate × TTL ids (36 million at 10,000 tx/s and the one-hour TTL), and a
/// state is cloned to execute a proposed block, so cloning must not copy it: the ids live in
/// sealed generations shared between clones (`Arc`), plus an open one that takes a block's ids.
/// A generation is dropped once all its ids have expired; to bound the maps a lookup probes,
/// the two smallest neighbouring generations are merged (dropping their expired ids) when there
/// are more than [`REPLAY_GENERATIONS_MAX`]. An expired id may thus be kept a while: harmless,
/// expiration is checked before replay, and lookups ([`ReplaySet::contains`]) ignore it.
#[derive(Clone, Debug, Default)]
struct ReplaySet {
    sealed: Vec<Arc<Generation>>,
    open: FastMap<TxId, i64>,
}

impl ReplaySet {
    fn insert(&mut self, id: TxId, expiration_ms: i64) {
        self.open.insert(id, expiration_ms);
    }

    /// Forgets an id inserted since the last [`ReplaySet::prune`] (a rolled-back block's).
    fn remove(&mut self, id: &TxId) {
        self.open.remove(id);
    }

    /// The generations' maps, newest first (the open one, then the sealed ones).
    fn maps(&self) -> impl Iterator<Item = &FastMap<TxId, i64>> + '_ {
        std::iter::once(&self.open).chain(self.sealed.iter().rev().map(|g| &g.ids))
    }

    /// Whether `id` is held and expires after `now_ms`.
    fn contains(&self, id: &TxId, now_ms: i64) -> bool {
        self.maps().find_map(|ids| ids.get(id).copied()).is_some_and(|exp| exp > now_ms)
    }

    /// Whether the id of a transaction expiring at `expiration_ms` is held: an id's expiration
    /// is part of what it hashes, so only generations whose range covers it are probed (one or
    /// two when clients give similar time-to-lives).
    fn contains_expiring(&self, id: &TxId, expiration_ms: i64) -> bool {
        self.open.contains_key(id)
            || self.sealed.iter().rev().any(|g| {
                (g.min_expiration_ms..=g.max_expiration_ms).contains(&expiration_ms) && g.ids.contains_key(id)
            })
    }

    /// Every held id expiring after `now_ms`.
    fn entries(&self, now_ms: i64) -> impl Iterator<Item = (TxId, i64)> + '_ {
        self.maps()
            .flat_map(|ids| ids.iter())
            .filter(move |(_, exp)| **exp > now_ms)
            .map(|(id, exp)| (*id, *exp))
    }

    /// After a block at `now_ms`: drops the generations whose ids have all expired, seals the
    /// open generation once it holds [`REPLAY_SEAL_IDS`], and merges generations above
    /// [`REPLAY_GENERATIONS_MAX`].
    fn prune(&mut self, now_ms: i64) {
        self.sealed.retain(|g| g.max_expiration_ms > now_ms);
        if self.open.len() >= REPLAY_SEAL_IDS {
            let mut ids = std::mem::take(&mut self.open);
            ids.retain(|_, exp| *exp > now_ms);
            if !ids.is_empty() {
                self.sealed.push(Arc::new(Generation::new(ids)));
            }
        }
        while self.sealed.len() > REPLAY_GENERATIONS_MAX {
            // The neighbours with the fewest ids together: merging copies them once into a new
            // generation, so small ones are merged often and large ones rarely.
            let Some(i) = (0..self.sealed.len() - 1)
                .min_by_key(|&i| self.sealed[i].ids.len() + self.sealed[i + 1].ids.len())
            else {
                break;
            };
            let (a, b) = (self.sealed.remove(i), self.sealed.remove(i));
            let mut ids = FastMap::default();
            ids.reserve(a.ids.len() + b.ids.len());
            ids.extend(
                a.ids.iter().chain(b.ids.iter()).filter(|(_, exp)| **exp > now_ms).map(|(k, v)| (*k, *v)),
            );
            if !ids.is_empty() {
                self.sealed.insert(i, Arc::new(Generation::new(ids)));
            }
        }
    }
}

/// The full state of the ledger at its head.
#[derive(Clone, Debug)]
pub struct State {
    params: ChainParams,
    accounts: FastMap<Address, Account>,
    trie: StateTrie,
    replay: ReplaySet,
    validators: ValidatorSet,
    head: LedgerHeader,
    head_hash: Hash,
}

impl State {
    /// The state of ledger 0.
    pub fn from_genesis(genesis: &Genesis) -> Self {
        let mut accounts: FastMap<Address, Account> = FastMap::default();
        for d in &genesis.declarations {
            if let Some(address) = d.address() {
                accounts.entry(address).or_insert_with(|| Account::new(address)).declaration =
                    Some(Box::new(d.clone()));
            }
        }
        for ((address, currency), amount) in &genesis.balances {
            accounts
                .entry(*address)
                .or_insert_with(|| Account::new(*address))
                .set_balance(*currency, *amount);
        }
        let mut trie = StateTrie::new();
        let mut leaves: Vec<([u8; 21], Hash)> =
            accounts.par_iter().map(|(address, a)| (*address.raw(), a.leaf_hash())).collect();
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
        let mut map: FastMap<Address, Account> = FastMap::default();
        for a in accounts {
            let address = a.address;
            if map.insert(address, a).is_some() {
                return Err(RestoreError::DuplicateAccount(address));
            }
        }
        let mut leaves: Vec<([u8; 21], Hash)> =
            map.par_iter().map(|(address, a)| (*address.raw(), a.leaf_hash())).collect();
        let mut trie = StateTrie::new();
        trie.update(&mut leaves);
        if trie.root() != head.state_root {
            return Err(RestoreError::StateRoot { computed: trie.root(), expected: head.state_root });
        }
        let mut replay_set = ReplaySet::default();
        for (id, expiration_ms) in replay {
            if expiration_ms > head.timestamp_ms {
                replay_set.insert(id, expiration_ms);
            }
        }
        // Sealed now, so that cloning the restored state does not copy a large window.
        replay_set.prune(head.timestamp_ms);
        let head_hash = head.hash(&params.chain_id);
        Ok(Self { params, accounts: map, trie, replay: replay_set, validators, head, head_hash })
    }

    /// The replay window: every included transaction id that has not expired, with its expiration.
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
        self.accounts.get(address)
    }

    /// The balance of `address` in `currency`.
    pub fn balance(&self, address: &Address, currency: &Currency) -> i64 {
        self.accounts.get(address).map_or(0, |a| a.balance(currency))
    }

    /// Every account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Root of the state trie.
    pub fn state_root(&self) -> Hash {
        self.trie.root()
    }

    /// Whether a transaction id is in the replay window.
    pub fn is_included(&self, id: &TxId) -> bool {
        self.replay.contains(id, self.head.timestamp_ms)
    }

    /// A proof of an account's state against [`State::state_root`].
    pub fn prove_account(&self, address: &Address) -> Option<(Account, StateProof)> {
        let account = self.accounts.get(address)?.clone();
        let proof = self.trie.prove(address.raw())?;
        Some((account, proof))
    }

    /// Whether `vtx` passes every stateful rule against this state, as the only transaction of a
    /// block at `timestamp_ms` (what a submission is told at once; a block may still refuse it
    /// if another transaction spends the same balance first). Changes nothing.
    pub fn check_tx(&self, vtx: &VerifiedTx, timestamp_ms: i64) -> Result<(), TxError> {
        check_tx(self, timestamp_ms, None, vtx).map(|_| ())
    }

    /// Checks the ledger's first invariant: every currency's balances, the issuer's negative one
    /// included, sum to zero. Returns the first currency that does not.
    pub fn check_conservation(&self) -> Result<(), Currency> {
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

    /// Makes this state the one a [`StateDiff`] executed on it describes (in time proportional
    /// to the diff). Refuses a diff of another base state.
    pub fn apply_diff(&mut self, diff: StateDiff) -> Result<Applied, DiffBaseError> {
        if diff.base != self.head_hash {
            return Err(DiffBaseError { diff_base: diff.base, head: self.head_hash });
        }
        let StateDiff { applied, accounts, trie, replay, validators, .. } = diff;
        for account in accounts {
            self.accounts.insert(account.address, account);
        }
        self.trie = trie;
        // Accounts are never removed, and every account is a key of the trie.
        assert_eq!(self.trie.len(), self.accounts.len(), "the trie and the accounts disagree");
        for (id, expiration_ms) in replay {
            self.replay.insert(id, expiration_ms);
        }
        if let Some(v) = validators {
            self.validators = v;
        }
        self.replay.prune(applied.header.timestamp_ms);
        self.head = applied.header;
        self.head_hash = applied.hash;
        Ok(applied)
    }

    /// Starts the next ledger at `timestamp_ms`.
    pub fn begin_block(&mut self, timestamp_ms: i64) -> Result<BlockExecution<'_>, BlockError> {
        if timestamp_ms <= self.head.timestamp_ms {
            return Err(BlockError::Timestamp { previous: self.head.timestamp_ms, got: timestamp_ms });
        }
        let height = self.head.height + 1;
        Ok(BlockExecution {
            state: self,
            height,
            timestamp_ms,
            journal: Vec::new(),
            replay_added: Vec::new(),
            next_validators: None,
            tx_ids: Vec::new(),
            receipts: Vec::new(),
            finished: false,
        })
    }
}

/// Applies a block strictly: every transaction must be valid in order, else the state is left
/// unchanged and the error names the first invalid one. Signatures are verified in parallel on
/// the current rayon pool.
pub fn apply_block(state: &mut State, block: &Block, backend: Backend) -> Result<Applied, BlockError> {
    let expected = state.head.height + 1;
    if block.height != expected {
        return Err(BlockError::Height { head: state.head.height, got: block.height });
    }
    if block.transactions.len() > BLOCK_TXS_MAX {
        return Err(BlockError::TooManyTransactions(block.transactions.len()));
    }
    if block.timestamp_ms <= state.head.timestamp_ms {
        return Err(BlockError::Timestamp { previous: state.head.timestamp_ms, got: block.timestamp_ms });
    }
    let params = &state.params;
    // Signatures are verified in parallel; verdicts are then consumed in block order, so the
    // error always names the first invalid transaction, whatever rule it breaks.
    let verified: Vec<Result<VerifiedTx, TxError>> = block
        .transactions
        .par_iter()
        .map(|tx| verify(tx.clone(), tx.id(&params.chain_id), params, backend))
        .collect();
    let mut exec = state.begin_block(block.timestamp_ms)?;
    for (index, v) in verified.iter().enumerate() {
        let result = match v {
            Ok(v) => exec.apply_tx(v).map(|_| ()),
            Err(e) => Err(e.clone()),
        };
        result.map_err(|error| BlockError::InvalidTx { index, error })?;
    }
    Ok(exec.finish())
}

/// Applies already-verified transactions strictly (see [`apply_block`]).
pub fn apply_verified(
    state: &mut State,
    timestamp_ms: i64,
    txs: &[VerifiedTx],
) -> Result<Applied, BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    apply_strictly(&mut exec, txs)?;
    Ok(exec.finish())
}

/// Executes already-verified transactions strictly on `state` (see [`apply_block`]) and seals the
/// ledger without changing the state ([`BlockExecution::seal`]).
pub fn execute_verified<T: Borrow<VerifiedTx>>(
    state: &mut State,
    timestamp_ms: i64,
    txs: &[T],
) -> Result<StateDiff, BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    apply_strictly(&mut exec, txs)?;
    Ok(exec.seal())
}

/// Every transaction valid in order, or the first invalid one's error.
fn apply_strictly<T: Borrow<VerifiedTx>>(exec: &mut BlockExecution<'_>, txs: &[T]) -> Result<(), BlockError> {
    if txs.len() > BLOCK_TXS_MAX {
        return Err(BlockError::TooManyTransactions(txs.len()));
    }
    for (index, tx) in txs.iter().enumerate() {
        exec.apply_tx(tx.borrow()).map_err(|error| BlockError::InvalidTx { index, error })?;
    }
    Ok(())
}

/// As [`build_block`], sealing the ledger without changing the state ([`BlockExecution::seal`]).
pub fn execute_build<'a>(
    state: &mut State,
    timestamp_ms: i64,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Result<(StateDiff, Vec<(TxId, TxError)>), BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    let rejected = apply_candidates(&mut exec, candidates, max_txs);
    Ok((exec.seal(), rejected))
}

/// Builds a ledger as a leader does: applies candidates in order, skipping (and reporting) those
/// that are invalid at their turn, up to `max_txs`.
pub fn build_block<'a>(
    state: &mut State,
    timestamp_ms: i64,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Result<(Applied, Vec<(TxId, TxError)>), BlockError> {
    let mut exec = state.begin_block(timestamp_ms)?;
    let rejected = apply_candidates(&mut exec, candidates, max_txs);
    Ok((exec.finish(), rejected))
}

/// Applies candidates in order up to `max_txs`, skipping those invalid at their turn; returns
/// those skipped, with why.
fn apply_candidates<'a>(
    exec: &mut BlockExecution<'_>,
    candidates: impl IntoIterator<Item = &'a VerifiedTx>,
    max_txs: usize,
) -> Vec<(TxId, TxError)> {
    let mut rejected = Vec::new();
    for tx in candidates {
        if exec.tx_ids.len() >= max_txs.min(BLOCK_TXS_MAX) {
            break;
        }
        if let Err(e) = exec.apply_tx(tx) {
            rejected.push((tx.id, e));
        }
    }
    rejected
}

/// Every stateful rule of `vtx` against `state` in a block at `now` whose earlier transactions
/// already changed the next validator set to `pending_validators` (if any).
fn check_tx(
    state: &State,
    now: i64,
    pending_validators: Option<&ValidatorSet>,
    vtx: &VerifiedTx,
) -> Result<Plan, TxError> {
    let params = &state.params;
    let tx = &vtx.tx.tx;
    // Cheap (tens of ns) and makes this function safe on any `VerifiedTx`, even one built
    // without `validate::verify`: value is conserved whatever the caller did.
    check_stateless(tx, params)?;
    if tx.expiration_ms <= now {
        return Err(TxError::Expired { expiration_ms: tx.expiration_ms, ledger_time_ms: now });
    }
    if tx.expiration_ms > now.saturating_add(params.max_ttl_ms) {
        return Err(TxError::ExpirationTooFar { expiration_ms: tx.expiration_ms, ledger_time_ms: now });
    }
    if state.replay.contains_expiring(&vtx.id, tx.expiration_ms) {
        return Err(TxError::Replayed(vtx.id));
    }

    let mut rules = SpendRules::new(&state.accounts, &tx.declarations, &vtx.signers, now);
    // The first rule not satisfied is the transaction's error.
    let claims = rules.judge(tx, Some(&params.governance), |_, why| Err(why))?;
    let mut next_validators = None;
    let updates = tx.declarations.iter().filter_map(|d| match d {
        Declaration::ValidatorUpdate(u) => Some(u),
        _ => None,
    });
    for u in updates {
        let current = next_validators.as_ref().or(pending_validators).unwrap_or(&state.validators);
        next_validators = Some(current.with_update(u.public_key, u.weight)?);
    }
    if let Some(signer) = rules.unneeded().next() {
        return Err(TxError::UnneededSignature(signer));
    }

    let deltas = net_deltas(tx, params)?;
    for &(address, currency, change) in &deltas {
        let balance = state.balance(&address, &currency);
        let after = balance.checked_add(change).ok_or(TxError::Overflow)?;
        if after < 0 && !params.is_issuer(&address, &currency) {
            return Err(TxError::InsufficientBalance { address, currency, balance, change });
        }
    }
    Ok(Plan { deltas, claims, next_validators })
}

/// The ledger judges spend rules against the state's accounts.
impl Published for FastMap<Address, Account> {
    fn declaration(&self, address: &Address) -> Option<&Declaration> {
        self.get(address).and_then(|a| a.declaration.as_deref())
    }

    fn channel_claimed(&self, address: &Address) -> i64 {
        self.get(address).map_or(0, |a| a.channel_claimed)
    }
}

/// A ledger being applied. Dropping it without [`BlockExecution::finish`] undoes everything.
#[derive(Debug)]
pub struct BlockExecution<'s> {
    state: &'s mut State,
    height: u64,
    timestamp_ms: i64,
    /// Value of every account before this block first touched it (`None`: it did not exist),
    /// in touch order. An account already touched has `last_height == height` and is not
    /// journaled again, save one touched without being changed (a repeated declaration), whose
    /// later entries hold the same value: a rollback applies them newest first.
    journal: Vec<(Address, Option<Account>)>,
    /// Ids this block added to the replay set, with their expirations.
    replay_added: Vec<(TxId, i64)>,
    next_validators: Option<ValidatorSet>,
    tx_ids: Vec<TxId>,
    receipts: Vec<Receipt>,
    finished: bool,
}

impl BlockExecution<'_> {
    /// Height of the ledger being built.
    pub const fn height(&self) -> u64 {
        self.height
    }

    /// Transactions applied so far.
    pub fn len(&self) -> usize {
        self.tx_ids.len()
    }

    /// Whether no transaction was applied yet.
    pub fn is_empty(&self) -> bool {
        self.tx_ids.is_empty()
    }

    /// The state as the transactions applied so far left it.
    pub fn state(&self) -> &State {
        self.state
    }

    /// Checks every stateful rule of `vtx` and, only if all hold, applies it.
    pub fn apply_tx(&mut self, vtx: &VerifiedTx) -> Result<Receipt, TxError> {
        let plan = self.check(vtx)?;
        Ok(self.commit(vtx, plan))
    }

    fn check(&self, vtx: &VerifiedTx) -> Result<Plan, TxError> {
        check_tx(self.state, self.timestamp_ms, self.next_validators.as_ref(), vtx)
    }

    fn commit(&mut self, vtx: &VerifiedTx, plan: Plan) -> Receipt {
        let tx = &vtx.tx.tx;
        let height = self.height;
        for &(address, currency, change) in &plan.deltas {
            let account = self.touch(address);
            // Checked in `check`; the state has not changed since.
            let after = account.balance(&currency) + change;
            account.set_balance(currency, after);
            account.last_height = height;
        }
        for d in &tx.declarations {
            // A TimeLock address already encodes its time: nothing to keep.
            if !d.is_account_definition() || matches!(d, Declaration::TimeLock { .. }) {
                continue;
            }
            if let Some(address) = d.address() {
                let account = self.touch(address);
                if account.declaration.is_none() {
                    account.declaration = Some(Box::new(d.clone()));
                    account.last_height = height;
                }
            }
        }
        for (channel, claimed) in plan.claims {
            let account = self.touch(channel);
            account.channel_claimed = claimed;
            account.last_height = height;
        }
        if let Some(v) = plan.next_validators {
            self.next_validators = Some(v);
        }
        self.state.replay.insert(vtx.id, tx.expiration_ms);
        self.replay_added.push((vtx.id, tx.expiration_ms));
        let receipt = Receipt { id: vtx.id, index: self.tx_ids.len() as u32, fee: tx.fee.amount };
        self.tx_ids.push(vtx.id);
        self.receipts.push(receipt);
        receipt
    }

    fn touch(&mut self, address: Address) -> &mut Account {
        // One probe of the account map: `last_height` tells whether this block already
        // journaled the account (every change sets it to the block's height).
        match self.state.accounts.entry(address) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let account = e.into_mut();
                if account.last_height != self.height {
                    self.journal.push((address, Some(account.clone())));
                }
                account
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                self.journal.push((address, None));
                e.insert(Account::new(address))
            }
        }
    }

    /// Seals the ledger: rehashes touched accounts into the state trie (in parallel), computes
    /// the transaction root and the header, installs validator-set changes for the next height,
    /// and forgets replay entries that can no longer matter.
    pub fn finish(mut self) -> Applied {
        let journal = std::mem::take(&mut self.journal);
        let state = &mut *self.state;
        let accounts = &state.accounts;
        let mut touched: Vec<Address> = journal.into_iter().map(|(address, _)| address).collect();
        touched.par_sort_unstable();
        touched.dedup();
        let mut leaves: Vec<([u8; 21], Hash)> = touched
            .par_iter()
            .filter_map(|a| accounts.get(a).map(|acc| (*a.raw(), acc.leaf_hash())))
            .collect();
        state.trie.update(&mut leaves);
        if let Some(v) = self.next_validators.take() {
            state.validators = v;
        }
        let header = LedgerHeader {
            version: LEDGER_VERSION,
            height: self.height,
            timestamp_ms: self.timestamp_ms,
            previous: state.head_hash,
            tx_root: tx_root(&self.tx_ids),
            state_root: state.trie.root(),
            validator_set_hash: state.validators.hash(),
        };
        state.replay.prune(self.timestamp_ms);
        state.head = header;
        state.head_hash = header.hash(&state.params.chain_id);
        self.finished = true;
        Applied {
            header,
            hash: state.head_hash,
            tx_ids: std::mem::take(&mut self.tx_ids),
            receipts: std::mem::take(&mut self.receipts),
            touched,
        }
    }
}

impl BlockExecution<'_> {
    /// Seals the ledger without changing the state: returns everything applying it would
    /// write ([`StateDiff`]), then rolls the state back as a dropped execution does. What it
    /// holds is what the block touched — the new values of its accounts, the trie with only the
    /// updated paths copied (its other branches shared with the state's) — never a copy of the
    /// state, so a validator may keep several executed proposals of a height at the cost of
    /// their blocks.
    pub fn seal(mut self) -> StateDiff {
        let mut touched: Vec<Address> = self.journal.iter().map(|(address, _)| *address).collect();
        touched.par_sort_unstable();
        touched.dedup();
        let mut leaves: Vec<([u8; 21], Hash)> = {
            let accounts = &self.state.accounts;
            // Every journaled account was inserted or kept by `touch`: it is in the map.
            touched
                .par_iter()
                .filter_map(|a| accounts.get(a).map(|acc| (*a.raw(), acc.leaf_hash())))
                .collect()
        };
        // The block's values leave the map as the journal's first (pre-block) values go back:
        // one move per account, where a copy and then a rollback cost two, plus a clone.
        let mut accounts: Vec<Account> = Vec::with_capacity(touched.len());
        let mut restored: HashSet<Address, foldhash::fast::RandomState> = HashSet::default();
        restored.reserve(touched.len());
        for (address, old) in std::mem::take(&mut self.journal) {
            if !restored.insert(address) {
                continue;
            }
            let new = match old {
                Some(account) => self.state.accounts.insert(address, account),
                None => self.state.accounts.remove(&address),
            };
            accounts.extend(new);
        }
        accounts.sort_unstable_by_key(|a| a.address);
        let state = &*self.state;
        let mut trie = state.trie.clone();
        trie.update(&mut leaves);
        let validator_set_hash = self.next_validators.as_ref().unwrap_or(&state.validators).hash();
        let header = LedgerHeader {
            version: LEDGER_VERSION,
            height: self.height,
            timestamp_ms: self.timestamp_ms,
            previous: state.head_hash,
            tx_root: tx_root(&self.tx_ids),
            state_root: trie.root(),
            validator_set_hash,
        };
        let hash = header.hash(&state.params.chain_id);
        let mut this = self;
        let applied = Applied {
            header,
            hash,
            tx_ids: std::mem::take(&mut this.tx_ids),
            receipts: std::mem::take(&mut this.receipts),
            touched,
        };
        StateDiff {
            base: this.state.head_hash,
            applied,
            accounts,
            trie,
            replay: this.replay_added.clone(),
            validators: this.next_validators.take(),
        }
        // `this` drops here unfinished: the replay set is rolled back (the accounts were).
    }
}

/// A ledger executed on a state and sealed without changing it ([`BlockExecution::seal`]):
/// what [`State::apply_diff`] writes to make the state that ledger's.
#[derive(Clone, Debug)]
pub struct StateDiff {
    /// Hash of the ledger the block was executed on: the diff applies to that state only.
    base: Hash,
    /// The ledger as applied.
    applied: Applied,
    /// New values of the accounts the block touched, sorted by address.
    accounts: Vec<Account>,
    /// The updated trie, sharing every branch the block did not reach with the base state's.
    trie: StateTrie,
    /// Ids added to the replay set, with their expirations.
    replay: Vec<(TxId, i64)>,
    /// The validator set of the next height, if the block changed it.
    validators: Option<ValidatorSet>,
}

impl StateDiff {
    /// The ledger as applied (header, hash, ids, receipts, touched accounts).
    pub const fn applied(&self) -> &Applied {
        &self.applied
    }

    /// Hash of the ledger this diff applies on.
    pub const fn base(&self) -> Hash {
        self.base
    }

    /// Bytes this diff holds apart from the state it applies on (an estimate good to a small
    /// factor: accounts, trie branches not shared with `base`, ids): what keeping it costs.
    pub fn bytes_apart_from(&self, base: &State) -> usize {
        let accounts: usize = self
            .accounts
            .iter()
            .map(|a| {
                size_of::<Account>() + a.balances().len() * 16 + a.declaration.as_ref().map_or(0, |_| 512)
            })
            .sum();
        accounts
            + self.trie.bytes_apart_from(&base.trie)
            + self.replay.len() * (size_of::<(TxId, i64)>() + 8)
            + self.applied.tx_ids.len() * (32 + size_of::<Receipt>())
            + self.applied.touched.len() * size_of::<Address>()
    }
}

/// Why a [`StateDiff`] cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the diff was executed on ledger {diff_base}, the state is at {head}")]
pub struct DiffBaseError {
    /// What the diff applies on.
    pub diff_base: Hash,
    /// The state's head.
    pub head: Hash,
}

impl Drop for BlockExecution<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Newest first, so an account journaled twice ends at its first (pre-block) value.
        for (address, old) in self.journal.drain(..).rev() {
            match old {
                Some(account) => self.state.accounts.insert(address, account),
                None => self.state.accounts.remove(&address),
            };
        }
        for (id, _) in &self.replay_added {
            self.state.replay.remove(id);
        }
    }
}

/// What a valid transaction will change.
struct Plan {
    /// Net change per (address, currency), sorted, zero changes dropped.
    deltas: Vec<(Address, Currency, i64)>,
    /// New cumulative claimed amount per channel.
    claims: Vec<(Address, i64)>,
    next_validators: Option<ValidatorSet>,
}

/// Net balance changes of a transaction, fee included, merged per (address, currency).
fn net_deltas(
    tx: &crate::tx::Transaction,
    params: &ChainParams,
) -> Result<Vec<(Address, Currency, i64)>, TxError> {
    let mut raw: Vec<(Address, Currency, i64)> = Vec::with_capacity(tx.inputs.len() + tx.outputs.len() + 2);
    raw.extend(tx.inputs.iter().map(|l| (l.address, l.currency, -l.amount)));
    raw.extend(tx.outputs.iter().map(|l| (l.address, l.currency, l.amount)));
    if tx.fee.amount != 0 {
        raw.push((tx.fee.payer, Currency::CAS, -tx.fee.amount));
        raw.push((params.fee_account, Currency::CAS, tx.fee.amount));
    }
    raw.sort_unstable_by_key(|d| (d.0, d.1));
    let mut merged: Vec<(Address, Currency, i64)> = Vec::with_capacity(raw.len());
    for (a, c, v) in raw {
        match merged.last_mut() {
            Some(last) if last.0 == a && last.1 == c => {
                last.2 = last.2.checked_add(v).ok_or(TxError::Overflow)?
            }
            _ => merged.push((a, c, v)),
        }
    }
    merged.retain(|d| d.2 != 0);
    // Conservation: what leaves accounts reaches accounts, per currency. Stateless checks
    // guarantee it; a failure here is an engine bug, and applying it would corrupt the ledger.
    let mut per_currency: Vec<(Currency, i128)> = Vec::with_capacity(2);
    for (_, c, v) in &merged {
        match per_currency.iter_mut().find(|(pc, _)| pc == c) {
            Some((_, s)) => *s += i128::from(*v),
            None => per_currency.push((*c, i128::from(*v))),
        }
    }
    assert!(
        per_currency.iter().all(|(_, s)| *s == 0),
        "transaction does not conserve value: {per_currency:?}"
    );
    Ok(merged)
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    fn id(n: u64) -> TxId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        Hash(b)
    }

    /// The replay set against a plain map, over enough blocks to seal, merge and drop
    /// generations, with rolled-back blocks and clones.
    #[test]
    fn replay_set_matches_a_plain_map() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut set = ReplaySet::default();
        let mut model: HashMap<TxId, i64> = HashMap::new();
        let mut fresh = 0u64;
        let mut now = 1_000_000i64;
        let (mut max_generations, mut shared) = (0, 0);
        for block in 0..160 {
            now += 1_000;
            let n = (next() % 4_000) as usize;
            let mut added = Vec::with_capacity(n);
            for _ in 0..n {
                fresh += 1;
                // Time-to-lives of 1 to 60 s, and a few of an hour.
                let ttl = if next() % 50 == 0 { 3_600_000 } else { 1_000 + (next() % 59_000) as i64 };
                set.insert(id(fresh), now + ttl);
                added.push((id(fresh), now + ttl));
            }
            let before = set.clone();
            if block % 7 == 3 {
                // A rolled-back block.
                for (i, _) in &added {
                    set.remove(i);
                }
            } else {
                model.extend(added.iter().copied());
                set.prune(now);
            }
            model.retain(|_, exp| *exp > now);
            assert!(set.sealed.len() <= REPLAY_GENERATIONS_MAX);
            max_generations = max_generations.max(set.sealed.len());
            // The clone taken before the rollback or prune shares the generations that survived
            // it, and still holds every id of the block.
            shared += set.sealed.iter().filter(|g| before.sealed.iter().any(|b| Arc::ptr_eq(g, b))).count();
            assert!(
                added.iter().all(|(i, exp)| before.contains(i, now) && before.contains_expiring(i, *exp))
            );
            for _ in 0..200 {
                let k = id(1 + next() % fresh.max(1));
                let expected = model.get(&k).copied();
                assert_eq!(set.contains(&k, now), expected.is_some(), "block {block}");
                if let Some(exp) = expected {
                    assert!(set.contains_expiring(&k, exp));
                }
                assert!(!set.contains(&id(fresh + 1 + next() % 1_000), now));
            }
        }
        let mut entries: Vec<_> = set.entries(now).collect();
        let mut expected: Vec<_> = model.into_iter().collect();
        entries.sort_unstable();
        expected.sort_unstable();
        assert_eq!(entries, expected);
        assert!(max_generations >= 4, "the test seals and merges generations ({max_generations})");
        assert!(shared > 0, "clones share sealed generations");
    }
}
