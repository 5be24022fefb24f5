//! The records of `secure` (sealed and opened after rustls's handshake) against rustls's own
//! record layer (tokio-rustls), in both roles and both directions, across key updates either
//! side starts; and what a peer that breaks the record protocol gets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use caasiope_net::{
    NodeCert,
    secure::{self, Secure, SecureError},
    tls::{client_config, peer_server_name, server_config},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const WAIT: Duration = Duration::from_secs(20);

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dialed = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    (dialed, accepted)
}

/// `n` bytes that differ between `seed`s and positions.
fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// Write sizes: single bytes, record-sized and larger, so records and reads split anywhere.
const SIZES: [usize; 7] = [1, 100, 16_384, 16_385, 70_000, 5, 333_333];

/// Reads plaintext until `n` bytes arrived.
async fn read_n<R: AsyncRead + Unpin>(
    rd: &mut secure::SecureReader<R>,
    n: usize,
) -> Result<Vec<u8>, SecureError> {
    let mut got = Vec::new();
    while got.len() < n {
        rd.read(|p| {
            got.extend_from_slice(p);
            Ok::<_, SecureError>(())
        })
        .await?;
    }
    Ok(got)
}

/// This side writes `ours` and reads `theirs.len()` bytes, concurrently; the writer starts once
/// half of the peer's data is in, so it answers the key updates the peer asked for meanwhile.
async fn run_ours<S: AsyncRead + AsyncWrite + Unpin + Send>(
    link: Secure<S>,
    ours: &[u8],
    theirs: &[u8],
) -> u64 {
    let Secure { mut reader, mut writer, .. } = link;
    writer.set_key_update_after(5);
    let (half_tx, half_rx) = tokio::sync::oneshot::channel();
    let read = async {
        let first = read_n(&mut reader, theirs.len() / 2).await.unwrap();
        half_tx.send(()).unwrap();
        let rest = read_n(&mut reader, theirs.len() - first.len()).await.unwrap();
        assert!([first, rest].concat() == theirs, "the peer's bytes arrived intact and in order");
    };
    let write = async {
        half_rx.await.unwrap();
        let mut left = ours;
        for size in SIZES.iter().cycle() {
            if left.is_empty() {
                break;
            }
            let (now, rest) = left.split_at((*size).min(left.len()));
            // Two parts per write: records span them.
            let (a, b) = now.split_at(now.len() / 3);
            writer.write(&[a, b]).await.unwrap();
            left = rest;
        }
        writer.keys_used()
    };
    let ((), keys) = tokio::time::timeout(WAIT, async { tokio::join!(read, write) }).await.unwrap();
    keys
}

/// rustls's side: writes `its` in chunks, asking for a key update before each (so the peer must
/// answer), then reads `expected.len()` bytes.
async fn run_rustls<T>(mut tls: T, refresh: impl Fn(&mut T), its: &[u8], expected: &[u8])
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    for chunk in its.chunks(200_000) {
        refresh(&mut tls);
        tls.write_all(chunk).await.unwrap();
        tls.flush().await.unwrap();
    }
    let mut got = vec![0u8; expected.len()];
    tls.read_exact(&mut got).await.unwrap();
    assert!(got == expected, "this side's bytes arrived intact through rustls's record layer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_interoperate_with_rustls_across_key_updates() {
    let (a, b) = (NodeCert::generate(1).unwrap(), NodeCert::generate(1).unwrap());
    let (to_rustls, from_rustls) = (data(3_000_000, 1), data(1_000_000, 2));

    // This module dials, rustls accepts.
    let (dialed, accepted) = tcp_pair().await;
    let acceptor = TlsAcceptor::from(server_config(&a, [b.identity()]).unwrap());
    let theirs = tokio::spawn({
        let (to_rustls, from_rustls) = (to_rustls.clone(), from_rustls.clone());
        async move {
            let tls = acceptor.accept(accepted).await.unwrap();
            let refresh = |t: &mut tokio_rustls::server::TlsStream<TcpStream>| {
                t.get_mut().1.refresh_traffic_keys().unwrap()
            };
            run_rustls(tls, refresh, &from_rustls, &to_rustls).await;
        }
    });
    let link = secure::connect(client_config(&b, [a.identity()]).unwrap(), dialed).await.unwrap();
    assert_eq!(link.peer, a.identity());
    let keys = run_ours(link, &to_rustls, &from_rustls).await;
    tokio::time::timeout(WAIT, theirs).await.unwrap().unwrap();
    // 3 MB in ~190 records, a new key every 5, and the answers to rustls's requests.
    assert!(keys > 30, "sending keys used: {keys}");

    // rustls dials, this module accepts.
    let (dialed, accepted) = tcp_pair().await;
    let connector = TlsConnector::from(client_config(&b, [a.identity()]).unwrap());
    let theirs = tokio::spawn({
        let (to_rustls, from_rustls) = (to_rustls.clone(), from_rustls.clone());
        async move {
            let tls = connector.connect(peer_server_name(), dialed).await.unwrap();
            let refresh = |t: &mut tokio_rustls::client::TlsStream<TcpStream>| {
                t.get_mut().1.refresh_traffic_keys().unwrap()
            };
            run_rustls(tls, refresh, &from_rustls, &to_rustls).await;
        }
    });
    let link = secure::accept(server_config(&a, [b.identity()]).unwrap(), accepted).await.unwrap();
    assert_eq!(link.peer, b.identity());
    let keys = run_ours(link, &to_rustls, &from_rustls).await;
    tokio::time::timeout(WAIT, theirs).await.unwrap().unwrap();
    assert!(keys > 30, "sending keys used: {keys}");
}

/// A connected pair through relays; the flag arms the dialer→acceptor relay's tampering.
async fn pair_through_relay() -> (Secure<DuplexStream>, Secure<DuplexStream>, Arc<AtomicBool>) {
    let (a, b) = (NodeCert::generate(1).unwrap(), NodeCert::generate(1).unwrap());
    let (dialer, dialer_far) = tokio::io::duplex(1 << 20);
    let (acceptor, acceptor_far) = tokio::io::duplex(1 << 20);
    let (d_rd, d_wr) = tokio::io::split(dialer_far);
    let (a_rd, a_wr) = tokio::io::split(acceptor_far);
    let armed = Arc::new(AtomicBool::new(false));
    tokio::spawn(relay(d_rd, a_wr, armed.clone()));
    tokio::spawn(relay(a_rd, d_wr, Arc::new(AtomicBool::new(false))));
    let accept = tokio::spawn(secure::accept(server_config(&a, [b.identity()]).unwrap(), acceptor));
    let dialed = secure::connect(client_config(&b, [a.identity()]).unwrap(), dialer).await.unwrap();
    let accepted = accept.await.unwrap().unwrap();
    (dialed, accepted, armed)
}

/// Copies `from` to `to`, and its end; once `armed`, flips a bit of the next chunk.
async fn relay<R, W>(mut from: R, mut to: W, armed: Arc<AtomicBool>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if armed.swap(false, Ordering::AcqRel) {
            buf[n - 1] ^= 0x40;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn read_err<R: AsyncRead + Unpin>(rd: &mut secure::SecureReader<R>) -> String {
    let r = tokio::time::timeout(WAIT, read_n(rd, usize::MAX)).await.expect("the reader stops");
    r.expect_err("the reader fails").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_record_stream_ends_the_connection() {
    // One altered bit in a sealed record.
    let (mut dialed, mut accepted, armed) = pair_through_relay().await;
    dialed.writer.write(&[b"before"]).await.unwrap();
    assert_eq!(read_n(&mut accepted.reader, 6).await.unwrap(), b"before");
    armed.store(true, Ordering::Release);
    dialed.writer.write(&[&[7u8; 1000]]).await.unwrap();
    assert!(read_err(&mut accepted.reader).await.contains("does not open"));

    // An oversized record, an unprotected record, and a peer that closes.
    for (bytes, expect) in [
        (&[0x17, 3, 3, 0x41, 0x01][..], "record_overflow"),
        (&[0x16, 3, 3, 0, 1, 1][..], "unprotected"),
        (&[0x17, 3, 3, 0, 3, 1, 2, 3][..], "shorter than its tag"),
    ] {
        let (mut dialed, mut accepted, _) = pair_through_relay().await;
        dialed.writer.get_mut().write_all(bytes).await.unwrap();
        let err = read_err(&mut accepted.reader).await;
        assert!(err.contains(expect), "{err}");
    }
    // Key updates without data in between, past what a peer may send.
    let (mut dialed, mut accepted, _) = pair_through_relay().await;
    for _ in 0..40 {
        dialed.writer.request_key_update(true).unwrap();
    }
    dialed.writer.write(&[]).await.unwrap();
    let err = read_err(&mut accepted.reader).await;
    assert!(err.contains("without data"), "{err}");

    let (mut dialed, mut accepted, _) = pair_through_relay().await;
    dialed.writer.write(&[b"last words"]).await.unwrap();
    dialed.writer.close().await.unwrap();
    assert_eq!(read_n(&mut accepted.reader, 10).await.unwrap(), b"last words");
    assert!(matches!(read_n(&mut accepted.reader, 1).await, Err(SecureError::Closed)));
    // Without close_notify the end of the stream is not a close.
    let (dialed, mut accepted, _) = pair_through_relay().await;
    drop(dialed);
    let end = tokio::time::timeout(WAIT, read_n(&mut accepted.reader, 1)).await.expect("the reader stops");
    assert!(matches!(end, Err(SecureError::Ended)), "{end:?}");
}
