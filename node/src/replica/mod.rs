//! A networked process: validator (consensus), node or explorer (followers that sync certified
//! ledgers). One host thread owns the consensus core, the chain (pool and committed state), the
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
mod network;
mod wal;
pub(crate) mod wire;

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
    BLOCK_BYTES_MAX, Chain, ChainConfig, ChainError, CheckOutcome, Committed, CommittedLedger, Config, Core,
    Effect, Input, Message, PeerId, PoolError, Timeout, Timeouts, Value,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use engine::{
    Backend, Encode, Hash, SecretKey,
    codec::{Reader, decode_exact},
    tx::{SignedTransaction, TxId},
    validate::{VerifiedTx, verify_bytes},
};
use net::{NodeCert, conn::PeerHandle, frame::Channel, transport::Transport};
use pipeline::{Admitted, Intake, IntakeConfig, Origin};
use storage::{LedgerToCommit, Store};

pub(crate) use self::admin::{Metrics, get as admin_get, metric};
use self::{
    network::PeerIndex,
    wal::Wal,
    wire::{GOSSIP_TXS_MAX, Sync as SyncMsg, decode_txs, encode_txs},
};
use crate::{
    config::{NodeConfig, Role, read_text},
    exit::Output,
    run::{open_store, serve_submissions},
};

/// Events queued for the host thread.
const EVENTS_MAX: usize = 65_536;
/// Gossip is flushed at least this often.
const GOSSIP_FLUSH: Duration = Duration::from_millis(5);
/// Gossip waiting for a validator to connect is retried this often.
const GOSSIP_RETRY: Duration = Duration::from_millis(100);
/// How long a check waits for missing bodies to arrive by gossip before fetching them.
const FETCH_DELAY: Duration = Duration::from_millis(150);
/// Checks of proposals waiting for bodies.
const WAITING_CHECKS_MAX: usize = 16;
/// Transactions admitted and not yet committed.
const POOL_MAX: usize = 200_000;
/// Transactions per proposal (bounds a height's execution; its bytes are bounded apart).
const BLOCK_TXS_MAX: usize = 10_000;
/// Client submissions are refused ("busy") while this many transactions wait: past it, more
/// intake only spends the CPU that consensus needs to commit what is already waiting (measured:
/// without it, offered load above the peak halved the committed rate).
const POOL_ADMIT_MAX: u64 = 15_000;
/// Client submissions are refused ("busy") while this many received transactions wait for
/// verification: the intake is behind, and what it admits late reaches proposals the others
/// must then fetch and verify while the round waits.
const INTAKE_ADMIT_MAX: u64 = 4_000;

/// What reaches the host thread.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection to a peer is up.
    Connected { peer: PeerIndex, generation: u64, handle: PeerHandle },
    /// It ended.
    Disconnected { peer: PeerIndex, generation: u64 },
    /// A frame from a peer.
    Frame { peer: PeerIndex, channel: Channel, payload: Vec<u8> },
    /// Transactions whose signatures verified (`from`: the peer that sent them; `None`: a
    /// client of this process, so they are gossiped on; `fetched`: bodies this node asked for
    /// because a proposal named them).
    Verified { txs: Vec<VerifiedTx>, from: Option<PeerIndex>, fetched: bool },
}

struct Waiting {
    height: u64,
    id: Hash,
    value: Value,
    from: PeerIndex,
    missing: std::collections::HashSet<TxId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Consensus(Timeout),
    StartNext(u64),
    SyncPoll,
    /// Fetch the bodies a proposal still lacks.
    Fetch(u64, Hash),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

struct Host {
    intake: Intake,
    height_started: Instant,
    role: Role,
    backend: Backend,
    block_interval: Duration,
    core: Option<Core>,
    chain: Chain,
    store: Store,
    wal: Option<Wal>,
    peers: Vec<(crate::config::PeerSpec, Option<(u64, PeerHandle)>)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_kinds: HashMap<u64, Timer>,
    timer_seq: u64,
    metrics: Arc<Metrics>,
    events: Sender<Event>,
    /// Checks waiting for bodies: height, value id, value, who sent it, and the ids still
    /// missing (removed as they arrive, so a recheck costs the arrivals, not the block size).
    waiting: Vec<Waiting>,
    stuck: bool,
    gossip_out: Vec<SignedTransaction>,
    gossip_due: Option<Instant>,
    sync_cursor: usize,
    evidence_path: std::path::PathBuf,
    explorer: Option<Arc<crate::explorer::Explorer>>,
    replicator: Option<Arc<storage::Replicator>>,
}

/// Runs a networked process until SIGINT or SIGTERM.
pub(crate) fn run(cfg: &NodeConfig) -> anyhow::Result<Output> {
    let Some(net_cfg) = cfg.net.clone() else { bail!("no network configuration") };
    let node = NodeCert::load(&net_cfg.node_dir)?;
    let transport = Transport::start(net_cfg.transport).context("starting the transport")?;
    let (store, state) = open_store(cfg)?;
    let chain_id = state.params().chain_id.clone();
    let key = match cfg.role {
        Role::Validator => {
            let path = cfg.validator_key.as_ref().context("a validator needs validator_key")?;
            let key = SecretKey::from_hex(read_text(path, 1024, "validator key")?.trim())
                .with_context(|| format!("validator key {}", path.display()))?;
            Some(key)
        }
        Role::Node | Role::Explorer => None,
    };
    let drift_ms = (cfg.block_interval_ms as i64 * 5).max(5_000);
    let chain_cfg = ChainConfig {
        backend: cfg.backend,
        block_txs_max: BLOCK_TXS_MAX,
        block_bytes_max: BLOCK_BYTES_MAX,
        pool_max: POOL_MAX,
        drift_ms,
    };
    let chain = Chain::new(state, chain_cfg);
    let metrics = Arc::new(Metrics::default());
    metrics.ledger_height.store(chain.state().head().height, Ordering::Relaxed);
    let (events_tx, events_rx) = crossbeam_channel::bounded(EVENTS_MAX);
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
    runtime.block_on(async {
        let admin = tokio::net::TcpListener::bind(net_cfg.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", net_cfg.admin_listen))?;
        tokio::spawn(admin::serve(admin, metrics.clone(), role_name, transport_name));
        network::start(&net_cfg, cfg.role, &node, &chain_id, transport, events_tx.clone(), metrics.clone())
            .await
    })?;
    let core = key.map(|key| {
        Core::new(Config {
            chain_id: chain_id.clone(),
            key: Some(key),
            backend: cfg.backend,
            timeouts: Timeouts::for_interval(cfg.block_interval_ms),
        })
    });
    let wal = match cfg.role {
        Role::Validator => Some(Wal::open(&cfg.data_dir)?),
        _ => None,
    };
    let explorer_slot = Arc::new(std::sync::OnceLock::<Arc<crate::explorer::Explorer>>::new());
    // The validated-transaction pool is fed by the pipeline's consensus-mode intake: decode,
    // verification on its own pool, admission against the post-state (committed state + pool).
    let intake = {
        let events = events_tx.clone();
        let cfg = IntakeConfig {
            backend: cfg.backend,
            admitted_max: POOL_MAX,
            queue_batches_max: 256,
            ..IntakeConfig::default()
        };
        let explorer = explorer_slot.clone();
        let on_admitted = move |a: Admitted| {
            let from = match a.origin {
                Origin::Client => None,
                Origin::Peer(p) => Some(p as PeerIndex),
            };
            // Blocks while the host is behind: pushes back on verification, not on memory.
            let _ = events.send(Event::Verified { txs: a.txs, from, fetched: false });
        };
        // The explorer API tells its clients why a transaction it accepted was refused later.
        let on_rejected = move |id: Option<TxId>, e: &engine::validate::TxError| {
            if let Some(x) = explorer.get() {
                x.rejected(id, e);
            }
        };
        Intake::start_reporting(chain.state().clone(), cfg, on_admitted, on_rejected)?
    };
    let mut host = Host {
        intake,
        height_started: Instant::now(),
        role: cfg.role,
        backend: cfg.backend,
        block_interval: Duration::from_millis(cfg.block_interval_ms),
        core,
        chain,
        store,
        wal: None,
        peers: net_cfg.peers.iter().map(|(spec, _)| (spec.clone(), None)).collect(),
        timers: BinaryHeap::new(),
        timer_kinds: HashMap::new(),
        timer_seq: 0,
        metrics: metrics.clone(),
        events: events_tx.clone(),
        waiting: Vec::new(),
        stuck: false,
        gossip_out: Vec::new(),
        gossip_due: None,
        sync_cursor: 0,
        evidence_path: cfg.data_dir.join("evidence.bin"),
        explorer: None,
        replicator: None,
    };
    if let Some(api_listen) = cfg.api_listen {
        let head = host.chain.state().head().height;
        let certificate =
            host.store.header(head)?.map(|(_, c)| c).unwrap_or_else(|| engine::ledger::Certificate::new(0));
        let genesis = engine::genesis::Genesis::from_toml(&read_text(
            &cfg.genesis,
            engine::limits::GENESIS_BYTES_MAX as u64,
            "genesis file",
        )?)?;
        let explorer = crate::explorer::Explorer::new(crate::explorer::ExplorerParts {
            genesis_validators: genesis.validators,
            state: host.chain.state().clone(),
            certificate,
            backend: cfg.backend,
            reader: host.store.reader(),
            submitter: host.intake.submitter().context("intake closed at start")?,
            metrics: metrics.clone(),
            role: role_name,
            transport: transport_name,
        });
        let _ = explorer_slot.set(explorer.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(api_listen))
            .with_context(|| format!("cannot listen on {api_listen}"))?;
        runtime.spawn(crate::explorer::serve(listener, explorer.clone()));
        eprintln!("caasiope: explorer API on http://{api_listen}/v1");
        host.explorer = Some(explorer);
    }
    if let Some(ch) = cfg.clickhouse.clone() {
        let genesis = engine::genesis::Genesis::from_toml(&read_text(
            &cfg.genesis,
            engine::limits::GENESIS_BYTES_MAX as u64,
            "genesis file",
        )?)?;
        eprintln!("caasiope: replicating into ClickHouse at {} (database {})", ch.url, ch.database);
        let replicator = Arc::new(
            storage::Replicator::start(ch, Arc::new(host.store.reader()), &genesis)
                .context("starting the ClickHouse replicator")?,
        );
        let r = Arc::downgrade(&replicator);
        let _ = metrics.extra.set(admin::ExtraMetrics(Box::new(move || {
            r.upgrade().map(|r| r.metrics_text()).unwrap_or_default()
        })));
        host.replicator = Some(replicator);
    }
    host.begin(wal)?;
    // Submissions: decoded on the connection's thread (for the id and a clear error), then
    // handed to the intake, which verifies and admits them (or counts why not).
    drop(events_tx);
    let submitter = host.intake.submitter().context("intake closed at start")?;
    let chain_id = host.chain.state().params().chain_id.clone();
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
    if let Some(x) = host.explorer.take() {
        x.close();
    }
    // The replicator finishes the batch it is writing (a kill instead loses nothing either).
    if let Some(r) = host.replicator.take().and_then(|r| Arc::try_unwrap(r).ok()) {
        r.stop();
    }
    // Nobody reads events any more: a stage blocked handing one over must see the queue closed.
    drop(events_rx);
    let _ = submit_thread.join();
    host.store.flush().context("flushing the store")?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    result?;
    eprintln!("caasiope: {role_name} stopped at height {}", host.chain.state().head().height);
    Ok(Output::Nothing)
}

impl Host {
    fn timer(&mut self, after: Duration, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((Instant::now() + after, self.timer_seq)));
        self.timer_kinds.insert(self.timer_seq, t);
    }

    /// Starts consensus (replaying the log if it holds the current height) or the sync poll.
    fn begin(&mut self, wal: Option<(Wal, Vec<Input>)>) -> anyhow::Result<()> {
        let next = self.chain.next_height();
        match wal {
            Some((wal, log)) => {
                self.wal = Some(wal);
                let resumes = matches!(log.first(), Some(Input::Start { height, .. }) if *height == next);
                if resumes {
                    eprintln!("caasiope: replaying {} logged consensus inputs of height {next}", log.len());
                    let effects = self.core.as_mut().map(|c| c.replay(log)).unwrap_or_default();
                    for e in effects {
                        self.effect(e)?;
                    }
                } else {
                    self.start_height()?;
                }
            }
            None => self.timer(Duration::ZERO, Timer::SyncPoll),
        }
        Ok(())
    }

    fn start_height(&mut self) -> anyhow::Result<()> {
        self.height_started = Instant::now();
        let height = self.chain.next_height();
        let validators = self.chain.validators().clone();
        self.input(Input::Start { height, validators })
    }

    fn run(&mut self, events: &Receiver<Event>, stop: &AtomicBool) -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wait = Duration::from_millis(50);
            if let Some(Reverse((at, _))) = self.timers.peek() {
                wait = wait.min(at.saturating_duration_since(now));
            }
            if let Some(at) = self.gossip_due {
                wait = wait.min(at.saturating_duration_since(now));
            }
            match events.recv_timeout(wait) {
                Ok(e) => {
                    self.event(e)?;
                    // Drain what is queued before looking at timers again.
                    for _ in 0..1024 {
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
            while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if let Some(t) = self.timer_kinds.remove(&seq) {
                    self.fire(t)?;
                }
            }
            if self.gossip_due.is_some_and(|at| at <= now) {
                self.flush_gossip();
            }
            self.metrics.pool_size.store(self.chain.pool_len() as u64, Ordering::Relaxed);
            self.metrics.intake_queued_txs.store(self.intake.queued_txs(), Ordering::Relaxed);
            self.metrics.rejected_txs.store(self.intake.metrics().rejected_total(), Ordering::Relaxed);
        }
        if let Some(w) = self.wal.as_mut() {
            w.sync()?;
        }
        Ok(())
    }

    fn fire(&mut self, t: Timer) -> anyhow::Result<()> {
        match t {
            Timer::Consensus(timeout) => self.input(Input::Timeout(timeout)),
            Timer::StartNext(height) => {
                let started = self.core.as_ref().is_some_and(|c| c.height() >= height);
                if !started && self.chain.next_height() == height {
                    self.start_height()?;
                }
                Ok(())
            }
            Timer::Fetch(height, id) => {
                if let Some(w) = self.waiting.iter().find(|w| w.height == height && w.id == id) {
                    let ids: Vec<TxId> = w.missing.iter().copied().collect();
                    self.fetch(w.from, &ids);
                }
                Ok(())
            }
            Timer::SyncPoll => {
                self.request_next_ledger(None);
                self.timer((self.block_interval / 2).max(Duration::from_millis(100)), Timer::SyncPoll);
                Ok(())
            }
        }
    }

    fn validator_peers(&self) -> impl Iterator<Item = (PeerIndex, &PeerHandle)> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, (spec, _))| spec.role == Role::Validator)
            .filter_map(|(i, (_, h))| h.as_ref().map(|(_, h)| (i, h)))
    }

    fn send(&self, peer: PeerIndex, channel: Channel, payload: Vec<u8>) {
        if let Some((_, Some((_, handle)))) = self.peers.get(peer) {
            // A full queue means a slow peer: consensus re-broadcasts, sync is re-requested.
            let _ = handle.send(channel, payload);
        }
    }

    fn send_validators(&self, channel: Channel, payload: &[u8]) {
        for (_, handle) in self.validator_peers() {
            let _ = handle.send(channel, payload.to_vec());
        }
    }

    /// Logs an input (before it is handled), hands it to the core and executes the effects.
    fn input(&mut self, input: Input) -> anyhow::Result<()> {
        let Some(core) = self.core.as_mut() else { return Ok(()) };
        if let Some(wal) = self.wal.as_mut() {
            if matches!(input, Input::Start { .. }) {
                wal.reset(std::slice::from_ref(&input))?;
            } else if core.height() == self.chain.next_height() {
                wal.append(&input)?;
            }
        }
        let mut out = Vec::new();
        core.handle(input, &mut out);
        self.metrics.round.store(u64::from(core.round()), Ordering::Relaxed);
        self.metrics.bad_messages.store(core.stats().bad_messages, Ordering::Relaxed);
        self.metrics.rounds_started.store(core.stats().rounds_started, Ordering::Relaxed);
        // What this validator signs leaves the process only once the inputs that made it are
        // on disk: a restart replays them and signs the same bytes, never contrary ones.
        if out.iter().any(|e| matches!(e, Effect::Broadcast(_) | Effect::Decide(_))) {
            if let Some(wal) = self.wal.as_mut() {
                wal.sync()?;
            }
        }
        for e in out {
            self.effect(e)?;
        }
        Ok(())
    }

    fn effect(&mut self, e: Effect) -> anyhow::Result<()> {
        match e {
            Effect::Broadcast(m) => self.send_validators(Channel::Consensus, &m.to_bytes()),
            Effect::Schedule { timeout, after_ms } => {
                self.timer(Duration::from_millis(after_ms), Timer::Consensus(timeout))
            }
            Effect::Check { height, id, value, from } => self.check(height, id, value, from as PeerIndex)?,
            Effect::Build { height, round } => {
                let value = self.chain.build(now_ms());
                self.input(Input::Proposed { height, round, value })?;
            }
            Effect::Decide(d) if d.height < self.chain.next_height() => {
                // Taken from a peer (sync) before the core decided: it must be the same ledger.
                let stored = self
                    .store
                    .header(d.height)?
                    .map(|(h, _)| h.hash(self.chain.state().params().chain_id.as_str()));
                if stored != Some(d.id) {
                    bail!("decided {} at height {} but committed {stored:?}", d.id, d.height);
                }
            }
            Effect::Decide(d) => match self.chain.commit(&d.value, d.certificate) {
                Ok(c) => {
                    self.metrics.certified_ledgers.fetch_add(1, Ordering::Relaxed);
                    self.committed(c)?;
                    // Ledgers every block interval from one start to the next: the time consensus
                    // took counts against the interval (at least 10 % of it still separates them).
                    let wait = self
                        .block_interval
                        .saturating_sub(self.height_started.elapsed())
                        .max(self.block_interval / 10);
                    self.timer(wait, Timer::StartNext(self.chain.next_height()));
                }
                Err(ChainError::Missing(_)) => {
                    // Decided on bodies this process no longer has (it restarted): take the
                    // certified ledger from a peer.
                    self.stuck = true;
                    self.send_validators(Channel::Sync, &SyncMsg::LedgerRequest(d.height).encode());
                }
                Err(e) => bail!("cannot commit the decided ledger {}: {e}", d.height),
            },
            Effect::Redeliver(messages) => {
                for (from, message) in messages {
                    self.input(Input::Message { from, message })?;
                }
            }
            Effect::Evidence(proof) => {
                self.metrics.equivocations.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "caasiope: validator {} equivocated at height {} round {} ({})",
                    proof.offender(),
                    proof.height(),
                    proof.round(),
                    proof.kind()
                );
                use std::io::Write;
                let bytes = proof.to_bytes();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.evidence_path)
                    .with_context(|| format!("opening {}", self.evidence_path.display()))?;
                f.write_all(&(bytes.len() as u32).to_le_bytes())?;
                f.write_all(&bytes)?;
                f.sync_data()?;
            }
            Effect::PeerBehind { peer, height } => self.send_ledger(peer as PeerIndex, height)?,
            Effect::PeerAhead { peer, .. } => {
                if self.stuck || self.core.as_ref().is_some_and(|c| !c.is_decided()) {
                    self.request_next_ledger(Some(peer as PeerIndex));
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, height: u64, id: Hash, value: Value, from: PeerIndex) -> anyhow::Result<()> {
        match self.chain.check(&value, now_ms()) {
            CheckOutcome::Valid { timely } => {
                self.input(Input::Checked { height, value: id, valid: true, timely })
            }
            CheckOutcome::Invalid(why) => {
                eprintln!("caasiope: proposal {id} at height {height} refused: {why}");
                self.input(Input::Checked { height, value: id, valid: false, timely: false })
            }
            CheckOutcome::Missing(ids) => {
                // Most missing bodies are on their way by gossip (still in the intake): fetch
                // only what has not arrived after a moment, so nothing is verified twice.
                if self.waiting.len() < WAITING_CHECKS_MAX {
                    let missing = ids.iter().copied().collect();
                    self.waiting.push(Waiting { height, id, value, from, missing });
                    self.timer(FETCH_DELAY, Timer::Fetch(height, id));
                } else {
                    self.fetch(from, &ids);
                }
                Ok(())
            }
        }
    }

    fn fetch(&self, from: PeerIndex, ids: &[TxId]) {
        for chunk in ids.chunks(wire::FETCH_IDS_MAX) {
            self.send(from, Channel::Sync, SyncMsg::Fetch(chunk.to_vec()).encode());
        }
    }

    /// `arrived`: ids just added to the pool.
    fn recheck_waiting(&mut self, arrived: &[TxId]) -> anyhow::Result<()> {
        let next = self.chain.next_height();
        let waiting = std::mem::take(&mut self.waiting);
        for mut w in waiting {
            if w.height != next {
                continue;
            }
            for id in arrived {
                w.missing.remove(id);
            }
            if w.missing.is_empty() {
                self.check(w.height, w.id, w.value, w.from)?;
            } else {
                self.waiting.push(w);
            }
        }
        Ok(())
    }

    /// Stores a committed ledger and moves on.
    fn committed(&mut self, c: Committed) -> anyhow::Result<()> {
        let Committed { ledger, applied } = c;
        self.store
            .commit(LedgerToCommit {
                applied: &applied,
                transactions: &ledger.transactions,
                certificate: &ledger.certificate,
                state: self.chain.state(),
            })
            .context("storing a committed ledger")?;
        let height = ledger.header.height;
        self.metrics.ledger_height.store(height, Ordering::Relaxed);
        self.metrics.committed_txs.fetch_add(ledger.transactions.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        self.metrics.last_commit_unix_ms.store(now as u64, Ordering::Relaxed);
        self.metrics.record_commit(height, now, applied.tx_ids.clone());
        if let Some(x) = &self.explorer {
            x.publish(self.chain.state(), &ledger.certificate);
        }
        if let Some(r) = &self.replicator {
            r.notify();
        }
        // The intake's post-state moves onto the new committed state.
        self.intake.rebase(self.chain.state().clone()).context("the intake stopped")?;
        self.waiting.clear();
        self.stuck = false;
        // Followers get each ledger pushed (and poll for what they miss).
        if self.role == Role::Validator {
            let bytes = SyncMsg::Ledger(Box::new(ledger)).encode();
            for (i, (spec, _)) in self.peers.iter().enumerate() {
                if spec.role != Role::Validator {
                    self.send(i, Channel::Sync, bytes.clone());
                }
            }
        }
        Ok(())
    }

    fn send_ledger(&self, peer: PeerIndex, height: u64) -> anyhow::Result<()> {
        if height == 0 || height > self.chain.state().head().height {
            return Ok(());
        }
        let (Some((header, certificate)), Some(transactions)) =
            (self.store.header(height)?, self.store.block(height)?)
        else {
            return Ok(());
        };
        let ledger = CommittedLedger { header, certificate, transactions };
        self.send(peer, Channel::Sync, SyncMsg::Ledger(Box::new(ledger)).encode());
        Ok(())
    }

    fn request_next_ledger(&mut self, peer: Option<PeerIndex>) {
        let msg = SyncMsg::LedgerRequest(self.chain.next_height()).encode();
        match peer {
            Some(p) => self.send(p, Channel::Sync, msg),
            None => {
                let connected: Vec<PeerIndex> = self.validator_peers().map(|(i, _)| i).collect();
                if !connected.is_empty() {
                    self.sync_cursor = (self.sync_cursor + 1) % connected.len();
                    self.send(connected[self.sync_cursor], Channel::Sync, msg);
                }
            }
        }
    }

    fn event(&mut self, e: Event) -> anyhow::Result<()> {
        match e {
            Event::Connected { peer, generation, handle } => {
                if let Some(slot) = self.peers.get_mut(peer) {
                    slot.1 = Some((generation, handle));
                }
            }
            Event::Disconnected { peer, generation } => {
                if let Some(slot) = self.peers.get_mut(peer) {
                    if slot.1.as_ref().is_some_and(|(g, _)| *g == generation) {
                        slot.1 = None;
                    }
                }
            }
            Event::Frame { peer, channel, payload } => self.frame(peer, channel, &payload)?,
            Event::Verified { txs, from, fetched } => {
                let arrived: Vec<TxId> =
                    if self.waiting.is_empty() { Vec::new() } else { txs.iter().map(|v| v.id).collect() };
                if fetched {
                    self.metrics.fetched_txs.fetch_add(txs.len() as u64, Ordering::Relaxed);
                }
                for vtx in txs {
                    let tx = (from.is_none() && self.gossip_out.len() < 100_000).then(|| vtx.tx.clone());
                    match self.chain.add(vtx) {
                        Ok(()) => {
                            if let Some(tx) = tx {
                                self.gossip_out.push(tx);
                                self.gossip_due.get_or_insert_with(|| Instant::now() + GOSSIP_FLUSH);
                            }
                        }
                        // The intake admitted its gossiped copy while the body was fetched and
                        // verified: that verification was done twice.
                        Err(PoolError::Known) if fetched => {
                            self.metrics.fetched_known_txs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {}
                    }
                }
                if self.gossip_out.len() >= GOSSIP_TXS_MAX {
                    self.flush_gossip();
                }
                if !self.waiting.is_empty() {
                    self.recheck_waiting(&arrived)?;
                }
            }
        }
        Ok(())
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

    /// Verifies transaction bytes on the rayon pool and hands the valid ones back.
    fn verify_later(&self, bodies: Vec<Vec<u8>>, from: PeerIndex) {
        let (params, backend, events) =
            (self.chain.state().params().clone(), self.backend, self.events.clone());
        rayon::spawn(move || {
            let txs: Vec<VerifiedTx> =
                bodies.iter().filter_map(|b| verify_bytes(b, &params, backend).ok()).collect();
            if !txs.is_empty() {
                let _ = events.send(Event::Verified { txs, from: Some(from), fetched: true });
            }
        });
    }

    fn frame(&mut self, peer: PeerIndex, channel: Channel, payload: &[u8]) -> anyhow::Result<()> {
        match channel {
            Channel::Consensus => match decode_exact::<Message>(payload) {
                Ok(message) => self.input(Input::Message { from: peer as PeerId, message })?,
                Err(_) => {
                    self.metrics.bad_messages.fetch_add(1, Ordering::Relaxed);
                }
            },
            Channel::Gossip => match decode_txs(&mut Reader::new(payload), GOSSIP_TXS_MAX) {
                Ok(bodies) => {
                    if self.intake.try_submit(Origin::Peer(peer as u32), bodies).is_err() {
                        self.metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.metrics.bad_messages.fetch_add(1, Ordering::Relaxed);
                }
            },
            Channel::Sync => match SyncMsg::decode(payload) {
                Ok(SyncMsg::LedgerRequest(h)) => self.send_ledger(peer, h)?,
                Ok(SyncMsg::Fetch(ids)) => {
                    let bodies: Vec<SignedTransaction> = ids
                        .iter()
                        .filter_map(|id: &TxId| self.chain.pending(id).map(|v| v.tx.clone()))
                        .collect();
                    for chunk in bodies.chunks(GOSSIP_TXS_MAX) {
                        let raw: Vec<Vec<u8>> = chunk.iter().map(Encode::to_bytes).collect();
                        self.send(peer, Channel::Sync, SyncMsg::Bodies(raw).encode());
                    }
                }
                Ok(SyncMsg::Bodies(bodies)) => self.verify_later(bodies, peer),
                Ok(SyncMsg::Ledger(l)) => self.synced(peer, &l)?,
                Err(_) => {
                    self.metrics.bad_messages.fetch_add(1, Ordering::Relaxed);
                }
            },
            Channel::Control => {}
        }
        Ok(())
    }

    /// A ledger from a peer: applied if it is the next one, its certificate verifies under the
    /// set in force, and it re-executes to its header.
    fn synced(&mut self, peer: PeerIndex, l: &CommittedLedger) -> anyhow::Result<()> {
        if l.header.height != self.chain.next_height() {
            return Ok(());
        }
        match self.chain.apply_synced(l) {
            Ok(c) => {
                self.metrics.synced_ledgers.fetch_add(1, Ordering::Relaxed);
                self.committed(c)?;
                // Catching up: ask the same peer for the next one, and (a validator) join the
                // next height at once.
                self.request_next_ledger(Some(peer));
                if self.core.is_some() {
                    self.start_height()?;
                }
                Ok(())
            }
            // A peer's ledger never stops the process: one that its sender altered is refused
            // and counted against it; one certified yet not re-executing here is refused too,
            // loudly (this node's state or the certifying quorum is wrong), and the ledger is
            // asked for again.
            Err(e) if e.blames_sender() => {
                self.metrics.refused_ledgers.fetch_add(1, Ordering::Relaxed);
                eprintln!("caasiope: ledger {} from peer {peer} refused: {e}", l.header.height);
                Ok(())
            }
            Err(e @ (ChainError::Mismatch { .. } | ChainError::Block(_))) => {
                self.metrics.divergent_ledgers.fetch_add(1, Ordering::Relaxed);
                eprintln!("caasiope: certified ledger {} does not re-execute here: {e}", l.header.height);
                Ok(())
            }
            Err(_) => {
                self.metrics.bad_messages.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}
