//! Multiplexed connections over mutual TLS on loopback (tokio transport): three endpoints
//! exchange on every channel; a wrong chain id, an oversized frame, a flood and a peer that
//! never reads each end that connection only; each channel's bytes are bounded both ways.

use std::{net::SocketAddr, time::Duration};

use caasiope_net::{
    Identity, NodeCert,
    conn::{ChannelBytes, ConnConfig, ConnError, Inbound, Payload, PeerHandle, SendError, connection},
    frame::{self, Channel},
    secure::{self, Secure, SecureError},
    tls::{client_config, server_config},
    transport::{Stream, Transport, TransportChoice},
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

type TlsStream = Secure<Box<dyn Stream>>;

/// Every transport this machine runs: epoll, and io_uring where the kernel allows it.
fn transports() -> Vec<Transport> {
    let mut all = vec![Transport::start(TransportChoice::Epoll).unwrap()];
    match Transport::start(TransportChoice::IoUring) {
        Ok(t) => all.push(t),
        Err(e) => eprintln!("io_uring unavailable here ({e}): epoll only"),
    }
    all
}

const CHAIN: &str = "net-test";
const WAIT: Duration = Duration::from_secs(10);

fn cfg() -> ConnConfig {
    ConnConfig {
        write_timeout: Duration::from_millis(500),
        flood_timeout: Duration::from_millis(300),
        ..ConnConfig::new(CHAIN)
    }
}

type Peer = (PeerHandle, Inbound, JoinHandle<ConnError>);

/// A listener of `node` accepting `peers`; each accepted connection runs with `cfg`.
async fn listen(
    node: &NodeCert,
    peers: Vec<Identity>,
    cfg: ConnConfig,
    transport: &Transport,
) -> (SocketAddr, tokio::sync::mpsc::Receiver<Peer>) {
    let transport = transport.clone();
    let acceptor = server_config(node, peers).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(stream) = transport.wrap(tcp) else { continue };
            let Ok(tls) = secure::accept(acceptor.clone(), stream).await else { continue };
            let (handle, inbound, driver) = connection(cfg.clone());
            let task = tokio::spawn(driver.run(tls));
            if tx.send((handle, inbound, task)).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

async fn dial_tls(node: &NodeCert, peer: Identity, addr: SocketAddr, t: &Transport) -> TlsStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    secure::connect(client_config(node, [peer]).unwrap(), t.wrap(tcp).unwrap()).await.unwrap()
}

async fn dial(node: &NodeCert, peer: Identity, addr: SocketAddr, cfg: ConnConfig, t: &Transport) -> Peer {
    let tls = dial_tls(node, peer, addr, t).await;
    let (handle, inbound, driver) = connection(cfg);
    (handle, inbound, tokio::spawn(driver.run(tls)))
}

async fn recv(inbound: &mut Inbound, channel: Channel) -> Vec<u8> {
    recv_payload(inbound, channel).await.into_vec()
}

async fn recv_payload(inbound: &mut Inbound, channel: Channel) -> Payload {
    tokio::time::timeout(WAIT, inbound.channels[channel as usize].recv())
        .await
        .expect("in time")
        .expect("open")
}

async fn ended(task: JoinHandle<ConnError>) -> ConnError {
    tokio::time::timeout(WAIT, task).await.expect("the connection ends").unwrap()
}

/// Sends on every data channel both ways and checks what arrives.
async fn exchange(a: &mut Peer, b: &mut Peer, tag: u8) {
    for c in [Channel::Gossip, Channel::Consensus, Channel::Sync] {
        a.0.send(c, vec![tag, c as u8, 1]).unwrap();
        b.0.send(c, vec![tag, c as u8, 2]).unwrap();
    }
    for c in [Channel::Gossip, Channel::Consensus, Channel::Sync] {
        assert_eq!(recv(&mut b.1, c).await, vec![tag, c as u8, 1]);
        assert_eq!(recv(&mut a.1, c).await, vec![tag, c as u8, 2]);
    }
}

/// A raw TLS client that sends the hello by hand, for misbehaving peers.
async fn raw_after_hello(node: &NodeCert, peer: Identity, addr: SocketAddr, t: &Transport) -> TlsStream {
    let mut tls = dial_tls(node, peer, addr, t).await;
    let mut hello = vec![1u8];
    hello.extend_from_slice(&caasiope_net::conn::PROTOCOL_VERSION.to_be_bytes());
    hello.push(CHAIN.len() as u8);
    hello.extend_from_slice(CHAIN.as_bytes());
    let mut out = Vec::new();
    frame::encode(Channel::Control, &hello, &mut out).unwrap();
    tls.writer.write(&[&out]).await.unwrap();
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoints_exchange_on_every_channel() {
    let all = transports();
    if caasiope_net::uring::available().is_ok() {
        assert_eq!(all.iter().map(Transport::name).collect::<Vec<_>>(), ["epoll", "io_uring"]);
    }
    for t in &all {
        three_endpoints(t).await;
    }
}

async fn three_endpoints(t: &Transport) {
    let nodes: Vec<NodeCert> = (0..3).map(|_| NodeCert::generate(30).unwrap()).collect();
    let ids: Vec<Identity> = nodes.iter().map(NodeCert::identity).collect();
    let mut listeners = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let others = ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, id)| *id).collect();
        listeners.push(listen(n, others, cfg(), t).await);
    }
    // Each pair once: the lower index dials the higher.
    for (i, j) in [(0usize, 1usize), (0, 2), (1, 2)] {
        let mut dialer = dial(&nodes[i], ids[j], listeners[j].0, cfg(), t).await;
        let mut accepted = tokio::time::timeout(WAIT, listeners[j].1.recv()).await.unwrap().unwrap();
        exchange(&mut dialer, &mut accepted, (i * 3 + j) as u8).await;
        // Large frames on a busy channel, and consensus still gets through.
        for k in 0..8 {
            dialer.0.send(Channel::Sync, vec![k; 500_000]).unwrap();
        }
        dialer.0.send(Channel::Consensus, b"vote".to_vec()).unwrap();
        assert_eq!(recv(&mut accepted.1, Channel::Consensus).await, b"vote");
        for k in 0..8 {
            assert_eq!(recv(&mut accepted.1, Channel::Sync).await, vec![k; 500_000]);
        }
        drop(dialer.0);
        assert_eq!(ended(dialer.2).await, ConnError::Closed);
        // The peer learns it was an orderly close (close_notify), not a connection lost.
        assert_eq!(ended(accepted.2).await, ConnError::PeerClosed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_chain_id_is_refused() {
    for t in &transports() {
        wrong_chain(t).await;
    }
}

async fn wrong_chain(t: &Transport) {
    let (a, b) = (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    let (addr, mut accepted) = listen(&a, vec![b.identity()], cfg(), t).await;
    let other_chain = ConnConfig::new("another-chain");
    let dialer = dial(&b, a.identity(), addr, other_chain, t).await;
    let server = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    assert!(matches!(ended(server.2).await, ConnError::Hello(why) if why.contains("another-chain")));
    assert!(matches!(ended(dialer.2).await, ConnError::Hello(_) | ConnError::Io(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_lose_their_connection_only() {
    for t in &transports() {
        misbehaving(t).await;
    }
}

async fn misbehaving(t: &Transport) {
    let (a, b, c) =
        (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    let small = ConnConfig {
        queue_frames_max: 8,
        queue_bytes_max: ChannelBytes { consensus: 1_024, ..ChannelBytes::DEFAULT },
        ..cfg()
    };
    let (addr, mut accepted) = listen(&a, vec![b.identity(), c.identity()], small.clone(), t).await;
    let mut good = dial(&b, a.identity(), addr, cfg(), t).await;
    let mut good_at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    exchange(&mut good, &mut good_at_a, 1).await;

    // An oversized frame header.
    let mut raw = raw_after_hello(&c, a.identity(), addr, t).await;
    let at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    let huge = (frame::PAYLOAD_MAX as u32 + 1).to_be_bytes();
    raw.writer.write(&[&[Channel::Sync as u8, huge[0], huge[1], huge[2], huge[3]]]).await.unwrap();
    assert!(matches!(ended(at_a.2).await, ConnError::Frame(_)));
    drop(raw);

    // A frame within the protocol's maximum but above its channel's byte budget: it could never
    // be queued, so it is refused at its header instead of waited for.
    let mut raw = raw_after_hello(&c, a.identity(), addr, t).await;
    let at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    raw.writer.write(&[&[Channel::Consensus as u8, 0, 0, 4, 1]]).await.unwrap();
    assert_eq!(
        ended(at_a.2).await,
        ConnError::Frame(frame::FrameError::ChannelTooLarge {
            channel: Channel::Consensus,
            len: 1_025,
            max: 1_024
        })
    );
    drop(raw);

    // A flood: frames on a channel A does not consume, beyond its queue.
    let mut raw = raw_after_hello(&c, a.identity(), addr, t).await;
    let at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    let mut out = Vec::new();
    for _ in 0..64 {
        frame::encode(Channel::Gossip, &[7; 100], &mut out).unwrap();
    }
    raw.writer.write(&[&out]).await.unwrap();
    assert_eq!(ended(at_a.2).await, ConnError::Flood(Channel::Gossip));
    drop(raw);

    // A peer that never reads: A's writes stall and A drops it.
    let raw = raw_after_hello(&c, a.identity(), addr, t).await;
    let at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    let task = tokio::spawn(async move {
        let chunk = vec![9u8; 1 << 20];
        loop {
            match at_a.0.send(Channel::Sync, chunk.clone()) {
                Ok(()) => {}
                Err(SendError::Full(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break,
            }
        }
        at_a.2.await.unwrap()
    });
    assert!(matches!(tokio::time::timeout(WAIT, task).await.unwrap().unwrap(), ConnError::WriteStalled(_)));
    drop(raw);

    // Garbage after the TLS handshake, in place of the hello.
    let mut raw = dial_tls(&c, a.identity(), addr, t).await;
    let at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    raw.writer.write(&[&[0xee; 64]]).await.unwrap();
    assert!(matches!(ended(at_a.2).await, ConnError::Frame(_) | ConnError::Hello(_)));
    let drain = async { while raw.reader.read(|_| Ok::<_, SecureError>(())).await.is_ok() {} };
    let _ = tokio::time::timeout(WAIT, drain).await;

    // Garbage after the TLS handshake, in place of records: a record that does not open.
    let mut raw = dial_tls(&c, a.identity(), addr, t).await;
    let at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    raw.writer.get_mut().write_all(&[0x17, 3, 3, 0, 64]).await.unwrap();
    raw.writer.get_mut().write_all(&[0xee; 64]).await.unwrap();
    assert!(matches!(ended(at_a.2).await, ConnError::Tls(e) if e.contains("does not open")));
    drop(raw);

    // Through all of it, the good peer kept its connection.
    exchange(&mut good, &mut good_at_a, 2).await;
    assert!(!good.2.is_finished() && !good_at_a.2.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_reconnects_with_back_off() {
    for t in &transports() {
        reconnects(t).await;
    }
}

async fn reconnects(t: &Transport) {
    use std::sync::{Arc, Mutex};

    use caasiope_net::dial::{Attempt, Backoff, keep_connected};

    let (a, b) = (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    // A port with nobody listening yet.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (conn_tx, mut connections) = tokio::sync::mpsc::unbounded_channel();
    let failures = Arc::new(Mutex::new(0usize));
    let connector = client_config(&b, [a.identity()]).unwrap();
    let backoff = Backoff { min: Duration::from_millis(50), max: Duration::from_millis(200), stable: WAIT };
    let counted = failures.clone();
    let dialer = tokio::spawn(keep_connected(
        addr,
        connector,
        t.clone(),
        (cfg(), std::sync::Arc::default()),
        backoff,
        move |handle, inbound| conn_tx.send((handle, inbound)).is_ok(),
        move |attempt, _| {
            if matches!(attempt, Attempt::DialFailed(_)) {
                *counted.lock().unwrap() += 1;
            }
        },
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(*failures.lock().unwrap() >= 2, "it kept trying while nobody listened");

    // The peer comes up: the dialer connects.
    let listener = TcpListener::bind(addr).await.unwrap();
    let acceptor = server_config(&a, [b.identity()]).unwrap();
    for round in 0..2u8 {
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let tls = secure::accept(acceptor.clone(), t.wrap(tcp).unwrap()).await.unwrap();
        let (handle, mut inbound, driver) = connection(cfg());
        let server = tokio::spawn(driver.run(tls));
        let (dialer_handle, _dialer_inbound) =
            tokio::time::timeout(WAIT, connections.recv()).await.unwrap().unwrap();
        dialer_handle.send(Channel::Gossip, vec![round]).unwrap();
        assert_eq!(recv(&mut inbound, Channel::Gossip).await, vec![round]);
        // The peer drops the connection; the dialer dials again.
        drop((handle, inbound));
        assert_eq!(ended(server).await, ConnError::Closed);
    }
    dialer.abort();
}

/// The budgets are the connection's own, whatever carries its bytes: these run on epoll only.
const FRAME: usize = 64 * 1024;
const BUDGET: usize = 4 * FRAME;

fn gossip_budget() -> ConnConfig {
    ConnConfig { queue_bytes_max: ChannelBytes { gossip: BUDGET, ..ChannelBytes::DEFAULT }, ..cfg() }
}

fn gossip_frames(count: u8, first: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for k in first..first + count {
        frame::encode(Channel::Gossip, &vec![k; FRAME], &mut out).unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_bytes_stay_within_the_channel_budget_until_the_payloads_are_dropped() {
    let t = Transport::start(TransportChoice::Epoll).unwrap();
    let (a, c) = (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    // Long enough for the consumer below to drop what it holds before the peer counts as a flood.
    let flood_timeout = Duration::from_secs(3);
    let (addr, mut accepted) =
        listen(&a, vec![c.identity()], ConnConfig { flood_timeout, ..gossip_budget() }, &t).await;
    let raw = raw_after_hello(&c, a.identity(), addr, &t).await;
    let mut at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    // Twice the budget at once (written by a task: A stops reading half-way).
    let (more_tx, mut more_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let peer = tokio::spawn(async move {
        let mut raw = raw;
        raw.writer.write(&[&gossip_frames(8, 0)]).await.unwrap();
        while let Some(bytes) = more_rx.recv().await {
            raw.writer.write(&[&bytes]).await.unwrap();
        }
        raw
    });

    // The consumer receives and keeps every payload: the budget's worth comes, then nothing.
    let held_bytes = |held: &[Payload]| held.iter().map(|p| p.len()).sum::<usize>();
    let mut held = Vec::new();
    for k in 0..4u8 {
        let p = recv_payload(&mut at_a.1, Channel::Gossip).await;
        assert!(p.is_counted());
        assert_eq!(p.as_slice(), &vec![k; FRAME][..]);
        held.push(p);
    }
    let gossip = &mut at_a.1.channels[Channel::Gossip as usize];
    let next = tokio::time::timeout(Duration::from_millis(300), gossip.recv()).await;
    assert!(next.is_err(), "a frame beyond the budget while {} bytes are held", held_bytes(&held));
    assert_eq!(held_bytes(&held), BUDGET);

    // Receiving is not enough: dropping the payloads gives their bytes back, and the reading
    // resumes.
    drop(held);
    let mut held = Vec::new();
    for k in 4..8u8 {
        let p = recv_payload(&mut at_a.1, Channel::Gossip).await;
        assert_eq!(p.as_slice(), &vec![k; FRAME][..]);
        held.push(p);
    }
    assert!(!at_a.2.is_finished());

    // One more frame while the budget is held: it waits, then the peer is a flood.
    more_tx.send(gossip_frames(1, 8)).await.unwrap();
    assert_eq!(ended(at_a.2).await, ConnError::Flood(Channel::Gossip));
    assert_eq!(held_bytes(&held), BUDGET, "never more than the budget");
    let gossip = &mut at_a.1.channels[Channel::Gossip as usize];
    assert!(gossip.recv().await.is_none(), "the frame above the budget never reached the consumer");
    drop(more_tx);
    drop(tokio::time::timeout(WAIT, peer).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_bytes_are_bounded_per_channel() {
    // A connection whose driver is not running yet: nothing is written, so what is queued stays.
    let (handle, _inbound, driver) = connection(gossip_budget());
    for _ in 0..4 {
        handle.send(Channel::Gossip, vec![1; FRAME]).unwrap();
    }
    // Four frames of 256 allowed, but the bytes are spent.
    assert_eq!(handle.send(Channel::Gossip, vec![1; FRAME]), Err(SendError::Full(Channel::Gossip)));
    assert_eq!(handle.send(Channel::Gossip, vec![1]), Err(SendError::Full(Channel::Gossip)));
    // Every channel has its own budget.
    handle.send(Channel::Consensus, vec![2; FRAME]).unwrap();
    // Waiting senders wait for bytes, and one that could never fit is refused, not parked.
    let waiting =
        tokio::time::timeout(Duration::from_millis(200), handle.send_wait(Channel::Gossip, vec![1]));
    assert!(waiting.await.is_err(), "no room: it waits");
    assert_eq!(handle.send_wait(Channel::Gossip, vec![1; BUDGET + 1]).await, Err(SendError::TooLarge));
    assert_eq!(handle.send(Channel::Gossip, vec![1; BUDGET + 1]), Err(SendError::TooLarge));
    // A sender waiting when the connection goes learns it, rather than waiting for ever.
    let waiter = handle.clone();
    let waiting = tokio::spawn(async move { waiter.send_wait(Channel::Gossip, vec![1; FRAME]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(driver);
    assert_eq!(tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap(), Err(SendError::Closed));

    // On a live connection the writer gives the bytes back as it writes: a waiting sender
    // moves sixteen budgets' worth through.
    let t = Transport::start(TransportChoice::Epoll).unwrap();
    let (a, b) = (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    let (addr, mut accepted) = listen(&a, vec![b.identity()], cfg(), &t).await;
    let dialer = dial(&b, a.identity(), addr, gossip_budget(), &t).await;
    let mut at_a = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    let sender = dialer.0.clone();
    let sending = tokio::spawn(async move {
        for k in 0..64u8 {
            sender.send_wait(Channel::Gossip, vec![k; FRAME]).await.unwrap();
        }
    });
    for k in 0..64u8 {
        assert_eq!(recv(&mut at_a.1, Channel::Gossip).await, vec![k; FRAME]);
    }
    tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
}

/// A link counts the frame bytes it carries both ways and the round trip of its pings, in the
/// stats it is given (a peer's, across its connections); pings are timed on a busy link too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_counts_its_bytes_and_round_trips() {
    let t = Transport::start(TransportChoice::Epoll).unwrap();
    let nodes: Vec<NodeCert> = (0..2).map(|_| NodeCert::generate(30).unwrap()).collect();
    let (addr, mut accepted) = listen(&nodes[1], vec![nodes[0].identity()], cfg(), &t).await;
    let fast = ConnConfig { ping_interval: Duration::from_millis(50), ..cfg() };
    let stats = std::sync::Arc::new(caasiope_net::conn::LinkStats::default());
    let tls = dial_tls(&nodes[0], nodes[1].identity(), addr, &t).await;
    let (handle, _inbound, driver) = connection(fast);
    let task = tokio::spawn(driver.counted_in(stats.clone()).run(tls));
    let mut other = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    // Busy: a frame every 10 ms, never quiet for a ping interval.
    for k in 0..40u8 {
        handle.send(Channel::Gossip, vec![k; 1_000]).unwrap();
        assert_eq!(recv(&mut other.1, Channel::Gossip).await, vec![k; 1_000]);
        other.0.send(Channel::Sync, vec![k; 100]).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let until = tokio::time::Instant::now() + WAIT;
    while stats.received_bytes() < 40 * 100 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each frame: its header and payload (plus the hello and control frames).
    assert!(stats.sent_bytes() >= 40 * 1_000, "{}", stats.sent_bytes());
    assert!(stats.received_bytes() >= 40 * 100, "{}", stats.received_bytes());
    let rtt = stats.rtt().expect("a ping was timed on the busy link");
    assert!(rtt < WAIT, "{rtt:?}");
    drop(handle);
    assert_eq!(ended(task).await, ConnError::Closed);
}
