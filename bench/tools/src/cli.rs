//! The command-line arguments of `caasiope bench …`, `caasiope localnet` and
//! `caasiope init --validators` (the binary embeds them in its own parser).

use std::path::PathBuf;

use clap::Subcommand;

/// Options of a local network's layout.
#[derive(Debug, clap::Args)]
pub struct LocalnetArgs {
    /// First port: submit base+i, peer-to-peer base+100+i, admin base+200+i, explorer API base+300+N.
    #[arg(long, default_value_t = 7100, value_parser = clap::value_parser!(u16).range(1024..=65000))]
    pub base_port: u16,
    /// Block interval of every process.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub block_interval_ms: u64,
    /// Transport of every process: auto, io_uring or epoll.
    #[arg(long, default_value = "auto", value_parser = ["auto", "io_uring", "epoll"])]
    pub transport: String,
    /// A currency besides CAS and its issuer's address (an issuer may go negative: that is the
    /// outstanding supply; sending to it destroys tokens); repeat for each, e.g. BTC=ADDRESS.
    #[arg(long = "currency", value_name = "SYMBOL=ISSUER", value_parser = replica::ceremony::parse_currency)]
    pub currencies: Vec<(engine::Currency, engine::Address)>,
    /// The explorer replicates into the ClickHouse server at this HTTP URL
    /// (e.g. http://127.0.0.1:8123; see docs/ANALYTICS.md).
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    /// The ClickHouse database of that replication.
    #[arg(long, value_name = "NAME", default_value = "caasiope", requires = "clickhouse")]
    pub clickhouse_database: String,
    /// Ledgers each validator's store keeps (`keep_ledgers`; absent: the default, a day's at
    /// one a second; 0: every ledger). The explorer keeps every ledger.
    #[arg(long, value_name = "N")]
    pub keep_ledgers: Option<u64>,
    /// Bytes the kept ledgers of each validator's store may take (`keep_bytes`).
    #[arg(long, value_name = "BYTES")]
    pub keep_bytes: Option<u64>,
    /// Accounts generated at genesis besides the faucet (the benchmarks' seed, each funded with
    /// CAS; a few lines of genesis at any count): a network whose state starts at that size.
    /// `bench localnet` takes `--accounts` instead.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=16_000_000))]
    pub generated_accounts: u64,
}

/// `caasiope bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
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
        /// Funded accounts (generated at genesis); transfers draw both ends over all of them.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(2..=engine::limits::GENERATED_ACCOUNTS_MAX))]
        accounts: u64,
        /// Share of transfers between two accounts of the hot set (the first 1 % of the
        /// accounts), 0 to 1; the rest are uniform over all accounts.
        #[arg(long, value_name = "S", default_value_t = 0.0, value_parser = share)]
        hot_share: f64,
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
    /// One abusive source against the public edge: it holds trickling connections to the
    /// explorer API and a validator's submit port while another source times `GET /v1/status`
    /// (against the same requests before the attack) and submits a transaction that must
    /// commit. Both sources must be local addresses that reach the ports (loopback).
    Edge {
        #[command(flatten)]
        args: crate::edge_bench::EdgeBench,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// Many live `/v1/stream` subscribers against one explorer: its extra CPU, memory and
    /// threads against the same transaction load without them (same run), every event checked
    /// in order, some subscribers resuming with `Last-Event-ID`.
    Stream {
        #[command(flatten)]
        args: crate::stream_bench::StreamBench,
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
        /// Each transfer lives this many seconds after its scheduled send time (as clients with
        /// a fixed time to live: the replay window then holds rate × TTL ids, and reaches its
        /// steady state after one TTL). The schedule starts when pre-signing is expected to end
        /// (timed on a sample; the run waits for it). Default: every transfer expires at the
        /// run's end plus two minutes, or the chain's longest TTL less a minute.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(60..=86_400))]
        ttl: Option<u64>,
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
    /// A node joining a chain of --txs committed transfers that made as many accounts: by
    /// replaying every ledger from genesis against restoring a snapshot (`db snapshot` /
    /// `db restore`), both in the same run; the ratio against the bound of 10.
    StateSync {
        /// Committed transfers, each to a new account.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
        txs: u64,
        /// Transfers per ledger.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        block_txs: u64,
        /// Funded senders.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        senders: u64,
        /// Rounds of both joins, alternating which goes first; the report compares medians.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
        rounds: u64,
        /// Keep the stores, the snapshot and the genesis here (an empty or new directory);
        /// without it they go to a temporary directory, removed at the end.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// How long a validator process takes to come back on a store of --accounts generated
    /// accounts: from exec to its admin port reporting the height it stopped at (the store
    /// opened: every account read, the state trie rebuilt and checked against the head's root),
    /// median of --runs, against the bound of 30 s; with each run's peak memory.
    Open {
        /// Generated accounts of the genesis.
        #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(2..=engine::limits::GENERATED_ACCOUNTS_MAX))]
        accounts: u64,
        /// Starts timed, one after another on the same store.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=20))]
        runs: u64,
        /// Drop the kernel's page cache before each start (as after a reboot; needs root).
        #[arg(long)]
        cold: bool,
        /// Keep the network and its store here (an empty or new directory); without it they go
        /// to a temporary directory, removed at the end.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        net: LocalnetArgs,
        /// Print JSON (the only output form; accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
    /// A link shaped in user space for WAN tests (not a benchmark): relays TCP connections
    /// from --listen to --to with a delay, jitter and loss; SIGUSR1 cuts it, SIGUSR2 heals it.
    Relay {
        #[command(flatten)]
        args: crate::relay::RelayArgs,
    },
    /// The full single-node path (decode, verify, apply, seal, MDBX commit) against the
    /// machine's signature-verification bound.
    Pipeline {
        /// Transfers to push through (pre-signed, not timed).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        txs: u64,
        /// Funded accounts (generated at genesis); transfers draw both ends over all of them.
        #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(2..=engine::limits::GENERATED_ACCOUNTS_MAX))]
        accounts: u64,
        /// Share of transfers between two accounts of the hot set (the first 1 % of the
        /// accounts), 0 to 1; the rest are uniform over all accounts.
        #[arg(long, value_name = "S", default_value_t = 0.0, value_parser = share)]
        hot_share: f64,
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

/// A share: a number from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}
