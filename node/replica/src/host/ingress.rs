//! What reaches the host thread: the events the network, the intake and the submit server
//! queue for it (bounded; see the crate's documentation).

use std::sync::Arc;

use engine::validate::VerifiedTx;
use net::{conn::PeerHandle, frame::Channel};

use crate::network::{PeerIndex, ServeHandle};

/// What reaches the host thread.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection to a peer is up: its handle, its ledger server, and what closes it.
    Connected {
        peer: PeerIndex,
        generation: u64,
        handle: PeerHandle,
        serve: ServeHandle,
        close: tokio::sync::watch::Sender<bool>,
    },
    /// It ended.
    Disconnected { peer: PeerIndex, generation: u64 },
    /// A frame from a peer: its bytes and its slot stay counted against the peer's budgets until
    /// the host drops it.
    Frame {
        peer: PeerIndex,
        channel: Channel,
        payload: net::conn::Payload,
        slot: tokio::sync::OwnedSemaphorePermit,
    },
    /// What the intake made of a batch (`from`: the peer that sent it; `None`: a client of
    /// this process, so what was admitted is gossiped on). Admitted transactions are in the
    /// mempool already; `fetched`: bodies this node asked for because a proposal named them,
    /// verified and not admitted, for the host to pool. `refused` of the batch failed to
    /// decode or verify.
    Admitted { txs: Vec<Arc<VerifiedTx>>, from: Option<PeerIndex>, fetched: bool, refused: usize },
}
