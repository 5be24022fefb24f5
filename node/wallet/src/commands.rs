//! The `caasiope wallet …` command line: every command's arguments (clap), embedded by the
//! binary's parser and dispatched by [`crate::run`].

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use engine::{Address, Currency, Hash, PublicKey, tx::Leg};

use crate::{
    build,
    build::{TxOptions, parse_fee, parse_hex32, parse_id, parse_leg, parse_positive_amount},
    flow,
};

/// `--wallet-dir`.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Wallet directory [default: $CAASIOPE_WALLET_DIR, else ~/.caasiope/wallet]. The
    /// passphrase comes from $CAASIOPE_WALLET_PASSPHRASE if set, else the terminal.
    #[arg(long, value_name = "DIR")]
    pub(crate) wallet_dir: Option<PathBuf>,
}

/// `--api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The explorer's API, e.g. http://127.0.0.1:7400.
    #[arg(long, value_name = "URL")]
    pub(crate) api: String,
}

/// Options of every transaction built (boxed in the commands: clap's argument structs live in
/// one enum, whose size is its largest variant's).
#[derive(Debug, Args)]
pub struct TxArgs {
    /// Fee in CAS [default: the chain's minimum fee].
    #[arg(long, value_name = "CAS", value_parser = parse_fee)]
    pub(crate) fee: Option<i64>,
    /// Seconds from the latest ledger's time to expiration, capped at the chain's max TTL
    /// [default: 600, or the max TTL for `build`].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    pub(crate) ttl_seconds: Option<u64>,
    /// A message (UTF-8 text, at most 128 bytes), e.g. a gateway's deposit reference.
    #[arg(long, value_name = "TEXT", conflicts_with = "message_hex")]
    pub(crate) message: Option<String>,
    /// A message as hex (at most 128 bytes).
    #[arg(long, value_name = "HEX")]
    pub(crate) message_hex: Option<String>,
}

impl TxArgs {
    pub(crate) fn options(&self) -> anyhow::Result<TxOptions> {
        Ok(TxOptions {
            fee: self.fee,
            ttl_ms: self.ttl_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX / 1000) * 1000),
            message: build::message_bytes(self.message.as_deref(), self.message_hex.as_deref())?,
        })
    }
}

/// `--wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until the transaction is committed (exit 0), rejected or expired (exit 2).
    #[arg(long)]
    pub(crate) wait: bool,
    /// Longest wait, in seconds.
    #[arg(long, value_name = "S", default_value_t = flow::WAIT_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) wait_timeout_seconds: u64,
}

/// `caasiope wallet …`
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Generates a key, stores it encrypted under a passphrase, prints its address.
    New {
        #[command(flatten)]
        dir: DirArgs,
        /// The key's name.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Stores a secret key (64 hex characters on stdin) encrypted; prints its address.
    Import {
        #[command(flatten)]
        dir: DirArgs,
        /// The key's name.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Lists the keys (names, addresses, public keys) as JSON; no passphrase needed.
    List {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Prints a key's address; no passphrase needed.
    Address {
        #[command(flatten)]
        dir: DirArgs,
        /// The key's name.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// An account's balances and declaration at the latest ledger.
    #[command(group(ArgGroup::new("who").required(true).multiple(false)))]
    Balance {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// A key of the wallet.
        #[arg(long, value_name = "NAME", group = "who")]
        name: Option<String>,
        /// Any address.
        #[arg(long, value_name = "ADDR", group = "who")]
        address: Option<Address>,
    },
    /// The chain's status: height, time, fees, issuers, validators.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A transaction's status (pending, committed, rejected, expired).
    Tx {
        #[command(flatten)]
        api: ApiArgs,
        /// The transaction id (64 hex characters).
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Hash,
    },
    /// An account's transactions, newest first.
    History {
        #[command(flatten)]
        api: ApiArgs,
        /// The account.
        #[arg(long, value_name = "ADDR")]
        address: Address,
        /// Entries per page.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// Pays from a key: builds, signs and submits; prints the id (with --wait, the outcome as
    /// JSON). With --out, saves the signed file instead (`wallet submit` sends it).
    Send {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The paying key (also pays the fee).
        #[arg(long, value_name = "NAME")]
        from: String,
        /// The receiving address.
        #[arg(long, value_name = "ADDR")]
        to: Address,
        /// The amount, in coins (e.g. 1.5).
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: i64,
        /// The currency symbol.
        #[arg(long, value_name = "SYMBOL")]
        currency: Currency,
        /// Publish the declarations of this file (multisig, HTLC or channel) in the payment.
        #[arg(long, value_name = "FILE")]
        declare: Vec<PathBuf>,
        /// Save the signed transaction to this new file instead of submitting it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Builds an unsigned transaction into a new file for its signers (a swap, a MultiSig
    /// spend): `wallet sign` adds signatures, `wallet submit` sends it once complete.
    Build {
        #[command(flatten)]
        api: ApiArgs,
        /// An input ADDR:CURRENCY:AMOUNT; repeat for each.
        #[arg(long, value_name = "ADDR:CUR:AMT", value_parser = parse_leg)]
        input: Vec<Leg>,
        /// An output ADDR:CURRENCY:AMOUNT; repeat for each.
        #[arg(long, value_name = "ADDR:CUR:AMT", value_parser = parse_leg)]
        output: Vec<Leg>,
        /// Who pays the fee.
        #[arg(long, value_name = "ADDR")]
        fee_payer: Address,
        /// Publish the declarations of this file (multisig, HTLC or channel); repeatable.
        #[arg(long, value_name = "FILE")]
        declare: Vec<PathBuf>,
        /// The new transaction file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
    },
    /// Shows a transaction file (on stderr), then adds a key's signature to it (offline).
    /// Refuses a key no input or fee payer needs.
    Sign {
        #[command(flatten)]
        dir: DirArgs,
        /// The signing key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The transaction file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Submits a complete transaction file.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// The transaction file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// MultiSig accounts.
    #[command(subcommand, arg_required_else_help = false)]
    Multisig(MultisigCommand),
    /// Validator-set changes: a `ValidatorUpdate` for the chain's governance account, saved
    /// unsigned for its signers (`wallet sign` by enough of them, then `wallet submit`). It
    /// takes effect at the ledger after the one that commits it (`GET /v1/validators`).
    #[command(subcommand, arg_required_else_help = false)]
    Governance(GovernanceCommand),
    /// Hashed time-locked contracts (SHA-256), for atomic swaps with Bitcoin-family chains.
    #[command(subcommand, arg_required_else_help = false)]
    Htlc(HtlcCommand),
    /// Payment channels: off-chain vouchers, claimed on chain.
    #[command(subcommand, arg_required_else_help = false)]
    Channel(ChannelCommand),
    /// Issues new tokens from the currency's issuer (its balance goes negative). A MultiSig
    /// issuer: --issuer-file and --out, then `wallet sign` / `wallet submit`.
    #[command(group(ArgGroup::new("issuer").required(true).multiple(true)))]
    Issue {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The issuer's key, or a key co-signing for --issuer-file.
        #[arg(long, value_name = "NAME", group = "issuer")]
        from: Option<String>,
        /// The issuer's declaration file (`wallet multisig address --out`).
        #[arg(long, value_name = "FILE", group = "issuer", requires = "out")]
        issuer_file: Option<PathBuf>,
        /// The receiver.
        #[arg(long, value_name = "ADDR")]
        to: Address,
        /// The amount, in coins.
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: i64,
        /// The currency.
        #[arg(long, value_name = "SYMBOL")]
        currency: Currency,
        /// Who pays the fee [default: the issuer].
        #[arg(long, value_name = "ADDR")]
        fee_payer: Option<Address>,
        /// Save the (partially) signed transaction to this new file instead of submitting.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Destroys tokens by sending them to their issuer. A MultiSig holder: --holder-file and
    /// --out, then `wallet sign` / `wallet submit`.
    #[command(group(ArgGroup::new("holder").required(true).multiple(true)))]
    Destroy {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The holder's key, or a key co-signing for --holder-file.
        #[arg(long, value_name = "NAME", group = "holder")]
        from: Option<String>,
        /// The holder's declaration file.
        #[arg(long, value_name = "FILE", group = "holder", requires = "out")]
        holder_file: Option<PathBuf>,
        /// The amount, in coins.
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: i64,
        /// The currency.
        #[arg(long, value_name = "SYMBOL")]
        currency: Currency,
        /// Who pays the fee [default: the holder].
        #[arg(long, value_name = "ADDR")]
        fee_payer: Option<Address>,
        /// Save the (partially) signed transaction to this new file instead of submitting.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Fetches a proof and the validator set certifying it, into files for `verify-proof`.
    #[command(subcommand, arg_required_else_help = false)]
    Proof(ProofCommand),
    /// Verifies a transaction-inclusion or account-state proof offline, against the genesis
    /// validators (or a validator-set file whose hash you trust); prints what it proves.
    VerifyProof {
        /// The proof file (`wallet proof …`, or the explorer's `{height, proof}` answer).
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
        /// The chain's genesis file, obtained from a source you trust.
        #[arg(long, value_name = "GENESIS.toml")]
        genesis: PathBuf,
        /// The validator set certifying the proof's ledger, if not the genesis one: the file
        /// `wallet proof` saves, with the set changes since genesis (each checked in turn,
        /// from the genesis set).
        #[arg(long, value_name = "FILE")]
        validators: Option<PathBuf>,
        /// The hash of that set, from a source you trust (a published checkpoint).
        #[arg(long, value_name = "HEX", value_parser = parse_id, requires = "validators")]
        trusted_set_hash: Option<Hash>,
        /// Signature verification backend: k256 or libsecp256k1.
        #[arg(long, default_value = "k256")]
        backend: engine::Backend,
    },
}

/// `caasiope wallet multisig …`
#[derive(Debug, Subcommand)]
pub enum MultisigCommand {
    /// Prints the address of an X-of-Y MultiSig; with --out, also writes its declaration file
    /// (for `--declare`, `--issuer-file`, `multisig declare`).
    Address {
        /// How many signers must sign.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        required: i16,
        /// A signer's address; repeat for each (order does not matter).
        #[arg(long = "signer", value_name = "ADDR", required = true)]
        signers: Vec<Address>,
        /// The declaration file to create.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Publishes a declaration file on chain in a transaction that only pays the fee.
    Declare {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The key paying the fee.
        #[arg(long, value_name = "NAME")]
        from: String,
        /// The declaration file.
        #[arg(long, value_name = "FILE")]
        multisig: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(text.trim()).map_err(|e| e.to_string())
}

/// `caasiope wallet governance …`: each builds a file whose fee the governance account pays.
#[derive(Debug, Subcommand)]
pub enum GovernanceCommand {
    /// Adds a validator (its consensus key, `validator_public_key` of its member.json).
    AddValidator {
        #[command(flatten)]
        api: ApiArgs,
        /// The new validator's consensus public key (hex).
        #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
        public_key: PublicKey,
        /// Its voting weight.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        weight: u64,
        /// The transaction file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
    },
    /// Removes a validator: its votes stop counting from the ledger after the one that commits
    /// this (its process may keep following the chain).
    RemoveValidator {
        #[command(flatten)]
        api: ApiArgs,
        /// The validator's consensus public key (hex).
        #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
        public_key: PublicKey,
        /// The transaction file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
    },
    /// Changes a validator's voting weight.
    SetWeight {
        #[command(flatten)]
        api: ApiArgs,
        /// The validator's consensus public key (hex).
        #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
        public_key: PublicKey,
        /// Its new weight.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        weight: u64,
        /// The transaction file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
    },
}

/// `caasiope wallet htlc …`
#[derive(Debug, Subcommand)]
pub enum HtlcCommand {
    /// Pays into a new HTLC and saves its terms to a new file (no secret in it); prints the
    /// HTLC address and, if it generated one, the secret.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The sender's key (refunds after the lock time).
        #[arg(long, value_name = "NAME")]
        from: String,
        /// The receiver (claims with the secret).
        #[arg(long, value_name = "ADDR")]
        receiver: Address,
        /// The amount, in coins.
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: i64,
        /// The currency.
        #[arg(long, value_name = "SYMBOL")]
        currency: Currency,
        /// Seconds of ledger time, from the latest ledger, before the sender may refund.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=86_400 * 365 * 10))]
        lock_seconds: u64,
        /// The SHA-256 hash of a secret someone else holds (e.g. the other chain's HTLC);
        /// without it, a new secret is generated and printed.
        #[arg(long, value_name = "HEX", value_parser = parse_hex32)]
        hash: Option<[u8; 32]>,
        /// The HTLC file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The receiver takes the HTLC's coins with the secret (revealing it on chain).
    Claim {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The receiver's key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The HTLC file.
        #[arg(long, value_name = "FILE")]
        htlc: PathBuf,
        /// The secret (64 hex characters).
        #[arg(long, value_name = "HEX", value_parser = parse_hex32)]
        secret: [u8; 32],
        /// Where the coins go [default: the receiver].
        #[arg(long, value_name = "ADDR")]
        to: Option<Address>,
        /// How much [default: all the HTLC holds in its currency].
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: Option<i64>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The sender takes everything back, once the lock time has passed in ledger time.
    Refund {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The sender's key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The HTLC file.
        #[arg(long, value_name = "FILE")]
        htlc: PathBuf,
        /// Where the coins go [default: the sender].
        #[arg(long, value_name = "ADDR")]
        to: Option<Address>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `caasiope wallet channel …`
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// The payer opens a channel: pays into it and saves its terms to a new file.
    Open {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The payer's key (signs vouchers, takes the rest after expiry).
        #[arg(long, value_name = "NAME")]
        from: String,
        /// The payee.
        #[arg(long, value_name = "ADDR")]
        payee: Address,
        /// The channel's currency.
        #[arg(long, value_name = "SYMBOL")]
        currency: Currency,
        /// The amount paid in, in coins.
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: i64,
        /// Seconds of ledger time, from the latest ledger, until the channel expires.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=86_400 * 365 * 10))]
        expiry_seconds: u64,
        /// The channel file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The payer signs a voucher for a cumulative amount (offline) into a new file.
    Voucher {
        #[command(flatten)]
        dir: DirArgs,
        /// The payer's key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The channel file.
        #[arg(long, value_name = "FILE")]
        channel: PathBuf,
        /// The total the payee may have claimed, over all claims, in coins.
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        cumulative: i64,
        /// The voucher file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The payee claims with a voucher, before expiry.
    Claim {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The payee's key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The channel file.
        #[arg(long, value_name = "FILE")]
        channel: PathBuf,
        /// The voucher file.
        #[arg(long, value_name = "FILE")]
        voucher: PathBuf,
        /// How much [default: all the voucher still covers].
        #[arg(long, value_name = "AMOUNT", value_parser = parse_positive_amount)]
        amount: Option<i64>,
        /// Where the coins go [default: the payee].
        #[arg(long, value_name = "ADDR")]
        to: Option<Address>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The payer takes what is left, from expiry on.
    Close {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        dir: DirArgs,
        /// The payer's key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The channel file.
        #[arg(long, value_name = "FILE")]
        channel: PathBuf,
        /// Where the coins go [default: the payer].
        #[arg(long, value_name = "ADDR")]
        to: Option<Address>,
        #[command(flatten)]
        tx: Box<TxArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `caasiope wallet proof …`
#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// A committed transaction's inclusion proof.
    Tx {
        #[command(flatten)]
        api: ApiArgs,
        /// The transaction id.
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: Hash,
        /// The proof file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The validator-set file to create (default: beside --out, `<name>.validators.json`).
        #[arg(long, value_name = "FILE")]
        validators_out: Option<PathBuf>,
    },
    /// An account's state proof at the latest ledger.
    Account {
        #[command(flatten)]
        api: ApiArgs,
        /// The account.
        #[arg(value_name = "ADDR")]
        address: Address,
        /// The proof file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The validator-set file to create (default: beside --out, `<name>.validators.json`).
        #[arg(long, value_name = "FILE")]
        validators_out: Option<PathBuf>,
    },
}
