//! `caasiope bench net`: messages per second and MB/s over mutual TLS between two endpoints
//! (the `net` connection: hello, channels, batching writer), for small (200 B) and large
//! (64 KiB) messages, against plain TCP loopback with the same framing and batching measured in
//! the same run; and the network CPU per small message against one k256 verification.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use net::{
    NodeCert,
    conn::{ConnConfig, SendError, connection},
    frame::{self, Channel, Decoder},
    tls::{client_config, peer_server_name, server_config},
    transport::{Transport, TransportChoice},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{bench::process_cpu_s, exit::Output};

/// Arguments of `bench net`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetBench {
    /// Small messages sent per measurement (large ones: a 64 KiB message per 320 small).
    pub(crate) messages: usize,
    /// The transport under TLS (and under the plain-TCP bound).
    pub(crate) transport: TransportChoice,
}

const SMALL: usize = 200;
const LARGE: usize = 64 * 1024;
const CHAIN: &str = "bench-net";

/// One transfer's figures.
#[derive(Debug, serde::Serialize)]
struct Rate {
    messages: usize,
    bytes_per_message: usize,
    seconds: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
}

impl Rate {
    fn new(messages: usize, size: usize, seconds: f64) -> Self {
        Self {
            messages,
            bytes_per_message: size,
            seconds,
            msgs_per_s: messages as f64 / seconds,
            mb_per_s: (messages * size) as f64 / seconds / 1e6,
        }
    }
}

/// Plain TCP loopback on the same transport: the same frames, written in batches of up to
/// 256 KiB, read and decoded.
async fn plain_tcp(t: &Transport, messages: usize, size: usize) -> anyhow::Result<Rate> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accept_on = t.clone();
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tcp = accept_on.wrap(tcp)?;
        let (mut decoder, mut buf, mut got) = (Decoder::new(), vec![0u8; 256 * 1024], 0usize);
        while got < messages {
            let n = tcp.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "closed early");
            got += decoder.push(&buf[..n])?.len();
        }
        anyhow::Ok(())
    });
    let payload = vec![0x5a; size];
    let started = Instant::now();
    let mut tcp = t.wrap(TcpStream::connect(addr).await?)?;
    let mut out = Vec::with_capacity(256 * 1024 + size + frame::HEADER_LEN);
    for _ in 0..messages {
        frame::encode(Channel::Gossip, &payload, &mut out)?;
        if out.len() >= 256 * 1024 {
            tcp.write_all(&out).await?;
            out.clear();
        }
    }
    tcp.write_all(&out).await?;
    tcp.flush().await?;
    reader.await??;
    Ok(Rate::new(messages, size, started.elapsed().as_secs_f64()))
}

/// Two TLS endpoints on the `net` connection; the dialer sends `messages` on the gossip channel.
async fn over_tls(t: &Transport, messages: usize, size: usize) -> anyhow::Result<Rate> {
    let (a, b) = (NodeCert::generate(1)?, NodeCert::generate(1)?);
    let acceptor = TlsAcceptor::from(server_config(&a, [b.identity()])?);
    let connector = TlsConnector::from(client_config(&b, [a.identity()])?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let cfg = ConnConfig { queue_frames_max: 4_096, ..ConnConfig::new(CHAIN) };
    let receiver = {
        let (cfg, t) = (cfg.clone(), t.clone());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let tls = acceptor.accept(t.wrap(tcp)?).await?;
            let (_handle, mut inbound, driver) = connection(cfg);
            let task = tokio::spawn(driver.run(tls));
            let mut got = 0usize;
            while got < messages {
                let Some(m) = inbound.channels[Channel::Gossip as usize].recv().await else {
                    anyhow::bail!("connection ended: {}", task.await?);
                };
                anyhow::ensure!(m.len() == size, "a message of {} bytes", m.len());
                got += 1;
            }
            anyhow::Ok(())
        })
    };
    let tcp = t.wrap(TcpStream::connect(addr).await?)?;
    let tls = connector.connect(peer_server_name(), tcp).await?;
    let (handle, _inbound, driver) = connection(cfg);
    let sender_task = tokio::spawn(driver.run(tls));
    let payload = vec![0x5a; size];
    // Timed from the first message: the handshakes are not part of the rate.
    let started = Instant::now();
    for _ in 0..messages {
        loop {
            match handle.send(Channel::Gossip, payload.clone()) {
                Ok(()) => break,
                Err(SendError::Full(_)) => tokio::task::yield_now().await,
                Err(e) => {
                    drop(handle);
                    let receiver = receiver.await?.err().map(|e| e.to_string()).unwrap_or_default();
                    anyhow::bail!(
                        "send: {e}; the connection ended: {}; receiver: {receiver}",
                        sender_task.await?
                    )
                }
            }
        }
    }
    receiver.await??;
    let seconds = started.elapsed().as_secs_f64();
    drop(handle);
    sender_task.abort();
    Ok(Rate::new(messages, size, seconds))
}

/// One k256 verification, ns (one thread, pre-made signature).
fn k256_verify_ns() -> f64 {
    let key = engine::SecretKey::from_bytes(&[7u8; 32]).unwrap_or_else(|_| engine::SecretKey::generate());
    let prehash = [9u8; 32];
    let signature = key.sign_prehash(&prehash);
    let public_key = key.public_key();
    const N: u32 = 300;
    let started = Instant::now();
    let mut ok = 0u32;
    for _ in 0..N {
        ok += u32::from(engine::keys::verify(engine::Backend::K256, &public_key, &prehash, &signature));
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(N);
    if ok == N { ns } else { f64::NAN }
}

/// Runs the benchmark and returns its JSON report.
pub(crate) fn run(cfg: NetBench) -> anyhow::Result<Output> {
    anyhow::ensure!(cfg.messages >= 1_000, "--messages: at least 1000");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let large_messages = (cfg.messages / 320).max(100);
    let t = Transport::start(cfg.transport).context("starting the transport")?;
    let report = runtime.block_on(async {
        let tcp_small = plain_tcp(&t, cfg.messages, SMALL).await?;
        let cpu = process_cpu_s();
        let tls_small = over_tls(&t, cfg.messages, SMALL).await?;
        let cpu_per_small_ns = (process_cpu_s() - cpu) / cfg.messages as f64 * 1e9;
        let tcp_large = plain_tcp(&t, large_messages, LARGE).await?;
        let tls_large = over_tls(&t, large_messages, LARGE).await?;
        let verify_ns = k256_verify_ns();
        anyhow::Ok(serde_json::json!({
            "benchmark": "net",
            "transport": t.name(),
            "transport_reason": t.reason,
            "threads": 2,
            "small": {
                "tls": tls_small,
                "plain_tcp": tcp_small,
                "ratio": tls_small.msgs_per_s / tcp_small.msgs_per_s,
            },
            "large": {
                "tls": tls_large,
                "plain_tcp": tcp_large,
                "ratio": tls_large.msgs_per_s / tcp_large.msgs_per_s,
            },
            // Both endpoints run in this process: sending and receiving one message.
            "cpu_ns_per_small_message": cpu_per_small_ns,
            "k256_verify_ns": verify_ns,
            "cpu_per_message_over_verify": cpu_per_small_ns / verify_ns,
        }))
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Output::json(&report)
}
