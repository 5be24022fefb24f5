//! The process's metrics (Prometheus text): counters and gauges updated by the host loop, the
//! network and the public edge, histograms of what takes time, the process's own (`process_*`),
//! and what the explorer and the ClickHouse replicator add. Served on the admin port's
//! `/metrics` and the explorer API's.

use std::{
    fmt::Write as _,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use exposition::{Fast, Histogram, Render, Slow};

mod clocks;
mod peers;
mod requests;

pub(crate) use self::clocks::{Clocks, timed};
use net::frame::Channel;

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
    /// Replay-window ids held in memory (those of ledgers not in the store's table yet).
    pub(crate) replay_ids_in_memory: AtomicU64,
    /// Bytes of the filter in front of the store's replay table.
    pub(crate) replay_filter_bytes: AtomicU64,
    /// The lowest height above 0 whose ledger the store keeps (1: nothing pruned).
    pub(crate) first_kept_height: AtomicU64,
    pub(crate) certified_ledgers: AtomicU64,
    pub(crate) synced_ledgers: AtomicU64,
    pub(crate) refused_ledgers: AtomicU64,
    pub(crate) divergent_ledgers: AtomicU64,
    pub(crate) round: AtomicU64,
    pub(crate) rounds_started: AtomicU64,
    pub(crate) peers_connected: AtomicU64,
    pub(crate) pool_size: AtomicU64,
    pub(crate) pool_admit_txs: AtomicU64,
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
    /// Peer connections closed before they served, by reason ([`HANDSHAKE_REFUSALS`]).
    pub(crate) refused_handshakes: [AtomicU64; HANDSHAKE_REFUSALS.len()],
    /// Client submissions that did not decode, by listener (`api`, `submit`).
    pub(crate) undecodable_submissions: [AtomicU64; 2],
    /// From a client's transaction admitted here to its ledger committed here.
    pub(crate) submit_to_commit: Histogram<Slow>,
    /// Between consecutive commits here.
    pub(crate) height_duration: Histogram<Slow>,
    /// A consensus round here, to the next round or the end of its height.
    pub(crate) round_duration: Histogram<Slow>,
    /// Storing one committed ledger.
    pub(crate) store_commit: Histogram<Fast>,
    /// Explorer API requests answered, by route and status.
    pub(crate) api_requests: requests::ApiRequests,
    /// The intake's own counters (its verification batches).
    pub(crate) intake: OnceLock<Arc<pipeline::Metrics>>,
    /// The listed peers, by index.
    pub(crate) peers: OnceLock<Vec<peers::PeerLink>>,
    /// Faulty validators the set tolerates (`(n - 1) / 3`): how many peers' heights the best
    /// known height does not trust.
    pub(crate) tolerated_faults: AtomicU64,
    pub(crate) served_ledgers: AtomicU64,
    pub(crate) not_kept_answers: AtomicU64,
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
    /// The process's store, for the space it takes (read when rendered).
    pub(crate) store: std::sync::OnceLock<storage::StoreReader>,
    /// The last committed ledgers: height, commit time, transaction ids (for `/committed`).
    recent: std::sync::Mutex<Recent>,
}

/// The last committed ledgers' heights, commit times and transaction ids, within
/// [`limits::ADMIN_RECENT_LEDGERS_MAX`] ledgers and [`limits::ADMIN_RECENT_IDS_BYTES_MAX`] of
/// ids (the latest ledger is kept whatever its size).
#[derive(Debug, Default)]
struct Recent {
    ledgers: std::collections::VecDeque<(u64, i64, Vec<engine::tx::TxId>)>,
    /// Bytes of the ids held.
    bytes: usize,
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

    fn undecodable(&self) {
        self.metrics.undecodable_submissions[0].fetch_add(1, Ordering::Relaxed);
    }

    fn api_request(&self, route: Option<usize>, status: u16, elapsed: Duration) {
        self.metrics.api_requests.observe(route, status, elapsed);
    }

    fn metrics_text(&self) -> String {
        self.metrics.render(self.role, self.transport)
    }
}

/// Why a peer connection was closed before it served (`refused_handshakes_total{reason}`):
/// the listener or the source held its most handshakes in progress (`busy`), the TLS handshake
/// did not finish in time (`timeout`) or failed (`tls`), the identity is not a listed peer's
/// (`unknown_identity`), or the peer is penalized (`banned`).
pub(crate) const HANDSHAKE_REFUSALS: [&str; 5] = ["busy", "timeout", "tls", "unknown_identity", "banned"];

/// The index of a refusal reason in [`HANDSHAKE_REFUSALS`].
pub(crate) fn handshake_refusal(reason: &str) -> usize {
    HANDSHAKE_REFUSALS.iter().position(|r| *r == reason).unwrap_or(0)
}

impl Metrics {
    /// Records a committed ledger for `/committed`.
    pub(crate) fn record_commit(&self, height: u64, unix_ms: i64, mut ids: Vec<engine::tx::TxId>) {
        ids.shrink_to_fit();
        if let Ok(mut recent) = self.recent.lock() {
            recent.bytes += ids.len() * size_of::<engine::tx::TxId>();
            recent.ledgers.push_back((height, unix_ms, ids));
            while recent.ledgers.len() > limits::ADMIN_RECENT_LEDGERS_MAX
                || (recent.bytes > limits::ADMIN_RECENT_IDS_BYTES_MAX && recent.ledgers.len() > 1)
            {
                let Some((_, _, old)) = recent.ledgers.pop_front() else { break };
                recent.bytes -= old.len() * size_of::<engine::tx::TxId>();
            }
        }
    }

    /// One line per recent ledger at or above `from` (at most [`limits::COMMITTED_PAGE_LEDGERS_MAX`]):
    /// `height commit_unix_ms tx_count id…`.
    pub(crate) fn committed(&self, from: u64) -> String {
        let mut out = String::new();
        if let Ok(recent) = self.recent.lock() {
            for (h, ms, ids) in
                recent.ledgers.iter().filter(|(h, _, _)| *h >= from).take(limits::COMMITTED_PAGE_LEDGERS_MAX)
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
            self.render_samples(&mut out, name, sample, (role, transport));
        }
        self.render_peers(&mut out);
        self.render_store(&mut out);
        exposition::process::render(&mut out);
        if let Some(extra) = self.extra.get() {
            out.push_str(&(extra.0)());
        }
        out
    }

    /// The store's file size and the bytes of it in use (absent if it cannot be read).
    fn render_store(&self, out: &mut String) {
        let Some(space) = self.store.get().and_then(|r| r.space().ok()) else { return };
        for (name, help, value) in [
            ("store_file_bytes", "Size of the store's data file.", space.file_bytes),
            (
                "store_used_bytes",
                "Bytes of the store's data file in use (pages allocated, less those free for reuse).",
                space.used_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP caasiope_{name} {help}\n# TYPE caasiope_{name} gauge\ncaasiope_{name} {value}"
            );
        }
    }

    /// The samples of family `name`.
    fn render_samples(&self, out: &mut String, name: &str, sample: Sample, (role, transport): (&str, &str)) {
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
                    for (reason, n) in [("full", &stats.refused_full), ("source", &stats.refused_source)] {
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
            Sample::Build => {
                let (version, commit) = (env!("CARGO_PKG_VERSION"), env!("CAASIOPE_COMMIT"));
                let _ = writeln!(out, "caasiope_{name}{{version=\"{version}\",commit=\"{commit}\"}} 1");
            }
            Sample::Timestamp(ms) => {
                let _ = writeln!(out, "caasiope_{name} {}", ms(self).load(Ordering::Relaxed) as f64 / 1e3);
            }
            Sample::Histogram(h) => h(self).render(out, &format!("caasiope_{name}"), ""),
            Sample::VerifyBatches => match self.intake.get() {
                Some(intake) => intake.verify_batches().render(out, &format!("caasiope_{name}"), ""),
                None => Histogram::<Fast>::default().render(out, &format!("caasiope_{name}"), ""),
            },
            Sample::ApiRequests => self.api_requests.render(out, &format!("caasiope_{name}")),
        }
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
    /// The constant 1, labelled with the version and the commit built.
    Build,
    /// A unix time kept in milliseconds, served in seconds.
    Timestamp(fn(&Metrics) -> &AtomicU64),
    /// A histogram.
    Histogram(fn(&Metrics) -> &dyn Render),
    /// The intake's histogram of verification batches.
    VerifyBatches,
    /// One histogram per API route and status.
    ApiRequests,
}

/// The metric families `/metrics` serves, in order: name (after `caasiope_`), help, type, and
/// where the samples come from. Each is declared here once.
#[rustfmt::skip]
const FAMILIES: &[(&str, &str, &str, Sample)] = &[
    ("ledger_height", "Height of the last committed ledger.", "gauge", Sample::Value(|m| &m.ledger_height)),
    ("replay_ids_in_memory", "Replay-window ids held in memory: those of ledgers the store's replay table does not hold yet (the rest are behind the filter).", "gauge", Sample::Value(|m| &m.replay_ids_in_memory)),
    ("replay_filter_bytes", "Bytes of the filter in front of the store's replay table (fixed at start).", "gauge", Sample::Value(|m| &m.replay_filter_bytes)),
    ("first_kept_height", "The lowest height above 0 whose ledger the store keeps (1: nothing pruned; a validator or node keeps keep_ledgers).", "gauge", Sample::Value(|m| &m.first_kept_height)),
    ("certified_ledgers_total", "Ledgers this process decided in consensus.", "counter", Sample::Value(|m| &m.certified_ledgers)),
    ("synced_ledgers_total", "Ledgers taken from peers (sync).", "counter", Sample::Value(|m| &m.synced_ledgers)),
    ("refused_ledgers_total", "Ledgers from peers refused as their sender's fault (a certificate that does not verify, transactions altered).", "counter", Sample::Value(|m| &m.refused_ledgers)),
    ("divergent_ledgers_total", "Certified ledgers that do not re-execute to their header here (this node's state or the certifying quorum is wrong).", "counter", Sample::Value(|m| &m.divergent_ledgers)),
    ("consensus_round", "Round of the height being decided.", "gauge", Sample::Value(|m| &m.round)),
    ("consensus_rounds_started_total", "Rounds started, over all heights (more than the heights decided: rounds after the first).", "counter", Sample::Value(|m| &m.rounds_started)),
    ("peers_connected", "Peers with a live connection.", "gauge", Sample::Value(|m| &m.peers_connected)),
    ("pool_size", "Validated transactions waiting for a ledger.", "gauge", Sample::Value(|m| &m.pool_size)),
    ("pool_admit_txs", "Transactions waiting (pooled and not yet verified) at which client submissions are refused as busy: one and a half times the larger of the last ledger's count and what commits in a block interval at the recent rate, within its floor and cap.", "gauge", Sample::Value(|m| &m.pool_admit_txs)),
    ("intake_queued_txs", "Transactions received and not yet verified.", "gauge", Sample::Value(|m| &m.intake_queued_txs)),
    ("committed_txs_total", "Transactions in committed ledgers.", "counter", Sample::Value(|m| &m.committed_txs)),
    ("rejected_txs_total", "Transactions refused by the intake (signatures, stateless rules, post-state).", "counter", Sample::Value(|m| &m.rejected_txs)),
    ("intake_rebases_total", "Committed ledgers the admission post-state moved onto: in place (the ledger held the next admitted transactions), or again (rolled back, the pool applied again).", "counter", Sample::Labelled("way", &["in_place", "again"], |m| &m.intake_rebases)),
    ("fetched_txs_total", "Transaction bodies fetched from peers for proposals and verified.", "counter", Sample::Value(|m| &m.fetched_txs)),
    ("fetched_known_txs_total", "Fetched bodies the pool held by the time they were verified (verified twice).", "counter", Sample::Value(|m| &m.fetched_known_txs)),
    ("busy_txs_total", "Client submissions refused as busy: more transactions waiting than commit in about one and a half block intervals, or verification behind.", "counter", Sample::Value(|m| &m.busy_txs)),
    ("equivocations_total", "Equivocation proofs kept.", "counter", Sample::Value(|m| &m.equivocations)),
    ("bad_messages_total", "Peer messages dropped as malformed or forged.", "counter", Sample::Value(|m| &m.bad_messages)),
    ("dropped_events_total", "Inbound events dropped on a full queue.", "counter", Sample::Value(|m| &m.dropped_events)),
    ("dropped_sends_total", "Frames not sent to a peer because its outbound channel was full (a slow peer or a busy link).", "counter", Sample::ByChannel),
    ("refused_handshakes_total", "Peer connections closed before they served: the listener or the source held its most handshakes in progress (busy), the TLS handshake timed out (timeout) or failed (tls), the identity is no listed peer's (unknown_identity), the peer is penalized (banned).", "counter", Sample::Labelled("reason", &HANDSHAKE_REFUSALS, |m| &m.refused_handshakes)),
    ("undecodable_submissions_total", "Client submissions that are not a transaction's canonical bytes, by listener.", "counter", Sample::Labelled("listener", &["api", "submit"], |m| &m.undecodable_submissions)),
    ("served_ledgers_total", "Ledgers sent to peers that asked for them.", "counter", Sample::Value(|m| &m.served_ledgers)),
    ("not_kept_ledgers_total", "Ledger requests a peer answered it no longer keeps that ledger (it prunes: docs/PROTOCOL.md); another peer is asked at the next retry.", "counter", Sample::Value(|m| &m.not_kept_answers)),
    ("dropped_ledger_requests_total", "Ledger requests dropped: the peer had too many waiting (its serving budget).", "counter", Sample::Value(|m| &m.dropped_requests)),
    ("peer_penalties_total", "Peers disconnected and not heard for a while for what no honest peer sends (forged or altered messages, ledgers or bodies).", "counter", Sample::Value(|m| &m.penalties)),
    ("ignored_messages_total", "Consensus messages that changed nothing (duplicates, outside the kept rounds, over a per-round bound): not logged.", "counter", Sample::Value(|m| &m.ignored_messages)),
    ("refused_signatures_total", "Messages this validator signed but did not send: at or below its persisted signing state and not the message signed there.", "counter", Sample::Value(|m| &m.refused_signatures)),
    ("wal_compactions_total", "Compactions of the consensus write-ahead log.", "counter", Sample::Value(|m| &m.wal_compactions)),
    ("wal_bytes", "Size of the consensus write-ahead log.", "gauge", Sample::Value(|m| &m.wal_bytes)),
    ("height_bytes", "Bytes held for the height being decided beyond the committed state (executed values, checks waiting for bodies).", "gauge", Sample::Value(|m| &m.height_bytes)),
    ("unsolicited_bodies_total", "Transaction bodies a peer sent that no check was waiting for (dropped unverified).", "counter", Sample::Value(|m| &m.unsolicited_bodies)),
    ("signing_halted", "1 if this validator does not sign (its consensus log cannot be replayed; see the log), else 0.", "gauge", Sample::Value(|m| &m.signing_halted)),
    ("last_commit_timestamp_seconds", "Wall-clock time of the last commit here, unix seconds.", "gauge", Sample::Timestamp(|m| &m.last_commit_unix_ms)),
    ("submit_to_commit_seconds", "Time from a client's transaction admitted here (submit port or API) to its ledger committed here.", "histogram", Sample::Histogram(|m| &m.submit_to_commit)),
    ("height_duration_seconds", "Time between consecutive commits here (a height decided, or a ledger synced).", "histogram", Sample::Histogram(|m| &m.height_duration)),
    ("round_duration_seconds", "Time a consensus round lasted here, to the next round or the end of its height.", "histogram", Sample::Histogram(|m| &m.round_duration)),
    ("verify_batch_seconds", "Time the intake took to verify one batch (decode, hash, stateless checks, signatures).", "histogram", Sample::VerifyBatches),
    ("store_commit_seconds", "Time to store one committed ledger (block, index, state; synced to disk on a validator).", "histogram", Sample::Histogram(|m| &m.store_commit)),
    ("api_request_duration_seconds", "Time the explorer API took to answer a request, by route (the router's pattern, or unmatched) and status; a stream counts to its first byte.", "histogram", Sample::ApiRequests),
    ("edge_connections", "Connections a listener holds now (api: the explorer's HTTP API, submit: the submit port, admin: this port, peers: TLS handshakes in progress).", "gauge", Sample::ByListener(|e| &e.open)),
    ("edge_accepted_connections_total", "Connections a listener accepted within its bounds.", "counter", Sample::ByListener(|e| &e.accepted)),
    ("edge_refused_connections_total", "Connections a listener closed at once: it held its most (full) or their source (an IPv4 address or IPv6 /64) held its share (source).", "counter", Sample::Refused),
    ("edge_deadline_closed_connections_total", "Connections closed because a request header, a request body, an admin request or a submit frame did not arrive whole within its deadline, or a submit client did not take its answers within it (an API connection silent after an answer is not counted).", "counter", Sample::ByListener(|e| &e.deadline_closed)),
    ("api_streams", "Live /v1/stream subscribers of this process's explorer.", "gauge", Sample::Value(|m| &m.api_streams)),
    ("api_stream_ends_total", "Streams the explorer ended with a final event: the subscriber fell behind the kept ledgers (lagged), or the process was stopping.", "counter", Sample::Labelled("reason", &["lagged", "stopping"], |m| &m.api_stream_ends)),
    ("info", "Role and transport of this process.", "gauge", Sample::Info),
    ("build_info", "Version and commit this binary was built from.", "gauge", Sample::Build),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line of `/metrics` belongs to a family announced by `# HELP` and `# TYPE`
    /// lines before it, with a name, optional labels and a number (what Prometheus parses);
    /// counters end in `_total`, a histogram's samples are its `_bucket`s (up to `+Inf`, as many
    /// as its `_count`), `_sum` and `_count`; a labelled family has one line per label value.
    /// (CI runs `promtool check metrics` on live processes too: scripts/promtool-check.)
    #[test]
    fn metrics_text_is_well_formed_exposition() {
        let m = Metrics::default();
        m.dropped_sends[Channel::Gossip as usize].store(7, Ordering::Relaxed);
        m.edge.submit.refused_source.store(3, Ordering::Relaxed);
        m.edge.api.deadline_closed.store(2, Ordering::Relaxed);
        m.submit_to_commit.observe(Duration::from_millis(700));
        m.api_requests.observe(api::routes::route_index("/v1/status"), 200, Duration::from_millis(1));
        let text = m.render("validator", "epoll");
        let mut families: std::collections::HashMap<String, (bool, Option<String>)> = Default::default();
        let mut infinity_buckets: std::collections::HashMap<String, f64> = Default::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty(), "{name} has no help");
                families.entry(name.to_owned()).or_default().0 = true;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                families.entry(name.to_owned()).or_default().1 = Some(kind.to_owned());
            } else {
                let (series, value) = line.rsplit_once(' ').expect("name and value");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
                let name = series.split('{').next().unwrap_or(series);
                assert!(name.starts_with("caasiope_") || name.starts_with("process_"), "{line}");
                let histogram = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|f| families.get(*f).is_some_and(|f| f.1.as_deref() == Some("histogram")));
                let family = histogram.unwrap_or(name);
                assert!(
                    families.get(family).is_some_and(|f| f.0 && f.1.is_some()),
                    "{name} has samples before its HELP and TYPE"
                );
                if name.ends_with("_bucket") && series.contains("le=\"+Inf\"") {
                    infinity_buckets
                        .insert(series.replace(",le=\"+Inf\"", "").replace("{le=\"+Inf\"}", ""), value);
                }
                if let Some(family) = histogram.filter(|_| name.ends_with("_count")) {
                    let key = series.replacen("_count", "_bucket", 1);
                    assert_eq!(infinity_buckets.get(&key), Some(&value), "{family}: +Inf bucket and count");
                }
            }
        }
        for expected in [
            "caasiope_edge_refused_connections_total{listener=\"submit\",reason=\"source\"} 3",
            "caasiope_edge_refused_connections_total{listener=\"api\",reason=\"full\"} 0",
            "caasiope_edge_connections{listener=\"peers\"} 0",
            "caasiope_edge_deadline_closed_connections_total{listener=\"api\"} 2",
            "caasiope_submit_to_commit_seconds_bucket{le=\"1\"} 1",
            "caasiope_submit_to_commit_seconds_count 1",
            "caasiope_api_request_duration_seconds_count{route=\"/v1/status\",status=\"200\"} 1",
            "caasiope_verify_batch_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "no `{expected}`");
        }
        for channel in ["gossip", "consensus", "sync"] {
            let value = if channel == "gossip" { 7 } else { 0 };
            let line = format!("caasiope_dropped_sends_total{{channel=\"{channel}\"}} {value}");
            assert!(text.lines().any(|l| l == line), "no `{line}`");
        }
    }

    /// docs/METRICS.md lists every family a process serves, with its type.
    #[test]
    fn every_family_is_documented() {
        let doc = include_str!("../../../../docs/METRICS.md");
        let m = Metrics::default();
        m.name_peers(["p".to_owned()]);
        let dir = tempfile::tempdir().unwrap();
        let genesis = storage::test_utils::TestChain::new(1, 1).genesis_toml;
        let (store, _) = storage::Store::create(dir.path(), &genesis).unwrap();
        let _ = m.store.set(store.reader());
        let text = m.render("validator", "epoll");
        for name in ["caasiope_store_file_bytes", "caasiope_store_used_bytes"] {
            let value = text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap();
            assert!(value.parse::<u64>().unwrap() > 0, "{name} {value}");
        }
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            let row = format!("| `{name}` | {kind} |");
            assert!(doc.contains(&row), "docs/METRICS.md has no row `{row}`");
        }
    }

    /// Every metric the Grafana dashboard queries is one a process serves (a histogram's
    /// through its `_bucket`, `_sum` or `_count`).
    #[test]
    fn the_dashboard_queries_only_served_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../../deploy/grafana/caasiope.json")).unwrap();
        let m = Metrics::default();
        m.name_peers(["p".to_owned()]);
        let text = m.render("validator", "epoll");
        let families: std::collections::HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let mut exprs = Vec::new();
        fn collect<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(o) => {
                    for (k, v) in o {
                        match (k.as_str(), v.as_str()) {
                            ("expr" | "query", Some(e)) => out.push(e),
                            _ => collect(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        collect(&dashboard, &mut exprs);
        assert!(exprs.len() > 30, "{} queries", exprs.len());
        let mut queried = 0;
        for expr in exprs {
            let bytes = expr.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let rest = &expr[i..];
                let starts = (rest.starts_with("caasiope_") || rest.starts_with("process_"))
                    && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
                if !starts {
                    i += 1;
                    continue;
                }
                let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let name = &rest[..len];
                let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
                let served = families.contains_key(name)
                    || histogram.is_some_and(|f| families.get(f) == Some(&"histogram"));
                assert!(served, "the dashboard queries {name}, which no process serves ({expr})");
                queried += 1;
                i += len;
            }
        }
        assert!(queried > 40);
    }

    /// A family is declared once: two entries of one name would be refused by Prometheus.
    #[test]
    fn metric_families_have_distinct_names() {
        let names: std::collections::HashSet<&str> = FAMILIES.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), FAMILIES.len());
    }

    /// `/committed` keeps the latest ledgers within their bytes of ids (and the latest one
    /// whatever its size), and answers from what it keeps.
    #[test]
    fn recent_ledgers_stay_within_their_bytes() {
        let m = Metrics::default();
        let per_ledger = 10_000;
        let ledgers = 3 * limits::ADMIN_RECENT_IDS_BYTES_MAX / (per_ledger * 32);
        for h in 1..=ledgers as u64 {
            let ids = (0..per_ledger as u64)
                .map(|i| {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&h.to_le_bytes());
                    id[8..16].copy_from_slice(&i.to_le_bytes());
                    engine::hash::Hash(id)
                })
                .collect();
            m.record_commit(h, h as i64, ids);
            let recent = m.recent.lock().unwrap();
            assert!(recent.bytes <= limits::ADMIN_RECENT_IDS_BYTES_MAX, "{}", recent.bytes);
            assert_eq!(recent.bytes, recent.ledgers.iter().map(|(_, _, ids)| ids.len() * 32).sum::<usize>());
            assert_eq!(recent.ledgers.back().map(|l| l.0), Some(h));
        }
        let kept = limits::ADMIN_RECENT_IDS_BYTES_MAX / (per_ledger * 32);
        let first = ledgers as u64 - kept as u64 + 1;
        assert_eq!(m.recent.lock().unwrap().ledgers.front().map(|l| l.0), Some(first));
        let page = m.committed(0);
        assert!(page.starts_with(&format!("{first} {first} {per_ledger} ")), "{}", &page[..40]);
        // One ledger larger than the bound is kept alone.
        m.record_commit(
            ledgers as u64 + 1,
            0,
            vec![engine::hash::Hash([7; 32]); limits::ADMIN_RECENT_IDS_BYTES_MAX / 32 + 1],
        );
        assert_eq!(m.recent.lock().unwrap().ledgers.len(), 1);
    }
}
