//! The `caasiope` binary.
//!
//! Every command prints one line or one JSON document on stdout; every failure is exit status 2
//! with one `error: ` line on stderr (see [`exit`]).

mod address;
mod cli;
mod demo;
mod exit;
mod key;
mod tx;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    exit::Output,
};

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
        Command::Address(command) => address::run(command),
        Command::Tx(command) => tx::run(command),
        Command::Demo { json, backend } => demo::run(json, backend),
    }
}
