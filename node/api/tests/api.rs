//! The contract's wire forms (what an outside client, written from docs/API.md, reads) and the
//! OpenAPI document generated from it.

use std::collections::{BTreeMap, BTreeSet};

use api::{
    Account, Balance, ErrorBody, ErrorCode, EvidenceKind, HistoryPage, ProofKind, Status, TxRef, TxState,
    TxStatus, routes,
};
use engine::{Address, Currency, Hash, SecretKey};
use serde_json::{Value, json};

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32]).unwrap()
}

fn address(n: u8) -> Address {
    key(n).public_key().address()
}

/// `value` serializes to `expected` and reads back as itself.
fn wire<T>(value: &T, expected: &Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(&serde_json::to_value(value).unwrap(), expected);
    let back: T = serde_json::from_value(expected.clone()).unwrap();
    assert_eq!(&back, value);
}

#[test]
fn a_pending_transaction_leaves_the_committed_fields_out() {
    let mut tx = TxStatus {
        id: Hash([0xab; 32]),
        status: TxState::Pending,
        height: None,
        index: None,
        expiration_ms: 5,
        reason: None,
        kind: None,
        transaction: None,
        bytes: None,
    };
    let id = "ab".repeat(32);
    wire(&tx, &json!({ "id": id, "status": "pending", "expiration_ms": 5 }));
    tx.status = TxState::Rejected;
    tx.reason = Some("fee too low".into());
    tx.kind = Some("fee_too_low".into());
    wire(
        &tx,
        &json!({ "id": id, "status": "rejected", "expiration_ms": 5, "reason": "fee too low", "kind": "fee_too_low" }),
    );
    tx.status = TxState::Committed;
    (tx.reason, tx.kind) = (None, None);
    (tx.height, tx.index, tx.bytes) = (Some(7), Some(2), Some("00ff".into()));
    tx.transaction = Some(json!({ "version": 1 }));
    wire(
        &tx,
        &json!({ "id": id, "status": "committed", "height": 7, "index": 2, "expiration_ms": 5,
                 "transaction": { "version": 1 }, "bytes": "00ff" }),
    );
}

#[test]
fn an_account_never_used_has_only_its_address_height_and_no_balances() {
    let a = address(1);
    let mut account = Account {
        address: a,
        height: 9,
        balances: vec![],
        last_height: None,
        declaration: None,
        channel_claimed: None,
    };
    wire(&account, &json!({ "address": a.to_text(), "height": 9, "balances": [] }));
    account.balances.push(Balance { currency: Currency::CAS, amount: -3 });
    (account.last_height, account.channel_claimed) = (Some(4), Some(10));
    wire(
        &account,
        &json!({ "address": a.to_text(), "height": 9, "balances": [{ "currency": "CAS", "amount": -3 }],
                 "last_height": 4, "channel_claimed": 10 }),
    );
    assert_eq!(account.balance(&Currency::CAS), -3);
}

#[test]
fn pages_carry_a_cursor_only_when_full() {
    let a = address(2);
    let entry = TxRef { id: Hash([1; 32]), height: 3, index: 0 };
    let mut page = HistoryPage { address: a, entries: vec![entry], next_cursor: None };
    let entry_json = json!({ "id": "01".repeat(32), "height": 3, "index": 0 });
    wire(&page, &json!({ "address": a.to_text(), "entries": [entry_json] }));
    page.next_cursor = Some("3.0".into());
    wire(&page, &json!({ "address": a.to_text(), "entries": [entry_json], "next_cursor": "3.0" }));
}

#[test]
fn status_keys_are_lower_case_hex_and_issuers_a_map_by_symbol() {
    let (fee, gov) = (address(3), address(4));
    let status = Status {
        chain_id: "localnet".into(),
        height: 1,
        ledger_hash: Hash([0xcd; 32]),
        timestamp_ms: 2,
        min_fee: 1000,
        max_ttl_ms: 3,
        fee_account: fee,
        governance: gov,
        issuers: BTreeMap::from([(Currency::new("BTC").unwrap(), gov)]),
        validators: vec![api::Validator { public_key: key(5).public_key(), weight: 1 }],
    };
    wire(
        &status,
        &json!({ "chain_id": "localnet", "height": 1, "ledger_hash": "cd".repeat(32), "timestamp_ms": 2,
                 "min_fee": 1000, "max_ttl_ms": 3, "fee_account": fee.to_text(), "governance": gov.to_text(),
                 "issuers": { "BTC": gov.to_text() },
                 "validators": [{ "public_key": key(5).public_key().to_hex(), "weight": 1 }] }),
    );
    assert_eq!(status.params().issuers.len(), 1);
}

#[test]
fn names_on_the_wire_match_their_text_forms() {
    for code in ErrorCode::ALL {
        wire(
            &ErrorBody::new(code, "m"),
            &json!({ "error": { "code": code.as_str(), "kind": code.as_str(), "message": "m" } }),
        );
    }
    for state in [TxState::Pending, TxState::Committed, TxState::Rejected, TxState::Expired] {
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
    }
    for name in ["double_proposal", "double_prevote", "double_precommit", "unknown"] {
        assert_eq!(serde_json::to_value(EvidenceKind::from_name(name)).unwrap(), name);
    }
    assert_eq!(EvidenceKind::from_name("triple_vote"), EvidenceKind::Unknown);
    assert_eq!(serde_json::to_value(ProofKind::Account).unwrap(), "account");
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn document() -> Value {
    let text = api::openapi().to_pretty_json().unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_document_has_every_route_and_defines_every_schema_it_references() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: BTreeSet<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(paths, routes::ALL.into_iter().collect());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "{r} is not defined");
    }
    for name in ["ErrorBody", "Ledger", "TxRef", "Status", "Hash", "Address", "PublicKey"] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
}

#[test]
fn every_operation_declares_its_path_parameters_and_answers() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let (method, op) = item.as_object().unwrap().iter().next().unwrap();
        let params = op["parameters"].as_array().map(Vec::as_slice).unwrap_or_default();
        for name in path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
            let p = params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path}: {name}"));
            assert_eq!((p["in"].as_str(), p["required"].as_bool()), (Some("path"), Some(true)), "{path}");
        }
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|c| c.starts_with('2')), "{method} {path}");
        for (code, r) in responses.iter().filter(|(c, _)| c.starts_with(['4', '5'])) {
            let schema = &r["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorBody", "{path} {code}");
        }
        assert!(!op["summary"].as_str().unwrap_or_default().is_empty(), "{path}");
    }
    // The limits the document states are the contract's.
    let limit = |path: &str| {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap().clone();
        let p = params.into_iter().find(|p| p["name"] == "limit").unwrap();
        p["schema"]["maximum"].as_u64().unwrap() as usize
    };
    assert_eq!(limit(routes::HISTORY), routes::HISTORY_LIMIT_MAX);
    assert_eq!(limit(routes::EVIDENCE), routes::EVIDENCE_LIMIT_MAX);
    // Optional answer fields are left out, never null: the document does not allow null.
    let tx = &doc["components"]["schemas"]["TxStatus"];
    assert!(!tx.to_string().contains("\"null\""), "{tx}");
    let required: BTreeSet<&str> =
        tx["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, BTreeSet::from(["id", "status", "expiration_ms"]));
}

/// Whether `value` fits `schema` (a subset of JSON Schema: `$ref`, `oneOf`, `allOf`, objects
/// whose keys are all declared, arrays, strings and their `enum`, numbers).
fn fits(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return fits(doc, &doc["components"]["schemas"][name], value);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let errors: Vec<String> = options.iter().filter_map(|o| fits(doc, o, value).err()).collect();
        return if errors.len() < options.len() {
            Ok(())
        } else {
            Err(format!("no oneOf fits {value}: {errors:?}"))
        };
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().try_for_each(|s| fits(doc, s, value));
    }
    match value {
        Value::Object(o) => {
            let props =
                schema["properties"].as_object().ok_or(format!("{value} is not an object here: {schema}"))?;
            for (k, v) in o {
                let s = props.get(k).ok_or(format!("field {k} is not in the schema {schema}"))?;
                fits(doc, s, v)?;
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                if !o.contains_key(r.as_str().unwrap()) {
                    return Err(format!("required {r} missing from {value}"));
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|v| fits(doc, &schema["items"], v)),
        Value::String(s) => {
            if let Some(allowed) = schema["enum"].as_array() {
                if !allowed.iter().any(|a| a == value) {
                    return Err(format!("{s:?} is not one of {allowed:?}"));
                }
            }
            let is_string = schema["type"] == "string"
                || schema["type"].as_array().is_some_and(|t| t.contains(&json!("string")));
            if !is_string {
                return Err(format!("{s:?} where {schema} is expected"));
            }
            Ok(())
        }
        Value::Number(_) => {
            let t = &schema["type"];
            if t == "integer" || t == "number" || t.as_array().is_some_and(|t| t.contains(&json!("integer")))
            {
                Ok(())
            } else {
                Err(format!("{value} where {schema} is expected"))
            }
        }
        _ => Ok(()),
    }
}

/// The engine's JSON of a signed transaction — every kind of declaration — is what the
/// document's `Transaction` schema describes, field by field.
#[test]
fn the_transaction_schema_describes_the_engines_json() {
    use engine::{
        HashType, MultiSig, PaymentChannel, ValidatorUpdate, Voucher,
        declaration::Declaration,
        tx::{Fee, Leg, TX_VERSION, Transaction},
    };
    let (a, b) = (key(1), key(2));
    let channel = Address::new(engine::AddressType::PaymentChannel, [6; 20]);
    let tx = Transaction {
        version: TX_VERSION,
        expiration_ms: 1_767_225_660_000,
        declarations: vec![
            Declaration::MultiSig(MultiSig::new(vec![address(1), address(2)], 1).unwrap()),
            Declaration::HashLock { hash_type: HashType::Sha256, hash: [7; 32] },
            Declaration::Secret { preimage: [8; 32] },
            Declaration::TimeLock { unix_seconds: 1_767_225_700 },
            Declaration::PaymentChannel(PaymentChannel {
                payer: address(1),
                payee: address(2),
                currency: Currency::CAS,
                expiry_ms: 1_767_225_700_000,
            }),
            Declaration::Voucher(Voucher::sign("localnet", channel, 100, &a)),
            Declaration::ValidatorUpdate(ValidatorUpdate { public_key: b.public_key(), weight: 2 }),
        ],
        inputs: vec![engine::tx::Leg { address: address(1), currency: Currency::CAS, amount: 150_000_000 }],
        outputs: vec![Leg { address: address(2), currency: Currency::CAS, amount: 150_000_000 }],
        message: b"hi".to_vec(),
        fee: Fee { payer: address(1), amount: 1_000 },
    }
    .sign("localnet", &[&a, &b]);
    let json = serde_json::to_value(&tx).unwrap();
    let doc = document();
    let status = &doc["components"]["schemas"]["TxStatus"]["properties"]["transaction"];
    fits(&doc, status, &json).unwrap();
    // Every kind of declaration was checked against its own variant.
    let kinds: BTreeSet<&str> =
        json["declarations"].as_array().unwrap().iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    // A field the schema does not know is caught.
    let mut extra = json.clone();
    extra["declarations"][1]["salt"] = json!("00");
    assert!(fits(&doc, status, &extra).is_err());
    // The error schema lists every kind a refusal carries.
    let kinds = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["kind"]["enum"];
    for k in engine::validate::TxError::KINDS.iter().chain(&["bad_request", "busy"]) {
        assert!(kinds.as_array().unwrap().contains(&json!(k)), "{k} missing from {kinds}");
    }
}

#[test]
fn a_request_path_is_labelled_with_its_route() {
    assert_eq!(routes::template_of("/v1/ledgers/latest"), Some(routes::LEDGER_LATEST));
    assert_eq!(routes::template_of("/v1/ledgers/12"), Some(routes::LEDGER));
    assert_eq!(routes::template_of("/v1/accounts/abc/history"), Some(routes::HISTORY));
    assert_eq!(routes::template_of("/v1/accounts/abc"), Some(routes::ACCOUNT));
    assert_eq!(routes::template_of("/healthz"), Some(routes::HEALTHZ));
    for (i, template) in routes::ALL.iter().enumerate() {
        assert_eq!(routes::route_index(template), Some(i), "{template}");
    }
    for unmatched in ["/", "/v1", "/v1/ledgers", "/v1/ledgers/", "/v1/ledgers/1/2", "/nothing", ""] {
        assert_eq!(routes::template_of(unmatched), None, "{unmatched}");
    }
}
