//! The process's peer-to-peer side: a TLS listener and dialers (one connection per peer pair),
//! each connection's inbound channels forwarded to the host loop as events.
//!
//! Over 600 lines with its tests: the code is about 400; the tests exercise the private
//! connection handling over real sockets.
//!
//! Who dials whom: a validator dials the validators whose identity sorts above its own; a node
//! or explorer dials every validator; everyone accepts the peers of its configuration. So each
//! pair has exactly one connection, and a restarted process is redialed by (or redials) each
//! peer with back-off.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use crossbeam_channel::{Sender, TrySendError};
use net::{
    Identity, NodeCert,
    conn::{ConnConfig, Inbound, PeerHandle, connection},
    dial::{Attempt, Backoff, keep_connected},
    frame::Channel,
    secure,
    tls::{AllowList, client_config, server_config_allowing},
    transport::Transport,
};

use crate::{host::Event, metrics::Metrics, wire::Sync as SyncMsg};
use limits::{
    BAN_MAX, BAN_MIN, FRAMES_IN_FLIGHT_PER_PEER, HANDSHAKES_MAX, HANDSHAKES_PER_SOURCE,
    SERVE_BYTES_PER_SECOND, SERVE_LEDGERS_PER_SECOND, SERVE_QUEUE_MAX, SERVE_SNAPSHOT_RECORDS_PER_SECOND,
    SERVES_AT_ONCE,
};

use crate::config::{NetConfig, PeerSpec, Role};

/// Index of a peer in the configuration's `[[peers]]`.
pub(crate) type PeerIndex = usize;

/// Encodes the committed ledger at a height as a sync message, if the store has it.
pub(crate) type LedgerSource = Arc<dyn Fn(u64) -> Option<Vec<u8>> + Send + Sync>;

/// Peers not heard for a while: what a peer's fault costs it (and never the process).
#[derive(Debug, Default)]
pub(crate) struct Bans(Mutex<HashMap<PeerIndex, (Instant, u32)>>);

impl Bans {
    /// Bans `peer` for a while (longer for each repeated fault); returns for how long.
    pub(crate) fn ban(&self, peer: PeerIndex) -> Duration {
        let mut bans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let strikes = bans.get(&peer).map_or(0, |(_, s)| *s);
        let span = BAN_MIN.saturating_mul(1 << strikes.min(6)).min(BAN_MAX);
        bans.insert(peer, (Instant::now() + span, strikes + 1));
        span
    }

    /// Whether `peer` is banned now.
    pub(crate) fn banned(&self, peer: PeerIndex) -> bool {
        let bans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        bans.get(&peer).is_some_and(|(until, _)| Instant::now() < *until)
    }
}

/// What a connection's server sends its peer.
#[derive(Clone, Copy, Debug)]
enum Serve {
    /// The committed ledger at a height.
    Ledger(u64),
    /// A record of a state snapshot: the snapshot's height (0: the latest) and the record.
    Snapshot(u64, u32),
}

/// Hands requests to a connection's server (bounded: a full queue drops the request).
#[derive(Clone, Debug)]
pub(crate) struct ServeHandle(tokio::sync::mpsc::Sender<Serve>);

impl ServeHandle {
    /// Queues the ledger at `height` to be sent to the peer; `false` if the queue is full.
    pub(crate) fn serve(&self, height: u64) -> bool {
        self.0.try_send(Serve::Ledger(height)).is_ok()
    }

    /// Queues record `record` of the snapshot of `height` (0: the latest); `false` if the queue
    /// is full.
    fn serve_snapshot(&self, height: u64, record: u32) -> bool {
        self.0.try_send(Serve::Snapshot(height, record)).is_ok()
    }
}

/// What the connections share: the events queue, metrics, bans, and the ledger source.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) events: Sender<Event>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) bans: Arc<Bans>,
    pub(crate) ledgers: LedgerSource,
    pub(crate) serving: Arc<tokio::sync::Semaphore>,
    /// The snapshots this process serves (`None`: it takes none).
    pub(crate) snapshots: Option<Arc<crate::snapshots::Snapshots>>,
}

impl Shared {
    pub(crate) fn new(
        events: Sender<Event>,
        metrics: Arc<Metrics>,
        bans: Arc<Bans>,
        ledgers: LedgerSource,
    ) -> Self {
        Self {
            events,
            metrics,
            bans,
            ledgers,
            serving: Arc::new(tokio::sync::Semaphore::new(SERVES_AT_ONCE)),
            snapshots: None,
        }
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self { tokens: burst, rate, burst, at: Instant::now() }
    }

    /// How long until `cost` tokens are there (zero: take them now).
    fn wait_for(&mut self, cost: f64) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= cost.min(self.burst) {
            self.tokens -= cost;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((cost.min(self.burst) - self.tokens) / self.rate)
        }
    }
}

/// Serves one connection's ledger and snapshot requests: in order, one at a time, within its
/// peer's rate and byte budgets, read from the store or the snapshot file off the host thread.
async fn serve_ledgers(
    mut requests: tokio::sync::mpsc::Receiver<Serve>,
    handle: PeerHandle,
    shared: Shared,
    mut close: tokio::sync::watch::Receiver<bool>,
) {
    let mut ledgers = Bucket::new(SERVE_LEDGERS_PER_SECOND, SERVE_LEDGERS_PER_SECOND);
    let mut records = Bucket::new(SERVE_SNAPSHOT_RECORDS_PER_SECOND, SERVE_SNAPSHOT_RECORDS_PER_SECOND);
    let mut bytes = Bucket::new(SERVE_BYTES_PER_SECOND, 2.0 * SERVE_BYTES_PER_SECOND);
    loop {
        let request = tokio::select! {
            r = requests.recv() => match r { Some(r) => r, None => return },
            _ = close.changed() => return,
        };
        let bucket = match request {
            Serve::Ledger(_) => &mut ledgers,
            Serve::Snapshot(..) => &mut records,
        };
        let wait = bucket.wait_for(1.0);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let Ok(permit) = shared.serving.clone().acquire_owned().await else { return };
        let (source, snapshots) = (shared.ledgers.clone(), shared.snapshots.clone());
        let read = move || match request {
            Serve::Ledger(height) => source(height),
            Serve::Snapshot(height, record) => {
                Some(snapshots.map_or_else(|| SyncMsg::NoSnapshot.encode(), |s| s.record(height, record)))
            }
        };
        let Ok(Some(payload)) = tokio::task::spawn_blocking(read).await else { continue };
        drop(permit);
        let wait = bytes.wait_for(payload.len() as f64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if matches!(request, Serve::Ledger(_)) {
            shared.metrics.served_ledgers.fetch_add(1, Ordering::Relaxed);
        }
        if handle.send(Channel::Sync, payload).is_err() {
            shared.metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What every connection task starts from: the shared state, the transport, the connection
/// settings, the counter whose values tell a peer's connection from its successor, and the
/// peers' identities by index (appended to when the configuration adds one), which the
/// listener accepts.
#[derive(Clone)]
struct Connections {
    shared: Shared,
    transport: Transport,
    conn_cfg: ConnConfig,
    generation: Arc<AtomicU64>,
    identities: Arc<RwLock<Vec<Identity>>>,
    allowed: AllowList,
}

/// Whether a process of `my_role` and identity `me` dials `spec` (else it waits to be dialed).
fn dials(my_role: Role, me: Identity, spec: &PeerSpec, id: Identity) -> bool {
    match my_role {
        Role::Validator => spec.role == Role::Validator && id.0 > me.0,
        Role::Node | Role::Explorer => spec.role == Role::Validator,
    }
}

/// The peers of a running process, which a reloaded configuration adds to.
pub(crate) struct PeerSet {
    conns: Connections,
    node: Arc<NodeCert>,
    my_role: Role,
    runtime: tokio::runtime::Handle,
}

impl PeerSet {
    /// Adds a peer: accepted from now on, and dialed if this process dials such a peer; its
    /// index (the next one).
    pub(crate) fn add(&self, spec: &PeerSpec, id: Identity) -> anyhow::Result<PeerIndex> {
        let index = {
            let mut ids = self.conns.identities.write().unwrap_or_else(PoisonError::into_inner);
            ids.push(id);
            ids.len() - 1
        };
        self.conns.allowed.add(id);
        if dials(self.my_role, self.node.identity(), spec, id) {
            let _runtime = self.runtime.enter();
            keep_dialing(index, spec, id, &self.node, self.conns.clone())?;
        }
        Ok(index)
    }
}

/// Starts the listener and the dialers on the current tokio runtime; the peer set, to add to.
pub(crate) async fn start(
    cfg: &NetConfig,
    my_role: Role,
    node: Arc<NodeCert>,
    chain_id: &str,
    transport: Transport,
    shared: Shared,
) -> anyhow::Result<PeerSet> {
    let conn_cfg = ConnConfig::new(chain_id);
    let identities: Vec<Identity> = cfg.peers.iter().map(|(_, id)| *id).collect();
    let conns = Connections {
        shared,
        transport,
        conn_cfg,
        generation: Arc::new(AtomicU64::new(0)),
        allowed: AllowList::new(identities.iter().copied()),
        identities: Arc::new(RwLock::new(identities)),
    };
    if let Some(listen) = cfg.listen {
        accept_peers(listen, &node, conns.clone()).await?;
    }
    let me = node.identity();
    for (peer, (spec, id)) in cfg.peers.iter().enumerate() {
        if dials(my_role, me, spec, *id) {
            keep_dialing(peer, spec, *id, &node, conns.clone())?;
        }
    }
    Ok(PeerSet { conns, node, my_role, runtime: tokio::runtime::Handle::current() })
}

/// Binds the peer listener and accepts the configured peers on it, in a task: each
/// connection's TLS handshake runs in its own task, within the bounds on handshakes in
/// progress (in all and per source).
async fn accept_peers(listen: SocketAddr, node: &NodeCert, conns: Connections) -> anyhow::Result<()> {
    let acceptor = server_config_allowing(node, conns.allowed.clone())?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    if let Err(e) = edge::widen_backlog(&listener, limits::LISTEN_BACKLOG) {
        eprintln!("caasiope: cannot widen the accept queue: {e}");
    }
    let metrics = conns.shared.metrics.clone();
    // Handshakes in progress at once, and from one source: each holds a 64 KiB buffer for up
    // to the hello timeout before the peer is known, so strangers opening connections are
    // bounded, and one source cannot take every slot and lock the listed peers out.
    let handshakes = edge::Slots::new(HANDSHAKES_MAX, HANDSHAKES_PER_SOURCE, metrics.edge.peers.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, say: wait rather than spin.
                Err(e) => {
                    tokio::time::sleep(edge::accept_backoff(&e)).await;
                    continue;
                }
            };
            // Beyond the bounds a connection is closed at once; a listed peer redials.
            let Ok(slot) = handshakes.admit(from.ip()) else {
                metrics.refused_handshakes[crate::metrics::handshake_refusal("busy")]
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Ok(stream) = conns.transport.wrap(tcp) else { continue };
            tokio::spawn(handshake(stream, slot, acceptor.clone(), conns.clone()));
        }
    });
    Ok(())
}

/// One accepted connection: its TLS handshake within the hello timeout (holding its handshake
/// `slot` until then), then, if it is a listed peer not banned, its connection until it ends.
/// Refusals are counted by reason.
async fn handshake(
    stream: Box<dyn net::transport::Stream>,
    slot: edge::Slot,
    acceptor: net::tls::Acceptor,
    conns: Connections,
) {
    let Connections { shared, conn_cfg, generation, identities, .. } = conns;
    let refused = |reason: &str| {
        let i = crate::metrics::handshake_refusal(reason);
        shared.metrics.refused_handshakes[i].fetch_add(1, Ordering::Relaxed);
    };
    let handshake = tokio::time::timeout(conn_cfg.hello_timeout, secure::accept(acceptor, stream)).await;
    drop(slot);
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(_)) => return refused("tls"),
        Err(_) => return refused("timeout"),
    };
    let known = identities.read().unwrap_or_else(PoisonError::into_inner).iter().position(|p| *p == tls.peer);
    let Some(peer) = known else {
        return refused("unknown_identity");
    };
    // A penalized peer is not heard until its ban ends.
    if shared.bans.banned(peer) {
        return refused("banned");
    }
    let (handle, inbound, driver) = connection(conn_cfg);
    let driver = driver.counted_in(shared.metrics.link_stats(peer));
    let gen_ = generation.fetch_add(1, Ordering::Relaxed);
    if !connected(peer, gen_, handle, inbound, &shared) {
        return;
    }
    let _ = driver.run(tls).await;
    disconnected(peer, gen_, &shared);
}

/// Keeps a connection to `peer` (at `spec.addr`, proven to be `id`) in a task: dialed, and
/// redialed with back-off whenever it ends.
fn keep_dialing(
    peer: PeerIndex,
    spec: &PeerSpec,
    id: Identity,
    node: &NodeCert,
    conns: Connections,
) -> anyhow::Result<()> {
    // One verifier per dialed peer, accepting only that peer: the connection is known to
    // be with it.
    let connector = client_config(node, [id])?;
    let Connections { shared, transport, conn_cfg, generation, .. } = conns;
    let (addr, name): (SocketAddr, _) = (spec.addr, spec.name.clone());
    tokio::spawn(async move {
        let backoff =
            Backoff { min: Duration::from_millis(100), max: Duration::from_secs(5), ..Backoff::default() };
        let current = Arc::new(AtomicU64::new(u64::MAX));
        let link = (conn_cfg, shared.metrics.link_stats(peer));
        let on_connect = {
            let (shared, current) = (shared.clone(), current.clone());
            move |handle: PeerHandle, inbound: Inbound| {
                // A penalized peer is not heard until its ban ends: the connection is
                // dropped (closing it) and dialed again after the back-off.
                if shared.bans.banned(peer) {
                    current.store(u64::MAX, Ordering::Relaxed);
                    return true;
                }
                let gen_ = generation.fetch_add(1, Ordering::Relaxed);
                current.store(gen_, Ordering::Relaxed);
                connected(peer, gen_, handle, inbound, &shared)
            }
        };
        let on_attempt = move |a: &Attempt, _delay: Duration| {
            if let Attempt::Ended(why) = a {
                let current = current.load(Ordering::Relaxed);
                if current != u64::MAX {
                    eprintln!("caasiope: connection to {name} ended: {why}");
                    disconnected(peer, current, &shared);
                }
            }
        };
        keep_connected(addr, connector, transport, link, backoff, on_connect, on_attempt).await;
    });
    Ok(())
}

/// Registers a connection with the host and forwards its inbound channels; its ledger
/// requests go to its own server instead (off the host thread, within the peer's budget).
fn connected(
    peer: PeerIndex,
    generation: u64,
    handle: PeerHandle,
    inbound: Inbound,
    shared: &Shared,
) -> bool {
    let (serve_tx, serve_rx) = tokio::sync::mpsc::channel(SERVE_QUEUE_MAX);
    let serve = ServeHandle(serve_tx);
    // The host closes the connection by this (a penalized peer): its tasks drop their ends of
    // the queues, which ends the connection.
    let (close, closed) = tokio::sync::watch::channel(false);
    let event = Event::Connected { peer, generation, handle: handle.clone(), serve: serve.clone(), close };
    // The host takes connection events without fail; if its queue is ever full, the wait must not
    // hold a runtime worker (the other connections' tasks run on the rest).
    if tokio::task::block_in_place(|| shared.events.send(event)).is_err() {
        return false;
    }
    tokio::spawn(serve_ledgers(serve_rx, handle, shared.clone(), closed.clone()));
    let (events, metrics) = (&shared.events, &shared.metrics);
    metrics.peers_connected.fetch_add(1, Ordering::Relaxed);
    metrics.peer_connection(peer, true);
    let slots = Arc::new(tokio::sync::Semaphore::new(FRAMES_IN_FLIGHT_PER_PEER));
    let Inbound { channels } = inbound;
    for (channel, mut rx) in Channel::ALL.into_iter().zip(channels) {
        if channel == Channel::Control {
            continue;
        }
        let (events, metrics, serve, mut closed, slots) =
            (events.clone(), metrics.clone(), serve.clone(), closed.clone(), slots.clone());
        tokio::spawn(async move {
            loop {
                let payload = tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => return },
                    _ = closed.changed() => return,
                };
                if channel == Channel::Sync {
                    if let Some((height, record)) = crate::wire::snapshot_request(&payload) {
                        if !serve.serve_snapshot(height, record) {
                            metrics.dropped_requests.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    if let Some(height) = crate::wire::ledger_request(&payload) {
                        // It asks for the ledger after the ones it has.
                        metrics.peer_at(peer, height.saturating_sub(1));
                        if !serve.serve(height) {
                            metrics.dropped_requests.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                }
                // Waits while this peer has its share of frames in the host's queue: the
                // connection stops reading and, past its flood timeout, the peer is cut off.
                let slot = tokio::select! {
                    s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
                    _ = closed.changed() => return,
                };
                match events.try_send(Event::Frame { peer, channel, payload, slot }) {
                    Ok(()) => {}
                    // The host is behind: drop (consensus re-broadcasts, gossip is best effort,
                    // sync is re-requested) rather than grow memory.
                    Err(TrySendError::Full(_)) => {
                        metrics.dropped_events.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        });
    }
    true
}

fn disconnected(peer: PeerIndex, generation: u64, shared: &Shared) {
    shared.metrics.peers_connected.fetch_sub(1, Ordering::Relaxed);
    shared.metrics.peer_connection(peer, false);
    let _ = tokio::task::block_in_place(|| shared.events.send(Event::Disconnected { peer, generation }));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use net::transport::TransportChoice;
    use tokio::{io::AsyncReadExt, net::TcpStream};

    use super::*;
    use crate::config::PeerSpec;

    /// A validator listening on loopback with one listed peer (a node it does not dial): its
    /// address, its certificate, the peer's, its connection events and its metrics.
    struct Listening {
        addr: SocketAddr,
        me: Arc<NodeCert>,
        peer: NodeCert,
        events: crossbeam_channel::Receiver<Event>,
        metrics: Arc<Metrics>,
    }

    impl Listening {
        async fn start() -> Self {
            let (me, peer) = (Arc::new(NodeCert::generate(1).unwrap()), NodeCert::generate(1).unwrap());
            let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let spec = PeerSpec {
                name: "peer".into(),
                // Not a validator: this validator does not dial it.
                role: Role::Node,
                identity: peer.identity().to_string(),
                addr: "127.0.0.1:9".parse().unwrap(),
            };
            let cfg = NetConfig {
                node_dir: PathBuf::new(),
                listen: Some(addr),
                admin_listen: "127.0.0.1:9".parse().unwrap(),
                transport: TransportChoice::Epoll,
                peers: vec![(spec, peer.identity())],
            };
            let (tx, events) = crossbeam_channel::bounded(64);
            let transport = Transport::start(TransportChoice::Epoll).unwrap();
            let metrics = Arc::new(Metrics::default());
            let shared = Shared::new(tx, metrics.clone(), Arc::default(), Arc::new(|_| None));
            start(&cfg, Role::Validator, me.clone(), "test", transport, shared).await.unwrap();
            Self { addr, me, peer, events, metrics }
        }

        /// The listed peer's TLS handshake, from 127.0.0.1.
        async fn dial(&self) -> Result<(), secure::SecureError> {
            let tcp = TcpStream::connect(self.addr).await.unwrap();
            secure::connect(client_config(&self.peer, [self.me.identity()]).unwrap(), tcp).await.map(drop)
        }

        /// A connection from `source` (any address in 127.0.0.0/8 is loopback) that sends nothing.
        async fn stranger(&self, source: [u8; 4]) -> TcpStream {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((source, 0))).unwrap();
            socket.connect(self.addr).await.unwrap()
        }

        /// Whether the listener closes `tcp` at once (within 5 s) rather than serve it.
        async fn closed(mut tcp: TcpStream) -> bool {
            let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut [0u8; 1])).await;
            matches!(read, Ok(Ok(0) | Err(_)))
        }

        /// Waits until the listed peer's connection reaches the host.
        async fn peer_connects(&self) {
            let mut up = false;
            for _ in 0..50 {
                if self.dial().await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(up, "the listed peer connects");
            let events = self.events.clone();
            let event = tokio::task::spawn_blocking(move || events.recv_timeout(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(matches!(event, Ok(Event::Connected { peer: 0, .. })), "{event:?}");
        }
    }

    /// Strangers holding connections open take at most [`HANDSHAKES_MAX`] handshakes: past
    /// that a connection is closed at once, even a listed peer's; once they go, it connects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listener_bounds_the_handshakes_in_progress() {
        let node = Listening::start().await;
        // From as many sources as it takes, each within its own bound.
        let mut strangers = Vec::new();
        for k in 0..HANDSHAKES_MAX {
            let source = [127, 0, 1, (k / HANDSHAKES_PER_SOURCE) as u8];
            strangers.push(node.stranger(source).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            Listening::closed(node.stranger([127, 0, 2, 1]).await).await,
            "a new source is closed at once"
        );
        assert!(node.dial().await.is_err(), "no handshake slot while the strangers hold them all");
        assert!(node.metrics.refused_handshakes[0].load(Ordering::Relaxed) >= 2);

        drop(strangers);
        node.peer_connects().await;
    }

    /// One source holds at most [`HANDSHAKES_PER_SOURCE`] handshakes: its next connection is
    /// closed at once while a listed peer from another source connects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_source_takes_a_bounded_share_of_the_handshakes() {
        let node = Listening::start().await;
        let mut strangers = Vec::new();
        for _ in 0..HANDSHAKES_PER_SOURCE {
            strangers.push(node.stranger([127, 0, 3, 1]).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(Listening::closed(node.stranger([127, 0, 3, 1]).await).await, "the source's next is closed");
        assert_eq!(node.metrics.refused_handshakes[0].load(Ordering::Relaxed), 1);
        node.peer_connects().await;
        // Its held connections still wait for their handshakes (not refused).
        let mut first = strangers.swap_remove(0);
        let pending = tokio::time::timeout(Duration::from_millis(300), first.read(&mut [0u8; 1])).await;
        assert!(pending.is_err(), "a held handshake is not closed: {pending:?}");
        // Once one of them goes, the source may start another.
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = node.stranger([127, 0, 3, 1]).await;
        let pending = tokio::time::timeout(Duration::from_millis(300), Listening::closed(next)).await;
        assert!(pending.is_err(), "a freed slot serves the source again");
    }
}

#[cfg(test)]
mod fairness {
    use std::path::PathBuf;

    use net::{conn::ConnConfig, transport::TransportChoice};
    use tokio::net::TcpStream;

    use super::*;
    use crate::config::PeerSpec;

    /// One peer flooding the host with frames it does not handle fills only its own share of
    /// the host's queue: another peer's consensus frames all reach the host, none dropped.
    /// (Before the per-peer slots, frames went into one shared queue with `try_send`, so the
    /// flooder filled it and the other peer's frames were dropped.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_peers_flood_does_not_crowd_out_anothers_frames() {
        // Without the slots the other peer cannot even connect (its connection's event waits
        // behind the flood): a time limit turns that into a failure.
        tokio::time::timeout(Duration::from_secs(30), flood_and_calm())
            .await
            .expect("the other peer was starved");
    }

    async fn flood_and_calm() {
        let me = Arc::new(NodeCert::generate(1).unwrap());
        let (flooder, honest) = (NodeCert::generate(1).unwrap(), NodeCert::generate(1).unwrap());
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let spec = |name: &str, cert: &NodeCert| PeerSpec {
            name: name.into(),
            role: Role::Node,
            identity: cert.identity().to_string(),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let cfg = NetConfig {
            node_dir: PathBuf::new(),
            listen: Some(addr),
            admin_listen: "127.0.0.1:9".parse().unwrap(),
            transport: TransportChoice::Epoll,
            peers: vec![
                (spec("flooder", &flooder), flooder.identity()),
                (spec("honest", &honest), honest.identity()),
            ],
        };
        // The host's queue as the node sizes it, and a host that reads nothing until the end.
        let (tx, events) = crossbeam_channel::bounded(64 + 2 * FRAMES_IN_FLIGHT_PER_PEER);
        let metrics = Arc::new(Metrics::default());
        let shared = Shared::new(tx, metrics.clone(), Arc::default(), Arc::new(|_| None));
        start(
            &cfg,
            Role::Validator,
            me.clone(),
            "test",
            Transport::start(TransportChoice::Epoll).unwrap(),
            shared,
        )
        .await
        .unwrap();
        let dial = |cert: &NodeCert| {
            let connector = client_config(cert, [me.identity()]).unwrap();
            async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let tls = secure::connect(connector, tcp).await.unwrap();
                let (handle, inbound, driver) = connection(ConnConfig::new("test"));
                tokio::spawn(driver.run(tls));
                (handle, inbound)
            }
        };
        let (flood, _flood_inbound) = dial(&flooder).await;
        for i in 0..4 * FRAMES_IN_FLIGHT_PER_PEER {
            if flood.send_wait(Channel::Consensus, vec![(i % 251) as u8; 16]).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (calm, _calm_inbound) = dial(&honest).await;
        for i in 0..100u8 {
            calm.send(Channel::Consensus, vec![i; 8]).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut from_honest = Vec::new();
        let mut from_flooder = 0;
        // Every frame is held until all are counted: one dropped while counting gives its slot
        // back, and the flooder's connection may queue another one in the meantime.
        let queued: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        for e in &queued {
            if let Event::Frame { peer, payload, .. } = e {
                match peer {
                    0 => from_flooder += 1,
                    _ => from_honest.push(payload[0]),
                }
            }
        }
        assert!(from_flooder <= FRAMES_IN_FLIGHT_PER_PEER, "the flooder had {from_flooder} frames queued");
        assert_eq!(from_honest, (0..100u8).collect::<Vec<_>>(), "every frame of the other peer, in order");
        assert_eq!(metrics.dropped_events.load(Ordering::Relaxed), 0);
    }
}
