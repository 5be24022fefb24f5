//! Partially signed transactions: a file that travels between the parties of a swap or the
//! signers of a MultiSig, each adding a signature, until it is complete and submitted.
//!
//! ```json
//! { "format": "caasiope-partial-tx/1", "chain_id": "localnet", "id": "<64 hex>",
//!   "unsigned": "<canonical bytes without signatures, hex>",
//!   "context": ["<declaration hex>", …],
//!   "signatures": [{ "public_key": "04…", "address": "qy…", "signature": "<64 bytes hex>" }],
//!   "transaction": { …readable rendering… }, "summary": ["…"] }
//! ```
//!
//! `unsigned` is authoritative: the id is recomputed from it and every signature verified over
//! that id on loading; `transaction` and `summary` are written for people and never read back.
//! `context` holds the chain's declarations of special input accounts as fetched when the file
//! was built, for the signing analysis only (the engine's [`engine::spend::verdict`]).

use std::path::Path;

use anyhow::{Context, bail};
use engine::{
    Address, Backend, Declaration, PublicKey, SecretKey, Signature,
    codec::{Encode, decode_exact},
    genesis::check_chain_id,
    hash::Hash,
    keys,
    limits::SIGNATURES_MAX,
    spend::{Declared, Verdict},
    tx::{SignedTransaction, Transaction, TxSignature},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{build, files};

const FORMAT: &str = "caasiope-partial-tx/1";

#[derive(Debug, Serialize, Deserialize)]
struct PartialFile {
    format: String,
    chain_id: String,
    id: Hash,
    unsigned: String,
    #[serde(default)]
    context: Vec<String>,
    signatures: Vec<FileSignature>,
    #[serde(default, skip_deserializing)]
    transaction: Value,
    #[serde(default, skip_deserializing)]
    summary: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileSignature {
    public_key: String,
    /// For people; derived from the key on loading.
    #[serde(default, skip_deserializing)]
    address: Option<Address>,
    signature: String,
}

/// A transaction and the signatures gathered so far, each verified.
#[derive(Clone, Debug)]
pub(crate) struct Partial {
    /// The chain it is for.
    pub(crate) chain_id: String,
    /// The unsigned transaction.
    pub(crate) tx: Transaction,
    /// Declarations published on chain that its spend rules use.
    pub(crate) context: Vec<Declaration>,
    signatures: Vec<TxSignature>,
}

impl Partial {
    /// An unsigned transaction.
    pub(crate) fn new(chain_id: &str, tx: Transaction, context: Vec<Declaration>) -> anyhow::Result<Self> {
        check_chain_id(chain_id)?;
        Ok(Self { chain_id: chain_id.into(), tx, context, signatures: Vec::new() })
    }

    /// The transaction id.
    pub(crate) fn id(&self) -> Hash {
        self.tx.id(&self.chain_id)
    }

    /// The addresses that signed so far.
    pub(crate) fn signers(&self) -> Vec<Address> {
        self.signatures.iter().map(|s| s.public_key.address()).collect()
    }

    /// Who signed and what is missing, at ledger time `now_ms`.
    ///
    /// Judged by the engine's own rules ([`engine::spend::verdict`]) against the declarations
    /// in the file's context; the governance account is not judged (the file does not name
    /// it), nor what a payment channel claimed before — the chain judges both.
    pub(crate) fn verdict(&self, now_ms: i64) -> Verdict {
        engine::spend::verdict(&self.tx, &Declared::new(&self.context), &self.signers(), now_ms, None)
    }

    /// Adds `key`'s signature, refused if no spend rule of the transaction can use it (the
    /// chain would reject the transaction for an unneeded signature).
    pub(crate) fn sign(&mut self, key: &SecretKey, now_ms: i64) -> anyhow::Result<()> {
        self.check_signer(&key.public_key().address(), now_ms)?;
        let signed = self.tx.clone().sign(&self.chain_id, &[key]);
        let new = signed.signatures.into_iter().next().context("signing produced no signature")?;
        self.signatures.retain(|s| s.public_key != new.public_key);
        self.signatures.push(new);
        self.signatures.sort_by_key(|s| s.public_key);
        Ok(())
    }

    /// Refuses a signer no spend rule of the transaction can use.
    pub(crate) fn check_signer(&self, address: &Address, now_ms: i64) -> anyhow::Result<()> {
        let verdict = self.verdict(now_ms);
        if !verdict.eligible.contains(address) {
            bail!(
                "key {address} is not needed by any input or the fee payer of transaction {}: the chain \
                 would reject the transaction for its signature (keys that can sign: {})",
                self.id(),
                list(&verdict.eligible)
            );
        }
        Ok(())
    }

    /// The signed transaction, refused unless every rule is satisfied at ledger time `now_ms`.
    pub(crate) fn complete(&self, now_ms: i64) -> anyhow::Result<SignedTransaction> {
        let verdict = self.verdict(now_ms);
        if !verdict.unneeded.is_empty() {
            bail!(
                "signatures by {} are not needed by any rule; the chain would reject them",
                list(&verdict.unneeded)
            );
        }
        if !verdict.unsatisfied.is_empty() {
            bail!(
                "transaction {} is not complete: the rules of {} are not satisfied yet (signed so far by: {})",
                self.id(),
                list(verdict.unsatisfied.iter().map(|(a, _)| a)),
                if self.signatures.is_empty() { "nobody".into() } else { list(&self.signers()) }
            );
        }
        Ok(self.signed())
    }

    /// The transaction with the signatures so far, complete or not.
    pub(crate) fn signed(&self) -> SignedTransaction {
        SignedTransaction { tx: self.tx.clone(), signatures: self.signatures.clone() }
    }

    /// Writes a new file (never overwriting one).
    pub(crate) fn save_new(&self, path: &Path) -> anyhow::Result<()> {
        files::write_new(path, &self.to_json()?, 0o644)
    }

    /// Rewrites the file atomically (after a signature was added).
    pub(crate) fn save_replace(&self, path: &Path) -> anyhow::Result<()> {
        files::replace(path, &self.to_json()?, 0o644)
    }

    fn to_json(&self) -> anyhow::Result<Vec<u8>> {
        let file = PartialFile {
            format: FORMAT.into(),
            chain_id: self.chain_id.clone(),
            id: self.id(),
            unsigned: hex::encode(self.tx.to_bytes()),
            context: self.context.iter().map(|d| hex::encode(d.to_bytes())).collect(),
            signatures: self
                .signatures
                .iter()
                .map(|s| FileSignature {
                    public_key: s.public_key.to_hex(),
                    address: Some(s.public_key.address()),
                    signature: hex::encode(s.signature.0),
                })
                .collect(),
            transaction: build::render(&self.tx, &self.chain_id),
            summary: build::summary(&self.tx, &self.chain_id, None),
        };
        let mut text = serde_json::to_string_pretty(&file)?;
        text.push('\n');
        Ok(text.into_bytes())
    }

    /// Reads a file, recomputing the id and verifying every signature.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let file: PartialFile = files::read_json(path, "transaction file")?;
        let what = || format!("transaction file {}", path.display());
        if file.format != FORMAT {
            bail!("{} is not a partially signed transaction ({:?})", what(), file.format);
        }
        check_chain_id(&file.chain_id).with_context(what)?;
        let bytes = hex::decode(file.unsigned.trim()).with_context(what)?;
        let tx: Transaction = decode_exact(&bytes).with_context(what)?;
        let id = tx.id(&file.chain_id);
        if id != file.id {
            bail!("{}: its id {} is not the id of its transaction ({id})", what(), file.id);
        }
        let context = file
            .context
            .iter()
            .map(|h| hex::decode(h.trim()).map_err(anyhow::Error::from).and_then(|b| Ok(decode_exact(&b)?)))
            .collect::<anyhow::Result<Vec<Declaration>>>()
            .with_context(what)?;
        if file.signatures.len() > SIGNATURES_MAX {
            bail!("{}: more than {SIGNATURES_MAX} signatures", what());
        }
        let mut signatures = Vec::with_capacity(file.signatures.len());
        for s in &file.signatures {
            let public_key = PublicKey::from_hex(&s.public_key).with_context(what)?;
            let mut sig = [0u8; 64];
            hex::decode_to_slice(s.signature.trim(), &mut sig).with_context(what)?;
            let signature = Signature(sig);
            if !keys::verify(Backend::K256, &public_key, &id.0, &signature) {
                bail!("{}: the signature by {} does not verify", what(), public_key.address());
            }
            if signatures.iter().any(|t: &TxSignature| t.public_key == public_key) {
                bail!("{}: two signatures by {}", what(), public_key.address());
            }
            signatures.push(TxSignature { public_key, signature });
        }
        signatures.sort_by_key(|s| s.public_key);
        Ok(Self { chain_id: file.chain_id, tx, context, signatures })
    }
}

fn list<'a>(addresses: impl IntoIterator<Item = &'a Address>) -> String {
    let texts: Vec<String> = addresses.into_iter().map(Address::to_text).collect();
    if texts.is_empty() { "none".into() } else { texts.join(", ") }
}
