//! The host thread's loop: events from the queue, timers and gossip when due, and the
//! metrics exported after each round of work; what each event and each peer frame does.

use std::{
    cmp::Reverse,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use consensus::{Fault, Message, Network, PeerId, Storage};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use engine::{
    Encode,
    codec::{Reader, decode_exact},
    tx::{SignedTransaction, TxId},
};
use net::frame::Channel;
use pipeline::Origin;

use super::{Event, Host, Io, Link, peers::GOSSIP_FLUSH};
use crate::{
    network::PeerIndex,
    wire::{GOSSIP_TXS_MAX, Sync as SyncMsg, decode_txs},
};

impl Host {
    /// Handles events, timers and gossip until `stop` (or until every sender of events is
    /// gone), then syncs the write-ahead log.
    pub(super) fn run(&mut self, events: &Receiver<Event>, stop: &AtomicBool) -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wait = Duration::from_millis(50);
            if let Some(Reverse((at, _))) = self.io.timers.peek() {
                wait = wait.min(at.saturating_duration_since(now));
            }
            if let Some(at) = self.io.gossip_due {
                wait = wait.min(at.saturating_duration_since(now));
            }
            match events.recv_timeout(wait) {
                Ok(e) => {
                    self.event(e)?;
                    // Drain what is queued before looking at timers again, unless one is due
                    // (a height's start, a round's timeout: late, they slow the whole network).
                    for _ in 0..1024 {
                        if self.io.timers.peek().is_some_and(|Reverse((at, _))| *at <= Instant::now()) {
                            break;
                        }
                        match events.try_recv() {
                            Ok(e) => self.event(e)?,
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            while let Some(Reverse((at, seq))) = self.io.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.io.timers.pop();
                if let Some(t) = self.io.timer_kinds.remove(&seq) {
                    self.driver.on_timer(&mut self.io, t)?;
                }
            }
            if self.io.gossip_due.is_some_and(|at| at <= now) {
                self.io.flush_gossip();
            }
            self.io.reload_peers();
            self.export_metrics();
        }
        self.io.wal_sync().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Copies the driver's and the intake's figures into the metrics the admin endpoint serves.
    fn export_metrics(&mut self) {
        let m = &self.io.metrics;
        let stats = self.driver.stats();
        if let Some(core) = self.driver.core() {
            self.io.clocks.at_round((core.height(), core.round()), m);
            m.round.store(u64::from(core.round()), Ordering::Relaxed);
            m.rounds_started.store(core.stats().rounds_started, Ordering::Relaxed);
        }
        let mempool = self.io.intake.mempool();
        m.pool_size.store(mempool.len() as u64, Ordering::Relaxed);
        m.pool_admit_txs.store(mempool.admit_limit() as u64, Ordering::Relaxed);
        m.intake_queued_txs.store(mempool.queued_txs(), Ordering::Relaxed);
        let intake = self.io.intake.metrics();
        m.rejected_txs.store(intake.rejected_total(), Ordering::Relaxed);
        m.intake_rebases[0].store(intake.rebased_in_place, Ordering::Relaxed);
        m.intake_rebases[1].store(intake.rebased_again, Ordering::Relaxed);
        m.certified_ledgers.store(stats.certified_ledgers, Ordering::Relaxed);
        m.synced_ledgers.store(stats.synced_ledgers, Ordering::Relaxed);
        m.refused_ledgers.store(stats.refused_ledgers, Ordering::Relaxed);
        m.divergent_ledgers.store(stats.divergent_ledgers, Ordering::Relaxed);
        m.bad_messages.store(stats.bad_messages, Ordering::Relaxed);
        m.ignored_messages.store(stats.ignored_messages, Ordering::Relaxed);
        m.refused_signatures.store(stats.refused_signatures, Ordering::Relaxed);
        m.wal_compactions.store(stats.wal_compactions, Ordering::Relaxed);
        m.fetched_known_txs.store(stats.fetched_known_txs, Ordering::Relaxed);
        m.height_bytes.store(self.driver.height_bytes() as u64, Ordering::Relaxed);
        let validators = self.driver.chain().state().validators().validators().len() as u64;
        m.tolerated_faults.store(validators.saturating_sub(1) / 3, Ordering::Relaxed);
    }

    /// Handles one event from the queue.
    fn event(&mut self, e: Event) -> anyhow::Result<()> {
        match e {
            Event::Connected { peer, generation, handle, serve, close } => {
                if let Some(slot) = self.io.peers.get_mut(peer) {
                    slot.link = Some(Link { generation, handle, serve, close });
                }
            }
            Event::Disconnected { peer, generation } => {
                if let Some(slot) = self.io.peers.get_mut(peer) {
                    if slot.link.as_ref().is_some_and(|l| l.generation == generation) {
                        slot.link = None;
                    }
                }
            }
            Event::Frame { peer, channel, payload, slot: _slot } => {
                // A penalized peer is not heard until its ban ends (frames already queued
                // included).
                if !self.io.bans.banned(peer) {
                    self.frame(peer, channel, &payload)?;
                }
            }
            Event::Admitted { txs, from, fetched, refused } => {
                // Bodies a peer gossiped or sent as asked that do not decode or verify: no honest
                // peer sends them (it verified them before).
                if let (Some(peer), true) = (from, refused > 0) {
                    self.driver.on_bad_body(&mut self.io, peer as PeerId);
                }
                if fetched {
                    self.io.metrics.fetched_txs.fetch_add(txs.len() as u64, Ordering::Relaxed);
                    let txs = txs.into_iter().map(Arc::unwrap_or_clone).collect();
                    self.driver.on_transactions(&mut self.io, txs, true)?;
                    return Ok(());
                }
                let ids: Vec<TxId> = txs.iter().map(|v| v.id).collect();
                if from.is_none() {
                    self.io.clocks.admitted(ids.iter().copied());
                }
                self.driver.on_pooled(&mut self.io, &ids)?;
                // A client's transactions are gossiped on once the pool takes them.
                if from.is_none() && self.io.gossip_out.len() < limits::GOSSIP_QUEUE_TXS_MAX {
                    self.io.gossip_out.extend(txs.iter().map(|v| v.tx.clone()));
                    self.io.gossip_due.get_or_insert_with(|| Instant::now() + GOSSIP_FLUSH);
                }
                if self.io.gossip_out.len() >= GOSSIP_TXS_MAX {
                    self.io.flush_gossip();
                }
            }
        }
        Ok(())
    }

    /// Handles one frame from a peer, by channel.
    fn frame(&mut self, peer: PeerIndex, channel: Channel, payload: &[u8]) -> anyhow::Result<()> {
        // What cannot even be decoded is no honest peer's: it costs the peer.
        let malformed = |io: &mut Io| io.penalize(peer as PeerId, Fault::BadMessage);
        match channel {
            Channel::Consensus => match decode_exact::<Message>(payload) {
                Ok(message) => {
                    // A message for height h: the sender has the ledgers below it.
                    self.io.metrics.peer_at(peer, message.height().saturating_sub(1));
                    self.driver.on_message(&mut self.io, peer as PeerId, message)?;
                }
                Err(_) => malformed(&mut self.io),
            },
            Channel::Gossip => match decode_txs(&mut Reader::new(payload), GOSSIP_TXS_MAX) {
                Ok(bodies) => {
                    if self.io.intake.try_submit(Origin::Peer(peer as u32), bodies).is_err() {
                        self.io.metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => malformed(&mut self.io),
            },
            Channel::Sync => match SyncMsg::decode(payload) {
                // Served by the connection's own server; one reaching here was sent to it.
                Ok(SyncMsg::LedgerRequest(h)) => self.io.send_ledger(peer as PeerId, h),
                Ok(SyncMsg::Fetch(ids)) => {
                    if self.io.fetch_allowed(peer, ids.len()) {
                        let bodies = self.driver.bodies(&ids);
                        for chunk in bodies.chunks(GOSSIP_TXS_MAX) {
                            let raw: Vec<Vec<u8>> = chunk.iter().map(Encode::to_bytes).collect();
                            self.io.send(peer, Channel::Sync, SyncMsg::Bodies(raw).encode());
                        }
                    } else {
                        self.io.metrics.dropped_requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(SyncMsg::Bodies(bodies)) => self.bodies(peer, &bodies),
                Ok(SyncMsg::Ledger(l)) => {
                    self.io.metrics.peer_at(peer, l.header.height);
                    self.driver.on_ledger(&mut self.io, peer as PeerId, &l)?;
                }
                Ok(SyncMsg::Evidence(proof)) => {
                    self.driver.on_evidence(&mut self.io, peer as PeerId, &proof)?
                }
                Ok(SyncMsg::NotKept { height, first_kept }) => self.io.not_kept(peer, height, first_kept),
                // Snapshot requests are answered by the connection's server before the host
                // sees them; a running process never asks for a record, so one is unsolicited.
                Ok(
                    SyncMsg::SnapshotRequest { .. } | SyncMsg::SnapshotRecord { .. } | SyncMsg::NoSnapshot,
                ) => {}
                Err(_) => malformed(&mut self.io),
            },
            Channel::Control => {}
        }
        Ok(())
    }

    /// Bodies from a peer: those a check waits for are verified on the intake's pool (bounded;
    /// a full queue drops them and the check fetches again), the rest dropped unverified. Each
    /// is decoded here once (its id says whether a check waits for it) and handed over decoded.
    fn bodies(&mut self, peer: PeerIndex, bodies: &[Vec<u8>]) {
        let chain_id = self.driver.chain().state().params().chain_id.clone();
        let total = bodies.len();
        let wanted: Vec<(SignedTransaction, TxId)> = bodies
            .iter()
            .filter_map(|b| SignedTransaction::decode_with_id(b, &chain_id).ok())
            .filter(|(_, id)| self.driver.wants(id))
            .collect();
        let unsolicited = total - wanted.len();
        if unsolicited > 0 {
            self.io.metrics.unsolicited_bodies.fetch_add(unsolicited as u64, Ordering::Relaxed);
        }
        if !wanted.is_empty()
            && self.io.intake.try_submit_decoded(Origin::Fetched(peer as u32), wanted).is_err()
        {
            self.io.metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}
