//! Integration tests of the `caasiope` binary: one test binary (see STYLE.md).

mod cli;
mod explorer;
mod localnet;
