//! Integration tests of the `caasiope` binary: one test binary (see STYLE.md).

mod adversary;
mod attack;
mod cli;
mod cluster;
mod deploy;
mod e2e;
mod explorer;
mod localnet;
mod wan;
