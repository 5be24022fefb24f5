//! A link shaped in user space: a TCP relay that delivers every chunk it reads after a delay
//! with jitter, holds back a share of them as a lost packet would be (a retransmission later),
//! and can be cut and healed — for WAN tests on kernels without `netem`.
//!
//! Each direction of each relayed connection is a reader and a writer: the reader stamps every
//! chunk with its delivery time — now + delay ± jitter, plus a retransmission timeout for a
//! "lost" one — never earlier than the chunk before it (a TCP stream stays in order: a late
//! chunk delays those behind it, as head-of-line blocking does), and the writer sends each at
//! its time. What is in flight is bounded in bytes per direction ([`IN_FLIGHT_BYTES_MAX`]):
//! beyond it the reader waits, and the sender's window closes, as on a real link. Cutting the
//! link closes every relayed connection and refuses new ones until it is healed: both ends see
//! their connections end, as after a partition's timeouts, and redial.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, watch},
    time::Instant,
};

/// Bytes read from one side and not yet delivered to the other, per direction of a connection.
pub const IN_FLIGHT_BYTES_MAX: usize = 4 << 20;
/// The largest chunk read at once.
const CHUNK_BYTES_MAX: usize = 64 << 10;
/// The shortest retransmission timeout a lost chunk costs (Linux's minimum RTO).
const RTO_MIN: Duration = Duration::from_millis(200);

/// How a link behaves, one way.
#[derive(Clone, Copy, Debug)]
pub struct LinkSpec {
    /// One-way delay.
    pub delay: Duration,
    /// Each chunk's delay is `delay` plus or minus up to this, uniformly.
    pub jitter: Duration,
    /// The share of chunks lost (0 to 1): each is delivered a retransmission timeout late,
    /// `max(200 ms, 3 × delay)`.
    pub loss: f64,
}

impl LinkSpec {
    /// The time one chunk takes, drawn from `rng`.
    fn draw(&self, rng: &mut StdRng) -> Duration {
        let jitter = self.jitter.min(self.delay);
        let mut d = if jitter.is_zero() {
            self.delay
        } else {
            let j = rng.gen_range(0..=2 * jitter.as_micros() as u64);
            (self.delay - jitter) + Duration::from_micros(j)
        };
        if self.loss > 0.0 && rng.gen_bool(self.loss.min(1.0)) {
            d += RTO_MIN.max(self.delay * 3);
        }
        d
    }
}

/// A running relay: connections to [`Relay::addr`] are relayed to its upstream.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on `listen` (port 0: any) and relays every connection to `upstream`, each way
    /// shaped by `spec`; `seed` makes its draws repeatable. Runs on the current tokio runtime.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        spec: LinkSpec,
        seed: u64,
    ) -> std::io::Result<Self> {
        if !(0.0..=1.0).contains(&spec.loss) {
            return Err(std::io::Error::other("loss must be between 0 and 1"));
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // Cut: the connection is closed at once, as a partitioned link never answers.
                if *cut_rx.borrow() {
                    continue;
                }
                n += 1;
                let cut_rx = cut_rx.clone();
                tokio::spawn(relay(inbound, upstream, spec, seed.wrapping_add(n), cut_rx));
            }
        });
        Ok(Self { addr, cut, stop })
    }

    /// Where to connect to be relayed.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link: every relayed connection ends, new ones are refused.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Heals the link: new connections are relayed again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut.send_replace(true);
    }
}

/// One relayed connection, until either side ends it or the link is cut.
async fn relay(
    inbound: TcpStream,
    upstream: SocketAddr,
    spec: LinkSpec,
    seed: u64,
    mut cut: watch::Receiver<bool>,
) {
    let Ok(outbound) = TcpStream::connect(upstream).await else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let forth = shaped(in_read, out_write, spec, seed);
    let back = shaped(out_read, in_write, spec, seed ^ 0x9e37_79b9_7f4a_7c15);
    tokio::select! {
        _ = async { tokio::join!(forth, back) } => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// One direction: chunks read from `from` are written to `to` at their delivery times.
async fn shaped(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    spec: LinkSpec,
    seed: u64,
) {
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES_MAX));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, tokio::sync::OwnedSemaphorePermit)>();
    let reader = {
        let budget = budget.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut last = Instant::now();
            let mut buf = vec![0u8; CHUNK_BYTES_MAX];
            loop {
                // Room for a whole chunk first, the rest given back once read: what is in
                // flight stays bounded in bytes.
                let Ok(mut permit) = budget.clone().acquire_many_owned(CHUNK_BYTES_MAX as u32).await else {
                    return;
                };
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                drop(permit.split(CHUNK_BYTES_MAX - n));
                let chunk = buf[..n].to_vec();
                let at = (Instant::now() + spec.draw(&mut rng)).max(last);
                last = at;
                if tx.send((at, chunk, permit)).is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk, permit)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            drop(permit);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// `caasiope bench relay`: a shaped link between two addresses, for tests across network
/// namespaces; prints the address it listens on, then runs until SIGTERM or SIGINT. SIGUSR1
/// cuts the link, SIGUSR2 heals it.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Where to listen.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// Where to relay to.
    #[arg(long, value_name = "IP:PORT")]
    pub to: SocketAddr,
    /// One-way delay, milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub delay_ms: u64,
    /// Jitter around the delay, milliseconds (at most the delay).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub jitter_ms: u64,
    /// Share of chunks lost, 0 to 1 (each costs a retransmission timeout).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed of the delay and loss draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `caasiope bench relay`.
pub fn run(args: &RelayArgs) -> anyhow::Result<exit::Output> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let spec = LinkSpec {
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        loss: args.loss,
    };
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGUSR2])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let relay = runtime.block_on(Relay::start(args.listen, args.to, spec, args.seed))?;
    println!("{}", relay.addr());
    std::io::Write::flush(&mut std::io::stdout())?;
    for signal in signals.forever() {
        match signal {
            SIGUSR1 => relay.cut(),
            SIGUSR2 => relay.heal(),
            _ => break,
        }
    }
    Ok(exit::Output::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, bytes: &[u8]) -> (Duration, Vec<u8>) {
        let t = std::time::Instant::now();
        s.write_all(bytes).await.unwrap();
        let mut back = vec![0u8; bytes.len()];
        s.read_exact(&mut back).await.unwrap();
        (t.elapsed(), back)
    }

    #[tokio::test]
    async fn a_relayed_stream_arrives_whole_in_order_and_late_by_the_delay() {
        let spec = LinkSpec { delay: Duration::from_millis(25), jitter: Duration::from_millis(5), loss: 0.0 };
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), echo().await, spec, 1).await.unwrap();
        let mut s = TcpStream::connect(relay.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        // 1 MiB of a pattern: whole and in order however the chunks were delayed.
        let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let (_, back) = round_trip(&mut s, &bytes).await;
        assert!(back == bytes, "the stream came back changed");
        // A small message: out and back through the relay, each way 20 to 30 ms.
        for _ in 0..5 {
            let (rtt, _) = round_trip(&mut s, b"ping").await;
            assert!(rtt >= Duration::from_millis(40), "round trip {rtt:?} under twice the least delay");
        }
    }

    #[tokio::test]
    async fn a_lost_chunk_costs_a_retransmission_timeout() {
        let spec = LinkSpec { delay: Duration::from_millis(1), jitter: Duration::ZERO, loss: 1.0 };
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), echo().await, spec, 2).await.unwrap();
        let mut s = TcpStream::connect(relay.addr()).await.unwrap();
        let (rtt, back) = round_trip(&mut s, b"x").await;
        assert_eq!(back, b"x");
        assert!(rtt >= 2 * RTO_MIN, "every chunk lost each way: {rtt:?}");
    }

    #[tokio::test]
    async fn a_cut_link_ends_its_connections_and_refuses_new_ones_until_healed() {
        let spec = LinkSpec { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0 };
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), echo().await, spec, 3).await.unwrap();
        let mut s = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"a").await.1, b"a");
        relay.cut();
        let mut buf = [0u8; 1];
        let ended = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap();
        assert!(matches!(ended, Ok(0) | Err(_)), "the connection ends when the link is cut");
        let mut t = TcpStream::connect(relay.addr()).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf)).await.unwrap();
        assert!(matches!(refused, Ok(0) | Err(_)), "a new connection is closed while cut");
        relay.heal();
        let mut u = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(round_trip(&mut u, b"b").await.1, b"b");
    }

    #[test]
    fn loss_outside_zero_to_one_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let spec = LinkSpec { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 1.5 };
        let started = rt.block_on(Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            spec,
            0,
        ));
        assert!(started.is_err());
    }
}
