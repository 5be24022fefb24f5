//! Where the replicator reads committed ledgers.

use std::sync::{Mutex, PoisonError, RwLock};

use engine::{
    ledger::{Certificate, LedgerHeader},
    tx::SignedTransaction,
};

use crate::{Store, StoreError};

/// One committed ledger as the replicator reads it: header, certificate and transactions in
/// block order.
pub type SourceLedger = (LedgerHeader, Certificate, Vec<SignedTransaction>);

/// Committed ledgers, read-only. Called from the replicator's writer threads, concurrently.
pub trait LedgerSource: Send + Sync + 'static {
    /// Height of the last committed ledger.
    fn head(&self) -> Result<u64, StoreError>;

    /// Ledger `height`, if committed.
    fn ledger(&self, height: u64) -> Result<Option<SourceLedger>, StoreError>;

    /// Timestamp of ledger `height`, if committed (for the lag metric). The default reads the
    /// whole ledger; a source with cheap headers should say so.
    fn timestamp_ms(&self, height: u64) -> Result<Option<i64>, StoreError> {
        Ok(self.ledger(height)?.map(|(header, _, _)| header.timestamp_ms))
    }
}

// The store's readers (`head`, `header`, `block`) each open their own MDBX read transaction,
// and an MDBX environment may be read from any thread: `Store` is `Sync`, so an `Arc<Store>`
// nobody commits to can be replicated directly. A store that is still being committed to is
// shared behind a lock (below); each read holds it for one ledger only.
const _: fn() = || {
    fn sync<T: Send + Sync>() {}
    sync::<Store>();
};

// Headers and blocks are written with every commit: the store's reader sees every committed
// ledger (and reads header and block in one transaction).
impl LedgerSource for Store {
    fn head(&self) -> Result<u64, StoreError> {
        LedgerSource::head(&self.reader())
    }

    fn ledger(&self, height: u64) -> Result<Option<SourceLedger>, StoreError> {
        LedgerSource::ledger(&self.reader(), height)
    }

    fn timestamp_ms(&self, height: u64) -> Result<Option<i64>, StoreError> {
        LedgerSource::timestamp_ms(&self.reader(), height)
    }
}

// A poisoned lock only means another thread panicked while holding it; the store's reads go
// through MDBX transactions, which see the last committed ledger whatever happened.
impl LedgerSource for Mutex<Store> {
    fn head(&self) -> Result<u64, StoreError> {
        LedgerSource::head(&*self.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn ledger(&self, height: u64) -> Result<Option<SourceLedger>, StoreError> {
        self.lock().unwrap_or_else(PoisonError::into_inner).ledger(height)
    }

    fn timestamp_ms(&self, height: u64) -> Result<Option<i64>, StoreError> {
        LedgerSource::timestamp_ms(&*self.lock().unwrap_or_else(PoisonError::into_inner), height)
    }
}

impl LedgerSource for RwLock<Store> {
    fn head(&self) -> Result<u64, StoreError> {
        LedgerSource::head(&*self.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn ledger(&self, height: u64) -> Result<Option<SourceLedger>, StoreError> {
        self.read().unwrap_or_else(PoisonError::into_inner).ledger(height)
    }

    fn timestamp_ms(&self, height: u64) -> Result<Option<i64>, StoreError> {
        LedgerSource::timestamp_ms(&*self.read().unwrap_or_else(PoisonError::into_inner), height)
    }
}
