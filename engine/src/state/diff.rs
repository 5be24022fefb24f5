//! A ledger executed and sealed without changing the state, [`StateDiff`], and making a state
//! the one it describes ([`State::apply_diff`]).

use super::{Applied, Receipt, State};
use crate::{
    account::Account, address::Address, hash::Hash, ledger::ValidatorSet, merkle::StateTrie, tx::TxId,
};

/// A ledger executed on a state and sealed without changing it
/// ([`BlockExecution::seal`](super::BlockExecution::seal)): what [`State::apply_diff`] writes to
/// make the state that ledger's.
#[derive(Clone, Debug)]
pub struct StateDiff {
    /// Hash of the ledger the block was executed on: the diff applies to that state only.
    pub(super) base: Hash,
    /// The ledger as applied.
    pub(super) applied: Applied,
    /// New values of the accounts the block touched, sorted by address.
    pub(super) accounts: Vec<Account>,
    /// The updated trie, sharing every branch the block did not reach with the base state's.
    pub(super) trie: StateTrie,
    /// Bytes of the trie's branches not shared with the base state's (counted by the update).
    pub(super) trie_bytes: usize,
    /// Ids added to the replay set, with their expirations.
    pub(super) replay: Vec<(TxId, i64)>,
    /// The validator set of the next height, if the block changed it.
    pub(super) validators: Option<ValidatorSet>,
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
    /// factor: accounts, trie branches not shared with the base, ids): what keeping it costs.
    pub fn bytes(&self) -> usize {
        let accounts: usize = self
            .accounts
            .iter()
            .map(|a| {
                size_of::<Account>() + a.balances().len() * 16 + a.declaration.as_ref().map_or(0, |_| 512)
            })
            .sum();
        accounts
            + self.trie_bytes
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

impl State {
    /// Makes this state the one a [`StateDiff`] executed on it describes (in time proportional
    /// to the diff). Refuses a diff of another base state.
    ///
    /// The diff of the ledger whose accounts are ahead
    /// ([`BlockExecution::seal_ahead`](super::BlockExecution::seal_ahead)) keeps them where they
    /// are; any other first puts those back ([`State::settle`]).
    pub fn apply_diff(&mut self, diff: StateDiff) -> Result<Applied, DiffBaseError> {
        self.check_base(&diff)?;
        let StateDiff { applied, accounts, trie, replay, validators, .. } = diff;
        if !self.keep_ahead(&applied.hash) {
            for account in accounts {
                self.accounts.insert(account);
            }
        }
        Ok(self.finish_diff(applied, trie, &replay, validators))
    }

    /// As [`State::apply_diff`], for a diff kept elsewhere too (handed to another copy of the
    /// state): what is applied is copied — only the ledger's header and ids when its accounts
    /// are ahead.
    pub fn apply_shared_diff(&mut self, diff: &StateDiff) -> Result<Applied, DiffBaseError> {
        self.check_base(diff)?;
        if !self.keep_ahead(&diff.applied.hash) {
            for account in &diff.accounts {
                self.accounts.insert(account.clone());
            }
        }
        Ok(self.finish_diff(diff.applied.clone(), diff.trie.clone(), &diff.replay, diff.validators.clone()))
    }

    fn check_base(&self, diff: &StateDiff) -> Result<(), DiffBaseError> {
        if diff.base == self.head_hash {
            Ok(())
        } else {
            Err(DiffBaseError { diff_base: diff.base, head: self.head_hash })
        }
    }

    /// Whether the map holds the accounts of ledger `hash` already (then it forgets how to take
    /// them back); otherwise whatever is ahead is put back first.
    fn keep_ahead(&mut self, hash: &Hash) -> bool {
        if self.ahead.as_ref().is_some_and(|a| a.hash == *hash) {
            self.ahead = None;
            true
        } else {
            self.settle();
            false
        }
    }

    /// The rest of a diff, once its accounts are in the map.
    fn finish_diff(
        &mut self,
        applied: Applied,
        trie: StateTrie,
        replay: &[(TxId, i64)],
        validators: Option<ValidatorSet>,
    ) -> Applied {
        if !self.trie_detached {
            self.trie = trie;
            // Accounts are never removed, and every account is a key of the trie.
            assert_eq!(self.trie.len(), self.accounts.len(), "the trie and the accounts disagree");
        }
        for &(id, expiration_ms) in replay {
            self.replay.insert(id, expiration_ms);
        }
        if let Some(v) = validators {
            self.validators = v;
        }
        self.replay.prune(applied.header.timestamp_ms, applied.header.height);
        self.head = applied.header;
        self.head_hash = applied.hash;
        applied
    }
}
