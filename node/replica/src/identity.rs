//! A node's identities on disk: its TLS certificate (`caasiope cert new`), its validator key
//! (`caasiope key new`, `caasiope key inspect`) and both at once (`caasiope init`). Key files
//! are created 0600 and never overwritten.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, bail};
use engine::SecretKey;
use exit::Output;
use net::{
    NodeCert,
    identity::{CERT_FILE, KEY_FILE},
};

/// The validator key file `init` writes beside the TLS identity.
pub const VALIDATOR_KEY_FILE: &str = "validator.key";

/// Generates the certificate and key into `dir`; prints the identity.
pub fn cert_new(dir: &Path, days: u32) -> anyhow::Result<Output> {
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
pub fn init(dir: &Path, days: u32) -> anyhow::Result<Output> {
    for name in [CERT_FILE, KEY_FILE, VALIDATOR_KEY_FILE] {
        if dir.join(name).exists() {
            bail!("{} already exists; refusing to overwrite it", dir.join(name).display());
        }
    }
    let node = NodeCert::generate(days)?;
    node.save(dir)?;
    let key = create_key_file(&dir.join(VALIDATOR_KEY_FILE))
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

#[derive(Debug, serde::Serialize)]
struct KeyInfo {
    public_key: engine::PublicKey,
    address: engine::Address,
}

pub fn key_new(path: &Path) -> anyhow::Result<Output> {
    let key = create_key_file(path)?;
    Ok(Output::Line(key.public_key().address().to_text()))
}

/// Generates a key into a new file `path` (mode 0600, never overwriting) and returns it.
pub fn create_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    let key = SecretKey::generate();
    // The file is created 0600 and only if absent, in one step: there is no moment at which
    // another user could open it, and an existing key is never overwritten.
    let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; refusing to overwrite it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    // Hex on the stack rather than in a String, so no heap copy of the secret outlives the call.
    let mut text = [0u8; 65];
    let encoded = hex::encode_to_slice(key.to_bytes(), &mut text[..64]);
    text[64] = b'\n';
    let written =
        encoded.map_err(io::Error::other).and_then(|()| file.write_all(&text)).and_then(|()| file.sync_all());
    text.fill(0);
    if let Err(e) = written {
        // A truncated key file would be worse than none: it could be mistaken for a key.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(key)
}

pub fn key_inspect(secret_hex: &str) -> anyhow::Result<Output> {
    let digits = secret_hex.trim();
    if digits.len() != 64 {
        bail!("--secret-hex: a secret key is 64 hex characters, got {}", digits.chars().count());
    }
    let key = SecretKey::from_hex(digits).context("--secret-hex")?;
    let public_key = key.public_key();
    Output::json(&KeyInfo { public_key, address: public_key.address() })
}

/// Reads a key file written by [`create_key_file`] (`what` names it in errors: "key file",
/// "validator key").
pub fn read_key_file(path: &Path, what: &str) -> anyhow::Result<SecretKey> {
    let text = exit::read_text(path, limits::KEY_FILE_BYTES_MAX, what)?;
    SecretKey::from_hex(&text).with_context(|| format!("{what} {}", path.display()))
}
