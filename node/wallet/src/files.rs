//! The wallet's files on disk: created once and never overwritten, except the partially-signed
//! transaction file that `wallet sign` updates in place (atomically, by rename).

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde::{Serialize, de::DeserializeOwned};

/// Largest wallet file read (key, transaction, HTLC, channel, voucher, proof, validator set):
/// the largest of them, a proof with a full certificate, is a few tens of KiB.
pub(crate) const WALLET_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Creates `path` with `bytes`, mode `mode`, only if it does not exist: a wallet file is never
/// overwritten (a key, or the terms of an HTLC someone paid into, would be lost for good).
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    // Created with its final mode and only if absent, in one step: no other user can open it in
    // between, and an existing file is never truncated.
    let mut file = match OpenOptions::new().write(true).create_new(true).mode(mode).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; refusing to overwrite it", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        // A truncated file would be worse than none: it could be mistaken for a complete one.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: written to a new file beside it, then renamed over.
/// A crash leaves either the old or the new content, never half of one.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", path.display()));
    }
    Ok(())
}

/// Writes `value` as pretty JSON into a new file (see [`write_new`]).
pub(crate) fn write_json_new<T: Serialize>(path: &Path, value: &T, mode: u32) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_new(path, text.as_bytes(), mode)
}

/// Reads a JSON wallet file of at most [`WALLET_FILE_BYTES_MAX`] bytes.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = read_text(path, what)?;
    serde_json::from_str(&text).with_context(|| format!("{what} {} is not valid", path.display()))
}

/// Reads a text file of at most [`WALLET_FILE_BYTES_MAX`] bytes.
pub(crate) fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    exit::read_text(path, WALLET_FILE_BYTES_MAX, what)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn new_files_are_never_overwritten_and_replace_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_new(&path, b"one", 0o600).unwrap();
        let err = write_new(&path, b"two", 0o600).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        replace(&path, b"three", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
