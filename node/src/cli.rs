//! The command line: clap types only. Each command group's behaviour lives in its own module
//! (`key`, `address`, `tx`); a new group is one more variant of [`Command`] and one more module.

use std::path::PathBuf;

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
    Init {
        /// The node directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Write a local network of this many validators.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=128))]
        validators: Option<u16>,
        #[command(flatten)]
        net: LocalnetArgs,
    },
    /// Runs a local network as separate processes (init first if DIR has none), prints the
    /// endpoints, writes DIR/localnet.json, and stops every process on Ctrl-C.
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
    #[command(subcommand, arg_required_else_help = false)]
    Wallet(wallet::WalletCommand),
    /// Storage: check a store.
    #[command(subcommand, arg_required_else_help = false)]
    Db(DbCommand),
    /// Equivocation proofs: check one offline.
    #[command(subcommand, arg_required_else_help = false)]
    Evidence(EvidenceCommand),
    /// Benchmarks that print JSON with the figure and its same-run bound.
    #[command(subcommand, arg_required_else_help = false)]
    Bench(BenchCommand),
    /// Runs the engine end to end in memory: genesis, transfers, a swap, an HTLC and a MultiSig
    /// spend, each ledger certified; prints the ledgers and balances.
    Demo {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Signature verification backend: k256 or libsecp256k1.
        #[arg(long, default_value = "libsecp256k1")]
        backend: engine::Backend,
    },
}

/// Options of a local network's layout.
#[derive(Debug, clap::Args)]
pub(crate) struct LocalnetArgs {
    /// First port: submit base+i, peer-to-peer base+100+i, admin base+200+i, explorer API base+300+N.
    #[arg(long, default_value_t = 7100, value_parser = clap::value_parser!(u16).range(1024..=65000))]
    pub(crate) base_port: u16,
    /// Block interval of every process.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub(crate) block_interval_ms: u64,
    /// Transport of every process: auto, io_uring or epoll.
    #[arg(long, default_value = "auto", value_parser = ["auto", "io_uring", "epoll"])]
    pub(crate) transport: String,
    /// A currency besides CAS and its issuer's address (an issuer may go negative: that is the
    /// outstanding supply; sending to it destroys tokens); repeat for each, e.g. BTC=<address>.
    #[arg(long = "currency", value_name = "SYMBOL=ISSUER", value_parser = parse_currency)]
    pub(crate) currencies: Vec<(engine::Currency, engine::Address)>,
    /// The explorer replicates into the ClickHouse server at this HTTP URL
    /// (e.g. http://127.0.0.1:8123; see docs/ANALYTICS.md).
    #[arg(long, value_name = "URL")]
    pub(crate) clickhouse: Option<String>,
    /// The ClickHouse database of that replication.
    #[arg(long, value_name = "NAME", default_value = "caasiope", requires = "clickhouse")]
    pub(crate) clickhouse_database: String,
}

fn parse_currency(text: &str) -> Result<(engine::Currency, engine::Address), String> {
    let (symbol, issuer) = text.split_once('=').ok_or("expected SYMBOL=ISSUER")?;
    let currency = engine::Currency::new(symbol).map_err(|e| e.0)?;
    if currency == engine::Currency::CAS {
        return Err("CAS is always there, issued at genesis".into());
    }
    let issuer = issuer.parse().map_err(|e| format!("issuer: {e}"))?;
    Ok((currency, issuer))
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

/// `caasiope bench …`
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Messages/s and MB/s over mutual TLS between two endpoints (200 B and 64 KiB messages)
    /// against plain TCP loopback in the same run, and network CPU per message against one
    /// k256 verification.
    Net {
        /// Transport under TLS and under the plain-TCP bound: auto, io_uring or epoll.
        #[arg(long, default_value = "auto")]
        transport: net::transport::TransportChoice,
        /// Small messages per measurement (large ones: one per 320 small, at least 100).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=10_000_000))]
        messages: u64,
        /// Rounds of every measurement, interleaved; the report gives medians (the machine's
        /// noise moves single runs by 2x).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// A local network of validator processes fed pre-signed transfers at a fixed rate:
    /// committed tx/s and finality p50/p99 against the machine's signature-verification rate
    /// divided by the number of validators (measured before and after, same run).
    Localnet {
        /// Validator processes.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
        validators: u16,
        /// Transactions offered per second.
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rate: u64,
        /// Seconds of offered load.
        #[arg(long, value_name = "S", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration: u64,
        /// Funded accounts the transfers move between.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(2..=5_000_000))]
        accounts: u64,
        #[command(flatten)]
        net: LocalnetArgs,
        /// Runs, each on a fresh localnet with its own bound; the report is the run of median
        /// ratio, with every run's figures under `runs`.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
        runs: u64,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// The load generator: funds fresh accounts from KEY's account, pre-signs transfers among
    /// them, submits them to an explorer's API at a fixed rate and follows its event stream;
    /// reports submitted / committed / rejected, committed tx/s against the offered rate, and
    /// finality p50/p99 (with --read-threads, account reads per second served meanwhile).
    Load {
        /// The explorer API's base URL, e.g. http://127.0.0.1:7400.
        #[arg(long, value_name = "URL")]
        api: String,
        /// Transactions offered per second.
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rate: u64,
        /// Seconds of offered load.
        #[arg(long, value_name = "S", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration: u64,
        /// Fresh accounts the transfers move between (funded first from KEY's account).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
        accounts: u64,
        /// The funding account's secret key file (a localnet's faucet.key; by default the one of
        /// the README's localnet, `scripts/run`).
        #[arg(long, value_name = "FILE", default_value = "data/localnet/faucet.key")]
        key: std::path::PathBuf,
        /// Parallel HTTP connections submitting.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
        connections: u64,
        /// Threads reading account balances from the API during the load (0: none).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
        read_threads: u64,
        /// Seconds to wait after the load for accepted transactions to commit.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        drain: u64,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// An honest validator's memory while a Byzantine leader signs the most distinct valid
    /// values it may every round it leads, against one copy of the state per value checked
    /// (the design it replaced), measured in the same run.
    Flood {
        /// Funded accounts of the state.
        #[arg(long, value_name = "M", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=20_000_000))]
        accounts: u64,
        /// Transactions per value.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
        block_txs: u64,
        /// Rounds walked through (the leader signs in one of every four).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=64))]
        rounds: u32,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// The full single-node path (decode, verify, apply, seal, MDBX commit) against the
    /// machine's signature-verification bound.
    Pipeline {
        /// Transfers to push through (pre-signed, not timed).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        txs: u64,
        /// Funded accounts the transfers move between.
        #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(2..=50_000_000))]
        accounts: u64,
        /// Signature backend.
        #[arg(long, default_value = "libsecp256k1")]
        backend: engine::Backend,
        /// Most transactions per ledger.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        block_txs: u64,
        /// Working directory (kept); default a temporary one, removed after.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// fsync every ledger commit (default: safe-no-sync, crash-safe but not power-loss-safe).
        #[arg(long)]
        durable: bool,
        /// Timed runs, each on a fresh store with its own bound; the report is the run of median
        /// ratio, with every run's figures under `runs`.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
        runs: u64,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
}
