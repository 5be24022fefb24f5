//! `caasiope key …`: generate and inspect secp256k1 keys.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, bail};
use engine::SecretKey;
use exit::Output;

use crate::cli::KeyCommand;

/// Runs one `key` command.
pub(crate) fn run(command: KeyCommand) -> anyhow::Result<Output> {
    match command {
        KeyCommand::New { out } => new(&out),
        KeyCommand::Inspect { secret_hex } => inspect(&secret_hex),
    }
}

#[derive(Debug, serde::Serialize)]
struct KeyInfo {
    public_key: engine::PublicKey,
    address: engine::Address,
}

fn new(path: &Path) -> anyhow::Result<Output> {
    let key = create_key_file(path)?;
    Ok(Output::Line(key.public_key().address().to_text()))
}

/// Generates a key into a new file `path` (mode 0600, never overwriting) and returns it.
pub(crate) fn create_key_file(path: &Path) -> anyhow::Result<SecretKey> {
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

fn inspect(secret_hex: &str) -> anyhow::Result<Output> {
    let digits = secret_hex.trim();
    if digits.len() != 64 {
        bail!("--secret-hex: a secret key is 64 hex characters, got {}", digits.chars().count());
    }
    let key = SecretKey::from_hex(digits).context("--secret-hex")?;
    let public_key = key.public_key();
    Output::json(&KeyInfo { public_key, address: public_key.address() })
}

/// Reads a key file written by [`create_key_file`].
pub(crate) fn read_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    let text = exit::read_text(path, limits::KEY_FILE_BYTES_MAX, "key file")?;
    SecretKey::from_hex(text.trim()).with_context(|| format!("key file {}", path.display()))
}
