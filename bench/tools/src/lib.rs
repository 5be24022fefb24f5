//! The commands that drive whole processes, beside the bench crate's workloads: a local network
//! (`caasiope localnet`, `caasiope init --validators`), the demo, the load generator
//! (`caasiope bench load`) and the benchmarks of the pipeline, the network, a localnet and a
//! Byzantine flood. Every benchmark prints JSON with its figure and the bound it is compared
//! to, measured in the same run. None of this is linked into a server built without the
//! binary's `tools` feature.

mod cli;
mod demo;
mod edge_bench;
mod flood;
mod load;
mod localnet;
mod localnet_bench;
mod net_bench;
mod net_kernel;
mod open_bench;
mod pipeline_bench;
pub mod relay;
mod state_sync_bench;
mod stats;
mod stream_bench;

use exit::Output;

pub use self::{
    cli::{BenchCommand, LocalnetArgs},
    demo::run as demo,
    edge_bench::EdgeBench,
    localnet::{init_command as localnet_init, run as localnet},
    stream_bench::StreamBench,
};

/// Runs one `caasiope bench …` command.
pub fn run(command: BenchCommand) -> anyhow::Result<Output> {
    match command {
        BenchCommand::Flood { accounts, block_txs, rounds, json: _ } => flood::run(flood::FloodBench {
            accounts: usize::try_from(accounts)?,
            block_txs: usize::try_from(block_txs)?,
            rounds,
        }),
        BenchCommand::Net { transport, messages, rounds, json: _ } => {
            net_bench::run(net_bench::NetBench { messages: usize::try_from(messages)?, rounds, transport })
        }
        BenchCommand::Edge { args, json: _ } => edge_bench::run(&args),
        BenchCommand::Stream { args, json: _ } => stream_bench::run(&args),
        BenchCommand::Relay { args } => relay::run(&args),
        BenchCommand::Open { accounts, runs, cold, dir, net, json: _ } => {
            open_bench::run(&open_bench::OpenBench { accounts, runs: usize::try_from(runs)?, cold, dir, net })
        }
        BenchCommand::StateSync { txs, block_txs, senders, rounds, dir, json: _ } => {
            state_sync_bench::run(&state_sync_bench::StateSyncBench {
                txs: usize::try_from(txs)?,
                block_txs: usize::try_from(block_txs)?,
                senders: usize::try_from(senders)?,
                rounds: usize::try_from(rounds)?,
                dir,
            })
        }
        BenchCommand::Load {
            api,
            rate,
            duration,
            accounts,
            key,
            connections,
            read_threads,
            drain,
            ttl,
            json: _,
        } => load::run(&load::LoadBench {
            api,
            rate,
            duration_s: duration,
            accounts: usize::try_from(accounts)?,
            key,
            connections: usize::try_from(connections)?,
            read_threads: usize::try_from(read_threads)?,
            drain_s: drain,
            ttl_s: ttl,
        }),
        BenchCommand::Localnet { validators, rate, duration, accounts, hot_share, net, runs, json: _ } => {
            localnet_bench::run(&localnet_bench::LocalnetBench {
                validators: usize::from(validators),
                rate,
                duration_s: duration,
                accounts: usize::try_from(accounts)?,
                hot_share,
                net,
                runs: usize::try_from(runs)?,
            })
        }
        BenchCommand::Pipeline {
            txs,
            accounts,
            hot_share,
            backend,
            block_txs,
            dir,
            durable,
            runs,
            json: _,
        } => pipeline_bench::pipeline(&pipeline_bench::PipelineBench {
            txs: usize::try_from(txs)?,
            accounts: usize::try_from(accounts)?,
            hot_share,
            backend,
            block_txs: usize::try_from(block_txs)?,
            dir,
            durable,
            runs: usize::try_from(runs)?,
        }),
    }
}
