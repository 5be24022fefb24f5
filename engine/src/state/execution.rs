//! A ledger being applied, [`BlockExecution`]: each transaction checked in full and applied,
//! the first value of every account it touches journaled, then sealed into the state
//! ([`BlockExecution::finish`]) or into a diff that leaves the state as it was
//! ([`BlockExecution::seal`]), or reads as it was once settled ([`BlockExecution::seal_ahead`]);
//! dropped unfinished, it rolls the state back. An open ledger may also move onto the next
//! committed ledger without being undone ([`BlockExecution::rebase`]).

use std::collections::HashSet;

use rayon::prelude::*;

use super::{
    Applied, BlockError, FastMap, Receipt, ReplayWindow, State, StateDiff,
    check::{Plan, check_tx},
};
use crate::{
    account::Account,
    address::{Address, AddressType},
    currency::Currency,
    declaration::Declaration,
    hash::Hash,
    ledger::{LEDGER_VERSION, LedgerHeader, ValidatorSet},
    merkle::tx_root,
    tx::TxId,
    validate::{TxError, VerifiedTx},
};

impl State {
    /// Starts the next ledger at `timestamp_ms`.
    pub fn begin_block(&mut self, timestamp_ms: i64) -> Result<BlockExecution<'_>, BlockError> {
        self.settle();
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
            holds_until: Vec::new(),
            order_free: Vec::new(),
            deltas: Vec::new(),
            delta_ends: Vec::new(),
            next_validators: None,
            tx_ids: Vec::new(),
            receipts: Vec::new(),
            finished: false,
        })
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
    /// Per applied transaction, in order: the ledger time up to which its verdict and effects
    /// stay those it had here — its expiration, or `i64::MIN` for one that spends a payment
    /// channel (a payee's claim holds only before the channel's expiry, the payer's refund only
    /// after, and only a claim changes the claimed total). Time locks and the time-to-live
    /// bound only loosen with time. Read by [`BlockExecution::rebase`].
    holds_until: Vec<i64>,
    /// Per applied transaction, in order: whether its verdict reads nothing of the state but
    /// balances, the replay set and the time, and its effects are balance changes alone — no
    /// declaration (published, read or carried), no payment channel, every input and the fee
    /// payer an ECDSA or time-lock address. Such a transaction applies on any state where the
    /// balances it debits suffice, with the same effects ([`BlockExecution::rebase`]).
    order_free: Vec<bool>,
    /// The net balance changes of each applied transaction, flat: those of the `i`-th end at
    /// `delta_ends[i]`.
    deltas: Vec<(Address, Currency, i64)>,
    delta_ends: Vec<u32>,
    next_validators: Option<ValidatorSet>,
    pub(super) tx_ids: Vec<TxId>,
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

    /// Makes room for `txs` more transactions (and the two accounts a transfer touches).
    pub fn reserve(&mut self, txs: usize) {
        self.journal.reserve(2 * txs);
        self.replay_added.reserve(txs);
        self.holds_until.reserve(txs);
        self.order_free.reserve(txs);
        self.deltas.reserve(3 * txs);
        self.delta_ends.reserve(txs);
        self.tx_ids.reserve(txs);
        self.receipts.reserve(txs);
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
        self.deltas.extend_from_slice(&plan.deltas);
        self.delta_ends.push(u32::try_from(self.deltas.len()).unwrap_or(u32::MAX));
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
        let channel = tx.inputs.iter().any(|l| l.address.kind() == AddressType::PaymentChannel);
        self.holds_until.push(if channel { i64::MIN } else { tx.expiration_ms });
        let balances_only = |a: &Address| matches!(a.kind(), AddressType::Ecdsa | AddressType::TimeLock);
        self.order_free.push(
            tx.declarations.is_empty()
                && !channel
                && balances_only(&tx.fee.payer)
                && tx.inputs.iter().all(|l| balances_only(&l.address)),
        );
        let receipt = Receipt { id: vtx.id, index: self.tx_ids.len() as u32, fee: tx.fee.amount };
        self.tx_ids.push(vtx.id);
        self.receipts.push(receipt);
        receipt
    }

    fn touch(&mut self, address: Address) -> &mut Account {
        // One probe of the account map: `last_height` tells whether this block already
        // journaled the account (every change sets it to the block's height).
        let (account, existed) = self.state.accounts.get_or_insert_with(address, || Account::new(address));
        if !existed {
            self.journal.push((address, None));
        } else if account.last_height != self.height {
            self.journal.push((address, Some(account.clone())));
        }
        account
    }

    /// Seals the ledger: rehashes touched accounts into the state trie (in parallel), computes
    /// the transaction root and the header, installs validator-set changes for the next height,
    /// and forgets replay entries that can no longer matter.
    pub fn finish(mut self) -> Applied {
        assert!(!self.state.trie_detached, "sealing a ledger on a state without its trie");
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
        state.replay.prune(self.timestamp_ms, self.height);
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
        let touched = self.touched();
        let leaves: Vec<([u8; 21], Hash)> = {
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
                Some(account) => self.state.accounts.insert(account),
                None => self.state.accounts.remove(&address),
            };
            accounts.extend(new);
        }
        accounts.sort_unstable_by_key(|a| a.address);
        self.diff(touched, leaves, accounts, false)
        // `self` drops here unfinished: the replay set is rolled back (the accounts were).
    }

    /// The accounts the journal names, sorted.
    fn touched(&self) -> Vec<Address> {
        let mut touched: Vec<Address> = self.journal.iter().map(|(address, _)| *address).collect();
        touched.par_sort_unstable();
        touched.dedup();
        touched
    }

    /// The sealed ledger, given its touched accounts, their leaves and their new values: the
    /// trie updated on a clone of the state's, the header, what was applied.
    /// `in_place`: the state's trie takes the leaves itself (it is ahead, see
    /// [`BlockExecution::seal_ahead`]) and the diff shares it; otherwise a clone does.
    fn diff(
        &mut self,
        touched: Vec<Address>,
        mut leaves: Vec<([u8; 21], Hash)>,
        accounts: Vec<Account>,
        in_place: bool,
    ) -> StateDiff {
        assert!(!self.state.trie_detached, "sealing a ledger on a state without its trie");
        let (trie, trie_bytes) = if in_place {
            let bytes = self.state.trie.update(&mut leaves);
            (self.state.trie.clone(), bytes)
        } else {
            let mut trie = self.state.trie.clone();
            let bytes = trie.update(&mut leaves);
            (trie, bytes)
        };
        let state = &*self.state;
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
        let applied = Applied {
            header,
            hash,
            tx_ids: std::mem::take(&mut self.tx_ids),
            receipts: std::mem::take(&mut self.receipts),
            touched,
        };
        StateDiff {
            base: state.head_hash,
            applied,
            accounts,
            trie,
            trie_bytes,
            replay: self.replay_added.clone(),
            validators: self.next_validators.take(),
        }
    }
}

impl BlockExecution<'_> {
    /// Ids of the transactions applied so far, in order.
    pub fn tx_ids(&self) -> &[TxId] {
        &self.tx_ids
    }

    /// Entries in the journal: what this open ledger holds beyond the state, one copy of an
    /// account per account it changed (more only for one touched again without a change).
    pub fn journaled(&self) -> usize {
        self.journal.len()
    }

    /// Moves this open ledger onto the next committed ledger, `committed` (a diff executed on
    /// this execution's base state), without undoing it: the state then holds the committed
    /// ledger with the rest of this execution — the transactions applied here that the ledger
    /// did not commit — applied on it, exactly what rolling back, applying `committed` and
    /// applying the rest again in their order at `timestamp_ms` (raised above the ledger's)
    /// would give, at the cost of the journal and the ledger's accounts rather than of the
    /// rest's execution. A transaction's effects are a function of the state it applies on,
    /// and its verdict of the state and the time; none of the rest may expire by
    /// `timestamp_ms` (time locks and the time-to-live bound only loosen with time). Two cases:
    ///
    /// - the ledger's transactions are the first ones applied here, in the same order, none of
    ///   them spending a payment channel (a payee's claim holds before the channel's expiry,
    ///   the payer's refund after, and only a claim moves the claimed total), and every
    ///   account the ledger changed was journaled here: the rest stays as it is (a validator
    ///   alone, a leader whose proposal was decided);
    /// - or every transaction of the rest reads and changes nothing but balances (no
    ///   declaration, no payment channel, inputs and fee payer ECDSA or time-locked), and
    ///   their balance changes, replayed from the ledger's values of its accounts, leave no
    ///   balance negative but an issuer's and none overflowing (the other validators, whose
    ///   admission order is not the proposer's).
    ///
    /// Later transactions are checked at `timestamp_ms`; dropping the execution rolls it back
    /// to the committed ledger. Returns `false`, changing nothing, otherwise: another base, a
    /// validator-set change, or neither case.
    ///
    /// `window`, the committed ledger's replay window ([`State::replay_window`] of the state
    /// that committed it), replaces this state's own: the ids of the rest are added to it, and
    /// the committed ones are held once by both states rather than sealed here a second time.
    /// Another ledger's is ignored.
    pub fn rebase(&mut self, committed: &StateDiff, timestamp_ms: i64, window: Option<ReplayWindow>) -> bool {
        if committed.base != self.state.head_hash || committed.validators.is_some() {
            return false;
        }
        let header = committed.applied.header;
        let timestamp_ms = timestamp_ms.max(header.timestamp_ms.saturating_add(1));
        let ids = &committed.applied.tx_ids;
        let in_order = self.tx_ids.get(..ids.len()) == Some(ids.as_slice());
        let moved = if in_order {
            self.move_past_first(committed, timestamp_ms)
        } else {
            self.move_balances(committed, timestamp_ms)
        };
        if !moved {
            return false;
        }
        let state = &mut *self.state;
        match window.filter(|w| w.ledger == committed.applied.hash) {
            Some(window) => {
                state.replay = window.set;
                for &(id, expiration_ms) in &self.replay_added {
                    state.replay.insert(id, expiration_ms);
                }
            }
            None => {
                if !in_order {
                    // Some of the ledger's ids may not have been applied here.
                    for &(id, expiration_ms) in &committed.replay {
                        state.replay.insert(id, expiration_ms);
                    }
                }
                state.replay.prune_keeping(header.timestamp_ms, header.height, &self.replay_added);
            }
        }
        if !state.trie_detached {
            state.trie = committed.trie.clone();
        }
        state.head = header;
        state.head_hash = committed.applied.hash;
        self.height = header.height + 1;
        self.timestamp_ms = timestamp_ms;
        true
    }

    /// [`BlockExecution::rebase`] onto a ledger of the first transactions applied here, in
    /// order: the journal's first values become the ledger's, the rest stays as it is.
    fn move_past_first(&mut self, committed: &StateDiff, timestamp_ms: i64) -> bool {
        let n = committed.applied.tx_ids.len();
        // The ledger's transactions must have had the same effects at its time as here, and
        // the rest the same verdicts at the new time.
        let (done, rest) = self.holds_until.split_at(n);
        if done.contains(&i64::MIN) || rest.iter().any(|&until| until <= timestamp_ms) {
            return false;
        }
        let index: FastMap<Address, usize> =
            committed.accounts.iter().enumerate().map(|(i, a)| (a.address, i)).collect();
        let mut journaled = vec![false; committed.accounts.len()];
        for (address, _) in &self.journal {
            if let Some(&i) = index.get(address) {
                journaled[i] = true;
            }
        }
        if journaled.contains(&false) {
            return false;
        }
        // The journal's first values become the committed ledger's; an account whose value
        // here is the committed one (nothing still applied changed it) leaves the journal. Its
        // `last_height` is set to the committed one's, below this execution's next height, so a
        // later touch journals it again. Every account that stays is marked as journaled at the
        // next height, and keeps one entry (its first: a rollback ends at it): marked with the
        // height that just committed, a busy account was journaled again at every height it
        // stayed changed, and an open ledger moved in place for hours grew without end.
        let next = committed.applied.header.height + 1;
        let accounts = &mut self.state.accounts;
        let mut seen: HashSet<Address, foldhash::fast::RandomState> = HashSet::default();
        seen.reserve(self.journal.len());
        self.journal.retain_mut(|(address, old)| {
            if !seen.insert(*address) {
                return false;
            }
            let Some(current) = accounts.get_mut(address) else { return true };
            if let Some(&i) = index.get(address) {
                let new = &committed.accounts[i];
                current.last_height = new.last_height;
                if current == new {
                    return false;
                }
                *old = Some(new.clone());
            }
            current.last_height = next;
            true
        });
        let done: Vec<bool> = (0..self.tx_ids.len()).map(|i| i < n).collect();
        self.forget_applied(&done);
        true
    }

    /// [`BlockExecution::rebase`] onto a ledger of other transactions, or of these in another
    /// order, when every transaction of the rest changes balances only (`order_free`): the
    /// ledger's accounts take its values with the rest's balance changes on them, each change
    /// checked on the way as applying the rest again would (a debit must leave the balance
    /// non-negative but an issuer's, no balance may overflow); the accounts only the rest
    /// touched stay as they are. Transactions applied here that the ledger committed touched
    /// only the ledger's accounts, whose values replace theirs.
    fn move_balances(&mut self, committed: &StateDiff, timestamp_ms: i64) -> bool {
        let ids: HashSet<&TxId, foldhash::fast::RandomState> = committed.applied.tx_ids.iter().collect();
        if ids.len() != committed.applied.tx_ids.len() {
            return false;
        }
        let done: Vec<bool> = self.tx_ids.iter().map(|id| ids.contains(id)).collect();
        let rest = || (0..done.len()).filter(|&i| !done[i]);
        if rest().any(|i| !self.order_free[i] || self.holds_until[i] <= timestamp_ms) {
            return false;
        }
        let index: FastMap<Address, usize> =
            committed.accounts.iter().enumerate().map(|(i, a)| (a.address, i)).collect();
        // The balances the rest finds on the ledger's accounts, in order, from the ledger's.
        let params = &self.state.params;
        let mut balances: FastMap<(Address, Currency), i64> = FastMap::default();
        for i in rest() {
            for &(address, currency, change) in self.deltas_of(i) {
                let Some(&k) = index.get(&address) else { continue };
                let balance = balances
                    .entry((address, currency))
                    .or_insert_with(|| committed.accounts[k].balance(&currency));
                let Some(after) = balance.checked_add(change) else { return false };
                if after < 0 && !params.is_issuer(&address, &currency) {
                    return false;
                }
                *balance = after;
            }
        }
        // Nothing fails from here. The accounts the ledger did not touch keep their values and
        // their first values (the ledger's too), marked as journaled at the next height. Only a
        // repeated declaration journals an account twice, and the rest declares nothing: those
        // are the ledger's accounts.
        let next = committed.applied.header.height + 1;
        let accounts = &mut self.state.accounts;
        self.journal.retain(|(address, _)| {
            if index.contains_key(address) {
                return false;
            }
            if let Some(current) = accounts.get_mut(address) {
                current.last_height = next;
            }
            true
        });
        // The ledger's accounts: its values, the rest's balances on those it changes (journaled
        // with the ledger's value as their first).
        let mut changed: FastMap<Address, Vec<(Currency, i64)>> = FastMap::default();
        for ((address, currency), balance) in balances {
            changed.entry(address).or_default().push((currency, balance));
        }
        for new in &committed.accounts {
            let mut account = new.clone();
            if let Some(balances) = changed.get(&new.address) {
                for &(currency, balance) in balances {
                    account.set_balance(currency, balance);
                }
                account.last_height = next;
                self.journal.push((new.address, Some(new.clone())));
            }
            accounts.insert(account);
        }
        self.forget_applied(&done);
        true
    }

    /// The net balance changes of the `i`-th applied transaction.
    fn deltas_of(&self, i: usize) -> &[(Address, Currency, i64)] {
        let start = if i == 0 { 0 } else { self.delta_ends[i - 1] as usize };
        &self.deltas[start..self.delta_ends[i] as usize]
    }

    /// Drops what is kept per applied transaction for those `done` marks.
    fn forget_applied(&mut self, done: &[bool]) {
        fn keep_rest<T>(v: &mut Vec<T>, done: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                !done[i - 1]
            });
        }
        let mut deltas = Vec::with_capacity(self.deltas.len());
        let mut ends = Vec::with_capacity(self.delta_ends.len());
        for i in (0..done.len()).filter(|&i| !done[i]) {
            deltas.extend_from_slice(self.deltas_of(i));
            ends.push(u32::try_from(deltas.len()).unwrap_or(u32::MAX));
        }
        self.deltas = deltas;
        self.delta_ends = ends;
        keep_rest(&mut self.tx_ids, done);
        keep_rest(&mut self.receipts, done);
        keep_rest(&mut self.replay_added, done);
        keep_rest(&mut self.holds_until, done);
        keep_rest(&mut self.order_free, done);
    }
}

impl BlockExecution<'_> {
    /// As [`BlockExecution::seal`], but the block's accounts stay in the state's map, ahead of
    /// the rest of the state (head, trie, replay set, validators: the previous ledger's), and
    /// the journal is kept to take them back: the next execution does first
    /// ([`State::settle`]), and applying this diff ([`State::apply_diff`]) keeps them, so the
    /// ledger a validator executed last and then commits costs no second write of its accounts
    /// (a seal restores every touched account and the commit writes it again). Account readers
    /// must not run while it is ahead (checked in debug builds).
    pub fn seal_ahead(mut self) -> StateDiff {
        let touched = self.touched();
        // Every journaled account was inserted or kept by `touch`: it is in the map.
        let (leaves, accounts): (Vec<([u8; 21], Hash)>, Vec<Account>) = {
            let map = &self.state.accounts;
            touched
                .par_iter()
                .filter_map(|a| map.get(a).map(|acc| ((*a.raw(), acc.leaf_hash()), acc.clone())))
                .unzip()
        };
        let undo = std::mem::take(&mut self.journal);
        // The trie goes ahead too when the ledger created no account (the trie has no removal,
        // so one with new keys is updated on a clone): updated in place where this state alone
        // holds its branches — no copy of each branch on the ledger's paths, nor its release
        // once the ledger is committed — and set back by the undo values' leaves if another
        // ledger is applied instead.
        let trie_ahead = undo.iter().all(|(_, old)| old.is_some());
        let diff = self.diff(touched, leaves, accounts, trie_ahead);
        self.state.ahead = Some(Box::new(super::Ahead { hash: diff.applied.hash, undo, trie: trie_ahead }));
        diff
        // `self` drops here unfinished: the replay set is rolled back (the journal is empty).
    }
}

impl Drop for BlockExecution<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Newest first, so an account journaled twice ends at its first (pre-block) value.
        for (address, old) in self.journal.drain(..).rev() {
            match old {
                Some(account) => self.state.accounts.insert(account),
                None => self.state.accounts.remove(&address),
            };
        }
        for (id, _) in &self.replay_added {
            self.state.replay.remove(id);
        }
    }
}
