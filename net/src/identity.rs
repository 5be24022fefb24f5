//! Node identity: a self-signed X.509 certificate whose SubjectPublicKeyInfo's SHA-256 names
//! the node.
//!
//! The certificate carries no meaning beyond its key: no CA signs it and its names are not
//! checked. Peers accept a node whose identity is in their configured set (see [`crate::tls`]);
//! rotating a certificate is restarting with a new one whose identity the peers list.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    str::FromStr,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime, pem::PemObject};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::NetError;

/// The name every node certificate carries. Peers are told apart by identity, not by name.
pub const CERT_NAME: &str = "caasiope.peer";
/// Certificate file in a node's directory (PEM).
pub const CERT_FILE: &str = "node.crt";
/// Private key file in a node's directory (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "node.key";
/// Largest certificate or key file read.
const PEM_BYTES_MAX: u64 = 64 * 1024;
/// Longest validity `NodeCert::generate` accepts, days (10 years).
pub const VALID_DAYS_MAX: u32 = 3_650;

/// A node's identity: SHA-256 of its certificate's DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(pub [u8; 32]);

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

impl FromStr for Identity {
    type Err = NetError;

    /// 64 hex characters.
    fn from_str(s: &str) -> Result<Self, NetError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| {
            NetError::Identity(format!("an identity is 64 hex characters, got {:?}", s.trim()))
        })?;
        Ok(Self(out))
    }
}

/// What a peer's certificate says, once parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The identity it names.
    pub identity: Identity,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Parses a DER certificate (bounded: at most 64 KiB, the largest identity file read).
    pub fn parse(der: &[u8]) -> Result<Self, NetError> {
        if der.len() as u64 > PEM_BYTES_MAX {
            return Err(NetError::Certificate(format!(
                "{} bytes, above the {PEM_BYTES_MAX}-byte limit",
                der.len()
            )));
        }
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| NetError::Certificate(format!("not an X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(NetError::Certificate("trailing bytes after the certificate".into()));
        }
        let spki = cert.tbs_certificate.subject_pki.raw;
        let validity = &cert.tbs_certificate.validity;
        Ok(Self {
            identity: Identity(Sha256::digest(spki).into()),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: UnixTime) -> bool {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.not_before <= now && now <= self.not_after
    }
}

/// A node's certificate and private key.
pub struct NodeCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    info: CertInfo,
    /// The two files' texts (PEM).
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert").field("info", &self.info).finish_non_exhaustive()
    }
}

impl NodeCert {
    /// A new ECDSA P-256 key and a self-signed certificate valid from an hour ago (clock skew
    /// between peers) for `valid_days` days (1 to [`VALID_DAYS_MAX`]).
    pub fn generate(valid_days: u32) -> Result<Self, NetError> {
        if !(1..=VALID_DAYS_MAX).contains(&valid_days) {
            return Err(NetError::Certificate(format!(
                "validity of {valid_days} days; 1 to {VALID_DAYS_MAX} allowed"
            )));
        }
        let now = OffsetDateTime::now_utc();
        Self::generate_valid(now - Duration::hours(1), now + Duration::days(i64::from(valid_days)))
    }

    /// A new key and a certificate valid from `not_before` to `not_after` (tests make expired
    /// ones with this).
    pub fn generate_valid(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Self, NetError> {
        let key = rcgen::KeyPair::generate().map_err(|e| NetError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
            .map_err(|e| NetError::Certificate(e.to_string()))?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.distinguished_name.push(rcgen::DnType::CommonName, CERT_NAME);
        let cert = params.self_signed(&key).map_err(|e| NetError::Certificate(e.to_string()))?;
        let info = CertInfo::parse(cert.der())?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            info,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// This node's identity.
    pub const fn identity(&self) -> Identity {
        self.info.identity
    }

    /// The parsed certificate.
    pub const fn info(&self) -> CertInfo {
        self.info
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// The private key, for a rustls configuration.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// Writes [`CERT_FILE`] and [`KEY_FILE`] into `dir` (created if missing). Refuses to
    /// overwrite either; the key file is created 0600.
    pub fn save(&self, dir: &Path) -> Result<(), NetError> {
        fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
        let (cert_pem, key_pem) = (&self.cert_pem, &self.key_pem);
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(NetError::Exists(path.clone()));
            }
        }
        write_new(&key_path, key_pem.as_bytes(), 0o600)?;
        if let Err(e) = write_new(&cert_path, cert_pem.as_bytes(), 0o644) {
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        Ok(())
    }

    /// Reads a node certificate and key saved by [`NodeCert::save`], checking that they match.
    pub fn load(dir: &Path) -> Result<Self, NetError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let (cert_pem, key_pem) = (read_bounded(&cert_path)?, read_bounded(&key_path)?);
        let pem_error = |path: &Path, e| NetError::Certificate(format!("{}: {e}", path.display()));
        let cert =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| pem_error(&cert_path, e))?;
        let key =
            PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pem_error(&key_path, e))?;
        let info = CertInfo::parse(&cert)?;
        let node = Self { cert, key, info, cert_pem, key_pem };
        let pair = rcgen::KeyPair::try_from(node.key.secret_pkcs8_der())
            .map_err(|e| NetError::Certificate(format!("{}: {e}", dir.join(KEY_FILE).display())))?;
        let spki_hash: [u8; 32] = Sha256::digest(pair.public_key_der()).into();
        if spki_hash != node.identity().0 {
            return Err(NetError::Certificate(format!("{} is not the key of {}", KEY_FILE, CERT_FILE)));
        }
        Ok(node)
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NetError> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            NetError::Exists(path.to_owned())
        } else {
            NetError::io(path, e)
        }
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| NetError::io(path, e))
}

fn read_bounded(path: &Path) -> Result<String, NetError> {
    let file = fs::File::open(path).map_err(|e| NetError::io(path, e))?;
    let mut text = String::new();
    file.take(PEM_BYTES_MAX + 1).read_to_string(&mut text).map_err(|e| NetError::io(path, e))?;
    if text.len() as u64 > PEM_BYTES_MAX {
        return Err(NetError::Certificate(format!(
            "{} is larger than {PEM_BYTES_MAX} bytes",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_spki_hash_and_survives_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeCert::generate(30).unwrap();
        node.save(dir.path()).unwrap();
        let loaded = NodeCert::load(dir.path()).unwrap();
        assert_eq!(loaded.identity(), node.identity());
        assert_eq!(loaded.identity().to_string().parse::<Identity>().unwrap(), node.identity());
        assert!(matches!(node.save(dir.path()), Err(NetError::Exists(_))), "no overwrite");
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // Another key under the same certificate is refused.
        let other = tempfile::tempdir().unwrap();
        NodeCert::generate(30).unwrap().save(other.path()).unwrap();
        fs::copy(other.path().join(KEY_FILE), dir.path().join("other.key")).unwrap();
        fs::rename(dir.path().join("other.key"), dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(NodeCert::load(dir.path()), Err(NetError::Certificate(_))));
        assert!(NodeCert::generate(0).is_err() && NodeCert::generate(VALID_DAYS_MAX + 1).is_err());
        assert!(CertInfo::parse(b"garbage").is_err());
        assert!("00".parse::<Identity>().is_err());
    }
}
