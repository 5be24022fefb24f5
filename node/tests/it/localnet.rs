//! A four-validator network of separate `caasiope` processes on loopback (plus an explorer):
//! transactions submitted to any validator commit on all; ledgers stay certified with one
//! validator killed, which comes back to the same chain; two of four killed certify nothing and
//! fork nothing, and progress resumes when one returns; a validator cut off by a partition
//! (loopback proxies that drop its links) never certifies alone and catches up after it heals.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use engine::{
    Currency, Encode, SecretKey,
    tx::{Fee, Leg, TX_VERSION, Transaction},
};

const CHAIN: &str = "localnet";
const VALIDATORS: usize = 4;

pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) config: PathBuf,
    submit: SocketAddr,
    admin: SocketAddr,
    /// The explorer's HTTP API.
    pub(crate) api: Option<SocketAddr>,
    child: Option<Child>,
}

pub(crate) struct Localnet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) procs: Vec<Proc>,
}

/// A base port whose 400 ports above are free now (a collision later fails the test loudly).
pub(crate) fn free_base() -> u16 {
    // Tests of this binary run in parallel: each takes the next range, never the same one.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let seed = std::process::id() as u16;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < 100, "no free port range");
        let base = 20_000 + (seed.wrapping_add(k) % 100) * 400;
        let free =
            (0..400).filter(|o| o % 100 < 8).all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if free {
            return base;
        }
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caasiope"))
}

impl Localnet {
    fn init(block_interval_ms: u64) -> Self {
        Self::init_n(VALIDATORS, block_interval_ms)
    }

    /// `validators` validators and an explorer, not started.
    pub(crate) fn init_n(validators: usize, block_interval_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base();
        let out = bin()
            .args(["init", "--validators", &validators.to_string(), "--dir"])
            .arg(dir.path())
            .args(["--base-port", &base.to_string(), "--block-interval-ms", &block_interval_ms.to_string()])
            .args(["--transport", "epoll"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let procs = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Proc {
                name: p["name"].as_str().unwrap().into(),
                config: p["config"].as_str().unwrap().into(),
                submit: p["submit"].as_str().unwrap().parse().unwrap(),
                admin: p["admin"].as_str().unwrap().parse().unwrap(),
                api: p["api"].as_str().map(|a| a.parse().unwrap()),
                child: None,
            })
            .collect();
        Self { dir, procs }
    }

    /// `validators` validators and an explorer set up by a genesis ceremony, not started: each
    /// member runs `init --advertise` in its own directory, a coordinator `genesis new` on their
    /// `member.json` files alone, and each member copies the genesis and its config home.
    pub(crate) fn ceremony(validators: usize, block_interval_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base();
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut procs = Vec::new();
        for i in 0..=validators {
            let (name, role) = if i < validators {
                (format!("member-{i}"), "validator")
            } else {
                ("explorer".into(), "explorer")
            };
            let home = dir.path().join(&name);
            let o = i as u16;
            let mut init = bin();
            init.args(["init", "--dir"]).arg(&home).args(["--role", role]);
            for (flag, port) in [
                ("--advertise", base + 100 + o),
                ("--listen", base + 100 + o),
                ("--submit-listen", base + o),
                ("--admin-listen", base + 200 + o),
            ] {
                init.args([flag, &addr(port).to_string()]);
            }
            if role == "explorer" {
                init.args(["--api-listen", &addr(base + 300 + o).to_string()]);
            }
            let out = init.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            procs.push(Proc {
                config: home.join("config.toml"),
                submit: addr(base + o),
                admin: addr(base + 200 + o),
                api: (role == "explorer").then(|| addr(base + 300 + o)),
                name,
                child: None,
            });
        }
        let coordinator = dir.path().join("coordinator");
        let mut genesis = bin();
        genesis
            .args([
                "genesis",
                "new",
                "--chain-id",
                CHAIN,
                "--block-interval-ms",
                &block_interval_ms.to_string(),
                "--out",
            ])
            .arg(&coordinator);
        for p in &procs {
            genesis.arg("--member").arg(p.config.with_file_name("member.json"));
        }
        // The first member's governance address is funded, by its address alone.
        let first: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(procs[0].config.with_file_name("member.json")).unwrap(),
        )
        .unwrap();
        genesis.arg("--balance").arg(format!("{}=CAS:1000", first["governance_address"].as_str().unwrap()));
        let out = genesis.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for p in &procs {
            let home = p.config.parent().unwrap();
            std::fs::copy(coordinator.join("genesis.toml"), home.join("genesis.toml")).unwrap();
            std::fs::copy(coordinator.join(format!("{}.toml", p.name)), &p.config).unwrap();
            // Every member checks the hash it was told against the genesis it holds.
            let out = bin().args(["genesis", "inspect"]).arg(home.join("genesis.toml")).output().unwrap();
            let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(inspected["genesis_hash"], report["genesis_hash"]);
            assert_eq!(inspected["genesis_file_hash"], report["genesis_file_hash"]);
        }
        Self { dir, procs }
    }

    /// Process `i`'s directory (a ceremony's member).
    fn home(&self, i: usize) -> PathBuf {
        self.procs[i].config.parent().unwrap().to_owned()
    }

    /// Process `i`'s `member.json`.
    fn member(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.home(i).join("member.json")).unwrap()).unwrap()
    }

    /// The explorer's API.
    fn api(&self) -> String {
        format!("http://{}", self.procs.iter().find_map(|p| p.api).unwrap())
    }

    /// Process `i` (stopped) loses its store: its data directory is moved aside and a new one
    /// made with only its signing state and write-ahead log, as docs/DEPLOY.md says to keep.
    /// Returns the new directory.
    fn lose_store(&self, i: usize) -> PathBuf {
        let data = self.home(i).join("data");
        let lost = self.home(i).join("data.lost");
        std::fs::rename(&data, &lost).unwrap();
        std::fs::create_dir(&data).unwrap();
        for kept in ["signer.state", "consensus.wal"] {
            std::fs::copy(lost.join(kept), data.join(kept)).unwrap();
        }
        data
    }

    /// Puts `line` (a top-level `key = value`) at the start of process `i`'s config, before
    /// its tables.
    fn set_config(&self, i: usize, line: &str) {
        let path = &self.procs[i].config;
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, format!("{line}\n{text}")).unwrap();
    }

    /// `GET /v1/validators` of the explorer.
    fn validators(&self) -> serde_json::Value {
        self.get("/v1/validators")
    }

    /// `GET PATH` of the explorer's API, as JSON.
    fn get(&self, path: &str) -> serde_json::Value {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let body =
            agent.get(&format!("{}{path}", self.api())).call().unwrap().body_mut().read_to_string().unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// `caasiope wallet ARGS` on the test's wallet, `stdin` on its input.
    fn wallet(&self, args: &[&str], stdin: Option<String>) -> std::process::Output {
        let mut cmd = bin();
        cmd.arg("wallet")
            .args(args)
            .arg("--wallet-dir")
            .arg(self.dir.path().join("wallet"))
            .env("CAASIOPE_WALLET_PASSPHRASE", "ceremony test")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// A validator-set change (`wallet governance CHANGE…`) built into a file, signed in turn by
    /// the governance keys of `signers` (imported into the wallet first); after each signature
    /// `wallet submit --wait` is tried: its outputs.
    fn governance(&self, change: &[&str], signers: &[usize]) -> Vec<std::process::Output> {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let file = self.dir.path().join(format!("change-{}.json", FILES.fetch_add(1, Ordering::Relaxed)));
        let file = file.to_str().unwrap();
        let api = self.api();
        let built = bin()
            .args(["wallet", "governance"])
            .args(change)
            .args(["--api", &api, "--out", file])
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
        let mut submits = Vec::new();
        for &i in signers {
            let name = format!("gov{i}");
            if !self.dir.path().join("wallet").join(format!("{name}.json")).exists() {
                let secret = std::fs::read_to_string(self.home(i).join("governance.key")).unwrap();
                let out = self.wallet(&["import", "--name", &name], Some(secret));
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            let out = self.wallet(&["sign", "--name", &name, file], None);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            submits.push(bin().args(["wallet", "submit", "--api", &api, "--wait", file]).output().unwrap());
        }
        submits
    }

    pub(crate) fn start(&mut self, i: usize) {
        let p = &mut self.procs[i];
        assert!(p.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", p.name)))
            .unwrap();
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

    /// Whether process `i` runs (started and not exited).
    pub(crate) fn alive(&mut self, i: usize) -> bool {
        self.procs[i].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Resident memory of process `i`, bytes (from /proc).
    pub(crate) fn rss(&self, i: usize) -> Option<u64> {
        let pid = self.procs[i].child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    pub(crate) fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub(crate) fn stop_all(&mut self) {
        let failed = self.stop_all_reporting();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    /// Stops every process (SIGTERM, then SIGKILL after 20 s); for each that exited with an
    /// error status, its name, status and the end of its log.
    pub(crate) fn stop_all_reporting(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                // SAFETY: kill(2) on our own child with a valid signal.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let until = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let status = c.wait().unwrap();
                if !(status.success() || status.code().is_none()) {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", p.name)))
                        .unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                    // The error, wherever it is (a busy process logs after it).
                    let errors: Vec<&str> = lines
                        .iter()
                        .copied()
                        .filter(|l| l.contains("error") || l.contains("panicked"))
                        .collect();
                    failed.push(format!(
                        "{} exited with {status}; its errors:\n{}\nits log ends:\n{tail}",
                        p.name,
                        errors.join("\n")
                    ));
                }
            }
        }
        failed
    }

    pub(crate) fn metric(&self, i: usize, name: &str) -> Option<u64> {
        let mut s = TcpStream::connect_timeout(&self.procs[i].admin, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.take(1 << 20).read_to_string(&mut text).ok()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
    }

    /// The `/metrics` body of process `i`'s admin port.
    pub(crate) fn metrics_text(&self, i: usize) -> String {
        let mut s = TcpStream::connect_timeout(&self.procs[i].admin, Duration::from_millis(500)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.take(4 << 20).read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
    }

    pub(crate) fn height(&self, i: usize) -> u64 {
        self.metric(i, "caasiope_ledger_height").unwrap_or(0)
    }

    pub(crate) fn heights(&self, of: &[usize]) -> Vec<u64> {
        of.iter().map(|&i| self.height(i)).collect()
    }

    pub(crate) fn log_tail(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text =
                std::fs::read_to_string(self.dir.path().join(format!("{}.log", p.name))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {}\n{}\n", p.name, lines[lines.len().saturating_sub(8)..].join("\n"));
        }
        out
    }

    pub(crate) fn wait(&self, what: &str, timeout_s: u64, mut ok: impl FnMut(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(timeout_s);
        while Instant::now() < until {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; heights {:?}\n{}",
            self.heights(&(0..self.procs.len()).collect::<Vec<_>>()),
            self.log_tail()
        );
    }

    /// Submits signed bytes to process `i`; returns the answer line.
    pub(crate) fn submit(&self, i: usize, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect_timeout(&self.procs[i].submit, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&(bytes.len() as u32).to_be_bytes()).unwrap();
        s.write_all(bytes).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    pub(crate) fn faucet(&self) -> SecretKey {
        let text = std::fs::read_to_string(self.dir.path().join("faucet.key")).unwrap();
        SecretKey::from_hex(text.trim()).unwrap()
    }

    /// The header hash at every height 1..=h of the store of process `i` (stopped).
    pub(crate) fn chain_of(&self, i: usize) -> Vec<engine::Hash> {
        // The store its config names (relative to the config file).
        let config: toml::Value =
            toml::from_str(&std::fs::read_to_string(&self.procs[i].config).unwrap()).unwrap();
        let dir = self.procs[i].config.parent().unwrap().join(config["data_dir"].as_str().unwrap());
        // A validator's store keeps no query indexes (the explorer's does).
        let without = storage::StoreOptions { without_query_indexes: true, ..Default::default() };
        let (store, state) = match storage::Store::open(&dir) {
            Err(storage::StoreError::NoQueryIndexes(_)) => storage::Store::open_with(&dir, without),
            opened => opened,
        }
        .unwrap();
        (1..=state.head().height).map(|h| store.header(h).unwrap().unwrap().0.hash(CHAIN)).collect()
    }

    /// The header hash at every height from..=h of the store of process `i` (stopped; a store
    /// restored from a snapshot of height `from` keeps none below it).
    pub(crate) fn chain_of_from(&self, i: usize, from: u64) -> Vec<engine::Hash> {
        let config: toml::Value =
            toml::from_str(&std::fs::read_to_string(&self.procs[i].config).unwrap()).unwrap();
        let dir = self.procs[i].config.parent().unwrap().join(config["data_dir"].as_str().unwrap());
        let without = storage::StoreOptions { without_query_indexes: true, ..Default::default() };
        let (store, state) = storage::Store::open_with(&dir, without).unwrap();
        if from < store.first_kept() {
            return Vec::new();
        }
        (from..=state.head().height).map(|h| store.header(h).unwrap().unwrap().0.hash(CHAIN)).collect()
    }
}

pub(crate) fn data_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("data").join(name)
}

impl Drop for Localnet {
    fn drop(&mut self) {
        // LOCALNET_KEEP=1 keeps the directory (logs, stores) of a failed test for a look.
        if std::env::var("LOCALNET_KEEP").is_ok() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("localnet kept in {}", dir.keep().display());
        }
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub(crate) fn transfer(faucet: &SecretKey, n: u64) -> Vec<u8> {
    let from = faucet.public_key().address();
    let to = SecretKey::from_bytes(&{
        let mut b = [7u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b
    })
    .unwrap()
    .public_key()
    .address();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    Transaction {
        version: TX_VERSION,
        expiration_ms: now + 120_000,
        declarations: vec![],
        inputs: vec![Leg { address: from, currency: Currency::CAS, amount: 1_000 + n as i64 }],
        outputs: vec![Leg { address: to, currency: Currency::CAS, amount: 1_000 + n as i64 }],
        message: n.to_be_bytes().to_vec(),
        fee: Fee { payer: from, amount: 1_000 },
    }
    .sign(CHAIN, &[faucet])
    .to_bytes()
}

#[test]
fn four_validators_commit_survive_crashes_and_never_fork_without_quorum() {
    let mut net = Localnet::init(200);
    for i in 0..=VALIDATORS {
        net.start(i);
    }
    let all = [0, 1, 2, 3, 4];
    net.wait("every process past height 3", 60, |n| n.heights(&all).iter().all(|&h| h >= 3));

    // Transactions submitted to different validators commit everywhere (explorer included).
    let faucet = net.faucet();
    for k in 0..20u64 {
        let answer = net.submit((k % 4) as usize, &transfer(&faucet, k));
        assert!(answer.starts_with("accepted "), "{answer}");
    }
    // Refused with the rule's label, as the API's `kind`.
    let garbage = net.submit(1, b"garbage");
    assert!(garbage.starts_with("rejected decode: "), "{garbage}");
    net.wait("20 transactions committed on every process", 60, |n| {
        all.iter().all(|&i| n.metric(i, "caasiope_committed_txs_total").unwrap_or(0) >= 20)
    });
    // What an operator reads: every process's exposition passes promtool, and says what
    // happened here.
    for i in all {
        promtool_check(&format!("process {i}"), &net.metrics_text(i));
    }
    let text = net.metrics_text(0);
    let has = |text: &str, line: &str| text.lines().any(|l| l == line);
    for peer in ["validator-1", "validator-2", "validator-3"] {
        assert!(has(&text, &format!("caasiope_peer_up{{peer=\"{peer}\"}} 1")), "{peer} up:\n{text}");
    }
    let count = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Five of the twenty were submitted to validator 0.
    assert!(count(&text, "caasiope_submit_to_commit_seconds_count") >= 5.0, "{text}");
    assert!(count(&text, "caasiope_height_duration_seconds_count") >= 3.0);
    assert!(count(&text, "caasiope_round_duration_seconds_count") >= 3.0);
    assert!(count(&text, "caasiope_store_commit_seconds_count") >= 3.0);
    assert!(count(&text, "caasiope_best_known_height") >= count(&text, "caasiope_ledger_height") - 1.0);
    assert!(has(&net.metrics_text(1), "caasiope_undecodable_submissions_total{listener=\"submit\"} 1"));

    // One validator killed: the other three keep certifying.
    net.kill9(3);
    let h = net.heights(&[0, 1, 2]).into_iter().max().unwrap();
    net.wait("3 more ledgers without validator 3", 60, |n| n.heights(&[0, 1, 2]).iter().all(|&x| x >= h + 3));
    // It restarts from its store and write-ahead log and catches up.
    net.start(3);
    net.wait("validator 3 caught up", 60, |n| {
        n.height(3) >= n.height(0).saturating_sub(1) && n.height(3) > h
    });

    // Two of four killed: no quorum, so nothing new is certified.
    net.kill9(2);
    net.kill9(3);
    std::thread::sleep(Duration::from_millis(500));
    let stalled = net.heights(&[0, 1]).into_iter().max().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = net.heights(&[0, 1]);
    assert!(after.iter().all(|&x| x <= stalled), "certified without a quorum: {stalled} then {after:?}");
    // One returns: progress resumes.
    net.start(2);
    net.wait("progress with three validators again", 60, |n| {
        n.heights(&[0, 1, 2]).iter().all(|&x| x >= stalled + 3)
    });
    net.start(3);
    net.wait("validator 3 back", 60, |n| n.height(3) >= stalled + 3);

    // Every store holds one chain: the same ledger at every height they share.
    net.stop_all();
    let chains: Vec<Vec<engine::Hash>> = all.iter().map(|&i| net.chain_of(i)).collect();
    let shortest = chains.iter().map(Vec::len).min().unwrap();
    assert!(shortest >= 6);
    for c in &chains[1..] {
        assert_eq!(&c[..shortest], &chains[0][..shortest], "fork");
    }
    // And each store re-executes to its state root (the offline check).
    for &i in &all {
        let out = bin()
            .args(["db", "verify", "--dir"])
            .arg(data_dir(net.dir.path(), &net.procs[i].name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A loopback proxy per (dialer, target) pair of validators, each cut while `blocked` holds.
struct Proxy {
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(listen: TcpListener, target: SocketAddr, blocked: Arc<AtomicBool>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        listen.set_nonblocking(true).unwrap();
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listen.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if blocked.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else { continue };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let (blocked, stop) = (blocked.clone(), stop2.clone());
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            if blocked.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        });
        Self { stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A network from a genesis ceremony — no directory holds two members' secrets — certifies,
/// and a transaction signed with a member's governance key (its funds given at genesis by
/// address only) commits on every validator. Governance through the wallet: a weight change
/// built as a file for the members' 4-of-5 MultiSig (four validators and the explorer) is
/// refused with three signatures and commits with four; `GET /v1/validators` then shows the new weight in force.
#[test]
fn a_network_from_a_ceremony_certifies_and_commits() {
    let mut net = Localnet::ceremony(VALIDATORS, 200);
    // Every process serves a snapshot of its store, taken every 10 ledgers (state sync, below).
    for i in 0..net.procs.len() {
        net.set_config(i, "snapshot_every_ledgers = 10");
        net.start(i);
    }
    let all: Vec<usize> = (0..net.procs.len()).collect();
    net.wait("the first certified ledgers", 30, |n| n.heights(&all).iter().all(|&h| h >= 2));
    let key =
        SecretKey::from_hex(std::fs::read_to_string(net.home(0).join("governance.key")).unwrap().trim())
            .unwrap();
    let answer = net.submit(1, &transfer(&key, 1));
    assert!(answer.starts_with("accepted "), "{answer}");
    net.wait("the transfer committed on every process", 30, |n| {
        all.iter().all(|&i| n.metric(i, "caasiope_committed_txs_total").unwrap_or(0) >= 1)
    });

    // Governance: member-0's weight 1 → 2, signed by four members' governance keys.
    let now = net.validators();
    assert_eq!(now["in_force"]["total_weight"], 4, "{now}");
    assert_eq!(now["changes"], serde_json::json!([]));
    let key0 = net.member(0)["validator_public_key"].as_str().unwrap().to_owned();
    let submits = net.governance(&["set-weight", "--public-key", &key0, "--weight", "2"], &[0, 1, 2, 3]);
    for (i, submitted) in submits.iter().enumerate() {
        let err = String::from_utf8_lossy(&submitted.stderr);
        if i < 3 {
            assert!(
                !submitted.status.success() && err.contains("not complete"),
                "{} signatures: {err}",
                i + 1
            );
        } else {
            assert!(submitted.status.success(), "{err}");
        }
    }
    let weight_of_0 = |v: &serde_json::Value| {
        v["in_force"]["validators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["public_key"] == key0.as_str())
            .unwrap()["weight"]
            .clone()
    };
    net.wait("the new weight in force", 30, |n| weight_of_0(&n.validators()) == 2);
    let now = net.validators();
    assert_eq!(
        (now["in_force"]["total_weight"].clone(), now["changes"].clone()),
        (5.into(), serde_json::json!([]))
    );
    for i in 0..net.procs.len() {
        assert!(net.member(i).get("secret").is_none() && net.home(i).join("governance.key").exists());
    }

    // State sync: member-3 loses its store (killed, `data/` gone but its signing state and
    // write-ahead log kept, as docs/DEPLOY.md says), restores a snapshot taken from member-0's
    // running store — with the set change above in it — pinned on the explorer's hash of that
    // ledger, and starts: it syncs only the ledgers after the snapshot, then votes. With
    // member-1 killed, member-0 (2), member-2 (1) and member-3 (1) are 4 of 5: the quorum needs
    // member-3's vote.
    net.kill9(3);
    let data = net.lose_store(3);
    // A validator writes its accounts table every 64 ledgers at most (its index batch): the
    // snapshot is of that height, taken again until it is past the set change.
    let snapshot = net.dir.path().join("member-0.snapshot");
    let deadline = Instant::now() + Duration::from_secs(60);
    let taken = loop {
        let _ = std::fs::remove_file(&snapshot);
        let out = bin()
            .args(["db", "snapshot", "--dir"])
            .arg(net.home(0).join("data"))
            .arg("--out")
            .arg(&snapshot)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() || err.contains("at genesis"), "{err}");
        if out.status.success() {
            let taken: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if taken["set_changes"] == 1 {
                break taken;
            }
        }
        assert!(Instant::now() < deadline, "no snapshot past the set change in 60 s: {err}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let height = taken["height"].as_u64().unwrap();
    let ledger = net.get(&format!("/v1/ledgers/{height}"));
    assert_eq!(ledger["hash"], taken["ledger_hash"], "the explorer's ledger {height}");
    let restored = bin()
        .args(["db", "restore", "--from"])
        .arg(&snapshot)
        .arg("--dir")
        .arg(&data)
        .arg("--genesis")
        .arg(net.home(3).join("genesis.toml"))
        .args(["--trust", &format!("{height}:{}", taken["ledger_hash"].as_str().unwrap())])
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    net.start(3);
    let others = [0, 2, 4];
    net.wait("the restored member at the others' height", 60, |n| {
        n.height(3) >= n.heights(&others).into_iter().min().unwrap_or(0)
    });
    net.kill9(1);
    let before = net.height(0);
    net.wait("certification with the restored member's vote", 60, |n| n.height(0) >= before + 3);

    // State sync over the network: member-2 loses its store too (signing state kept) and
    // restarts with `state_sync = true`: it takes a peer's snapshot — checked against the chain
    // from its own genesis — then the ledgers after it. Certification, halted while it is down
    // (3 of 5 left), resumes only with its vote.
    let served = net.home(0).join("data/snapshots/latest.snapshot");
    net.wait("member-0 serving a snapshot", 60, |_| served.exists());
    net.kill9(2);
    // Halted now (3 of 5): no ledger, so no new snapshot replaces the one served.
    std::thread::sleep(Duration::from_secs(1));
    net.lose_store(2);
    net.set_config(2, "state_sync = true");
    // Its first peer, member-0, serves a snapshot altered on its disk (a byte of an account
    // flipped): refused at that chunk, and the next peer's is taken (member-1 is down, member-3
    // has none yet: its restored store does not reach max_ttl back).
    let mut bytes = std::fs::read(&served).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x01;
    std::fs::write(&served, &bytes).unwrap();
    let halted = net.height(0);
    net.start(2);
    net.wait("certification with the member joined by state sync", 60, |n| n.height(0) >= halted + 3);
    let log = std::fs::read_to_string(net.dir.path().join("member-2.log")).unwrap();
    assert!(log.contains("member-0's snapshot") && log.contains("refused"), "{log}");
    assert!(log.contains("state sync: restored explorer's snapshot"), "{log}");
    // The explorer's exit status at this stop is reported, not failed on (the known issue the
    // join test below reports too: once in ~16 local runs of this test it exited 2 at SIGTERM);
    // every validator must stop cleanly.
    for failure in net.stop_all_reporting() {
        assert!(failure.starts_with("explorer "), "{failure}");
        eprintln!("KNOWN ISSUE (docs: issue 19 note): {failure}");
    }
    let synced = net.chain_of_from(2, 1);
    assert!(synced.is_empty(), "member-2 re-executed from genesis");
    // The restored store keeps the snapshot's ledger and those after it, one chain with the
    // others' (genesis aside).
    let restored_chain = net.chain_of_from(3, height);
    assert!(net.chain_of_from(3, height - 1).is_empty(), "a ledger below the snapshot's");
    let chain = net.chain_of(0);
    let common = restored_chain.len().min(chain.len() - height as usize + 1);
    assert!(common >= 3, "{common} ledgers in common");
    assert_eq!(restored_chain[..common], chain[height as usize - 1..height as usize - 1 + common]);
}

/// A validator joins a live network: governance adds its key, the running members are told its
/// address by a reloaded configuration (SIGHUP, no restart), and its process — started from the
/// genesis and the members' addresses — syncs the chain and votes from the height its update
/// takes effect: with one of the original four killed, the other three certify only with it
/// (4 of the 5 weights).
#[test]
fn a_validator_joins_a_live_network_and_votes() {
    let mut net = Localnet::ceremony(VALIDATORS, 200);
    for i in 0..net.procs.len() {
        net.start(i);
    }
    let all: Vec<usize> = (0..net.procs.len()).collect();
    net.wait("the first certified ledgers", 30, |n| n.heights(&all).iter().all(|&h| h >= 2));

    // The newcomer's own init, on ports of its own.
    let port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (p2p, submit, admin) = (port(), port(), port());
    let home = net.dir.path().join("newcomer");
    let out = bin()
        .args(["init", "--dir"])
        .arg(&home)
        .args(["--advertise", &p2p.to_string(), "--listen", &p2p.to_string()])
        .args(["--submit-listen", &submit.to_string(), "--admin-listen", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let newcomer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("member.json")).unwrap()).unwrap();

    // Governance adds it (four of the five members' keys).
    let key = newcomer["validator_public_key"].as_str().unwrap();
    let submits = net.governance(&["add-validator", "--public-key", key], &[0, 1, 2, 3]);
    let last = submits.last().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    net.wait("the newcomer in the set", 30, |n| {
        n.validators()["in_force"]["validators"].as_array().unwrap().len() == 5
    });

    // Every running member lists it and reloads; the newcomer lists them all.
    let entry = |m: &serde_json::Value| {
        let mut t = toml::map::Map::new();
        for k in ["name", "role", "identity"] {
            t.insert(k.into(), toml::Value::String(m[k].as_str().unwrap().into()));
        }
        t.insert("addr".into(), toml::Value::String(m["advertise"].as_str().unwrap().into()));
        toml::Value::Table(t)
    };
    for i in 0..net.procs.len() {
        let path = net.procs[i].config.clone();
        let mut cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg["peers"].as_array_mut().unwrap().push(entry(&newcomer));
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let pid = net.procs[i].child.as_ref().unwrap().id();
        // SAFETY: kill(2) on our own child with a valid signal.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    }
    std::fs::copy(net.home(0).join("genesis.toml"), home.join("genesis.toml")).unwrap();
    let peers: Vec<toml::Value> = (0..net.procs.len()).map(|i| entry(&net.member(i))).collect();
    let config = toml::toml! {
        role = "validator"
        data_dir = "data"
        genesis = "genesis.toml"
        validator_key = "validator.key"
        block_interval_ms = 200
        node_dir = "."
    };
    let mut config = toml::Value::Table(config);
    for (k, v) in [("submit_listen", submit), ("listen", p2p), ("admin_listen", admin)] {
        config.as_table_mut().unwrap().insert(k.into(), toml::Value::String(v.to_string()));
    }
    config.as_table_mut().unwrap().insert("peers".into(), toml::Value::Array(peers));
    std::fs::write(home.join("config.toml"), toml::to_string(&config).unwrap()).unwrap();
    net.procs.push(Proc {
        name: "newcomer".into(),
        config: home.join("config.toml"),
        submit,
        admin,
        api: None,
        child: None,
    });
    let n = net.procs.len() - 1;
    net.start(n);
    net.wait("the newcomer caught up", 60, |net| {
        let hs = net.heights(&all);
        net.height(n) + 2 >= *hs.iter().max().unwrap()
    });

    // One of the original four killed: the rest certify only with the newcomer's votes.
    net.kill9(3);
    let at = net.heights(&[0, 1, 2, n]).into_iter().max().unwrap();
    net.wait("progress with the newcomer voting", 60, |net| {
        net.heights(&[0, 1, 2, n]).iter().all(|&h| h >= at + 5)
    });

    // The killed validator removed: with another one down too, the three left certify — a
    // quorum of the four left in the set, not of the five before.
    let key3 = net.member(3)["validator_public_key"].as_str().unwrap().to_owned();
    let last = net.governance(&["remove-validator", "--public-key", &key3], &[0, 1, 2, 4]).pop().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    net.wait("the removal in force", 30, |n| {
        n.validators()["in_force"]["validators"].as_array().unwrap().len() == 4
    });
    net.kill9(1);
    let at = net.heights(&[0, 2, n]).into_iter().max().unwrap();
    net.wait("progress with three of the four", 60, |net| {
        net.heights(&[0, 2, n]).iter().all(|&h| h >= at + 5)
    });
    // The removed one, back, follows the chain without a vote.
    net.start(1);
    net.start(3);
    net.wait("the removed validator following", 60, |net| {
        let top = net.heights(&[0, 1, 2, n]).into_iter().max().unwrap();
        net.height(3) + 2 >= top && net.height(1) + 2 >= top
    });

    // More than a third of the weight on one validator: killing it halts certification.
    let key0 = net.member(0)["validator_public_key"].as_str().unwrap().to_owned();
    let last =
        net.governance(&["set-weight", "--public-key", &key0, "--weight", "2"], &[0, 1, 2, 4]).pop().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    net.wait("the weight in force", 30, |n| n.validators()["in_force"]["total_weight"] == 5);
    net.kill9(0);
    std::thread::sleep(Duration::from_secs(1));
    let halted = net.heights(&[1, 2, 3, n]);
    std::thread::sleep(Duration::from_secs(3));
    let later = net.heights(&[1, 2, 3, n]);
    assert!(
        later.iter().zip(&halted).all(|(l, h)| *l <= h + 1),
        "2 of weight 5 down: no quorum, yet {halted:?} -> {later:?}"
    );
    // And no fork: every store holds one chain. Every validator stops cleanly; the explorer
    // once exited with status 2 here in CI after the halt (not reproduced since): reported with
    // its log, not failed on, until it is understood.
    for failure in net.stop_all_reporting() {
        assert!(failure.starts_with("explorer "), "{failure}");
        eprintln!("KNOWN ISSUE (docs: issue 19 note): {failure}");
    }
    let chains: Vec<Vec<engine::Hash>> = [0, 1, 2, 3, n].iter().map(|&i| net.chain_of(i)).collect();
    for (i, c) in chains.iter().enumerate() {
        let common = c.len().min(chains[0].len());
        assert_eq!(c[..common], chains[0][..common], "store {i} forked");
    }
}

#[test]
fn a_partitioned_minority_never_certifies_and_catches_up_after_healing() {
    let mut net = Localnet::init(200);
    // Route every validator-to-validator link through a proxy of its own; the link of
    // validator 0 with any other is cut while `cut` holds.
    let cut = Arc::new(AtomicBool::new(false));
    let never = Arc::new(AtomicBool::new(false));
    let mut proxies = Vec::new();
    for i in 0..VALIDATORS {
        let path = net.procs[i].config.clone();
        let mut cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for peer in cfg["peers"].as_array_mut().unwrap() {
            if peer["role"].as_str() != Some("validator") {
                continue;
            }
            let target: SocketAddr = peer["addr"].as_str().unwrap().parse().unwrap();
            let j: usize = peer["name"].as_str().unwrap().trim_start_matches("validator-").parse().unwrap();
            let listen = TcpListener::bind("127.0.0.1:0").unwrap();
            peer["addr"] = toml::Value::String(listen.local_addr().unwrap().to_string());
            let blocked = if i == 0 || j == 0 { cut.clone() } else { never.clone() };
            proxies.push(Proxy::start(listen, target, blocked));
        }
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    }
    for i in 0..=VALIDATORS {
        net.start(i);
    }
    let all = [0, 1, 2, 3];
    net.wait("every validator past height 3", 60, |n| n.heights(&all).iter().all(|&h| h >= 3));
    cut.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let certified = net.metric(0, "caasiope_certified_ledgers_total").unwrap();
    let h0 = net.height(0);
    let majority = net.heights(&[1, 2, 3]).into_iter().max().unwrap();
    net.wait("the majority certifies 5 more ledgers", 60, |n| {
        n.heights(&[1, 2, 3]).iter().all(|&x| x >= majority + 5)
    });
    // Alone, validator 0 has certified nothing since the cut (nor taken anything: no peer).
    assert_eq!(
        net.metric(0, "caasiope_certified_ledgers_total").unwrap(),
        certified,
        "peers of validator 0: {:?}\n{}",
        net.metric(0, "caasiope_peers_connected"),
        net.log_tail()
    );
    assert_eq!(net.height(0), h0);
    cut.store(false, Ordering::Relaxed);
    let target = net.heights(&[1, 2, 3]).into_iter().max().unwrap();
    net.wait("validator 0 catches up after the partition heals", 60, |n| n.height(0) >= target);
    net.stop_all();
    let chains: Vec<Vec<engine::Hash>> = all.iter().map(|&i| net.chain_of(i)).collect();
    let shortest = chains.iter().map(Vec::len).min().unwrap();
    for c in &chains[1..] {
        assert_eq!(&c[..shortest], &chains[0][..shortest], "fork");
    }
    drop(proxies);
}

#[test]
fn bench_localnet_commits_what_it_accepts_and_reports_its_bound() {
    let base = free_base();
    let out = bin()
        .args(["bench", "localnet", "--validators", "4", "--rate", "300", "--duration", "6"])
        .args(["--accounts", "400", "--hot-share", "0.5", "--runs", "2", "--base-port", &base.to_string()])
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(n("submitted"), 1800.0);
    assert_eq!(n("accepted") + n("rejected"), 1800.0);
    assert_eq!(n("committed"), n("accepted"), "every accepted transaction is committed: {r}");
    assert_eq!(n("refused_busy"), 0.0, "300 tx/s is far below the peak: {r}");
    assert!(n("bound_tx_per_s") > 0.0 && n("ratio") > 0.0 && n("tx_per_s_overall") > 0.0);
    assert!(r["later_rounds_validator_0"].is_u64(), "{r}");
    // Every ledger seen, in height order; together they hold what was committed.
    let ledgers = r["ledgers"].as_array().unwrap();
    let heights: Vec<u64> = ledgers.iter().map(|l| l[0].as_u64().unwrap()).collect();
    assert!(heights.windows(2).all(|w| w[0] < w[1]), "{heights:?}");
    let txs: u64 = ledgers.iter().map(|l| l[2].as_u64().unwrap()).sum();
    assert_eq!(txs as f64, n("committed"));
    // Six seconds of load at one ledger a second: a rate between ledgers, of the order of the
    // offer (a ledger's transactions arrived over its interval, give or take a height's jitter).
    let under = &r["under_load"];
    assert!(under["to_height"].as_u64().unwrap() > under["from_height"].as_u64().unwrap(), "{r}");
    assert!(n("tx_per_s") > 0.0 && n("tx_per_s") < 1200.0, "{r}");
    // Two runs, each on a fresh localnet: the report is one of them, both listed.
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().any(|x| x["ratio"] == r["ratio"]), "{r}");
}

/// Runs `promtool check metrics` on `text` (Debian's `prometheus` package; scripts/setup
/// installs it): it must pass. Without promtool the check is skipped, except in CI.
pub(crate) fn promtool_check(what: &str, text: &str) {
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(std::env::var_os("CI").is_none(), "promtool is not installed (scripts/setup installs it)");
        eprintln!("promtool not installed: {what}'s metrics not checked");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store is opened only with the genesis it was made from, compared parsed: the same file laid
/// out differently is accepted; one differing only in a chain parameter the genesis ledger does
/// not commit (min_fee) is refused with a clear error, as any other difference.
#[test]
fn a_store_opens_only_with_its_own_genesis() {
    let mut net = Localnet::init_n(1, 250);
    net.start(0);
    net.wait("the validator commits", 60, |n| n.height(0) >= 2);
    net.stop_all();
    let genesis_path = net.dir.path().join("genesis.toml");
    let original = std::fs::read_to_string(&genesis_path).unwrap();
    // Laid out differently (a comment, keys as TOML writes them again): the same genesis.
    let parsed: toml::Value = toml::from_str(&original).unwrap();
    std::fs::write(&genesis_path, format!("# kept by hand\n{}", toml::to_string(&parsed).unwrap())).unwrap();
    net.start(0);
    let h = net.height(0);
    net.wait("the validator commits on", 60, |n| n.height(0) > h);
    net.stop_all();
    // Another minimum fee: another chain, whatever the genesis ledger's hash says.
    assert!(original.contains("min_fee = 1000\n"));
    std::fs::write(&genesis_path, original.replace("min_fee = 1000\n", "min_fee = 1001\n")).unwrap();
    let mut child = bin()
        .arg("run")
        .arg("--config")
        .arg(&net.procs[0].config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("was made from another genesis than the file"), "{stderr}");
}

/// `bench open` starts a validator on a store of generated accounts again and again: each run's
/// time to ready and memory are reported, with the bound they are compared to.
#[test]
fn bench_open_reports_each_start_on_a_generated_store() {
    let base = free_base();
    let out = bin()
        .args(["bench", "open", "--accounts", "5000", "--runs", "2", "--block-interval-ms", "250"])
        .args(["--base-port", &base.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["accounts"], 5000);
    assert_eq!(r["bound_s"], 30.0);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{r}");
    for run in runs {
        assert!(run["open_s"].as_f64().unwrap() > 0.0 && run["anon_rss_bytes"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(r["store_bytes"].as_u64().unwrap() > 0 && r["open_s"].as_f64().unwrap() > 0.0, "{r}");
}
