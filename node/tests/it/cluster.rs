//! Issue 19 item 7, analytics beyond one server: an explorer replicating into a ClickHouse
//! cluster of two shards (`scripts/clickhouse cluster start`, `cluster = …` in its
//! `[clickhouse]` section), under a stream of payments in three currencies, killed (SIGKILL)
//! while it replicates and restarted, several times. Then, over the `Distributed` tables:
//!
//! - right after each kill, every row of `ledgers`, `transactions` and `legs` the replicator had
//!   acknowledged is readable (inserts are synchronous: a row acknowledged is on its shard);
//! - exactly once: no row twice, as many rows as the chain makes, and per currency and per
//!   account the totals (legs, fees, balances) are the chain's, read from the explorer's API;
//! - both shards hold rows, each only heights of its own runs of `shard_ledgers` ledgers.
//!
//! The cluster is the test's own, in a temporary directory, stopped however the test ends. The
//! test is skipped only when clickhouse-server is missing and cannot be installed (the script
//! exits 3), and then fails under CI (`CI` set).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use engine::{
    Currency, Encode, SecretKey,
    tx::{Fee, Leg, TX_VERSION, Transaction},
};
use serde_json::Value;

use super::{
    e2e::{int, text},
    localnet::free_base,
};

const CHAIN: &str = "localnet";
const BLOCK_INTERVAL_MS: u64 = 200;
/// The cluster `scripts/clickhouse cluster start` configures.
const CLUSTER: &str = "caasiope";
/// Ledgers per shard run: small, so a short chain spans many runs on both shards.
const SHARD_LEDGERS: u64 = 4;
/// Times the explorer is killed while it replicates.
const KILLS: usize = 4;
/// How long it stays down each time: ten ledgers to catch up on.
const DOWN_MS: u64 = 10 * BLOCK_INTERVAL_MS;
/// Recipients of the payments.
const ACCOUNTS: u64 = 12;
const TABLES: [&str; 5] = ["ledgers", "transactions", "legs", "declarations", "balance_changes"];
/// Longest wait for anything (a loaded 2-core machine is slow, never stuck).
const WAIT_S: u64 = 90;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caasiope"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(WAIT_S);
    while Instant::now() < until {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {WAIT_S} s waiting for {what}");
}

/// The two-shard cluster of `scripts/clickhouse cluster start`, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    /// Each shard's HTTP URL, in shard order.
    shards: Vec<String>,
    database: String,
    agent: ureq::Agent,
}

impl Cluster {
    /// Starts the cluster, or `None` when clickhouse-server cannot be installed.
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script()).args(["cluster", "start"]).arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            assert!(std::env::var_os("CI").is_none(), "clickhouse-server cannot be installed: {stderr}");
            eprintln!("cluster: skipped, clickhouse-server is missing and cannot be installed: {stderr}");
            return None;
        }
        // Stopped by the drop from here on, whatever the start did.
        let mut cluster = Self {
            dir,
            shards: Vec::new(),
            database: format!("caasiope_cluster_{}", std::process::id()),
            agent: agent(),
        };
        assert!(out.status.success(), "scripts/clickhouse cluster start: {}\n{stderr}", out.status);
        let first = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let urls = Command::new(script()).args(["cluster", "urls"]).arg(cluster.dir.path()).output().unwrap();
        assert!(urls.status.success(), "{}", String::from_utf8_lossy(&urls.stderr));
        cluster.shards = String::from_utf8(urls.stdout).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(cluster.shards.len(), 2, "{:?}", cluster.shards);
        assert_eq!(cluster.shards[0], first, "cluster start prints shard 1's URL");
        Some(cluster)
    }

    /// The `[clickhouse]` section of the explorer: INSERTs and reads through shard 1.
    fn section(&self) -> String {
        let shards: Vec<String> = self.shards.iter().map(|u| format!("{u:?}")).collect();
        format!(
            "\n[clickhouse]\nurl = {:?}\ndatabase = {:?}\ncluster = {CLUSTER:?}\nshards = [{}]\n\
             shard_ledgers = {SHARD_LEDGERS}\nwriters = 2\nbatch_ledgers_max = 1\npoll_interval_ms = 50\n",
            self.shards[0],
            self.database,
            shards.join(", ")
        )
    }

    /// The rows of a SELECT on shard `shard` (`{db}` stands for the database).
    fn rows_on(&self, shard: usize, sql: &str) -> Vec<Value> {
        let sql = format!("{} FORMAT JSON", sql.replace("{db}", &format!("`{}`", self.database)));
        let mut r = self.agent.post(&self.shards[shard]).send(sql.as_bytes()).unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "ClickHouse refused {sql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{sql}: not JSON: {body}"));
        v["data"].as_array().unwrap().clone()
    }

    /// The rows of a SELECT through shard 1, the one the replicator talks to.
    fn rows(&self, sql: &str) -> Vec<Value> {
        self.rows_on(0, sql)
    }

    fn one(&self, sql: &str) -> Value {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.into_iter().next().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new(script()).args(["cluster", "stop"]).arg(self.dir.path()).output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!("scripts/clickhouse cluster stop: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

struct Proc {
    name: String,
    config: PathBuf,
    admin: SocketAddr,
    child: Option<Child>,
}

/// One validator and an explorer; kills what runs when dropped (printing the logs' ends if the
/// test failed).
struct Net {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    submit: SocketAddr,
    api: String,
    agent: ureq::Agent,
}

const VALIDATOR: usize = 0;
const EXPLORER: usize = 1;

impl Net {
    fn init(currencies: &[(&str, &SecretKey)], clickhouse_section: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = bin();
        cmd.args(["init", "--validators", "1", "--dir"])
            .arg(dir.path())
            .args(["--base-port", &free_base().to_string()])
            .args(["--block-interval-ms", &BLOCK_INTERVAL_MS.to_string(), "--transport", "epoll"]);
        for (symbol, issuer) in currencies {
            cmd.args(["--currency", &format!("{symbol}={}", issuer.public_key().address())]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let processes = report["processes"].as_array().unwrap();
        let procs: Vec<Proc> = processes
            .iter()
            .map(|p| Proc {
                name: text(&p["name"]),
                config: text(&p["config"]).into(),
                admin: text(&p["admin"]).parse().unwrap(),
                child: None,
            })
            .collect();
        assert_eq!(procs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["validator-0", "explorer"]);
        let submit = text(&processes[VALIDATOR]["submit"]).parse().unwrap();
        let api = format!("http://{}", text(&processes[EXPLORER]["api"]));
        // The explorer's config ends with its peers: the section goes after them.
        let mut config = std::fs::OpenOptions::new().append(true).open(&procs[EXPLORER].config).unwrap();
        config.write_all(clickhouse_section.as_bytes()).unwrap();
        Self { dir, procs, submit, api, agent: agent() }
    }

    fn faucet(&self) -> SecretKey {
        let text = std::fs::read_to_string(self.dir.path().join("faucet.key")).unwrap();
        SecretKey::from_hex(text.trim()).unwrap()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.procs[i].name))
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).unwrap();
        let p = &mut self.procs[i];
        assert!(p.child.is_none());
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

    /// SIGKILL: the process ends at once, whatever it is writing.
    fn kill9(&mut self, i: usize) {
        let mut child = self.procs[i].child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The `/metrics` lines of process `i` (none if it does not answer).
    fn metrics(&self, i: usize) -> Vec<String> {
        let Ok(mut s) = TcpStream::connect_timeout(&self.procs[i].admin, Duration::from_millis(500)) else {
            return Vec::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if write!(s, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").is_err() {
            return Vec::new();
        }
        let mut text = String::new();
        let _ = s.take(4 << 20).read_to_string(&mut text);
        text.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect()
    }

    fn metric(&self, i: usize, name: &str) -> Option<u64> {
        self.metrics(i).iter().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Per table, the ledgers the explorer's replicator has acknowledged (`0..n` are in it).
    fn replicated(&self) -> Option<BTreeMap<&'static str, u64>> {
        let lines = self.metrics(EXPLORER);
        TABLES
            .iter()
            .map(|t| {
                let name = format!("caasiope_replication_ledgers{{table=\"{t}\"}} ");
                let n = lines.iter().find_map(|l| l.strip_prefix(&name)?.trim().parse().ok())?;
                Some((*t, n))
            })
            .collect()
    }

    fn api(&self, path: &str) -> Value {
        let mut r = self.agent.get(&format!("{}{path}", self.api)).call().unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"))
    }

    fn height(&self, i: usize) -> u64 {
        self.metric(i, "caasiope_ledger_height").unwrap_or(0)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.procs.len() {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "--- {}\n{}",
                    self.procs[i].name,
                    lines[lines.len().saturating_sub(15)..].join("\n")
                );
            }
        }
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A key of the test, from its number.
fn key(n: u64) -> SecretKey {
    let mut b = [9u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    SecretKey::from_bytes(&b).unwrap()
}

/// Submits signed bytes to the validator; its answer line (errors included: the chain, not the
/// submissions, is what the replica is checked against).
fn submit(to: SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(&(bytes.len() as u32).to_be_bytes()).ok()?;
    s.write_all(bytes).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_owned())
}

/// Payments until `stop`: CAS from the faucet, each other currency from its issuer (the faucet
/// paying the fee), to the accounts in turn, now and then to two at once; `sent` counts those
/// the validator answered.
fn pay(
    to: SocketAddr,
    faucet: &SecretKey,
    issuers: &[(Currency, SecretKey)],
    fee: i64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (currency, payer) = match n % 3 {
            0 => (Currency::CAS, faucet),
            k => (issuers[k as usize - 1].0, &issuers[k as usize - 1].1),
        };
        let amount = 1_000 + (n % 97) as i64;
        let mut outputs =
            vec![Leg { address: key(1 + n % ACCOUNTS).public_key().address(), currency, amount }];
        let mut input = amount;
        if n % 5 == 0 {
            let other = key(1 + (n + 5) % ACCOUNTS).public_key().address();
            outputs.push(Leg { address: other, currency, amount: 7 });
            input += 7;
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let tx = Transaction {
            version: TX_VERSION,
            expiration_ms: now + 60_000,
            declarations: vec![],
            inputs: vec![Leg { address: payer.public_key().address(), currency, amount: input }],
            outputs,
            message: n.to_be_bytes().to_vec(),
            fee: Fee { payer: faucet.public_key().address(), amount: fee },
        };
        let keys: Vec<&SecretKey> =
            if std::ptr::eq(payer, faucet) { vec![faucet] } else { vec![faucet, payer] };
        if submit(to, &tx.sign(CHAIN, &keys).to_bytes()).is_some() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Stops the payments however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A small xorshift: when to kill, within a few tens of milliseconds.
fn jitter_ms(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % 20
}

#[test]
fn cluster_replica_is_exactly_once_across_replicator_kills() {
    let started = Instant::now();
    let Some(cluster) = Cluster::start() else { return };
    eprintln!("cluster: shards {:?} after {:.1} s", cluster.shards, started.elapsed().as_secs_f64());
    let issuers: Vec<(Currency, SecretKey)> =
        vec![("USD".parse().unwrap(), key(1_000)), ("EUR".parse().unwrap(), key(1_001))];
    let currencies: Vec<(&str, &SecretKey)> = vec![("USD", &issuers[0].1), ("EUR", &issuers[1].1)];
    // Declared after the cluster, so dropped before it: the processes stop before the servers.
    let mut net = Net::init(&currencies, &cluster.section());
    net.start(VALIDATOR);
    net.start(EXPLORER);
    wait("the explorer replicating", || net.replicated().is_some_and(|r| r["ledgers"] >= 2));
    let status = net.api("/v1/status");
    let fee = int(&status["min_fee"]);
    let fee_account = text(&status["fee_account"]);

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent, faucet, to) = (stop.clone(), sent.clone(), net.faucet(), net.submit);
        let issuers = issuers.iter().map(|(c, k)| (*c, k.clone())).collect::<Vec<_>>();
        std::thread::spawn(move || pay(to, &faucet, &issuers, fee, &stop, &sent))
    };

    // Killed while replicating: the first time as it keeps up with the chain, then after each
    // restart once the new process has written part of the backlog the downtime left (ledgers
    // committed meanwhile, one per INSERT), in every table, and is still at least two ledgers
    // behind; plus a few milliseconds, to land inside an INSERT as well as between two.
    let mut rng = u64::from(std::process::id()) | 1;
    let mut before = net.replicated().unwrap();
    let mut kills = Vec::new();
    for kill in 0..KILLS {
        let mut acknowledged = before.clone();
        // Should the backlog be written before it was seen, the kill comes anyway.
        let patience = Instant::now() + Duration::from_secs(10);
        wait("the replicator to be writing", || {
            let Some(now) = net.replicated() else { return false };
            let lag = net.metric(EXPLORER, "caasiope_replication_lag_ledgers").unwrap_or(0);
            // Every table resumed and wrote: the kill falls in the middle of the catch-up.
            let moved = now.iter().all(|(t, n)| *n > before[t]);
            acknowledged = now;
            moved && (kill == 0 || lag >= 2 || Instant::now() > patience)
        });
        std::thread::sleep(Duration::from_millis(jitter_ms(&mut rng)));
        // Read just before the kill: a lower bound of what was acknowledged when it came.
        let lag = net.metric(EXPLORER, "caasiope_replication_lag_ledgers");
        if let Some(now) = net.replicated() {
            acknowledged = now;
        }
        net.kill9(EXPLORER);
        // Every row acknowledged is readable at once through the Distributed tables (nothing
        // waits on a server's queue for a later send): counted now, compared with the chain
        // once it is read.
        let mut counts = BTreeMap::new();
        for table in ["ledgers", "transactions", "legs"] {
            let n = acknowledged[table];
            let row = cluster.one(&format!("SELECT count() AS rows FROM {{db}}.{table} WHERE height < {n}"));
            counts.insert(table, (n, int(&row["rows"])));
        }
        eprintln!(
            "cluster: kill {kill} at {:.1} s, {lag:?} ledgers behind, acknowledged {acknowledged:?}",
            started.elapsed().as_secs_f64(),
        );
        kills.push(counts);
        before = acknowledged;
        // The chain moves on meanwhile: a backlog for the next process.
        std::thread::sleep(Duration::from_millis(DOWN_MS));
        net.start(EXPLORER);
    }

    // The load stops; once the explorer has the chain and the replica every ledger up to `head`,
    // the chain stands still (empty ledgers) and is compared.
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let stopped_at = net.height(VALIDATOR);
    wait("the explorer past the end of the load", || net.height(EXPLORER) >= stopped_at + 5);
    let head = net.height(EXPLORER);
    wait("the replica at the head", || net.replicated().is_some_and(|r| r.values().all(|n| *n > head)));
    eprintln!(
        "cluster: {} payments submitted, replicated to {head} after {:.1} s; {} repairs, {:?} errors \
         (since the last start)",
        sent.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        net.metrics(EXPLORER)
            .iter()
            .filter_map(|l| l.strip_prefix("caasiope_replication_repairs_total")?.split(' ').nth(1))
            .map(|n| n.parse::<u64>().unwrap())
            .sum::<u64>(),
        net.metric(EXPLORER, "caasiope_replication_errors_total"),
    );

    let chain = Chain::read(&net, head, &fee_account);
    assert!(chain.txs > 30, "a chain with payments: {} transactions", chain.txs);
    for (kill, counts) in kills.iter().enumerate() {
        for (table, (n, rows)) in counts {
            let want: i64 = match *table {
                "ledgers" => *n as i64,
                "transactions" => chain.per_height.range(..n).map(|(_, (txs, _))| txs).sum(),
                _ => chain.per_height.range(..n).map(|(_, (_, legs))| legs).sum(),
            };
            assert_eq!(
                *rows, want,
                "kill {kill}: the rows of {table} below height {n} (acknowledged) right after it"
            );
        }
    }
    check_exactly_once(&cluster, &chain, head);
    check_totals(&cluster, &net, &chain, head);
    check_shards(&cluster, head);
    eprintln!("cluster: checked in {:.1} s", started.elapsed().as_secs_f64());
}

/// What the chain holds up to `head`, from the explorer's API.
struct Chain {
    /// Transactions.
    txs: i64,
    /// Inputs, outputs, fee debits and fee credits.
    legs: i64,
    /// Per currency: the sum of outputs, and the number of legs.
    per_currency: BTreeMap<String, (i64, i64)>,
    /// Per (address, currency): the net of its legs.
    per_account: BTreeMap<(String, String), i64>,
    /// Per height: transactions and legs.
    per_height: BTreeMap<u64, (i64, i64)>,
}

impl Chain {
    fn read(net: &Net, head: u64, fee_account: &str) -> Self {
        let mut chain = Self {
            txs: 0,
            legs: 0,
            per_currency: BTreeMap::new(),
            per_account: BTreeMap::new(),
            per_height: BTreeMap::new(),
        };
        for h in 1..=head {
            let ledger = net.api(&format!("/v1/ledgers/{h}"));
            for id in ledger["transactions"].as_array().unwrap() {
                let tx = &net.api(&format!("/v1/transactions/{}", text(id)))["transaction"];
                chain.txs += 1;
                let fee = int(&tx["fee"]["amount"]);
                let mut legs = vec![(text(&tx["fee"]["payer"]), "CAS".to_owned(), -fee)];
                legs.push((fee_account.to_owned(), "CAS".to_owned(), fee));
                for (side, sign) in [("inputs", -1), ("outputs", 1)] {
                    for l in tx[side].as_array().unwrap() {
                        legs.push((text(&l["address"]), text(&l["currency"]), sign * int(&l["amount"])));
                        let total = chain.per_currency.entry(text(&l["currency"])).or_default();
                        total.0 += if sign > 0 { int(&l["amount"]) } else { 0 };
                    }
                }
                let at = chain.per_height.entry(h).or_default();
                at.0 += 1;
                at.1 += legs.len() as i64;
                for (address, currency, amount) in legs {
                    chain.legs += 1;
                    chain.per_currency.entry(currency.clone()).or_default().1 += 1;
                    *chain.per_account.entry((address, currency)).or_default() += amount;
                }
            }
        }
        chain
    }
}

/// No row twice, and as many rows as the chain makes, in every table.
fn check_exactly_once(cluster: &Cluster, chain: &Chain, head: u64) {
    let keys = [
        ("ledgers", "height", head as i64 + 1),
        ("transactions", "height, tx_index", chain.txs),
        ("legs", "height, tx_index, leg_index", chain.legs),
    ];
    for (table, key, want) in keys {
        let row = cluster.one(&format!(
            "SELECT count() AS rows, uniqExact({key}) AS distinct FROM {{db}}.{table} WHERE height <= {head}"
        ));
        assert_eq!([int(&row["rows"]), int(&row["distinct"])], [want; 2], "{table}: {row}");
    }
    for (table, key) in
        [("declarations", "height, tx_index, decl_index"), ("balance_changes", "height, address, currency")]
    {
        let row = cluster.one(&format!(
            "SELECT count() AS rows, uniqExact({key}) AS distinct FROM {{db}}.{table} WHERE height <= {head}"
        ));
        assert_eq!(int(&row["rows"]), int(&row["distinct"]), "{table}: {row}");
    }
}

/// Per currency and per account, the replica's totals are the chain's.
fn check_totals(cluster: &Cluster, net: &Net, chain: &Chain, head: u64) {
    let rows = cluster.rows(&format!(
        "SELECT currency, sumIf(amount, kind = 'output') AS volume, count() AS legs FROM {{db}}.legs \
         WHERE height <= {head} GROUP BY currency ORDER BY currency"
    ));
    let replica: BTreeMap<String, (i64, i64)> =
        rows.iter().map(|r| (text(&r["currency"]), (int(&r["volume"]), int(&r["legs"])))).collect();
    assert_eq!(replica, chain.per_currency, "per currency: output volume and legs");
    assert_eq!(replica.keys().map(String::as_str).collect::<Vec<_>>(), ["CAS", "EUR", "USD"]);

    let rows = cluster.rows(&format!(
        "SELECT address, currency, sum(amount) AS net FROM {{db}}.legs WHERE height <= {head} \
         GROUP BY address, currency"
    ));
    let replica: BTreeMap<(String, String), i64> =
        rows.iter().map(|r| ((text(&r["address"]), text(&r["currency"])), int(&r["net"]))).collect();
    assert_eq!(replica, chain.per_account, "per account and currency: the net of the legs");

    // Balances: per (address, currency) the deltas sum to the API's balance, for every account
    // of the replica and every account the payments touched; per currency they sum to zero.
    let rows = cluster.rows(&format!(
        "SELECT address, currency, sum(delta) AS balance FROM {{db}}.balance_changes WHERE height <= {head} \
         GROUP BY address, currency HAVING balance != 0"
    ));
    let replica: BTreeMap<(String, String), i64> =
        rows.iter().map(|r| ((text(&r["address"]), text(&r["currency"])), int(&r["balance"]))).collect();
    let addresses: BTreeSet<&String> =
        replica.keys().chain(chain.per_account.keys()).map(|(a, _)| a).collect();
    let mut api = BTreeMap::new();
    for address in addresses {
        let account = net.api(&format!("/v1/accounts/{address}"));
        for b in account["balances"].as_array().unwrap_or_else(|| panic!("no balances: {account}")) {
            if int(&b["amount"]) != 0 {
                api.insert((address.clone(), text(&b["currency"])), int(&b["amount"]));
            }
        }
    }
    assert_eq!(replica, api, "per account and currency: the balance");
    let latest = net.api("/v1/status");
    let now = latest["height"].as_u64().unwrap();
    for h in head + 1..=now {
        // The balances read above are the chain's at `head` only if nothing committed since.
        assert_eq!(int(&net.api(&format!("/v1/ledgers/{h}"))["tx_count"]), 0, "ledger {h} after the load");
    }
    let unbalanced = cluster.rows(&format!(
        "SELECT currency, sum(delta) AS total FROM {{db}}.balance_changes WHERE height <= {head} \
         GROUP BY currency HAVING total != 0"
    ));
    assert!(unbalanced.is_empty(), "supply is conserved per currency: {unbalanced:?}");
}

/// Both shards hold rows, each only the heights of its runs of `SHARD_LEDGERS` ledgers, and
/// together every row of the `Distributed` tables.
fn check_shards(cluster: &Cluster, head: u64) {
    for table in ["ledgers", "legs", "balance_changes"] {
        let mut total = 0;
        for shard in 0..cluster.shards.len() {
            let row = &cluster.rows_on(
                shard,
                &format!(
                    "SELECT count() AS rows, countIf(intDiv(height, {SHARD_LEDGERS}) % 2 != {shard}) AS strays \
                     FROM {{db}}.{table}_local WHERE height <= {head}"
                ),
            )[0];
            assert!(int(&row["rows"]) > 0, "shard {} holds no {table}: {row}", shard + 1);
            assert_eq!(int(&row["strays"]), 0, "shard {} holds rows of the other's runs: {row}", shard + 1);
            total += int(&row["rows"]);
        }
        let all = cluster.one(&format!("SELECT count() AS rows FROM {{db}}.{table} WHERE height <= {head}"));
        assert_eq!(int(&all["rows"]), total, "{table}: the Distributed table is the shards' union");
    }
}
