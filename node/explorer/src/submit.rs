//! `POST /v1/transactions` (docs/API.md): a submission's bytes (raw or `{"hex"}`) read within
//! their bound, decoded once, handed to the intake, and answered with the intake's verdict —
//! 202 once admitted, 400 with the rule's kind, 503 busy — and remembered for
//! `GET /v1/transactions/{id}`.

use api::ErrorCode;
use axum::{
    Json,
    body::Bytes,
    extract::{State as AxState, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
};
use engine::{
    limits::TX_BYTES_MAX,
    tx::{SignedTransaction, TxId},
    validate::TxError,
};
use pipeline::{IntakeSubmitter, Origin, Reply, SubmitError, Verdict};

use super::{
    Explorer, Submitted,
    api::{ApiError, Shared},
};

pub(super) async fn submit(
    AxState(e): AxState<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<api::Accepted>), ApiError> {
    let bytes = submitted_bytes(&headers, body).inspect_err(|err| {
        if err.code == ErrorCode::Timeout {
            e.host.body_deadline_missed();
        }
    })?;
    let submitter = e.submitter().ok_or_else(ApiError::unavailable)?;
    if let Some(why) = submitter.mempool().busy() {
        return Err(busy(&e, why));
    }
    // Decoded here once (for its id and a clear error); the intake checks the stateless rules
    // and the signatures on its own pool, then admits it against the post-state — the one
    // state check on its way in — and answers with its verdict.
    let (stx, id) = SignedTransaction::decode_with_id(&bytes, &e.chain_id).map_err(|err| {
        e.host.undecodable();
        ApiError::rejected(&TxError::Decode(err))
    })?;
    let expiration_ms = stx.tx.expiration_ms;
    match admission(&e, &submitter, stx, id).await? {
        Verdict::Admitted => {}
        // Sent again while pending: the first copy's fate is the transaction's.
        Verdict::Refused(err) if submitter.mempool().pending_again(&id, &err) => {}
        Verdict::Refused(err) => {
            if let Ok(mut s) = e.submitted.lock() {
                // A transaction already committed stays "committed" whatever a resubmission says.
                let rejected = Some((err.kind(), err.to_string()));
                s.insert(id, Submitted { expiration_ms, rejected });
            }
            return Err(ApiError::rejected(&err));
        }
        Verdict::Dropped => return Err(busy(&e, "the pool is full, retry later".into())),
    }
    if let Ok(mut s) = e.submitted.lock() {
        s.insert(id, Submitted { expiration_ms, rejected: None });
    }
    Ok((StatusCode::ACCEPTED, Json(api::Accepted { id, status: api::AcceptedStatus::Pending })))
}

/// A 503 `busy` answer, counted.
fn busy(e: &Explorer, why: String) -> ApiError {
    e.host.refused_busy();
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, why)
}

/// Hands a decoded transaction to the intake and waits (at most
/// [`limits::SUBMIT_VERDICT_TIMEOUT`]) for admission's verdict on it.
async fn admission(
    e: &Explorer,
    submitter: &IntakeSubmitter,
    stx: SignedTransaction,
    id: TxId,
) -> Result<Verdict, ApiError> {
    let (reply, verdict) = tokio::sync::oneshot::channel();
    let reply: Reply = Box::new(move |verdicts| {
        let _ = reply.send(verdicts);
    });
    match submitter.try_submit_decoded_with(Origin::Client, vec![(stx, id)], reply) {
        Ok(()) => {}
        Err(SubmitError::Full) => return Err(busy(e, "the verification queue is full, retry later".into())),
        Err(SubmitError::Closed) => return Err(ApiError::unavailable()),
    }
    let verdicts = match tokio::time::timeout(limits::SUBMIT_VERDICT_TIMEOUT, verdict).await {
        Ok(Ok(verdicts)) => verdicts,
        Ok(Err(_)) => return Err(ApiError::unavailable()),
        Err(_) => return Err(busy(e, "no verdict yet: the node is far behind, retry later".into())),
    };
    Ok(verdicts.into_iter().find(|(v, _)| *v == id).map_or(Verdict::Dropped, |(_, v)| v))
}

/// The transaction's bytes from a submission's body: raw, or `{"hex": …}` as JSON.
fn submitted_bytes(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Vec<u8>, ApiError> {
    let body = body.map_err(|r| {
        if super::listener::BodyDeadlineMissed::caused(&r) {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::Timeout, r.body_text())
        } else {
            ApiError::new(r.status(), ErrorCode::TooLarge, r.body_text())
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let bytes: Vec<u8> = if is_json {
        let parsed: api::SubmitHex = serde_json::from_slice(&body)
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
            ErrorCode::TooLarge,
            format!("a transaction is at most {TX_BYTES_MAX} bytes, not {}", bytes.len()),
        ));
    }
    Ok(bytes)
}
