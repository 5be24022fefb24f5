//! `caasiope wallet …`: keys encrypted at rest and transactions built, signed and submitted
//! against an explorer's HTTP API (docs/API.md).
//!
//! Layout: `keystore` (keys at rest, passphrases), `client` (the thin HTTP client, reading
//! the `api` crate's types), `build` (pure transaction builders on the engine's types),
//! `partial` (partially signed files; who must sign is judged by the engine's
//! [`engine::spend`]), `htlc`, `channel`, `token`, `proof`, and `flow` (what the
//! commands share). Everything but `client` and the terminal
//! prompt is testable without a server, and the tests apply what the builders produce to an
//! in-memory engine state.
//!
//! Times: expirations, HTLC lock times and channel expiries count from the latest ledger's
//! time as the explorer reports it, never from this machine's clock, since the chain judges
//! them by ledger time.

mod build;
mod channel;
mod client;
mod commands;
mod files;
mod flow;
mod htlc;
mod keystore;
mod partial;
mod proof;
mod token;
mod tty;

#[cfg(test)]
mod tests;

use std::{
    io::{IsTerminal, Read},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, bail};
use engine::{Address, SecretKey};
use exit::Output;

pub use self::commands::{
    ApiArgs, ChannelCommand, DirArgs, GovernanceCommand, HtlcCommand, MultisigCommand, ProofCommand, TxArgs,
    WaitArgs, WalletCommand,
};
use self::{
    client::Api,
    keystore::{Keystore, Passphrase},
};

/// What most commands need: where the keys are, the explorer, whether to wait.
#[derive(Debug)]
pub struct Common {
    wallet_dir: Option<PathBuf>,
    api: Option<String>,
    wait: bool,
    wait_timeout: Duration,
}

impl Common {
    fn new(dir: Option<DirArgs>, api: Option<ApiArgs>, wait: Option<WaitArgs>) -> Self {
        Self {
            wallet_dir: dir.and_then(|d| d.wallet_dir),
            api: api.map(|a| a.api),
            wait: wait.as_ref().is_some_and(|w| w.wait),
            wait_timeout: wait.map_or(flow::WAIT_DEFAULT, |w| Duration::from_secs(w.wait_timeout_seconds)),
        }
    }

    /// The explorer client.
    pub(crate) fn api(&self) -> anyhow::Result<Api> {
        Api::new(self.api.as_deref().context("this command needs --api")?)
    }

    /// The keystore.
    pub(crate) fn keystore(&self) -> anyhow::Result<Keystore> {
        Keystore::open(self.wallet_dir.clone())
    }

    /// Key `name`, decrypted with the passphrase (asked if not in the environment).
    pub(crate) fn key(&self, name: &str) -> anyhow::Result<SecretKey> {
        let store = self.keystore()?;
        // Checked first, so a typo in the name is not answered by a passphrase prompt.
        store.info(name)?;
        store.load(name, &Passphrase::obtain(&format!("key {name:?}"), false)?)
    }

    /// Key `name`, refused before the passphrase is asked unless its address is `expected`
    /// (`role` says whose key is wanted).
    pub(crate) fn key_of(&self, name: &str, expected: &Address, role: &str) -> anyhow::Result<SecretKey> {
        let address = self.keystore()?.info(name)?.address;
        if address != *expected {
            bail!("key {name:?} ({address}) is not the {role} {expected}");
        }
        self.key(name)
    }
}

/// Runs one wallet command. One arm per command, each a line or two of argument plumbing into
/// the module that does the work: a flat dispatch reads best whole, so it is not split.
pub fn run(command: WalletCommand) -> anyhow::Result<Output> {
    use WalletCommand as W;
    match command {
        W::New { dir, name } => {
            let store = Common::new(Some(dir), None, None).keystore()?;
            let passphrase = Passphrase::obtain(&format!("new key {name:?}"), true)?;
            Ok(Output::Line(store.create(&name, &SecretKey::generate(), &passphrase)?.address.to_text()))
        }
        W::Import { dir, name } => {
            let store = Common::new(Some(dir), None, None).keystore()?;
            let key = read_secret_stdin()?;
            let passphrase = Passphrase::obtain(&format!("imported key {name:?}"), true)?;
            Ok(Output::Line(store.create(&name, &key, &passphrase)?.address.to_text()))
        }
        W::List { dir } => Output::json(&Common::new(Some(dir), None, None).keystore()?.list()?),
        W::Address { dir, name } => {
            Ok(Output::Line(Common::new(Some(dir), None, None).keystore()?.info(&name)?.address.to_text()))
        }
        W::Balance { api, dir, name, address } => {
            flow::balance(&Common::new(Some(dir), Some(api), None), name.as_deref(), address)
        }
        W::Status { api } => flow::status(&Common::new(None, Some(api), None)),
        W::Tx { api, id } => flow::tx_status(&Common::new(None, Some(api), None), &id),
        W::History { api, address, limit, cursor } => {
            flow::history(&Common::new(None, Some(api), None), &address, limit, cursor.as_deref())
        }
        W::Send { api, dir, from, to, amount, currency, declare, out, tx, wait } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            flow::send(&common, &from, to, amount, currency, &declare, out.as_deref(), &options)
        }
        W::Build { api, input, output, fee_payer, declare, out, tx } => {
            let options = tx.options()?;
            let common = Common::new(None, Some(api), None);
            flow::build_file(&common, &input, &output, fee_payer, &declare, &out, &options)
        }
        W::Sign { dir, name, file } => flow::sign_file(&Common::new(Some(dir), None, None), &name, &file),
        W::Submit { api, file, wait } => flow::submit_file(&Common::new(None, Some(api), Some(wait)), &file),
        W::Governance(command) => {
            let (api, public_key, change, out, tx) = match command {
                GovernanceCommand::AddValidator { api, public_key, weight, out, tx } => {
                    (api, public_key, flow::SetChange::Add(weight), out, tx)
                }
                GovernanceCommand::RemoveValidator { api, public_key, out, tx } => {
                    (api, public_key, flow::SetChange::Remove, out, tx)
                }
                GovernanceCommand::SetWeight { api, public_key, weight, out, tx } => {
                    (api, public_key, flow::SetChange::Weight(weight), out, tx)
                }
            };
            let options = tx.options()?;
            flow::governance(&Common::new(None, Some(api), None), public_key, change, &out, &options)
        }
        W::Multisig(MultisigCommand::Address { required, signers, out }) => {
            flow::multisig_address(required, signers, out.as_deref())
        }
        W::Multisig(MultisigCommand::Declare { api, dir, from, multisig, tx, wait }) => {
            let options = tx.options()?;
            flow::multisig_declare(&Common::new(Some(dir), Some(api), Some(wait)), &from, &multisig, &options)
        }
        W::Htlc(command) => run_htlc(command),
        W::Channel(command) => run_channel(command),
        W::Issue { api, dir, from, issuer_file, to, amount, currency, fee_payer, out, tx, wait } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            let spender = token::Spender {
                key: from.as_deref(),
                declaration_file: issuer_file.as_deref(),
                fee_payer,
                out: out.as_ref(),
            };
            token::issue_command(&common, &spender, to, amount, currency, &options)
        }
        W::Destroy { api, dir, from, holder_file, amount, currency, fee_payer, out, tx, wait } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            let spender = token::Spender {
                key: from.as_deref(),
                declaration_file: holder_file.as_deref(),
                fee_payer,
                out: out.as_ref(),
            };
            token::destroy_command(&common, &spender, amount, currency, &options)
        }
        W::Proof(ProofCommand::Tx { api, id, out, validators_out }) => proof::fetch_command(
            &Common::new(None, Some(api), None),
            &proof::Subject::Tx(id),
            &out,
            validators_out.as_deref(),
        ),
        W::Proof(ProofCommand::Account { api, address, out, validators_out }) => proof::fetch_command(
            &Common::new(None, Some(api), None),
            &proof::Subject::Account(address),
            &out,
            validators_out.as_deref(),
        ),
        W::VerifyProof { proof, genesis, validators, trusted_set_hash, backend } => {
            proof::verify_command(&proof, &genesis, validators.as_deref(), trusted_set_hash, backend)
        }
    }
}

fn run_htlc(command: HtlcCommand) -> anyhow::Result<Output> {
    match command {
        HtlcCommand::Create {
            api,
            dir,
            from,
            receiver,
            amount,
            currency,
            lock_seconds,
            hash,
            out,
            tx,
            wait,
        } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            htlc::command::create(
                &common,
                &from,
                receiver,
                amount,
                currency,
                lock_seconds,
                hash,
                &out,
                &options,
            )
        }
        HtlcCommand::Claim { api, dir, name, htlc, secret, to, amount, tx, wait } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            htlc::command::claim(&common, &name, &htlc, secret, to, amount, &options)
        }
        HtlcCommand::Refund { api, dir, name, htlc, to, tx, wait } => {
            let options = tx.options()?;
            htlc::command::refund(&Common::new(Some(dir), Some(api), Some(wait)), &name, &htlc, to, &options)
        }
    }
}

fn run_channel(command: ChannelCommand) -> anyhow::Result<Output> {
    match command {
        ChannelCommand::Open { api, dir, from, payee, currency, amount, expiry_seconds, out, tx, wait } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            channel::command::open(&common, &from, payee, currency, amount, expiry_seconds, &out, &options)
        }
        ChannelCommand::Voucher { dir, name, channel, cumulative, out } => {
            channel::command::voucher(&Common::new(Some(dir), None, None), &name, &channel, cumulative, &out)
        }
        ChannelCommand::Claim { api, dir, name, channel, voucher, amount, to, tx, wait } => {
            let options = tx.options()?;
            let common = Common::new(Some(dir), Some(api), Some(wait));
            channel::command::claim(&common, &name, &channel, &voucher, amount, to, &options)
        }
        ChannelCommand::Close { api, dir, name, channel, to, tx, wait } => {
            let options = tx.options()?;
            channel::command::close(
                &Common::new(Some(dir), Some(api), Some(wait)),
                &name,
                &channel,
                to,
                &options,
            )
        }
    }
}

/// The secret key of `wallet import`: 64 hex characters on stdin (read without echo when stdin
/// is a terminal).
fn read_secret_stdin() -> anyhow::Result<SecretKey> {
    let mut text = if std::io::stdin().is_terminal() {
        tty::read_hidden("secret key (64 hex characters): ")?
    } else {
        let mut bytes = Vec::new();
        std::io::stdin().lock().take(1024).read_to_end(&mut bytes).context("cannot read stdin")?;
        bytes
    };
    let mut digits: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    text.fill(0);
    let mut bytes = [0u8; 32];
    let decoded = hex::decode_to_slice(&digits, &mut bytes);
    let len = digits.len();
    digits.fill(0);
    if decoded.is_err() {
        bail!("stdin: a secret key is 64 hex characters, got {len} characters that are not that");
    }
    let key = SecretKey::from_bytes(&bytes);
    bytes.fill(0);
    Ok(key?)
}
