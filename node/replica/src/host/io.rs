//! The driver's environment as the host executes it: the clock, the network (broadcast,
//! ledger requests, fetches, penalties), timers, and storage (the write-ahead log, the signing
//! state, committed ledgers and evidence).

use std::{
    cmp::Reverse,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use consensus::{
    Clock, Committed, Equivocation, Fault, Message, Network, PeerId, SignState, Storage, StorageError, Timer,
    Timers, WalRecord,
};
use engine::{Encode, clock::now_ms, state::State, tx::TxId};
use net::frame::Channel;
use storage::LedgerToCommit;

use super::Io;
use crate::{
    config::Role,
    network::PeerIndex,
    wire::{self, Sync as SyncMsg},
};

/// A storage failure as the driver reports it.
fn storage_error(e: impl std::fmt::Display) -> StorageError {
    StorageError(e.to_string())
}

impl Clock for Io {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

impl Network for Io {
    fn broadcast(&mut self, message: &Message) {
        self.send_validators(Channel::Consensus, &message.to_bytes());
    }

    fn request_ledger(&mut self, peer: Option<PeerId>, height: u64) {
        let msg = SyncMsg::LedgerRequest(height).encode();
        match peer {
            Some(p) => self.send(p as PeerIndex, Channel::Sync, msg),
            None => {
                let connected: Vec<PeerIndex> = self.validator_peers().map(|(i, _)| i).collect();
                if !connected.is_empty() {
                    self.sync_cursor = (self.sync_cursor + 1) % connected.len();
                    self.send(connected[self.sync_cursor], Channel::Sync, msg);
                }
            }
        }
    }

    fn send_ledger(&mut self, peer: PeerId, height: u64) {
        if let Some(link) = self.peers.get(peer as PeerIndex).and_then(|p| p.link.as_ref()) {
            if !link.serve.serve(height) {
                self.metrics.dropped_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn fetch(&mut self, peer: Option<PeerId>, ids: &[TxId]) {
        let peer = match peer {
            Some(p) => Some(p as PeerIndex),
            None => {
                let connected: Vec<PeerIndex> = self.validator_peers().map(|(i, _)| i).collect();
                self.sync_cursor = self.sync_cursor.wrapping_add(1);
                connected.get(self.sync_cursor % connected.len().max(1)).copied()
            }
        };
        if let Some(peer) = peer {
            for chunk in ids.chunks(wire::FETCH_IDS_MAX) {
                self.send(peer, Channel::Sync, SyncMsg::Fetch(chunk.to_vec()).encode());
            }
        }
    }

    fn penalize(&mut self, peer: PeerId, fault: Fault) {
        let peer = peer as PeerIndex;
        let span = self.bans.ban(peer);
        self.metrics.penalties.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.peers.get_mut(peer) {
            eprintln!(
                "caasiope: peer {} disconnected for {span:?}: {} (what no honest peer sends)",
                slot.spec.name,
                fault.name()
            );
            if let Some(link) = slot.link.take() {
                let _ = link.close.send(true);
            }
        }
    }
}

impl Io {
    /// A peer answered that it no longer keeps ledger `height` (it keeps from `first_kept` on):
    /// counted, and said once a height; the next retry asks another peer. Costs the peer
    /// nothing — a pruning peer is honest — and triggers no request (a peer cannot make this
    /// process send requests by saying it).
    pub(crate) fn not_kept(&mut self, peer: PeerIndex, height: u64, first_kept: u64) {
        self.metrics.not_kept_answers.fetch_add(1, Ordering::Relaxed);
        if height != self.not_kept_logged {
            self.not_kept_logged = height;
            let name = self.peers.get(peer).map_or("?", |p| p.spec.name.as_str());
            eprintln!(
                "caasiope: peer {name} no longer keeps ledger {height} (it keeps from {first_kept} on); asking other peers — if none keeps it, start from a store copied from an archive (an explorer keeps every ledger)"
            );
        }
    }
}

impl Timers for Io {
    fn schedule(&mut self, timer: Timer, after_ms: u64) {
        self.timer_seq += 1;
        self.timers.push(Reverse((Instant::now() + Duration::from_millis(after_ms), self.timer_seq)));
        self.timer_kinds.insert(self.timer_seq, timer);
    }
}

impl Storage for Io {
    fn wal_reset(&mut self, records: &[WalRecord]) -> Result<u64, StorageError> {
        let wal = self.wal.as_mut().ok_or_else(|| storage_error("no consensus log"))?;
        let bytes = wal.reset(records).map_err(storage_error)?;
        self.metrics.wal_bytes.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    fn wal_start(&mut self, records: &[WalRecord]) -> Result<u64, StorageError> {
        let wal = self.wal.as_mut().ok_or_else(|| storage_error("no consensus log"))?;
        let bytes = wal.start(records).map_err(storage_error)?;
        self.metrics.wal_bytes.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    fn wal_append(&mut self, record: &WalRecord) -> Result<u64, StorageError> {
        let wal = self.wal.as_mut().ok_or_else(|| storage_error("no consensus log"))?;
        let bytes = wal.append(record).map_err(storage_error)?;
        self.metrics.wal_bytes.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    fn wal_sync(&mut self) -> Result<(), StorageError> {
        match self.wal.as_mut() {
            Some(wal) => wal.sync().map_err(storage_error),
            None => Ok(()),
        }
    }

    fn save_signer(&mut self, state: &SignState) -> Result<(), StorageError> {
        let signer = self.signer.as_mut().ok_or_else(|| storage_error("no signing state file"))?;
        signer.save(state).map_err(storage_error)
    }

    fn commit(&mut self, c: &Committed, state: &State) -> Result<(), StorageError> {
        let Committed { ledger, applied, diff } = c;
        let (store, metrics) = (&mut self.store, &self.metrics);
        crate::metrics::timed(
            |d| metrics.store_commit.observe(d),
            || {
                store.commit(LedgerToCommit {
                    applied,
                    transactions: &ledger.transactions,
                    certificate: &ledger.certificate,
                    state,
                })
            },
        )
        .map_err(|e| storage_error(format!("storing ledger {}: {e}", ledger.header.height)))?;
        self.clocks.committed(&applied.tx_ids, &self.metrics);
        let height = ledger.header.height;
        if self.announce {
            println!(
                "ledger {height} txs {} hash {} state {}",
                ledger.transactions.len(),
                applied.hash,
                ledger.header.state_root
            );
        }
        self.metrics.ledger_height.store(height, Ordering::Relaxed);
        let (replay_ids, filter_bytes) = state.replay_memory();
        self.metrics.replay_ids_in_memory.store(replay_ids as u64, Ordering::Relaxed);
        self.metrics.replay_filter_bytes.store(filter_bytes.unwrap_or(0) as u64, Ordering::Relaxed);
        self.metrics.first_kept_height.store(self.store.first_kept(), Ordering::Relaxed);
        self.metrics.committed_txs.fetch_add(ledger.transactions.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        self.metrics.last_commit_unix_ms.store(now as u64, Ordering::Relaxed);
        self.metrics.record_commit(height, now, applied.tx_ids.clone());
        // The ledger's replay window, shared by every copy that follows the state (taken once:
        // it copies the ids not yet sealed).
        let window = state.replay_window();
        if let Some(x) = &self.explorer {
            x.publish(state, diff, window.clone(), &ledger.certificate);
        }
        if let Some(r) = &self.replicator {
            r.notify();
        }
        if let Some(s) = &self.snapshots {
            s.committed(height, &self.store);
        }
        // The intake's post-state moves onto the new committed state (by its diff: a copy of the
        // state would cost what the state holds, every ledger).
        self.intake.rebase(diff.clone(), state, window).map_err(|_| storage_error("the intake stopped"))?;
        // Followers get each ledger pushed (and poll for what they miss).
        if self.role == Role::Validator {
            let mut bytes = None;
            for i in 0..self.peers.len() {
                let slot = &self.peers[i];
                // Encoded once, and only if a follower is connected to take it.
                if slot.spec.role != Role::Validator && slot.link.is_some() {
                    let bytes = bytes.get_or_insert_with(|| SyncMsg::encode_ledger(ledger)).clone();
                    self.send(i, Channel::Sync, bytes);
                }
            }
        }
        Ok(())
    }

    fn evidence(&mut self, proof: &Equivocation, offender: &engine::PublicKey) -> Result<(), StorageError> {
        let key = storage::EvidenceKey {
            height: proof.height(),
            round: proof.round(),
            validator: proof.offender(),
            kind: proof.kind_code(),
        };
        let bytes = proof.to_bytes();
        let kept = self.store.add_evidence(key, offender, &bytes).map_err(storage_error)?;
        if !kept {
            return Ok(());
        }
        self.metrics.equivocations.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "caasiope: validator {} ({}) equivocated at height {} round {} ({})",
            proof.offender(),
            offender.to_hex(),
            proof.height(),
            proof.round(),
            proof.kind()
        );
        // The nodes and explorers that serve evidence get it too (they check it themselves).
        let msg = SyncMsg::Evidence(Box::new(proof.clone())).encode();
        for i in 0..self.peers.len() {
            if self.peers[i].spec.role != Role::Validator {
                self.send(i, Channel::Sync, msg.clone());
            }
        }
        Ok(())
    }
}
