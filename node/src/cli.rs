//! The command line: clap types only. Each command group's behaviour lives in its own module
//! (`key`, `address`, `tx`); a new group is one more variant of [`Command`] and one more module.

use std::path::PathBuf;

#[cfg(feature = "tools")]
use bench_tools::{BenchCommand, LocalnetArgs};
use clap::{ArgGroup, Parser, Subcommand};
use engine::Address;

/// Caasiope node: keys, addresses and transactions of the Caasiope ledger.
#[derive(Debug, Parser)]
#[command(name = "caasiope", version)]
// Errors must stay one plain line on stderr (see `exit`); colors would put escape codes in it.
// A missing subcommand is a usage error (exit 2, one line), not a request for help: the same
// setting is repeated on every group because clap's derive sets it per command.
#[command(color = clap::ColorChoice::Never, arg_required_else_help = false)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Every command group.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Secret keys: generate and inspect.
    #[command(subcommand, arg_required_else_help = false)]
    Key(KeyCommand),
    /// Address32: decode and derive the addresses of special accounts.
    #[command(subcommand, arg_required_else_help = false)]
    Address(AddressCommand),
    /// Transactions: decode.
    #[command(subcommand, arg_required_else_help = false)]
    Tx(TxCommand),
    /// Node TLS identity: a self-signed X.509 certificate whose SubjectPublicKeyInfo's SHA-256
    /// is the node's identity.
    #[command(subcommand, arg_required_else_help = false)]
    Cert(CertCommand),
    /// Sets up a node directory: its TLS identity (node.crt, node.key) and validator key
    /// (validator.key); prints them as JSON. Never overwrites a file.
    ///
    /// With `--validators N`: writes a whole local network instead — genesis, validator keys,
    /// node certificates and one config per process (N validators and an explorer) on loopback
    /// ports; prints its layout as JSON.
    ///
    /// With `--advertise`: one member of a genesis ceremony — its secrets (TLS identity, the
    /// validator key of a validator, a governance key unless `--governance-address` names one)
    /// stay in DIR (0600, never printed); DIR/member.json, printed too, is what it hands the
    /// coordinator of `genesis new`.
    Init {
        /// The node directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        #[command(flatten)]
        member: MemberArgs,
        /// Write a local network of this many validators.
        #[cfg(feature = "tools")]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=128))]
        validators: Option<u16>,
        #[cfg(feature = "tools")]
        #[command(flatten)]
        net: LocalnetArgs,
    },
    /// Runs a local network as separate processes (init first if DIR has none), prints the
    /// endpoints, writes DIR/localnet.json, and stops every process on Ctrl-C.
    #[cfg(feature = "tools")]
    Localnet {
        /// How many validators.
        #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=128))]
        validators: u16,
        /// The network's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        net: LocalnetArgs,
    },
    /// A genesis ceremony: a network's genesis and configs from its members' public files.
    #[command(subcommand, arg_required_else_help = false)]
    Genesis(GenesisCommand),
    /// Runs one process in its role: a networked validator, node or explorer, or a single
    /// validator that alone is a quorum (no network section in its config).
    Run {
        /// The process's config file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Sends signed transaction bytes from stdin to a validator's submit port; prints the id.
    Submit {
        /// The validator's submit address.
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
    },
    /// Wallet: encrypted keys, balances, payments, swaps, MultiSig, HTLC, payment channels,
    /// tokens and offline proof checks, against an explorer's API.
    #[cfg(feature = "wallet")]
    #[command(subcommand, arg_required_else_help = false)]
    Wallet(wallet::WalletCommand),
    /// Storage: check a store.
    #[command(subcommand, arg_required_else_help = false)]
    Db(DbCommand),
    /// Equivocation proofs: check one offline.
    #[command(subcommand, arg_required_else_help = false)]
    Evidence(EvidenceCommand),
    /// Benchmarks that print JSON with the figure and its same-run bound.
    #[cfg(feature = "tools")]
    #[command(subcommand, arg_required_else_help = false)]
    Bench(BenchCommand),
    /// Runs the engine end to end in memory: genesis, transfers, a swap, an HTLC and a MultiSig
    /// spend, each ledger certified; prints the ledgers and balances.
    #[cfg(feature = "tools")]
    Demo {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Signature verification backend: k256 or libsecp256k1.
        #[arg(long, default_value = "libsecp256k1")]
        backend: engine::Backend,
    },
}

/// The member options of `caasiope init --advertise`.
#[derive(Debug, clap::Args)]
pub(crate) struct MemberArgs {
    /// Where this member's peers reach it (IP:PORT, peer-to-peer TLS): makes `init` write a
    /// ceremony member (member.json).
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) advertise: Option<std::net::SocketAddr>,
    /// The member's name [default: DIR's name].
    #[arg(long, value_name = "NAME", requires = "advertise")]
    pub(crate) name: Option<String>,
    /// Its role: validator, node or explorer.
    #[arg(long, default_value = "validator", value_parser = parse_role, requires = "advertise")]
    pub(crate) role: replica::Role,
    /// The address it signs governance with (a wallet key's) [default: a new key in
    /// DIR/governance.key, for `wallet import`].
    #[arg(long, value_name = "ADDR", requires = "advertise")]
    pub(crate) governance_address: Option<Address>,
    /// Where it listens for peers [default: 0.0.0.0 and the advertised port].
    #[arg(long, value_name = "IP:PORT", requires = "advertise")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Where it takes raw transactions.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7100", requires = "advertise")]
    pub(crate) submit_listen: std::net::SocketAddr,
    /// Its /healthz and /metrics (loopback).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7300", requires = "advertise")]
    pub(crate) admin_listen: std::net::SocketAddr,
    /// An explorer's HTTP API [default: 127.0.0.1:8080].
    #[arg(long, value_name = "IP:PORT", requires = "advertise")]
    pub(crate) api_listen: Option<std::net::SocketAddr>,
}

fn parse_role(text: &str) -> Result<replica::Role, String> {
    match text {
        "validator" => Ok(replica::Role::Validator),
        "node" => Ok(replica::Role::Node),
        "explorer" => Ok(replica::Role::Explorer),
        _ => Err("validator, node or explorer".into()),
    }
}

/// `caasiope genesis …`
#[derive(Debug, Subcommand)]
pub(crate) enum GenesisCommand {
    /// Writes OUT/genesis.toml from the members' member.json files (their validators with
    /// weight 1; governance and fees to a K-of-N MultiSig of their governance addresses unless
    /// `--governance` names an address) and one config per member, `OUT/<name>.toml`, with its
    /// peers and paths relative to the member's own directory; prints the genesis hash. Never
    /// overwrites a file.
    New(GenesisNew),
    /// Prints a genesis file's hash (every member checks it is the one agreed) and contents.
    Inspect {
        /// The genesis file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The options of `caasiope genesis new`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenesisNew {
    /// The chain id.
    #[arg(long, value_name = "ID")]
    pub(crate) chain_id: String,
    /// A member's member.json; repeat for each.
    #[arg(long = "member", value_name = "FILE", required = true)]
    pub(crate) members: Vec<PathBuf>,
    /// Governance signatures required [default: more than two thirds of the members].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=20))]
    pub(crate) governance_required: Option<u16>,
    /// A governance (and fee) address instead of the members' MultiSig.
    #[arg(long, value_name = "ADDR", conflicts_with = "governance_required")]
    pub(crate) governance: Option<Address>,
    /// A currency besides CAS and its issuer's address; repeat for each, e.g. BTC=ADDRESS.
    #[arg(long = "currency", value_name = "SYMBOL=ISSUER", value_parser = replica::ceremony::parse_currency)]
    pub(crate) currencies: Vec<(engine::Currency, Address)>,
    /// A balance at genesis, in coins; repeat for each, e.g. ADDRESS=CAS:1000.
    #[arg(long = "balance", value_name = "ADDR=SYMBOL:AMOUNT", value_parser = replica::ceremony::parse_balance)]
    pub(crate) balances: Vec<engine::genesis::BalanceSpec>,
    /// The block interval every config gets.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub(crate) block_interval_ms: u64,
    /// The smallest fee, in raw units (10^-8 CAS).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(0..))]
    pub(crate) min_fee: i64,
    /// The longest time to live of a transaction, in milliseconds.
    #[arg(long, default_value_t = 3_600_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) max_ttl_ms: i64,
    /// Where to write genesis.toml and the configs (created if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

impl GenesisNew {
    /// The ceremony's arguments.
    pub(crate) fn into_args(self) -> replica::ceremony::GenesisArgs {
        replica::ceremony::GenesisArgs {
            chain_id: self.chain_id,
            members: self.members,
            governance_required: self.governance_required,
            governance: self.governance,
            currencies: self.currencies,
            balances: self.balances,
            block_interval_ms: self.block_interval_ms,
            min_fee: self.min_fee,
            max_ttl_ms: self.max_ttl_ms,
            out: self.out,
        }
    }
}

/// `caasiope cert …`
#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Generates a key and self-signed certificate into DIR (node.crt, node.key 0600) and
    /// prints the identity (64 hex characters) to list in the peers' configurations.
    New {
        /// The directory (created if missing); existing files are never overwritten.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

/// `caasiope key …`
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Generates a secp256k1 key into a new file (mode 0600) and prints its address.
    New {
        /// The key file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Prints the public key and address of a secret key, as JSON.
    Inspect {
        /// The secret key as 64 hex characters. Command lines are visible to other local users
        /// (ps, shell history): use this with throwaway or test keys.
        #[arg(long, value_name = "HEX")]
        secret_hex: String,
    },
}

/// `caasiope address …`
#[derive(Debug, Subcommand)]
pub(crate) enum AddressCommand {
    /// Prints the type and body of an address, as JSON.
    Decode {
        /// The 40-character address.
        #[arg(value_name = "ADDR")]
        address: Address,
    },
    /// Prints the address of an X-of-Y MultiSig.
    Multisig {
        /// How many signers must sign (1 to the number of signers).
        // Negative numbers reach the engine, whose rule gives the clearer message.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        required: i16,
        /// A signer's address; repeat for each signer (order does not matter).
        #[arg(long = "signer", value_name = "ADDR", required = true)]
        signers: Vec<Address>,
    },
    /// Prints the address of a HashLock.
    #[command(group(ArgGroup::new("hash").required(true).multiple(false)))]
    Hashlock {
        /// The Keccak-256 hash (64 hex characters) the secret must match.
        #[arg(long, value_name = "HEX", group = "hash", value_parser = parse_hash32)]
        keccak256: Option<[u8; 32]>,
        /// The SHA-256 hash (64 hex characters) the secret must match.
        #[arg(long, value_name = "HEX", group = "hash", value_parser = parse_hash32)]
        sha256: Option<[u8; 32]>,
    },
    /// Prints the address of a TimeLock.
    Timelock {
        /// The lock time in unix seconds.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        unix_seconds: i64,
    },
}

/// `caasiope tx …`
#[derive(Debug, Subcommand)]
pub(crate) enum TxCommand {
    /// Decodes a signed transaction read from stdin and prints it as JSON.
    Decode {
        /// Also print the transaction id on this chain.
        #[arg(long, value_name = "ID")]
        chain_id: Option<String>,
        /// Read hex text (whitespace ignored) instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
}

/// A 32-byte hash from exactly 64 hex characters.
fn parse_hash32(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| match e {
        hex::FromHexError::InvalidStringLength | hex::FromHexError::OddLength => {
            format!("a 32-byte hash is 64 hex characters, got {}", text.chars().count())
        }
        other => other.to_string(),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hash32_parser() {
        assert_eq!(parse_hash32(&"ab".repeat(32)), Ok([0xab; 32]));
        assert!(parse_hash32(&"ab".repeat(31)).is_err());
        assert!(parse_hash32(&"zz".repeat(32)).is_err());
        assert!(parse_hash32("").is_err());
    }
}

/// `caasiope db …`
#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Re-executes every stored block from genesis and checks each header, the final state root
    /// and every stored account; prints a JSON report.
    Verify {
        /// The store's directory (a node's `data_dir`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Rows and bytes of every table, and the data file's size, use and free pages; read-only
    /// (a node may be running on the store); prints JSON.
    Stats {
        /// The store's directory (a node's `data_dir`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Writes the store's certified state (at its indexed height) to a file a new node restores
    /// instead of re-executing the chain: the accounts in chunks, the validator-set changes
    /// since genesis and the replay window. Read-only (a node may be running on the store); the
    /// store must keep `max_ttl` of ledgers. Prints a JSON report.
    Snapshot {
        /// The store's directory (a node's `data_dir`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The file to write (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Makes a new store from a snapshot, trusting only the genesis given: the set changes are
    /// followed from its validator set, the snapshot's ledger must be certified, the accounts
    /// hash to its state root chunk by chunk. Nothing is kept unless every check passes. The
    /// node then syncs the ledgers after it from its peers. Prints a JSON report.
    Restore {
        /// The snapshot file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The new store's directory (a node's `data_dir`; refused if it holds a store).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The chain's genesis file, as the node's config names it.
        #[arg(long, value_name = "FILE")]
        genesis: PathBuf,
        /// Refuse the snapshot unless its ledger is this one, learnt from members out of band
        /// (`GET /v1/ledgers/{height}` on an explorer you trust): HEIGHT:HASH.
        #[arg(long, value_name = "HEIGHT:HASH", value_parser = parse_trusted)]
        trust: Option<storage::TrustedLedger>,
    },
}

/// `HEIGHT:HASH` (the hash in 64 hex digits).
fn parse_trusted(s: &str) -> Result<storage::TrustedLedger, String> {
    let (height, hash) = s.split_once(':').ok_or("expected HEIGHT:HASH")?;
    let height = height.parse::<u64>().map_err(|e| format!("height: {e}"))?;
    let hash = parse_hash32(hash).map_err(|e| format!("hash: {e}"))?;
    Ok(storage::TrustedLedger { height, hash: engine::Hash(hash) })
}

/// `caasiope evidence …`
#[derive(Debug, Subcommand)]
pub(crate) enum EvidenceCommand {
    /// Checks an equivocation proof (an `Equivocation`, as `GET /v1/evidence` gives in `proof`)
    /// offline against the validator set of its height: the genesis's (the set of the first
    /// heights), or a set given as `GET /v1/validators/{height}` gives it. Prints the offender,
    /// the offence and its key as JSON; exits 2 with the reason if the proof does not hold.
    #[command(group(ArgGroup::new("set").required(true).args(["genesis", "validators"])))]
    Check {
        /// A genesis file (TOML): checked against its validator set and chain id.
        #[arg(long, value_name = "FILE")]
        genesis: Option<PathBuf>,
        /// A validator set, hex of its engine encoding (the `validators` field of
        /// `GET /v1/validators/{height}`), or a file holding it.
        #[arg(long, value_name = "HEX|FILE", requires = "chain_id")]
        validators: Option<String>,
        /// The chain id (with `--validators`; a genesis gives its own).
        #[arg(long, value_name = "ID")]
        chain_id: Option<String>,
        /// The proof in hex; read from stdin (hex) if absent.
        #[arg(long, value_name = "HEX")]
        hex: Option<String>,
    },
}
