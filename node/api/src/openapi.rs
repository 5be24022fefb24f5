//! The OpenAPI document, generated from the types of this crate and the operations below: each
//! operation is a marker function whose attribute describes one route (its parameters and every
//! answer, errors included); nothing here is hand-written JSON.

// The marker functions exist for their `#[utoipa::path]` attribute only.
#![allow(dead_code)]

use utoipa::OpenApi;

use crate::{
    Accepted, Account, CertifiedHeader, ErrorBody, EvidencePage, HeaderPage, HistoryPage, Ledger, Proof,
    SetChanges, Status, StreamEnd, SubmitHex, TxRef, TxStatus, Validators, ValidatorsNow,
    schema::{AddressText, HashHex, Height, TxBytes},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Caasiope explorer API",
        version = "1",
        description = "Amounts are raw integer units (10^-8). Errors are {error: {code, kind, message}} \
                       (ErrorBody). docs/API.md tells the same in prose."
    ),
    paths(
        status, ledger_latest, ledger, submit, transaction, account, history, proof_transaction,
        proof_account, validators_now, validators, headers, header, validator_sets, evidence, stream, openapi_json, healthz,
        metrics
    ),
    // The stream's events are not answers of their own: named here so the document defines them.
    components(schemas(Ledger, TxRef, ErrorBody, StreamEnd, Height)),
    modifiers(&EdgeAnswers)
)]
struct Doc;

/// The answers any route may give before its own handler runs (docs/API.md), added to every
/// operation: 414 for a request target over 8 KiB and 431 for too many or too large header
/// fields (both `too_large`), 503 while the process stops (with `Retry-After`).
struct EdgeAnswers;

impl utoipa::Modify for EdgeAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, ResponseBuilder, content::Content};
        const ANSWERS: [(&str, &str); 3] = [
            ("414", "Request target over 8 KiB (too_large)"),
            ("431", "Too many or too large header fields (too_large)"),
            ("503", "The process is stopping (unavailable), with Retry-After"),
        ];
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in ANSWERS {
                    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/json",
                                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                            )
                            .build()
                            .into()
                    });
                }
            }
        }
    }
}

/// The OpenAPI document of the `/v1` API (served at [`crate::routes::OPENAPI`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// Chain parameters and the latest ledger.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, description = "Status", body = Status)))]
fn status() {}

/// The latest committed ledger.
#[utoipa::path(get, path = "/v1/ledgers/latest", responses((status = 200, description = "Ledger", body = Ledger)))]
fn ledger_latest() {}

/// A committed ledger by height.
#[utoipa::path(
    get,
    path = "/v1/ledgers/{height}",
    params(("height" = Height, Path, description = "Ledger height.")),
    responses(
        (status = 200, description = "Ledger", body = Ledger),
        (status = 400, description = "Bad height", body = ErrorBody),
        (status = 404, description = "No such ledger", body = ErrorBody),
    )
)]
fn ledger() {}

/// Submit a signed transaction: its bytes, or JSON {"hex": …}.
#[utoipa::path(
    post,
    path = "/v1/transactions",
    request_body(
        description = "The signed transaction's canonical bytes, raw or in hex.",
        content((TxBytes = "application/octet-stream"), (SubmitHex = "application/json"))
    ),
    responses(
        (status = 202, description = "Admitted to the mempool: verified and valid on the pending state (or already pending)", body = Accepted),
        (status = 400, description = "Undecodable or refused, a conflict with a pending transaction included (code rejected, message: the rule)", body = ErrorBody),
        (status = 413, description = "Larger than a transaction may be", body = ErrorBody),
        (status = 503, description = "Busy: too many transactions pending or waiting for verification, or no verdict in time; or stopping", body = ErrorBody),
    )
)]
fn submit() {}

/// A transaction's status: pending, committed, rejected or expired.
#[utoipa::path(
    get,
    path = "/v1/transactions/{id}",
    params(("id" = HashHex, Path, description = "Transaction id (64 hex characters).")),
    responses(
        (status = 200, description = "Transaction", body = TxStatus),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Neither committed nor submitted here", body = ErrorBody),
    )
)]
fn transaction() {}

/// An account's balances and declaration at the latest ledger.
#[utoipa::path(
    get,
    path = "/v1/accounts/{address}",
    params(("address" = AddressText, Path, description = "Account address (Address32, either case).")),
    responses(
        (status = 200, description = "Account", body = Account),
        (status = 400, description = "Bad address", body = ErrorBody),
    )
)]
fn account() {}

/// An account's transactions, newest first, by pages.
#[utoipa::path(
    get,
    path = "/v1/accounts/{address}/history",
    params(
        ("address" = AddressText, Path, description = "Account address (Address32)."),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100).", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page (height.index).", pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$"),
    ),
    responses(
        (status = 200, description = "History page", body = HistoryPage),
        (status = 400, description = "Bad address, limit or cursor", body = ErrorBody),
    )
)]
fn history() {}

/// Inclusion proof of a committed transaction.
#[utoipa::path(
    get,
    path = "/v1/proofs/transactions/{id}",
    params(("id" = HashHex, Path, description = "Transaction id (64 hex characters).")),
    responses(
        (status = 200, description = "Proof (kind transaction)", body = Proof),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Not committed", body = ErrorBody),
    )
)]
fn proof_transaction() {}

/// State proof of an account at the latest ledger.
#[utoipa::path(
    get,
    path = "/v1/proofs/accounts/{address}",
    params(("address" = AddressText, Path, description = "Account address (Address32).")),
    responses(
        (status = 200, description = "Proof (kind account)", body = Proof),
        (status = 400, description = "Bad address", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
fn proof_account() {}

/// The validator set in force (it certified the latest ledger), the next one (the changes the
/// latest ledger committed applied) and what differs.
#[utoipa::path(get, path = "/v1/validators", responses((status = 200, description = "Validator sets", body = ValidatorsNow)))]
fn validators_now() {}

/// The validator set certifying the ledger at a height (engine codec, hex).
#[utoipa::path(
    get,
    path = "/v1/validators/{height}",
    params(("height" = Height, Path, description = "Ledger height.")),
    responses(
        (status = 200, description = "Validator set", body = Validators),
        (status = 400, description = "Bad height", body = ErrorBody),
        (status = 404, description = "Unknown or not retained", body = ErrorBody),
    )
)]
fn validators() {}

/// Certified headers by pages, ascending from `from`.
#[utoipa::path(
    get,
    path = "/v1/headers",
    params(
        ("from" = Option<Height>, Query, description = "First height, at most the head (default 0)."),
        ("limit" = Option<u32>, Query, description = "Headers per page, 1 to 1000 (default 100).", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page of certified headers", body = HeaderPage),
        (status = 400, description = "Bad height or limit", body = ErrorBody),
        (status = 404, description = "from above the head", body = ErrorBody),
    )
)]
fn headers() {}

/// A certified header: JSON, or `LedgerHeader ‖ Certificate` (engine codec) with
/// `Accept: application/octet-stream`.
#[utoipa::path(
    get,
    path = "/v1/headers/{height}",
    params(("height" = Height, Path, description = "Ledger height.")),
    responses(
        (status = 200, description = "The certified header", content(
            (CertifiedHeader = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )),
        (status = 400, description = "Bad height", body = ErrorBody),
        (status = 404, description = "No ledger at that height", body = ErrorBody),
    )
)]
fn header() {}

/// The validator-set changes since genesis, oldest first: each a header certified by the set
/// before it that names the set after it, with that set.
#[utoipa::path(
    get,
    path = "/v1/validator-sets",
    params(
        ("from" = Option<Height>, Query, description = "Changes named by headers at this height and above (default 0)."),
        ("limit" = Option<u32>, Query, description = "Changes per page, 1 to 1000 (default 100).", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page of set changes", body = SetChanges),
        (status = 400, description = "Bad height or limit", body = ErrorBody),
        (status = 503, description = "Still listing the changes since genesis", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again"))),
    )
)]
fn validator_sets() {}

/// Equivocation proofs this explorer holds, oldest offence first.
///
/// Each was checked against the validator set of its height before being kept; at most 256 are
/// kept per validator.
#[utoipa::path(
    get,
    path = "/v1/evidence",
    params(
        ("limit" = Option<u32>, Query, description = "Proofs per page, 1 to 100 (default 100).", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page (height.round.validator.kind).", pattern = r"^[0-9]{1,19}\.[0-9]{1,9}\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"),
    ),
    responses(
        (status = 200, description = "A page of proofs", body = EvidencePage),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
    )
)]
fn evidence() {}

/// Server-sent events: `ledger` then its `transaction`s, from a height or after an event.
///
/// Event `ledger` carries a Ledger (id: its height `H`), event `transaction` a TxRef (id: `H:I`,
/// its ledger's height and its index); a client that reconnects with `Last-Event-ID` (the id of
/// the last event it got) misses nothing. The server ends a stream with event `end` carrying a
/// StreamEnd (`lagged`: the client fell too far behind; `stopping`).
#[utoipa::path(
    get,
    path = "/v1/stream",
    params(
        ("from" = Option<Height>, Query, description = "First ledger height, at most the head + 1 (default: the next one)."),
        ("address" = Option<AddressText>, Query, description = "Only transactions touching this address (input, output or fee payer)."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (`H` or `H:I`, H at most the head); wins over `from`."),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad height, address or event id", body = ErrorBody),
        (status = 503, description = "Too many live streams", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again"))),
    )
)]
fn stream() {}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
fn openapi_json() {}

/// Liveness: `ok` while the process serves.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok", content_type = "text/plain", body = String)))]
fn healthz() {}

/// The process's metrics, Prometheus text exposition 0.0.4 (docs/METRICS.md).
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain; version=0.0.4", body = String))
)]
fn metrics() {}
