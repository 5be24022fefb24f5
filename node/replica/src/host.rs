//! The host thread of a networked process and what it owns (see the crate's documentation).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use consensus::{
    Chain, ChainConfig, Clock, Committed, CommittedLedger, Config, Core, Driver, DriverConfig, Equivocation,
    Fault, Message, Network, PeerId, SignState, Storage, StorageError, Timeouts, Timer, Timers, WalRead,
    WalRecord,
};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use engine::{
    Encode, SecretKey,
    clock::now_ms,
    codec::{Reader, decode_exact},
    state::State,
    tx::{SignedTransaction, TxId},
    validate::VerifiedTx,
};
use exit::{Output, read_text};
use net::{NodeCert, conn::PeerHandle, frame::Channel, transport::Transport};
use pipeline::{Admitted, Intake, IntakeConfig, Origin};
use storage::{LedgerToCommit, Store};

pub(crate) use crate::admin::Metrics;
use crate::{
    admin,
    config::{NodeConfig, Role},
    network::{self, Bans, PeerIndex, ServeHandle, Shared},
    run::{open_store, serve_submissions},
    signer::SignerFile,
    wal::Wal,
    wire::{self, GOSSIP_TXS_MAX, Sync as SyncMsg, decode_txs, encode_txs},
};

/// Gossip is flushed at least this often.
const GOSSIP_FLUSH: Duration = Duration::from_millis(5);
/// Gossip waiting for a validator to connect is retried this often.
const GOSSIP_RETRY: Duration = Duration::from_millis(100);

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

/// A live connection to a peer.
struct Link {
    generation: u64,
    handle: PeerHandle,
    serve: ServeHandle,
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
    store: Store,
    wal: Option<Wal>,
    signer: Option<SignerFile>,
    peers: Vec<PeerSlot>,
    bans: Arc<Bans>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_kinds: HashMap<u64, Timer>,
    timer_seq: u64,
    metrics: Arc<Metrics>,
    gossip_out: Vec<SignedTransaction>,
    gossip_due: Option<Instant>,
    sync_cursor: usize,
    explorer: Option<Arc<explorer::Explorer>>,
    replicator: Option<Arc<storage::Replicator>>,
}

/// Runs a networked process until SIGINT or SIGTERM.
pub(crate) fn run(cfg: &NodeConfig) -> anyhow::Result<Output> {
    let Some(net_cfg) = cfg.net.clone() else { bail!("no network configuration") };
    let node = NodeCert::load(&net_cfg.node_dir)?;
    let transport = Transport::start(net_cfg.transport).context("starting the transport")?;
    let (mut store, state) = open_store(cfg)?;
    let chain_id = state.params().chain_id.clone();
    let key = match cfg.role {
        Role::Validator => {
            let path = cfg.validator_key.as_ref().context("a validator needs validator_key")?;
            let key =
                SecretKey::from_hex(read_text(path, limits::KEY_FILE_BYTES_MAX, "validator key")?.trim())
                    .with_context(|| format!("validator key {}", path.display()))?;
            Some(key)
        }
        Role::Node | Role::Explorer => None,
    };
    // Validators that share a machine write their index batches at different heights, spread
    // by their place in the set: one slow validator does not hold a quorum of four back.
    let set = state.validators();
    if let Some(i) = key.as_ref().and_then(|k| set.index_of(&k.public_key())) {
        store.stagger_index_batch((i + 1) as f64 / set.validators().len() as f64);
    }
    let drift_ms = (cfg.block_interval_ms as i64 * 5).max(5_000);
    let chain_cfg = ChainConfig {
        backend: cfg.backend,
        block_txs_max: limits::BLOCK_TXS_MAX,
        block_bytes_max: limits::BLOCK_BYTES_MAX,
        pool_max: limits::POOL_TXS_MAX,
        drift_ms,
    };
    let chain = Chain::new(state, chain_cfg);
    let metrics = Arc::new(Metrics::default());
    metrics.ledger_height.store(chain.state().head().height, Ordering::Relaxed);
    // Room for every peer's frames in flight, so one peer's flood never fills the queue for
    // the others.
    let events_max = limits::HOST_EVENTS_BASE + net_cfg.peers.len() * limits::FRAMES_IN_FLIGHT_PER_PEER;
    let (events_tx, events_rx) = crossbeam_channel::bounded(events_max);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let role_name: &'static str = match cfg.role {
        Role::Validator => "validator",
        Role::Node => "node",
        Role::Explorer => "explorer",
    };
    let transport_name = transport.name();
    eprintln!(
        "caasiope: {role_name} identity {} at height {}, transport {transport_name} ({}), p2p {}, admin {}, submit {}",
        node.identity(),
        chain.state().head().height,
        transport.reason,
        net_cfg.listen.map_or_else(|| "dial only".to_owned(), |a| a.to_string()),
        net_cfg.admin_listen,
        cfg.submit_listen
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("caasiope-net")
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    let bans = Arc::new(Bans::default());
    let ledgers: network::LedgerSource = {
        let reader = store.reader();
        Arc::new(move |height: u64| {
            let (header, certificate) = reader.header(height).ok().flatten()?;
            let transactions = reader.block(height).ok().flatten()?;
            Some(SyncMsg::encode_ledger(&CommittedLedger { header, certificate, transactions }))
        })
    };
    let shared = Shared::new(events_tx.clone(), metrics.clone(), bans.clone(), ledgers);
    runtime.block_on(async {
        let admin = tokio::net::TcpListener::bind(net_cfg.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", net_cfg.admin_listen))?;
        tokio::spawn(admin::serve(admin, metrics.clone(), role_name, transport_name));
        network::start(&net_cfg, cfg.role, &node, &chain_id, transport, shared).await
    })?;
    let (core, wal, signer, signed) = match key {
        Some(key) => {
            let core = Core::new(Config {
                chain_id,
                key: Some(key),
                backend: cfg.backend,
                timeouts: Timeouts::for_interval(cfg.block_interval_ms),
            });
            let (signer, signed) = SignerFile::open(&cfg.data_dir)?;
            (Some(core), Some(Wal::open(&cfg.data_dir)?), Some(signer), signed)
        }
        None => (None, None, None, None),
    };
    let explorer_slot = Arc::new(std::sync::OnceLock::<Arc<explorer::Explorer>>::new());
    // The validated-transaction pool is fed by the pipeline's consensus-mode intake: decode,
    // verification on its own pool, admission against the post-state (committed state + pool);
    // bodies fetched for a proposal are verified there too, and not admitted.
    let intake = {
        let events = events_tx.clone();
        let cfg = IntakeConfig {
            backend: cfg.backend,
            verify_threads: pipeline::verify_threads(),
            batch_txs_max: limits::STAGE_BATCH_TXS_MAX,
            queue_batches_max: limits::INTAKE_QUEUE_BATCHES_MAX,
            admitted_max: limits::POOL_TXS_MAX,
        };
        let explorer = explorer_slot.clone();
        let on_admitted = move |a: Admitted| {
            let (from, fetched) = match a.origin {
                Origin::Client => (None, false),
                Origin::Peer(p) => (Some(p as PeerIndex), false),
                Origin::Fetched(p) => (Some(p as PeerIndex), true),
            };
            // Blocks while the host is behind: pushes back on verification, not on memory.
            let _ = events.send(Event::Verified { txs: a.txs, from, fetched, refused: a.refused });
        };
        // The explorer API tells its clients why a transaction it accepted was refused later.
        let on_rejected = move |id: Option<TxId>, e: &engine::validate::TxError| {
            if let Some(x) = explorer.get() {
                x.rejected(id, e);
            }
        };
        Intake::start_reporting(chain.state().clone(), cfg, on_admitted, on_rejected)?
    };
    let now = Instant::now();
    let mut io = Io {
        intake,
        role: cfg.role,
        store,
        wal: None,
        signer,
        peers: net_cfg
            .peers
            .iter()
            .map(|(spec, _)| PeerSlot {
                spec: spec.clone(),
                link: None,
                fetch_budget: limits::FETCH_IDS_PER_SECOND,
                fetch_at: now,
            })
            .collect(),
        bans,
        timers: BinaryHeap::new(),
        timer_kinds: HashMap::new(),
        timer_seq: 0,
        metrics: metrics.clone(),
        gossip_out: Vec::new(),
        gossip_due: None,
        sync_cursor: 0,
        explorer: None,
        replicator: None,
    };
    if let Some(api_listen) = cfg.api_listen {
        let head = chain.state().head().height;
        let certificate =
            io.store.header(head)?.map(|(_, c)| c).unwrap_or_else(|| engine::ledger::Certificate::new(0));
        let genesis = engine::genesis::Genesis::from_toml(&read_text(
            &cfg.genesis,
            engine::limits::GENESIS_BYTES_MAX as u64,
            "genesis file",
        )?)?;
        let explorer = explorer::Explorer::new(explorer::ExplorerParts {
            genesis_validators: genesis.validators,
            state: chain.state().clone(),
            certificate,
            backend: cfg.backend,
            reader: io.store.reader(),
            submitter: io.intake.submitter().context("intake closed at start")?,
            host: Arc::new(admin::ProcessView {
                metrics: metrics.clone(),
                role: role_name,
                transport: transport_name,
            }),
        });
        let _ = explorer_slot.set(explorer.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(api_listen))
            .with_context(|| format!("cannot listen on {api_listen}"))?;
        runtime.spawn(explorer::serve(listener, explorer.clone()));
        eprintln!("caasiope: explorer API on http://{api_listen}/v1");
        io.explorer = Some(explorer);
    }
    if let Some(ch) = cfg.clickhouse.clone() {
        let genesis = engine::genesis::Genesis::from_toml(&read_text(
            &cfg.genesis,
            engine::limits::GENESIS_BYTES_MAX as u64,
            "genesis file",
        )?)?;
        eprintln!("caasiope: replicating into ClickHouse at {} (database {})", ch.url, ch.database);
        let replicator = Arc::new(
            storage::Replicator::start(ch, Arc::new(io.store.reader()), &genesis)
                .context("starting the ClickHouse replicator")?,
        );
        let r = Arc::downgrade(&replicator);
        let _ = metrics.extra.set(admin::ExtraMetrics(Box::new(move || {
            r.upgrade().map(|r| r.metrics_text()).unwrap_or_default()
        })));
        io.replicator = Some(replicator);
    }
    let submitter = io.intake.submitter().context("intake closed at start")?;
    let chain_id = chain.state().params().chain_id.clone();
    let driver_cfg = DriverConfig::for_interval(cfg.block_interval_ms);
    let mut host = Host { driver: Driver::new(driver_cfg, core, chain, signed), io };
    let read = match wal {
        Some((wal, read)) => {
            if let WalRead::Records(log) = &read {
                if !log.is_empty() {
                    eprintln!("caasiope: replaying {} logged consensus records", log.len());
                }
            }
            host.io.wal = Some(wal);
            read
        }
        None => WalRead::Records(Vec::new()),
    };
    host.driver.boot(&mut host.io, read).map_err(|e| anyhow::anyhow!("starting consensus: {e}"))?;
    if let Some(why) = host.driver.halted() {
        eprintln!("caasiope: {why}");
        metrics.signing_halted.store(1, Ordering::Relaxed);
    }
    // Submissions: decoded on the connection's thread (for the id and a clear error), then
    // handed to the intake, which verifies and admits them (or counts why not).
    drop(events_tx);
    let (metrics_submit, stop_submit) = (metrics, stop.clone());
    let accept = move |frames: Vec<Vec<u8>>| -> Vec<String> {
        if let Some(why) = metrics_submit.busy() {
            metrics_submit.busy_txs.fetch_add(frames.len() as u64, Ordering::Relaxed);
            return vec![format!("rejected busy: {why}"); frames.len()];
        }
        let (lines, batch) = crate::run::decode_frames(frames, &chain_id);
        if batch.is_empty() || submitter.submit(Origin::Client, batch).is_ok() {
            lines
        } else {
            lines.into_iter().map(|_| "rejected the process is stopping".to_owned()).collect()
        }
    };
    let submit_listen = cfg.submit_listen;
    let submit_thread = std::thread::Builder::new()
        .name("caasiope-submit".into())
        .spawn(move || serve_submissions(submit_listen, &accept, &stop_submit))
        .context("starting the submit server")?;
    let result = host.run(&events_rx, &stop);
    stop.store(true, Ordering::Relaxed);
    if let Some(x) = host.io.explorer.take() {
        x.close();
    }
    // The replicator finishes the batch it is writing (a kill instead loses nothing either).
    if let Some(r) = host.io.replicator.take().and_then(|r| Arc::try_unwrap(r).ok()) {
        r.stop();
    }
    // Nobody reads events any more: a stage blocked handing one over must see the queue closed.
    drop(events_rx);
    let _ = submit_thread.join();
    host.io.store.flush().context("flushing the store")?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    result?;
    eprintln!("caasiope: {role_name} stopped at height {}", host.driver.chain().state().head().height);
    Ok(Output::Nothing)
}

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
        let Committed { ledger, applied } = c;
        // The ledger's transactions have left the pool: clients are admitted from now on, not
        // once the ledger is stored (the next export sets the exact size, expired ones gone).
        let pool = self.metrics.pool_size.load(Ordering::Relaxed);
        self.metrics
            .pool_size
            .store(pool.saturating_sub(ledger.transactions.len() as u64), Ordering::Relaxed);
        self.store
            .commit(LedgerToCommit {
                applied,
                transactions: &ledger.transactions,
                certificate: &ledger.certificate,
                state,
            })
            .map_err(|e| storage_error(format!("storing ledger {}: {e}", ledger.header.height)))?;
        let height = ledger.header.height;
        self.metrics.ledger_height.store(height, Ordering::Relaxed);
        self.metrics.committed_txs.fetch_add(ledger.transactions.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        self.metrics.last_commit_unix_ms.store(now as u64, Ordering::Relaxed);
        self.metrics.record_commit(height, now, applied.tx_ids.clone());
        if let Some(x) = &self.explorer {
            x.publish(state, &ledger.certificate);
        }
        if let Some(r) = &self.replicator {
            r.notify();
        }
        // The intake's post-state moves onto the new committed state.
        self.intake.rebase(state.clone()).map_err(|_| storage_error("the intake stopped"))?;
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

impl Io {
    fn validator_peers(&self) -> impl Iterator<Item = (PeerIndex, &PeerHandle)> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.spec.role == Role::Validator)
            .filter_map(|(i, p)| p.link.as_ref().map(|l| (i, &l.handle)))
    }

    fn send(&self, peer: PeerIndex, channel: Channel, payload: Vec<u8>) {
        if let Some(link) = self.peers.get(peer).and_then(|p| p.link.as_ref()) {
            self.send_to(&link.handle, channel, payload);
        }
    }

    fn send_validators(&self, channel: Channel, payload: &[u8]) {
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

    fn flush_gossip(&mut self) {
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
    fn fetch_allowed(&mut self, peer: PeerIndex, n: usize) -> bool {
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

impl Host {
    fn run(&mut self, events: &Receiver<Event>, stop: &AtomicBool) -> anyhow::Result<()> {
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
            self.export_metrics();
        }
        self.io.wal_sync().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    fn export_metrics(&self) {
        let m = &self.io.metrics;
        let stats = self.driver.stats();
        if let Some(core) = self.driver.core() {
            m.round.store(u64::from(core.round()), Ordering::Relaxed);
            m.rounds_started.store(core.stats().rounds_started, Ordering::Relaxed);
        }
        m.pool_size.store(self.driver.chain().pool_len() as u64, Ordering::Relaxed);
        m.intake_queued_txs.store(self.io.intake.queued_txs(), Ordering::Relaxed);
        m.rejected_txs.store(self.io.intake.metrics().rejected_total(), Ordering::Relaxed);
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
    }

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
            Event::Verified { txs, from, fetched, refused } => {
                // Bodies a peer gossiped or sent as asked that do not decode or verify: no honest
                // peer sends them (it verified them before).
                if let (Some(peer), true) = (from, refused > 0) {
                    self.driver.on_bad_body(&mut self.io, peer as PeerId);
                }
                if fetched {
                    self.io.metrics.fetched_txs.fetch_add(txs.len() as u64, Ordering::Relaxed);
                }
                // A client's transactions are gossiped on once the pool takes them.
                let bodies: Vec<SignedTransaction> = if from.is_none() && self.io.gossip_out.len() < 100_000 {
                    txs.iter().map(|v| v.tx.clone()).collect()
                } else {
                    Vec::new()
                };
                let added = self.driver.on_transactions(&mut self.io, txs, fetched)?;
                for (tx, added) in bodies.into_iter().zip(added) {
                    if added {
                        self.io.gossip_out.push(tx);
                        self.io.gossip_due.get_or_insert_with(|| Instant::now() + GOSSIP_FLUSH);
                    }
                }
                if self.io.gossip_out.len() >= GOSSIP_TXS_MAX {
                    self.io.flush_gossip();
                }
            }
        }
        Ok(())
    }

    fn frame(&mut self, peer: PeerIndex, channel: Channel, payload: &[u8]) -> anyhow::Result<()> {
        // What cannot even be decoded is no honest peer's: it costs the peer.
        let malformed = |io: &mut Io| io.penalize(peer as PeerId, Fault::BadMessage);
        match channel {
            Channel::Consensus => match decode_exact::<Message>(payload) {
                Ok(message) => self.driver.on_message(&mut self.io, peer as PeerId, message)?,
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
                Ok(SyncMsg::Bodies(bodies)) => self.bodies(peer, bodies),
                Ok(SyncMsg::Ledger(l)) => self.driver.on_ledger(&mut self.io, peer as PeerId, &l)?,
                Ok(SyncMsg::Evidence(proof)) => {
                    self.driver.on_evidence(&mut self.io, peer as PeerId, &proof)?
                }
                Err(_) => malformed(&mut self.io),
            },
            Channel::Control => {}
        }
        Ok(())
    }

    /// Bodies from a peer: those a check waits for are verified on the intake's pool (bounded;
    /// a full queue drops them and the check fetches again), the rest dropped unverified.
    fn bodies(&mut self, peer: PeerIndex, bodies: Vec<Vec<u8>>) {
        let chain_id = self.driver.chain().state().params().chain_id.clone();
        let total = bodies.len();
        let wanted: Vec<Vec<u8>> = bodies
            .into_iter()
            .filter(|b| {
                SignedTransaction::decode_with_id(b, &chain_id).is_ok_and(|(_, id)| self.driver.wants(&id))
            })
            .collect();
        let unsolicited = total - wanted.len();
        if unsolicited > 0 {
            self.io.metrics.unsolicited_bodies.fetch_add(unsolicited as u64, Ordering::Relaxed);
        }
        if !wanted.is_empty() && self.io.intake.try_submit(Origin::Fetched(peer as u32), wanted).is_err() {
            self.io.metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}
