//! The `/v1` routes (docs/API.md). Every failure is a JSON error with a 4xx status (503 when
//! busy or stopping, 500 only for a store that cannot be read); untrusted path, query and body
//! input is parsed here with bounded sizes, never with a panic.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State as AxState, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use engine::{
    Address, Encode,
    ledger::{Certificate, LedgerHeader},
    limits::TX_BYTES_MAX,
    merkle::tx_proof,
    proof::{AccountStateProof, TxInclusionProof},
    tx::{SignedTransaction, TxId},
    validate::verify_bytes,
};
use pipeline::Origin;
use serde_json::{Value, json};
use storage::{StoreError, TxLocation};

use super::{Explorer, Submitted};

use limits::{HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX, STREAM_BUFFER_LEDGERS, STREAMS_MAX};

type Shared = Arc<Explorer>;

/// A JSON error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The router of the API.
pub(crate) fn router(explorer: Shared) -> Router {
    let streams = Arc::new(AtomicUsize::new(0));
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/ledgers/latest", get(ledger_latest))
        .route("/v1/ledgers/{height}", get(ledger_at))
        .route("/v1/transactions", axum::routing::post(submit))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/accounts/{address}/history", get(history))
        .route("/v1/proofs/transactions/{id}", get(tx_proof_of))
        .route("/v1/proofs/accounts/{address}", get(account_proof))
        .route("/v1/validators/{height}", get(validators))
        .route("/v1/evidence", get(evidence))
        .route("/v1/openapi.json", get(|| async { Json(super::openapi::document()) }))
        .route("/v1/stream", get(move |s, q| stream(s, q, streams.clone())))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json") })
        .layer(DefaultBodyLimit::max(2 * TX_BYTES_MAX + 1024))
        .with_state(explorer)
}

/// Serves the API on `listener` until the runtime stops.
pub(crate) async fn serve(listener: tokio::net::TcpListener, explorer: Shared) {
    let listener =
        super::listener::Limited::new(listener, limits::API_CONNECTIONS_MAX, limits::API_IDLE_TIMEOUT);
    if let Err(e) = axum::serve(listener, router(explorer)).await {
        eprintln!("caasiope: the explorer API stopped: {e}");
    }
}

fn parse_height(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("{text:?} is not a ledger height")))
}

fn parse_id(text: &str) -> Result<TxId, ApiError> {
    TxId::from_hex(text)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a transaction id (64 hex characters)")))
}

fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse().map_err(|e| ApiError::bad_request(format!("{text:?} is not an address: {e}")))
}

fn path(p: Result<Path<String>, axum::extract::rejection::PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| ApiError::bad_request(e.body_text()))
}

type QueryMap = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn query(q: QueryMap) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m).map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The JSON of a ledger.
fn ledger_json(chain_id: &str, header: &LedgerHeader, certificate: &Certificate, ids: &[TxId]) -> Value {
    json!({
        "height": header.height,
        "hash": header.hash(chain_id),
        "timestamp_ms": header.timestamp_ms,
        "previous_hash": header.previous,
        "tx_root": header.tx_root,
        "state_root": header.state_root,
        "validator_set_hash": header.validator_set_hash,
        "certificate": {
            "round": certificate.round,
            "signers": certificate.signatures.iter().map(|(i, _)| *i).collect::<Vec<u8>>(),
        },
        "tx_count": ids.len(),
        "transactions": ids,
    })
}

/// A stored ledger: header, certificate, block and the block's transaction ids.
pub(super) struct StoredLedger {
    pub(super) height: u64,
    header: LedgerHeader,
    certificate: Certificate,
    txs: Vec<SignedTransaction>,
    ids: Vec<TxId>,
}

/// Ledger `height` if committed and published, from the explorer's cache of recent ledgers or
/// the store (a block of 10,000 transactions is ~10 ms to decode and hash: the cache serves the
/// repeated reads of recent ledgers — every live stream reads each new one).
fn stored_ledger(e: &Explorer, height: u64) -> Result<Option<Arc<StoredLedger>>, ApiError> {
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
    if let Ok(mut recent) = e.recent.lock() {
        if recent.len() >= limits::API_RECENT_LEDGERS {
            recent.pop_front();
        }
        recent.push_back(ledger.clone());
    }
    Ok(Some(ledger))
}

async fn status(AxState(e): AxState<Shared>) -> ApiResult {
    let latest = e.latest();
    let head = latest.state.head();
    let issuers: serde_json::Map<String, Value> =
        e.params.issuers.iter().map(|(c, a)| (c.as_str().to_owned(), json!(a))).collect();
    let validators: Vec<Value> = latest
        .state
        .validators()
        .validators()
        .iter()
        .map(|v| json!({ "public_key": v.public_key.to_hex(), "weight": v.weight }))
        .collect();
    Ok(Json(json!({
        "chain_id": e.chain_id,
        "height": head.height,
        "ledger_hash": latest.state.head_hash(),
        "timestamp_ms": head.timestamp_ms,
        "min_fee": e.params.min_fee,
        "max_ttl_ms": e.params.max_ttl_ms,
        "fee_account": e.params.fee_account,
        "governance": e.params.governance,
        "issuers": issuers,
        "validators": validators,
    })))
}

async fn ledger_latest(AxState(e): AxState<Shared>) -> ApiResult {
    let height = *e.head.borrow();
    ledger_json_at(&e, height)
}

async fn ledger_at(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let height = parse_height(&path(p)?)?;
    ledger_json_at(&e, height)
}

fn ledger_json_at(e: &Explorer, height: u64) -> ApiResult {
    let l = stored_ledger(e, height)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {height}")))?;
    Ok(Json(ledger_json(&e.chain_id, &l.header, &l.certificate, &l.ids)))
}

/// Where `id` was committed, if it was (and the API may serve that ledger).
fn committed_at(e: &Explorer, id: &TxId) -> Result<Option<TxLocation>, ApiError> {
    Ok(e.reader.tx_location(id)?.filter(|at| at.height <= *e.head.borrow()))
}

async fn transaction(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let id = parse_id(&path(p)?)?;
    if let Some(at) = committed_at(&e, &id)? {
        let l = stored_ledger(&e, at.height)?
            .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", at.height)))?;
        let tx = l.txs.get(at.index as usize).ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the index points past its block")
        })?;
        return Ok(Json(json!({
            "id": id,
            "status": "committed",
            "height": at.height,
            "index": at.index,
            "expiration_ms": tx.tx.expiration_ms,
            "transaction": tx,
            "bytes": hex::encode(tx.to_bytes()),
        })));
    }
    let entry = e.submitted.lock().ok().and_then(|s| s.by_id.get(&id).cloned());
    let Some(entry) = entry else {
        return Err(ApiError::not_found(format!("transaction {id} is neither committed nor submitted here")));
    };
    let head_ms = e.latest().state.head().timestamp_ms;
    let (status, reason) = match entry.rejected {
        Some(reason) => ("rejected", Some(reason)),
        None if entry.expiration_ms <= head_ms => ("expired", None),
        None => ("pending", None),
    };
    let mut out = json!({ "id": id, "status": status, "expiration_ms": entry.expiration_ms });
    if let Some(reason) = reason {
        out["reason"] = json!(reason);
    }
    Ok(Json(out))
}

async fn submit(
    AxState(e): AxState<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "too_large", r.body_text()))?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let bytes: Vec<u8> = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HexBody {
            hex: String,
        }
        let parsed: HexBody = serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request(format!("expected {{\"hex\": \"…\"}}: {err}")))?;
        hex::decode(parsed.hex.trim()).map_err(|err| ApiError::bad_request(format!("hex: {err}")))?
    } else {
        body.to_vec()
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty body: send the signed transaction's bytes"));
    }
    if bytes.len() > TX_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a transaction is at most {TX_BYTES_MAX} bytes, not {}", bytes.len()),
        ));
    }
    if let Some(why) = e.metrics.busy() {
        e.metrics.busy_txs.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why));
    }
    // Signatures cost tens of microseconds each: off the async workers.
    let latest = e.latest();
    let (params, backend) = (e.params.clone(), e.backend);
    let checked = tokio::task::spawn_blocking(move || {
        let vtx = verify_bytes(&bytes, &params, backend).map_err(|err| (None, err))?;
        let at = engine::clock::now_ms().max(latest.state.head().timestamp_ms.saturating_add(1));
        latest.state.check_tx(&vtx, at).map_err(|err| (Some(vtx.id), err))?;
        Ok::<_, (Option<TxId>, engine::validate::TxError)>(vtx)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the process is stopping"))?;
    let vtx = match checked {
        Ok(v) => v,
        Err((id, err)) => {
            if let (Some(id), Ok(mut s)) = (id, e.submitted.lock()) {
                // A transaction already committed stays "committed" whatever a resubmission says.
                s.insert(id, Submitted { expiration_ms: 0, rejected: Some(err.to_string()) });
            }
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "rejected", err.to_string()));
        }
    };
    let id = vtx.id;
    if let Ok(mut s) = e.submitted.lock() {
        s.insert(id, Submitted { expiration_ms: vtx.tx.tx.expiration_ms, rejected: None });
    }
    // Verified here: the intake only admits it against the pool's post-state.
    let submitted = e.submitter().is_some_and(|s| s.submit_verified(Origin::Client, vec![vtx]).is_ok());
    if !submitted {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the process is stopping"));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "status": "pending" }))))
}

/// The JSON of `GET /v1/accounts/{address}`, serialized straight from the state (the API's
/// most frequent read).
#[derive(serde::Serialize)]
struct AccountJson<'a> {
    address: &'a str,
    height: u64,
    balances: Vec<BalanceJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_height: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    declaration: Option<&'a engine::Declaration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_claimed: Option<i64>,
}

#[derive(serde::Serialize)]
struct BalanceJson<'a> {
    currency: &'a str,
    amount: i64,
}

async fn account(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    // Address32 text is either case: answered in lower case, its canonical form.
    let text = path(p)?.to_ascii_lowercase();
    let address = parse_address(&text)?;
    let latest = e.latest();
    let account = latest.state.account(&address);
    let out = AccountJson {
        address: &text,
        height: latest.state.head().height,
        balances: account
            .map(|a| {
                a.balances().iter().map(|(c, amount)| BalanceJson { currency: c.as_str(), amount: *amount })
            })
            .into_iter()
            .flatten()
            .collect(),
        last_height: account.map(|a| a.last_height),
        declaration: account.and_then(|a| a.declaration.as_deref()),
        channel_claimed: account.map(|a| a.channel_claimed).filter(|c| *c != 0),
    };
    Ok(Json(out).into_response())
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
) -> ApiResult {
    let address = parse_address(&path(p)?)?;
    let q = query(q)?;
    let limit = match q.get("limit") {
        None => HISTORY_PAGE_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=HISTORY_PAGE_MAX).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit must be 1 to {HISTORY_PAGE_MAX}"))),
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
    let entries: Vec<Value> = page
        .iter()
        .filter(|h| h.location.height <= head)
        .map(|h| json!({ "id": h.id, "height": h.location.height, "index": h.location.index }))
        .collect();
    let mut out = json!({ "address": address, "entries": entries });
    if let Some(n) = next {
        out["next_cursor"] = json!(n);
    }
    Ok(Json(out))
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

async fn evidence(AxState(e): AxState<Shared>, q: QueryMap) -> ApiResult {
    let q = query(q)?;
    let max = storage::EVIDENCE_PAGE_MAX;
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
    let items: Vec<Value> = page
        .iter()
        .map(|p| {
            let messages = engine::codec::decode_exact::<consensus::Equivocation>(&p.proof)
                .map(|proof| proof.messages().map(|m| hex::encode(engine::Encode::to_bytes(&m))));
            let [first, second] = messages.unwrap_or_default();
            json!({
                "height": p.key.height,
                "round": p.key.round,
                "validator": p.key.validator,
                "public_key": p.public_key.to_hex(),
                "kind": consensus::Equivocation::kind_name(p.key.kind),
                "proof": hex::encode(&p.proof),
                "first": first,
                "second": second,
            })
        })
        .collect();
    let mut out = json!({ "items": items });
    if let Some(n) = next {
        out["next_cursor"] = json!(n);
    }
    Ok(Json(out))
}

async fn tx_proof_of(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let id = parse_id(&path(p)?)?;
    let at = committed_at(&e, &id)?.ok_or_else(|| ApiError::not_found(format!("{id} is not committed")))?;
    let l = stored_ledger(&e, at.height)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", at.height)))?;
    let branch = tx_proof(&l.ids, at.index as usize).ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the index points past its block")
    })?;
    let proof = TxInclusionProof { header: l.header, certificate: l.certificate.clone(), tx_id: id, branch };
    Ok(Json(json!({ "kind": "transaction", "height": at.height, "proof": hex::encode(proof.to_bytes()) })))
}

async fn account_proof(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let address = parse_address(&path(p)?)?;
    let latest = e.latest();
    let (account, branch) = latest
        .state
        .prove_account(&address)
        .ok_or_else(|| ApiError::not_found(format!("{address} has no state to prove")))?;
    let header = *latest.state.head();
    let height = header.height;
    let proof = AccountStateProof { header, certificate: latest.certificate.clone(), account, branch };
    Ok(Json(json!({ "kind": "account", "height": height, "proof": hex::encode(proof.to_bytes()) })))
}

async fn validators(
    AxState(e): AxState<Shared>,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let height = parse_height(&path(p)?)?;
    if height == 0 || height > *e.head.borrow() + 1 {
        return Err(ApiError::not_found(format!("no validator set certifies a ledger at height {height}")));
    }
    let (previous, _) = e
        .reader
        .header(height - 1)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", height - 1)))?;
    let set = e.validator_set(&previous.validator_set_hash).ok_or_else(|| {
        ApiError::not_found(format!(
            "the validator set {} (certifying height {height}) is not retained by this explorer",
            previous.validator_set_hash
        ))
    })?;
    Ok(Json(json!({
        "height": height,
        "hash": previous.validator_set_hash,
        "validators": hex::encode(set.to_bytes()),
    })))
}

async fn metrics(AxState(e): AxState<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], e.metrics.render(e.role, e.transport))
}

/// Decrements the live-stream count when a stream ends.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn stream(
    AxState(e): AxState<Shared>,
    q: QueryMap,
    streams: Arc<AtomicUsize>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let q = query(q)?;
    let head = *e.head.borrow();
    let from = q.get("from").map(|h| parse_height(h)).transpose()?.unwrap_or(head + 1);
    let address = q.get("address").map(|a| parse_address(a)).transpose()?;
    if streams.fetch_add(1, Ordering::Relaxed) >= STREAMS_MAX {
        streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many live streams"));
    }
    let slot = StreamSlot(streams);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(STREAM_BUFFER_LEDGERS);
    let mut heads = e.head.subscribe();
    tokio::spawn(async move {
        let _slot = slot;
        let mut next = from.max(1);
        loop {
            let head = *heads.borrow_and_update();
            while next <= head {
                let events = {
                    let e = e.clone();
                    let address = address;
                    tokio::task::spawn_blocking(move || ledger_events(&e, next, address.as_ref())).await
                };
                let Ok(Ok(events)) = events else { return };
                for ev in events {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                next += 1;
            }
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

use futures_util::StreamExt as _;

/// The events of ledger `height`: the ledger, then its transactions (touching `address`).
fn ledger_events(e: &Explorer, height: u64, address: Option<&Address>) -> Result<Vec<Event>, ApiError> {
    let l = stored_ledger(e, height)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {height}")))?;
    let id = height.to_string();
    let mut out = Vec::with_capacity(1 + l.txs.len());
    out.push(
        Event::default()
            .event("ledger")
            .id(id.clone())
            .data(ledger_json(&e.chain_id, &l.header, &l.certificate, &l.ids).to_string()),
    );
    for (index, (tx, tx_id)) in l.txs.iter().zip(&l.ids).enumerate() {
        let touches = |a: &Address| {
            tx.tx.inputs.iter().chain(&tx.tx.outputs).any(|l| l.address == *a) || tx.tx.fee.payer == *a
        };
        if address.is_none_or(touches) {
            let data = json!({ "id": tx_id, "height": height, "index": index });
            out.push(Event::default().event("transaction").id(id.clone()).data(data.to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let at = parse_cursor("12.7").unwrap();
        assert_eq!((at.height, at.index), (12, 7));
        for bad in ["", "12", "a.b", "1.2.3", "-1.0", "99999999999999999999.0"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
