//! The explorer's HTTP API on a live network (one validator and an explorer, separate
//! processes): submissions by bytes and by JSON, statuses, accounts, history pages, proofs
//! verified offline, the resumable event stream, the OpenAPI document, and bad requests
//! answered with a 4xx JSON error (never a 5xx or a crash).

use std::{io::Read, time::Duration};

use engine::{
    Address, Currency, Hash,
    codec::decode_exact,
    ledger::ValidatorSet,
    proof::{AccountStateProof, TxInclusionProof, verify_account_state, verify_tx_inclusion},
};
use serde_json::Value;

use super::localnet::{Localnet, transfer};

const CHAIN: &str = "localnet";

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(net: &Localnet) -> Self {
        let addr = net.procs.iter().find_map(|p| p.api).expect("the explorer has an API");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Self { base: format!("http://{addr}"), agent }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self.agent.get(&format!("{}{path}", self.base)).call().unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
    }

    /// `GET path` with one extra header.
    fn get_with(&self, path: &str, name: &str, value: &str) -> (u16, Value) {
        let mut r = self.agent.get(&format!("{}{path}", self.base)).header(name, value).call().unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
    }

    fn ok(&self, path: &str) -> Value {
        let (status, v) = self.get(path);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    fn post(&self, content_type: &str, body: &[u8]) -> (u16, Value) {
        let mut r = self
            .agent
            .post(&format!("{}/v1/transactions", self.base))
            .header("content-type", content_type)
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    /// Asserts a 4xx JSON error with `code`.
    fn refused(&self, (status, v): (u16, Value), code: &str) {
        assert!((400..500).contains(&status), "{status} {v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        // Every error has a kind: a refused transaction's rule, else its code again.
        let kind = v["error"]["kind"].as_str().unwrap_or_default();
        assert!(if code == "rejected" { !kind.is_empty() } else { kind == code }, "{v}");
    }
}

/// `from` pays `amount` CAS to `to` (fee 1,000), message `n`.
fn pay(from: &engine::SecretKey, to: Address, amount: i64, n: u8) -> Vec<u8> {
    use engine::{
        Encode,
        tx::{Fee, Leg, TX_VERSION, Transaction},
    };
    let payer = from.public_key().address();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    Transaction {
        version: TX_VERSION,
        expiration_ms: now + 120_000,
        declarations: vec![],
        inputs: vec![Leg { address: payer, currency: Currency::CAS, amount }],
        outputs: vec![Leg { address: to, currency: Currency::CAS, amount }],
        message: vec![n],
        fee: Fee { payer, amount: 1_000 },
    }
    .sign(CHAIN, &[from])
    .to_bytes()
}

fn hash(v: &Value) -> Hash {
    Hash::from_hex(v.as_str().unwrap()).unwrap()
}

#[test]
fn explorer_api_serves_submits_proves_and_streams() {
    let mut net = Localnet::init_n(1, 200);
    net.start(0);
    net.start(1);
    let api = Api::new(&net);
    net.wait("the explorer's API", 30, |_| {
        api.agent.get(&format!("{}/healthz", api.base)).call().is_ok_and(|r| r.status() == 200)
    });
    let status = api.ok("/v1/status");
    assert_eq!(status["chain_id"], CHAIN);
    let faucet = net.faucet();
    let from = faucet.public_key().address();

    // Submissions: raw bytes and JSON hex; each answered with its id.
    let mut ids = Vec::new();
    for n in 0..6u64 {
        let bytes = transfer(&faucet, n);
        let (status, v) = if n % 2 == 0 {
            api.post("application/octet-stream", &bytes)
        } else {
            let body = serde_json::json!({ "hex": hex::encode(&bytes) }).to_string();
            api.post("application/json", body.as_bytes())
        };
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["status"], "pending");
        ids.push(hash(&v["id"]));
    }
    // Rejections are precise and immediate.
    let mut bad_sig = transfer(&faucet, 99);
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let refused = api.post("application/octet-stream", &bad_sig);
    assert_eq!(refused.1["error"]["kind"], "bad_signature", "{}", refused.1);
    api.refused(refused, "rejected");
    let garbage = api.post("application/octet-stream", b"garbage");
    assert_eq!(garbage.1["error"]["kind"], "decode", "{}", garbage.1);
    api.refused(garbage, "rejected");
    api.refused(api.post("application/octet-stream", b""), "bad_request");
    api.refused(api.post("application/json", b"{\"hex\": \"zz\"}"), "bad_request");
    api.refused(api.post("application/json", b"[1,2"), "bad_request");
    let too_large = vec![0u8; engine::limits::TX_BYTES_MAX + 1];
    api.refused(api.post("application/octet-stream", &too_large), "too_large");
    let (status, _) =
        api.post("application/octet-stream", &vec![0u8; 2 * engine::limits::TX_BYTES_MAX + 4096]);
    assert_eq!(status, 413);

    // Every submitted transaction commits, and says so.
    net.wait("the submissions to commit", 60, |_| {
        ids.iter().all(|id| api.get(&format!("/v1/transactions/{id}")).1["status"] == "committed")
    });
    for (i, id) in ids.iter().enumerate() {
        let v = api.ok(&format!("/v1/transactions/{id}"));
        let height = v["height"].as_u64().unwrap();
        let ledger = api.ok(&format!("/v1/ledgers/{height}"));
        let listed: Vec<Hash> = ledger["transactions"].as_array().unwrap().iter().map(hash).collect();
        assert_eq!(listed[v["index"].as_u64().unwrap() as usize], *id);

        // The inclusion proof verifies offline against the set the explorer names, whose hash
        // the previous header commits to.
        let proof = api.ok(&format!("/v1/proofs/transactions/{id}"));
        let proof: TxInclusionProof =
            decode_exact(&hex::decode(proof["proof"].as_str().unwrap()).unwrap()).unwrap();
        let set = api.ok(&format!("/v1/validators/{height}"));
        let set: ValidatorSet =
            decode_exact(&hex::decode(set["validators"].as_str().unwrap()).unwrap()).unwrap();
        let previous = api.ok(&format!("/v1/ledgers/{}", height - 1));
        assert_eq!(set.hash(), hash(&previous["validator_set_hash"]));
        verify_tx_inclusion(CHAIN, &set, &proof, engine::Backend::K256).unwrap();
        let mut forged = proof.clone();
        forged.tx_id = ids[(i + 1) % ids.len()];
        assert!(verify_tx_inclusion(CHAIN, &set, &forged, engine::Backend::K256).is_err());
    }

    // Two spends of the same funds, each valid against the latest ledger: the second conflicts
    // with the first, pending, and is refused at once with the rule; its status says why.
    let spender = engine::SecretKey::from_bytes(&[5u8; 32]).unwrap();
    let fund = pay(&faucet, spender.public_key().address(), 5_000, 1);
    let (status, v) = api.post("application/octet-stream", &fund);
    assert_eq!(status, 202, "{v}");
    let fund_id = hash(&v["id"]);
    net.wait("the funding to commit", 60, |_| {
        api.get(&format!("/v1/transactions/{fund_id}")).1["status"] == "committed"
    });
    let (a, b) = (pay(&spender, from, 4_000, 2), pay(&spender, from, 3_500, 3));
    let (sa, va) = api.post("application/octet-stream", &a);
    let (sb, vb) = api.post("application/octet-stream", &b);
    assert_eq!((sa, sb), (202, 400), "{va} {vb}");
    assert_eq!(vb["error"]["code"], "rejected", "{vb}");
    assert_eq!(vb["error"]["kind"], "insufficient_balance", "{vb}");
    assert!(vb["error"]["message"].as_str().unwrap().contains("balance"), "{vb}");
    // Sent again while pending, the first is still accepted.
    let (again, _) = api.post("application/octet-stream", &a);
    assert_eq!(again, 202);
    let ida = hash(&va["id"]);
    let idb = engine::tx::SignedTransaction::decode_with_id(&b, CHAIN).unwrap().1;
    net.wait("one spend to commit and the other to be refused", 60, |_| {
        let sa = api.get(&format!("/v1/transactions/{ida}")).1;
        let sb = api.get(&format!("/v1/transactions/{idb}")).1;
        sa["status"] == "committed" && sb["status"] == "rejected"
    });
    let vb = api.ok(&format!("/v1/transactions/{idb}"));
    assert!(vb["reason"].as_str().unwrap().contains("balance"), "{vb}");
    // Remembered with its rule's kind and its real expiration.
    assert_eq!(vb["kind"], "insufficient_balance", "{vb}");
    let expiration = engine::tx::SignedTransaction::decode_with_id(&b, CHAIN).unwrap().0.tx.expiration_ms;
    assert_eq!(vb["expiration_ms"], expiration, "{vb}");

    // Accounts: balances, and the state proof of the latest ledger.
    let receiver: Address = engine::SecretKey::from_bytes(&{
        let mut b = [7u8; 32];
        b[..8].copy_from_slice(&3u64.to_be_bytes());
        b
    })
    .unwrap()
    .public_key()
    .address();
    let account = api.ok(&format!("/v1/accounts/{receiver}"));
    assert_eq!(account["balances"][0]["currency"], "CAS");
    assert_eq!(account["balances"][0]["amount"], 1_003);
    let unused = engine::SecretKey::from_bytes(&[9u8; 32]).unwrap().public_key().address();
    let never = api.ok(&format!("/v1/accounts/{unused}"));
    assert!(never["balances"].as_array().unwrap().is_empty());
    let proof = api.ok(&format!("/v1/proofs/accounts/{receiver}"));
    let height = proof["height"].as_u64().unwrap();
    let proof: AccountStateProof =
        decode_exact(&hex::decode(proof["proof"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(proof.account.balance(&Currency::CAS), 1_003);
    let set = api.ok(&format!("/v1/validators/{height}"));
    let set: ValidatorSet = decode_exact(&hex::decode(set["validators"].as_str().unwrap()).unwrap()).unwrap();
    verify_account_state(CHAIN, &set, &proof, engine::Backend::K256).unwrap();
    let mut forged = proof;
    forged.account.set_balance(Currency::CAS, 1_000_000);
    assert!(verify_account_state(CHAIN, &set, &forged, engine::Backend::K256).is_err());

    // History: the faucet's eight transactions (six transfers, the funding, the spend paid to
    // it), newest first, by pages of three.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_ref().map_or_else(String::new, |c| format!("&cursor={c}"));
        let page = api.ok(&format!("/v1/accounts/{from}/history?limit=3{query}"));
        pages.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page.get("next_cursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_owned()),
            None => break,
        }
        assert!(pages.len() < 100, "paging does not end");
    }
    let locations: Vec<(u64, u64)> =
        pages.iter().map(|e| (e["height"].as_u64().unwrap(), e["index"].as_u64().unwrap())).collect();
    assert!(locations.windows(2).all(|w| w[0] > w[1]), "newest first: {locations:?}");
    let mut seen: Vec<Hash> = pages.iter().map(|e| hash(&e["id"])).collect();
    seen.sort();
    let mut want: Vec<Hash> = ids.iter().copied().chain([fund_id, ida]).collect();
    want.sort();
    assert_eq!(seen, want);
    let mut want = ids.clone();
    want.sort();

    // The stream, resumed from the first transfer's height, replays every ledger then its
    // transactions touching the faucet.
    let first = ids.iter().map(|id| api.ok(&format!("/v1/transactions/{id}"))["height"].as_u64().unwrap());
    let (low, high) = (first.clone().min().unwrap(), first.max().unwrap());
    let mut r = api.agent.get(&format!("{}/v1/stream?from={low}&address={from}", api.base)).call().unwrap();
    assert_eq!(r.status(), 200);
    let mut reader = r.body_mut().as_reader();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let mut streamed: Vec<Hash> = Vec::new();
    let mut ledgers_seen = 0;
    while !want.iter().all(|id| streamed.contains(id)) {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended");
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let data = event.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
            if event.contains("event: ledger") || event.contains("event:ledger") {
                ledgers_seen += 1;
            } else if event.contains("event: transaction") || event.contains("event:transaction") {
                let v: Value = serde_json::from_str(data.unwrap()).unwrap();
                streamed.push(hash(&v["id"]));
            }
        }
    }
    assert!(ledgers_seen > high - low, "every ledger from {low} to {high} comes first");
    streamed.sort();
    streamed.retain(|id| want.binary_search(id).is_ok());
    assert_eq!(streamed, want);

    // The OpenAPI document names every route, and every route it names is served (none falls
    // through to the router's fallback).
    let doc = api.ok("/v1/openapi.json");
    for route in [
        "/v1/status",
        "/v1/ledgers/latest",
        "/v1/ledgers/{height}",
        "/v1/transactions",
        "/v1/transactions/{id}",
        "/v1/accounts/{address}",
        "/v1/accounts/{address}/history",
        "/v1/proofs/transactions/{id}",
        "/v1/proofs/accounts/{address}",
        "/v1/validators/{height}",
        "/v1/evidence",
        "/v1/stream",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"].get(route).is_some(), "{route} missing from the OpenAPI document");
    }
    let fallback = api.get("/v1/nothing").1;
    for (route, item) in doc["paths"].as_object().unwrap() {
        let path = route
            .replace("{height}", "1")
            .replace("{id}", &ids[0].to_hex())
            .replace("{address}", &from.to_text());
        let answer = match item.as_object().unwrap().keys().next().unwrap().as_str() {
            "post" => api.post("application/octet-stream", b"\x01").1,
            // An event stream does not end: asked for with a bad height, to be answered at once.
            _ if route == api::routes::STREAM => api.get(&format!("{path}?from=x")).1,
            // Text answers: served if 200.
            _ if [api::routes::HEALTHZ, api::routes::METRICS].contains(&route.as_str()) => {
                let r = api.agent.get(&format!("{}{path}", api.base)).call().unwrap();
                assert_eq!(r.status(), 200, "{route}");
                continue;
            }
            _ => api.get(&path).1,
        };
        assert_ne!(answer, fallback, "{route} is in the document but not served");
    }
    assert_eq!(doc["paths"].as_object().unwrap().len(), api::routes::ALL.len());

    // Bad requests: 4xx with a machine-readable error.
    api.refused(api.get("/v1/ledgers/abc"), "bad_request");
    api.refused(api.get("/v1/ledgers/18446744073709551615"), "not_found");
    api.refused(api.get("/v1/transactions/xyz"), "bad_request");
    api.refused(api.get(&format!("/v1/transactions/{}", "ab".repeat(32))), "not_found");
    api.refused(api.get("/v1/accounts/not-an-address"), "bad_request");
    api.refused(api.get(&format!("/v1/accounts/{from}/history?limit=0")), "bad_request");
    api.refused(api.get(&format!("/v1/accounts/{from}/history?limit=5000")), "bad_request");
    api.refused(api.get(&format!("/v1/accounts/{from}/history?cursor=zz")), "bad_request");
    api.refused(api.get(&format!("/v1/proofs/accounts/{unused}")), "not_found");
    api.refused(api.get("/v1/stream?from=x"), "bad_request");
    // A stream from past the next ledger would wait for ever: refused at once.
    api.refused(api.get("/v1/stream?from=18446744073709551615"), "bad_request");
    // A method a route does not take: 405 with the JSON error body.
    let mut r = api.agent.delete(&format!("{}/v1/status", api.base)).call().unwrap();
    let status = r.status().as_u16();
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(status, 405, "{body}");
    api.refused((status, body), "bad_request");
    api.refused(api.get("/v1/validators/0"), "not_found");
    api.refused(api.get("/v1/nothing"), "not_found");
    // Heads over their limits: 414 and 431 with the JSON error body (hyper alone sends none).
    let long = format!("/v1/ledgers/1?pad={}", "x".repeat(9_000));
    let mut r = api.agent.get(&format!("{}{long}", api.base)).call().unwrap();
    assert_eq!(r.status(), 414);
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    api.refused((414, body), "too_large");
    let mut request = api.agent.get(&format!("{}/v1/status", api.base));
    for i in 0..70 {
        request = request.header(format!("x-pad-{i}"), "y");
    }
    let mut r = request.call().unwrap();
    assert_eq!(r.status(), 431);
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    api.refused((431, body), "too_large");
    // CORS (the default: any origin): a browser's preflight of a JSON submission, and the
    // headers on an answer, errors included.
    let origin = "https://wallet.example";
    let r = api
        .agent
        .options(&format!("{}/v1/transactions", api.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(r.headers()["access-control-allow-headers"].to_str().unwrap().contains("content-type"));
    for path in ["/v1/status", "/v1/nothing"] {
        let r = api.agent.get(&format!("{}{path}", api.base)).header("origin", origin).call().unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], "*", "{path}");
    }
    // … and the process keeps serving.
    assert_eq!(api.ok("/v1/status")["chain_id"], CHAIN);

    // The load generator, briefly: everything it offers commits, and it says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_caasiope"))
        .args(["bench", "load", "--api", &api.base, "--rate", "40", "--duration", "2", "--accounts", "8"])
        .args(["--read-threads", "1", "--json", "--key"])
        .arg(net.dir.path().join("faucet.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["submitted"], 80, "{report}");
    assert_eq!(report["accepted"], 80, "{report}");
    assert_eq!(report["committed"], 80, "{report}");
    assert!(report["finality_ms"]["p50"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["reads"]["count"].as_u64().unwrap() > 0, "{report}");
    net.stop_all();
}

/// Whether the explorer's API answers.
fn up(api: &Api) -> bool {
    api.agent.get(&format!("{}/healthz", api.base)).call().is_ok_and(|r| r.status() == 200)
}

/// A one-validator localnet (a block every 200 ms) and its explorer's API, answering.
fn started() -> (Localnet, Api) {
    let mut net = Localnet::init_n(1, 200);
    net.start(0);
    net.start(1);
    let api = Api::new(&net);
    net.wait("the explorer's API", 30, |_| up(&api));
    (net, api)
}

/// A stream event: name, id and data.
type Event = (String, String, String);

/// The events of `GET /v1/stream?{query}` (keep-alive comments skipped), sent with
/// `Last-Event-ID: last` if given, up to the first `n` or the first that is `done`.
fn stream_events(
    api: &Api,
    query: &str,
    last: Option<&str>,
    n: usize,
    done: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut request = api.agent.get(&format!("{}/v1/stream?{query}", api.base));
    if let Some(id) = last {
        request = request.header("last-event-id", id);
    }
    let mut r = request.call().unwrap();
    assert_eq!(r.status(), 200, "stream ?{query} after {last:?}");
    let mut reader = r.body_mut().as_reader();
    let (mut text, mut buf, mut out) = (String::new(), [0u8; 4096], Vec::new());
    while out.len() < n && !out.last().is_some_and(&done) {
        let got = reader.read(&mut buf).unwrap();
        assert!(got > 0, "the stream ended after {} events", out.len());
        text.push_str(std::str::from_utf8(&buf[..got]).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field =
                |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
            let Some(event) = field("event:") else { continue };
            out.push((event, field("id:").unwrap_or_default(), field("data:").unwrap_or_default()));
        }
    }
    out.truncate(n);
    out
}

/// Resumed after any event it sent, with `Last-Event-ID` (which wins over `from`), a stream sends
/// exactly what followed that event: live from the feed, then again from the store after the
/// explorer restarted (its feed then starts at its new head).
#[test]
fn the_stream_resumes_after_any_event_live_or_from_the_store() {
    let (mut net, mut api) = started();
    let faucet = net.faucet();
    let mut ids = Vec::new();
    for n in 0..8u64 {
        let (status, v) = api.post("application/octet-stream", &transfer(&faucet, n));
        assert_eq!(status, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let committed = |api: &Api| {
        ids.iter().all(|id| api.get(&format!("/v1/transactions/{id}")).1["status"] == "committed")
    };
    net.wait("the transfers to commit", 60, |_| committed(&api));
    let top =
        ids.iter().map(|id| api.ok(&format!("/v1/transactions/{id}"))["height"].as_u64().unwrap()).max();
    // Everything from ledger 1 to the ledger after the last transfer.
    let head = top.unwrap() + 1;
    net.wait("one more ledger", 30, |_| api.ok("/v1/status")["height"].as_u64().unwrap() >= head);
    let all = stream_events(&api, "from=1", None, usize::MAX, |e| e.0 == "ledger" && e.1 == head.to_string());
    let txs: Vec<&Event> = all.iter().filter(|e| e.0 == "transaction").collect();
    for id in &ids {
        assert!(txs.iter().any(|e| e.2.contains(id.as_str())), "{id} streamed");
    }
    for (event, id, _) in &all {
        // Ledger events are named by height, transactions by height and index.
        assert_eq!(id.contains(':'), event == "transaction", "{event} {id}");
    }
    let check = |api: &Api, all: &[Event], how: &str| {
        for k in 0..all.len() - 1 {
            let rest = &all[k + 1..];
            let resumed = stream_events(api, "from=1", Some(&all[k].1), rest.len(), |_| false);
            assert_eq!(resumed, rest, "{how}: resumed after {}", all[k].1);
        }
    };
    check(&api, &all, "live");
    api.refused(api.get_with("/v1/stream", "last-event-id", "7:x"), "bad_request");
    api.refused(api.get_with("/v1/stream", "last-event-id", "18446744073709551615"), "bad_request");

    net.kill9(1);
    net.start(1);
    api = Api::new(&net);
    net.wait("the explorer's API again", 30, |_| up(&api));
    let replayed = stream_events(&api, "from=1", None, all.len(), |_| false);
    assert_eq!(replayed, all, "replayed from the store");
    check(&api, &all, "from the store");
    net.stop_all();
}

/// What a light client follows: certified headers (JSON, bytes, pages) and the validator-set
/// changes from genesis. The governance (the localnet's faucet) doubles the validator's weight;
/// the change is listed with the header that names it, certified by the set before; `wallet
/// proof` saves the changes and `verify-proof` follows them from the genesis set alone; after
/// a restart the explorer finds the change again in its store.
#[test]
fn light_clients_follow_certified_headers_and_set_changes_from_genesis() {
    use engine::{
        Backend, Encode,
        codec::{Decode, Reader},
        declaration::{Declaration, ValidatorUpdate},
        ledger::{Certificate, LedgerHeader},
        tx::{Fee, Leg, TX_VERSION, Transaction},
    };
    let (mut net, mut api) = started();
    let genesis_text = std::fs::read_to_string(net.dir.path().join("genesis.toml")).unwrap();
    let genesis = engine::genesis::Genesis::from_toml(&genesis_text).unwrap();
    let faucet = net.faucet();
    let me = faucet.public_key().address();
    let validator = std::fs::read_to_string(net.dir.path().join("validator-0/validator.key")).unwrap();
    let validator = engine::SecretKey::from_hex(validator.trim()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let update = Transaction {
        version: TX_VERSION,
        expiration_ms: now + 120_000,
        declarations: vec![Declaration::ValidatorUpdate(ValidatorUpdate {
            public_key: validator.public_key(),
            weight: 2,
        })],
        inputs: vec![Leg { address: me, currency: Currency::CAS, amount: 1 }],
        outputs: vec![Leg { address: me, currency: Currency::CAS, amount: 1 }],
        message: b"weight 2".to_vec(),
        fee: Fee { payer: me, amount: 1_000 },
    }
    .sign(CHAIN, &[&faucet]);
    let (status, v) = api.post("application/octet-stream", &update.to_bytes());
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    net.wait("the update to commit", 60, |_| {
        api.get(&format!("/v1/transactions/{id}")).1["status"] == "committed"
    });
    let changed_at = api.ok(&format!("/v1/transactions/{id}"))["height"].as_u64().unwrap();
    // A transfer certified by the new set, to prove.
    let (status, v) = api.post("application/octet-stream", &transfer(&faucet, 1));
    assert_eq!(status, 202, "{v}");
    let later = v["id"].as_str().unwrap().to_owned();
    net.wait("the transfer to commit", 60, |_| {
        api.get(&format!("/v1/transactions/{later}")).1["status"] == "committed"
    });
    assert!(api.ok(&format!("/v1/transactions/{later}"))["height"].as_u64().unwrap() > changed_at);

    // Headers: JSON fields, canonical bytes (also as octet-stream), pages.
    let decode = |hex_text: &str| {
        let bytes = hex::decode(hex_text).unwrap();
        let mut r = Reader::new(&bytes);
        let pair = (LedgerHeader::decode(&mut r).unwrap(), Certificate::decode(&mut r).unwrap());
        r.finish().unwrap();
        pair
    };
    let h = api.ok(&format!("/v1/headers/{changed_at}"));
    let (header, certificate) = decode(h["bytes"].as_str().unwrap());
    assert_eq!(h["hash"], header.hash(CHAIN).to_hex());
    assert_eq!(h["height"], changed_at);
    assert_eq!(h["certificate"]["signatures"].as_array().unwrap().len(), certificate.signatures.len());
    certificate.verify_header(&genesis.validators, CHAIN, &header, Backend::K256).unwrap();
    let mut r = api
        .agent
        .get(&format!("{}/v1/headers/{changed_at}", api.base))
        .header("accept", "application/octet-stream")
        .call()
        .unwrap();
    assert_eq!(hex::encode(r.body_mut().read_to_vec().unwrap()), h["bytes"].as_str().unwrap());
    let page = api.ok("/v1/headers?from=0&limit=2");
    assert_eq!(page["headers"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 2);
    let (h1, _) = decode(page["headers"][1]["bytes"].as_str().unwrap());
    let (h0, _) = decode(page["headers"][0]["bytes"].as_str().unwrap());
    assert_eq!(h1.previous, h0.hash(CHAIN), "the pages follow the header chain");
    api.refused(api.get("/v1/headers?limit=0"), "bad_request");
    api.refused(api.get("/v1/headers?from=99999999"), "not_found");
    api.refused(api.get("/v1/headers/99999999"), "not_found");

    // The set change: the header naming the new set, certified by genesis's, and the set.
    let check_changes = |api: &Api| {
        let changes = api.ok("/v1/validator-sets");
        let list = changes["changes"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{changes}");
        let (header, certificate) = decode(list[0]["header"]["bytes"].as_str().unwrap());
        assert_eq!(header.height, changed_at);
        certificate.verify_header(&genesis.validators, CHAIN, &header, Backend::K256).unwrap();
        let set: engine::ledger::ValidatorSet =
            engine::codec::decode_exact(&hex::decode(list[0]["validators"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(set.hash(), header.validator_set_hash);
        assert_eq!(set.validators()[0].weight, 2);
        assert!(
            api.ok(&format!("/v1/validator-sets?from={}", changed_at + 1))["changes"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    };
    check_changes(&api);

    // The wallet follows the change from the genesis set alone.
    let wallet = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_caasiope"))
            .arg("wallet")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "wallet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let proof = net.dir.path().join("later.proof.json");
    let genesis_path = net.dir.path().join("genesis.toml");
    wallet(&["proof", "tx", &later, "--api", &api.base, "--out", proof.to_str().unwrap()]);
    let v = wallet(&[
        "verify-proof",
        "--proof",
        proof.to_str().unwrap(),
        "--genesis",
        genesis_path.to_str().unwrap(),
        "--validators",
        net.dir.path().join("later.proof.validators.json").to_str().unwrap(),
    ]);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["validator_set"]["trusted_as"], "genesis and the set changes since", "{v}");

    // Restarted, the explorer finds the change in its store.
    net.kill9(1);
    net.start(1);
    api = Api::new(&net);
    net.wait("the explorer's API again", 30, |_| up(&api));
    net.wait("the set changes listed", 30, |_| api.get("/v1/validator-sets").0 == 200);
    check_changes(&api);
    net.stop_all();
}
