//! What reaches the host thread: the events the network, the intake and the submit server
//! queue for it (bounded; see the crate's documentation).

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
    /// Transactions whose signatures verified (`from`: the peer that sent them; `None`: a
    /// client of this process, so they are gossiped on; `fetched`: bodies this node asked for
    /// because a proposal named them, `refused` of them failing).
    Verified { txs: Vec<VerifiedTx>, from: Option<PeerIndex>, fetched: bool, refused: usize },
}
