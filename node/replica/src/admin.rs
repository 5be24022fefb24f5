//! The admin endpoint (loopback only): `GET /healthz`, `GET /metrics` (Prometheus text) and
//! `GET /committed?from=H` (the last committed ledgers' heights, commit times and transaction
//! ids, one line each: what `bench localnet` measures finality with).
//!
//! A deliberately tiny HTTP/1.1 responder — two fixed paths, one bounded request per
//! connection — until the explorer API (axum) lands; requests over 8 KiB, slower than 5 s or
//! not a GET are answered with 4xx and closed.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use net::frame::Channel;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Counters and gauges of one process, updated by the host loop and the network.
/// Renders more metrics (Prometheus text) after a process's own.
pub(crate) struct ExtraMetrics(pub(crate) Box<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) ledger_height: AtomicU64,
    pub(crate) certified_ledgers: AtomicU64,
    pub(crate) synced_ledgers: AtomicU64,
    pub(crate) refused_ledgers: AtomicU64,
    pub(crate) divergent_ledgers: AtomicU64,
    pub(crate) round: AtomicU64,
    pub(crate) rounds_started: AtomicU64,
    pub(crate) peers_connected: AtomicU64,
    pub(crate) pool_size: AtomicU64,
    pub(crate) intake_queued_txs: AtomicU64,
    pub(crate) committed_txs: AtomicU64,
    pub(crate) rejected_txs: AtomicU64,
    /// Committed ledgers the intake's post-state moved onto: in place, and again (rolled back
    /// and the pool applied again).
    pub(crate) intake_rebases: [AtomicU64; 2],
    pub(crate) fetched_txs: AtomicU64,
    pub(crate) fetched_known_txs: AtomicU64,
    pub(crate) busy_txs: AtomicU64,
    pub(crate) equivocations: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) dropped_events: AtomicU64,
    /// Frames not queued to a peer because its outbound channel was full, by channel number.
    pub(crate) dropped_sends: [AtomicU64; 4],
    pub(crate) refused_handshakes: AtomicU64,
    pub(crate) served_ledgers: AtomicU64,
    pub(crate) dropped_requests: AtomicU64,
    pub(crate) penalties: AtomicU64,
    pub(crate) ignored_messages: AtomicU64,
    pub(crate) refused_signatures: AtomicU64,
    pub(crate) wal_compactions: AtomicU64,
    pub(crate) unsolicited_bodies: AtomicU64,
    pub(crate) wal_bytes: AtomicU64,
    pub(crate) height_bytes: AtomicU64,
    pub(crate) signing_halted: AtomicU64,
    pub(crate) last_commit_unix_ms: AtomicU64,
    /// Live `/v1/stream` subscribers of this process's explorer.
    pub(crate) api_streams: AtomicU64,
    /// Streams the explorer ended: lagged, stopping ([`explorer::StreamEndReason`] order).
    pub(crate) api_stream_ends: [AtomicU64; 2],
    /// The public edge: what each listener counted (`caasiope-edge`).
    pub(crate) edge: Edge,
    /// More metrics text, rendered after these (the ClickHouse replicator's).
    pub(crate) extra: std::sync::OnceLock<ExtraMetrics>,
    /// The last committed ledgers: height, commit time, transaction ids (for `/committed`).
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, i64, Vec<engine::tx::TxId>)>>,
}

/// What each listener of the process counted, in [`Edge::LISTENERS`] order.
#[derive(Debug, Default)]
pub(crate) struct Edge {
    pub(crate) api: Arc<edge::Stats>,
    pub(crate) submit: Arc<edge::Stats>,
    pub(crate) admin: Arc<edge::Stats>,
    pub(crate) peers: Arc<edge::Stats>,
}

impl Edge {
    /// The `listener` label of each, in order.
    const LISTENERS: [&str; 4] = ["api", "submit", "admin", "peers"];

    fn all(&self) -> [&edge::Stats; 4] {
        [&self.api, &self.submit, &self.admin, &self.peers]
    }
}

/// The process as its explorer sees it: the metrics it serves.
pub(crate) struct ProcessView {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) role: &'static str,
    pub(crate) transport: &'static str,
}

impl explorer::Host for ProcessView {
    fn refused_busy(&self) {
        self.metrics.busy_txs.fetch_add(1, Ordering::Relaxed);
    }

    fn body_deadline_missed(&self) {
        self.metrics.edge.api.deadline_missed();
    }

    fn streams(&self, live: usize) {
        self.metrics.api_streams.store(live as u64, Ordering::Relaxed);
    }

    fn stream_ended(&self, reason: explorer::StreamEndReason) {
        let i = match reason {
            explorer::StreamEndReason::Lagged => 0,
            explorer::StreamEndReason::Stopping => 1,
        };
        self.metrics.api_stream_ends[i].fetch_add(1, Ordering::Relaxed);
    }

    fn metrics_text(&self) -> String {
        self.metrics.render(self.role, self.transport)
    }
}

impl Metrics {
    /// Records a committed ledger for `/committed`.
    pub(crate) fn record_commit(&self, height: u64, unix_ms: i64, ids: Vec<engine::tx::TxId>) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= limits::ADMIN_RECENT_LEDGERS_MAX {
                recent.pop_front();
            }
            recent.push_back((height, unix_ms, ids));
        }
    }

    /// One line per recent ledger at or above `from` (at most [`limits::COMMITTED_PAGE_LEDGERS_MAX`]):
    /// `height commit_unix_ms tx_count id…`.
    fn committed(&self, from: u64) -> String {
        let mut out = String::new();
        if let Ok(recent) = self.recent.lock() {
            for (h, ms, ids) in
                recent.iter().filter(|(h, _, _)| *h >= from).take(limits::COMMITTED_PAGE_LEDGERS_MAX)
            {
                // A page ends after the ledger that takes it past 4 MiB.
                if out.len() > limits::COMMITTED_PAGE_BYTES {
                    break;
                }
                let _ = write!(out, "{h} {ms} {}", ids.len());
                for id in ids {
                    let _ = write!(out, " {id}");
                }
                out.push('\n');
            }
        }
        out
    }

    /// The Prometheus text of these metrics (each family in [`FAMILIES`], in order), then the
    /// extra metrics if any.
    pub(crate) fn render(&self, role: &str, transport: &str) -> String {
        let mut out = String::new();
        for &(name, help, kind, sample) in FAMILIES {
            let _ = writeln!(out, "# HELP caasiope_{name} {help}\n# TYPE caasiope_{name} {kind}");
            match sample {
                Sample::Value(value) => {
                    let _ = writeln!(out, "caasiope_{name} {}", value(self).load(Ordering::Relaxed));
                }
                Sample::ByChannel => {
                    for channel in [Channel::Gossip, Channel::Consensus, Channel::Sync] {
                        let label = format!("{channel:?}").to_lowercase();
                        let n = self.dropped_sends[channel as usize].load(Ordering::Relaxed);
                        let _ = writeln!(out, "caasiope_{name}{{channel=\"{label}\"}} {n}");
                    }
                }
                Sample::Labelled(label, values, samples) => {
                    for (value, n) in values.iter().zip(samples(self)) {
                        let n = n.load(Ordering::Relaxed);
                        let _ = writeln!(out, "caasiope_{name}{{{label}=\"{value}\"}} {n}");
                    }
                }
                Sample::ByListener(value) => {
                    for (listener, stats) in Edge::LISTENERS.iter().zip(self.edge.all()) {
                        let n = value(stats).load(Ordering::Relaxed);
                        let _ = writeln!(out, "caasiope_{name}{{listener=\"{listener}\"}} {n}");
                    }
                }
                Sample::Refused => {
                    for (listener, stats) in Edge::LISTENERS.iter().zip(self.edge.all()) {
                        for (reason, n) in [("full", &stats.refused_full), ("source", &stats.refused_source)]
                        {
                            let n = n.load(Ordering::Relaxed);
                            let _ = writeln!(
                                out,
                                "caasiope_{name}{{listener=\"{listener}\",reason=\"{reason}\"}} {n}"
                            );
                        }
                    }
                }
                Sample::Info => {
                    let _ = writeln!(out, "caasiope_{name}{{role=\"{role}\",transport=\"{transport}\"}} 1");
                }
            }
        }
        crate::process_metrics::render(&mut out);
        if let Some(extra) = self.extra.get() {
            out.push_str(&(extra.0)());
        }
        out
    }
}

/// How a family's samples are read from [`Metrics`].
#[derive(Clone, Copy)]
enum Sample {
    /// One sample: this counter or gauge.
    Value(fn(&Metrics) -> &AtomicU64),
    /// One sample per value of a label, in order.
    Labelled(&'static str, &'static [&'static str], fn(&Metrics) -> &[AtomicU64]),
    /// One sample per channel a frame is sent on (`dropped_sends`).
    ByChannel,
    /// One sample per listener of the public edge: this count of its.
    ByListener(fn(&edge::Stats) -> &AtomicU64),
    /// One sample per listener and reason of refusal (`full`, `source`).
    Refused,
    /// The constant 1, labelled with the role and the transport.
    Info,
}

/// The metric families `/metrics` serves, in order: name (after `caasiope_`), help, type, and
/// where the samples come from. Each is declared here once.
#[rustfmt::skip]
const FAMILIES: &[(&str, &str, &str, Sample)] = &[
    ("ledger_height", "Height of the last committed ledger.", "gauge", Sample::Value(|m| &m.ledger_height)),
    ("certified_ledgers_total", "Ledgers this process decided in consensus.", "counter", Sample::Value(|m| &m.certified_ledgers)),
    ("synced_ledgers_total", "Ledgers taken from peers (sync).", "counter", Sample::Value(|m| &m.synced_ledgers)),
    ("refused_ledgers_total", "Ledgers from peers refused as their sender's fault (a certificate that does not verify, transactions altered).", "counter", Sample::Value(|m| &m.refused_ledgers)),
    ("divergent_ledgers_total", "Certified ledgers that do not re-execute to their header here (this node's state or the certifying quorum is wrong).", "counter", Sample::Value(|m| &m.divergent_ledgers)),
    ("consensus_round", "Round of the height being decided.", "gauge", Sample::Value(|m| &m.round)),
    ("consensus_rounds_started_total", "Rounds started, over all heights (more than the heights decided: rounds after the first).", "counter", Sample::Value(|m| &m.rounds_started)),
    ("peers_connected", "Peers with a live connection.", "gauge", Sample::Value(|m| &m.peers_connected)),
    ("pool_size", "Validated transactions waiting for a ledger.", "gauge", Sample::Value(|m| &m.pool_size)),
    ("intake_queued_txs", "Transactions received and not yet verified.", "gauge", Sample::Value(|m| &m.intake_queued_txs)),
    ("committed_txs_total", "Transactions in committed ledgers.", "counter", Sample::Value(|m| &m.committed_txs)),
    ("rejected_txs_total", "Transactions refused by the intake (signatures, stateless rules, post-state).", "counter", Sample::Value(|m| &m.rejected_txs)),
    ("intake_rebases_total", "Committed ledgers the admission post-state moved onto: in place (the ledger held the next admitted transactions), or again (rolled back, the pool applied again).", "counter", Sample::Labelled("way", &["in_place", "again"], |m| &m.intake_rebases)),
    ("fetched_txs_total", "Transaction bodies fetched from peers for proposals and verified.", "counter", Sample::Value(|m| &m.fetched_txs)),
    ("fetched_known_txs_total", "Fetched bodies the pool held by the time they were verified (verified twice).", "counter", Sample::Value(|m| &m.fetched_known_txs)),
    ("busy_txs_total", "Client submissions refused while the pool was full.", "counter", Sample::Value(|m| &m.busy_txs)),
    ("equivocations_total", "Equivocation proofs kept.", "counter", Sample::Value(|m| &m.equivocations)),
    ("bad_messages_total", "Peer messages dropped as malformed or forged.", "counter", Sample::Value(|m| &m.bad_messages)),
    ("dropped_events_total", "Inbound events dropped on a full queue.", "counter", Sample::Value(|m| &m.dropped_events)),
    ("dropped_sends_total", "Frames not sent to a peer because its outbound channel was full (a slow peer or a busy link).", "counter", Sample::ByChannel),
    ("refused_handshakes_total", "Peer connections closed unserved: their source, or the listener, had the most TLS handshakes in progress.", "counter", Sample::Value(|m| &m.refused_handshakes)),
    ("served_ledgers_total", "Ledgers sent to peers that asked for them.", "counter", Sample::Value(|m| &m.served_ledgers)),
    ("dropped_ledger_requests_total", "Ledger requests dropped: the peer had too many waiting (its serving budget).", "counter", Sample::Value(|m| &m.dropped_requests)),
    ("peer_penalties_total", "Peers disconnected and not heard for a while for what no honest peer sends (forged or altered messages, ledgers or bodies).", "counter", Sample::Value(|m| &m.penalties)),
    ("ignored_messages_total", "Consensus messages that changed nothing (duplicates, outside the kept rounds, over a per-round bound): not logged.", "counter", Sample::Value(|m| &m.ignored_messages)),
    ("refused_signatures_total", "Messages this validator signed but did not send: at or below its persisted signing state and not the message signed there.", "counter", Sample::Value(|m| &m.refused_signatures)),
    ("wal_compactions_total", "Compactions of the consensus write-ahead log.", "counter", Sample::Value(|m| &m.wal_compactions)),
    ("wal_bytes", "Size of the consensus write-ahead log.", "gauge", Sample::Value(|m| &m.wal_bytes)),
    ("height_bytes", "Bytes held for the height being decided beyond the committed state (executed values, checks waiting for bodies).", "gauge", Sample::Value(|m| &m.height_bytes)),
    ("unsolicited_bodies_total", "Transaction bodies a peer sent that no check was waiting for (dropped unverified).", "counter", Sample::Value(|m| &m.unsolicited_bodies)),
    ("signing_halted", "1 if this validator does not sign (its consensus log cannot be replayed; see the log), else 0.", "gauge", Sample::Value(|m| &m.signing_halted)),
    ("last_commit_unix_ms", "Wall-clock time of the last commit, unix ms.", "gauge", Sample::Value(|m| &m.last_commit_unix_ms)),
    ("edge_connections", "Connections a listener holds now (api: the explorer's HTTP API, submit: the submit port, admin: this port, peers: TLS handshakes in progress).", "gauge", Sample::ByListener(|e| &e.open)),
    ("edge_accepted_connections_total", "Connections a listener accepted within its bounds.", "counter", Sample::ByListener(|e| &e.accepted)),
    ("edge_refused_connections_total", "Connections a listener closed at once: it held its most (full) or their source (an IPv4 address or IPv6 /64) held its share (source).", "counter", Sample::Refused),
    ("edge_deadline_closed_connections_total", "Connections closed because a request header, a request body, an admin request or a submit frame did not arrive whole within its deadline, or a submit client did not take its answers within it (an API connection silent after an answer is not counted).", "counter", Sample::ByListener(|e| &e.deadline_closed)),
    ("api_streams", "Live /v1/stream subscribers of this process's explorer.", "gauge", Sample::Value(|m| &m.api_streams)),
    ("api_stream_ends_total", "Streams the explorer ended with a final event: the subscriber fell behind the kept ledgers (lagged), or the process was stopping.", "counter", Sample::Labelled("reason", &["lagged", "stopping"], |m| &m.api_stream_ends)),
    ("info", "Role and transport of this process.", "gauge", Sample::Info),
];

/// Serves the admin endpoint until the runtime stops: at most
/// [`limits::ADMIN_CONNECTIONS_MAX`] connections, [`limits::ADMIN_CONNECTIONS_PER_SOURCE`] from one
/// source (others closed at once), each request read and answered within
/// [`limits::ADMIN_REQUEST_DEADLINE`].
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    role: &'static str,
    transport: &'static str,
) {
    if let Err(e) = edge::widen_backlog(&listener, limits::LISTEN_BACKLOG) {
        eprintln!("caasiope: cannot widen the accept queue: {e}");
    }
    let slots = edge::Slots::new(
        limits::ADMIN_CONNECTIONS_MAX,
        limits::ADMIN_CONNECTIONS_PER_SOURCE,
        metrics.edge.admin.clone(),
    );
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tokio::time::sleep(edge::accept_backoff(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.admit(from.ip()) else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let answered = tokio::time::timeout(limits::ADMIN_REQUEST_DEADLINE, async {
                let response = match read_request(&mut stream).await {
                    Ok(path) if path == "/healthz" => ok("text/plain", "ok\n"),
                    Ok(path) if path.starts_with("/healthz?") => ok("text/plain", "ok\n"),
                    Ok(path) if path.starts_with("/committed") => {
                        let from =
                            path.split_once("?from=").and_then(|(_, h)| h.parse::<u64>().ok()).unwrap_or(0);
                        ok("text/plain", &metrics.committed(from))
                    }
                    Ok(path) if path == "/metrics" => {
                        ok("text/plain; version=0.0.4", &metrics.render(role, transport))
                    }
                    Ok(_) => status("404 Not Found", "no such path; try /healthz or /metrics\n"),
                    Err(why) => status(why, "bad request\n"),
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            if answered.is_err() {
                slot.stats().deadline_missed();
            }
        });
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Result<String, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.map_err(|_| "400 Bad Request")?;
        if n == 0 {
            return Err("400 Bad Request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > limits::ADMIN_REQUEST_BYTES_MAX {
            return Err("431 Request Header Fields Too Large");
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "400 Bad Request")?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Ok(path.to_owned()),
        (Some(_), Some(_)) => Err("405 Method Not Allowed"),
        _ => Err("400 Bad Request"),
    }
}

fn ok(content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn status(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `GET path` on `addr`, for tests and `localnet`: the body of a 200 answer.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.take(16 << 20).read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{}", head.lines().next().unwrap_or("no answer"));
    }
    Ok(body.to_owned())
}

/// The value of metric `name` (without labels) in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<u64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line of `/metrics` belongs to a family announced by `# HELP` and `# TYPE`
    /// lines before it, with a name, optional labels and an integer value (what Prometheus
    /// parses); a labelled family has one line per label value.
    #[test]
    fn metrics_text_is_well_formed_exposition() {
        let m = Metrics::default();
        m.dropped_sends[Channel::Gossip as usize].store(7, Ordering::Relaxed);
        m.edge.submit.refused_source.store(3, Ordering::Relaxed);
        m.edge.api.deadline_closed.store(2, Ordering::Relaxed);
        let text = m.render("validator", "epoll");
        let mut families: std::collections::HashMap<String, (bool, bool)> = Default::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty(), "{name} has no help");
                families.entry(name.to_owned()).or_default().0 = true;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                families.entry(name.to_owned()).or_default().1 = true;
            } else {
                let (series, value) = line.rsplit_once(' ').expect("name and value");
                assert!(value.parse::<u64>().is_ok(), "{line}");
                let name = series.split('{').next().unwrap_or(series);
                assert!(name.starts_with("caasiope_"), "{line}");
                assert!(
                    families.get(name) == Some(&(true, true)),
                    "{name} has samples before its HELP and TYPE"
                );
            }
        }
        for expected in [
            "caasiope_edge_refused_connections_total{listener=\"submit\",reason=\"source\"} 3",
            "caasiope_edge_refused_connections_total{listener=\"api\",reason=\"full\"} 0",
            "caasiope_edge_connections{listener=\"peers\"} 0",
            "caasiope_edge_deadline_closed_connections_total{listener=\"api\"} 2",
        ] {
            assert!(text.lines().any(|l| l == expected), "no `{expected}`");
        }
        for channel in ["gossip", "consensus", "sync"] {
            let value = if channel == "gossip" { 7 } else { 0 };
            let line = format!("caasiope_dropped_sends_total{{channel=\"{channel}\"}} {value}");
            assert!(text.lines().any(|l| l == line), "no `{line}`");
        }
    }

    /// A family is declared once: two entries of one name would be refused by Prometheus.
    #[test]
    fn metric_families_have_distinct_names() {
        let names: std::collections::HashSet<&str> = FAMILIES.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), FAMILIES.len());
    }
}
