//! `caasiope cert new` and `caasiope init`: a node's TLS identity and validator key.

use std::path::Path;

use anyhow::{Context, bail};
use net::{
    NodeCert,
    identity::{CERT_FILE, KEY_FILE},
};

use exit::Output;

/// The validator key file `init` writes beside the TLS identity.
pub(crate) const VALIDATOR_KEY_FILE: &str = "validator.key";

/// Generates the certificate and key into `dir`; prints the identity.
pub(crate) fn new(dir: &Path, days: u32) -> anyhow::Result<Output> {
    let node = NodeCert::generate(days)?;
    node.save(dir)?;
    Ok(Output::Line(node.identity().to_string()))
}

#[derive(Debug, serde::Serialize)]
struct InitReport {
    dir: String,
    /// The TLS identity, to list in the peers' configurations.
    identity: String,
    /// Certificate validity, Unix seconds.
    not_after: i64,
    validator_public_key: engine::PublicKey,
    validator_address: engine::Address,
}

/// Sets up a node directory: TLS identity and validator key. Writes nothing if any of the
/// three files exists.
pub(crate) fn init(dir: &Path, days: u32) -> anyhow::Result<Output> {
    for name in [CERT_FILE, KEY_FILE, VALIDATOR_KEY_FILE] {
        if dir.join(name).exists() {
            bail!("{} already exists; refusing to overwrite it", dir.join(name).display());
        }
    }
    let node = NodeCert::generate(days)?;
    node.save(dir)?;
    let key = crate::key::create_key_file(&dir.join(VALIDATOR_KEY_FILE))
        .with_context(|| format!("the TLS identity is in {}, the validator key failed", dir.display()))?;
    let public_key = key.public_key();
    Output::json(&InitReport {
        dir: dir.display().to_string(),
        identity: node.identity().to_string(),
        not_after: node.info().not_after,
        validator_public_key: public_key,
        validator_address: public_key.address(),
    })
}
