//! What a driver needs of its environment ([`Clock`], [`Network`], [`Timers`], [`Storage`]),
//! the timers it schedules, and how it fails (a local failure, never a peer's doing).

use engine::{Hash, PublicKey, state::State, tx::TxId};

use crate::{
    chain::{ChainError, Committed},
    core::{PeerId, Timeout},
    evidence::Equivocation,
    message::Message,
    signer::SignState,
    wal::WalRecord,
};

/// The wall clock (unix milliseconds): proposal timestamps and their drift are judged by it.
pub trait Clock {
    /// Now, unix ms.
    fn now_ms(&self) -> i64;
}

/// Peers. Sends never block and may be dropped (a slow peer); what matters is re-sent.
pub trait Network {
    /// A consensus message to every validator peer.
    fn broadcast(&mut self, message: &Message);
    /// Ask `peer` (any validator peer if `None`) for the committed ledger at `height`.
    fn request_ledger(&mut self, peer: Option<PeerId>, height: u64);
    /// Send `peer` the committed ledger at `height` (served from storage, bounded per peer).
    fn send_ledger(&mut self, peer: PeerId, height: u64);
    /// Ask `peer` (another validator peer, chosen by the host, if `None`) for the bodies of
    /// these transactions.
    fn fetch(&mut self, peer: Option<PeerId>, ids: &[TxId]);
    /// `peer` sent what no honest peer sends: disconnect it, for a while.
    fn penalize(&mut self, peer: PeerId, fault: Fault);
}

/// Timers: each fires once, as [`crate::Driver::on_timer`].
pub trait Timers {
    /// Fire `timer` after `after_ms`.
    fn schedule(&mut self, timer: Timer, after_ms: u64);
}

/// Durable storage. Every method returns once its write is durable, unless it says otherwise.
pub trait Storage {
    /// Replaces the write-ahead log with `records` (a new height, or a compaction); returns the
    /// log's size in bytes.
    fn wal_reset(&mut self, records: &[WalRecord]) -> Result<u64, StorageError>;
    /// Starts the log of a new height with `records`, the log before holding nothing a restart
    /// needs (it is of a committed height, or of none this validator signed at). Unlike
    /// [`Storage::wal_reset`] neither atomic nor durable at once: the records are durable at
    /// the next [`Storage::wal_sync`], before anything this validator signs leaves; a crash
    /// before that leaves the old log, an empty one, or the new one with a torn tail, each
    /// replayed safely. Returns the log's size in bytes.
    fn wal_start(&mut self, records: &[WalRecord]) -> Result<u64, StorageError>;
    /// Appends one record (buffered: durable at the next [`Storage::wal_sync`]); returns the
    /// log's size in bytes.
    fn wal_append(&mut self, record: &WalRecord) -> Result<u64, StorageError>;
    /// Makes every appended input durable.
    fn wal_sync(&mut self) -> Result<(), StorageError>;
    /// Persists the signing state.
    fn save_signer(&mut self, state: &SignState) -> Result<(), StorageError>;
    /// Stores a committed ledger and the state it leads to (and tells the host's readers).
    fn commit(&mut self, committed: &Committed, state: &State) -> Result<(), StorageError>;
    /// Keeps an equivocation proof that checked under its height's set, whose offender has
    /// this key (bounded per validator by the store), and tells the nodes that serve evidence.
    fn evidence(&mut self, proof: &Equivocation, offender: &PublicKey) -> Result<(), StorageError>;
}

/// Everything a driver needs of its environment.
pub trait Env: Clock + Network + Timers + Storage {}
impl<T: Clock + Network + Timers + Storage> Env for T {}

/// A failed write: the host cannot go on safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// Why the driver stopped: a local failure, never a peer's doing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A value this validator decided (it had executed it) does not commit: a bug, or its own
    /// state is corrupt.
    #[error("cannot commit the decided ledger {height}: {error}")]
    Commit {
        /// Height.
        height: u64,
        /// Why.
        error: ChainError,
    },
    /// The core decided a ledger other than the one committed at its height from a peer: two
    /// certified ledgers at one height, which more than a third of the weight had to sign.
    #[error("decided {decided} at height {height} but committed {committed}")]
    Fork {
        /// Height.
        height: u64,
        /// The core's decision.
        decided: Hash,
        /// What was committed.
        committed: Hash,
    },
}

/// What a peer did that no honest peer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A consensus message that is forged or altered.
    BadMessage,
    /// A ledger whose certificate does not verify or whose transactions were altered.
    AlteredLedger,
    /// A transaction body it was asked for that fails verification.
    BadBody,
}

impl Fault {
    /// A label for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::AlteredLedger => "altered_ledger",
            Self::BadBody => "bad_body",
        }
    }
}

/// A timer of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A consensus timeout.
    Consensus(Timeout),
    /// Start this height (one block interval after the previous one started).
    StartNext(u64),
    /// Ask for the next ledger (followers, and a validator catching up).
    SyncPoll,
    /// Fetch the bodies a proposal of (height, value id) still lacks.
    Fetch(u64, Hash),
}
