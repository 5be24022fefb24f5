//! Keys encrypted at rest.
//!
//! One file per key, `<wallet dir>/<name>.json`, mode 0600, created once and never overwritten:
//!
//! ```json
//! { "format": "caasiope-wallet-key/1", "name": "alice", "address": "qy…", "public_key": "04…",
//!   "kdf": { "algorithm": "argon2id", "version": 19, "m_cost_kib": 65536, "t_cost": 3,
//!            "p_cost": 1, "salt": "<16 random bytes, hex>" },
//!   "cipher": { "algorithm": "chacha20poly1305", "nonce": "<12 random bytes, hex>",
//!               "ciphertext": "<32-byte secret + 16-byte tag, hex>" } }
//! ```
//!
//! The passphrase goes through Argon2id (64 MiB, 3 passes: a guess costs an attacker the same
//! memory-hard work) into a 256-bit key that seals the secret with ChaCha20-Poly1305. The
//! associated data binds the ciphertext to the key's address, so the plaintext address in the
//! file (what `wallet list` and `wallet address` show without a passphrase) cannot be swapped for
//! another without decryption failing. A wrong passphrase fails the tag check: it is told apart
//! from a corrupt file only by the tag, so the error names both possibilities.

use std::{
    fs,
    os::unix::{ffi::OsStringExt, fs::DirBuilderExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::{
    ChaCha20Poly1305,
    aead::{Aead, KeyInit, Payload},
};
use engine::{Address, PublicKey, SecretKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::files;

/// Where a script puts the passphrase (a terminal prompt otherwise).
pub(crate) const PASSPHRASE_ENV: &str = "CAASIOPE_WALLET_PASSPHRASE";
/// The wallet directory when `--wallet-dir` is not given.
pub(crate) const DIR_ENV: &str = "CAASIOPE_WALLET_DIR";

const FORMAT: &str = "caasiope-wallet-key/1";
/// Binds a ciphertext to this use and to the key's address (see the module comment).
const AAD_PREFIX: &[u8] = b"caasiope-wallet-key/1\0";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 16;
const NAME_LEN_MAX: usize = 64;

/// Argon2id costs. Written into each file, so they can be raised later without breaking old keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KdfCost {
    /// Memory in KiB.
    pub(crate) m_cost_kib: u32,
    /// Passes.
    pub(crate) t_cost: u32,
    /// Lanes.
    pub(crate) p_cost: u32,
}

impl KdfCost {
    /// New keys: 64 MiB and 3 passes (above OWASP's 19 MiB × 2 minimum for Argon2id); about a
    /// quarter of a second here, paid once per command that uses a key.
    pub(crate) const STANDARD: Self = Self { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };
    /// Tests: the same algorithm, cheap.
    #[cfg(test)]
    pub(crate) const TEST: Self = Self { m_cost_kib: 64, t_cost: 1, p_cost: 1 };
    /// Most memory a key file may ask for: a crafted file must not make us allocate gigabytes.
    const M_COST_KIB_MAX: u32 = 1024 * 1024;
    const T_COST_MAX: u32 = 64;
    const P_COST_MAX: u32 = 16;

    fn argon2(self) -> anyhow::Result<Argon2<'static>> {
        if self.m_cost_kib > Self::M_COST_KIB_MAX
            || self.t_cost > Self::T_COST_MAX
            || self.p_cost > Self::P_COST_MAX
        {
            bail!(
                "key derivation costs {}/{}/{} are over the limits {}/{}/{} (KiB/passes/lanes)",
                self.m_cost_kib,
                self.t_cost,
                self.p_cost,
                Self::M_COST_KIB_MAX,
                Self::T_COST_MAX,
                Self::P_COST_MAX
            );
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| anyhow::anyhow!("invalid key derivation costs: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// A passphrase, wiped when dropped.
pub(crate) struct Passphrase(Vec<u8>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

impl Passphrase {
    /// A passphrase from its bytes (refused if empty).
    pub(crate) fn new(bytes: Vec<u8>) -> anyhow::Result<Self> {
        let p = Self(bytes);
        if p.0.is_empty() {
            bail!("an empty passphrase is refused");
        }
        Ok(p)
    }

    /// From `$CAASIOPE_WALLET_PASSPHRASE` if set, else asked on the terminal without echo (twice
    /// when `confirm`, for a new key: a typo there would lock the key away for good).
    pub(crate) fn obtain(what: &str, confirm: bool) -> anyhow::Result<Self> {
        if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
            return Self::new(value.into_vec()).with_context(|| format!("${PASSPHRASE_ENV}"));
        }
        let first = Self::new(super::tty::read_hidden(&format!("passphrase for {what}: "))?)?;
        if confirm {
            let again = Self(super::tty::read_hidden("repeat the passphrase: ")?);
            if again.0 != first.0 {
                bail!("the two passphrases differ");
            }
        }
        Ok(first)
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// What a key file says in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct KeyInfo {
    /// The key's name (its file name).
    pub(crate) name: String,
    /// Its ECDSA address.
    pub(crate) address: Address,
    /// Its public key.
    pub(crate) public_key: PublicKey,
    /// The file.
    pub(crate) file: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    name: String,
    address: Address,
    public_key: String,
    kdf: KdfSection,
    cipher: CipherSection,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfSection {
    algorithm: String,
    version: u32,
    #[serde(flatten)]
    cost: KdfCost,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherSection {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

/// A directory of encrypted keys.
#[derive(Debug, Clone)]
pub(crate) struct Keystore {
    dir: PathBuf,
    cost: KdfCost,
}

impl Keystore {
    /// The keystore in `dir`, else `$CAASIOPE_WALLET_DIR`, else `~/.caasiope/wallet`.
    pub(crate) fn open(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => dir,
            None => match std::env::var_os(DIR_ENV) {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => {
                    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
                        "no wallet directory: give --wallet-dir, or set $CAASIOPE_WALLET_DIR or $HOME",
                    )?;
                    Path::new(&home).join(".caasiope").join("wallet")
                }
            },
        };
        Ok(Self::at(dir, KdfCost::STANDARD))
    }

    /// The keystore in `dir`, creating new keys with `cost`.
    pub(crate) const fn at(dir: PathBuf, cost: KdfCost) -> Self {
        Self { dir, cost }
    }

    fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Encrypts `key` under `passphrase` into a new file `name`; never overwrites one.
    pub(crate) fn create(
        &self,
        name: &str,
        key: &SecretKey,
        passphrase: &Passphrase,
    ) -> anyhow::Result<KeyInfo> {
        let path = self.path(name)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create the wallet directory {}", self.dir.display()))?;
        if path.exists() {
            bail!("a key named {name:?} already exists in {}; refusing to overwrite it", self.dir.display());
        }
        let public_key = key.public_key();
        let address = public_key.address();
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut secret = key.to_bytes();
        let sealed = seal(self.cost, passphrase, &salt, &nonce, &address, &secret);
        secret.fill(0);
        let file = KeyFile {
            format: FORMAT.into(),
            name: name.into(),
            address,
            public_key: public_key.to_hex(),
            kdf: KdfSection {
                algorithm: "argon2id".into(),
                version: 0x13,
                cost: self.cost,
                salt: hex::encode(salt),
            },
            cipher: CipherSection {
                algorithm: "chacha20poly1305".into(),
                nonce: hex::encode(nonce),
                ciphertext: hex::encode(sealed?),
            },
        };
        files::write_json_new(&path, &file, 0o600)?;
        Ok(KeyInfo { name: name.into(), address, public_key, file: path })
    }

    /// What key `name` says in the clear (no passphrase needed).
    pub(crate) fn info(&self, name: &str) -> anyhow::Result<KeyInfo> {
        let path = self.path(name)?;
        let file = self.read(name, &path)?;
        let public_key =
            PublicKey::from_hex(&file.public_key).with_context(|| format!("key file {}", path.display()))?;
        if public_key.address() != file.address {
            bail!("key file {} is corrupt: its public key and address disagree", path.display());
        }
        Ok(KeyInfo { name: name.into(), address: file.address, public_key, file: path })
    }

    /// Decrypts key `name`.
    pub(crate) fn load(&self, name: &str, passphrase: &Passphrase) -> anyhow::Result<SecretKey> {
        let path = self.path(name)?;
        let file = self.read(name, &path)?;
        let bad = |what: &str| anyhow::anyhow!("key file {} is corrupt: {what}", path.display());
        if file.kdf.algorithm != "argon2id"
            || file.kdf.version != 0x13
            || file.cipher.algorithm != "chacha20poly1305"
        {
            bail!("key file {} uses an unknown algorithm", path.display());
        }
        let salt = hex::decode(&file.kdf.salt).map_err(|_| bad("salt"))?;
        if !(8..=64).contains(&salt.len()) {
            return Err(bad("salt length"));
        }
        let nonce: [u8; NONCE_LEN] = hex::decode(&file.cipher.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("nonce"))?;
        let ciphertext = hex::decode(&file.cipher.ciphertext).map_err(|_| bad("ciphertext"))?;
        if ciphertext.len() != SECRET_LEN + TAG_LEN {
            return Err(bad("ciphertext length"));
        }
        let mut derived = derive(file.kdf.cost, passphrase, &salt)?;
        let cipher = ChaCha20Poly1305::new((&derived).into());
        derived.fill(0);
        let aad = aad(&file.address);
        let opened = cipher.decrypt((&nonce).into(), Payload { msg: &ciphertext, aad: &aad });
        let Ok(mut secret) = opened else {
            bail!("wrong passphrase for key {name:?} (or its file {} was altered)", path.display());
        };
        let bytes: Option<[u8; SECRET_LEN]> = secret.as_slice().try_into().ok();
        secret.fill(0);
        let mut bytes = bytes.ok_or_else(|| bad("secret length"))?;
        let key = SecretKey::from_bytes(&bytes);
        bytes.fill(0);
        let key = key.map_err(|_| bad("not a secp256k1 secret"))?;
        if key.public_key().address() != file.address {
            return Err(bad("the secret does not match the address"));
        }
        Ok(key)
    }

    /// Every key, sorted by name. A missing directory holds no key.
    pub(crate) fn list(&self) -> anyhow::Result<Vec<KeyInfo>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", self.dir.display()))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            // Files the wallet did not write (or temporaries) are skipped, not errors.
            if check_name(name).is_ok() {
                keys.push(self.info(name)?);
            }
        }
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    fn read(&self, name: &str, path: &Path) -> anyhow::Result<KeyFile> {
        if !path.exists() {
            bail!("no key named {name:?} in {}", self.dir.display());
        }
        let file: KeyFile = files::read_json(path, "key file")?;
        if file.format != FORMAT {
            bail!("{} is not a wallet key file ({:?})", path.display(), file.format);
        }
        Ok(file)
    }
}

/// Key names are file names: letters, digits, `.`, `_`, `-`, not starting with a dot.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && !name.starts_with('.')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if !ok {
        bail!(
            "key name {name:?}: 1 to {NAME_LEN_MAX} characters of A-Z a-z 0-9 . _ -, not starting with a dot"
        );
    }
    Ok(())
}

fn aad(address: &Address) -> Vec<u8> {
    [AAD_PREFIX, address.raw().as_slice()].concat()
}

fn derive(cost: KdfCost, passphrase: &Passphrase, salt: &[u8]) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    cost.argon2()?
        .hash_password_into(&passphrase.0, salt, &mut out)
        .map_err(|e| anyhow::anyhow!("key derivation failed: {e}"))?;
    Ok(out)
}

fn seal(
    cost: KdfCost,
    passphrase: &Passphrase,
    salt: &[u8],
    nonce: &[u8; NONCE_LEN],
    address: &Address,
    secret: &[u8; SECRET_LEN],
) -> anyhow::Result<Vec<u8>> {
    let mut derived = derive(cost, passphrase, salt)?;
    let cipher = ChaCha20Poly1305::new((&derived).into());
    derived.fill(0);
    cipher
        .encrypt(nonce.into(), Payload { msg: secret, aad: &aad(address) })
        .map_err(|_| anyhow::anyhow!("encryption failed"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn round_trip_wrong_passphrase_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::at(dir.path().join("w"), KdfCost::TEST);
        let key = SecretKey::from_bytes(&[7; 32]).unwrap();
        let info = store.create("alice", &key, &pass("correct horse")).unwrap();
        assert_eq!(info.address, key.public_key().address());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&info.file), 0o600);
        assert_eq!(mode(&dir.path().join("w")), 0o700);
        // The secret is not in the file in any form.
        let text = fs::read_to_string(&info.file).unwrap();
        assert!(!text.contains(&hex::encode(key.to_bytes())));

        assert_eq!(store.load("alice", &pass("correct horse")).unwrap().to_bytes(), key.to_bytes());
        let err = store.load("alice", &pass("wrong horse")).unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");

        let err = store.create("alice", &SecretKey::generate(), &pass("x")).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(store.load("alice", &pass("correct horse")).unwrap().to_bytes(), key.to_bytes());

        store.create("bob", &SecretKey::from_bytes(&[8; 32]).unwrap(), &pass("p")).unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(
            store.info("bob").unwrap().address,
            SecretKey::from_bytes(&[8; 32]).unwrap().public_key().address()
        );
        assert!(store.load("carol", &pass("p")).unwrap_err().to_string().contains("no key named"));
        assert!(store.create("../evil", &key, &pass("p")).is_err());
        assert!(Passphrase::new(Vec::new()).is_err());
    }

    #[test]
    fn a_swapped_address_or_tampered_ciphertext_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::at(dir.path().to_path_buf(), KdfCost::TEST);
        let info = store.create("k", &SecretKey::from_bytes(&[7; 32]).unwrap(), &pass("p")).unwrap();
        let other = SecretKey::from_bytes(&[9; 32]).unwrap().public_key();
        let text = fs::read_to_string(&info.file).unwrap();
        let swapped = text
            .replace(&info.address.to_text(), &other.address().to_text())
            .replace(&info.public_key.to_hex(), &other.to_hex());
        fs::write(&info.file, swapped).unwrap();
        assert!(store.load("k", &pass("p")).is_err(), "another address under the same ciphertext");
        fs::write(&info.file, &text).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ct = file["cipher"]["ciphertext"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if ct.starts_with('0') { "1" } else { "0" }, &ct[1..]);
        file["cipher"]["ciphertext"] = flipped.into();
        fs::write(&info.file, file.to_string()).unwrap();
        assert!(store.load("k", &pass("p")).is_err());
        // A file asking for absurd memory is refused before any allocation.
        file["cipher"]["ciphertext"] = ct.into();
        file["kdf"]["m_cost_kib"] = 4_000_000_000u32.into();
        fs::write(&info.file, file.to_string()).unwrap();
        assert!(store.load("k", &pass("p")).unwrap_err().to_string().contains("over the limits"));
    }
}
