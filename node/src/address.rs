//! `caasiope address …`: decode addresses and derive those of special accounts.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use engine::{Address, Declaration, HashType, MultiSig};
use exit::Output;

use crate::cli::AddressCommand;

/// Runs one `address` command.
pub(crate) fn run(command: AddressCommand) -> anyhow::Result<Output> {
    match command {
        AddressCommand::Decode { address } => decode(&address),
        AddressCommand::Multisig { required, signers } => multisig(signers, required),
        AddressCommand::Hashlock { keccak256, sha256 } => match (keccak256, sha256) {
            (Some(hash), None) => hashlock(HashType::Keccak256, hash),
            (None, Some(hash)) => hashlock(HashType::Sha256, hash),
            // clap's group makes exactly one of them present; this is for the type checker.
            _ => bail!("give exactly one of --keccak256 and --sha256"),
        },
        AddressCommand::Timelock { unix_seconds } => {
            Ok(Output::Line(Address::timelock(unix_seconds).to_text()))
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Decoded {
    #[serde(rename = "type")]
    kind: engine::AddressType,
    body_hex: String,
    /// Only for a TimeLock: the lock time its body encodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    unix_seconds: Option<i64>,
}

fn decode(address: &Address) -> anyhow::Result<Output> {
    Output::json(&Decoded {
        kind: address.kind(),
        body_hex: hex::encode(address.body()),
        unix_seconds: address.timelock_seconds(),
    })
}

fn multisig(signers: Vec<Address>, required: i16) -> anyhow::Result<Output> {
    // The engine refuses duplicates as "not in canonical order", which is true of the encoding
    // but puzzling on a command line where order does not matter.
    let mut seen = BTreeSet::new();
    for signer in &signers {
        if !seen.insert(signer) {
            bail!("signer {signer} is given more than once");
        }
    }
    let multisig = MultiSig::new(signers, required)?;
    defined_address(&Declaration::MultiSig(multisig))
}

fn hashlock(hash_type: HashType, hash: [u8; 32]) -> anyhow::Result<Output> {
    defined_address(&Declaration::HashLock { hash_type, hash })
}

fn defined_address(declaration: &Declaration) -> anyhow::Result<Output> {
    let address = declaration.address().context("this declaration defines no address")?;
    Ok(Output::Line(address.to_text()))
}
