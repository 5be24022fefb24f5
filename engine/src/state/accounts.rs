//! The accounts of a state: a hash table of [`Account`]s found by their own `address` field.
//!
//! A map from address to account held every address twice (the key and the account's field):
//! 112 bytes an entry instead of 88, a fifth of the state's memory, and of what each lookup
//! brings into cache. At 10M accounts (2^24 slots) that is ~400 MB a copy of the state.

use std::{fmt, hash::BuildHasher};

use hashbrown::{HashTable, hash_table::Entry};
use rayon::prelude::*;

use crate::{account::Account, address::Address};

// A slot is an account and a control byte; keyed by address, it was 24 bytes more.
const _: () = assert!(size_of::<Account>() == 88 && size_of::<(Address, Account)>() == 112);

/// Accounts by address. The table hashes with a per-process seed (foldhash's `RandomState`, as
/// the state's other maps: addresses are chosen by users).
#[derive(Clone, Default)]
pub(crate) struct Accounts {
    table: HashTable<Account>,
    hasher: foldhash::fast::RandomState,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts").field("len", &self.table.len()).finish_non_exhaustive()
    }
}

impl Accounts {
    fn hash(&self, address: &Address) -> u64 {
        self.hasher.hash_one(address)
    }

    /// Room for `additional` more accounts, taken at once.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.table.reserve(additional, |a| hasher.hash_one(a.address));
    }

    /// How many accounts.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The account at `address`.
    pub(crate) fn get(&self, address: &Address) -> Option<&Account> {
        self.table.find(self.hash(address), |a| a.address == *address)
    }

    /// The account at `address`, to change (never its address).
    pub(crate) fn get_mut(&mut self, address: &Address) -> Option<&mut Account> {
        let hash = self.hash(address);
        self.table.find_mut(hash, |a| a.address == *address)
    }

    /// The account at `address`, made with `new` if there is none; and whether it was.
    pub(crate) fn get_or_insert_with(
        &mut self,
        address: Address,
        new: impl FnOnce() -> Account,
    ) -> (&mut Account, bool) {
        let hash = self.hash(&address);
        let hasher = &self.hasher;
        match self.table.entry(hash, |a| a.address == address, |a| hasher.hash_one(a.address)) {
            Entry::Occupied(e) => (e.into_mut(), true),
            Entry::Vacant(e) => {
                let account = new();
                debug_assert_eq!(account.address, address);
                (e.insert(account).into_mut(), false)
            }
        }
    }

    /// Puts `account` at its address; the account it replaces.
    pub(crate) fn insert(&mut self, account: Account) -> Option<Account> {
        let hash = self.hash(&account.address);
        let hasher = &self.hasher;
        let address = account.address;
        match self.table.entry(hash, |a| a.address == address, |a| hasher.hash_one(a.address)) {
            Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), account)),
            Entry::Vacant(e) => {
                e.insert(account);
                None
            }
        }
    }

    /// Removes the account at `address`.
    pub(crate) fn remove(&mut self, address: &Address) -> Option<Account> {
        let hash = self.hash(address);
        self.table.find_entry(hash, |a| a.address == *address).ok().map(|e| e.remove().0)
    }

    /// Every account, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Account> {
        self.table.iter()
    }

    /// Every account, in parallel.
    pub(crate) fn par_values(&self) -> impl ParallelIterator<Item = &Account> {
        self.table.par_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::currency::Currency;

    fn address(i: u32) -> Address {
        let mut raw = [0u8; crate::address::ADDRESS_LEN];
        raw[0] = Address::timelock(0).raw()[0];
        raw[1..5].copy_from_slice(&i.to_le_bytes());
        Address::from_raw(raw).unwrap()
    }

    #[test]
    fn accounts_are_found_replaced_and_removed_by_their_address() {
        let mut accounts = Accounts::default();
        accounts.reserve(10);
        for i in 0..1_000 {
            let mut a = Account::new(address(i));
            a.set_balance(Currency::CAS, i64::from(i) + 1);
            assert!(accounts.insert(a).is_none());
        }
        assert_eq!(accounts.len(), 1_000);
        for i in 0..1_000 {
            assert_eq!(accounts.get(&address(i)).unwrap().balance(&Currency::CAS), i64::from(i) + 1);
        }
        assert!(accounts.get(&address(1_000)).is_none());
        // Replaced: the old value comes back, the count stays.
        let old = accounts.insert(Account::new(address(7))).unwrap();
        assert_eq!(old.balance(&Currency::CAS), 8);
        assert_eq!(accounts.get(&address(7)).unwrap().balance(&Currency::CAS), 0);
        assert_eq!(accounts.len(), 1_000);
        // Found or made, and told which.
        let (a, existed) = accounts.get_or_insert_with(address(3), || Account::new(address(3)));
        assert!(existed);
        a.set_balance(Currency::CAS, 99);
        assert_eq!(accounts.get(&address(3)).unwrap().balance(&Currency::CAS), 99);
        let (_, existed) = accounts.get_or_insert_with(address(5_000), || Account::new(address(5_000)));
        assert!(!existed);
        assert_eq!(accounts.len(), 1_001);
        // Removed, and only once.
        assert_eq!(accounts.remove(&address(3)).unwrap().balance(&Currency::CAS), 99);
        assert!(accounts.remove(&address(3)).is_none());
        assert!(accounts.get(&address(3)).is_none());
        assert_eq!(accounts.len(), 1_000);
        accounts.get_mut(&address(9)).unwrap().set_balance(Currency::CAS, 1);
        assert_eq!(accounts.get(&address(9)).unwrap().balance(&Currency::CAS), 1);
        let sum: i64 = accounts.values().map(|a| a.balance(&Currency::CAS)).sum();
        let par: i64 = accounts.par_values().map(|a| a.balance(&Currency::CAS)).sum();
        assert_eq!(sum, par);
        assert_eq!(accounts.values().count(), 1_000);
    }
}
