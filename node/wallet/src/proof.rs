//! Offline proof verification (simple payment verification, DESIGN §3.5).
//!
//! `wallet proof tx|account` fetch a proof and the validator set certifying its ledger from an
//! explorer and save them; `wallet verify-proof` checks a proof with no network access, using
//! `engine::proof::{verify_tx_inclusion, verify_account_state}`.
//!
//! What is trusted: the genesis file, which the user obtained from a source they trust (it
//! fixes the chain id and the first validator set). A proof is accepted only if its ledger
//! header carries a certificate by more than two thirds of the weight of a trusted validator
//! set, and its Merkle branch leads from the transaction id or account to that header's root.
//! The trusted set is the genesis set, unless a validator-set file is given: that set is then
//! used only if it *is* the genesis set, if the file's set changes lead to it from the genesis
//! set (each change a header certified by the set before it that names the set after it:
//! `wallet proof` saves them from `GET /v1/validator-sets`), or if its hash equals a
//! `--trusted-set-hash` the user got out of band (a checkpoint published by the consortium,
//! say). A set fetched from the same explorer as the proof proves nothing by itself — whoever
//! forges the proof forges the set with it — so an unvouched set is refused, not silently used.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use engine::{
    Backend, Hash,
    codec::{Decode, Encode, Reader, decode_exact},
    currency::format_amount,
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    proof::{AccountStateProof, TxInclusionProof, verify_account_state, verify_tx_inclusion},
};
use exit::Output;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Common, files};

/// A proof file: the explorer's `{height, proof}` answer, with the kind and chain id added.
#[derive(Debug, Serialize, Deserialize)]
struct ProofFile {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    chain_id: Option<String>,
    height: u64,
    proof: String,
}

/// A validator-set file: the explorer's `{height, validators}` answer, and the set changes from
/// genesis that lead to it (`wallet proof` saves them; `verify-proof` checks each).
#[derive(Debug, Serialize, Deserialize)]
struct ValidatorsFile {
    height: u64,
    #[serde(default)]
    hash: Option<Hash>,
    validators: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changes: Vec<ChangeFile>,
}

/// One validator-set change: `LedgerHeader ‖ Certificate` (hex) of the header naming the new
/// set, and the new set (hex).
#[derive(Debug, Serialize, Deserialize)]
struct ChangeFile {
    header: String,
    validators: String,
}

/// Follows the set changes from the genesis set: each change's header must be certified by the
/// set before it and name the set after it. Returns the last set and how many changes it took.
fn follow_changes(
    genesis: &Genesis,
    changes: &[ChangeFile],
    below: u64,
    backend: Backend,
) -> anyhow::Result<ValidatorSet> {
    let chain_id = genesis.params.chain_id.as_str();
    let mut set = genesis.validators.clone();
    let mut after = 0u64;
    for (i, change) in changes.iter().enumerate() {
        let bytes = hex::decode(change.header.trim()).with_context(|| format!("set change {i}: header"))?;
        let (header, certificate) = (|| {
            let mut r = Reader::new(&bytes);
            let pair = (LedgerHeader::decode(&mut r)?, Certificate::decode(&mut r)?);
            r.finish().map(|()| pair)
        })()
        .with_context(|| format!("set change {i}: not a header and certificate"))?;
        if header.height <= after || header.height >= below {
            bail!(
                "set change {i} at height {} is out of order (after {after}, below {below})",
                header.height
            );
        }
        certificate.verify_header(&set, chain_id, &header, backend).with_context(|| {
            format!(
                "set change {i}: the header at height {} is not certified by the set before it",
                header.height
            )
        })?;
        let next: ValidatorSet =
            decode_exact(&hex::decode(change.validators.trim()).context("set change: set")?)
                .with_context(|| format!("set change {i}: not a validator set"))?;
        if next.hash() != header.validator_set_hash {
            bail!("set change {i}: the set is not the one the header at height {} names", header.height);
        }
        (set, after) = (next, header.height);
    }
    Ok(set)
}

enum Proof {
    Tx(Box<TxInclusionProof>),
    Account(Box<AccountStateProof>),
}

impl Proof {
    fn header(&self) -> &LedgerHeader {
        match self {
            Self::Tx(p) => &p.header,
            Self::Account(p) => &p.header,
        }
    }
}

fn decode_proof(kind: Option<&str>, bytes: &[u8]) -> anyhow::Result<Proof> {
    Ok(match kind {
        Some("transaction" | "tx") => {
            Proof::Tx(Box::new(decode_exact(bytes).context("not a transaction-inclusion proof")?))
        }
        Some("account") => {
            Proof::Account(Box::new(decode_exact(bytes).context("not an account-state proof")?))
        }
        Some(other) => bail!("unknown proof kind {other:?} (transaction or account)"),
        // Each decoder accepts only its exact canonical form, so at most one of them succeeds.
        None => match decode_exact::<TxInclusionProof>(bytes) {
            Ok(p) => Proof::Tx(Box::new(p)),
            Err(_) => Proof::Account(Box::new(
                decode_exact(bytes).context("neither a transaction nor an account proof")?,
            )),
        },
    })
}

/// Which validator set a proof is checked against, and why it is trusted.
fn trusted_set(
    genesis: &Genesis,
    validators: Option<&str>,
    trusted_hash: Option<Hash>,
    height: u64,
    backend: Backend,
) -> anyhow::Result<(ValidatorSet, &'static str)> {
    let Some(text) = validators else {
        if trusted_hash.is_some() {
            bail!("--trusted-set-hash needs the set itself: give --validators FILE");
        }
        return Ok((genesis.validators.clone(), "genesis"));
    };
    let file: ValidatorsFile = serde_json::from_str(text).context("the validator-set file is not valid")?;
    if file.height != height {
        bail!("the validator-set file certifies height {}, the proof is at height {height}", file.height);
    }
    let bytes = hex::decode(file.validators.trim()).context("validator-set file")?;
    let set: ValidatorSet = decode_exact(&bytes).context("validator-set file")?;
    let hash = set.hash();
    if file.hash.is_some_and(|h| h != hash) {
        bail!("the validator-set file's hash field does not match its set ({hash})");
    }
    if hash == genesis.validators.hash() && file.changes.is_empty() {
        return Ok((set, "genesis"));
    }
    if !file.changes.is_empty() && trusted_hash.is_none() {
        let followed = follow_changes(genesis, &file.changes, height, backend)?;
        if followed.hash() != hash {
            bail!(
                "the set changes from genesis lead to set {}, not the file's {hash}: a change is missing",
                followed.hash()
            );
        }
        return Ok((set, "genesis and the set changes since"));
    }
    match trusted_hash {
        Some(t) if t == hash => Ok((set, "checkpoint")),
        Some(t) => bail!("the validator set in the file has hash {hash}, not the trusted {t}"),
        None => bail!(
            "the validator set in the file (hash {hash}) is not the genesis set; it is trusted only with \
             --trusted-set-hash {hash}, given only if that hash comes from a source you trust"
        ),
    }
}

/// Verifies a proof file's text against a genesis and optionally a validator-set file; no
/// network. Returns what was proven.
pub(crate) fn verify(
    proof_text: &str,
    genesis: &Genesis,
    validators: Option<&str>,
    trusted_hash: Option<Hash>,
    backend: Backend,
) -> anyhow::Result<Value> {
    let file: ProofFile = serde_json::from_str(proof_text).context("the proof file is not valid")?;
    let chain_id = genesis.params.chain_id.as_str();
    if let Some(c) = &file.chain_id
        && c != chain_id
    {
        bail!("the proof is for chain {c:?}, the genesis for {chain_id:?}");
    }
    let bytes = hex::decode(file.proof.trim()).context("the proof is not hex")?;
    let proof = decode_proof(file.kind.as_deref(), &bytes)?;
    let header = *proof.header();
    if header.height != file.height {
        bail!(
            "the proof's ledger is at height {}, not the height {} its file names",
            header.height,
            file.height
        );
    }
    let (set, trusted) = trusted_set(genesis, validators, trusted_hash, header.height, backend)?;
    let checked = match &proof {
        Proof::Tx(p) => verify_tx_inclusion(chain_id, &set, p, backend),
        Proof::Account(p) => verify_account_state(chain_id, &set, p, backend),
    };
    if let Err(e) = checked {
        let hint = if trusted == "genesis" && matches!(e, engine::proof::ProofError::Certificate(_)) {
            " (if the validator set changed since genesis, give --validators and --trusted-set-hash)"
        } else {
            ""
        };
        bail!("the proof does not verify: {e}{hint}");
    }
    Ok(proven(chain_id, &header, &set, trusted, &proof))
}

/// What a verified proof proves, as `wallet verify-proof` prints it.
fn proven(chain_id: &str, header: &LedgerHeader, set: &ValidatorSet, trusted: &str, proof: &Proof) -> Value {
    let mut answer = json!({
        "valid": true,
        "chain_id": chain_id,
        "height": header.height,
        "ledger_hash": header.hash(chain_id),
        "timestamp_ms": header.timestamp_ms,
        "validator_set": { "hash": set.hash(), "trusted_as": trusted },
    });
    match proof {
        Proof::Tx(p) => {
            answer["kind"] = json!("transaction");
            answer["tx_id"] = json!(p.tx_id);
            answer["index"] = json!(p.branch.index());
            answer["tx_root"] = json!(header.tx_root);
        }
        Proof::Account(p) => {
            answer["kind"] = json!("account");
            let a = &p.account;
            let balances: Vec<Value> = a
                .balances()
                .iter()
                .map(|(c, v)| json!({ "currency": c, "amount": v, "amount_text": format_amount(*v) }))
                .collect();
            answer["account"] = json!({
                "address": a.address,
                "last_height": a.last_height,
                "balances": balances,
                "declaration": a.declaration,
                "channel_claimed": a.channel_claimed,
            });
            answer["state_root"] = json!(header.state_root);
        }
    }
    answer
}

/// `wallet verify-proof`.
pub(crate) fn verify_command(
    proof: &Path,
    genesis: &Path,
    validators: Option<&Path>,
    trusted_hash: Option<Hash>,
    backend: Backend,
) -> anyhow::Result<Output> {
    let proof_text = files::read_text(proof, "proof file")?;
    let genesis_text = exit::read_text(genesis, engine::limits::GENESIS_BYTES_MAX as u64, "genesis file")?;
    let genesis =
        Genesis::from_toml(&genesis_text).with_context(|| format!("genesis {}", genesis.display()))?;
    let validators_text = validators.map(|p| files::read_text(p, "validator-set file")).transpose()?;
    Output::json(&verify(&proof_text, &genesis, validators_text.as_deref(), trusted_hash, backend)?)
}

/// What `wallet proof` fetches.
pub(crate) enum Subject {
    /// A committed transaction's inclusion.
    Tx(Hash),
    /// An account's state at the latest ledger.
    Account(engine::Address),
}

/// `wallet proof tx|account`: fetches the proof and the validator set certifying its ledger and
/// saves both (never overwriting). Nothing fetched is trusted here: see `verify-proof`.
pub(crate) fn fetch_command(
    common: &Common,
    subject: &Subject,
    out: &Path,
    validators_out: Option<&Path>,
) -> anyhow::Result<Output> {
    let api = common.api()?;
    let chain_id = api.status()?.chain_id;
    let (kind, answer) = match subject {
        Subject::Tx(id) => ("transaction", api.tx_proof(id)?),
        Subject::Account(address) => ("account", api.account_proof(address)?),
    };
    let bytes = hex::decode(answer.proof.trim()).context("the explorer's proof is not hex")?;
    let proof = decode_proof(Some(kind), &bytes)?;
    if proof.header().height != answer.height {
        bail!("the explorer's proof is at height {}, not {}", proof.header().height, answer.height);
    }
    let set_answer = api.validators(answer.height)?;
    let set: ValidatorSet =
        decode_exact(&hex::decode(set_answer.validators.trim()).context("validator set")?)
            .context("the explorer's validator set")?;
    let validators_path: PathBuf = match validators_out {
        Some(p) => p.to_path_buf(),
        None => default_validators_path(out),
    };
    // Both files or neither: checked before the first is written.
    if validators_path.exists() {
        bail!("{} already exists; refusing to overwrite it", validators_path.display());
    }
    let proof_file = ProofFile {
        kind: Some(kind.into()),
        chain_id: Some(chain_id),
        height: answer.height,
        proof: hex::encode(&bytes),
    };
    // The changes from genesis to that set, for `verify-proof` to follow (none: the genesis set).
    let changes = api
        .set_changes_below(answer.height)?
        .into_iter()
        .map(|c| ChangeFile { header: c.header.bytes, validators: c.validators })
        .collect();
    let set_file = ValidatorsFile {
        height: answer.height,
        hash: Some(set.hash()),
        validators: hex::encode(set.to_bytes()),
        changes,
    };
    files::write_json_new(out, &proof_file, 0o644)?;
    files::write_json_new(&validators_path, &set_file, 0o644)?;
    Output::json(&json!({
        "kind": kind,
        "height": answer.height,
        "proof_file": out,
        "validators_file": validators_path,
        "validator_set_hash": set.hash(),
    }))
}

fn default_validators_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "proof".into());
    out.with_file_name(format!("{stem}.validators.json"))
}

#[cfg(test)]
mod tests {
    use engine::{
        SecretKey,
        genesis::{BalanceSpec, CurrencySpec, GenesisConfig},
        ledger::Validator,
    };

    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_hex(&hex::encode([n; 32])).unwrap()
    }

    fn set(keys: &[u8]) -> ValidatorSet {
        ValidatorSet::new(
            keys.iter().map(|k| Validator { public_key: key(*k).public_key(), weight: 1 }).collect(),
        )
        .unwrap()
    }

    /// The header at `height` naming `next`, certified by `signers` (indexes and keys) of the set
    /// before it, as `wallet proof` saves it.
    fn change(height: u64, next: &ValidatorSet, signers: &[(u8, u8)]) -> ChangeFile {
        let header = LedgerHeader {
            version: 1,
            height,
            timestamp_ms: 1_000 + height as i64,
            previous: Hash([height as u8; 32]),
            tx_root: Hash([0; 32]),
            state_root: Hash([1; 32]),
            validator_set_hash: next.hash(),
        };
        let mut c = Certificate::new(0);
        for (index, k) in signers {
            c.add("localnet", *index, &key(*k), height, &header.hash("localnet"));
        }
        let mut bytes = header.to_bytes();
        c.encode(&mut bytes);
        ChangeFile { header: hex::encode(bytes), validators: hex::encode(next.to_bytes()) }
    }

    #[test]
    fn set_changes_are_followed_from_genesis_each_certified_by_the_set_before() {
        let config = GenesisConfig {
            generated: vec![],
            chain_id: "localnet".into(),
            timestamp_ms: 0,
            min_fee: 1,
            max_ttl_ms: 3_600_000,
            fee_account: key(9).public_key().address(),
            governance: key(9).public_key().address(),
            validators: set(&[1]).validators().to_vec(),
            currencies: vec![CurrencySpec {
                symbol: engine::Currency::CAS,
                issuer: engine::Address::timelock(0),
            }],
            declarations: vec![],
            balances: Vec::<BalanceSpec>::new(),
        };
        let genesis = Genesis::new(config).unwrap();
        let (s1, s2) = (set(&[1, 2]), set(&[2, 3]));
        // Indexes follow key order in each set.
        let i = |s: &ValidatorSet, k: u8| s.index_of(&key(k).public_key()).unwrap() as u8;
        let c3 = change(3, &s1, &[(0, 1)]);
        let c6 = change(6, &s2, &[(i(&s1, 1), 1), (i(&s1, 2), 2)]);
        let file = |changes: Vec<ChangeFile>, last: &ValidatorSet| {
            serde_json::to_string(&ValidatorsFile {
                height: 9,
                hash: None,
                validators: hex::encode(last.to_bytes()),
                changes,
            })
            .unwrap()
        };
        let trusted = |text: &str| trusted_set(&genesis, Some(text), None, 9, Backend::K256);
        let (got, why) = trusted(&file(
            vec![change(3, &s1, &[(0, 1)]), change(6, &s2, &[(i(&s1, 1), 1), (i(&s1, 2), 2)])],
            &s2,
        ))
        .unwrap();
        assert_eq!((got.hash(), why), (s2.hash(), "genesis and the set changes since"));
        // A change left out: the next one is not certified by the set before it.
        let err = trusted(&file(vec![c6], &s2)).unwrap_err();
        assert!(format!("{err:#}").contains("not certified by the set before it"), "{err:#}");
        // The last change left out: the changes lead to another set than the file's.
        let err = trusted(&file(vec![c3], &s2)).unwrap_err();
        assert!(format!("{err:#}").contains("a change is missing"), "{err:#}");
        // A set that is not the one its header names.
        let mut forged = change(3, &s1, &[(0, 1)]);
        forged.validators = hex::encode(s2.to_bytes());
        assert!(trusted(&file(vec![forged], &s2)).is_err());
        // A change certified by a minority of the set before it (one of two).
        let weak = change(6, &s2, &[(i(&s1, 2), 2)]);
        assert!(trusted(&file(vec![change(3, &s1, &[(0, 1)]), weak], &s2)).is_err());
        // A change at or above the proof's height is refused.
        assert!(
            trusted(&file(vec![change(3, &s1, &[(0, 1)]), change(9, &s2, &[(0, 1), (1, 2)])], &s2)).is_err()
        );
    }
}
