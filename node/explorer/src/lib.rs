//! The explorer's public HTTP API (docs/API.md): reads committed ledgers, blocks, the
//! transaction index and account histories from the store through a [`StoreReader`] (MDBX
//! readers never block the writer), account state and proofs from the state of the latest
//! ledger the host published, and hands submissions to the same intake as the submit port.
//!
//! ```text
//! host thread ──publish(ledger, state)──> Explorer { latest: state + certificate, head: watch }
//!                                            │            ▲
//! HTTP (axum, on the network runtime) ───────┘            └── StoreReader (ledgers, index, history)
//! ```

mod api;
mod feed;
mod gate;
mod headers;
mod listener;
mod stream;
mod submit;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
};

use engine::{
    Hash,
    genesis::ChainParams,
    ledger::{Certificate, ValidatorSet},
    state::State,
    tx::TxId,
    validate::TxError,
};
use pipeline::IntakeSubmitter;
use storage::StoreReader;

pub use self::api::serve;
pub use ::api::StreamEndReason;
use limits::{SUBMITTED_BYTES_MAX, SUBMITTED_ENTRY_BYTES, SUBMITTED_REASON_BYTES_MAX};

/// What the explorer asks of the process that runs it: to count the submissions refused as
/// busy (the busy check itself is the mempool's), and the process's metrics (the explorer
/// serves them on `/metrics`).
pub trait Host: Send + Sync + 'static {
    /// A submission was refused because the process was busy (for its metrics).
    fn refused_busy(&self);
    /// A request body did not arrive whole within its deadline (answered 408; for its metrics).
    fn body_deadline_missed(&self);
    /// `live` streams are connected now (for its metrics).
    fn streams(&self, live: usize);
    /// A stream was ended with a final event saying why (for its metrics).
    fn stream_ended(&self, reason: StreamEndReason);
    /// A submission was not a transaction's canonical bytes (for its metrics).
    fn undecodable(&self);
    /// An API request on `route` (its index in `api::routes::ALL`, `None` for a path no route
    /// serves) was answered `status` after `elapsed` (for its metrics).
    fn api_request(&self, route: Option<usize>, status: u16, elapsed: std::time::Duration);
    /// The process's metrics as Prometheus text.
    fn metrics_text(&self) -> String;
}

/// The state after the latest committed ledger, with the certificate that made it final.
struct Latest {
    state: State,
    certificate: Certificate,
}

/// What the API knows of a transaction submitted through it.
#[derive(Clone, Debug)]
struct Submitted {
    expiration_ms: i64,
    /// The label of the rule that refused it (PROTOCOL.md §7) and its words, if refused.
    rejected: Option<(&'static str, String)>,
}

/// The submissions remembered, within [`SUBMITTED_BYTES_MAX`] (each counted as
/// [`SUBMITTED_ENTRY_BYTES`] and the words of its refusal); the oldest are forgotten first.
#[derive(Default)]
struct SubmittedSet {
    by_id: HashMap<TxId, Submitted>,
    order: VecDeque<TxId>,
    bytes: usize,
}

// What an entry takes at most fits the bytes it is counted for: its id in the order of arrival
// (a ring that may be twice its length), and in the map with its entry and hashbrown's control
// byte, at the map's lowest load (7/16, just after it grew).
const _: () = assert!(
    2 * size_of::<TxId>() + (size_of::<TxId>() + size_of::<Submitted>() + 1) * 16 / 7
        <= SUBMITTED_ENTRY_BYTES
);

impl SubmittedSet {
    fn insert(&mut self, id: TxId, mut entry: Submitted) {
        if let Some((_, reason)) = &mut entry.rejected {
            cut(reason);
        }
        let bytes = entry.bytes();
        match self.by_id.insert(id, entry) {
            Some(old) => self.bytes = self.bytes - old.bytes() + bytes,
            None => {
                self.order.push_back(id);
                self.bytes += bytes;
            }
        }
        self.forget_oldest();
    }

    /// Records a refusal of `id`, if remembered and not refused yet.
    fn refuse(&mut self, id: &TxId, kind: &'static str, mut reason: String) {
        let Some(entry) = self.by_id.get_mut(id) else { return };
        if entry.rejected.is_some() {
            return;
        }
        cut(&mut reason);
        self.bytes += reason.len();
        entry.rejected = Some((kind, reason));
        self.forget_oldest();
    }

    fn forget_oldest(&mut self) {
        while self.bytes > SUBMITTED_BYTES_MAX {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(entry) = self.by_id.remove(&old) {
                self.bytes -= entry.bytes();
            }
        }
    }
}

impl Submitted {
    /// What it is counted for in [`SubmittedSet`].
    fn bytes(&self) -> usize {
        SUBMITTED_ENTRY_BYTES + self.rejected.as_ref().map_or(0, |(_, reason)| reason.len())
    }
}

/// Cuts a refusal's words to [`SUBMITTED_REASON_BYTES_MAX`] (at a character boundary), and
/// gives back the room they do not use.
fn cut(reason: &mut String) {
    if reason.len() > SUBMITTED_REASON_BYTES_MAX {
        let mut end = SUBMITTED_REASON_BYTES_MAX - '…'.len_utf8();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason.shrink_to_fit();
}

/// Everything the API handlers share.
pub struct Explorer {
    chain_id: String,
    params: ChainParams,
    reader: StoreReader,
    latest: RwLock<Arc<Latest>>,
    /// Every validator set seen, by hash: genesis's, the one at start and each change since.
    sets: Mutex<HashMap<Hash, ValidatorSet>>,
    genesis_validators: ValidatorSet,
    /// The head when this explorer started: the history below it is scanned for set changes.
    started_at: u64,
    /// The validator-set changes since genesis.
    set_chain: Mutex<headers::SetChain>,
    submitted: Mutex<SubmittedSet>,
    /// The last ledgers read, decoded.
    recent: Mutex<VecDeque<Arc<api::StoredLedger>>>,
    /// Height of the latest ledger the API may serve (its rows are in the store).
    head: tokio::sync::watch::Sender<u64>,
    /// Each committed ledger's stream events, rendered once for every live stream.
    feed: feed::Feed,
    streams: stream::Streams,
    /// Taken away by [`Explorer::close`] so the intake can stop.
    submitter: Mutex<Option<IntakeSubmitter>>,
    host: Arc<dyn Host>,
    cors: Cors,
}

impl std::fmt::Debug for Explorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explorer").field("chain_id", &self.chain_id).finish_non_exhaustive()
    }
}

/// Which web pages' scripts may read the API's answers (CORS): `api_cors_origins` of the
/// configuration. The API has no cookies or credentials, so any origin is the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (`*`).
    #[default]
    Any,
    /// These origins only (`scheme://host[:port]`).
    Origins(Vec<String>),
    /// No CORS headers: browsers keep answers from other origins' scripts.
    Off,
}

impl Cors {
    /// The policy of a configured list: `["*"]` any origin, `[]` none, else these origins.
    pub fn from_list(list: &[String]) -> Result<Self, String> {
        match list {
            [] => Ok(Self::Off),
            [any] if any == "*" => Ok(Self::Any),
            origins => {
                for o in origins {
                    let Some((scheme, rest)) = o.split_once("://") else {
                        return Err(format!("{o:?} is not an origin (scheme://host[:port]) nor \"*\""));
                    };
                    let host_ok = !rest.is_empty()
                        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
                    if !matches!(scheme, "http" | "https") || !host_ok {
                        return Err(format!("{o:?} is not an origin (http[s]://host[:port], no path)"));
                    }
                }
                Ok(Self::Origins(origins.to_vec()))
            }
        }
    }
}

/// How an explorer is put together.
pub struct ExplorerParts {
    pub genesis_validators: ValidatorSet,
    pub state: State,
    pub certificate: Certificate,
    pub reader: StoreReader,
    pub submitter: IntakeSubmitter,
    pub host: Arc<dyn Host>,
    pub cors: Cors,
}

impl std::fmt::Debug for ExplorerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExplorerParts").finish_non_exhaustive()
    }
}

impl Explorer {
    /// An explorer serving the state and certificate of `p` until the host publishes more.
    pub fn new(p: ExplorerParts) -> Arc<Self> {
        let params = p.state.params().clone();
        let mut sets = HashMap::new();
        sets.insert(p.genesis_validators.hash(), p.genesis_validators.clone());
        let set_chain = Mutex::new(headers::SetChain::new(p.state.validators().hash()));
        let started_at = p.state.head().height;
        sets.insert(p.state.validators().hash(), p.state.validators().clone());
        let (head, _) = tokio::sync::watch::channel(p.state.head().height);
        let feed = feed::Feed::new(p.state.head().height + 1);
        Arc::new(Self {
            chain_id: params.chain_id.clone(),
            params,
            reader: p.reader,
            latest: RwLock::new(Arc::new(Latest { state: p.state, certificate: p.certificate })),
            sets: Mutex::new(sets),
            genesis_validators: p.genesis_validators,
            started_at,
            set_chain,
            submitted: Mutex::new(SubmittedSet::default()),
            recent: Mutex::new(VecDeque::new()),
            head,
            feed,
            streams: stream::Streams::default(),
            submitter: Mutex::new(Some(p.submitter)),
            host: p.host,
            cors: p.cors,
        })
    }

    /// A ledger was committed and stored: `state` is the state after it.
    pub fn publish(&self, state: &State, certificate: &Certificate) {
        let height = state.head().height;
        if let Ok(mut sets) = self.sets.lock() {
            sets.entry(state.validators().hash()).or_insert_with(|| state.validators().clone());
        }
        if let Ok(mut chain) = self.set_chain.lock() {
            chain.record(height, state.validators());
        }
        let latest = Arc::new(Latest { state: state.clone(), certificate: certificate.clone() });
        if let Ok(mut l) = self.latest.write() {
            *l = latest;
        }
        self.head.send_replace(height);
    }

    /// The intake refused a transaction (after the API had accepted it).
    pub fn rejected(&self, id: Option<TxId>, error: &TxError) {
        let Some(id) = id else { return };
        // A second copy of a transaction already admitted or committed: the first one's fate
        // is the transaction's.
        if matches!(error, TxError::Replayed(_)) {
            return;
        }
        if let Ok(mut s) = self.submitted.lock() {
            s.refuse(&id, error.kind(), error.to_string());
        }
    }

    /// Submissions end (the process is stopping): the intake's queue can close.
    pub fn close(&self) {
        self.feed.close();
        if let Ok(mut s) = self.submitter.lock() {
            s.take();
        }
    }

    /// `/v1/stream` subscribers connected now.
    pub fn live_streams(&self) -> usize {
        self.streams.live()
    }

    fn submitter(&self) -> Option<IntakeSubmitter> {
        self.submitter.lock().ok()?.clone()
    }

    fn latest(&self) -> Arc<Latest> {
        self.latest.read().map(|l| l.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    fn validator_set(&self, hash: &Hash) -> Option<ValidatorSet> {
        self.sets.lock().ok()?.get(hash).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::{Cors, Submitted, SubmittedSet};
    use engine::tx::TxId;
    use limits::{SUBMITTED_BYTES_MAX, SUBMITTED_ENTRY_BYTES, SUBMITTED_REASON_BYTES_MAX};

    fn id(n: usize) -> TxId {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
        engine::hash::Hash(id)
    }

    #[test]
    fn the_submissions_remembered_stay_within_their_bytes() {
        let mut set = SubmittedSet::default();
        // Refusals with long words: each cut, and counted with them.
        let per_entry = SUBMITTED_ENTRY_BYTES + SUBMITTED_REASON_BYTES_MAX;
        let fit = SUBMITTED_BYTES_MAX / per_entry;
        for n in 0..fit + 1_000 {
            let rejected = Some(("bad_signature", "x".repeat(1_000)));
            set.insert(id(n), Submitted { expiration_ms: 1, rejected });
        }
        assert!(set.bytes <= SUBMITTED_BYTES_MAX);
        assert_eq!(set.by_id.len(), fit);
        assert!(!set.by_id.contains_key(&id(999)), "the oldest are forgotten");
        let newest = &set.by_id[&id(fit + 999)];
        let reason = &newest.rejected.as_ref().unwrap().1;
        assert!(reason.len() <= SUBMITTED_REASON_BYTES_MAX && reason.ends_with('…'), "{}", reason.len());
        // Cut at a character boundary.
        let mut words = "é".repeat(1_000);
        super::cut(&mut words);
        assert!(words.len() <= SUBMITTED_REASON_BYTES_MAX && words.ends_with("é…"));
        // A refusal recorded later is counted too, and only the first one is kept.
        let accepted = id(usize::MAX);
        set.insert(accepted, Submitted { expiration_ms: 1, rejected: None });
        set.refuse(&accepted, "expired", "x".repeat(10));
        set.refuse(&accepted, "bad_signature", "y".repeat(10));
        assert_eq!(set.by_id[&accepted].rejected, Some(("expired", "x".repeat(10))));
        let counted: usize = set.by_id.values().map(Submitted::bytes).sum();
        assert_eq!(set.bytes, counted);
        assert!(set.bytes <= SUBMITTED_BYTES_MAX);
    }

    #[test]
    fn cors_policies_from_the_configuration() {
        let list = |l: &[&str]| Cors::from_list(&l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(list(&["*"]), Ok(Cors::Any));
        assert_eq!(list(&[]), Ok(Cors::Off));
        assert_eq!(
            list(&["https://a.example", "http://127.0.0.1:8080", "http://[::1]:3000"]),
            Ok(Cors::Origins(vec![
                "https://a.example".into(),
                "http://127.0.0.1:8080".into(),
                "http://[::1]:3000".into()
            ]))
        );
        for bad in
            ["a.example", "https://a.example/", "ftp://a.example", "https://", "*.example", "https://a b"]
        {
            assert!(list(&[bad]).is_err(), "{bad}");
        }
        assert!(list(&["*", "https://a.example"]).is_err(), "* is alone or not at all");
    }
}
