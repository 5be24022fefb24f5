//! The process's peer-to-peer side: a TLS listener and dialers (one connection per peer pair),
//! each connection's inbound channels forwarded to the host loop as events.
//!
//! Who dials whom: a validator dials the validators whose identity sorts above its own; a node
//! or explorer dials every validator; everyone accepts the peers of its configuration. So each
//! pair has exactly one connection, and a restarted process is redialed by (or redials) each
//! peer with back-off.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use crossbeam_channel::{Sender, TrySendError};
use net::{
    Identity, NodeCert,
    conn::{ConnConfig, Inbound, PeerHandle, connection},
    dial::{Attempt, Backoff, keep_connected},
    frame::Channel,
    secure,
    tls::{client_config, server_config},
    transport::Transport,
};

use super::{Event, admin::Metrics};
use crate::config::{NetConfig, Role};

/// TLS handshakes the listener runs at once.
const HANDSHAKES_MAX: usize = 64;
/// TLS handshakes the listener runs at once for one source (an IPv4 address or an IPv6 /64):
/// one source cannot take every slot and lock the listed peers out.
const HANDSHAKES_PER_SOURCE: usize = 8;

/// Index of a peer in the configuration's `[[peers]]`.
pub(crate) type PeerIndex = usize;

/// Starts the listener and the dialers on the current tokio runtime.
pub(crate) async fn start(
    cfg: &NetConfig,
    my_role: Role,
    node: &NodeCert,
    chain_id: &str,
    transport: Transport,
    events: Sender<Event>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let conn_cfg = ConnConfig::new(chain_id);
    let identities: Vec<Identity> = cfg.peers.iter().map(|(_, id)| *id).collect();
    let generation = Arc::new(AtomicU64::new(0));
    if let Some(listen) = cfg.listen {
        let acceptor = server_config(node, identities.clone())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let (events, metrics, transport, conn_cfg, generation) =
            (events.clone(), metrics.clone(), transport.clone(), conn_cfg.clone(), generation.clone());
        // Handshakes in progress at once: each holds a 64 KiB buffer for up to the hello
        // timeout before the peer is known, so strangers opening connections are bounded.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let sources = Arc::new(Sources::default());
        tokio::spawn(async move {
            loop {
                let (tcp, from) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    // Out of descriptors, say: wait rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Beyond the bounds a connection is closed at once; a listed peer redials.
                let Some(slot) = sources.admit(from.ip()) else {
                    metrics.refused_handshakes.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    metrics.refused_handshakes.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Ok(stream) = transport.wrap(tcp) else { continue };
                let (acceptor, events, metrics, conn_cfg, identities, generation) = (
                    acceptor.clone(),
                    events.clone(),
                    metrics.clone(),
                    conn_cfg.clone(),
                    identities.clone(),
                    generation.clone(),
                );
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(conn_cfg.hello_timeout, secure::accept(acceptor, stream)).await;
                    drop((permit, slot));
                    let Ok(Ok(tls)) = handshake else { return };
                    let Some(peer) = identities.iter().position(|p| *p == tls.peer) else { return };
                    let (handle, inbound, driver) = connection(conn_cfg);
                    let gen_ = generation.fetch_add(1, Ordering::Relaxed);
                    if !connected(peer, gen_, handle, inbound, &events, &metrics) {
                        return;
                    }
                    let _ = driver.run(tls).await;
                    disconnected(peer, gen_, &events, &metrics);
                });
            }
        });
    }
    let me = node.identity();
    for (peer, (spec, id)) in cfg.peers.iter().enumerate() {
        let dial = match my_role {
            Role::Validator => spec.role == Role::Validator && id.0 > me.0,
            Role::Node | Role::Explorer => spec.role == Role::Validator,
        };
        if !dial {
            continue;
        }
        // One verifier per dialed peer, accepting only that peer: the connection is known to
        // be with it.
        let connector = client_config(node, [*id])?;
        let (addr, events, metrics, transport, conn_cfg, generation): (SocketAddr, _, _, _, _, _) = (
            spec.addr,
            events.clone(),
            metrics.clone(),
            transport.clone(),
            conn_cfg.clone(),
            generation.clone(),
        );
        let name = spec.name.clone();
        tokio::spawn(async move {
            let backoff = Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(5),
                ..Backoff::default()
            };
            let current = Arc::new(AtomicU64::new(u64::MAX));
            let on_connect = {
                let (events, metrics, current) = (events.clone(), metrics.clone(), current.clone());
                move |handle: PeerHandle, inbound: Inbound| {
                    let gen_ = generation.fetch_add(1, Ordering::Relaxed);
                    current.store(gen_, Ordering::Relaxed);
                    connected(peer, gen_, handle, inbound, &events, &metrics)
                }
            };
            let on_attempt = move |a: &Attempt, _delay: Duration| {
                if let Attempt::Ended(why) = a {
                    eprintln!("caasiope: connection to {name} ended: {why}");
                    disconnected(peer, current.load(Ordering::Relaxed), &events, &metrics);
                }
            };
            keep_connected(addr, connector, transport, conn_cfg, backoff, on_connect, on_attempt).await;
        });
    }
    Ok(())
}

/// Handshakes in progress per source. Holds an entry only while a handshake runs, so at most
/// [`HANDSHAKES_MAX`] (and the few being refused).
#[derive(Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

impl Sources {
    /// A handshake slot for a connection from `from`, unless its source has
    /// [`HANDSHAKES_PER_SOURCE`] in progress.
    fn admit(self: &Arc<Self>, from: IpAddr) -> Option<SourceSlot> {
        let source = source(from);
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = running.entry(source).or_insert(0);
        if *n >= HANDSHAKES_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot { sources: self.clone(), source })
    }
}

/// A handshake in progress from `source`; gives its slot back when dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut running = self.sources.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut n) = running.entry(self.source) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

/// The source a connection from `ip` counts against: an IPv4 address (also when mapped into
/// IPv6), or the /64 an IPv6 address is in (what one host is usually given).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// Registers a connection with the host and forwards its inbound channels.
fn connected(
    peer: PeerIndex,
    generation: u64,
    handle: PeerHandle,
    inbound: Inbound,
    events: &Sender<Event>,
    metrics: &Arc<Metrics>,
) -> bool {
    if events.send(Event::Connected { peer, generation, handle }).is_err() {
        return false;
    }
    metrics.peers_connected.fetch_add(1, Ordering::Relaxed);
    let Inbound { channels } = inbound;
    for (channel, mut rx) in Channel::ALL.into_iter().zip(channels) {
        if channel == Channel::Control {
            continue;
        }
        let (events, metrics) = (events.clone(), metrics.clone());
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                match events.try_send(Event::Frame { peer, channel, payload }) {
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

fn disconnected(peer: PeerIndex, generation: u64, events: &Sender<Event>, metrics: &Arc<Metrics>) {
    metrics.peers_connected.fetch_sub(1, Ordering::Relaxed);
    let _ = events.send(Event::Disconnected { peer, generation });
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
        me: NodeCert,
        peer: NodeCert,
        events: crossbeam_channel::Receiver<Event>,
        metrics: Arc<Metrics>,
    }

    impl Listening {
        async fn start() -> Self {
            let (me, peer) = (NodeCert::generate(1).unwrap(), NodeCert::generate(1).unwrap());
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
            start(&cfg, Role::Validator, &me, "test", transport, tx, metrics.clone()).await.unwrap();
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
        assert!(node.metrics.refused_handshakes.load(Ordering::Relaxed) >= 2);

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
        assert_eq!(node.metrics.refused_handshakes.load(Ordering::Relaxed), 1);
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

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source(v4), v4);
        assert_eq!(source("::ffff:192.0.2.7".parse().unwrap()), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source(other));
        let sources = Arc::new(Sources::default());
        let held: Vec<_> = (0..HANDSHAKES_PER_SOURCE).map(|_| sources.admit(a).unwrap()).collect();
        assert!(sources.admit(b).is_none(), "the same /64 is the same source");
        assert!(sources.admit(other).is_some());
        drop(held);
        assert!(sources.admit(b).is_some());
        assert!(sources.0.lock().unwrap().is_empty(), "no entry outlives its handshakes");
    }
}
