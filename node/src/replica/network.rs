//! The process's peer-to-peer side: a TLS listener and dialers (one connection per peer pair),
//! each connection's inbound channels forwarded to the host loop as events.
//!
//! Who dials whom: a validator dials the validators whose identity sorts above its own; a node
//! or explorer dials every validator; everyone accepts the peers of its configuration. So each
//! pair has exactly one connection, and a restarted process is redialed by (or redials) each
//! peer with back-off.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
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
        tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    // Out of descriptors, say: wait rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Beyond the bound a connection is closed at once; a listed peer redials.
                let Ok(permit) = handshakes.clone().try_acquire_owned() else { continue };
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
                    drop(permit);
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

    /// Strangers holding connections open take at most [`HANDSHAKES_MAX`] handshakes: past
    /// that a connection is closed at once, even a listed peer's; once they go, it connects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listener_bounds_the_handshakes_in_progress() {
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
        let (events, connected) = crossbeam_channel::bounded(64);
        let transport = Transport::start(TransportChoice::Epoll).unwrap();
        let metrics = Arc::new(Metrics::default());
        start(&cfg, Role::Validator, &me, "test", transport, events, metrics).await.unwrap();
        let dial = || async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            secure::connect(client_config(&peer, [me.identity()]).unwrap(), tcp).await
        };

        let mut strangers = Vec::new();
        for _ in 0..HANDSHAKES_MAX {
            strangers.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut [0u8; 1])).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "closed at once: {closed:?}");
        assert!(dial().await.is_err(), "no handshake slot while the strangers hold them all");

        drop(strangers);
        let mut up = false;
        for _ in 0..50 {
            if dial().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "the listed peer connects once the strangers are gone");
        let event = tokio::task::spawn_blocking(move || connected.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(matches!(event, Ok(Event::Connected { peer: 0, .. })));
    }
}
