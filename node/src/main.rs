//! The `caasiope` binary.
//!
//! Every command prints one line or one JSON document on stdout; every failure is exit status 2
//! with an `error: ` line, the last on stderr (see [`exit`]).

mod address;
mod bench;
mod bench_flood;
mod bench_load;
mod bench_localnet;
mod bench_net;
mod cert;
mod cli;
mod demo;
mod evidence;
mod key;
mod localnet;
mod submit;
mod tx;

use std::process::ExitCode;

/// mimalloc: the pipeline allocates and frees per-transaction buffers on several threads at
/// once, where glibc's malloc showed up in profiles (arena locks, `_int_free`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use exit::Output;

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
        Command::Key(command) => key::run(command),
        Command::Cert(cli::CertCommand::New { dir, days }) => cert::new(&dir, days),
        Command::Init { dir, days, validators: None, net: _ } => cert::init(&dir, days),
        Command::Init { dir, validators: Some(n), net, .. } => {
            localnet::init_command(&dir, usize::from(n), &net)
        }
        Command::Localnet { validators, dir, net } => localnet::run(&dir, usize::from(validators), &net),
        Command::Address(command) => address::run(command),
        Command::Tx(command) => tx::run(command),
        Command::Wallet(command) => wallet::run(command),
        Command::Demo { json, backend } => demo::run(json, backend),
        Command::Run { config } => replica::run(&config),
        Command::Submit { to } => submit::run(&to, &mut std::io::stdin().lock()),
        Command::Db(cli::DbCommand::Verify { dir }) => Output::json(&storage::verify(&dir)?),
        Command::Evidence(command) => evidence::run(command),
        Command::Bench(cli::BenchCommand::Flood { accounts, block_txs, rounds, json: _ }) => {
            bench_flood::run(bench_flood::FloodBench {
                accounts: usize::try_from(accounts)?,
                block_txs: usize::try_from(block_txs)?,
                rounds,
            })
        }
        Command::Bench(cli::BenchCommand::Net { transport, messages, rounds, json: _ }) => {
            bench_net::run(bench_net::NetBench { messages: usize::try_from(messages)?, rounds, transport })
        }
        Command::Bench(cli::BenchCommand::Load {
            api,
            rate,
            duration,
            accounts,
            key,
            connections,
            read_threads,
            drain,
            json: _,
        }) => bench_load::run(&bench_load::LoadBench {
            api,
            rate,
            duration_s: duration,
            accounts: usize::try_from(accounts)?,
            key,
            connections: usize::try_from(connections)?,
            read_threads: usize::try_from(read_threads)?,
            drain_s: drain,
        }),
        Command::Bench(cli::BenchCommand::Localnet {
            validators,
            rate,
            duration,
            accounts,
            net,
            runs,
            json: _,
        }) => bench_localnet::run(&bench_localnet::LocalnetBench {
            validators: usize::from(validators),
            rate,
            duration_s: duration,
            accounts: usize::try_from(accounts)?,
            net,
            runs: usize::try_from(runs)?,
        }),
        Command::Bench(cli::BenchCommand::Pipeline {
            txs,
            accounts,
            backend,
            block_txs,
            dir,
            durable,
            runs,
            json: _,
        }) => bench::pipeline(&bench::PipelineBench {
            txs: usize::try_from(txs)?,
            accounts: usize::try_from(accounts)?,
            backend,
            block_txs: usize::try_from(block_txs)?,
            dir,
            durable,
            runs: usize::try_from(runs)?,
        }),
    }
}
