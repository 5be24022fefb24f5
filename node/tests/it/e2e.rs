//! Issue 6, end to end: a real network of separate `caasiope` processes (four validators and an
//! explorer replicating into a real ClickHouse server), driven only through `caasiope init`,
//! `caasiope run`, `caasiope wallet …` and the explorer's HTTP API:
//!
//! - a BTC/ETH swap in one transaction: one file, signed by each party, submitted (and refused
//!   when replayed);
//! - BTC issued by its 2-of-3 MultiSig issuer (a file, two co-signers) and destroyed by a holder;
//! - ETH deposited and withdrawn by an ECDSA gateway, with identifiers in the message field;
//! - a cross-chain HTLC pair on one SHA-256 secret (each side claimed, the secret read back
//!   from the chain), and an HTLC refunded after its lock (refused before it, by the wallet and
//!   by the chain);
//! - a payment channel: open, vouchers, two payee claims (a stale voucher refused), the payer's
//!   close after expiry (refused before it);
//! - every transaction's legs, fee payer and message, and every balance, against what the
//!   commands must leave;
//! - transaction and account proofs verified offline, tampered ones refused;
//! - the ClickHouse replica against the chain: ledgers, transactions, legs, declarations and
//!   balance changes.
//!
//! It needs `CAASIOPE_CLICKHOUSE_URL` (`scripts/test` starts a server and sets it); without it
//! the test is skipped, or fails when `CI` is set.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use engine::{
    Encode, Hash, PublicKey, Signature,
    codec::decode_exact,
    proof::{AccountStateProof, TxInclusionProof},
    tx::{SignedTransaction, Transaction, TxSignature},
};
use serde_json::{Value, json};
use sha2::Digest;

use super::localnet::free_base;

const VALIDATORS: usize = 4;
const BLOCK_INTERVAL_MS: u64 = 200;
/// One coin in raw units.
const COIN: i64 = 100_000_000;
const PASSPHRASE: &str = "e2e: correct horse battery staple";
/// Longest wait for anything the network does (a loaded 2-core machine is slow, never stuck).
const WAIT_S: u64 = 120;

/// Stands for `--wallet-dir <the test's wallet>` in a wallet command line.
const KEYS: &str = "@keys";
/// Stands for `--api <the explorer's URL>` in a wallet command line.
const API: &str = "@api";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caasiope"))
}

/// `raw` units as the CLI's decimal coins.
fn coins(raw: i64) -> String {
    assert!(raw > 0);
    let text = format!("{}.{:08}", raw / COIN, raw % COIN);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// An integer of a JSON answer: ClickHouse quotes 64-bit integers, the API does not.
pub(crate) fn int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("not an i64: {v}")),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an integer: {v}")),
        _ => panic!("not an integer: {v}"),
    }
}

pub(crate) fn text(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

struct Proc {
    name: String,
    config: PathBuf,
    child: Option<Child>,
}

/// The network, the wallet directory and the HTTP clients; kills what runs when dropped, and
/// prints the processes' last log lines if the test failed.
struct Net {
    dir: tempfile::TempDir,
    wallet_dir: String,
    procs: Vec<Proc>,
    api: String,
    agent: ureq::Agent,
}

impl Net {
    /// A directory for the wallet and the network; no network yet.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let wallet_dir = dir.path().join("wallet").to_str().unwrap().to_owned();
        assert!(!wallet_dir.contains(char::is_whitespace), "{wallet_dir}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { dir, wallet_dir, procs: Vec::new(), api: String::new(), agent }
    }

    /// `caasiope init` with the currencies and the replication; the processes are not started.
    fn init(&mut self, currencies: &[(&str, &str)], clickhouse: &str, database: &str) {
        let mut cmd = bin();
        cmd.args(["init", "--validators", &VALIDATORS.to_string(), "--dir"])
            .arg(self.net_dir())
            .args(["--base-port", &free_base().to_string()])
            .args(["--block-interval-ms", &BLOCK_INTERVAL_MS.to_string(), "--transport", "epoll"])
            .args(["--clickhouse", clickhouse, "--clickhouse-database", database]);
        for (symbol, issuer) in currencies {
            cmd.args(["--currency", &format!("{symbol}={issuer}")]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let procs: Vec<Proc> = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Proc { name: text(&p["name"]), config: text(&p["config"]).into(), child: None })
            .collect();
        assert_eq!(procs.len(), VALIDATORS + 1, "{report}");
        let api = report["processes"].as_array().unwrap().iter().find_map(|p| p["api"].as_str()).unwrap();
        self.api = format!("http://{api}");
        self.procs = procs;
    }

    fn net_dir(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    /// A file of the test's directory (command lines split at whitespace: it has none).
    fn path(&self, name: &str) -> String {
        let path = self.dir.path().join(name).to_str().unwrap().to_owned();
        assert!(!path.contains(char::is_whitespace), "{path}");
        path
    }

    fn start_all(&mut self) {
        let logs = self.net_dir();
        for p in &mut self.procs {
            let log = std::fs::File::create(logs.join(format!("{}.log", p.name))).unwrap();
            let child = bin()
                .arg("run")
                .arg("--config")
                .arg(&p.config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            p.child = Some(child);
        }
    }

    /// SIGTERM to every process; each must exit cleanly.
    fn stop_all(&mut self) {
        for p in &mut self.procs {
            let Some(mut c) = p.child.take() else { continue };
            // SAFETY: kill(2) on our own child with a valid signal.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let status = c.wait().unwrap();
            assert!(status.success(), "{} exited with {status}", p.name);
        }
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let log =
                std::fs::read_to_string(self.net_dir().join(format!("{}.log", p.name))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("--- {}\n{}\n", p.name, lines[lines.len().saturating_sub(12)..].join("\n"));
        }
        out
    }

    fn wait(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(WAIT_S);
        while Instant::now() < until {
            if ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {WAIT_S} s waiting for {what}");
    }

    /// Runs `caasiope wallet LINE`: `line` split at whitespace (no argument here has any),
    /// [`KEYS`] and [`API`] expanded; `stdin` on its input.
    fn run(&self, line: &str, stdin: Option<&str>) -> Output {
        let mut cmd = bin();
        cmd.arg("wallet")
            .env("CAASIOPE_WALLET_PASSPHRASE", PASSPHRASE)
            .env_remove("CAASIOPE_WALLET_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for a in line.split_whitespace() {
            match a {
                KEYS => cmd.args(["--wallet-dir", &self.wallet_dir]),
                API => cmd.args(["--api", &self.api]),
                a => cmd.arg(a),
            };
        }
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// The standard output of a wallet command that must succeed.
    fn ok(&self, line: &str) -> String {
        self.ok_with(line, None)
    }

    fn ok_with(&self, line: &str, stdin: Option<&str>) -> String {
        let out = self.run(line, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "wallet {line} failed ({}): {stderr}", out.status);
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, line: &str) -> Value {
        let out = self.ok(line);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("wallet {line}: not JSON ({e}): {out}"))
    }

    /// A wallet command that must fail: status 2, nothing on stdout, and an `error:` line last
    /// on stderr (the exit contract of `node/src/exit.rs`; `wallet sign` shows the transaction
    /// on stderr before). Returns that line.
    fn refused(&self, line: &str) -> String {
        let out = self.run(line, None);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "wallet {line} should fail: {stderr}");
        assert!(out.stdout.is_empty(), "wallet {line} printed {}", String::from_utf8_lossy(&out.stdout));
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "wallet {line}: {stderr}");
        last.to_owned()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self.agent.get(&format!("{}{path}", self.api)).call().unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}")))
    }

    fn api(&self, path: &str) -> Value {
        let (status, v) = self.get(path);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    fn post_tx(&self, bytes: &[u8]) -> (u16, Value) {
        let mut r = self
            .agent
            .post(&format!("{}/v1/transactions", self.api))
            .header("content-type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")))
    }

    /// The explorer's metric `name` (labels included), if it reports it.
    fn metric(&self, name: &str) -> Option<i64> {
        let mut r = self.agent.get(&format!("{}/metrics", self.api)).call().ok()?;
        let body = r.body_mut().read_to_string().ok()?;
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    fn status(&self) -> Value {
        self.api("/v1/status")
    }

    /// Waits until the latest ledger's time is at least `ms` (the chain's clock, not ours).
    fn wait_ledger_time(&self, what: &str, ms: i64) {
        self.wait(what, || int(&self.status()["timestamp_ms"]) >= ms);
    }

    fn wait_committed(&self, id: &str) {
        self.wait(&format!("transaction {id} committed"), || {
            let (status, v) = self.get(&format!("/v1/transactions/{id}"));
            assert!(
                status == 404 || matches!(v["status"].as_str(), Some("pending" | "committed")),
                "transaction {id}: {v}"
            );
            v["status"] == "committed"
        });
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: the processes' last lines:\n{}", self.log_tail());
        }
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A database of the ClickHouse server, dropped at the end whatever happens.
struct ClickHouse {
    url: String,
    database: String,
    agent: ureq::Agent,
}

impl ClickHouse {
    fn new(url: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            database: format!("caasiope_e2e_{}_{nanos}", std::process::id()),
            agent,
        }
    }

    fn execute(&self, sql: &str) -> String {
        let mut r = self.agent.post(&self.url).send(sql.as_bytes()).unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "ClickHouse refused {sql}: {body}");
        body
    }

    /// The rows of a SELECT (`{db}` stands for the database).
    fn rows(&self, sql: &str) -> Vec<Value> {
        let sql = format!("{} FORMAT JSON", sql.replace("{db}", &format!("`{}`", self.database)));
        let body = self.execute(&sql);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{sql}: not JSON: {body}"));
        v["data"].as_array().unwrap().clone()
    }

    fn one(&self, sql: &str) -> Value {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.into_iter().next().unwrap()
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self
            .agent
            .post(&self.url)
            .send(format!("DROP DATABASE IF EXISTS `{}`", self.database).as_bytes());
    }
}

/// `(address, currency, amount)`.
type Leg = (String, String, i64);

fn leg(address: &str, currency: &str, amount: i64) -> Leg {
    (address.to_owned(), currency.to_owned(), amount)
}

/// What one transaction must do, as the command that made it says.
#[derive(Debug)]
struct Expected {
    what: &'static str,
    id: String,
    inputs: Vec<Leg>,
    outputs: Vec<Leg>,
    fee_payer: String,
    message: Vec<u8>,
}

/// The books the test keeps: every committed transaction and the balances they must leave.
struct Books {
    fee_account: String,
    fee: i64,
    balances: BTreeMap<(String, String), i64>,
    txs: Vec<Expected>,
}

impl Books {
    fn record(&mut self, what: &'static str, id: &str, inputs: Vec<Leg>, outputs: Vec<Leg>, fee_payer: &str) {
        self.record_with_message(what, id, inputs, outputs, fee_payer, b"");
    }

    fn record_with_message(
        &mut self,
        what: &'static str,
        id: &str,
        inputs: Vec<Leg>,
        outputs: Vec<Leg>,
        fee_payer: &str,
        message: &[u8],
    ) {
        assert_eq!(id.len(), 64, "{what}: id {id:?}");
        for (a, c, x) in &inputs {
            *self.balances.entry((a.clone(), c.clone())).or_default() -= x;
        }
        for (a, c, x) in &outputs {
            *self.balances.entry((a.clone(), c.clone())).or_default() += x;
        }
        *self.balances.entry((fee_payer.to_owned(), "CAS".into())).or_default() -= self.fee;
        *self.balances.entry((self.fee_account.clone(), "CAS".into())).or_default() += self.fee;
        self.txs.push(Expected {
            what,
            id: id.to_owned(),
            inputs,
            outputs,
            fee_payer: fee_payer.to_owned(),
            message: message.to_vec(),
        });
    }

    fn balance(&self, address: &str, currency: &str) -> i64 {
        self.balances.get(&(address.to_owned(), currency.to_owned())).copied().unwrap_or(0)
    }

    /// Every non-zero balance of `address`, by currency.
    fn of(&self, address: &str) -> BTreeMap<String, i64> {
        self.balances
            .iter()
            .filter(|((a, _), x)| a == address && **x != 0)
            .map(|((_, c), x)| (c.clone(), *x))
            .collect()
    }

    fn addresses(&self) -> BTreeSet<String> {
        self.balances.keys().map(|(a, _)| a.clone()).collect()
    }
}

/// The legs of a transaction's JSON (`inputs` or `outputs`), in order.
fn legs_of(tx: &Value, side: &str) -> Vec<Leg> {
    tx[side]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (text(&l["address"]), text(&l["currency"]), int(&l["amount"])))
        .collect()
}

fn sorted(mut legs: Vec<Leg>) -> Vec<Leg> {
    legs.sort();
    legs
}

/// The `id` of a wallet command's JSON answer, checked committed.
fn committed_id(v: &Value) -> String {
    assert_eq!(v["status"], "committed", "{v}");
    text(&v["id"])
}

/// The balances of an account answer (`GET /v1/accounts/…` or `wallet balance`), by currency.
fn balances_of(account: &Value) -> BTreeMap<String, i64> {
    account["balances"]
        .as_array()
        .unwrap_or_else(|| panic!("no balances: {account}"))
        .iter()
        .map(|b| (text(&b["currency"]), int(&b["amount"])))
        .collect()
}

/// Signed bytes from a partially signed file (`wallet build`/`sign`) as it stands, whatever
/// the wallet thinks of it: for what only the chain may refuse.
fn signed_bytes_of(partial: &Value) -> Vec<u8> {
    let tx: Transaction = decode_exact(&hex::decode(text(&partial["unsigned"])).unwrap()).unwrap();
    let mut signatures: Vec<TxSignature> = partial["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut signature = [0u8; 64];
            hex::decode_to_slice(text(&s["signature"]), &mut signature).unwrap();
            TxSignature {
                public_key: PublicKey::from_hex(&text(&s["public_key"])).unwrap(),
                signature: Signature(signature),
            }
        })
        .collect();
    signatures.sort_by_key(|s| s.public_key);
    SignedTransaction { tx, signatures }.to_bytes()
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_json(path: &str, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[test]
fn e2e_swap_htlc_channel_gateway_tokens_proofs_and_clickhouse_replica() {
    let Ok(clickhouse_url) = std::env::var("CAASIOPE_CLICKHOUSE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CAASIOPE_CLICKHOUSE_URL is not set: the end-to-end test needs a ClickHouse server \
             (scripts/test starts one; or scripts/clickhouse start DIR)"
        );
        eprintln!(
            "e2e: skipped, CAASIOPE_CLICKHOUSE_URL is not set (scripts/clickhouse start DIR prints one)"
        );
        return;
    };
    let started = Instant::now();
    // Declared before the network, so dropped after it: the database goes once nothing writes.
    let ch = ClickHouse::new(&clickhouse_url);

    // Keys first: the issuers' addresses go into the genesis. BTC's issuer is a 2-of-3 MultiSig
    // of a consortium's keys; ETH's an ECDSA gateway key.
    let mut net = Net::new();
    let mut addr = BTreeMap::new();
    for name in ["a", "b", "c", "gateway", "alice", "bob"] {
        addr.insert(name, net.ok(&format!("new @keys --name {name}")).trim().to_owned());
    }
    let issuer_file = net.path("btc-issuer.json");
    let (a, b, c) = (&addr["a"], &addr["b"], &addr["c"]);
    let btc_issuer = net.ok(&format!(
        "multisig address --required 2 --signer {a} --signer {b} --signer {c} --out {issuer_file}"
    ));
    let btc_issuer = btc_issuer.trim().to_owned();
    assert!(btc_issuer.starts_with("qg"), "a MultiSig address: {btc_issuer}");
    net.init(&[("BTC", &btc_issuer), ("ETH", &addr["gateway"])], &clickhouse_url, &ch.database);
    net.start_all();
    net.wait("the explorer's API at height 2", || {
        let ok = net.agent.get(&format!("{}/healthz", net.api)).call().is_ok_and(|r| r.status() == 200);
        ok && net.get("/v1/status").1["height"].as_u64().is_some_and(|h| h >= 2)
    });
    eprintln!("e2e: network up after {:.1} s", started.elapsed().as_secs_f64());

    let status = net.status();
    assert_eq!(status["issuers"]["BTC"], btc_issuer.as_str(), "{status}");
    assert_eq!(status["issuers"]["ETH"], addr["gateway"].as_str(), "{status}");
    assert_eq!(status["validators"].as_array().unwrap().len(), VALIDATORS);
    let fee = int(&status["min_fee"]);
    assert!(fee > 0, "{status}");
    let faucet_key = std::fs::read_to_string(net.net_dir().join("faucet.key")).unwrap();
    let faucet = net.ok_with("import @keys --name faucet", Some(faucet_key.trim())).trim().to_owned();
    let (alice, bob, gateway) = (&addr["alice"], &addr["bob"], &addr["gateway"]);
    let (faucet, btc_issuer) = (&faucet, &btc_issuer);

    // The books start from the genesis balances: the faucet's CAS, the CAS issuer's −supply.
    let genesis_path = net.net_dir().join("genesis.toml").to_str().unwrap().to_owned();
    let genesis: toml::Value = toml::from_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
    let mut books =
        Books { fee_account: text(&status["fee_account"]), fee, balances: BTreeMap::new(), txs: vec![] };
    for b in genesis["balances"].as_array().unwrap() {
        let (address, currency) = (b["address"].as_str().unwrap(), b["currency"].as_str().unwrap());
        let amount = b["amount"].as_integer().unwrap();
        *books.balances.entry((address.to_owned(), currency.to_owned())).or_default() += amount;
        let issuer = text(&status["issuers"][currency]);
        *books.balances.entry((issuer, currency.to_owned())).or_default() -= amount;
    }
    assert_eq!(books.balance(&text(&status["issuers"]["CAS"]), "CAS"), -10_000_000 * COIN, "the CAS supply");
    assert_eq!(books.balance(faucet, "CAS"), 10_000_000 * COIN, "the faucet's genesis CAS");

    // Funding: four payments from the faucet, submitted without waiting, all committed.
    let mut funding = Vec::new();
    for (to, amount) in [(alice, 20 * COIN), (bob, 20 * COIN), (gateway, COIN), (btc_issuer, COIN)] {
        let id = net.ok(&format!(
            "send @keys @api --from faucet --to {to} --amount {} --currency CAS",
            coins(amount)
        ));
        let id = id.trim().to_owned();
        books.record("funding", &id, vec![leg(faucet, "CAS", amount)], vec![leg(to, "CAS", amount)], faucet);
        funding.push(id);
    }
    for id in &funding {
        net.wait_committed(id);
    }

    // BTC issued by its MultiSig issuer: a file, signed by two of its three keys, the fee
    // paid by the issuer itself (in the CAS it was funded with).
    let issue_file = net.path("issue-btc.json");
    let v = net.json(&format!(
        "issue @keys @api --issuer-file {issuer_file} --to {alice} --amount 3 --currency BTC \
         --out {issue_file}"
    ));
    assert_eq!(v["complete"], false, "{v}");
    let issue_id = text(&v["id"]);
    // A key the transaction does not need is refused; so is submitting it half signed.
    net.refused(&format!("sign @keys --name alice {issue_file}"));
    assert_eq!(net.json(&format!("sign @keys --name a {issue_file}"))["complete"], false);
    net.refused(&format!("submit @api {issue_file}"));
    assert_eq!(net.json(&format!("sign @keys --name c {issue_file}"))["complete"], true);
    assert_eq!(committed_id(&net.json(&format!("submit @api {issue_file} --wait"))), issue_id);
    let (from, to) = (leg(btc_issuer, "BTC", 3 * COIN), leg(alice, "BTC", 3 * COIN));
    books.record("BTC issue (MultiSig issuer)", &issue_id, vec![from], vec![to], btc_issuer);

    // ETH deposit: the gateway issues 10 ETH to bob, the Ethereum transaction in the message.
    let deposit_ref = format!("eth-tx:0x{}", "5e".repeat(32));
    let v = net.json(&format!(
        "issue @keys @api --from gateway --to {bob} --amount 10 --currency ETH --message {deposit_ref} --wait"
    ));
    let deposit_id = committed_id(&v);
    let (from, to) = (leg(gateway, "ETH", 10 * COIN), leg(bob, "ETH", 10 * COIN));
    books.record_with_message(
        "ETH deposit",
        &deposit_id,
        vec![from],
        vec![to],
        gateway,
        deposit_ref.as_bytes(),
    );

    // An HTLC to be refunded: alice locks 0.25 BTC for bob for 20 s of ledger time (long
    // enough for the refusals below on a loaded machine; the other flows fill the wait).
    let refund_file = net.path("htlc-refund.json");
    let v = net.json(&format!(
        "htlc create @keys @api --from alice --receiver {bob} --amount 0.25 --currency BTC --lock-seconds 20 \
         --out {refund_file} --wait"
    ));
    let refund_htlc = text(&v["htlc"]);
    let refund_after_ms = int(&v["refund_after_unix_seconds"]) * 1000;
    let quarter = COIN / 4;
    let (from, to) = (leg(alice, "BTC", quarter), leg(&refund_htlc, "BTC", quarter));
    books.record("HTLC (to refund) funding", &committed_id(&v), vec![from], vec![to], alice);
    // A refund before the lock: the wallet refuses it …
    let why = net.refused(&format!("htlc refund @keys @api --name alice --htlc {refund_file} --wait"));
    assert!(why.contains("refunded from ledger time"), "{why}");
    // … and so does the chain, when the same refund is signed and posted anyway.
    let early_file = net.path("early-refund.json");
    net.json(&format!(
        "build @api --input {refund_htlc}:BTC:0.25 --output {alice}:BTC:0.25 --fee-payer {alice} \
         --declare {refund_file} --out {early_file}"
    ));
    let v = net.json(&format!("sign @keys --name alice {early_file}"));
    assert_eq!(v["complete"], false, "the time lock is not satisfied yet: {v}");
    let early_id = text(&v["id"]);
    let (code, answer) = net.post_tx(&signed_bytes_of(&read_json(&early_file)));
    eprintln!("e2e: the early refund posted anyway: {code} {answer}");
    if code == 202 {
        // Admitted while its lock holds: it must never commit, lock or not.
        net.wait("the early refund to be refused", || {
            let v = net.api(&format!("/v1/transactions/{early_id}"));
            assert_ne!(v["status"], "committed", "a refund before its lock time committed: {v}");
            v["status"] != "pending"
        });
    } else {
        assert_eq!((code, &answer["error"]["code"]), (400, &json!("rejected")), "{answer}");
    }

    // A payment channel from bob to alice in ETH (channels take any currency), 1.5 ETH,
    // expiring 20 s of ledger time from now (room for the claims on a loaded machine; the
    // other flows fill the wait).
    let channel_file = net.path("channel.json");
    let v = net.json(&format!(
        "channel open @keys @api --from bob --payee {alice} --currency ETH --amount 1.5 --expiry-seconds 20 \
         --out {channel_file} --wait"
    ));
    let channel = text(&v["channel"]);
    let channel_expiry_ms = int(&v["expiry_ms"]);
    let channel_in = 3 * COIN / 2;
    let (from, to) = (leg(bob, "ETH", channel_in), leg(&channel, "ETH", channel_in));
    books.record("channel open", &committed_id(&v), vec![from], vec![to], bob);
    // The payer cannot take the funds back before expiry.
    let why = net.refused(&format!("channel close @keys @api --name bob --channel {channel_file}"));
    assert!(why.contains("expires at ledger time"), "{why}");
    // Off chain: two vouchers for cumulative amounts; the payee claims with each in turn.
    let (voucher1, voucher2) = (net.path("voucher-1.json"), net.path("voucher-2.json"));
    for (file, cumulative) in [(&voucher1, "0.4"), (&voucher2, "1")] {
        let v = net.json(&format!(
            "channel voucher @keys --name bob --channel {channel_file} --cumulative {cumulative} --out {file}"
        ));
        assert_eq!(v["channel"], channel.as_str(), "{v}");
    }
    let mut claimed = 0;
    for (file, cumulative) in [(&voucher1, 4 * COIN / 10), (&voucher2, COIN)] {
        let v = net.json(&format!(
            "channel claim @keys @api --name alice --channel {channel_file} --voucher {file} --wait"
        ));
        let (from, to) =
            (leg(&channel, "ETH", cumulative - claimed), leg(alice, "ETH", cumulative - claimed));
        books.record("channel claim", &committed_id(&v), vec![from], vec![to], alice);
        claimed = cumulative;
    }
    assert_eq!(int(&net.api(&format!("/v1/accounts/{channel}"))["channel_claimed"]), COIN);
    // The first voucher covers nothing more.
    let why = net.refused(&format!(
        "channel claim @keys @api --name alice --channel {channel_file} --voucher {voucher1} --wait"
    ));
    eprintln!("e2e: a stale voucher: {why}");

    // The swap: alice's 1 BTC for bob's 2 ETH in one transaction, alice paying the fee;
    // one file, signed by each party, then submitted.
    let swap_file = net.path("swap.json");
    let swap_in = vec![leg(alice, "BTC", COIN), leg(bob, "ETH", 2 * COIN)];
    let swap_out = vec![leg(bob, "BTC", COIN), leg(alice, "ETH", 2 * COIN)];
    let v = net.json(&format!(
        "build @api --input {alice}:BTC:1 --input {bob}:ETH:2 --output {bob}:BTC:1 --output {alice}:ETH:2 \
         --fee-payer {alice} --out {swap_file}"
    ));
    let swap_id = text(&v["id"]);
    assert_eq!(net.json(&format!("sign @keys --name alice {swap_file}"))["complete"], false);
    net.refused(&format!("submit @api {swap_file}"));
    assert_eq!(net.json(&format!("sign @keys --name bob {swap_file}"))["complete"], true);
    assert_eq!(committed_id(&net.json(&format!("submit @api {swap_file} --wait"))), swap_id);
    books.record("swap", &swap_id, swap_in.clone(), swap_out.clone(), alice);
    // Replayed, the committed swap is refused (its id is in the replay set), by the wallet and
    // by the API; the balances below show it did not apply twice.
    let why = net.refused(&format!("submit @api {swap_file} --wait"));
    eprintln!("e2e: the swap submitted again: {why}");
    let bytes = hex::decode(text(&net.api(&format!("/v1/transactions/{swap_id}"))["bytes"])).unwrap();
    let (code, answer) = net.post_tx(&bytes);
    assert_eq!((code, &answer["error"]["code"]), (400, &json!("rejected")), "the swap replayed: {answer}");

    // The cross-chain pattern on one SHA-256 secret: alice (who holds the secret) locks
    // 0.5 BTC for bob; bob locks 1 ETH for alice under the same hash (the "other chain" side,
    // with the shorter lock); alice claims the ETH, revealing the secret; bob reads it back from
    // the chain and claims the BTC.
    let btc_htlc_file = net.path("htlc-btc.json");
    let v = net.json(&format!(
        "htlc create @keys @api --from alice --receiver {bob} --amount 0.5 --currency BTC --lock-seconds 600 \
         --out {btc_htlc_file} --wait"
    ));
    let btc_htlc = text(&v["htlc"]);
    let (secret, hash) = (text(&v["secret"]), text(&v["hash"]));
    let sha256 = hex::encode(sha2::Sha256::digest(hex::decode(&secret).unwrap()));
    assert_eq!(sha256, hash, "the HTLC's hash is the SHA-256 of the secret");
    let (from, to) = (leg(alice, "BTC", COIN / 2), leg(&btc_htlc, "BTC", COIN / 2));
    books.record("HTLC (BTC) funding", &committed_id(&v), vec![from], vec![to], alice);
    let eth_htlc_file = net.path("htlc-eth.json");
    let v = net.json(&format!(
        "htlc create @keys @api --from bob --receiver {alice} --amount 1 --currency ETH --lock-seconds 300 \
         --hash {hash} --out {eth_htlc_file} --wait"
    ));
    assert!(v.get("secret").is_none(), "bob does not know the secret: {v}");
    let eth_htlc = text(&v["htlc"]);
    let (from, to) = (leg(bob, "ETH", COIN), leg(&eth_htlc, "ETH", COIN));
    books.record("HTLC (ETH) funding", &committed_id(&v), vec![from], vec![to], bob);
    let v = net
        .json(&format!("htlc claim @keys @api --name alice --htlc {eth_htlc_file} --secret {secret} --wait"));
    let reveal_id = committed_id(&v);
    let (from, to) = (leg(&eth_htlc, "ETH", COIN), leg(alice, "ETH", COIN));
    books.record("HTLC (ETH) claim", &reveal_id, vec![from], vec![to], alice);
    let reveal = net.api(&format!("/v1/transactions/{reveal_id}"));
    let revealed = reveal["transaction"]["declarations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "secret")
        .map(|d| text(&d["preimage"]))
        .unwrap_or_else(|| panic!("the claim reveals no secret: {reveal}"));
    assert_eq!(revealed, secret);
    let v = net
        .json(&format!("htlc claim @keys @api --name bob --htlc {btc_htlc_file} --secret {revealed} --wait"));
    let (from, to) = (leg(&btc_htlc, "BTC", COIN / 2), leg(bob, "BTC", COIN / 2));
    books.record("HTLC (BTC) claim", &committed_id(&v), vec![from], vec![to], bob);

    // ETH withdrawal: bob sends 1.5 ETH back to the gateway, his Ethereum address in the
    // message.
    let withdraw_ref = format!("withdraw:0x{}", "b0".repeat(20));
    let v = net.json(&format!(
        "destroy @keys @api --from bob --amount 1.5 --currency ETH --message {withdraw_ref} --wait"
    ));
    let withdraw_id = committed_id(&v);
    let (from, to) = (leg(bob, "ETH", 3 * COIN / 2), leg(gateway, "ETH", 3 * COIN / 2));
    books.record_with_message(
        "ETH withdrawal",
        &withdraw_id,
        vec![from],
        vec![to],
        bob,
        withdraw_ref.as_bytes(),
    );
    for (id, message) in [(&deposit_id, &deposit_ref), (&withdraw_id, &withdraw_ref)] {
        let v = net.api(&format!("/v1/transactions/{id}"));
        assert_eq!(v["transaction"]["message"], hex::encode(message), "{v}");
    }

    // BTC destroyed: bob, a holder, sends 0.5 BTC back to the MultiSig issuer.
    let v = net.json("destroy @keys @api --from bob --amount 0.5 --currency BTC --wait");
    let (from, to) = (leg(bob, "BTC", COIN / 2), leg(btc_issuer, "BTC", COIN / 2));
    books.record("BTC destroy", &committed_id(&v), vec![from], vec![to], bob);

    // After its lock, alice's refund goes through.
    net.wait_ledger_time("the HTLC's lock time", refund_after_ms);
    let v = net.json(&format!("htlc refund @keys @api --name alice --htlc {refund_file} --wait"));
    let (from, to) = (leg(&refund_htlc, "BTC", quarter), leg(alice, "BTC", quarter));
    books.record("HTLC refund", &committed_id(&v), vec![from], vec![to], alice);
    // After expiry, bob closes the channel and takes what alice did not claim.
    net.wait_ledger_time("the channel's expiry", channel_expiry_ms);
    let v = net.json(&format!("channel close @keys @api --name bob --channel {channel_file} --wait"));
    let (from, to) = (leg(&channel, "ETH", channel_in - COIN), leg(bob, "ETH", channel_in - COIN));
    books.record("channel close", &committed_id(&v), vec![from], vec![to], bob);
    let early = net.get(&format!("/v1/transactions/{early_id}"));
    assert_ne!(early.1["status"], "committed", "the early refund committed after all: {early:?}");
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("e2e: {} transactions committed after {elapsed:.1} s", books.txs.len());

    // The flows, by hand: what each party must hold now (fees: alice paid 7, bob 6).
    let expect_by_hand = [
        (alice, "BTC", 3 * COIN - quarter - COIN - COIN / 2 + quarter),
        (alice, "ETH", COIN + 2 * COIN + COIN),
        (alice, "CAS", 20 * COIN - 7 * fee),
        (bob, "BTC", COIN + COIN / 2 - COIN / 2),
        (bob, "ETH", 10 * COIN - channel_in - 2 * COIN - COIN - 3 * COIN / 2 + (channel_in - COIN)),
        (bob, "CAS", 20 * COIN - 6 * fee),
        (gateway, "ETH", -10 * COIN + 3 * COIN / 2),
        (gateway, "CAS", COIN - fee),
        (btc_issuer, "BTC", -3 * COIN + COIN / 2),
        (btc_issuer, "CAS", COIN - fee),
        (&refund_htlc, "BTC", 0),
        (&btc_htlc, "BTC", 0),
        (&eth_htlc, "ETH", 0),
        (&channel, "ETH", 0),
    ];
    for (address, currency, amount) in expect_by_hand {
        assert_eq!(
            books.balance(address, currency),
            amount,
            "the books disagree with the flows: {address} {currency}"
        );
    }
    check_api(&net, &books);
    for name in ["alice", "bob"] {
        let v = net.json(&format!("balance @keys @api --name {name}"));
        assert_eq!(balances_of(&v), books.of(&addr[name]), "wallet balance --name {name}: {v}");
    }
    check_proofs(&net, &books, &genesis_path, &swap_id, &issue_id, alice);
    let head = int(&net.status()["height"]) as u64;
    check_replica(&net, &ch, &books, head);
    // The swap's legs in the replica are exactly its inputs, outputs and fee.
    let rows = ch.rows(&format!(
        "SELECT kind, address, currency, amount FROM {{db}}.legs WHERE tx_id = '{swap_id}' ORDER BY leg_index"
    ));
    let mut want: Vec<Leg> = swap_in.iter().map(|(a, c, x)| (a.clone(), c.clone(), -x)).collect();
    want.extend(swap_out);
    want.extend([leg(alice, "CAS", -fee), leg(&books.fee_account, "CAS", fee)]);
    let got: Vec<Leg> =
        rows.iter().map(|r| (text(&r["address"]), text(&r["currency"]), int(&r["amount"]))).collect();
    assert_eq!(sorted(got), sorted(want), "the swap's legs: {rows:?}");
    // The secret the ETH claim revealed is in the declarations table.
    let rows = ch.rows(&format!(
        "SELECT json FROM {{db}}.declarations WHERE tx_id = '{reveal_id}' AND kind = 'secret'"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(text(&rows[0]["json"]).contains(&secret), "{rows:?}");

    net.stop_all();
    eprintln!("e2e: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Every transaction is committed as its command said (legs, fee payer, fee, message), and
/// every account the books know holds exactly what they say, no more currencies.
fn check_api(net: &Net, books: &Books) {
    for e in &books.txs {
        let v = net.api(&format!("/v1/transactions/{}", e.id));
        assert_eq!(v["status"], "committed", "{}: {v}", e.what);
        let tx = &v["transaction"];
        assert_eq!(sorted(legs_of(tx, "inputs")), sorted(e.inputs.clone()), "{} inputs: {v}", e.what);
        assert_eq!(sorted(legs_of(tx, "outputs")), sorted(e.outputs.clone()), "{} outputs: {v}", e.what);
        assert_eq!(tx["fee"]["payer"], e.fee_payer.as_str(), "{} fee payer: {v}", e.what);
        assert_eq!(int(&tx["fee"]["amount"]), books.fee, "{} fee: {v}", e.what);
        assert_eq!(tx["message"], hex::encode(&e.message), "{} message: {v}", e.what);
    }
    for address in books.addresses() {
        let account = net.api(&format!("/v1/accounts/{address}"));
        assert_eq!(balances_of(&account), books.of(&address), "balances of {address}: {account}");
    }
}

/// The swap's inclusion proof and alice's account proof verify offline against the genesis
/// file; tampered copies do not.
fn check_proofs(net: &Net, books: &Books, genesis: &str, swap_id: &str, other_id: &str, alice: &str) {
    let tx_proof = net.path("swap.proof.json");
    net.json(&format!("proof tx @api {swap_id} --out {tx_proof}"));
    let v = net.json(&format!("verify-proof --proof {tx_proof} --genesis {genesis}"));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["tx_id"], swap_id, "{v}");
    let account_proof = net.path("alice.proof.json");
    net.json(&format!("proof account @api {alice} --out {account_proof}"));
    let v = net.json(&format!("verify-proof --proof {account_proof} --genesis {genesis}"));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["account"]["address"], alice, "{v}");
    assert_eq!(balances_of(&v["account"]), books.of(alice), "the proven balances: {v}");

    let tampered = net.path("tampered.proof.json");
    let verify = |file: &Value| {
        write_json(&tampered, file);
        format!("verify-proof --proof {tampered} --genesis {genesis}")
    };
    let refuse = |file: &Value, what: &str| {
        let why = net.refused(&verify(file));
        eprintln!("e2e: {what} refused: {why}");
    };
    let mut file = read_json(&tx_proof);
    let bytes = hex::decode(text(&file["proof"])).unwrap();
    let mut proof: TxInclusionProof = decode_exact(&bytes).unwrap();
    proof.tx_id = Hash::from_hex(other_id).unwrap();
    file["proof"] = json!(hex::encode(proof.to_bytes()));
    refuse(&file, "a transaction proof naming another transaction");
    let mut flipped = bytes;
    // In the header's previous-ledger hash: the certificate no longer signs it.
    flipped[20] ^= 1;
    file["proof"] = json!(hex::encode(&flipped));
    refuse(&file, "a transaction proof with a flipped header byte");
    let mut file = read_json(&account_proof);
    let mut proof: AccountStateProof = decode_exact(&hex::decode(text(&file["proof"])).unwrap()).unwrap();
    // Re-encoded untouched, it still verifies: what is refused next is the forgery alone.
    file["proof"] = json!(hex::encode(proof.to_bytes()));
    net.json(&verify(&file));
    proof.account.set_balance("BTC".parse().unwrap(), 1_000 * COIN);
    file["proof"] = json!(hex::encode(proof.to_bytes()));
    refuse(&file, "an account proof with a forged balance");
}

/// Once every table holds ledgers `0..=head`, the ClickHouse replica is the chain: its
/// ledgers are the API's, its transactions the books', each transaction's legs its inputs,
/// outputs and fee, and per (address, currency) the balance changes sum to the balance.
fn check_replica(net: &Net, ch: &ClickHouse, books: &Books, head: u64) {
    let fee = books.fee;
    net.wait("the replication to reach the head", || {
        ["ledgers", "transactions", "legs", "declarations", "balance_changes"].iter().all(|t| {
            let replicated = net.metric(&format!("caasiope_replication_ledgers{{table=\"{t}\"}}"));
            replicated.is_some_and(|n| n > head as i64)
        })
    });
    eprintln!(
        "e2e: replicated to {head}; lag {:?} ledgers, {:?} errors",
        net.metric("caasiope_replication_lag_ledgers"),
        net.metric("caasiope_replication_errors_total")
    );

    // Ledgers: every height once, each row the API's ledger.
    let mut api_ids = BTreeMap::new();
    let mut api_ledgers = Vec::new();
    for h in 1..=head {
        let ledger = net.api(&format!("/v1/ledgers/{h}"));
        let ids = ledger["transactions"].as_array().unwrap();
        assert_eq!(int(&ledger["tx_count"]), ids.len() as i64, "{ledger}");
        for (i, id) in ids.iter().enumerate() {
            api_ids.insert(text(id), (h, i as u64));
        }
        api_ledgers.push(ledger);
    }
    let ours: BTreeSet<&str> = books.txs.iter().map(|e| e.id.as_str()).collect();
    let on_chain: BTreeSet<&str> = api_ids.keys().map(String::as_str).collect();
    assert_eq!(on_chain, ours, "the chain holds exactly the transactions of the flows");
    let row = ch.one(&format!(
        "SELECT count() AS n, uniqExact(height) AS heights, min(height) AS low, max(height) AS high, \
         sum(tx_count) AS txs FROM {{db}}.ledgers WHERE height <= {head}"
    ));
    assert_eq!([int(&row["n"]), int(&row["heights"])], [head as i64 + 1; 2], "{row}");
    assert_eq!([int(&row["low"]), int(&row["high"])], [0, head as i64], "{row}");
    assert_eq!(int(&row["txs"]), api_ids.len() as i64, "{row}");
    let rows = ch.rows(&format!(
        "SELECT height, hash, previous_hash, tx_root, state_root, validator_set_hash, timestamp_ms, \
         tx_count, certificate_round, certificate_signers FROM {{db}}.ledgers \
         WHERE height BETWEEN 1 AND {head} ORDER BY height"
    ));
    assert_eq!(rows.len(), api_ledgers.len());
    for (r, l) in rows.iter().zip(&api_ledgers) {
        for field in ["height", "timestamp_ms", "tx_count"] {
            assert_eq!(int(&r[field]), int(&l[field]), "{field}: {r} {l}");
        }
        for field in ["hash", "previous_hash", "tx_root", "state_root", "validator_set_hash"] {
            assert_eq!(r[field], l[field], "{field}: {r} {l}");
        }
        assert_eq!(int(&r["certificate_round"]), int(&l["certificate"]["round"]), "{r} {l}");
        let signers = l["certificate"]["signers"].as_array().unwrap().len() as i64;
        assert_eq!(int(&r["certificate_signers"]), signers, "{r} {l}");
        assert!(signers * 3 > VALIDATORS as i64 * 2, "a quorum certifies every ledger: {l}");
    }

    // Transactions: the same ids at the same places, fee and message included.
    let rows = ch.rows(&format!(
        "SELECT id, height, tx_index, fee_payer, fee_amount, message_hex FROM {{db}}.transactions \
         WHERE height <= {head} ORDER BY height, tx_index"
    ));
    assert_eq!(rows.len(), api_ids.len(), "{rows:?}");
    for r in &rows {
        let id = text(&r["id"]);
        let at = (int(&r["height"]) as u64, int(&r["tx_index"]) as u64);
        assert_eq!(api_ids.get(&id), Some(&at), "{r}");
        let e = books.txs.iter().find(|e| e.id == id).unwrap();
        assert_eq!((text(&r["fee_payer"]), int(&r["fee_amount"])), (e.fee_payer.clone(), fee), "{r}");
        assert_eq!(text(&r["message_hex"]), hex::encode(&e.message), "{}: {r}", e.what);
    }

    // Legs: each transaction's inputs (−), outputs (+), fee (−) and fee credit (+), in order.
    for e in &books.txs {
        let rows = ch.rows(&format!(
            "SELECT kind, address, currency, amount FROM {{db}}.legs WHERE tx_id = '{}' ORDER BY leg_index",
            e.id
        ));
        let got: Vec<(String, Leg)> = rows
            .iter()
            .map(|r| (text(&r["kind"]), (text(&r["address"]), text(&r["currency"]), int(&r["amount"]))))
            .collect();
        let tx = &net.api(&format!("/v1/transactions/{}", e.id))["transaction"];
        let mut want: Vec<(String, Leg)> = Vec::new();
        want.extend(legs_of(tx, "inputs").into_iter().map(|(a, c, x)| ("input".into(), (a, c, -x))));
        want.extend(legs_of(tx, "outputs").into_iter().map(|l| ("output".into(), l)));
        want.push(("fee".into(), leg(&e.fee_payer, "CAS", -fee)));
        want.push(("fee_credit".into(), leg(&books.fee_account, "CAS", fee)));
        assert_eq!(got, want, "legs of {} ({})", e.what, e.id);
    }
    let unbalanced = ch.rows(
        "SELECT tx_id, currency, sum(amount) AS s FROM {db}.legs GROUP BY tx_id, currency HAVING s != 0",
    );
    assert!(unbalanced.is_empty(), "legs that do not balance: {unbalanced:?}");

    // Balance changes: per (address, currency) their sum is the balance, for every account
    // (issuers negative) and nothing else; per currency they sum to zero.
    let rows = ch.rows(&format!(
        "SELECT address, currency, sum(delta) AS balance FROM {{db}}.balance_changes \
         WHERE height <= {head} GROUP BY address, currency HAVING balance != 0"
    ));
    let replica: BTreeMap<(String, String), i64> =
        rows.iter().map(|r| ((text(&r["address"]), text(&r["currency"])), int(&r["balance"]))).collect();
    let want: BTreeMap<(String, String), i64> =
        books.balances.iter().filter(|(_, x)| **x != 0).map(|(k, x)| (k.clone(), *x)).collect();
    assert_eq!(replica, want, "balances in ClickHouse");
    let rows = ch.rows(&format!(
        "SELECT currency, sum(delta) AS total FROM {{db}}.balance_changes WHERE height <= {head} \
         GROUP BY currency ORDER BY currency"
    ));
    let currencies: Vec<String> = rows.iter().map(|r| text(&r["currency"])).collect();
    assert_eq!(currencies, ["BTC", "CAS", "ETH"], "{rows:?}");
    assert!(rows.iter().all(|r| int(&r["total"]) == 0), "supply is conserved per currency: {rows:?}");

    // Declarations: one row per declaration the transactions carry (none at genesis here).
    let declared = ch
        .one(&format!("SELECT sum(declaration_count) AS n FROM {{db}}.transactions WHERE height <= {head}"));
    let rows = ch.one(&format!("SELECT count() AS n FROM {{db}}.declarations WHERE height <= {head}"));
    assert_eq!(int(&rows["n"]), int(&declared["n"]), "declarations: {rows} for {declared}");
    assert!(int(&declared["n"]) > 0);
}
