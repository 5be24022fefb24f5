//! `caasiope bench edge --api URL --submit ADDR --key FILE --json`: one abusive source against
//! the public edge. From the attacker's source (by default 127.0.0.1) it holds `--connections`
//! connections to the explorer API, each sending a request header a byte a second, and
//! `--submit-connections` to a validator's submit port, each a frame a byte a second (a
//! connection the server closes is opened again after `--reopen-ms`). From another source (by default
//! 127.0.0.2) it times `GET /v1/status` — a fresh connection each — before the attack (the
//! bound, same run) and during it, and submits one transaction during it, waited for until
//! committed. Both sources must be addresses of this host that reach the API (loopback).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use api::{TxState, routes};
use engine::{
    Currency, Encode,
    tx::{Fee, Leg, TX_VERSION, Transaction},
};
use exit::Output;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::stats::percentile;

/// Parameters of the edge benchmark (`caasiope bench edge`).
#[derive(Debug, clap::Args)]
pub struct EdgeBench {
    /// The explorer API's address, e.g. 127.0.0.1:7404.
    #[arg(long, value_name = "ADDR")]
    api: SocketAddr,
    /// A validator's submit port, e.g. 127.0.0.1:7100.
    #[arg(long, value_name = "ADDR")]
    submit: SocketAddr,
    /// A funded account's secret key file (the transaction pays itself 1 unit and the fee).
    #[arg(long, value_name = "FILE", default_value = "data/localnet/faucet.key")]
    key: std::path::PathBuf,
    /// Trickling connections the attacker holds to the API.
    #[arg(long, default_value_t = 4_200, value_parser = clap::value_parser!(u16).range(0..=15_000))]
    connections: u16,
    /// Trickling connections the attacker holds to the submit port.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=1_000))]
    submit_connections: u16,
    /// `GET /v1/status` timed before and during the attack (each).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    requests: u32,
    /// The attacker's source address.
    #[arg(long, default_value = "127.0.0.1")]
    attacker: IpAddr,
    /// The other client's source address.
    #[arg(long, default_value = "127.0.0.2")]
    victim: IpAddr,
    /// Milliseconds after which the attacker opens again a connection the server closed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    reopen_ms: u64,
}

/// The p99 `GET /v1/status` the edge must keep for another source during the attack.
const TARGET_P99_MS: f64 = 50.0;

/// One HTTP/1.1 request from `source` on a fresh connection: the status and the body.
pub(crate) async fn request(
    source: IpAddr,
    to: SocketAddr,
    head: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut s = connect(source, to).await?;
        s.write_all(format!("{head}\r\nhost: {to}\r\nconnection: close\r\n").as_bytes()).await?;
        s.write_all(format!("content-length: {}\r\n\r\n", body.len()).as_bytes()).await?;
        s.write_all(body).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer =
        tokio::time::timeout(Duration::from_secs(10), exchange).await.context("no answer in 10 s")??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("not an HTTP answer")?;
    Ok((status, body.to_owned()))
}

pub(crate) async fn connect(source: IpAddr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("binding {source}"))?;
    Ok(socket.connect(to).await?)
}

/// `n` sequential `GET /v1/status` from `source`: each one's milliseconds, and the failures.
async fn time_status(source: IpAddr, api: SocketAddr, n: usize) -> (Vec<f64>, u64) {
    let (mut ms, mut failed) = (Vec::with_capacity(n), 0);
    for _ in 0..n {
        let at = Instant::now();
        match request(source, api, &format!("GET {} HTTP/1.1", routes::STATUS), b"").await {
            Ok((200, _)) => ms.push(at.elapsed().as_secs_f64() * 1e3),
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ms.sort_by(f64::total_cmp);
    (ms, failed)
}

/// What the attack's connections counted.
#[derive(Default)]
struct Attack {
    /// Connections opened (the first and every reopening).
    opened: AtomicU64,
    /// Connections the server closed.
    closed: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
}

/// One trickling connection from `source` to `to`, opened again whenever the server closes it,
/// until `stop`: `start`, then a byte a second.
async fn trickle(
    (source, to): (IpAddr, SocketAddr),
    start: Vec<u8>,
    reopen: Duration,
    attack: Arc<Attack>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect(source, to).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        attack.opened.fetch_add(1, Ordering::Relaxed);
        attack.open.fetch_add(1, Ordering::Relaxed);
        let mut ok = s.write_all(&start).await.is_ok();
        let mut buf = [0u8; 256];
        while ok && !stop.load(Ordering::Relaxed) {
            // A byte a second; anything the server sends back (a refusal) or its close ends it.
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                Ok(_) => ok = false,
                Err(_) => ok = s.write_all(b"a").await.is_ok(),
            }
        }
        attack.open.fetch_sub(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            attack.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(reopen).await;
        }
    }
}

/// A transfer of 1 unit from the key's account to itself, submitted from `source`; the
/// milliseconds until the API reports it committed (polled from `source`), or why not.
async fn commit_one(b: &EdgeBench, status: &api::Status) -> anyhow::Result<f64> {
    let key = replica::identity::read_key_file(&b.key, "key file").with_context(|| {
        format!("the key {} (--key FILE: a funded account's secret key)", b.key.display())
    })?;
    let me = key.public_key().address();
    let tx = Transaction {
        version: TX_VERSION,
        expiration_ms: engine::clock::now_ms().max(status.timestamp_ms) + status.max_ttl_ms.min(120_000),
        declarations: vec![],
        inputs: vec![Leg { address: me, currency: Currency::CAS, amount: 1 }],
        outputs: vec![Leg { address: me, currency: Currency::CAS, amount: 1 }],
        message: format!("bench edge {}", engine::clock::now_ms()).into_bytes(),
        fee: Fee { payer: me, amount: status.min_fee },
    };
    let id = tx.id(&status.chain_id);
    let bytes = tx.sign(&status.chain_id, &[&key]).to_bytes();
    let at = Instant::now();
    let post = format!("POST {} HTTP/1.1\r\ncontent-type: application/octet-stream", routes::TRANSACTIONS);
    let (code, body) = request(b.victim, b.api, &post, &bytes).await?;
    if code != 202 {
        bail!("the transaction was answered {code}: {body}");
    }
    let path = routes::TRANSACTION.replace("{id}", &id.to_string());
    while at.elapsed() < Duration::from_secs(60) {
        if let Ok((200, body)) = request(b.victim, b.api, &format!("GET {path} HTTP/1.1"), b"").await
            && serde_json::from_str::<api::TxStatus>(&body).is_ok_and(|s| s.status == TxState::Committed)
        {
            return Ok(at.elapsed().as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("not committed within 60 s")
}

/// The value of the sample `series` (name and labels, exactly) in Prometheus text.
pub(crate) fn sample<T: std::str::FromStr>(metrics: &str, series: &str) -> Option<T> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

pub(crate) fn run(b: &EdgeBench) -> anyhow::Result<Output> {
    edge::raise_open_files_limit().context("raising the open-files limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let (code, body) = request(b.victim, b.api, &format!("GET {} HTTP/1.1", routes::STATUS), b"")
            .await
            .with_context(|| format!("GET {} from {}", routes::STATUS, b.victim))?;
        if code != 200 {
            bail!("{} answered {code}: {body}", routes::STATUS);
        }
        let status: api::Status = serde_json::from_str(&body).context("unexpected /v1/status answer")?;
        let (quiet, quiet_failed) = time_status(b.victim, b.api, b.requests as usize).await;
        let (attack, stop) = (Arc::new(Attack::default()), Arc::new(AtomicBool::new(false)));
        let reopen = Duration::from_millis(b.reopen_ms);
        let (submit_attack, header) = (Arc::new(Attack::default()), b"GET /v1/status HTTP/1.1\r\nx-slow: ".to_vec());
        for _ in 0..b.connections {
            tokio::spawn(trickle((b.attacker, b.api), header.clone(), reopen, attack.clone(), stop.clone()));
        }
        for _ in 0..b.submit_connections {
            let frame_start = 1_000u32.to_be_bytes().to_vec();
            tokio::spawn(trickle((b.attacker, b.submit), frame_start, reopen, submit_attack.clone(), stop.clone()));
        }
        // Every connection opened and its first bytes sent.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let held = attack.open.load(Ordering::Relaxed);
        let (loaded, loaded_failed) = time_status(b.victim, b.api, b.requests as usize).await;
        let committed = commit_one(b, &status).await;
        let held_after = attack.open.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let metrics = request(b.victim, b.api, "GET /metrics HTTP/1.1", b"").await.map(|(_, m)| m).unwrap_or_default();
        let p = |v: &[f64], q: f64| if v.is_empty() { f64::NAN } else { percentile(v, q) };
        let report = json!({
            "bench": "edge",
            "status_p50_ms": p(&loaded, 0.50),
            "status_p99_ms": p(&loaded, 0.99),
            "status_failed": loaded_failed,
            "target_p99_ms": TARGET_P99_MS,
            "bound_status_p50_ms": p(&quiet, 0.50),
            "bound_status_p99_ms": p(&quiet, 0.99),
            "bound_status_failed": quiet_failed,
            "requests": b.requests,
            "transaction_committed": committed.is_ok(),
            "transaction_commit_ms": committed.as_ref().ok(),
            "transaction_error": committed.as_ref().err().map(ToString::to_string),
            "attack": {
                "source": b.attacker.to_string(),
                "reopen_ms": b.reopen_ms,
                "api_connections": b.connections,
                "api_open_after_3s": held,
                "api_open_at_end": held_after,
                "api_opened": attack.opened.load(Ordering::Relaxed),
                "api_closed_by_server": attack.closed.load(Ordering::Relaxed),
                "submit_connections": b.submit_connections,
                "submit_opened": submit_attack.opened.load(Ordering::Relaxed),
                "submit_closed_by_server": submit_attack.closed.load(Ordering::Relaxed),
            },
            "explorer_refused_source": sample::<u64>(&metrics, "caasiope_edge_refused_connections_total{listener=\"api\",reason=\"source\"}"),
            "explorer_deadline_closed": sample::<u64>(&metrics, "caasiope_edge_deadline_closed_connections_total{listener=\"api\"}"),
            "met": committed.is_ok() && loaded_failed == 0 && p(&loaded, 0.99) <= TARGET_P99_MS,
        });
        Output::json(&report)
    })
}
