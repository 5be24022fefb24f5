//! What a light client follows (docs/API.md, "Light clients"): certified headers by height and
//! by pages, and the chain of validator-set changes from genesis — each change is a header
//! certified by the set before it whose `validator_set_hash` names the set after it, served
//! with that set, so a client holding only the genesis set can verify every set in turn.
//!
//! The changes are known from the store: a header whose `validator_set_hash` differs from its
//! predecessor's names a set produced by its block's `ValidatorUpdate` declarations (the only
//! way a set changes, PROTOCOL.md §6.4), applied to the set before. The history before this
//! explorer started is scanned once in the background ([`scan_history`]); later changes are
//! recorded as ledgers are published.

use std::collections::BTreeMap;

use api::{ErrorCode, routes};
use axum::{
    Json,
    extract::{Path, State as AxState},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use engine::{
    Encode, Hash,
    declaration::Declaration,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
};

use super::{
    Explorer,
    api::{ApiError, QueryMap, Shared, parse_height, path, query},
};

/// The validator-set changes known: by the height of the header naming the new set.
#[derive(Debug)]
pub(crate) struct SetChain {
    changes: BTreeMap<u64, ValidatorSet>,
    /// The hash the latest published header names.
    named: Hash,
    /// Heights up to which the store's history was scanned (`None`: not yet).
    scanned: Option<u64>,
    /// Why the scan stopped, if it failed.
    failed: Option<String>,
}

impl SetChain {
    /// The chain of an explorer whose latest ledger names `named`; its history unknown yet.
    pub(crate) fn new(named: Hash) -> Self {
        Self { changes: BTreeMap::new(), named, scanned: None, failed: None }
    }

    /// The header at `height` was published and names `set`: a change if it is not the set
    /// named before.
    pub(crate) fn record(&mut self, height: u64, set: &ValidatorSet) {
        let hash = set.hash();
        if hash != self.named {
            self.changes.entry(height).or_insert_with(|| set.clone());
            self.named = hash;
        }
    }
}

/// Scans the store's headers `1..=up_to` (the head when the explorer started) for set changes,
/// from the genesis set; the result is merged with what was recorded since.
pub(crate) fn scan_history(e: &Explorer, up_to: u64) {
    let outcome = (|| -> Result<BTreeMap<u64, ValidatorSet>, String> {
        let mut found = BTreeMap::new();
        let (mut set, mut named) = (e.genesis_validators.clone(), e.genesis_validators.hash());
        for height in 1..=up_to {
            let (h, _) = e
                .reader
                .header(height)
                .map_err(|err| err.to_string())?
                .ok_or(format!("no header {height}"))?;
            if h.validator_set_hash == named {
                continue;
            }
            let block = e.reader.block(height).map_err(|err| err.to_string())?.unwrap_or_default();
            for d in block.iter().flat_map(|t| &t.tx.declarations) {
                if let Declaration::ValidatorUpdate(u) = d {
                    set = set
                        .with_update(u.public_key, u.weight)
                        .map_err(|err| format!("ledger {height}: {err}"))?;
                }
            }
            if set.hash() != h.validator_set_hash {
                return Err(format!(
                    "ledger {height}'s validator updates do not give the set its header names"
                ));
            }
            named = set.hash();
            found.insert(height, set.clone());
        }
        Ok(found)
    })();
    if let Ok(mut chain) = e.set_chain.lock() {
        match outcome {
            Ok(found) => {
                for (height, set) in found {
                    chain.changes.entry(height).or_insert(set);
                }
                chain.scanned = Some(up_to);
            }
            Err(why) => {
                eprintln!("caasiope: the explorer cannot list the validator-set changes: {why}");
                chain.failed = Some(why);
            }
        }
    }
}

/// The JSON of a certified header.
pub(crate) fn certified(chain_id: &str, h: &LedgerHeader, c: &Certificate) -> api::CertifiedHeader {
    let mut bytes = h.to_bytes();
    c.encode(&mut bytes);
    api::CertifiedHeader {
        height: h.height,
        hash: h.hash(chain_id),
        version: h.version,
        timestamp_ms: h.timestamp_ms,
        previous_hash: h.previous,
        tx_root: h.tx_root,
        state_root: h.state_root,
        validator_set_hash: h.validator_set_hash,
        certificate: api::SignedCertificate {
            round: c.round,
            signatures: c
                .signatures
                .iter()
                .map(|(i, s)| api::CertificateSignature { validator: *i, signature: hex::encode(s.0) })
                .collect(),
        },
        bytes: hex::encode(bytes),
    }
}

fn stored(e: &Explorer, height: u64) -> Result<(LedgerHeader, Certificate), ApiError> {
    if height > *e.head.borrow() {
        return Err(ApiError::not_found(format!("no ledger at height {height}")));
    }
    e.reader.header(height)?.ok_or_else(|| ApiError::not_found(format!("no ledger at height {height}")))
}

/// `GET /v1/headers/{height}`: JSON, or `LedgerHeader ‖ Certificate` in the engine codec when
/// the client accepts `application/octet-stream` (and not JSON).
pub(super) async fn header_at(
    AxState(e): AxState<Shared>,
    headers: HeaderMap,
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let height = parse_height(&path(p)?)?;
    let (h, c) = stored(&e, height)?;
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or_default();
    if accept.contains("application/octet-stream") && !accept.contains("json") {
        let mut bytes = h.to_bytes();
        c.encode(&mut bytes);
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
    }
    Ok(Json(certified(&e.chain_id, &h, &c)).into_response())
}

/// `limit` of a page query, 1 to [`routes::HEADERS_LIMIT_MAX`].
fn limit(q: &std::collections::HashMap<String, String>) -> Result<usize, ApiError> {
    let max = routes::HEADERS_LIMIT_MAX;
    match q.get("limit") {
        None => Ok(routes::HEADERS_LIMIT_DEFAULT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!("limit must be 1 to {max}"))),
        },
    }
}

/// `GET /v1/headers?from=H&limit=N`: consecutive certified headers from `H` (default 0).
pub(super) async fn headers(
    AxState(e): AxState<Shared>,
    q: QueryMap,
) -> Result<Json<api::HeaderPage>, ApiError> {
    let q = query(q)?;
    let from = q.get("from").map(|h| parse_height(h)).transpose()?.unwrap_or(0);
    let limit = limit(&q)?;
    let head = *e.head.borrow();
    if from > head {
        return Err(ApiError::not_found(format!("no ledger at height {from} (the head is {head})")));
    }
    let reader = e.clone();
    let page = tokio::task::spawn_blocking(move || -> Result<api::HeaderPage, ApiError> {
        let last = head.min(from.saturating_add(limit as u64 - 1));
        let headers = (from..=last)
            .map(|height| stored(&reader, height).map(|(h, c)| certified(&reader.chain_id, &h, &c)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(api::HeaderPage { headers, next: (last < head).then_some(last + 1) })
    })
    .await
    .map_err(|_| ApiError::unavailable())??;
    Ok(Json(page))
}

/// `GET /v1/validator-sets?from=H&limit=N`: the changes named by headers at `H` (default 0)
/// and above, oldest first; 503 while the history is still being scanned.
pub(super) async fn validator_sets(
    AxState(e): AxState<Shared>,
    q: QueryMap,
) -> Result<Json<api::SetChanges>, ApiError> {
    let q = query(q)?;
    let from = q.get("from").map(|h| parse_height(h)).transpose()?.unwrap_or(0);
    let limit = limit(&q)?;
    let page: Vec<(u64, ValidatorSet)> = {
        let chain = e.set_chain.lock().map_err(|_| ApiError::internal("set chain lock"))?;
        if let Some(why) = &chain.failed {
            return Err(ApiError::internal(format!("the validator-set changes cannot be listed: {why}")));
        }
        if chain.scanned.is_none() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Busy,
                "the explorer is still listing the validator-set changes since genesis",
            ));
        }
        chain.changes.range(from..).take(limit + 1).map(|(h, s)| (*h, s.clone())).collect()
    };
    let next = page.get(limit).map(|(h, _)| *h);
    let reader = e.clone();
    let changes = tokio::task::spawn_blocking(move || -> Result<Vec<api::SetChange>, ApiError> {
        page.into_iter()
            .take(limit)
            .map(|(height, set)| {
                let (h, c) = stored(&reader, height)?;
                Ok(api::SetChange {
                    header: certified(&reader.chain_id, &h, &c),
                    validators: hex::encode(set.to_bytes()),
                })
            })
            .collect()
    })
    .await
    .map_err(|_| ApiError::unavailable())??;
    Ok(Json(api::SetChanges { changes, next }))
}

/// The set certifying ledger `height` from the known changes (genesis's before any), if the
/// history was scanned.
pub(crate) fn set_certifying(e: &Explorer, height: u64) -> Option<ValidatorSet> {
    let chain = e.set_chain.lock().ok()?;
    chain.scanned?;
    Some(
        chain
            .changes
            .range(..height)
            .next_back()
            .map_or_else(|| e.genesis_validators.clone(), |(_, s)| s.clone()),
    )
}
