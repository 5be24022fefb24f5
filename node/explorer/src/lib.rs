//! The explorer's public HTTP API (docs/API.md): reads committed ledgers, blocks, the
//! transaction index and account histories from the store through a [`StoreReader`] (MDBX
//! readers never block the writer), account state and proofs from the state of the latest
//! ledger the host published (the explorer's copy of the state, moved by each ledger's diff),
//! and hands submissions to the same intake as the submit port.
//!
//! ```text
//! host thread ──publish(ledger, diff)───> Explorer { latest: state + certificate, head: watch }
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
    sync::{Arc, Mutex, RwLock, RwLockReadGuard},
};

use engine::{
    Hash,
    genesis::ChainParams,
    ledger::{Certificate, ValidatorSet},
    state::{ReplayWindow, State, StateDiff},
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

/// The state after the latest committed ledger, with the certificate that made it final: the
/// explorer's own copy of the committed state, moved ledger by ledger by what each ledger
/// changed ([`Latest::follow`]) — never copied whole on the ledger path, where a copy would cost
/// what the state holds (seconds at 10M accounts) every ledger.
struct Latest {
    state: State,
    certificate: Certificate,
}

impl Latest {
    /// Moves onto the ledger `diff` made, `committed` being the state after it, `window` its
    /// replay window and `certificate` what made it final: by the diff when this copy is its base (every ledger
    /// after the first), otherwise (at start, after a state sync) by a copy of `committed`.
    /// Returns whether the diff did.
    fn follow(
        &mut self,
        committed: &State,
        diff: &StateDiff,
        window: ReplayWindow,
        certificate: &Certificate,
    ) -> bool {
        let by_diff =
            self.state.apply_shared_diff(diff).is_ok() && self.state.head_hash() == committed.head_hash();
        if by_diff {
            // The replay window is the host's, shared rather than held twice (the API reads
            // none of it; left alone it would keep every id until it expires).
            self.state.adopt_replay(window);
        } else {
            self.state = committed.clone();
        }
        self.certificate = certificate.clone();
        by_diff
    }
}

/// What the API knows of a transaction submitted through it.
#[derive(Clone, Debug)]
struct Submitted {
    expiration_ms: i64,
    /// The label of the rule that refused it (PROTOCOL.md §7) and its words, if refused.
    rejected: Option<(&'static str, String)>,
}

/// The submissions remembered, within [`SUBMITTED_BYTES_MAX`] (each counted as
/// [`SUBMITTED_ENTRY_BYTES`] and the words of its refusal), in two generations of half of it
/// each: when the newer one is full, the older one is forgotten whole and a new one begins. A
/// generation never loses entries one by one while it grows, so its map is never left with the
/// slots of removed entries (which make hashbrown's table double however few entries it holds).
/// Each generation's table is allocated at once for the most entries its half can count, so it
/// never grows (no doubling, no old table beside the new one while it copies) and the memory
/// held stays the same from one generation to the next: two tables of ~40.5 MiB at the
/// default bound. The latest half of the bytes' worth is always remembered.
struct SubmittedSet {
    newer: Generation,
    older: Generation,
    /// Bytes of one generation: half of the bound, less the words of one refusal (which may
    /// take it past its half once).
    half: usize,
}

#[derive(Default)]
struct Generation {
    by_id: HashMap<TxId, Submitted>,
    bytes: usize,
}

impl Generation {
    /// A generation whose table holds the most entries `bytes` can count without growing.
    fn with_room(bytes: usize) -> Self {
        Self { by_id: HashMap::with_capacity(bytes / SUBMITTED_ENTRY_BYTES), bytes: 0 }
    }
}

// What an entry takes at most fits the bytes it is counted for: its id, its entry and
// hashbrown's control byte, at the map's lowest load (7/16: a capacity just past a power of
// two's 7/8 gets the next power of two).
const _: () = assert!((size_of::<TxId>() + size_of::<Submitted>() + 1) * 16 / 7 <= SUBMITTED_ENTRY_BYTES);

impl Default for SubmittedSet {
    fn default() -> Self {
        Self::with_bytes(SUBMITTED_BYTES_MAX)
    }
}

impl SubmittedSet {
    fn with_bytes(max: usize) -> Self {
        let half = (max - SUBMITTED_REASON_BYTES_MAX) / 2;
        Self { newer: Generation::with_room(half), older: Generation::default(), half }
    }

    /// Forgets the older generation and begins a new one, the newer becoming the older. The
    /// older table is freed before the new one is allocated, so the allocator can reuse its
    /// memory for the new one: never three tables at a time.
    fn rotate(&mut self) {
        self.older = Generation::default();
        self.older = std::mem::replace(&mut self.newer, Generation::with_room(self.half));
    }

    fn get(&self, id: &TxId) -> Option<&Submitted> {
        self.newer.by_id.get(id).or_else(|| self.older.by_id.get(id))
    }

    fn insert(&mut self, id: TxId, mut entry: Submitted) {
        if let Some((_, reason)) = &mut entry.rejected {
            cut(reason);
        }
        let bytes = entry.bytes();
        // Replaced in place in the newer generation (a removal there would leave its slot).
        if let Some(slot) = self.newer.by_id.get_mut(&id) {
            self.newer.bytes = self.newer.bytes - slot.bytes() + bytes;
            *slot = entry;
        } else {
            if let Some(old) = self.older.by_id.remove(&id) {
                self.older.bytes -= old.bytes();
            }
            if self.newer.bytes + bytes > self.half {
                self.rotate();
            }
            self.newer.bytes += bytes;
            self.newer.by_id.insert(id, entry);
        }
        // The words of a refusal recorded in place may take the newer one past its half.
        if self.newer.bytes > self.half {
            self.rotate();
        }
    }

    /// Records a refusal of `id`, if remembered and not refused yet (the entry moves to the
    /// newer generation, where its words are counted).
    fn refuse(&mut self, id: &TxId, kind: &'static str, reason: String) {
        let Some(entry) = self.get(id) else { return };
        if entry.rejected.is_some() {
            return;
        }
        let expiration_ms = entry.expiration_ms;
        self.insert(*id, Submitted { expiration_ms, rejected: Some((kind, reason)) });
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
    /// Written once a ledger, for the time its diff takes to apply; read for a lookup.
    latest: RwLock<Latest>,
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
            latest: RwLock::new(Latest { state: p.state, certificate: p.certificate }),
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

    /// A ledger was committed and stored: `state` is the state after it, `diff` what it
    /// changed (applied to the explorer's copy: the cost of the block, not of the state) and
    /// `window` its replay window ([`State::replay_window`]).
    pub fn publish(&self, state: &State, diff: &StateDiff, window: ReplayWindow, certificate: &Certificate) {
        let height = state.head().height;
        if let Ok(mut sets) = self.sets.lock() {
            sets.entry(state.validators().hash()).or_insert_with(|| state.validators().clone());
        }
        if let Ok(mut chain) = self.set_chain.lock() {
            chain.record(height, state.validators());
        }
        let mut latest = self.latest.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        latest.follow(state, diff, window, certificate);
        drop(latest);
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

    /// The latest ledger's state, read-locked: held for a lookup, never across an await.
    fn latest(&self) -> RwLockReadGuard<'_, Latest> {
        self.latest.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn validator_set(&self, hash: &Hash) -> Option<ValidatorSet> {
        self.sets.lock().ok()?.get(hash).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::{Cors, Submitted, SubmittedSet};
    use std::collections::HashMap;

    impl SubmittedSet {
        fn len(&self) -> usize {
            self.newer.by_id.len() + self.older.by_id.len()
        }

        fn bytes(&self) -> usize {
            self.newer.bytes + self.older.bytes
        }

        fn entries(&self) -> impl Iterator<Item = &Submitted> {
            self.newer.by_id.values().chain(self.older.by_id.values())
        }

        /// The bytes its tables take.
        fn heap_bytes(&self) -> usize {
            table_bytes(&self.newer.by_id) + table_bytes(&self.older.by_id)
        }
    }

    /// The bytes a hash map's table takes: hashbrown's buckets (a power of two, 8/7 of its
    /// capacity) each with its entry and a control byte.
    fn table_bytes<K, V>(map: &HashMap<K, V>) -> usize {
        if map.capacity() == 0 {
            return 0;
        }
        let buckets = (map.capacity() * 8 / 7).next_power_of_two();
        buckets * (size_of::<(K, V)>() + 1)
    }
    use engine::tx::TxId;
    use limits::{SUBMITTED_BYTES_MAX, SUBMITTED_ENTRY_BYTES, SUBMITTED_REASON_BYTES_MAX};

    fn id(n: usize) -> TxId {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(n as u64).to_le_bytes());
        engine::hash::Hash(id)
    }

    /// The `n`th step of a mix of submissions: a new one, refusals of recent and older ones,
    /// and copies sent again.
    fn churn(set: &mut SubmittedSet, n: usize) {
        set.insert(id(n), Submitted { expiration_ms: 1, rejected: None });
        if n % 3 == 0 {
            set.refuse(&id(n / 2), "bad_signature", "x".repeat(n % 300));
        }
        if n % 5 == 0 {
            set.insert(id(n - n % 7), Submitted { expiration_ms: 2, rejected: None });
        }
    }

    #[test]
    fn the_submissions_remembered_take_no_more_memory_than_their_bound() {
        // Ids come and go for many times the set's length: the memory its tables hold stays
        // within the bytes it counts (the map must not grow for the slots its removals leave).
        let max = 256 * SUBMITTED_ENTRY_BYTES;
        let mut set = SubmittedSet::with_bytes(max);
        let mut most = 0;
        for n in 0..200 * 256 {
            churn(&mut set, n);
            let words: usize =
                set.entries().filter_map(|e| e.rejected.as_ref()).map(|(_, r)| r.capacity()).sum();
            most = most.max(set.heap_bytes() + words);
            assert!(set.bytes() <= max);
        }
        assert!(set.len() >= 128, "{}", set.len());
        assert!(most <= max, "{most} bytes held for a bound of {max}");
    }

    #[test]
    fn the_submissions_tables_never_grow() {
        // A generation's table is allocated once with room for all it can count: the newer
        // never grows while it fills (no doubling with the old table beside the new one), and
        // a new generation gets the same room, so the memory held does not swing.
        let max = 256 * SUBMITTED_ENTRY_BYTES;
        let mut set = SubmittedSet::with_bytes(max);
        let room = set.newer.by_id.capacity();
        assert!(room >= set.half / SUBMITTED_ENTRY_BYTES, "{room}");
        let mut rotations = 0;
        let mut last = id(usize::MAX);
        for n in 0..50 * 256 {
            churn(&mut set, n);
            assert_eq!(set.newer.by_id.capacity(), room, "after {n}");
            assert!(set.older.by_id.capacity() <= room, "after {n}");
            if set.older.by_id.contains_key(&last) {
                rotations += 1;
            }
            last = id(n);
        }
        assert!(rotations > 10, "{rotations}");
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
        assert!(set.bytes() <= SUBMITTED_BYTES_MAX);
        assert!(set.len() >= fit / 2 - 1 && set.len() <= fit, "{} of {fit}", set.len());
        assert!(set.get(&id(999)).is_none(), "the oldest are forgotten");
        let newest = set.get(&id(fit + 999)).unwrap();
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
        assert_eq!(set.get(&accepted).unwrap().rejected, Some(("expired", "x".repeat(10))));
        let counted: usize = set.entries().map(Submitted::bytes).sum();
        assert_eq!(set.bytes(), counted);
        assert!(set.bytes() <= SUBMITTED_BYTES_MAX);
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

#[cfg(test)]
mod latest_tests {
    use engine::{
        Backend,
        genesis::Genesis,
        ledger::Certificate,
        state::{State, StateDiff, execute_verified},
        validate::{VerifiedTx, verify},
    };
    use storage::test_utils::{CHAIN_ID, TestChain};

    use super::Latest;

    /// The next ledger of `host` (`count` transfers, each to two accounts, new ones among
    /// them), applied to it: its diff and certificate.
    fn next(chain: &TestChain, host: &mut State, count: usize) -> (StateDiff, Certificate) {
        let height = host.head().height + 1;
        let txs: Vec<VerifiedTx> = chain
            .transfers(height, count, 2)
            .into_iter()
            .map(|stx| {
                let id = stx.tx.id(CHAIN_ID);
                verify(stx, id, host.params(), Backend::Libsecp256k1).unwrap()
            })
            .collect();
        let diff = execute_verified(host, TestChain::timestamp(height), &txs).unwrap();
        host.apply_shared_diff(&diff).unwrap();
        let certificate = chain.certify(diff.applied());
        (diff, certificate)
    }

    /// Whether `a` serves what `b` holds: the head, the root, and every account with its proof.
    fn same(a: &State, b: &State) {
        assert_eq!(a.head_hash(), b.head_hash());
        assert_eq!(a.state_root(), b.state_root());
        assert_eq!(a.account_count(), b.account_count());
        for account in b.accounts() {
            assert_eq!(a.prove_account(&account.address), b.prove_account(&account.address));
        }
    }

    #[test]
    fn the_explorer_follows_each_ledger_by_its_diff_and_copies_only_off_its_base() {
        let chain = TestChain::new(4, 0);
        let mut host = State::from_genesis(&Genesis::from_toml(&chain.genesis_toml).unwrap());
        let mut latest = Latest { state: host.clone(), certificate: Certificate::new(0) };
        // Ledger by ledger: the explorer's copy moves by the diff alone and serves what the
        // host's state holds (new accounts and their proofs included).
        for _ in 0..3 {
            let (diff, certificate) = next(&chain, &mut host, 5);
            assert!(
                latest.follow(&host, &diff, host.replay_window(), &certificate),
                "ledger {} by its diff",
                host.head().height
            );
            same(&latest.state, &host);
            assert_eq!(latest.certificate, certificate);
        }
        // A ledger missed (a state sync jumped over it): the next diff is not on the
        // explorer's copy, which becomes a copy of the host's state instead.
        let accounts = latest.state.account_count();
        next(&chain, &mut host, 5);
        let (diff, certificate) = next(&chain, &mut host, 5);
        assert!(!latest.follow(&host, &diff, host.replay_window(), &certificate), "off its base");
        same(&latest.state, &host);
        assert!(latest.state.account_count() > accounts);
    }
}
