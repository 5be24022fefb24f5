//! Mutual TLS 1.3 over loopback (tokio): listed peers connect and exchange frames; an unknown
//! certificate, an expired one and garbage before the handshake are refused, and the listener
//! keeps serving the others.

use std::{sync::Arc, time::Duration};

use caasiope_net::{
    Identity, NodeCert,
    frame::{self, Channel, Decoder},
    secure::{self, SecureError},
    tls::{AllowList, client_config, server_config_allowing},
    transport::{Transport, TransportChoice},
};
use time::OffsetDateTime;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

const STEP: Duration = Duration::from_secs(10);

/// What the listener saw of one connection.
type Outcome = Result<Identity, String>;

/// A listener presenting `node`, accepting `peers`, echoing every frame; reports each
/// connection's outcome.
async fn listen(
    node: &NodeCert,
    peers: Vec<Identity>,
    t: &Transport,
) -> (std::net::SocketAddr, mpsc::Receiver<Outcome>) {
    listen_allowing(node, AllowList::new(peers), t).await
}

/// [`listen`], accepting the peers `allowed` holds at each handshake.
async fn listen_allowing(
    node: &NodeCert,
    allowed: AllowList,
    t: &Transport,
) -> (std::net::SocketAddr, mpsc::Receiver<Outcome>) {
    let t = t.clone();
    let acceptor = server_config_allowing(node, allowed).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            let Ok(stream) = t.wrap(tcp) else { continue };
            tokio::spawn(async move {
                let outcome = match tokio::time::timeout(STEP, secure::accept(acceptor, stream)).await {
                    Err(_) => Err("handshake timed out".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(mut tls)) => {
                        let mut decoder = Decoder::new();
                        'conn: loop {
                            let mut frames = Vec::new();
                            let read = tls.reader.read(|plain| {
                                decoder
                                    .push_into(plain, &mut frames)
                                    .map_err(|_| SecureError::Record("frames"))
                            });
                            if read.await.is_err() {
                                break;
                            }
                            for f in frames {
                                let mut out = Vec::new();
                                frame::encode(f.channel, &f.payload, &mut out).unwrap();
                                if tls.writer.write(&[&out]).await.is_err() {
                                    break 'conn;
                                }
                            }
                        }
                        Ok(tls.peer)
                    }
                };
                let _ = tx.send(outcome).await;
            });
        }
    });
    (addr, rx)
}

/// Dials `addr` as `node` accepting `peers`, sends one frame per channel and reads the echoes.
async fn exchange(
    node: &NodeCert,
    peers: Vec<Identity>,
    addr: std::net::SocketAddr,
    t: &Transport,
) -> Result<Identity, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = t.wrap(tcp).map_err(|e| e.to_string())?;
    let mut tls = tokio::time::timeout(STEP, secure::connect(client_config(node, peers).unwrap(), stream))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let server = tls.peer;
    let mut out = Vec::new();
    for (i, c) in Channel::ALL.iter().enumerate() {
        frame::encode(*c, &vec![i as u8; 100 + i * 1000], &mut out).unwrap();
    }
    // In TLS 1.3 the client learns of a refused client certificate only when it reads.
    tls.writer.write(&[&out]).await.map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    while got.len() < Channel::ALL.len() {
        let read = tls
            .reader
            .read(|plain| decoder.push_into(plain, &mut got).map_err(|_| SecureError::Record("frames")));
        tokio::time::timeout(STEP, read)
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| e.to_string())?;
    }
    for (i, (f, c)) in got.iter().zip(Channel::ALL).enumerate() {
        assert_eq!((f.channel, f.payload.len()), (c, 100 + i * 1000), "echo on every channel");
    }
    Ok(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_peers_connect_and_others_are_refused() {
    let mut all = vec![Transport::start(TransportChoice::Epoll).unwrap()];
    match Transport::start(TransportChoice::IoUring) {
        Ok(t) => all.push(t),
        Err(e) => eprintln!("io_uring unavailable here ({e}): epoll only"),
    }
    assert_eq!(all.len(), if caasiope_net::uring::available().is_ok() { 2 } else { 1 });
    for t in &all {
        refusals(t).await;
    }
}

async fn refusals(t: &Transport) {
    let (a, b, c) =
        (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    let now = OffsetDateTime::now_utc();
    let expired =
        NodeCert::generate_valid(now - time::Duration::days(30), now - time::Duration::days(1)).unwrap();
    let not_yet =
        NodeCert::generate_valid(now + time::Duration::days(1), now + time::Duration::days(30)).unwrap();
    // A accepts B, C and the expired and future certificates' identities: only validity refuses
    // the last two.
    let (addr, mut outcomes) =
        listen(&a, vec![b.identity(), c.identity(), expired.identity(), not_yet.identity()], t).await;

    // B and A list each other: both learn the other's identity.
    assert_eq!(exchange(&b, vec![a.identity()], addr, t).await, Ok(a.identity()));
    assert_eq!(outcomes.recv().await.unwrap(), Ok(b.identity()));

    // An unknown client: refused by A (the client sees it when it reads).
    let stranger = NodeCert::generate(30).unwrap();
    assert!(exchange(&stranger, vec![a.identity()], addr, t).await.is_err());
    let seen = outcomes.recv().await.unwrap();
    assert!(seen.as_ref().is_err_and(|e| e.contains("certificate")), "{seen:?}");

    // A server the client does not list: refused by the client.
    let err = exchange(&c, vec![b.identity()], addr, t).await.unwrap_err();
    assert!(err.contains("certificate") || err.contains("Certificate"), "{err}");
    assert!(outcomes.recv().await.unwrap().is_err());

    // Expired and not-yet-valid certificates, though listed.
    for cert in [&expired, &not_yet] {
        assert!(exchange(cert, vec![a.identity()], addr, t).await.is_err());
        let seen = outcomes.recv().await.unwrap();
        let refused = |e: &String| e.to_lowercase().contains("expired") || e.contains("NotValidYet");
        assert!(seen.as_ref().is_err_and(refused), "{seen:?}");
    }

    // Garbage instead of a ClientHello: that connection fails, the listener goes on.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    raw.write_all(&[0xaa; 4096]).await.unwrap();
    assert!(outcomes.recv().await.unwrap().is_err());
    drop(raw);

    // And the listed peers still connect, several at once.
    let (b, c, a_id) = (Arc::new(b), Arc::new(c), a.identity());
    let mut joins = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { b.clone() } else { c.clone() };
        let t = t.clone();
        joins.push(tokio::spawn(async move { exchange(&node, vec![a_id], addr, &t).await }));
    }
    for j in joins {
        assert_eq!(j.await.unwrap(), Ok(a_id));
    }
}

/// Rotation: a node restarts with a new certificate; peers that list the new identity accept
/// it, and once they drop the old one from their set, the old certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_replaces_the_old_one() {
    let t = Transport::start(TransportChoice::Epoll).unwrap();
    let a = NodeCert::generate(30).unwrap();
    let (old, new) = (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    // During the change A lists both; afterwards only the new one.
    let (addr, mut outcomes) = listen(&a, vec![old.identity(), new.identity()], &t).await;
    assert_eq!(exchange(&old, vec![a.identity()], addr, &t).await, Ok(a.identity()));
    assert_eq!(outcomes.recv().await.unwrap(), Ok(old.identity()));
    assert_eq!(exchange(&new, vec![a.identity()], addr, &t).await, Ok(a.identity()));
    assert_eq!(outcomes.recv().await.unwrap(), Ok(new.identity()));
    let (addr, mut outcomes) = listen(&a, vec![new.identity()], &t).await;
    assert!(exchange(&old, vec![a.identity()], addr, &t).await.is_err());
    assert!(outcomes.recv().await.unwrap().is_err());
    assert_eq!(exchange(&new, vec![a.identity()], addr, &t).await, Ok(a.identity()));
}

/// A peer added to a running listener's list (a reloaded configuration) is accepted from then
/// on, without a new listener; before, it is refused like any stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_while_listening_is_accepted_from_then_on() {
    let t = Transport::start(TransportChoice::Epoll).unwrap();
    let (a, b, late) =
        (NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap(), NodeCert::generate(30).unwrap());
    let allowed = AllowList::new([b.identity()]);
    let (addr, mut outcomes) = listen_allowing(&a, allowed.clone(), &t).await;
    assert!(exchange(&late, vec![a.identity()], addr, &t).await.is_err());
    assert!(outcomes.recv().await.unwrap().is_err());
    assert!(allowed.add(late.identity()) && !allowed.add(late.identity()));
    assert_eq!(exchange(&late, vec![a.identity()], addr, &t).await, Ok(a.identity()));
    assert_eq!(outcomes.recv().await.unwrap(), Ok(late.identity()));
    assert_eq!(exchange(&b, vec![a.identity()], addr, &t).await, Ok(a.identity()));
}
