//! The host thread of a networked process and what it owns (see the crate's documentation).
//!
//! - `start`: start-up and shutdown of the process around the host thread;
//! - `ingress`: the events queued for the host thread;
//! - `actor`: the host thread's loop and its handling of each event;
//! - `io`: the driver's environment (network, timers, storage) as the host executes it;
//! - `peers`: the live links to peers, sending, gossip batching and fetch budgets.

mod actor;
mod ingress;
mod io;
mod peers;
mod start;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::Arc,
    time::Instant,
};

use consensus::{Driver, Timer};
use engine::tx::SignedTransaction;
use net::conn::PeerHandle;
use pipeline::Intake;
use storage::Store;

pub(crate) use self::{ingress::Event, start::run};
use crate::{config::Role, metrics::Metrics, network::Bans, signer::SignerFile, wal::Wal};

/// A live connection to a peer.
struct Link {
    generation: u64,
    handle: PeerHandle,
    serve: crate::network::ServeHandle,
    close: tokio::sync::watch::Sender<bool>,
}

struct PeerSlot {
    spec: crate::config::PeerSpec,
    link: Option<Link>,
    /// Bodies this peer may still fetch now (refilled at [`limits::FETCH_IDS_PER_SECOND`]).
    fetch_budget: f64,
    fetch_at: Instant,
}

/// The host: the driver, and everything it runs against.
struct Host {
    driver: Driver,
    io: Io,
}

/// The environment of the driver: peers, timers, store, log, signing state, and what a
/// committed ledger is handed to.
struct Io {
    intake: Intake,
    role: Role,
    /// Print a line per committed ledger on stdout (a validator alone: there is no admin port).
    announce: bool,
    store: Store,
    wal: Option<Wal>,
    signer: Option<SignerFile>,
    peers: Vec<PeerSlot>,
    bans: Arc<Bans>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_kinds: HashMap<u64, Timer>,
    timer_seq: u64,
    metrics: Arc<Metrics>,
    /// What the host times for the metrics' histograms.
    clocks: crate::metrics::Clocks,
    gossip_out: Vec<SignedTransaction>,
    gossip_due: Option<Instant>,
    sync_cursor: usize,
    /// The last height a peer answered it does not keep (logged once a height).
    not_kept_logged: u64,
    explorer: Option<Arc<explorer::Explorer>>,
    replicator: Option<Arc<storage::Replicator>>,
    /// The snapshots this process takes and serves (`None`: none).
    snapshots: Option<Arc<crate::snapshots::Snapshots>>,
    /// The network's peers, which SIGHUP adds to from the configuration file (`None`: alone).
    peer_set: Option<crate::network::PeerSet>,
    /// The configuration file, and the flag SIGHUP sets to have it read again.
    reload: (std::path::PathBuf, Arc<std::sync::atomic::AtomicBool>),
}
