//! `caasiope init --validators N --dir DIR` and `caasiope localnet --validators N --dir DIR`: a
//! network of separate processes on loopback — N validators and one explorer — on embedded
//! MDBX storage.
//!
//! Layout of DIR:
//! ```text
//! genesis.toml                 chain "localnet", the validators (weight 1), a funded faucet
//! faucet.key                   the faucet's secret key (0600)
//! validator-<i>/               node.crt, node.key (TLS identity), validator.key
//! explorer/                    node.crt, node.key
//! validator-<i>.toml, explorer.toml   one config per process
//! data/<name>/                 each process's store and consensus log
//! logs/<name>.log              each process's output (localnet)
//! localnet.json                name, role, pid and ports of every process (localnet)
//! prometheus.yml               a Prometheus scrape configuration of every process's admin port
//!                              (localnet; `scripts/prometheus start DIR` runs Prometheus on it)
//! ```
//! Ports: submit `base + i`, peer-to-peer `base + 100 + i`, admin `base + 200 + i`, where the
//! explorer is process N; the explorer's HTTP API listens on `base + 300 + N`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use engine::{
    Address, Currency,
    genesis::{BalanceSpec, CurrencySpec, GeneratedSpec, Genesis, GenesisConfig},
    ledger::Validator,
};
use exit::Output;
use net::NodeCert;
use replica::{ClickHouseSection, ConfigFile, PeerSpec, Role};

use replica::identity::VALIDATOR_KEY_FILE;

use crate::cli::LocalnetArgs;

/// Raw units of CAS the faucet holds at genesis (10 million CAS).
const FAUCET_FUNDING: i64 = 10_000_000 * 100_000_000;
/// Chain id of a localnet.
pub(crate) const LOCALNET_CHAIN: &str = "localnet";

/// One process of a localnet.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) config: PathBuf,
    pub(crate) submit: SocketAddr,
    pub(crate) p2p: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// The explorer's HTTP API.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) api: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) pid: Option<u32>,
}

/// What `init --validators` wrote.
#[derive(Debug, serde::Serialize)]
struct InitReport {
    dir: PathBuf,
    chain_id: &'static str,
    genesis: PathBuf,
    faucet: Address,
    processes: Vec<Process>,
}

fn addr(port: u32) -> anyhow::Result<SocketAddr> {
    let port = u16::try_from(port).context("port above 65535: choose a lower --base-port")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Writes the layout of a localnet into `dir`; refuses if `dir` already holds a genesis.
pub(crate) fn init(dir: &Path, validators: usize, net: &LocalnetArgs) -> anyhow::Result<Vec<Process>> {
    let generated = (net.generated_accounts > 0)
        .then(|| bench::workload::generated_accounts(net.generated_accounts))
        .into_iter()
        .collect();
    init_with(dir, validators, net, generated)
}

/// [`init`] with generated accounts in the genesis (`bench localnet`'s senders and receivers).
pub(crate) fn init_with(
    dir: &Path,
    validators: usize,
    net: &LocalnetArgs,
    generated: Vec<GeneratedSpec>,
) -> anyhow::Result<Vec<Process>> {
    if !(1..=engine::limits::VALIDATORS_MAX).contains(&validators) {
        bail!("--validators must be 1 to {}", engine::limits::VALIDATORS_MAX);
    }
    if !(100..=60_000).contains(&net.block_interval_ms) {
        bail!("--block-interval-ms must be 100 to 60000");
    }
    let genesis_path = dir.join("genesis.toml");
    if genesis_path.exists() {
        bail!("{} already exists; refusing to overwrite a network", genesis_path.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (processes, identities, keys) = create_identities(dir, validators, u32::from(net.base_port))?;
    let faucet = replica::identity::create_key_file(&dir.join("faucet.key"))?;
    let genesis = localnet_genesis(faucet.public_key().address(), &keys, &net.currencies, generated)?;
    for (i, p) in processes.iter().enumerate() {
        write_config(p, &processes, &identities, net)?;
        debug_assert_eq!(i < validators, p.role == Role::Validator);
    }
    std::fs::write(&genesis_path, genesis.to_toml())
        .with_context(|| format!("writing {}", genesis_path.display()))?;
    Ok(processes)
}

/// Creates the TLS identity of every process (and each validator's key) under `dir`: the
/// processes with their ports from `base`, their identities, the validators' keys.
fn create_identities(
    dir: &Path,
    validators: usize,
    base: u32,
) -> anyhow::Result<(Vec<Process>, Vec<net::Identity>, Vec<engine::SecretKey>)> {
    let mut processes = Vec::new();
    let mut identities = Vec::new();
    let mut keys = Vec::new();
    for i in 0..=validators {
        let (name, role) = if i < validators {
            (format!("validator-{i}"), Role::Validator)
        } else {
            ("explorer".into(), Role::Explorer)
        };
        let node_dir = dir.join(&name);
        let cert = NodeCert::generate(365)?;
        cert.save(&node_dir)?;
        if role == Role::Validator {
            keys.push(replica::identity::create_key_file(&node_dir.join(VALIDATOR_KEY_FILE))?);
        }
        identities.push(cert.identity());
        let i = i as u32;
        processes.push(Process {
            config: dir.join(format!("{name}.toml")),
            name,
            role,
            submit: addr(base + i)?,
            p2p: addr(base + 100 + i)?,
            admin: addr(base + 200 + i)?,
            api: if role == Role::Explorer { Some(addr(base + 300 + i)?) } else { None },
            pid: None,
        });
    }
    Ok((processes, identities, keys))
}

/// The localnet's genesis: the validators of `keys`, CAS and `currencies`, the faucet funded
/// (and the `generated` accounts).
fn localnet_genesis(
    faucet: Address,
    keys: &[engine::SecretKey],
    currencies: &[(Currency, Address)],
    generated: Vec<GeneratedSpec>,
) -> anyhow::Result<Genesis> {
    Ok(Genesis::new(GenesisConfig {
        generated,
        chain_id: LOCALNET_CHAIN.into(),
        timestamp_ms: engine::clock::now_ms(),
        min_fee: 1_000,
        max_ttl_ms: 3_600_000,
        fee_account: faucet,
        governance: faucet,
        validators: keys.iter().map(|k| Validator { public_key: k.public_key(), weight: 1 }).collect(),
        currencies: std::iter::once(CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) })
            .chain(currencies.iter().map(|&(symbol, issuer)| CurrencySpec { symbol, issuer }))
            .collect(),
        declarations: vec![],
        balances: vec![BalanceSpec { address: faucet, currency: Currency::CAS, amount: FAUCET_FUNDING }],
    })?)
}

/// Writes `p`'s config: its ports, and as peers every other validator (for the explorer, every
/// validator; validators know the explorer too).
fn write_config(
    p: &Process,
    processes: &[Process],
    identities: &[net::Identity],
    net: &LocalnetArgs,
) -> anyhow::Result<()> {
    let peers = processes
        .iter()
        .zip(identities)
        .filter(|(q, _)| q.name != p.name && (p.role == Role::Validator || q.role == Role::Validator))
        .map(|(q, id)| PeerSpec { name: q.name.clone(), role: q.role, identity: id.to_string(), addr: q.p2p })
        .collect();
    let data_dir = format!("data/{}", p.name);
    let validator_key = format!("{}/{VALIDATOR_KEY_FILE}", p.name);
    let file = ConfigFile {
        role: p.role,
        data_dir: &data_dir,
        genesis: "genesis.toml",
        validator_key: (p.role == Role::Validator).then_some(validator_key.as_str()),
        block_interval_ms: net.block_interval_ms,
        submit_listen: p.submit,
        node_dir: &p.name,
        listen: p.p2p,
        admin_listen: p.admin,
        api_listen: p.api,
        transport: Some(&net.transport),
        peers,
        keep_ledgers: net.keep_ledgers.filter(|_| p.role != Role::Explorer),
        keep_bytes: net.keep_bytes.filter(|_| p.role != Role::Explorer),
        clickhouse: net
            .clickhouse
            .as_deref()
            .filter(|_| p.role == Role::Explorer)
            .map(|url| ClickHouseSection { url, database: &net.clickhouse_database }),
    };
    let text = toml::to_string(&file).context("writing a config")?;
    std::fs::write(&p.config, text).with_context(|| format!("writing {}", p.config.display()))
}

/// `caasiope init --validators N --dir DIR`.
pub fn init_command(dir: &Path, validators: usize, net: &LocalnetArgs) -> anyhow::Result<Output> {
    let processes = init(dir, validators, net)?;
    let faucet =
        replica::identity::read_key_file(&dir.join("faucet.key"), "key file")?.public_key().address();
    Output::json(&InitReport {
        dir: dir.to_owned(),
        chain_id: LOCALNET_CHAIN,
        genesis: dir.join("genesis.toml"),
        faucet,
        processes,
    })
}

/// The processes of an initialized localnet directory.
pub(crate) fn processes(dir: &Path) -> anyhow::Result<Vec<Process>> {
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".toml") && n != "genesis.toml")
        .collect();
    names.sort_by_key(|n| {
        (
            n == "explorer.toml",
            n.trim_start_matches("validator-").trim_end_matches(".toml").parse::<u32>().unwrap_or(0),
        )
    });
    for name in names {
        let config = dir.join(&name);
        let cfg = replica::NodeConfig::load(&config)?;
        let net = cfg.net.as_ref().context("a localnet config has a network section")?;
        out.push(Process {
            name: name.trim_end_matches(".toml").to_owned(),
            role: cfg.role,
            config,
            submit: cfg.submit_listen,
            p2p: net.listen.context("a localnet process listens")?,
            admin: net.admin_listen,
            api: cfg.api_listen,
            pid: None,
        });
    }
    Ok(out)
}

/// Spawns `caasiope run --config` for one process, its output appended to `logs/<name>.log`.
pub(crate) fn spawn(dir: &Path, p: &Process) -> anyhow::Result<Child> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{}.log", p.name)))?;
    let exe = std::env::current_exe().context("locating the caasiope binary")?;
    Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&p.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", p.name))
}

/// Asks a child to stop (SIGTERM), then kills it after `grace`.
pub(crate) fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on a pid of our own child, with a valid signal number.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `caasiope localnet --validators N --dir DIR`: initializes the directory if needed, starts
/// every process and watches them until Ctrl-C, then stops them.
pub fn run(dir: &Path, validators: usize, net: &LocalnetArgs) -> anyhow::Result<Output> {
    if dir.join("genesis.toml").exists() {
        eprintln!("caasiope: using the localnet in {}", dir.display());
    } else {
        init(dir, validators, net)?;
        eprintln!("caasiope: initialized a localnet of {validators} validators in {}", dir.display());
    }
    let mut processes = processes(dir)?;
    let stop_flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop_flag.clone()).context("installing signal handlers")?;
    }
    let mut children = Vec::new();
    for p in &mut processes {
        let child = spawn(dir, p)?;
        p.pid = Some(child.id());
        children.push(child);
    }
    let json = serde_json::to_string_pretty(&processes)?;
    std::fs::write(dir.join("localnet.json"), json)?;
    std::fs::write(dir.join("prometheus.yml"), prometheus_config(&processes))?;
    print_processes(dir, &processes);
    supervise(dir, &mut processes, &mut children, &stop_flag);
    eprintln!("caasiope: stopping the localnet");
    for c in &mut children {
        stop(c, Duration::from_secs(10));
    }
    Ok(Output::Nothing)
}

/// A Prometheus configuration scraping every process's `/metrics` (admin port) every 5 s, each
/// target labelled with its `node` name and `role` (what deploy/grafana/caasiope.json groups by).
fn prometheus_config(processes: &[Process]) -> String {
    let mut out = String::from(
        "# Written by `caasiope localnet`: every process of this localnet, scraped on its admin port.\n\
         # scripts/prometheus start DIR runs Debian's Prometheus with it; deploy/grafana/caasiope.json\n\
         # is a dashboard over it (docs/METRICS.md).\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         scrape_configs:\n  - job_name: caasiope\n    metrics_path: /metrics\n    static_configs:\n",
    );
    for p in processes {
        let role = format!("{:?}", p.role).to_lowercase();
        out += &format!(
            "      - targets: [\"{}\"]\n        labels: {{node: \"{}\", role: \"{role}\"}}\n",
            p.admin, p.name
        );
    }
    out
}

/// Prints every process's pid and ports, and where the API and logs are.
fn print_processes(dir: &Path, processes: &[Process]) {
    for p in processes {
        println!(
            "{:<14} {:<9} pid {:<7} submit {}  p2p {}  admin http://{}/metrics",
            p.name,
            format!("{:?}", p.role).to_lowercase(),
            p.pid.unwrap_or(0),
            p.submit,
            p.p2p,
            p.admin
        );
    }
    for p in processes {
        if let Some(api) = p.api {
            println!("explorer API   http://{api}/v1/status  (docs/API.md, /v1/openapi.json)");
        }
    }
    println!("logs in {}/logs; Ctrl-C stops every process", dir.display());
}

/// Until `stop_flag`: reports a child that exits, and every 10 s every process's height.
fn supervise(dir: &Path, processes: &mut [Process], children: &mut [Child], stop_flag: &AtomicBool) {
    let mut last_report = Instant::now();
    while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        // Ctrl-C in a terminal reaches the children too: their exit is then no news.
        if stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        for (p, c) in processes.iter().zip(children.iter_mut()) {
            if let Ok(Some(status)) = c.try_wait() {
                if p.pid.is_some() {
                    eprintln!(
                        "caasiope: {} exited ({status}); see {}/logs/{}.log",
                        p.name,
                        dir.display(),
                        p.name
                    );
                }
            }
        }
        processes.iter_mut().zip(children.iter_mut()).for_each(|(p, c)| {
            if matches!(c.try_wait(), Ok(Some(_))) {
                p.pid = None;
            }
        });
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            print_heights(processes);
        }
    }
}

/// Prints every process's ledger height (`-` if its metrics do not answer).
fn print_heights(processes: &[Process]) {
    let heights: Vec<String> = processes
        .iter()
        .map(|p| {
            let h = replica::admin_get(p.admin, "/metrics")
                .ok()
                .and_then(|b| replica::metric(&b, "caasiope_ledger_height"));
            format!("{} {}", p.name, h.map_or_else(|| "-".into(), |h| h.to_string()))
        })
        .collect();
    println!("heights: {}", heights.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--generated-accounts N` makes a genesis that funds N generated accounts besides the
    /// faucet (a few lines of TOML); without it, none.
    #[test]
    fn a_localnet_can_start_with_generated_accounts() {
        use clap::Parser;
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            net: LocalnetArgs,
        }
        let mut without = None;
        for (given, count) in [(None, 0), (Some("2500"), 2_500)] {
            let dir = tempfile::tempdir().unwrap();
            let mut argv = vec!["localnet", "--base-port", "29000"];
            argv.extend(given.iter().flat_map(|n| ["--generated-accounts", n]));
            let args = Args::try_parse_from(argv).unwrap();
            init(dir.path(), 1, &args.net).unwrap();
            let text = std::fs::read_to_string(dir.path().join("genesis.toml")).unwrap();
            assert!(text.len() < 4096, "{} bytes", text.len());
            let genesis = Genesis::from_toml(&text).unwrap();
            assert_eq!(genesis.generated_count(), count);
            let accounts = engine::state::State::from_genesis(&genesis).account_count() as u64;
            let base = *without.get_or_insert(accounts);
            assert_eq!(accounts, base + count, "the faucet's genesis and the generated accounts");
        }
        assert!(Args::try_parse_from(["localnet", "--generated-accounts", "16000001"]).is_err());
    }

    /// The scrape configuration `localnet` writes is one Prometheus takes (`promtool check
    /// config`, where promtool is installed: always in CI).
    #[test]
    fn the_prometheus_configuration_passes_promtool() {
        let dir = tempfile::tempdir().unwrap();
        let process = |name: &str, role, i: u16| Process {
            name: name.to_owned(),
            role,
            config: dir.path().join(format!("{name}.toml")),
            submit: SocketAddr::from(([127, 0, 0, 1], 7100 + i)),
            p2p: SocketAddr::from(([127, 0, 0, 1], 7200 + i)),
            admin: SocketAddr::from(([127, 0, 0, 1], 7300 + i)),
            api: None,
            pid: None,
        };
        let config = prometheus_config(&[
            process("validator-0", Role::Validator, 0),
            process("explorer", Role::Explorer, 1),
        ]);
        assert!(config.contains(
            "- targets: [\"127.0.0.1:7301\"]\n        labels: {node: \"explorer\", role: \"explorer\"}"
        ));
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, &config).unwrap();
        match Command::new("promtool").args(["check", "config"]).arg(&path).output() {
            Ok(out) => assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed (scripts/setup installs it)"
            ),
        }
    }
}
