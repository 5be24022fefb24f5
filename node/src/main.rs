//! The `caasiope` binary.
//!
//! Every command prints one line or one JSON document on stdout; every failure is exit status 2
//! with an `error: ` line, the last on stderr (see [`exit`]).

mod address;
mod cli;
mod evidence;
mod submit;
mod tx;

use std::process::ExitCode;

/// mimalloc: the pipeline allocates and frees per-transaction buffers on several threads at
/// once, where glibc's malloc showed up in profiles (arena locks, `_int_free`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use exit::Output;
use replica::{ceremony, identity};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    exit::install_panic_hook();
    match Cli::try_parse() {
        Ok(cli) => exit::finish(run(cli)),
        Err(err) => exit::clap_error(&err),
    }
}

fn run(cli: Cli) -> anyhow::Result<Output> {
    match cli.command {
        Command::Key(cli::KeyCommand::New { out }) => identity::key_new(&out),
        Command::Key(cli::KeyCommand::Inspect { secret_hex }) => identity::key_inspect(&secret_hex),
        Command::Cert(cli::CertCommand::New { dir, days }) => identity::cert_new(&dir, days),
        #[cfg(not(feature = "tools"))]
        Command::Init { dir, days, member } => init(&dir, days, member),
        #[cfg(feature = "tools")]
        Command::Init { dir, days, member, validators: None, net: _ } => init(&dir, days, member),
        #[cfg(feature = "tools")]
        Command::Init { member: cli::MemberArgs { advertise: Some(_), .. }, validators: Some(_), .. } => {
            anyhow::bail!("--advertise writes one member, --validators a whole local network: not both")
        }
        #[cfg(feature = "tools")]
        Command::Init { dir, validators: Some(n), net, .. } => {
            bench_tools::localnet_init(&dir, usize::from(n), &net)
        }
        Command::Genesis(cli::GenesisCommand::New(args)) => ceremony::genesis_new(&args.into_args()),
        Command::Genesis(cli::GenesisCommand::Inspect { file }) => ceremony::genesis_inspect(&file),
        #[cfg(feature = "tools")]
        Command::Localnet { validators, dir, net } => {
            bench_tools::localnet(&dir, usize::from(validators), &net)
        }
        Command::Address(command) => address::run(command),
        Command::Tx(command) => tx::run(command),
        #[cfg(feature = "wallet")]
        Command::Wallet(command) => wallet::run(command),
        #[cfg(feature = "tools")]
        Command::Demo { json, backend } => bench_tools::demo(json, backend),
        Command::Run { config } => replica::run(&config),
        Command::Submit { to } => submit::run(&to, &mut std::io::stdin().lock()),
        Command::Db(cli::DbCommand::Verify { dir }) => Output::json(&storage::verify(&dir)?),
        Command::Db(cli::DbCommand::Stats { dir }) => Output::json(&storage::stats(&dir)?),
        Command::Db(cli::DbCommand::Snapshot { dir, out }) => Output::json(&storage::snapshot(&dir, &out)?),
        Command::Db(cli::DbCommand::Restore { from, dir, genesis, trust }) => {
            let genesis =
                exit::read_text(&genesis, limits::protocol::GENESIS_BYTES_MAX as u64, "the genesis")?;
            Output::json(&storage::restore(&from, &dir, &genesis, trust, storage::Durability::Durable)?)
        }
        Command::Evidence(command) => evidence::run(command),
        #[cfg(feature = "tools")]
        Command::Bench(command) => bench_tools::run(command),
    }
}

/// `caasiope init --dir DIR`: a node directory, or with `--advertise` a ceremony's member.
fn init(dir: &std::path::Path, days: u32, m: cli::MemberArgs) -> anyhow::Result<Output> {
    let Some(advertise) = m.advertise else { return identity::init(dir, days) };
    ceremony::init_member(
        dir,
        days,
        &ceremony::MemberArgs {
            name: m.name,
            role: m.role,
            advertise,
            governance_address: m.governance_address,
            listen: m.listen,
            submit_listen: m.submit_listen,
            admin_listen: m.admin_listen,
            api_listen: m.api_listen,
        },
    )
}
