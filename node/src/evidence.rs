//! `caasiope evidence check`: an equivocation proof checked offline, against nothing but the
//! validator set of its height (DESIGN §4: the consortium acts on misbehaviour off-chain, so the
//! proof must stand alone).

use std::io::Read;

use anyhow::{Context, bail};
use consensus::Equivocation;
use engine::{
    Backend,
    codec::decode_exact,
    genesis::{Genesis, check_chain_id},
    ledger::ValidatorSet,
    limits::GENESIS_BYTES_MAX,
};
use exit::{Output, read_text};

use crate::cli::EvidenceCommand;

use limits::EVIDENCE_HEX_TEXT_MAX_BYTES as HEX_TEXT_MAX;

/// Runs one `evidence` command.
pub(crate) fn run(command: EvidenceCommand) -> anyhow::Result<Output> {
    let EvidenceCommand::Check { genesis, validators, chain_id, hex } = command;
    let (chain_id, set) = match (genesis, validators, chain_id) {
        (Some(path), None, _) => {
            let genesis = Genesis::from_toml(&read_text(&path, GENESIS_BYTES_MAX as u64, "genesis file")?)?;
            (genesis.params.chain_id, genesis.validators)
        }
        (None, Some(set), Some(chain_id)) => {
            check_chain_id(&chain_id)?;
            let text = if std::path::Path::new(&set).is_file() {
                read_text(std::path::Path::new(&set), HEX_TEXT_MAX as u64, "validator set file")?
            } else {
                set
            };
            let bytes = hex::decode(text.trim()).context("the validator set is not hex")?;
            let set: ValidatorSet = decode_exact(&bytes).context("not a validator set")?;
            (chain_id, set)
        }
        _ => bail!("give --genesis FILE, or --validators HEX|FILE with --chain-id ID"),
    };
    let text = match hex {
        Some(h) => h,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .take(HEX_TEXT_MAX as u64 + 1)
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            if text.len() > HEX_TEXT_MAX {
                bail!("the proof on stdin is longer than {HEX_TEXT_MAX} characters");
            }
            text
        }
    };
    let bytes = hex::decode(text.trim()).context("the proof is not hex")?;
    let proof: Equivocation = decode_exact(&bytes).context("not an equivocation proof")?;
    // Both backends must agree; k256 is the reference.
    let key = proof.check(&chain_id, &set, Backend::K256).context("the proof does not hold")?;
    if proof.check(&chain_id, &set, Backend::Libsecp256k1).ok() != Some(key) {
        bail!("the signature backends disagree on this proof");
    }
    Output::json(&serde_json::json!({
        "valid": true,
        "chain_id": chain_id,
        "height": proof.height(),
        "round": proof.round(),
        "validator": proof.offender(),
        "public_key": key.to_hex(),
        "address": key.address().to_string(),
        "kind": proof.kind(),
        "validator_set_hash": set.hash(),
    }))
}
