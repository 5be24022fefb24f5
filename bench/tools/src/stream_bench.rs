//! `caasiope bench stream --api ADDR --key FILE --json`: many live `/v1/stream` subscribers
//! against one explorer. It measures the explorer's CPU, resident memory and threads (its own
//! `process_*` metrics) over `--seconds` with a transaction load and no subscriber (the bound,
//! same run), then over `--seconds` with `--subscribers` connected (from `--sources` loopback
//! addresses: a source may hold only so many API connections) while the same load runs. Each
//! subscriber checks that it gets every event, in order, once; `--resumes` of them drop their
//! connection at random times and reconnect with `Last-Event-ID`, and must miss nothing either.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use api::routes;
use engine::{
    Currency, Encode,
    tx::{Fee, Leg, TX_VERSION, Transaction},
};
use exit::Output;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::edge_bench::{connect, request, sample};

/// Parameters of the stream benchmark (`caasiope bench stream`).
#[derive(Debug, clap::Args)]
pub struct StreamBench {
    /// The explorer API's address, e.g. 127.0.0.1:7404.
    #[arg(long, value_name = "ADDR")]
    api: SocketAddr,
    /// A funded account's secret key file (the load pays itself 1 unit and the fee).
    #[arg(long, value_name = "FILE", default_value = "data/localnet/faucet.key")]
    key: std::path::PathBuf,
    /// Live subscribers.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    subscribers: u32,
    /// Loopback source addresses the subscribers connect from (127.0.1.1, 127.0.1.2, …).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=250))]
    sources: u8,
    /// Seconds of each window (the bound without subscribers, then with them).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3_600))]
    seconds: u64,
    /// Transactions per second submitted through the API during both windows (0: none).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=2_000))]
    rate: u32,
    /// Subscribers that drop their connection once, at a random time, and resume with
    /// `Last-Event-ID`.
    #[arg(long, default_value_t = 100)]
    resumes: u32,
}

/// The targets (issue 18): extra explorer memory and CPU with the subscribers connected.
const TARGET_EXTRA_RSS_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
const TARGET_EXTRA_CPU_CORES: f64 = 0.10;

/// What the subscribers counted.
#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    /// Events that were not the one expected next (a gap or a repeat).
    out_of_order: AtomicU64,
    resumed: AtomicU64,
    /// Streams the server ended with `end`.
    ended: AtomicU64,
    failed: AtomicU64,
}

/// The event a subscriber expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Anything: the first event.
    Any,
    /// Transaction `index` of ledger `height`, of `count`.
    Tx { height: u64, index: u64, count: u64 },
    /// The ledger event of `height`.
    Ledger(u64),
}

/// Checks one event against what was expected; returns the next expectation and whether it
/// was in order.
fn follow(next: Next, event: &str, id: &str, data: &str) -> (Next, bool) {
    let after_ledger = |height: u64, data: &str| {
        let count = serde_json::from_str::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v["tx_count"].as_u64())
            .unwrap_or(0);
        if count == 0 { Next::Ledger(height + 1) } else { Next::Tx { height, index: 0, count } }
    };
    match event {
        "ledger" => {
            let Ok(height) = id.parse::<u64>() else { return (next, false) };
            let ok = matches!(next, Next::Any) || next == Next::Ledger(height);
            (after_ledger(height, data), ok)
        }
        "transaction" => {
            let parsed =
                id.split_once(':').and_then(|(h, i)| Some((h.parse::<u64>().ok()?, i.parse::<u64>().ok()?)));
            let Some((height, index)) = parsed else { return (next, false) };
            match next {
                Next::Tx { height: h, index: i, count } if h == height && i == index => {
                    let next = if index + 1 == count {
                        Next::Ledger(height + 1)
                    } else {
                        Next::Tx { height, index: index + 1, count }
                    };
                    (next, true)
                }
                _ => (next, false),
            }
        }
        _ => (next, true),
    }
}

/// One subscriber from `source`, until `stop`: follows the stream from `from`, checks every
/// event, and (if `drop_after` is given) drops its connection once after that long and
/// resumes with `Last-Event-ID`.
async fn subscriber(
    (source, api): (IpAddr, SocketAddr),
    from: u64,
    mut drop_after: Option<Duration>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let (mut next, mut last_id) = (Next::Any, None::<String>);
    let started = Instant::now();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let resume = last_id.as_ref().map(|id| format!("last-event-id: {id}\r\n")).unwrap_or_default();
        let head = format!("GET {}?from={from} HTTP/1.1\r\nhost: {api}\r\n{resume}\r\n", routes::STREAM);
        let Ok(mut s) = connect(source, api).await else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if s.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        if first {
            counts.connected.fetch_add(1, Ordering::Relaxed);
            first = false;
        } else {
            counts.resumed.fetch_add(1, Ordering::Relaxed);
        }
        let mut http = Chunked::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut sse = String::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if drop_after.is_some_and(|d| started.elapsed() >= d) {
                drop_after = None;
                break;
            }
            let n = match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => n,
            };
            counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
            match http.feed(&buf[..n]) {
                Ok(text) => sse.push_str(&String::from_utf8_lossy(&text)),
                Err(status) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("caasiope bench stream: answered {status}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
            take_events(&mut sse, (&mut next, &mut last_id), &counts);
        }
    }
}

/// Checks and counts the whole events at the start of `sse` (removed from it), moving the
/// expectation and the last id on.
fn take_events(sse: &mut String, (next, last_id): (&mut Next, &mut Option<String>), counts: &Counts) {
    while let Some(end) = sse.find("\n\n") {
        let block: String = sse.drain(..end + 2).collect();
        let field =
            |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
        let Some(event) = field("event:") else { continue };
        if event == routes::STREAM_EVENT_END {
            counts.ended.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (id, data) = (field("id:").unwrap_or_default(), field("data:").unwrap_or_default());
        let (after, in_order) = follow(*next, &event, &id, &data);
        if !in_order {
            counts.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        *next = after;
        *last_id = Some(id);
        counts.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// An HTTP/1.1 answer with a chunked body, decoded as it arrives.
#[derive(Default)]
struct Chunked {
    buf: Vec<u8>,
    state: Part,
}

/// What [`Chunked`] reads next.
#[derive(Clone, Copy, Default)]
enum Part {
    #[default]
    Head,
    Size,
    /// Bytes left of a chunk.
    Data(usize),
    /// The CRLF after a chunk.
    Crlf,
    Done,
}

impl Chunked {
    /// The body bytes that `bytes` completes, or the status line of an answer that is not 200.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let line_end = |buf: &[u8], sep: &[u8]| buf.windows(sep.len()).position(|w| w == sep);
        loop {
            match self.state {
                Part::Head => {
                    let Some(end) = line_end(&self.buf, b"\r\n\r\n") else { return Ok(out) };
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    if head.split(' ').nth(1) != Some("200") {
                        return Err(head.lines().next().unwrap_or_default().to_owned());
                    }
                    self.buf.drain(..end + 4);
                    self.state = Part::Size;
                }
                Part::Size => {
                    let Some(end) = line_end(&self.buf, b"\r\n") else { return Ok(out) };
                    let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16)
                        .map_err(|_| format!("bad chunk size {line:?}"))?;
                    self.buf.drain(..end + 2);
                    self.state = if size == 0 { Part::Done } else { Part::Data(size) };
                }
                Part::Data(left) => {
                    let take = left.min(self.buf.len());
                    if take == 0 {
                        return Ok(out);
                    }
                    out.extend(self.buf.drain(..take));
                    self.state = if take == left { Part::Crlf } else { Part::Data(left - take) };
                }
                Part::Crlf => {
                    if self.buf.len() < 2 {
                        return Ok(out);
                    }
                    self.buf.drain(..2);
                    self.state = Part::Size;
                }
                Part::Done => return Ok(out),
            }
        }
    }
}

/// The explorer's own figures now.
#[derive(Clone, Copy, Debug, Default)]
struct Process {
    cpu_seconds: f64,
    rss_bytes: f64,
    threads: f64,
    streams: f64,
}

async fn process(api: SocketAddr) -> anyhow::Result<Process> {
    let (code, m) = request(IpAddr::V4(Ipv4Addr::LOCALHOST), api, "GET /metrics HTTP/1.1", b"").await?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    let need = |name: &str| sample::<f64>(&m, name).with_context(|| format!("/metrics has no {name}"));
    Ok(Process {
        cpu_seconds: need("process_cpu_seconds_total")?,
        rss_bytes: need("process_resident_memory_bytes")?,
        threads: need("process_threads")?,
        streams: sample::<f64>(&m, "caasiope_api_streams").unwrap_or(0.0),
    })
}

async fn status(api: SocketAddr) -> anyhow::Result<api::Status> {
    let (code, body) =
        request(IpAddr::V4(Ipv4Addr::LOCALHOST), api, &format!("GET {} HTTP/1.1", routes::STATUS), b"")
            .await?;
    if code != 200 {
        bail!("{} answered {code}: {body}", routes::STATUS);
    }
    serde_json::from_str(&body).context("unexpected /v1/status answer")
}

/// Submits self-transfers from the account of `key` at `rate` per second until `stop`; counts
/// the accepted ones.
async fn load(
    (api, key, rate): (SocketAddr, std::path::PathBuf, u32),
    status: api::Status,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    if rate == 0 {
        return Ok(());
    }
    let key = replica::identity::read_key_file(&key, "key file")
        .with_context(|| format!("the key {} (--key FILE: a funded account's secret key)", key.display()))?;
    let me = key.public_key().address();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let post = format!("POST {} HTTP/1.1\r\ncontent-type: application/octet-stream", routes::TRANSACTIONS);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let tx = Transaction {
            version: TX_VERSION,
            expiration_ms: engine::clock::now_ms().max(status.timestamp_ms) + status.max_ttl_ms.min(120_000),
            declarations: vec![],
            inputs: vec![Leg { address: me, currency: Currency::CAS, amount: 1 }],
            outputs: vec![Leg { address: me, currency: Currency::CAS, amount: 1 }],
            message: format!("bench stream {} {n}", engine::clock::now_ms()).into_bytes(),
            fee: Fee { payer: me, amount: status.min_fee },
        };
        let bytes = tx.sign(&status.chain_id, &[&key]).to_bytes();
        let (accepted, post) = (accepted.clone(), post.clone());
        tokio::spawn(async move {
            if let Ok((202, _)) = request(IpAddr::V4(Ipv4Addr::LOCALHOST), api, &post, &bytes).await {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}

/// The explorer over one window of `seconds`: CPU cores used, the highest resident memory
/// sampled each second, the last threads and streams seen; and the ledgers committed.
async fn window(api: SocketAddr, seconds: u64) -> anyhow::Result<Window> {
    let (start, at, height) = (process(api).await?, Instant::now(), status(api).await?.height);
    let mut rss = start.rss_bytes;
    let mut last = start;
    while at.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = process(api).await?;
        rss = rss.max(last.rss_bytes);
    }
    let cores = (last.cpu_seconds - start.cpu_seconds) / at.elapsed().as_secs_f64();
    Ok(Window { cores, rss, process: last, ledgers: status(api).await?.height - height })
}

/// The explorer over one window.
struct Window {
    cores: f64,
    rss: f64,
    process: Process,
    ledgers: u64,
}

/// The JSON report: the figures with subscribers, the bound without, and whether the targets
/// are met.
fn report(
    b: &StreamBench,
    bound: &Window,
    loaded: &Window,
    counts: &Counts,
    accepted: u64,
) -> serde_json::Value {
    let (cores, rss, with, ledgers) = (loaded.cores, loaded.rss, &loaded.process, loaded.ledgers);
    let (base_cores, base_rss, base, base_ledgers) = (bound.cores, bound.rss, &bound.process, bound.ledgers);
    let extra_rss = rss - base_rss;
    let extra_cores = cores - base_cores;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "bench": "stream",
        "subscribers": b.subscribers,
        "connected": c(&counts.connected),
        "streams_seen_by_explorer": with.streams,
        "seconds": b.seconds,
        "ledgers_per_s": ledgers as f64 / b.seconds as f64,
        "bound_ledgers_per_s": base_ledgers as f64 / b.seconds as f64,
        "tx_rate": b.rate,
        "txs_accepted": accepted,
        "events": c(&counts.events),
        "stream_bytes": c(&counts.bytes),
        "out_of_order_events": c(&counts.out_of_order),
        "resumed": c(&counts.resumed),
        "ended_by_server": c(&counts.ended),
        "failed_connections": c(&counts.failed),
        "explorer": {
            "extra_rss_bytes": extra_rss,
            "target_extra_rss_bytes": TARGET_EXTRA_RSS_BYTES,
            "rss_bytes": rss,
            "bound_rss_bytes": base_rss,
            "extra_cpu_cores": extra_cores,
            "target_extra_cpu_cores": TARGET_EXTRA_CPU_CORES,
            "cpu_cores": cores,
            "bound_cpu_cores": base_cores,
            "threads": with.threads,
            "bound_threads": base.threads,
        },
        "met": c(&counts.connected) == u64::from(b.subscribers)
            && c(&counts.out_of_order) == 0
            && c(&counts.resumed) >= u64::from(b.resumes.min(b.subscribers))
            && extra_rss <= TARGET_EXTRA_RSS_BYTES
            && extra_cores <= TARGET_EXTRA_CPU_CORES
            && with.threads <= base.threads + 2.0,
    })
}

pub(crate) fn run(b: &StreamBench) -> anyhow::Result<Output> {
    edge::raise_open_files_limit().context("raising the open-files limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let st = status(b.api).await.with_context(|| format!("GET {} on {}", routes::STATUS, b.api))?;
        let (stop_load, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let loader =
            tokio::spawn(load((b.api, b.key.clone(), b.rate), st, accepted.clone(), stop_load.clone()));
        // Settle, then the bound: the same load, no subscriber.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let bound = window(b.api, b.seconds).await?;

        let (counts, stop) = (Arc::new(Counts::default()), Arc::new(AtomicBool::new(false)));
        let from = status(b.api).await?.height + 1;
        let mut seed = engine::clock::now_ms() as u64 | 1;
        for i in 0..b.subscribers {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % u32::from(b.sources)) as u8));
            // xorshift: when each resuming subscriber drops its connection.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let drop_after =
                (i < b.resumes).then(|| Duration::from_millis(3_000 + seed % (b.seconds * 1_000)));
            tokio::spawn(subscriber((source, b.api), from, drop_after, counts.clone(), stop.clone()));
        }
        // Every subscriber connected (or given up on) before the window starts.
        let at = Instant::now();
        while counts.connected.load(Ordering::Relaxed) < u64::from(b.subscribers)
            && at.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let loaded = window(b.api, b.seconds).await?;
        // Let the resumed ones catch up, then stop and check every subscriber's last event.
        stop_load.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let _ = loader.await;
        let report = report(b, &bound, &loaded, &counts, accepted.load(Ordering::Relaxed));
        Output::json(&report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for split in 1..answer.len() {
            let mut c = Chunked::default();
            let mut out = c.feed(&answer[..split]).unwrap();
            out.extend(c.feed(&answer[split..]).unwrap());
            assert_eq!(out, b"hello world", "split at {split}");
        }
        assert!(Chunked::default().feed(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").is_err());
    }

    #[test]
    fn gaps_and_repeats_are_seen() {
        let ledger = |n: u64| format!("{{\"tx_count\":{n}}}");
        let (next, ok) = follow(Next::Any, "ledger", "5", &ledger(2));
        assert!(ok);
        let (next, ok) = follow(next, "transaction", "5:0", "");
        assert!(ok);
        // 5:1 missing.
        assert!(!follow(next, "ledger", "6", &ledger(0)).1);
        let (next, ok) = follow(next, "transaction", "5:1", "");
        assert!(ok);
        let (next, ok) = follow(next, "ledger", "6", &ledger(0));
        assert!(ok);
        assert_eq!(next, Next::Ledger(7));
        assert!(!follow(next, "ledger", "6", &ledger(0)).1, "a repeat");
    }
}
