//! A process: validator (consensus, with its peers or — a set of one — alone), node or explorer
//! (followers that sync certified ledgers). One host thread owns the consensus core, the chain (pool and committed state), the
//! store and the write-ahead log, and executes the core's effects; the network and the admin
//! endpoint run on a small tokio runtime; signature verification of gossiped and fetched
//! transactions runs on the rayon pool.
//!
//! ```text
//! network tasks ─┐                         ┌─> peers (consensus, gossip, sync channels)
//! submit threads ├─> bounded event queue ─> host thread ─> store (MDBX), wal, metrics
//! rayon verify  ─┘            (drops when full, counted)
//! ```

mod admin;
pub mod ceremony;
mod config;
mod host;
pub mod identity;
mod metrics;
mod network;
mod run;
pub mod signer;
mod snapshots;
pub mod wal;
mod wire;

pub use self::{
    admin::{get as admin_get, metric},
    config::{ClickHouseSection, ConfigFile, NodeConfig, PeerSpec, Role},
    run::{run, transparent_huge_pages_off},
};
