//! The node's configuration file (`caasiope run --config FILE`).
//!
//! ```toml
//! role = "validator"                 # validator | node | explorer
//! data_dir = "data/validator-0"      # relative paths are relative to this file
//! genesis = "genesis.toml"
//! validator_key = "validator-0.key"  # consensus key: 64 hex characters (validators)
//! block_interval_ms = 1000           # 100 to 60000
//! submit_listen = "127.0.0.1:7100"   # raw transaction submission (length-prefixed frames)
//! backend = "libsecp256k1"           # or "k256"
//! sync = "durable"                   # or "safe_no_sync" (see the storage crate)
//! keep_ledgers = 86400               # ledgers a validator's or node's store keeps (0: all);
//!                                    # an explorer keeps every ledger
//! keep_bytes = 21474836480           # and at most these bytes of them (default: no limit)
//! snapshot_every_ledgers = 10000     # a snapshot of the store served to joining peers (0: none)
//! state_sync = false                 # true: a new store starts from a peer's snapshot
//! # The network (absent: single-validator mode, where this validator alone is a quorum).
//! node_dir = "validator-0"           # TLS identity: node.crt, node.key
//! listen = "127.0.0.1:7200"          # peer-to-peer (TLS 1.3)
//! admin_listen = "127.0.0.1:7300"    # /healthz and /metrics, loopback only
//! transport = "auto"                 # auto | io_uring | epoll
//! [[peers]]                          # every peer this process talks to
//! name = "validator-1"
//! role = "validator"
//! identity = "…64 hex…"              # SHA-256 of its certificate's SubjectPublicKeyInfo
//! addr = "127.0.0.1:7201"
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::bail;
use engine::Backend;

use limits::CONFIG_BYTES_MAX;

/// The role of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Validates, takes part in consensus, signs ledgers.
    Validator,
    /// Stores and follows the chain.
    Node,
    /// A node that also serves the public API.
    Explorer,
}

/// Storage durability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sync {
    /// fsync at every ledger commit.
    #[default]
    Durable,
    /// No fsync: a process crash loses nothing, a power loss may lose the last ledgers.
    SafeNoSync,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    role: Role,
    data_dir: PathBuf,
    genesis: PathBuf,
    validator_key: Option<PathBuf>,
    #[serde(default = "default_interval")]
    block_interval_ms: u64,
    #[serde(default = "default_submit")]
    submit_listen: SocketAddr,
    #[serde(default = "default_backend")]
    backend: Backend,
    #[serde(default)]
    sync: Sync,
    node_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    transport: Option<String>,
    #[serde(default)]
    peers: Vec<PeerSpec>,
    api_listen: Option<SocketAddr>,
    /// Origins whose scripts may read the API (CORS): `["*"]` (the default) any, `[]` none.
    api_cors_origins: Option<Vec<String>>,
    /// Ledgers a validator's or node's store keeps (0: every one); default [`KEEP_LEDGERS`].
    keep_ledgers: Option<u64>,
    /// Bytes the kept ledgers may take (default: no limit).
    keep_bytes: Option<u64>,
    clickhouse: Option<storage::ClickHouseConfig>,
    /// Ledgers between two snapshots of the store served to joining peers (0: none); default
    /// [`limits::SNAPSHOT_EVERY_LEDGERS`] for a networked process.
    snapshot_every_ledgers: Option<u64>,
    /// A store that does not exist yet starts from a peer's snapshot (checked against the
    /// chain), not from genesis.
    #[serde(default)]
    state_sync: bool,
}

/// A config file as `init --validators` and `genesis new` write it (what [`NodeConfig::load`]
/// reads; absent options are left out).
#[derive(Debug, serde::Serialize)]
pub struct ConfigFile<'a> {
    /// The process's role.
    pub role: Role,
    /// Its store's directory.
    pub data_dir: &'a str,
    /// The genesis file.
    pub genesis: &'a str,
    /// A validator's key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator_key: Option<&'a str>,
    /// The block interval.
    pub block_interval_ms: u64,
    /// Raw transaction submission.
    pub submit_listen: SocketAddr,
    /// The TLS identity's directory.
    pub node_dir: &'a str,
    /// Peer-to-peer.
    pub listen: SocketAddr,
    /// `/healthz` and `/metrics` (loopback).
    pub admin_listen: SocketAddr,
    /// An explorer's HTTP API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,
    /// auto, io_uring or epoll (absent: auto).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'a str>,
    /// Every peer it talks to.
    pub peers: Vec<PeerSpec>,
    /// Ledgers kept (validators and nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_ledgers: Option<u64>,
    /// Bytes of kept ledgers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_bytes: Option<u64>,
    /// An explorer's replication into ClickHouse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<ClickHouseSection<'a>>,
}

/// The `[clickhouse]` section of an explorer's config.
#[derive(Debug, serde::Serialize)]
pub struct ClickHouseSection<'a> {
    /// The server's HTTP URL.
    pub url: &'a str,
    /// The database.
    pub database: &'a str,
}

/// Ledgers a validator's or node's store keeps by default: a day's at one a second, so a peer
/// down for a day catches up from any validator.
pub(crate) const KEEP_LEDGERS: u64 = 86_400;

/// A peer of the configuration.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// A name for logs and metrics.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its TLS identity, 64 hex characters.
    pub identity: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The network part of a configuration.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub node_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub transport: net::transport::TransportChoice,
    pub peers: Vec<(PeerSpec, net::Identity)>,
}

const fn default_interval() -> u64 {
    1_000
}

fn default_submit() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7100))
}

const fn default_backend() -> Backend {
    Backend::Libsecp256k1
}

/// A checked configuration with paths resolved.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub role: Role,
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    pub validator_key: Option<PathBuf>,
    pub block_interval_ms: u64,
    pub submit_listen: SocketAddr,
    pub backend: Backend,
    pub sync: Sync,
    pub net: Option<NetConfig>,
    /// The explorer's public HTTP API (explorers only).
    pub api_listen: Option<SocketAddr>,
    /// The API's CORS policy (`api_cors_origins`).
    pub api_cors: explorer::Cors,
    /// Replication into ClickHouse (explorers only).
    pub clickhouse: Option<storage::ClickHouseConfig>,
    /// What the store keeps of the chain (`None`: every ledger, as an explorer does).
    pub retention: Option<storage::Retention>,
    /// Ledgers between two snapshots served to peers (0: none; a process without a network
    /// takes none).
    pub snapshot_every_ledgers: u64,
    /// Whether a store that does not exist yet starts from a peer's snapshot.
    pub state_sync: bool,
}

use exit::read_text;

impl NodeConfig {
    /// Loads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = read_text(path, CONFIG_BYTES_MAX, "config file")?;
        let f: File = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        if !(100..=60_000).contains(&f.block_interval_ms) {
            bail!("block_interval_ms must be 100 to 60000, not {}", f.block_interval_ms);
        }
        // A network section is a node directory and an admin port (both, checked below).
        let api_cors = explorer_settings(&f, f.node_dir.is_some() && f.admin_listen.is_some(), path)?;
        let retention = retention(&f, path)?;
        let net = match (f.node_dir, f.admin_listen) {
            (None, None) if f.peers.is_empty() && f.listen.is_none() => None,
            (Some(node_dir), Some(admin_listen)) => {
                if !admin_listen.ip().is_loopback() {
                    bail!("admin_listen {admin_listen} must be a loopback address");
                }
                let mut peers = Vec::with_capacity(f.peers.len());
                for p in f.peers {
                    let identity: net::Identity =
                        p.identity.parse().map_err(|e| anyhow::anyhow!("peer {}: identity: {e}", p.name))?;
                    peers.push((p, identity));
                }
                if peers.is_empty() {
                    bail!("a networked process needs at least one [[peers]] entry");
                }
                Some(NetConfig {
                    node_dir: resolve(node_dir),
                    listen: f.listen,
                    admin_listen,
                    transport: f
                        .transport
                        .as_deref()
                        .unwrap_or("auto")
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("config {}: {e}", path.display()))?,
                    peers,
                })
            }
            _ => bail!("a networked process needs node_dir, admin_listen and [[peers]]"),
        };
        if f.role == Role::Validator && f.sync == Sync::SafeNoSync {
            bail!(
                "config {}: a validator stores every ledger durably (sync = \"durable\"): with \"safe_no_sync\" a power loss may roll its store back below what it signed (followers and benchmarks may keep it)",
                path.display()
            );
        }
        if f.state_sync && net.is_none() {
            bail!(
                "config {}: state_sync takes a snapshot from peers: it needs the network section",
                path.display()
            );
        }
        let snapshot_every_ledgers = match &net {
            Some(_) => f.snapshot_every_ledgers.unwrap_or(limits::SNAPSHOT_EVERY_LEDGERS),
            None => 0,
        };
        Ok(Self {
            retention,
            snapshot_every_ledgers,
            state_sync: f.state_sync,
            api_listen: f.api_listen,
            api_cors,
            clickhouse: f.clickhouse,
            net,
            role: f.role,
            data_dir: resolve(f.data_dir),
            genesis: resolve(f.genesis),
            validator_key: f.validator_key.map(resolve),
            block_interval_ms: f.block_interval_ms,
            submit_listen: f.submit_listen,
            backend: f.backend,
            sync: f.sync,
        })
    }
}

/// The store's retention: an explorer keeps every ledger; a validator or a node keeps
/// `keep_ledgers` (default [`KEEP_LEDGERS`], 0 for all) within `keep_bytes`.
fn retention(f: &File, path: &Path) -> anyhow::Result<Option<storage::Retention>> {
    if f.role == Role::Explorer {
        if f.keep_ledgers.is_some() || f.keep_bytes.is_some() {
            bail!(
                "config {}: an explorer keeps every ledger (its API and indexes serve them): no keep_ledgers or keep_bytes",
                path.display()
            );
        }
        return Ok(None);
    }
    let ledgers = f.keep_ledgers.unwrap_or(KEEP_LEDGERS);
    if f.keep_bytes == Some(0) {
        bail!("config {}: keep_bytes must be positive (absent: no limit)", path.display());
    }
    Ok(match (ledgers, f.keep_bytes) {
        (0, None) => None,
        (0, Some(bytes)) => Some(storage::Retention { ledgers: u64::MAX, bytes }),
        (ledgers, bytes) => Some(storage::Retention { ledgers, bytes: bytes.unwrap_or(u64::MAX) }),
    })
}

/// Checks the explorer's settings (its API, CORS, ClickHouse) are an explorer's; the API's
/// CORS policy.
fn explorer_settings(f: &File, networked: bool, path: &Path) -> anyhow::Result<explorer::Cors> {
    let explorer = f.role == Role::Explorer && networked;
    if f.api_listen.is_some() && !explorer {
        bail!("api_listen is for a networked explorer (role = \"explorer\" with a network section)");
    }
    if f.api_cors_origins.is_some() && f.api_listen.is_none() {
        bail!("config {}: api_cors_origins is for an explorer with api_listen", path.display());
    }
    let api_cors = explorer::Cors::from_list(f.api_cors_origins.as_deref().unwrap_or(&["*".to_owned()]))
        .map_err(|e| anyhow::anyhow!("config {}: api_cors_origins: {e}", path.display()))?;
    if let Some(ch) = &f.clickhouse {
        if !explorer {
            bail!("[clickhouse] is for a networked explorer (role = \"explorer\" with a network section)");
        }
        ch.validate().map_err(|e| anyhow::anyhow!("config {}: [clickhouse]: {e}", path.display()))?;
    }
    Ok(api_cors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validator_that_would_not_store_durably_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let base = "role = \"validator\"\ndata_dir = \"data\"\ngenesis = \"g.toml\"\nvalidator_key = \"v.key\"\n\
                    submit_listen = \"127.0.0.1:9\"\n";
        std::fs::write(&path, format!("{base}sync = \"safe_no_sync\"\n")).unwrap();
        let e = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("durably"), "{e}");
        std::fs::write(&path, base).unwrap();
        assert_eq!(NodeConfig::load(&path).unwrap().sync, Sync::Durable);
        // Followers may keep it.
        std::fs::write(
            &path,
            base.replace("validator\"", "node\"").replace("validator_key = \"v.key\"\n", "")
                + "sync = \"safe_no_sync\"\n",
        )
        .unwrap();
        assert_eq!(NodeConfig::load(&path).unwrap().sync, Sync::SafeNoSync);
    }

    /// Snapshots are served by networked processes (every `SNAPSHOT_EVERY_LEDGERS` unless told
    /// otherwise); state sync needs peers to take one from.
    #[test]
    fn snapshots_and_state_sync_are_a_networked_processs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let alone =
            "role = \"validator\"\ndata_dir = \"data\"\ngenesis = \"g.toml\"\nvalidator_key = \"v.key\"\n";
        let networked = format!(
            "{alone}node_dir = \".\"\nadmin_listen = \"127.0.0.1:9\"\n[[peers]]\nname = \"p\"\nrole = \"validator\"\n\
             identity = \"{}\"\naddr = \"127.0.0.1:8\"\n",
            "ab".repeat(32)
        );
        let load = |text: String| {
            std::fs::write(&path, text).unwrap();
            NodeConfig::load(&path)
                .map(|c| (c.snapshot_every_ledgers, c.state_sync))
                .map_err(|e| e.to_string())
        };
        assert_eq!(load(alone.into()), Ok((0, false)));
        assert_eq!(load(networked.clone()), Ok((limits::SNAPSHOT_EVERY_LEDGERS, false)));
        assert_eq!(
            load(format!("snapshot_every_ledgers = 0\nstate_sync = true\n{networked}")),
            Ok((0, true))
        );
        let e = load(format!("state_sync = true\n{alone}")).unwrap_err();
        assert!(e.contains("state_sync"), "{e}");
    }

    /// Validators and nodes keep a day of ledgers unless told otherwise; explorers keep all.
    #[test]
    fn retention_is_a_validators_or_a_nodes() {
        use storage::Retention;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let base =
            "role = \"validator\"\ndata_dir = \"data\"\ngenesis = \"g.toml\"\nvalidator_key = \"v.key\"\n";
        let load = |extra: &str| {
            std::fs::write(&path, format!("{base}{extra}")).unwrap();
            NodeConfig::load(&path).map(|c| c.retention).map_err(|e| e.to_string())
        };
        assert_eq!(load(""), Ok(Some(Retention { ledgers: KEEP_LEDGERS, bytes: u64::MAX })));
        assert_eq!(load("keep_ledgers = 0\n"), Ok(None));
        assert_eq!(
            load("keep_ledgers = 0\nkeep_bytes = 9\n"),
            Ok(Some(Retention { ledgers: u64::MAX, bytes: 9 }))
        );
        assert_eq!(
            load("keep_ledgers = 10\nkeep_bytes = 9\n"),
            Ok(Some(Retention { ledgers: 10, bytes: 9 }))
        );
        assert!(load("keep_bytes = 0\n").unwrap_err().contains("positive"));
        let explorer = "role = \"explorer\"\ndata_dir = \"data\"\ngenesis = \"g.toml\"\n";
        std::fs::write(&path, explorer).unwrap();
        assert_eq!(NodeConfig::load(&path).unwrap().retention, None);
        std::fs::write(&path, format!("{explorer}keep_ledgers = 5\n")).unwrap();
        assert!(NodeConfig::load(&path).unwrap_err().to_string().contains("every ledger"));
    }

    #[test]
    fn cors_origins_are_for_an_api_and_default_to_any() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let base =
            "role = \"validator\"\ndata_dir = \"data\"\ngenesis = \"g.toml\"\nvalidator_key = \"v.key\"\n";
        std::fs::write(&path, base).unwrap();
        assert_eq!(NodeConfig::load(&path).unwrap().api_cors, explorer::Cors::Any);
        std::fs::write(&path, format!("{base}api_cors_origins = [\"https://a.example\"]\n")).unwrap();
        let e = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("api_cors_origins is for an explorer"), "{e}");
    }
}
