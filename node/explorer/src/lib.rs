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
use limits::SUBMITTED_MAX;

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

#[derive(Default)]
struct SubmittedSet {
    by_id: HashMap<TxId, Submitted>,
    order: VecDeque<TxId>,
}

impl SubmittedSet {
    fn insert(&mut self, id: TxId, entry: Submitted) {
        if self.by_id.insert(id, entry).is_none() {
            self.order.push_back(id);
            while self.order.len() > SUBMITTED_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
    }
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
            if let Some(entry) = s.by_id.get_mut(&id) {
                entry.rejected.get_or_insert_with(|| (error.kind(), error.to_string()));
            }
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
    use super::Cors;

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
