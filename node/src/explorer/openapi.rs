//! The OpenAPI 3.0 document of the `/v1` API, served at `/v1/openapi.json`. Written by hand
//! next to the routes (api.rs) it describes; a test checks every route is in it.

use serde_json::{Value, json};

fn param(name: &str, location: &str, description: &str, schema: &Value) -> Value {
    json!({ "name": name, "in": location, "required": location == "path", "description": description, "schema": schema })
}

fn ok(description: &str, schema: &Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn get(summary: &str, params: &[Value], answer: Value, errors: &[(&str, &str)]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), answer);
    for (code, why) in errors {
        responses.insert((*code).into(), error(why));
    }
    json!({ "get": { "summary": summary, "parameters": params, "responses": responses } })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The document.
pub(crate) fn document() -> Value {
    let hex64 = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let address =
        json!({ "type": "string", "minLength": 40, "maxLength": 40, "description": "Address32 text" });
    let height = json!({ "type": "integer", "format": "int64", "minimum": 0 });
    let id_param = param("id", "path", "Transaction id (64 hex characters).", &hex64);
    let address_param = param("address", "path", "Account address (Address32).", &address);
    let height_param = param("height", "path", "Ledger height.", &height);
    let proof = json!({
        "type": "object",
        "required": ["kind", "height", "proof"],
        "properties": {
            "kind": { "type": "string", "enum": ["transaction", "account"] },
            "height": height,
            "proof": { "type": "string", "description": "engine codec of TxInclusionProof / AccountStateProof, hex" }
        }
    });
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/v1/status".into(),
        get("Chain parameters and the latest ledger.", &[], ok("Status", &schema("Status")), &[]),
    );
    paths.insert(
        "/v1/ledgers/latest".into(),
        get("The latest committed ledger.", &[], ok("Ledger", &schema("Ledger")), &[]),
    );
    paths.insert(
        "/v1/ledgers/{height}".into(),
        get(
            "A committed ledger by height.",
            std::slice::from_ref(&height_param),
            ok("Ledger", &schema("Ledger")),
            &[("400", "Bad height"), ("404", "No such ledger")],
        ),
    );
    paths.insert(
        "/v1/transactions".into(),
        json!({ "post": {
            "summary": "Submit a signed transaction: its bytes, or JSON {\"hex\": …}.",
            "requestBody": { "required": true, "content": {
                "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                "application/json": { "schema": { "type": "object", "required": ["hex"], "properties": { "hex": { "type": "string" } } } }
            } },
            "responses": {
                "202": ok("Accepted: verified and checked against the latest state", &json!({
                    "type": "object", "required": ["id", "status"],
                    "properties": { "id": hex64, "status": { "type": "string", "enum": ["pending"] } }
                })),
                "400": error("Undecodable or rejected (code rejected, message: the rule)"),
                "413": error("Larger than a transaction may be"),
                "503": error("Busy: too many transactions pending or waiting for verification")
            }
        } }),
    );
    paths.insert(
        "/v1/transactions/{id}".into(),
        get(
            "A transaction's status: pending, committed, rejected or expired.",
            std::slice::from_ref(&id_param),
            ok("Transaction", &schema("Transaction")),
            &[("400", "Bad id"), ("404", "Neither committed nor submitted here")],
        ),
    );
    paths.insert(
        "/v1/accounts/{address}".into(),
        get(
            "An account's balances and declaration at the latest ledger.",
            std::slice::from_ref(&address_param),
            ok("Account", &schema("Account")),
            &[("400", "Bad address")],
        ),
    );
    paths.insert(
        "/v1/accounts/{address}/history".into(),
        get(
            "An account's transactions, newest first, by pages.",
            &[
                address_param.clone(),
                param("limit", "query", "Page size, 1 to 1000 (default 100).", &json!({ "type": "integer" })),
                param("cursor", "query", "next_cursor of the previous page.", &json!({ "type": "string" })),
            ],
            ok("History page", &schema("History")),
            &[("400", "Bad address, limit or cursor")],
        ),
    );
    paths.insert(
        "/v1/proofs/transactions/{id}".into(),
        get(
            "Inclusion proof of a committed transaction.",
            &[id_param],
            ok("Proof", &proof),
            &[("400", "Bad id"), ("404", "Not committed")],
        ),
    );
    paths.insert(
        "/v1/proofs/accounts/{address}".into(),
        get(
            "State proof of an account at the latest ledger.",
            &[address_param],
            ok("Proof", &proof),
            &[("400", "Bad address"), ("404", "No such account")],
        ),
    );
    paths.insert(
        "/v1/validators/{height}".into(),
        get(
            "The validator set certifying the ledger at a height (engine codec, hex).",
            &[height_param],
            ok(
                "Validator set",
                &json!({ "type": "object", "properties": { "height": height, "hash": hex64, "validators": { "type": "string" } } }),
            ),
            &[("400", "Bad height"), ("404", "Unknown or not retained")],
        ),
    );
    paths.insert(
        "/v1/evidence".into(),
        get(
            "Equivocation proofs this explorer holds, oldest offence first (checked against the validator set of their height before being kept; bounded per validator).",
            &[
                param("limit", "query", "Proofs per page, 1 to 100 (default 100).", &json!({ "type": "integer", "minimum": 1, "maximum": 100 })),
                param("cursor", "query", "next_cursor of the previous page.", &json!({ "type": "string" })),
            ],
            ok(
                "A page of proofs",
                &json!({
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": { "type": "array", "items": {
                            "type": "object",
                            "required": ["height", "round", "validator", "public_key", "kind", "proof", "first", "second"],
                            "properties": {
                                "height": height,
                                "round": { "type": "integer", "minimum": 0 },
                                "validator": { "type": "integer", "minimum": 0, "maximum": 255, "description": "the offender's index in the set of that height" },
                                "public_key": { "type": "string", "description": "the offender's consensus key, 65-byte SEC1, hex" },
                                "kind": { "type": "string", "enum": ["double_proposal", "double_prevote", "double_precommit"] },
                                "proof": { "type": "string", "description": "the Equivocation (docs/CONSENSUS.md), hex: what caasiope evidence check takes" },
                                "first": { "type": "string", "description": "the first signed message (consensus Message encoding), hex" },
                                "second": { "type": "string", "description": "the second signed message, hex" }
                            }
                        } },
                        "next_cursor": { "type": "string" }
                    }
                }),
            ),
            &[("400", "Bad limit or cursor")],
        ),
    );
    paths.insert(
        "/v1/stream".into(),
        json!({ "get": {
            "summary": "Server-sent events: `ledger` then its `transaction`s, from a height; the event id is the ledger height.",
            "parameters": [
                param("from", "query", "First ledger height (default: the next one).", &height),
                param("address", "query", "Only transactions touching this address.", &address)
            ],
            "responses": {
                "200": { "description": "An event stream", "content": { "text/event-stream": { "schema": {} } } },
                "400": error("Bad height or address"),
                "503": error("Too many live streams")
            }
        } }),
    );
    paths.insert(
        "/v1/openapi.json".into(),
        get("This document.", &[], ok("OpenAPI 3.0", &json!({ "type": "object" })), &[]),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Caasiope explorer API",
            "version": "1",
            "description": "Amounts are raw integer units (10^-8). Errors are {error: {code, message}}."
        },
        "paths": paths,
        "components": { "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "enum": ["bad_request", "not_found", "rejected", "busy", "too_large", "unavailable", "internal"] },
                    "message": { "type": "string" }
                }
            } } },
            "Status": { "type": "object", "required": ["chain_id", "height", "ledger_hash", "timestamp_ms", "min_fee", "max_ttl_ms"], "properties": {
                "chain_id": { "type": "string" }, "height": { "type": "integer" }, "ledger_hash": hex64,
                "timestamp_ms": { "type": "integer" }, "min_fee": { "type": "integer" }, "max_ttl_ms": { "type": "integer" },
                "fee_account": { "type": "string" }, "governance": { "type": "string" },
                "issuers": { "type": "object", "additionalProperties": { "type": "string" } },
                "validators": { "type": "array", "items": { "type": "object", "properties": {
                    "public_key": { "type": "string" }, "weight": { "type": "integer" } } } }
            } },
            "Ledger": { "type": "object", "required": ["height", "hash", "timestamp_ms", "tx_count", "transactions"], "properties": {
                "height": { "type": "integer" }, "hash": hex64, "timestamp_ms": { "type": "integer" },
                "previous_hash": hex64, "tx_root": hex64, "state_root": hex64, "validator_set_hash": hex64,
                "certificate": { "type": "object", "properties": {
                    "round": { "type": "integer" }, "signers": { "type": "array", "items": { "type": "integer" } } } },
                "tx_count": { "type": "integer" }, "transactions": { "type": "array", "items": hex64 }
            } },
            "Transaction": { "type": "object", "required": ["id", "status"], "properties": {
                "id": hex64,
                "status": { "type": "string", "enum": ["pending", "committed", "rejected", "expired"] },
                "height": { "type": "integer" }, "index": { "type": "integer" },
                "reason": { "type": "string" }, "expiration_ms": { "type": "integer" },
                "transaction": { "type": "object" }, "bytes": { "type": "string" }
            } },
            "Account": { "type": "object", "required": ["address", "height", "balances"], "properties": {
                "address": { "type": "string" }, "height": { "type": "integer" },
                "balances": { "type": "array", "items": { "type": "object", "properties": {
                    "currency": { "type": "string" }, "amount": { "type": "integer" } } } },
                "last_height": { "type": "integer" }, "declaration": { "type": "object" },
                "channel_claimed": { "type": "integer" }
            } },
            "History": { "type": "object", "required": ["address", "entries"], "properties": {
                "address": { "type": "string" },
                "entries": { "type": "array", "items": { "type": "object", "properties": {
                    "id": hex64, "height": { "type": "integer" }, "index": { "type": "integer" } } } },
                "next_cursor": { "type": "string" }
            } }
        } }
    })
}
