//! `caasiope bench net`: messages per second and MB/s over mutual TLS between two endpoints
//! (the `net` connection: hello, channels, batching writer), for small (200 B) and large
//! (64 KiB) messages, against plain TCP loopback carrying the same frames, measured in the same
//! run; and the network CPU per small message against one k256 verification.
//!
//! Small messages travel as the node gossips transactions: up to 64 per gossip frame in the
//! gossip codec (`replica::wire`), split back into one buffer each by the receiver. The plain
//! TCP bound sends the very same frames and splits them the same way, so the ratio is the cost
//! of TLS and of the connection (queues, scheduling, hello) alone. The same small messages one
//! per frame are measured too (`small_unbatched`), to show what batching buys.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use consensus::wire::{GOSSIP_TXS_MAX, decode_txs, put_bodies};
use engine::codec::Reader;
use exit::Output;
use net::{
    NodeCert,
    conn::{ConnConfig, connection},
    frame::{self, Channel, Decoder},
    secure,
    tls::{client_config, server_config},
    transport::{Transport, TransportChoice},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    net_kernel::kernel_operations,
    stats::{median, process_cpu_s},
};

/// Arguments of `bench net`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetBench {
    /// Small messages sent per measurement (large ones: a 64 KiB message per 320 small).
    pub(crate) messages: usize,
    /// Rounds of every measurement, interleaved.
    pub(crate) rounds: u32,
    /// The transport under TLS (and under the plain-TCP bound).
    pub(crate) transport: TransportChoice,
}

const SMALL: usize = 200;
const LARGE: usize = 64 * 1024;
const CHAIN: &str = "bench-net";
/// Connections whose operations the kernel measurement batches in one `io_uring_enter` (about
/// the peers of a validator in a consortium of ten).
const KERNEL_BATCH: usize = 8;

/// What one measurement sends: `messages` of `size` bytes, `per_frame` to a frame (more than
/// one: in the gossip codec, as the node batches transactions).
#[derive(Debug, Clone, Copy)]
struct Shape {
    messages: usize,
    size: usize,
    per_frame: usize,
}

impl Shape {
    /// The frames' payloads: every frame full but maybe the last.
    fn payloads(self) -> impl Iterator<Item = Vec<u8>> {
        let message = vec![0x5a; self.size];
        let mut left = self.messages;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let n = left.min(self.per_frame);
            left -= n;
            Some(if self.per_frame == 1 {
                message.clone()
            } else {
                let mut p = Vec::with_capacity(4 + n * (4 + self.size));
                put_bodies(std::iter::repeat_n(message.as_slice(), n), &mut p);
                p
            })
        })
    }

    /// The messages in a received payload, each in its own buffer as the node takes them.
    fn received(self, payload: Vec<u8>) -> anyhow::Result<usize> {
        let messages = if self.per_frame == 1 {
            vec![payload]
        } else {
            decode_txs(&mut Reader::new(&payload), GOSSIP_TXS_MAX)?
        };
        anyhow::ensure!(messages.iter().all(|m| m.len() == self.size), "a message of another size");
        Ok(messages.len())
    }
}

/// One transfer's figures.
#[derive(Debug, serde::Serialize)]
struct Rate {
    messages: usize,
    bytes_per_message: usize,
    messages_per_frame: usize,
    seconds: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    /// Process CPU (both endpoints) per message.
    cpu_ns_per_message: f64,
}

impl Rate {
    fn new(shape: Shape, seconds: f64) -> Self {
        Self {
            messages: shape.messages,
            bytes_per_message: shape.size,
            messages_per_frame: shape.per_frame,
            seconds,
            msgs_per_s: shape.messages as f64 / seconds,
            mb_per_s: (shape.messages * shape.size) as f64 / seconds / 1e6,
            cpu_ns_per_message: f64::NAN,
        }
    }
}

/// Plain TCP loopback on the same transport: the same frames, written in batches of up to
/// 256 KiB, read, decoded and split into messages.
async fn plain(t: Transport, shape: Shape) -> anyhow::Result<Rate> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accept_on = t.clone();
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tcp = accept_on.wrap(tcp)?;
        let (mut decoder, mut buf, mut got) = (Decoder::new(), vec![0u8; 256 * 1024], 0usize);
        while got < shape.messages {
            let n = tcp.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "closed early");
            for f in decoder.push(&buf[..n])? {
                got += shape.received(f.payload)?;
            }
        }
        anyhow::Ok(())
    });
    let started = Instant::now();
    let mut tcp = t.wrap(TcpStream::connect(addr).await?)?;
    let mut out = Vec::with_capacity(512 * 1024);
    for payload in shape.payloads() {
        frame::encode(Channel::Gossip, &payload, &mut out)?;
        if out.len() >= 256 * 1024 {
            tcp.write_all(&out).await?;
            out.clear();
        }
    }
    tcp.write_all(&out).await?;
    tcp.flush().await?;
    reader.await??;
    Ok(Rate::new(shape, started.elapsed().as_secs_f64()))
}

/// Two TLS endpoints on the `net` connection; the dialer sends `messages` on the gossip channel.
async fn tls(t: Transport, shape: Shape) -> anyhow::Result<Rate> {
    let (a, b) = (NodeCert::generate(1)?, NodeCert::generate(1)?);
    let acceptor = server_config(&a, [b.identity()])?;
    let connector = client_config(&b, [a.identity()])?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    // The node's own connection settings (replica::network).
    let cfg = ConnConfig::new(CHAIN);
    let receiver = {
        let (cfg, t) = (cfg.clone(), t.clone());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let tls = secure::accept(acceptor, t.wrap(tcp)?).await?;
            let (_handle, mut inbound, driver) = connection(cfg);
            let task = tokio::spawn(driver.run(tls));
            let mut got = 0usize;
            while got < shape.messages {
                let Some(payload) = inbound.channels[Channel::Gossip as usize].recv().await else {
                    anyhow::bail!("connection ended: {}", task.await?);
                };
                got += shape.received(payload.into_vec())?;
            }
            anyhow::Ok(())
        })
    };
    let tcp = t.wrap(TcpStream::connect(addr).await?)?;
    let tls = secure::connect(connector, tcp).await?;
    let (handle, _inbound, driver) = connection(cfg);
    let sender_task = tokio::spawn(driver.run(tls));
    // Timed from the first message: the handshakes are not part of the rate.
    let started = Instant::now();
    for payload in shape.payloads() {
        if let Err(e) = handle.send_wait(Channel::Gossip, payload).await {
            drop(handle);
            let receiver = receiver.await?.err().map(|e| e.to_string()).unwrap_or_default();
            anyhow::bail!("send: {e}; the connection ended: {}; receiver: {receiver}", sender_task.await?)
        }
    }
    receiver.await??;
    let seconds = started.elapsed().as_secs_f64();
    drop(handle);
    sender_task.abort();
    Ok(Rate::new(shape, seconds))
}

/// The transport alone: ns per 64-byte write on one stream and its read on the other (two
/// sockets of one loopback connection, one task), i.e. the cost of two socket operations and
/// the loopback between them, through the transport's own stream code.
async fn operations(t: Transport) -> anyhow::Result<f64> {
    const OPS: u32 = 20_000;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut a = t.wrap(TcpStream::connect(listener.local_addr()?).await?)?;
    let mut b = t.wrap(listener.accept().await?.0)?;
    let (message, mut got) = ([0x5au8; 64], [0u8; 64]);
    let started = Instant::now();
    for _ in 0..OPS {
        a.write_all(&message).await?;
        b.read_exact(&mut got).await?;
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(OPS))
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

/// One shape's rounds: TLS and plain TCP measured back to back in each round.
#[derive(Default)]
struct Series {
    tls: Vec<Rate>,
    plain: Vec<Rate>,
}

impl Series {
    fn report(&self) -> serde_json::Value {
        let ratios: Vec<f64> =
            self.tls.iter().zip(&self.plain).map(|(t, p)| t.msgs_per_s / p.msgs_per_s).collect();
        let mid = |rates: &[Rate], f: fn(&Rate) -> f64| median(rates.iter().map(f).collect());
        serde_json::json!({
            // The median of the rounds' ratios: each round's TLS rate over its plain-TCP rate.
            "ratio": median(ratios.clone()),
            "ratios": ratios,
            "tls": {
                "msgs_per_s": mid(&self.tls, |r| r.msgs_per_s),
                "mb_per_s": mid(&self.tls, |r| r.mb_per_s),
                "cpu_ns_per_message": mid(&self.tls, |r| r.cpu_ns_per_message),
            },
            "plain_tcp": {
                "msgs_per_s": mid(&self.plain, |r| r.msgs_per_s),
                "mb_per_s": mid(&self.plain, |r| r.mb_per_s),
                "cpu_ns_per_message": mid(&self.plain, |r| r.cpu_ns_per_message),
            },
            "messages": self.tls.first().map(|r| r.messages),
            "bytes_per_message": self.tls.first().map(|r| r.bytes_per_message),
            "messages_per_frame": self.tls.first().map(|r| r.messages_per_frame),
        })
    }
}

/// Runs a measurement as a task of the runtime, so only its two worker threads run (the
/// thread blocking on the runtime would be a third on two cores).
async fn spawned<F>(f: F) -> anyhow::Result<Rate>
where
    F: std::future::Future<Output = anyhow::Result<Rate>> + Send + 'static,
{
    let cpu = process_cpu_s();
    let mut rate = tokio::spawn(f).await??;
    rate.cpu_ns_per_message = (process_cpu_s() - cpu) / rate.messages as f64 * 1e9;
    Ok(rate)
}

/// Every round's figures, by measurement.
#[derive(Default)]
struct Measurements {
    small: Series,
    unbatched: Series,
    large: Series,
    /// TLS on epoll beside an io_uring run (empty otherwise).
    epoll_small: Vec<Rate>,
    epoll_large: Vec<Rate>,
    /// ns per write-and-read pair through the streams: the transport measured, epoll.
    ops_mine: Vec<f64>,
    ops_epoll: Vec<f64>,
    /// ns per send-and-receive pair below the streams: one connection, then KERNEL_BATCH.
    kernel_uring: Vec<f64>,
    kernel_syscalls: Vec<f64>,
    batch_uring: Vec<f64>,
    batch_syscalls: Vec<f64>,
}

/// The three shapes measured: small messages batched as gossip, the same one per frame, large.
fn shapes(cfg: NetBench) -> [Shape; 3] {
    let small = Shape { messages: cfg.messages, size: SMALL, per_frame: GOSSIP_TXS_MAX };
    let large = Shape { messages: (cfg.messages / 320).max(100), size: LARGE, per_frame: 1 };
    [small, Shape { per_frame: 1, ..small }, large]
}

/// One round of every measurement; `reverse` reverses their order.
async fn measure_round(
    m: &mut Measurements,
    reverse: bool,
    t: &Transport,
    epoll: Option<&Transport>,
    [small, unbatched, large]: [Shape; 3],
) -> anyhow::Result<()> {
    // Each shape's measurements run one after the other — the plain-TCP bound, TLS on
    // this transport, and for io_uring TLS on epoll — in an order that reverses every
    // round, so neither side of a ratio always runs first (or after the same thing).
    for (series, shape, versus) in [
        (&mut m.small, small, Some(&mut m.epoll_small)),
        (&mut m.unbatched, unbatched, None),
        (&mut m.large, large, Some(&mut m.epoll_large)),
    ] {
        let mut versus = versus;
        let mut order = [0, 1, 2];
        if reverse {
            order.reverse();
        }
        for step in order {
            match step {
                0 => series.plain.push(spawned(plain(t.clone(), shape)).await?),
                1 => series.tls.push(spawned(tls(t.clone(), shape)).await?),
                _ => {
                    if let (Some(e), Some(v)) = (epoll, versus.as_deref_mut()) {
                        v.push(spawned(tls(e.clone(), shape)).await?);
                    }
                }
            }
        }
    }
    if let Some(e) = epoll {
        // One after the other, as runtime tasks, in alternating order.
        for epoll_now in [reverse, !reverse] {
            let (transport, into) = if epoll_now { (e, &mut m.ops_epoll) } else { (t, &mut m.ops_mine) };
            into.push(tokio::spawn(operations(transport.clone())).await??);
        }
        // The same operations below the streams, on the runtime's blocking thread (the
        // workers idle meanwhile).
        for (connections, uring, syscalls) in [
            (1, &mut m.kernel_uring, &mut m.kernel_syscalls),
            (KERNEL_BATCH, &mut m.batch_uring, &mut m.batch_syscalls),
        ] {
            for direct in [reverse, !reverse] {
                let into = if direct { &mut *syscalls } else { &mut *uring };
                into.push(
                    tokio::task::spawn_blocking(move || kernel_operations(!direct, connections)).await??,
                );
            }
        }
    }
    Ok(())
}

/// The io_uring run's comparison with epoll, from `m`.
fn vs_epoll(m: &Measurements) -> serde_json::Value {
    // Each round's io_uring TLS rate over its epoll TLS rate, median.
    let ratios = |mine: &[Rate], theirs: &[Rate]| -> Vec<f64> {
        mine.iter().zip(theirs).map(|(m, e)| m.msgs_per_s / e.msgs_per_s).collect()
    };
    let (small_ratios, large_ratios) =
        (ratios(&m.small.tls, &m.epoll_small), ratios(&m.large.tls, &m.epoll_large));
    let mid = |rates: &[Rate], f: fn(&Rate) -> f64| median(rates.iter().map(f).collect());
    serde_json::json!({
        "small_tls_epoll_msgs_per_s": mid(&m.epoll_small, |r| r.msgs_per_s),
        "large_tls_epoll_msgs_per_s": mid(&m.epoll_large, |r| r.msgs_per_s),
        // CPU of both ends per message, each transport (the io_uring figures are the
        // `small` and `large` sections' TLS ones).
        "small_tls_epoll_cpu_ns_per_message": mid(&m.epoll_small, |r| r.cpu_ns_per_message),
        "large_tls_epoll_cpu_ns_per_message": mid(&m.epoll_large, |r| r.cpu_ns_per_message),
        "small_ratio": median(small_ratios.clone()),
        "large_ratio": median(large_ratios.clone()),
        "small_ratios": small_ratios,
        "large_ratios": large_ratios,
        // The transports alone: ns per 64-byte write and read through each (medians),
        // and the median of the rounds' epoll ns over io_uring ns (above 1: io_uring's
        // operations are cheaper).
        "op_pair_ns_io_uring": median(m.ops_mine.clone()),
        "op_pair_ns_epoll": median(m.ops_epoll.clone()),
        "op_ratio": median(m.ops_mine.iter().zip(&m.ops_epoll).map(|(m, e)| e / m).collect()),
        // The same operations without tokio or the streams: io_uring `Send`/`Recv`
        // against `send`/`recv` system calls (above 1: io_uring's are cheaper).
        "kernel_pair_ns_io_uring": median(m.kernel_uring.clone()),
        "kernel_pair_ns_syscalls": median(m.kernel_syscalls.clone()),
        "kernel_ratio": median(m.kernel_uring.iter().zip(&m.kernel_syscalls).map(|(u, s)| s / u).collect()),
        // The same over KERNEL_BATCH connections, io_uring carrying all their sends in
        // one `io_uring_enter` and all their receives in another: what batching several
        // peers' operations in one ring would buy.
        "kernel_batch_connections": KERNEL_BATCH,
        "kernel_batch_pair_ns_io_uring": median(m.batch_uring.clone()),
        "kernel_batch_pair_ns_syscalls": median(m.batch_syscalls.clone()),
        "kernel_batch_ratio": median(m.batch_uring.iter().zip(&m.batch_syscalls).map(|(u, s)| s / u).collect()),
    })
}

/// Runs the benchmark and returns its JSON report.
pub(crate) fn run(cfg: NetBench) -> anyhow::Result<Output> {
    anyhow::ensure!(cfg.messages >= 1_000, "--messages: at least 1000");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (t, epoll) = runtime.block_on(async {
        let t = Transport::start(cfg.transport).context("starting the transport")?;
        // An io_uring run measures TLS over epoll in the same rounds, to compare the two.
        let epoll = match t.name() {
            "io_uring" => Some(Transport::start(TransportChoice::Epoll)?),
            _ => None,
        };
        anyhow::Ok((t, epoll))
    })?;
    let report = runtime.block_on(async {
        let mut m = Measurements::default();
        for round in 0..cfg.rounds {
            measure_round(&mut m, round % 2 == 1, &t, epoll.as_ref(), shapes(cfg)).await?;
        }
        let verify_ns = k256_verify_ns();
        let cpu_per_small_ns = median(m.small.tls.iter().map(|r| r.cpu_ns_per_message).collect());
        let mut report = serde_json::json!({
            "benchmark": "net",
            "transport": t.name(),
            "transport_reason": t.reason,
            "threads": 2,
            "rounds": cfg.rounds,
            "small": m.small.report(),
            "small_unbatched": m.unbatched.report(),
            "large": m.large.report(),
            // Both endpoints run in this process: sending and receiving one small message
            // (batched as gossip is).
            "cpu_ns_per_small_message": cpu_per_small_ns,
            "k256_verify_ns": verify_ns,
            "cpu_per_message_over_verify": cpu_per_small_ns / verify_ns,
        });
        if epoll.is_some() {
            report["vs_epoll"] = vs_epoll(&m);
        }
        anyhow::Ok(report)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Output::json(&report)
}
