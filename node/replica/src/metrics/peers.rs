//! Each listed peer's link as the metrics see it: whether it is up, the bytes it carried, its
//! last ping round trip, the height it says it is at; and from those heights the best height
//! known and this process's lag behind it — which no f lying peers can raise.

use std::{
    fmt::Write as _,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use net::conn::LinkStats;

use super::Metrics;

/// One listed peer (or the room for one added later: unnamed until then).
#[derive(Debug, Default)]
pub(crate) struct PeerLink {
    /// Its name in the configuration (the `peer` label).
    pub(crate) name: OnceLock<String>,
    /// What its connections carried (the dialed and the accepted alike).
    pub(crate) stats: Arc<LinkStats>,
    /// Its connections up now.
    pub(crate) connections: AtomicU64,
    /// The latest height it said it is at (the height of a consensus message or ledger it sent,
    /// or below one it asked for), 0 for none yet.
    pub(crate) height: AtomicU64,
}

/// A per-peer family's value of one peer (`None`: no sample for it).
type PeerSample = dyn Fn(&PeerLink) -> Option<String>;

impl Metrics {
    /// Names the listed peers (once, at start; index = the peer's index), with room for
    /// [`limits::PEERS_ADDED_MAX`] more.
    pub(crate) fn name_peers(&self, names: impl IntoIterator<Item = String>) {
        let mut links: Vec<PeerLink> =
            names.into_iter().map(|name| PeerLink { name: name.into(), ..PeerLink::default() }).collect();
        links.extend((0..limits::PEERS_ADDED_MAX).map(|_| PeerLink::default()));
        let _ = self.peers.set(links);
    }

    /// Names peer `i`, added while running; false if there is no room for it.
    pub(crate) fn name_peer(&self, i: usize, name: String) -> bool {
        self.peers.get().and_then(|p| p.get(i)).is_some_and(|p| p.name.set(name).is_ok())
    }

    /// Where peer `i`'s connections count their bytes and round trips.
    pub(crate) fn link_stats(&self, i: usize) -> Arc<LinkStats> {
        self.peers.get().and_then(|p| p.get(i)).map_or_else(Arc::default, |p| p.stats.clone())
    }

    /// A connection to peer `i` came up (`+1`) or ended (`-1`).
    pub(crate) fn peer_connection(&self, i: usize, up: bool) {
        if let Some(p) = self.peers.get().and_then(|p| p.get(i)) {
            if up {
                p.connections.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ =
                    p.connections.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }

    /// Peer `i` said it is at `height`.
    pub(crate) fn peer_at(&self, i: usize, height: u64) {
        if let Some(p) = self.peers.get().and_then(|p| p.get(i)) {
            p.height.store(height, Ordering::Relaxed);
        }
    }

    /// The highest height at least `tolerated + 1` peers say they are at (so at least one honest
    /// peer if at most `tolerated` lie), or this process's own if fewer peers said anything.
    pub(crate) fn best_known_height(&self) -> u64 {
        let own = self.ledger_height.load(Ordering::Relaxed);
        let tolerated = self.tolerated_faults.load(Ordering::Relaxed) as usize;
        let mut heights: Vec<u64> = self
            .peers
            .get()
            .map(|p| p.iter().map(|p| p.height.load(Ordering::Relaxed)).filter(|h| *h > 0).collect())
            .unwrap_or_default();
        heights.sort_unstable_by(|a, b| b.cmp(a));
        heights.get(tolerated).copied().unwrap_or(own).max(own)
    }

    /// Appends the per-peer families and the best known height and lag.
    pub(crate) fn render_peers(&self, out: &mut String) {
        let peers = self.peers.get().map(Vec::as_slice).unwrap_or_default();
        let labelled = |name: &str| format!("peer=\"{}\"", exposition::label_value(name));
        let families: [(&str, &str, &str, &PeerSample); 5] = [
            ("peer_up", "gauge", "1 if a connection to the peer is up, else 0.", &|p| {
                Some(u64::from(p.connections.load(Ordering::Relaxed) > 0).to_string())
            }),
            (
                "peer_received_bytes_total",
                "counter",
                "Frame bytes received from the peer (after TLS), over its connections.",
                &|p| Some(p.stats.received_bytes().to_string()),
            ),
            (
                "peer_sent_bytes_total",
                "counter",
                "Frame bytes sent to the peer, over its connections.",
                &|p| Some(p.stats.sent_bytes().to_string()),
            ),
            (
                "peer_rtt_seconds",
                "gauge",
                "The last round trip of a ping to the peer (every 5 s; absent until one is measured).",
                &|p| p.stats.rtt().map(|d| d.as_secs_f64().to_string()),
            ),
            (
                "peer_height",
                "gauge",
                "The latest height the peer said it is at (its consensus messages, ledgers and requests); absent until it said one.",
                &|p| Some(p.height.load(Ordering::Relaxed)).filter(|h| *h > 0).map(|h| h.to_string()),
            ),
        ];
        for (name, kind, help, value) in families {
            exposition::header(out, &format!("caasiope_{name}"), kind, help);
            for p in peers {
                let Some(peer) = p.name.get() else { continue };
                if let Some(v) = value(p) {
                    let _ = writeln!(out, "caasiope_{name}{{{}}} {v}", labelled(peer));
                }
            }
        }
        let best = self.best_known_height();
        let own = self.ledger_height.load(Ordering::Relaxed);
        exposition::header(
            out,
            "caasiope_best_known_height",
            "gauge",
            "The highest height more peers say they are at than the validator set tolerates faulty ones (so at least one honest peer), or this process's own.",
        );
        let _ = writeln!(out, "caasiope_best_known_height {best}");
        exposition::header(
            out,
            "caasiope_sync_lag_ledgers",
            "gauge",
            "Ledgers this process is behind the best known height.",
        );
        let _ = writeln!(out, "caasiope_sync_lag_ledgers {}", best.saturating_sub(own));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_f_liars_raise_the_best_known_height() {
        let m = Metrics::default();
        m.name_peers((0..4).map(|i| format!("p{i}")));
        m.tolerated_faults.store(1, Ordering::Relaxed);
        m.ledger_height.store(10, Ordering::Relaxed);
        assert_eq!(m.best_known_height(), 10, "nobody said anything");
        m.peer_at(0, 1_000_000);
        assert_eq!(m.best_known_height(), 10, "one liar alone");
        m.peer_at(1, 15);
        m.peer_at(2, 14);
        assert_eq!(m.best_known_height(), 15, "the second highest: an honest peer is at least there");
        let mut out = String::new();
        m.render_peers(&mut out);
        assert!(out.contains("caasiope_sync_lag_ledgers 5\n"), "{out}");
        assert!(out.contains("caasiope_peer_height{peer=\"p0\"} 1000000\n"), "{out}");
        assert!(!out.contains("caasiope_peer_height{peer=\"p3\"}"), "absent until said: {out}");
        assert!(out.contains("caasiope_peer_up{peer=\"p3\"} 0\n"), "{out}");
        m.peer_connection(3, true);
        m.peer_connection(3, false);
        m.peer_connection(3, false);
        assert_eq!(m.peers.get().unwrap()[3].connections.load(Ordering::Relaxed), 0, "never below 0");
    }
}
