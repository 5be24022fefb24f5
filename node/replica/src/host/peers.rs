//! The host's side of its peers: sending on their links (counting what a full queue drops),
//! batching the gossip of client transactions, and the budgets of bodies they may fetch.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::PeerSlot;
use crate::config::NodeConfig;

use net::{conn::PeerHandle, frame::Channel};

use super::Io;
use crate::{
    config::Role,
    network::PeerIndex,
    wire::{GOSSIP_TXS_MAX, encode_txs},
};

/// Gossip is flushed at least this often.
pub(super) const GOSSIP_FLUSH: Duration = Duration::from_millis(5);
/// Gossip waiting for a validator to connect is retried this often.
const GOSSIP_RETRY: Duration = Duration::from_millis(100);

impl Io {
    /// After SIGHUP: the configuration's `[[peers]]` read again, and those with an identity not
    /// listed before added — accepted from now on, dialed as at start (a member that joined the
    /// network). Any other change (a peer's address or role, a removed peer, the rest of the
    /// file) takes a restart: it is said, not applied.
    pub(super) fn reload_peers(&mut self) {
        if !self.reload.1.swap(false, Ordering::Relaxed) {
            return;
        }
        let cfg = match NodeConfig::load(&self.reload.0) {
            Ok(cfg) => cfg,
            Err(e) => {
                return eprintln!("caasiope: reloading {}: {e:#}; nothing changed", self.reload.0.display());
            }
        };
        let (Some(set), Some(net)) = (&self.peer_set, cfg.net) else {
            return eprintln!("caasiope: reload: no network to add peers to; nothing changed");
        };
        let mut added = 0;
        for (spec, id) in net.peers {
            if let Some(known) = self.peers.iter().find(|p| p.spec.identity == spec.identity) {
                if known.spec.name != spec.name
                    || known.spec.addr != spec.addr
                    || known.spec.role != spec.role
                {
                    eprintln!("caasiope: reload: peer {} changed: takes a restart", known.spec.name);
                }
                continue;
            }
            if self.peers.iter().any(|p| p.spec.name == spec.name) {
                eprintln!("caasiope: reload: peer {} has a new identity: takes a restart", spec.name);
                continue;
            }
            let index = self.peers.len();
            // The metrics keep a link for each peer there is room for (the host's queue too).
            if !self.metrics.name_peer(index, spec.name.clone()) {
                eprintln!("caasiope: reload: no room for peer {} (restart to add more)", spec.name);
                break;
            }
            self.peers.push(PeerSlot {
                spec: spec.clone(),
                link: None,
                fetch_budget: limits::FETCH_IDS_PER_SECOND,
                fetch_at: Instant::now(),
            });
            match set.add(&spec, id) {
                Ok(i) => debug_assert_eq!(i, index, "the host's and the network's peers in step"),
                Err(e) => eprintln!("caasiope: reload: dialing peer {}: {e:#}", spec.name),
            }
            eprintln!("caasiope: peer {} ({} at {}) added", spec.name, spec.identity, spec.addr);
            added += 1;
        }
        eprintln!("caasiope: configuration reloaded: {added} peer(s) added");
    }

    /// The validators with a live link, and their handles.
    pub(super) fn validator_peers(&self) -> impl Iterator<Item = (PeerIndex, &PeerHandle)> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.spec.role == Role::Validator)
            .filter_map(|(i, p)| p.link.as_ref().map(|l| (i, &l.handle)))
    }

    /// Sends to `peer` if it has a live link (else the frame is dropped: see [`Self::send_to`]).
    pub(super) fn send(&self, peer: PeerIndex, channel: Channel, payload: Vec<u8>) {
        if let Some(link) = self.peers.get(peer).and_then(|p| p.link.as_ref()) {
            self.send_to(&link.handle, channel, payload);
        }
    }

    /// Sends to every validator with a live link.
    pub(super) fn send_validators(&self, channel: Channel, payload: &[u8]) {
        for (_, handle) in self.validator_peers() {
            self.send_to(handle, channel, payload.to_vec());
        }
    }

    /// A full queue means a slow peer: consensus re-broadcasts, sync is re-requested, gossip
    /// is best effort (a proposal naming what did not arrive has it fetched). Counted.
    fn send_to(&self, handle: &PeerHandle, channel: Channel, payload: Vec<u8>) {
        if let Err(net::conn::SendError::Full(_)) = handle.send(channel, payload) {
            self.metrics.dropped_sends[channel as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the client transactions waiting to be gossiped to the validators, in messages of
    /// at most [`GOSSIP_TXS_MAX`].
    pub(super) fn flush_gossip(&mut self) {
        self.gossip_due = None;
        if self.validator_peers().next().is_none() {
            // Nobody to hand them to yet (starting, or every link down): keep them (bounded
            // where they are queued) and try again shortly.
            if !self.gossip_out.is_empty() {
                self.gossip_due = Some(Instant::now() + GOSSIP_RETRY);
            }
            return;
        }
        let out = std::mem::take(&mut self.gossip_out);
        for chunk in out.chunks(GOSSIP_TXS_MAX) {
            self.send_validators(Channel::Gossip, &encode_txs(chunk));
        }
    }

    /// Whether `peer` may have `n` more bodies served now (its budget refilled with time).
    pub(super) fn fetch_allowed(&mut self, peer: PeerIndex, n: usize) -> bool {
        let Some(slot) = self.peers.get_mut(peer) else { return false };
        let now = Instant::now();
        let refill = now.duration_since(slot.fetch_at).as_secs_f64() * limits::FETCH_IDS_PER_SECOND;
        slot.fetch_budget = (slot.fetch_budget + refill).min(2.0 * limits::FETCH_IDS_PER_SECOND);
        slot.fetch_at = now;
        if slot.fetch_budget >= n as f64 {
            slot.fetch_budget -= n as f64;
            true
        } else {
            false
        }
    }
}
