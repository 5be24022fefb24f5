//! The `/v1` routes (docs/API.md). Every failure is a JSON error with a 4xx status (503 when
//! busy or stopping, 500 only for a store that cannot be read); untrusted path, query and body
//! input is parsed here with bounded sizes, never with a panic.

use std::{collections::HashMap, sync::Arc};

use api::{ErrorCode, routes};
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State as AxState},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use engine::{
    Address, Encode, Hash,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    limits::TX_BYTES_MAX,
    merkle::tx_proof,
    proof::{AccountStateProof, TxInclusionProof},
    tx::{SignedTransaction, TxId},
    validate::TxError,
};
use storage::{StoreError, TxLocation};

use super::Explorer;

use limits::{HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};

pub(super) type Shared = Arc<Explorer>;

/// A JSON error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    pub(super) code: ErrorCode,
    /// The rule's label for a refused transaction (PROTOCOL.md §7), else the code's name.
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, kind: code.as_str(), message: message.into() }
    }
    /// A transaction the rules refuse (400 `rejected`), of the kind of `err`.
    pub(super) fn rejected(err: &TxError) -> Self {
        Self { kind: err.kind(), ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::Rejected, err.to_string()) }
    }
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }
    pub(super) fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, "the process is stopping")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = api::ErrorBody::of_kind(self.code, self.kind, self.message);
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Busy or stopping: when to ask again.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(limits::API_RETRY_AFTER_SECS));
        }
        response
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The router of the API.
pub(crate) fn router(explorer: Shared) -> Router {
    let router = Router::new()
        .route(routes::STATUS, get(status))
        .route(routes::LEDGER_LATEST, get(ledger_latest))
        .route(routes::LEDGER, get(ledger_at))
        .route(routes::TRANSACTIONS, axum::routing::post(super::submit::submit))
        .route(routes::TRANSACTION, get(transaction))
        .route(routes::ACCOUNT, get(account))
        .route(routes::HISTORY, get(history))
        .route(routes::PROOF_TRANSACTION, get(tx_proof_of))
        .route(routes::PROOF_ACCOUNT, get(account_proof))
        .route(routes::VALIDATORS_NOW, get(validators_now))
        .route(routes::VALIDATORS, get(validators))
        .route(routes::HEADERS, get(super::headers::headers))
        .route(routes::HEADER, get(super::headers::header_at))
        .route(routes::VALIDATOR_SETS, get(super::headers::validator_sets))
        .route(routes::EVIDENCE, get(evidence))
        .route(routes::OPENAPI, get(|| async { Json(api::openapi()) }))
        .route(routes::STREAM, get(super::stream::stream))
        .route(routes::HEALTHZ, get(|| async { "ok\n" }))
        .route(routes::METRICS, get(metrics))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::BadRequest,
                "this route does not take that method; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(2 * TX_BYTES_MAX + 1024));
    router.with_state(explorer)
}

/// Serves the API on `listener` until the runtime stops, counting its connections in `stats`.
pub async fn serve(listener: tokio::net::TcpListener, explorer: Shared, stats: Arc<edge::Stats>) {
    if let Err(e) = edge::widen_backlog(&listener, limits::LISTEN_BACKLOG) {
        eprintln!("caasiope: cannot widen the accept queue: {e}");
    }
    let listener = match super::listener::Limited::new(
        listener,
        limits::API_CONNECTIONS_MAX,
        limits::API_CONNECTIONS_PER_SOURCE,
        limits::API_IDLE_TIMEOUT,
        stats,
    ) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("caasiope: the explorer API cannot serve: {e}");
            return;
        }
    };
    tokio::spawn(super::feed::run(explorer.clone()));
    let scanner = explorer.clone();
    tokio::task::spawn_blocking(move || super::headers::scan_history(&scanner, scanner.started_at));
    let service = super::gate::service(router(explorer.clone()), explorer);
    super::listener::serve(listener, service, limits::API_HEADER_DEADLINE).await;
}

pub(super) fn parse_height(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("{text:?} is not a ledger height")))
}

fn parse_id(text: &str) -> Result<TxId, ApiError> {
    TxId::from_hex(text)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a transaction id (64 hex characters)")))
}

pub(super) fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse().map_err(|e| ApiError::bad_request(format!("{text:?} is not an address: {e}")))
}

pub(super) fn path(
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(super) type QueryMap = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

pub(super) fn query(q: QueryMap) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m).map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The answer of a ledger.
pub(super) fn ledger_answer(
    chain_id: &str,
    header: &LedgerHeader,
    certificate: &Certificate,
    ids: &[TxId],
) -> api::Ledger {
    api::Ledger {
        height: header.height,
        hash: header.hash(chain_id),
        timestamp_ms: header.timestamp_ms,
        previous_hash: header.previous,
        tx_root: header.tx_root,
        state_root: header.state_root,
        validator_set_hash: header.validator_set_hash,
        certificate: api::Certificate {
            round: certificate.round,
            signers: certificate.signatures.iter().map(|(i, _)| *i).collect(),
        },
        tx_count: ids.len() as u64,
        transactions: ids.to_vec(),
    }
}

/// A stored ledger: header, certificate, block and the block's transaction ids.
pub(super) struct StoredLedger {
    pub(super) height: u64,
    pub(super) header: LedgerHeader,
    pub(super) certificate: Certificate,
    pub(super) txs: Vec<SignedTransaction>,
    pub(super) ids: Vec<TxId>,
}

/// Ledger `height` if committed and published, from the explorer's cache of recent ledgers or
/// the store (a block of 10,000 transactions is ~10 ms to decode and hash: the cache serves the
/// repeated reads of recent ledgers — every live stream reads each new one).
pub(super) fn stored_ledger(e: &Explorer, height: u64) -> Result<Option<Arc<StoredLedger>>, ApiError> {
    read_ledger(e, height, true)
}

/// Ledger `height` as [`stored_ledger`], kept in the cache of recent ledgers if `remember`
/// (a replaying stream reads old ledgers once: they would only push the recent ones out).
pub(super) fn read_ledger(
    e: &Explorer,
    height: u64,
    remember: bool,
) -> Result<Option<Arc<StoredLedger>>, ApiError> {
    if height > *e.head.borrow() {
        return Ok(None);
    }
    if let Some(hit) = e.recent.lock().ok().and_then(|r| r.iter().find(|l| l.height == height).cloned()) {
        return Ok(Some(hit));
    }
    let Some((header, certificate)) = e.reader.header(height)? else { return Ok(None) };
    let txs = e.reader.block(height)?.unwrap_or_default();
    let ids = txs.iter().map(|t| t.tx.id(&e.chain_id)).collect();
    let ledger = Arc::new(StoredLedger { height, header, certificate, txs, ids });
    if !remember {
        return Ok(Some(ledger));
    }
    if let Ok(mut recent) = e.recent.lock() {
        if recent.len() >= limits::API_RECENT_LEDGERS {
            recent.pop_front();
        }
        recent.push_back(ledger.clone());
    }
    Ok(Some(ledger))
}

async fn status(AxState(e): AxState<Shared>) -> ApiResult<api::Status> {
    let latest = e.latest();
    let head = latest.state.head();
    let validators = latest
        .state
        .validators()
        .validators()
        .iter()
        .map(|v| api::Validator { public_key: v.public_key, weight: v.weight })
        .collect();
    Ok(Json(api::Status {
        chain_id: e.chain_id.clone(),
        height: head.height,
        ledger_hash: latest.state.head_hash(),
        timestamp_ms: head.timestamp_ms,
        min_fee: e.params.min_fee,
        max_ttl_ms: e.params.max_ttl_ms,
        fee_account: e.params.fee_account,
        governance: e.params.governance,
        issuers: e.params.issuers.clone(),
        validators,
    }))
}

async fn ledger_latest(AxState(e): AxState<Shared>) -> ApiResult<api::Ledger> {
    let height = *e.head.borrow();
    ledger_json_at(&e, height)
}

async fn ledger_at(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<api::Ledger> {
    let height = parse_height(&path(p)?)?;
    ledger_json_at(&e, height)
}

fn ledger_json_at(e: &Explorer, height: u64) -> ApiResult<api::Ledger> {
    let l = stored_ledger(e, height)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {height}")))?;
    Ok(Json(ledger_answer(&e.chain_id, &l.header, &l.certificate, &l.ids)))
}

/// Where `id` was committed, if it was (and the API may serve that ledger).
fn committed_at(e: &Explorer, id: &TxId) -> Result<Option<TxLocation>, ApiError> {
    Ok(e.reader.tx_location(id)?.filter(|at| at.height <= *e.head.borrow()))
}

async fn transaction(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<api::TxStatus> {
    let id = parse_id(&path(p)?)?;
    if let Some(at) = committed_at(&e, &id)? {
        let l = stored_ledger(&e, at.height)?
            .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", at.height)))?;
        let tx = l
            .txs
            .get(at.index as usize)
            .ok_or_else(|| ApiError::internal("the index points past its block"))?;
        let json = serde_json::to_value(tx).map_err(|err| ApiError::internal(format!("json: {err}")))?;
        return Ok(Json(api::TxStatus {
            id,
            status: api::TxState::Committed,
            height: Some(at.height),
            index: Some(at.index),
            expiration_ms: tx.tx.expiration_ms,
            reason: None,
            kind: None,
            transaction: Some(json),
            bytes: Some(hex::encode(tx.to_bytes())),
        }));
    }
    let entry = e.submitted.lock().ok().and_then(|s| s.get(&id).cloned());
    let Some(entry) = entry else {
        return Err(ApiError::not_found(format!("transaction {id} is neither committed nor submitted here")));
    };
    let head_ms = e.latest().state.head().timestamp_ms;
    let (status, kind, reason) = match entry.rejected {
        // Refused for its expiration: expired, with the rule's words.
        Some((kind @ "expired", reason)) => (api::TxState::Expired, Some(kind), Some(reason)),
        Some((kind, reason)) => (api::TxState::Rejected, Some(kind), Some(reason)),
        None if entry.expiration_ms <= head_ms => (api::TxState::Expired, None, None),
        None => (api::TxState::Pending, None, None),
    };
    Ok(Json(api::TxStatus {
        id,
        status,
        height: None,
        index: None,
        expiration_ms: entry.expiration_ms,
        reason,
        kind: kind.map(str::to_owned),
        transaction: None,
        bytes: None,
    }))
}

async fn account(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<api::Account> {
    // Address32 text is either case: answered in lower case, its canonical form (what an
    // `Address` serializes to).
    let mut text = path(p)?;
    text.make_ascii_lowercase();
    let address = parse_address(&text)?;
    let latest = e.latest();
    let account = latest.state.account(&address);
    let declaration = account
        .and_then(|a| a.declaration.as_deref())
        .map(serde_json::to_value)
        .transpose()
        .map_err(|err| ApiError::internal(format!("json: {err}")))?;
    Ok(Json(api::Account {
        address,
        height: latest.state.head().height,
        balances: account
            .map(|a| a.balances().iter().map(|(c, amount)| api::Balance { currency: *c, amount: *amount }))
            .into_iter()
            .flatten()
            .collect(),
        last_height: account.map(|a| a.last_height),
        declaration,
        channel_claimed: account.map(|a| a.channel_claimed).filter(|c| *c != 0),
    }))
}

/// History cursors: `height.index` of the last entry of the previous page.
fn parse_cursor(text: &str) -> Result<TxLocation, ApiError> {
    let bad = || ApiError::bad_request(format!("{text:?} is not a cursor from a previous page"));
    let (h, i) = text.split_once('.').ok_or_else(bad)?;
    Ok(TxLocation { height: h.parse().map_err(|_| bad())?, index: i.parse().map_err(|_| bad())? })
}

async fn history(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: QueryMap,
) -> ApiResult<api::HistoryPage> {
    let address = parse_address(&path(p)?)?;
    let q = query(q)?;
    let limit = match q.get("limit") {
        None => HISTORY_LIMIT_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=HISTORY_LIMIT_MAX).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit must be 1 to {HISTORY_LIMIT_MAX}"))),
        },
    };
    let before = q.get("cursor").map(|c| parse_cursor(c)).transpose()?;
    let head = *e.head.borrow();
    let page = e.reader.history(&address, before, limit)?;
    // A full page continues after its last entry.
    let next = (page.len() == limit).then(|| {
        let last = page[page.len() - 1].location;
        format!("{}.{}", last.height, last.index)
    });
    // Rows of a ledger stored a moment before it is published are left out.
    let entries = page
        .iter()
        .filter(|h| h.location.height <= head)
        .map(|h| api::TxRef { id: h.id, height: h.location.height, index: h.location.index })
        .collect();
    Ok(Json(api::HistoryPage { address, entries, next_cursor: next }))
}

/// Evidence cursors: `height.round.validator.kind` of the last proof of the previous page.
fn parse_evidence_cursor(text: &str) -> Result<storage::EvidenceKey, ApiError> {
    let bad = || ApiError::bad_request(format!("{text:?} is not a cursor from a previous page"));
    let mut parts = text.split('.');
    let mut next = || parts.next().ok_or_else(bad);
    let key = storage::EvidenceKey {
        height: next()?.parse().map_err(|_| bad())?,
        round: next()?.parse().map_err(|_| bad())?,
        validator: next()?.parse().map_err(|_| bad())?,
        kind: next()?.parse().map_err(|_| bad())?,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(key)
}

async fn evidence(AxState(e): AxState<Shared>, q: QueryMap) -> ApiResult<api::EvidencePage> {
    let q = query(q)?;
    let max = limits::EVIDENCE_LIMIT_MAX;
    let limit = match q.get("limit") {
        None => max,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit must be 1 to {max}"))),
        },
    };
    let after = q.get("cursor").map(|c| parse_evidence_cursor(c)).transpose()?;
    let page = e.reader.evidence(after, limit)?;
    let next = (page.len() == limit).then(|| {
        let k = page[page.len() - 1].key;
        format!("{}.{}.{}.{}", k.height, k.round, k.validator, k.kind)
    });
    let items = page
        .iter()
        .map(|p| {
            let messages = engine::codec::decode_exact::<consensus::Equivocation>(&p.proof)
                .map(|proof| proof.messages().map(|m| hex::encode(engine::Encode::to_bytes(&m))));
            let [first, second] = messages.unwrap_or_default();
            api::EvidenceItem {
                height: p.key.height,
                round: p.key.round,
                validator: p.key.validator,
                public_key: p.public_key,
                kind: api::EvidenceKind::from_name(consensus::Equivocation::kind_name(p.key.kind)),
                proof: hex::encode(&p.proof),
                first,
                second,
            }
        })
        .collect();
    Ok(Json(api::EvidencePage { items, next_cursor: next }))
}

async fn tx_proof_of(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<api::Proof> {
    let id = parse_id(&path(p)?)?;
    let at = committed_at(&e, &id)?.ok_or_else(|| ApiError::not_found(format!("{id} is not committed")))?;
    let l = stored_ledger(&e, at.height)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", at.height)))?;
    let branch = tx_proof(&l.ids, at.index as usize)
        .ok_or_else(|| ApiError::internal("the index points past its block"))?;
    let proof = TxInclusionProof { header: l.header, certificate: l.certificate.clone(), tx_id: id, branch };
    Ok(Json(api::Proof {
        kind: api::ProofKind::Transaction,
        height: at.height,
        proof: hex::encode(proof.to_bytes()),
    }))
}

async fn account_proof(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<api::Proof> {
    let address = parse_address(&path(p)?)?;
    let latest = e.latest();
    let (account, branch) = latest
        .state
        .prove_account(&address)
        .ok_or_else(|| ApiError::not_found(format!("{address} has no state to prove")))?;
    let header = *latest.state.head();
    let height = header.height;
    let proof = AccountStateProof { header, certificate: latest.certificate.clone(), account, branch };
    Ok(Json(api::Proof { kind: api::ProofKind::Account, height, proof: hex::encode(proof.to_bytes()) }))
}

/// The validator set certifying `height` (≥ 1): the set whose hash the header at `height − 1`
/// commits to.
fn set_certifying(e: &Explorer, height: u64) -> Result<(Hash, ValidatorSet), ApiError> {
    let (previous, _) = e
        .reader
        .header(height - 1)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", height - 1)))?;
    let set = super::headers::set_certifying(e, height)
        .filter(|s| s.hash() == previous.validator_set_hash)
        .or_else(|| e.validator_set(&previous.validator_set_hash))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "the validator set {} (certifying height {height}) is not retained by this explorer",
                previous.validator_set_hash
            ))
        })?;
    Ok((previous.validator_set_hash, set))
}

async fn validators(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<api::Validators> {
    let height = parse_height(&path(p)?)?;
    if height == 0 || height > *e.head.borrow() + 1 {
        return Err(ApiError::not_found(format!("no validator set certifies a ledger at height {height}")));
    }
    let (hash, set) = set_certifying(&e, height)?;
    Ok(Json(api::Validators { height, hash, validators: hex::encode(set.to_bytes()) }))
}

async fn validators_now(AxState(e): AxState<Shared>) -> ApiResult<api::ValidatorsNow> {
    let latest = e.latest();
    let height = latest.state.head().height;
    let next = latest.state.validators().clone();
    // Nothing certified genesis: its set is the one in force until the first ledger.
    let in_force = if height == 0 { next.clone() } else { set_certifying(&e, height)?.1 };
    let weight = |set: &ValidatorSet, key: &engine::PublicKey| {
        set.validators().iter().find(|v| v.public_key == *key).map_or(0, |v| v.weight)
    };
    let mut keys: Vec<engine::PublicKey> =
        in_force.validators().iter().chain(next.validators()).map(|v| v.public_key).collect();
    keys.sort_unstable();
    keys.dedup();
    let changes = keys
        .into_iter()
        .map(|public_key| api::ValidatorChange {
            public_key,
            weight_before: weight(&in_force, &public_key),
            weight_after: weight(&next, &public_key),
        })
        .filter(|c| c.weight_before != c.weight_after)
        .collect();
    let list = |set: &ValidatorSet| api::ValidatorList {
        hash: set.hash(),
        validators: set
            .validators()
            .iter()
            .map(|v| api::Validator { public_key: v.public_key, weight: v.weight })
            .collect(),
        total_weight: set.validators().iter().map(|v| v.weight).sum(),
    };
    Ok(Json(api::ValidatorsNow { height, in_force: list(&in_force), next: list(&next), changes }))
}

async fn metrics(AxState(e): AxState<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], e.host.metrics_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 503 says when to ask again; other errors do not.
    #[test]
    fn unavailable_answers_carry_retry_after() {
        let busy = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, "busy").into_response();
        let retry = busy.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok());
        assert_eq!(retry, Some(limits::API_RETRY_AFTER_SECS.to_string().as_str()));
        assert!(ApiError::not_found("x").into_response().headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let at = parse_cursor("12.7").unwrap();
        assert_eq!((at.height, at.index), (12, 7));
        for bad in ["", "12", "a.b", "1.2.3", "-1.0", "99999999999999999999.0"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
