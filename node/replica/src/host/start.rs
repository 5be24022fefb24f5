//! Start-up and shutdown of a networked process: its store, chain and intake, the network and
//! admin endpoint, the explorer API and ClickHouse replication, the consensus boot, then the
//! host loop beside the submit server, and the ordered stop after it.

use std::{
    collections::{BinaryHeap, HashMap},
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use consensus::{
    Chain, ChainConfig, CommittedLedger, Config, Core, Driver, DriverConfig, SignState, Timeouts, WalRead,
};
use crossbeam_channel::Sender;
use engine::{SecretKey, genesis::Genesis, state::State, tx::TxId};
use exit::{Output, read_text};
use net::{NodeCert, transport::Transport};
use pipeline::{Admitted, BusyWait, Intake, IntakeConfig, IntakeSubmitter, Mempool, MempoolConfig, Origin};
use storage::Store;

use super::{Event, Host, Io, PeerSlot};
use crate::{
    admin,
    config::{NetConfig, NodeConfig, Role},
    metrics::{self, Metrics},
    network::{self, Bans, PeerIndex, Shared},
    run::{Answer, open_store, ready, reload_on_sighup, serve_submissions, stop_on_signals},
    signer::SignerFile,
    wal::Wal,
    wire::Sync as SyncMsg,
};

/// The explorer, once it is started (the intake reports refusals to it from then on).
type ExplorerSlot = Arc<OnceLock<Arc<explorer::Explorer>>>;

/// A validator's consensus parts: its core, its write-ahead log as read at start, its signing
/// state file and what that file held (all `None` for a follower).
type ConsensusParts = (Option<Core>, Option<(Wal, WalRead)>, Option<SignerFile>, Option<SignState>);

/// Runs a process until SIGINT or SIGTERM: with peers (its configuration's network), or, for a
/// validator without one, alone — consensus over a validator set of one, the same path.
pub(crate) fn run(cfg: &NodeConfig, config_path: &std::path::Path) -> anyhow::Result<Output> {
    crate::snapshots::join(cfg)?;
    let (mut store, state) = open_store(cfg)?;
    let chain_id = state.params().chain_id.clone();
    let key = validator_key(cfg)?;
    if cfg.net.is_none() {
        alone_a_quorum(&state, key.as_ref())?;
    }
    stagger_index_batches(&mut store, &state, key.as_ref());
    let mempool = Arc::new(Mempool::new(MempoolConfig {
        txs_max: limits::POOL_TXS_MAX,
        bytes_max: limits::POOL_BYTES_MAX,
        busy_txs: limits::POOL_ADMIT_MAX,
        busy_queued: limits::INTAKE_ADMIT_MAX,
        busy_wait: Some(BusyWait {
            interval: Duration::from_millis(cfg.block_interval_ms),
            intervals: limits::POOL_WAIT_INTERVALS,
            floor_txs: limits::POOL_ADMIT_MIN,
        }),
    }));
    let chain = Chain::new(state, chain_config(cfg), mempool.clone());
    let height = chain.state().head().height;
    let snapshots = (cfg.snapshot_every_ledgers > 0)
        .then(|| crate::snapshots::Snapshots::new(&cfg.data_dir, cfg.snapshot_every_ledgers));
    let metrics = Arc::new(Metrics::default());
    let _ = metrics.store.set(store.reader());
    metrics.ledger_height.store(chain.state().head().height, Ordering::Relaxed);
    let peers = cfg.net.as_ref().map_or(&[][..], |n| &n.peers[..]);
    metrics.name_peers(peers.iter().map(|(spec, _)| spec.name.clone()));
    // Room for every peer's frames in flight, so one peer's flood never fills the queue for
    // the others.
    let peers_room = peers.len() + limits::PEERS_ADDED_MAX;
    let events_max = limits::HOST_EVENTS_BASE + peers_room * limits::FRAMES_IN_FLIGHT_PER_PEER;
    let (events_tx, events_rx) = crossbeam_channel::bounded(events_max);
    let stop = stop_on_signals()?;
    let role_name = role_name(cfg.role);
    let runtime = network_runtime()?;
    let bans = Arc::new(Bans::default());
    let reload = (config_path.to_owned(), reload_on_sighup()?);
    let (transport_name, peer_set) = match &cfg.net {
        Some(net_cfg) => {
            let mut shared =
                Shared::new(events_tx.clone(), metrics.clone(), bans.clone(), ledger_source(&store));
            shared.snapshots = snapshots.clone();
            let (name, set) = start_network(&runtime, net_cfg, cfg, height, &chain_id, shared)?;
            (name, Some(set))
        }
        None => {
            let address = key.as_ref().map(|k| k.public_key().address().to_string()).unwrap_or_default();
            let (interval, submit) = (cfg.block_interval_ms, cfg.submit_listen);
            eprintln!(
                "caasiope: validator {address} alone at height {height}, block interval {interval} ms, submit on {submit}"
            );
            ("none", None)
        }
    };
    let (core, wal, signer, signed) = open_consensus(cfg, key, chain_id)?;
    let explorer_slot: ExplorerSlot = Arc::new(OnceLock::new());
    let intake = start_intake(cfg, &chain, mempool, events_tx.clone(), explorer_slot.clone())?;
    let _ = metrics.intake.set(intake.shared_metrics());
    let mut io = new_io(cfg, peers, intake, store, signer, bans, metrics.clone());
    io.snapshots = snapshots;
    (io.peer_set, io.reload) = (peer_set, reload);
    if let Some(api_listen) = cfg.api_listen {
        let view =
            metrics::ProcessView { metrics: metrics.clone(), role: role_name, transport: transport_name };
        start_explorer(cfg, api_listen, &chain, &mut io, view, &explorer_slot, &runtime)?;
    }
    if let Some(ch) = cfg.clickhouse.clone() {
        start_replicator(cfg, ch, &mut io, &metrics)?;
    }
    let submitter = io.intake.submitter().context("intake closed at start")?;
    let chain_id = chain.state().params().chain_id.clone();
    let driver_cfg = DriverConfig::for_interval(cfg.block_interval_ms);
    let mut host = Host { driver: Driver::new(driver_cfg, core, chain, signed), io };
    boot_consensus(&mut host, wal, &metrics)?;
    drop(events_tx);
    let submit_thread = start_submit_server(cfg.submit_listen, metrics, stop.clone(), submitter, chain_id)?;
    let result = host.run(&events_rx, &stop);
    stop.store(true, Ordering::Relaxed);
    // Nobody reads events any more: a stage blocked handing one over must see the queue closed.
    drop(events_rx);
    host.stop(submit_thread, runtime)?;
    result?;
    eprintln!("caasiope: {role_name} stopped at height {}", host.driver.chain().state().head().height);
    Ok(Output::Nothing)
}

impl Host {
    /// After the loop: closes the explorer API and the replicator, waits for the submit server,
    /// flushes the store and stops the runtime.
    fn stop(
        &mut self,
        submit_thread: JoinHandle<anyhow::Result<()>>,
        runtime: tokio::runtime::Runtime,
    ) -> anyhow::Result<()> {
        self.io.close_services();
        let _ = submit_thread.join();
        self.io.store.flush().context("flushing the store")?;
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }
}

/// The validator's signing key (read from `validator_key`); `None` for a node or an explorer.
fn validator_key(cfg: &NodeConfig) -> anyhow::Result<Option<SecretKey>> {
    Ok(match cfg.role {
        Role::Validator => {
            let path = cfg.validator_key.as_ref().context("a validator needs validator_key")?;
            Some(crate::identity::read_key_file(path, "validator key")?)
        }
        Role::Node | Role::Explorer => None,
    })
}

/// Validators that share a machine write their index batches at different heights, spread
/// by their place in the set: one slow validator does not hold a quorum of four back.
fn stagger_index_batches(store: &mut Store, state: &State, key: Option<&SecretKey>) {
    let set = state.validators();
    if let Some(i) = key.and_then(|k| set.index_of(&k.public_key())) {
        store.stagger_index_batch((i + 1) as f64 / set.validators().len() as f64);
    }
}

/// The chain's bounds: a block's size, the pool's, and how far a proposal's clock may drift.
fn chain_config(cfg: &NodeConfig) -> ChainConfig {
    let drift_ms = (cfg.block_interval_ms as i64 * 5).max(5_000);
    ChainConfig {
        backend: cfg.backend,
        block_txs_max: limits::BLOCK_TXS_MAX,
        block_bytes_max: limits::BLOCK_BYTES_MAX,
        drift_ms,
    }
}

/// The role as logs and metrics name it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Validator => "validator",
        Role::Node => "node",
        Role::Explorer => "explorer",
    }
}

/// The small tokio runtime the network, the admin endpoint and the explorer API run on.
fn network_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("caasiope-net")
        .enable_all()
        .build()
        .context("starting the network runtime")
}

/// Committed ledgers read from the store, encoded for the peers that ask for them.
fn ledger_source(store: &Store) -> network::LedgerSource {
    let reader = store.reader();
    Arc::new(move |height: u64| {
        let ledger = reader.header(height).ok().flatten().zip(reader.block(height).ok().flatten());
        let Some(((header, certificate), transactions)) = ledger else {
            // Pruned (deleted before or between the two reads): say so, and from where it keeps.
            let first_kept = reader.first_kept().ok()?;
            return (height > 0 && height < first_kept)
                .then(|| SyncMsg::NotKept { height, first_kept }.encode());
        };
        Some(SyncMsg::encode_ledger(&CommittedLedger { header, certificate, transactions }))
    })
}

/// Loads the TLS identity, starts the transport, then the admin endpoint and the peer listener
/// and dialers on `runtime`; the transport's name.
fn start_network(
    runtime: &tokio::runtime::Runtime,
    net_cfg: &NetConfig,
    cfg: &NodeConfig,
    height: u64,
    chain_id: &str,
    shared: Shared,
) -> anyhow::Result<(&'static str, network::PeerSet)> {
    let node = Arc::new(NodeCert::load(&net_cfg.node_dir)?);
    let transport = Transport::start(net_cfg.transport).context("starting the transport")?;
    let (role, role_name, transport_name) = (cfg.role, role_name(cfg.role), transport.name());
    eprintln!(
        "caasiope: {role_name} identity {} at height {height}, transport {transport_name} ({}), p2p {}, admin {}, submit {}",
        node.identity(),
        transport.reason,
        net_cfg.listen.map_or_else(|| "dial only".to_owned(), |a| a.to_string()),
        net_cfg.admin_listen,
        cfg.submit_listen
    );
    runtime
        .block_on(async {
            let admin = tokio::net::TcpListener::bind(net_cfg.admin_listen)
                .await
                .with_context(|| format!("cannot listen on {}", net_cfg.admin_listen))?;
            tokio::spawn(admin::serve(admin, shared.metrics.clone(), role_name, transport_name));
            network::start(net_cfg, role, node, chain_id, transport, shared).await
        })
        .map(|peers| (transport_name, peers))
}

/// A validator without a network must be a quorum by itself (a set of one, or the weight of
/// one).
fn alone_a_quorum(state: &State, key: Option<&SecretKey>) -> anyhow::Result<()> {
    let Some(key) = key else {
        bail!(
            "a node or an explorer follows validators over the network: its config needs node_dir, admin_listen and [[peers]]"
        )
    };
    let set = state.validators();
    let index = set.index_of(&key.public_key()).context("the validator key is not in the validator set")?;
    let weight = set.validators().get(index).map_or(0, |v| v.weight);
    if !set.is_quorum(weight) {
        bail!(
            "this validator alone is not a quorum: configure the network (node_dir, admin_listen, [[peers]])"
        );
    }
    Ok(())
}

/// A validator's consensus core, write-ahead log and signing state; none for a follower.
fn open_consensus(
    cfg: &NodeConfig,
    key: Option<SecretKey>,
    chain_id: String,
) -> anyhow::Result<ConsensusParts> {
    Ok(match key {
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
    })
}

/// The mempool is fed by the intake: decode, verification on its own pool, admission against
/// the post-state (committed state + pool) into the mempool; bodies fetched for a proposal are
/// verified there too, and not admitted. What it made of each batch reaches the host as
/// [`Event::Admitted`].
fn start_intake(
    cfg: &NodeConfig,
    chain: &Chain,
    mempool: Arc<Mempool>,
    events: Sender<Event>,
    explorer: ExplorerSlot,
) -> anyhow::Result<Intake> {
    let cfg = IntakeConfig {
        backend: cfg.backend,
        verify_threads: pipeline::verify_threads(),
        batch_txs_max: limits::STAGE_BATCH_TXS_MAX,
        queue_batches_max: limits::INTAKE_QUEUE_BATCHES_MAX,
        clock: engine::clock::now_ms,
    };
    let on_admitted = move |a: Admitted| {
        let (from, fetched) = match a.origin {
            Origin::Client => (None, false),
            Origin::Peer(p) => (Some(p as PeerIndex), false),
            Origin::Fetched(p) => (Some(p as PeerIndex), true),
        };
        // Blocks while the host is behind: pushes back on verification, not on memory.
        let _ = events.send(Event::Admitted { txs: a.txs, from, fetched, refused: a.refused });
    };
    // The explorer API tells its clients why a transaction it accepted was refused later.
    let on_rejected = move |id: Option<TxId>, e: &engine::validate::TxError| {
        if let Some(x) = explorer.get() {
            x.rejected(id, e);
        }
    };
    Ok(Intake::start_reporting(chain.state().clone(), cfg, mempool, on_admitted, on_rejected)?)
}

/// The driver's environment at start: no peer linked, no timer, nothing to gossip.
fn new_io(
    cfg: &NodeConfig,
    peers: &[(crate::config::PeerSpec, net::Identity)],
    intake: Intake,
    store: Store,
    signer: Option<SignerFile>,
    bans: Arc<Bans>,
    metrics: Arc<Metrics>,
) -> Io {
    let now = Instant::now();
    Io {
        intake,
        role: cfg.role,
        announce: cfg.net.is_none(),
        store,
        wal: None,
        signer,
        peers: peers
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
        metrics,
        clocks: crate::metrics::Clocks::default(),
        gossip_out: Vec::new(),
        gossip_due: None,
        sync_cursor: 0,
        not_kept_logged: 0,
        explorer: None,
        replicator: None,
        snapshots: None,
        peer_set: None,
        reload: (std::path::PathBuf::new(), Arc::default()),
    }
}

/// The genesis file of `cfg`, parsed.
fn read_genesis(cfg: &NodeConfig) -> anyhow::Result<Genesis> {
    Ok(Genesis::from_toml(&read_text(
        &cfg.genesis,
        engine::limits::GENESIS_BYTES_MAX as u64,
        "genesis file",
    )?)?)
}

/// Starts the explorer API on `api_listen` (on `runtime`), published each commit by `io`.
fn start_explorer(
    cfg: &NodeConfig,
    api_listen: SocketAddr,
    chain: &Chain,
    io: &mut Io,
    view: metrics::ProcessView,
    slot: &ExplorerSlot,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let head = chain.state().head().height;
    let certificate =
        io.store.header(head)?.map(|(_, c)| c).unwrap_or_else(|| engine::ledger::Certificate::new(0));
    let genesis = read_genesis(cfg)?;
    let stats = view.metrics.edge.api.clone();
    let explorer = explorer::Explorer::new(explorer::ExplorerParts {
        genesis_validators: genesis.validators,
        state: chain.state().clone(),
        certificate,
        reader: io.store.reader(),
        submitter: io.intake.submitter().context("intake closed at start")?,
        host: Arc::new(view),
        cors: cfg.api_cors.clone(),
    });
    let _ = slot.set(explorer.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(api_listen))
        .with_context(|| format!("cannot listen on {api_listen}"))?;
    runtime.spawn(explorer::serve(listener, explorer.clone(), stats));
    eprintln!("caasiope: explorer API on http://{api_listen}/v1");
    io.explorer = Some(explorer);
    Ok(())
}

/// Starts replicating committed ledgers into ClickHouse (notified by `io` each commit); its
/// metrics are served after the process's own.
fn start_replicator(
    cfg: &NodeConfig,
    ch: storage::ClickHouseConfig,
    io: &mut Io,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let genesis = read_genesis(cfg)?;
    eprintln!("caasiope: replicating into ClickHouse at {} (database {})", ch.url, ch.database);
    let replicator = Arc::new(
        storage::Replicator::start(ch, Arc::new(io.store.reader()), &genesis)
            .context("starting the ClickHouse replicator")?,
    );
    let r = Arc::downgrade(&replicator);
    let _ = metrics.extra.set(metrics::ExtraMetrics(Box::new(move || {
        r.upgrade().map(|r| r.metrics_text()).unwrap_or_default()
    })));
    io.replicator = Some(replicator);
    Ok(())
}

/// Replays the write-ahead log (a validator's) into the driver and starts consensus; a log
/// that cannot be replayed halts signing, which is logged and exported.
fn boot_consensus(host: &mut Host, wal: Option<(Wal, WalRead)>, metrics: &Metrics) -> anyhow::Result<()> {
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
    Ok(())
}

/// Submissions: refused at once as busy ([`Mempool::busy`]) or decoded on the connection's
/// reading thread (for the id and a clear error) and handed to the intake decoded, which
/// verifies and admits them; each frame is answered with admission's verdict (as the API
/// answers), which the connection's writer waits for at most [`limits::SUBMIT_VERDICT_TIMEOUT`]
/// after the submission. Served on their own thread until `stop`.
fn start_submit_server(
    submit_listen: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    submitter: IntakeSubmitter,
    chain_id: String,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let stats = metrics.edge.submit.clone();
    let accept = move |frames: Vec<Vec<u8>>| -> Answer {
        if let Some(why) = submitter.mempool().busy() {
            metrics.busy_txs.fetch_add(frames.len() as u64, Ordering::Relaxed);
            return ready(vec![format!("rejected busy: {why}"); frames.len()]);
        }
        let (ids, batch) = crate::run::decode_frames(&frames, &chain_id);
        let undecodable = ids.len() - batch.len();
        if undecodable > 0 {
            metrics.undecodable_submissions[1].fetch_add(undecodable as u64, Ordering::Relaxed);
        }
        if batch.is_empty() {
            return Box::new(move || crate::run::answer_lines(ids, Some(&[]), |_, _| false));
        }
        let (send, verdicts) = std::sync::mpsc::sync_channel(1);
        let reply: pipeline::Reply = Box::new(move |v| {
            let _ = send.send(v);
        });
        if submitter.submit_decoded_with(Origin::Client, batch, reply).is_err() {
            return ready(vec!["rejected unavailable: the process is stopping".to_owned(); ids.len()]);
        }
        // The verdicts are waited for by the connection's writer, in order, from now.
        let deadline = Instant::now() + limits::SUBMIT_VERDICT_TIMEOUT;
        let pool = submitter.mempool().clone();
        Box::new(move || {
            let verdicts = match verdicts.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(verdicts) => Some(verdicts),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                // The intake dropped the reply: it is stopping.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return vec!["rejected unavailable: the process is stopping".to_owned(); ids.len()];
                }
            };
            crate::run::answer_lines(ids, verdicts.as_deref(), |id, e| pool.pending_again(id, e))
        })
    };
    std::thread::Builder::new()
        .name("caasiope-submit".into())
        .spawn(move || serve_submissions(submit_listen, &accept, &stop, stats))
        .context("starting the submit server")
}

impl Io {
    /// Closes the explorer API and stops the ClickHouse replicator, if they run.
    fn close_services(&mut self) {
        if let Some(x) = self.explorer.take() {
            x.close();
        }
        // The replicator finishes the batch it is writing (a kill instead loses nothing either).
        if let Some(r) = self.replicator.take().and_then(|r| Arc::try_unwrap(r).ok()) {
            r.stop();
        }
    }
}
