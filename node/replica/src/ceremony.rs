//! A genesis ceremony without shared secrets (`caasiope init --advertise`, `caasiope genesis new`,
//! `caasiope genesis inspect`).
//!
//! Each member runs `init` in its own directory: its secrets are written there (0600, never
//! printed) with a public `member.json` — name, role, TLS identity, advertised peer address,
//! consensus public key (a validator's) and the address it governs with. A coordinator gathers
//! the `member.json` files and runs `genesis new`, which writes `genesis.toml` (the validators,
//! governance as a K-of-N MultiSig of the members' governance addresses) and one config per
//! member, `<name>.toml`, whose paths are relative to the member's own directory: each member
//! copies `genesis.toml` and its config there, checks the genesis hash with `genesis inspect`,
//! and runs `caasiope run --config <dir>/<name>.toml`.

use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    io::Write,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use engine::{
    Address, Currency, Declaration, MultiSig, PublicKey,
    genesis::{BalanceSpec, CurrencySpec, DeclarationSpec, Genesis, GenesisConfig},
    ledger::Validator,
    state::State,
};
use exit::{Output, read_text};
use limits::{CONFIG_BYTES_MAX, MEMBER_FILE_BYTES_MAX};
use net::NodeCert;

use crate::{
    ConfigFile, PeerSpec, Role,
    identity::{VALIDATOR_KEY_FILE, create_key_file},
};

/// The public file `init --advertise` writes.
pub const MEMBER_FILE: &str = "member.json";
/// The governance key `init` writes when the member names no address of its own.
pub const GOVERNANCE_KEY_FILE: &str = "governance.key";
/// The format tag of a member file.
const MEMBER_FORMAT: &str = "caasiope-member/1";

/// What a member publishes: everything the others need to list it as a peer and a validator,
/// nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Always `caasiope-member/1`.
    pub format: String,
    /// The member's name: its peers' name for it and its config's file name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The SHA-256 of its TLS certificate's SubjectPublicKeyInfo (hex).
    pub identity: String,
    /// Where its peers reach it (peer-to-peer, TLS 1.3).
    pub advertise: SocketAddr,
    /// Its consensus key (a validator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator_public_key: Option<PublicKey>,
    /// The address it signs governance transactions with.
    pub governance_address: Address,
    /// Where it listens for peers (default: every interface, the advertised port).
    pub listen: SocketAddr,
    /// Where it takes raw transactions.
    pub submit_listen: SocketAddr,
    /// Its `/healthz` and `/metrics` (loopback).
    pub admin_listen: SocketAddr,
    /// Its HTTP API (an explorer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,
}

/// The choices of `init --advertise`.
#[derive(Clone, Debug)]
pub struct MemberArgs {
    /// The member's name (default: the directory's name).
    pub name: Option<String>,
    /// Its role.
    pub role: Role,
    /// Where its peers reach it.
    pub advertise: SocketAddr,
    /// Its governance address (absent: a new key in `governance.key`).
    pub governance_address: Option<Address>,
    /// Where it listens for peers (absent: every interface, the advertised port).
    pub listen: Option<SocketAddr>,
    /// Where it takes raw transactions.
    pub submit_listen: SocketAddr,
    /// Its admin port (loopback).
    pub admin_listen: SocketAddr,
    /// Its HTTP API (explorers; absent: 127.0.0.1:8080 for an explorer).
    pub api_listen: Option<SocketAddr>,
}

/// Checks a member's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot (it names a
/// file in the coordinator's directory).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!("member name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ - (not starting with a dot)");
    }
    Ok(())
}

/// Checks a member's name and addresses.
fn check_endpoints(
    name: &str,
    role: Role,
    advertise: SocketAddr,
    admin_listen: SocketAddr,
    api_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    check_name(name)?;
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        bail!("member {name}: advertise {advertise} is no address a peer can reach");
    }
    if !admin_listen.ip().is_loopback() {
        bail!("member {name}: admin_listen {admin_listen} must be a loopback address");
    }
    if api_listen.is_some() != (role == Role::Explorer) {
        bail!("member {name}: an explorer, and only an explorer, has an api_listen");
    }
    Ok(())
}

impl Member {
    /// Checks what one member file can check alone.
    fn check(&self) -> anyhow::Result<()> {
        if self.format != MEMBER_FORMAT {
            bail!("member {}: format {:?}, expected {MEMBER_FORMAT:?}", self.name, self.format);
        }
        check_endpoints(&self.name, self.role, self.advertise, self.admin_listen, self.api_listen)?;
        self.identity
            .parse::<net::Identity>()
            .map_err(|e| anyhow::anyhow!("member {}: identity: {e}", self.name))?;
        if (self.role == Role::Validator) != self.validator_public_key.is_some() {
            bail!("member {}: a validator, and only a validator, has a validator_public_key", self.name);
        }
        Ok(())
    }

    /// Reads and checks a member file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = read_text(path, MEMBER_FILE_BYTES_MAX, "member file")?;
        let m: Self =
            serde_json::from_str(&text).with_context(|| format!("member file {}", path.display()))?;
        m.check().with_context(|| format!("member file {}", path.display()))?;
        Ok(m)
    }
}

/// Creates `path` (mode 0644, never overwriting) with `text`.
fn create_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o644).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; refusing to overwrite it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `caasiope init --dir DIR --advertise HOST:PORT …`: a member's secrets (TLS identity,
/// validator key for a validator, governance key unless an address is given) and its public
/// `member.json`. Writes nothing if any of these files exists.
pub fn init_member(dir: &Path, days: u32, args: &MemberArgs) -> anyhow::Result<Output> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => fs::canonicalize(dir)
            .ok()
            .or_else(|| Some(dir.to_owned()))
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .context("no member name: pass --name")?,
    };
    let api_listen = match (args.role, args.api_listen) {
        (Role::Explorer, api) => Some(api.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))),
        (_, Some(_)) => bail!("--api-listen is for an explorer"),
        (_, None) => None,
    };
    // Everything public that can be checked is, before a secret is written.
    check_endpoints(&name, args.role, args.advertise, args.admin_listen, api_listen)?;
    let validator = args.role == Role::Validator;
    let mut files = vec![net::identity::CERT_FILE, net::identity::KEY_FILE, MEMBER_FILE];
    if validator {
        files.push(VALIDATOR_KEY_FILE);
    }
    if args.governance_address.is_none() {
        files.push(GOVERNANCE_KEY_FILE);
    }
    for f in &files {
        if dir.join(f).exists() {
            bail!("{} already exists; refusing to overwrite it", dir.join(f).display());
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let node = NodeCert::generate(days)?;
    node.save(dir)?;
    let validator_public_key =
        if validator { Some(create_key_file(&dir.join(VALIDATOR_KEY_FILE))?.public_key()) } else { None };
    let governance_address = match args.governance_address {
        Some(address) => address,
        None => create_key_file(&dir.join(GOVERNANCE_KEY_FILE))?.public_key().address(),
    };
    let member = Member {
        format: MEMBER_FORMAT.into(),
        name,
        role: args.role,
        identity: node.identity().to_string(),
        advertise: args.advertise,
        validator_public_key,
        governance_address,
        listen: args.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], args.advertise.port()))),
        submit_listen: args.submit_listen,
        admin_listen: args.admin_listen,
        api_listen,
    };
    member.check()?;
    create_new(&dir.join(MEMBER_FILE), &format!("{}\n", serde_json::to_string_pretty(&member)?))?;
    Output::json(&member)
}

/// The choices of `genesis new`.
#[derive(Clone, Debug)]
pub struct GenesisArgs {
    /// The chain id.
    pub chain_id: String,
    /// The members' files.
    pub members: Vec<PathBuf>,
    /// Governance signatures required (default: more than two thirds of the members).
    pub governance_required: Option<u16>,
    /// A governance address instead of the members' MultiSig.
    pub governance: Option<Address>,
    /// Currencies besides CAS, with their issuers.
    pub currencies: Vec<(Currency, Address)>,
    /// Balances at genesis.
    pub balances: Vec<BalanceSpec>,
    /// The block interval written in every config.
    pub block_interval_ms: u64,
    /// The smallest fee (raw units).
    pub min_fee: i64,
    /// The longest time to live of a transaction.
    pub max_ttl_ms: i64,
    /// Where to write `genesis.toml` and the configs.
    pub out: PathBuf,
}

/// The peers of `m`: a validator talks to every other member; a node or an explorer to the
/// validators.
fn peers_of(m: &Member, members: &[Member]) -> Vec<PeerSpec> {
    members
        .iter()
        .filter(|q| q.name != m.name && (m.role == Role::Validator || q.role == Role::Validator))
        .map(|q| PeerSpec {
            name: q.name.clone(),
            role: q.role,
            identity: q.identity.clone(),
            addr: q.advertise,
        })
        .collect()
}

/// Checks the members together: distinct names, identities, addresses and keys; at least one
/// validator, at most the protocol's bound.
fn check_members(members: &[Member]) -> anyhow::Result<()> {
    fn distinct<T: Ord>(what: &str, items: impl Iterator<Item = T>) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        for item in items {
            if !seen.insert(item) {
                bail!("two members share a {what}");
            }
        }
        Ok(())
    }
    distinct("name", members.iter().map(|m| &m.name))?;
    distinct("TLS identity", members.iter().map(|m| &m.identity))?;
    distinct("advertised address", members.iter().map(|m| m.advertise))?;
    distinct("validator key", members.iter().filter_map(|m| m.validator_public_key.map(|k| k.to_hex())))?;
    let validators = members.iter().filter(|m| m.role == Role::Validator).count();
    if !(1..=engine::limits::VALIDATORS_MAX).contains(&validators) {
        bail!("a genesis needs 1 to {} validators, not {validators}", engine::limits::VALIDATORS_MAX);
    }
    Ok(())
}

/// Governance: `given`, or a K-of-N MultiSig of the members' governance addresses (one member:
/// its address). The address and the declaration to publish at genesis, if any.
fn governance(
    members: &[Member],
    given: Option<Address>,
    required: Option<u16>,
) -> anyhow::Result<(Address, Option<DeclarationSpec>, u16)> {
    if let Some(address) = given {
        if required.is_some() {
            bail!("--governance-required is for the members' MultiSig, not a given --governance");
        }
        return Ok((address, None, 1));
    }
    let mut signers: Vec<Address> = members.iter().map(|m| m.governance_address).collect();
    signers.sort_by_cached_key(Address::to_text);
    signers.dedup();
    let n = signers.len();
    let k = required.map_or(2 * n / 3 + 1, usize::from);
    if !(1..=n).contains(&k) {
        bail!("--governance-required must be 1 to {n} (the members' distinct governance addresses)");
    }
    if n == 1 {
        return Ok((signers[0], None, 1));
    }
    let k16 = i16::try_from(k).context("--governance-required")?;
    let ms = MultiSig::new(signers.clone(), k16).map_err(|e| anyhow::anyhow!("governance MultiSig: {e}"))?;
    let address = Declaration::MultiSig(ms).address().context("a MultiSig has an address")?;
    Ok((address, Some(DeclarationSpec::Multisig { required: k16, signers }), k as u16))
}

/// Parses `SYMBOL=ISSUER`: a currency besides CAS and its issuer's address.
pub fn parse_currency(text: &str) -> Result<(Currency, Address), String> {
    let (symbol, issuer) = text.split_once('=').ok_or("expected SYMBOL=ISSUER")?;
    let currency = Currency::new(symbol).map_err(|e| e.0)?;
    if currency == Currency::CAS {
        return Err("CAS is always there, issued at genesis".into());
    }
    let issuer = issuer.parse().map_err(|e| format!("issuer: {e}"))?;
    Ok((currency, issuer))
}

/// Parses `ADDRESS=SYMBOL:AMOUNT`, the amount in coins (`1.5`; 8 decimals at most): a balance
/// at genesis.
pub fn parse_balance(text: &str) -> Result<BalanceSpec, String> {
    let (address, rest) = text.split_once('=').ok_or("expected ADDRESS=SYMBOL:AMOUNT")?;
    let (symbol, amount) = rest.split_once(':').ok_or("expected ADDRESS=SYMBOL:AMOUNT")?;
    let address = address.parse().map_err(|e| format!("address: {e}"))?;
    let currency = Currency::new(symbol).map_err(|e| e.0)?;
    let amount = engine::currency::parse_amount(amount)
        .filter(|&a| a > 0)
        .ok_or_else(|| format!("amount {amount:?}: a positive number of coins, 8 decimals at most"))?;
    Ok(BalanceSpec { address, currency, amount })
}

/// What `genesis new` wrote.
#[derive(Debug, serde::Serialize)]
struct GenesisReport {
    chain_id: String,
    genesis: PathBuf,
    genesis_hash: engine::Hash,
    /// The hash of the genesis file as parsed (its parameters too): members compare it as well.
    genesis_file_hash: engine::Hash,
    governance: Address,
    governance_required: u16,
    validators: usize,
    configs: Vec<PathBuf>,
}

/// `caasiope genesis new …`: `genesis.toml` and one config per member in `out`; refuses if
/// any exists.
pub fn genesis_new(args: &GenesisArgs) -> anyhow::Result<Output> {
    if !(100..=60_000).contains(&args.block_interval_ms) {
        bail!("--block-interval-ms must be 100 to 60000");
    }
    if args.members.is_empty() {
        bail!("no --member file");
    }
    let members = args.members.iter().map(|p| Member::load(p)).collect::<anyhow::Result<Vec<_>>>()?;
    check_members(&members)?;
    let (governance, declaration, required) =
        governance(&members, args.governance, args.governance_required)?;
    let config = GenesisConfig {
        generated: vec![],
        chain_id: args.chain_id.clone(),
        timestamp_ms: engine::clock::now_ms(),
        min_fee: args.min_fee,
        max_ttl_ms: args.max_ttl_ms,
        fee_account: governance,
        governance,
        validators: members
            .iter()
            .filter_map(|m| m.validator_public_key)
            .map(|public_key| Validator { public_key, weight: 1 })
            .collect(),
        currencies: std::iter::once(CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) })
            .chain(args.currencies.iter().map(|&(symbol, issuer)| CurrencySpec { symbol, issuer }))
            .collect(),
        declarations: declaration.into_iter().collect(),
        balances: args.balances.clone(),
    };
    let genesis = Genesis::new(config)?;
    let text = genesis.to_toml();
    // What every member will load, loaded here first (size, rules).
    let genesis = Genesis::from_toml(&text)?;
    let hash = State::from_genesis(&genesis).head_hash();
    let genesis_path = args.out.join("genesis.toml");
    let configs: Vec<PathBuf> = members.iter().map(|m| args.out.join(format!("{}.toml", m.name))).collect();
    for path in std::iter::once(&genesis_path).chain(&configs) {
        if path.exists() {
            bail!("{} already exists; refusing to overwrite it", path.display());
        }
    }
    fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for (m, path) in members.iter().zip(&configs) {
        let config = ConfigFile {
            role: m.role,
            data_dir: "data",
            genesis: "genesis.toml",
            validator_key: (m.role == Role::Validator).then_some(VALIDATOR_KEY_FILE),
            block_interval_ms: args.block_interval_ms,
            submit_listen: m.submit_listen,
            node_dir: ".",
            listen: m.listen,
            admin_listen: m.admin_listen,
            api_listen: m.api_listen,
            transport: None,
            peers: peers_of(m, &members),
            keep_ledgers: None,
            keep_bytes: None,
            clickhouse: None,
        };
        let text = toml::to_string(&config).context("writing a config")?;
        if text.len() as u64 > CONFIG_BYTES_MAX {
            bail!("the config of {} would be larger than {CONFIG_BYTES_MAX} bytes", m.name);
        }
        create_new(path, &text)?;
    }
    create_new(&genesis_path, &text)?;
    Output::json(&GenesisReport {
        chain_id: genesis.params.chain_id.clone(),
        genesis: genesis_path,
        genesis_hash: hash,
        genesis_file_hash: genesis.file_hash(),
        governance,
        governance_required: required,
        validators: genesis.validators.validators().len(),
        configs,
    })
}

/// What `genesis inspect` prints.
#[derive(Debug, serde::Serialize)]
struct Inspection {
    chain_id: String,
    genesis_hash: engine::Hash,
    /// The hash of the genesis file as parsed (its parameters too, which `genesis_hash` does
    /// not commit).
    genesis_file_hash: engine::Hash,
    timestamp_ms: i64,
    min_fee: i64,
    max_ttl_ms: i64,
    governance: Address,
    fee_account: Address,
    validators: Vec<InspectedValidator>,
    currencies: Vec<CurrencySpec>,
    declarations: Vec<DeclarationSpec>,
    accounts_funded: usize,
    /// Per currency, the sum of the genesis balances (raw units).
    supply: Vec<(Currency, i128)>,
}

#[derive(Debug, serde::Serialize)]
struct InspectedValidator {
    public_key: PublicKey,
    address: Address,
    weight: u64,
}

/// `caasiope genesis inspect FILE`: the genesis hash every member must agree on, and what it
/// holds.
pub fn genesis_inspect(path: &Path) -> anyhow::Result<Output> {
    let text = read_text(path, engine::limits::GENESIS_BYTES_MAX as u64, "genesis file")?;
    let genesis = Genesis::from_toml(&text)?;
    let state = State::from_genesis(&genesis);
    let mut supply: std::collections::BTreeMap<Currency, i128> = std::collections::BTreeMap::new();
    for account in state.accounts() {
        for &(currency, amount) in account.balances() {
            *supply.entry(currency).or_default() += i128::from(amount);
        }
    }
    // Funded: holding a positive balance (the issuers hold the negative side).
    let funded = state.accounts().filter(|a| a.balances().iter().any(|&(_, x)| x > 0)).count();
    let c = &genesis.config;
    Output::json(&Inspection {
        chain_id: c.chain_id.clone(),
        genesis_hash: state.head_hash(),
        genesis_file_hash: genesis.file_hash(),
        timestamp_ms: c.timestamp_ms,
        min_fee: c.min_fee,
        max_ttl_ms: c.max_ttl_ms,
        governance: c.governance,
        fee_account: c.fee_account,
        validators: c
            .validators
            .iter()
            .map(|v| InspectedValidator {
                public_key: v.public_key,
                address: v.public_key.address(),
                weight: v.weight,
            })
            .collect(),
        currencies: c.currencies.clone(),
        declarations: c.declarations.clone(),
        accounts_funded: funded,
        supply: supply.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests;
