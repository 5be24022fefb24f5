//! secp256k1 keys and ECDSA signatures, with two interchangeable verification backends.
//!
//! Signing is RFC 6979 (deterministic nonces) with low-S normalization, done by `k256`.
//! Verification is by `k256` (pure Rust, the reference) or by libsecp256k1 through the
//! `secp256k1` crate (about twice as fast here); both refuse high-S signatures, non-`0x04`
//! public keys and scalars out of range, so their verdicts agree on every input.

use std::{fmt, str::FromStr, sync::OnceLock};

use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};

use crate::address::Address;

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    /// Not a valid secp256k1 secret scalar (zero or ≥ the group order).
    #[error("invalid secret key")]
    InvalidSecret,
    /// Not a 65-byte uncompressed SEC1 point on the curve.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// Hex text of the wrong length or alphabet.
    #[error("invalid hex (a secret key is 64 hex characters, a public key 130)")]
    Hex(#[from] hex::FromHexError),
}

/// Which library verifies signatures. Both give the same verdict on every input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// RustCrypto's `k256`: the reference.
    #[default]
    K256,
    /// libsecp256k1 via the `secp256k1` crate.
    Libsecp256k1,
}

impl Backend {
    /// The backend's name as used in configs and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::K256 => "k256",
            Self::Libsecp256k1 => "libsecp256k1",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "k256" => Ok(Self::K256),
            "libsecp256k1" => Ok(Self::Libsecp256k1),
            other => Err(format!("unknown signature backend {other:?} (k256 or libsecp256k1)")),
        }
    }
}

/// A secret key. Its bytes are wiped on drop by `k256`.
#[derive(Clone)]
pub struct SecretKey(k256::ecdsa::SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_key().address())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(k256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// A key from its 32-byte big-endian scalar.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        k256::ecdsa::SigningKey::from_bytes(bytes.into()).map(Self).map_err(|_| KeyError::InvalidSecret)
    }

    /// A key from 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)?;
        Self::from_bytes(&bytes)
    }

    /// The 32-byte big-endian scalar.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    /// The 65-byte uncompressed public key.
    pub fn public_key(&self) -> PublicKey {
        let point = self.0.verifying_key().to_encoded_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(point.as_bytes());
        PublicKey(out)
    }

    /// Signs a 32-byte prehash (a transaction id, ledger hash or voucher hash) with an RFC 6979
    /// nonce; the result is always low-S.
    pub fn sign_prehash(&self, prehash: &[u8; 32]) -> Signature {
        let sig: k256::ecdsa::Signature = match self.0.sign_prehash(prehash) {
            Ok(sig) => sig,
            // k256 fails only for a zero or oversized prehash scalar reduction, which a 32-byte
            // input cannot produce; a signature that will not verify is the safe answer anyway.
            Err(_) => return Signature([0; 64]),
        };
        let sig = sig.normalize_s().unwrap_or(sig);
        Signature(sig.to_bytes().into())
    }
}

/// A 65-byte uncompressed SEC1 public key (`0x04 ‖ x ‖ y`), as it travels on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 65]);

impl PublicKey {
    /// The ECDSA address of this key.
    pub fn address(&self) -> Address {
        Address::from_public_key(&self.0)
    }

    /// Checks the key is a point on the curve (both backends agree on this).
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.0[0] != 0x04 {
            return Err(KeyError::InvalidPublicKey("not an uncompressed (0x04) key"));
        }
        k256::ecdsa::VerifyingKey::from_sec1_bytes(&self.0)
            .map(|_| ())
            .map_err(|_| KeyError::InvalidPublicKey("not a point on secp256k1"))
    }

    /// Parses 130 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; 65];
        hex::decode_to_slice(text.trim(), &mut bytes)?;
        Ok(Self(bytes))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let key = Self::from_hex(&text).map_err(serde::de::Error::custom)?;
        key.validate().map_err(serde::de::Error::custom)?;
        Ok(key)
    }
}

/// A 64-byte compact ECDSA signature `r ‖ s` (big-endian scalars).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

/// Verifies `signature` by `public_key` over the 32-byte `prehash`.
///
/// `false` for anything but a valid low-S signature by a valid uncompressed key.
pub fn verify(backend: Backend, public_key: &PublicKey, prehash: &[u8; 32], signature: &Signature) -> bool {
    // Both libraries parse more than the protocol admits (libsecp256k1 takes hybrid 0x06/0x07
    // keys); the protocol's own gate keeps their verdicts identical.
    if public_key.0[0] != 0x04 {
        return false;
    }
    match backend {
        Backend::K256 => verify_k256(public_key, prehash, signature),
        Backend::Libsecp256k1 => verify_libsecp(public_key, prehash, signature),
    }
}

fn verify_k256(public_key: &PublicKey, prehash: &[u8; 32], signature: &Signature) -> bool {
    let Ok(key) = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key.0) else {
        return false;
    };
    let Ok(sig) = k256::ecdsa::Signature::from_slice(&signature.0) else {
        return false;
    };
    // Low-S is required: a high-S twin of a valid signature would give one transaction two
    // encodings.
    if sig.normalize_s().is_some() {
        return false;
    }
    key.verify_prehash(prehash, &sig).is_ok()
}

fn libsecp() -> &'static secp256k1::Secp256k1<secp256k1::VerifyOnly> {
    static CTX: OnceLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> = OnceLock::new();
    CTX.get_or_init(secp256k1::Secp256k1::verification_only)
}

fn verify_libsecp(public_key: &PublicKey, prehash: &[u8; 32], signature: &Signature) -> bool {
    let Ok(key) = secp256k1::PublicKey::from_slice(&public_key.0) else {
        return false;
    };
    let Ok(sig) = secp256k1::ecdsa::Signature::from_compact(&signature.0) else {
        return false;
    };
    // libsecp256k1's verify refuses high-S itself; it is stated here so the rule is visible.
    let mut normalized = sig;
    normalized.normalize_s();
    if normalized != sig {
        return false;
    }
    let msg = secp256k1::Message::from_digest(*prehash);
    libsecp().verify_ecdsa(&msg, &sig, &key).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKENDS: [Backend; 2] = [Backend::K256, Backend::Libsecp256k1];

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes(&[n; 32]).unwrap()
    }

    #[test]
    fn vector_key_gives_vector_address() {
        let sk =
            SecretKey::from_hex("eebee81712a185a1fb52f30ba545e5708124d165b1ee2e27c3a0559eb28298b9").unwrap();
        assert_eq!(
            sk.public_key().to_hex(),
            "0456a26df82d7c9a4a0dc881eae4f3bd14665c64c128997808675e868af7b53a00b63dfe5bc756582505a56470e5ad800ec2685e6f496b995812fc2d52aefa56dd"
        );
        assert_eq!(sk.public_key().address().to_text(), "qyl68tygnjx6qqwrsmynmejmc9wxlw7almv3397j");
    }

    #[test]
    fn sign_then_verify_on_both_backends() {
        let sk = key(7);
        let pk = sk.public_key();
        let msg = [42u8; 32];
        let sig = sk.sign_prehash(&msg);
        // RFC 6979: the same key and message always give the same signature.
        assert_eq!(sig, sk.sign_prehash(&msg));
        for b in BACKENDS {
            assert!(verify(b, &pk, &msg, &sig), "{b}");
            assert!(!verify(b, &pk, &[43u8; 32], &sig), "{b}");
            assert!(!verify(b, &key(8).public_key(), &msg, &sig), "{b}");
        }
    }

    #[test]
    fn high_s_is_refused_by_both() {
        let sk = key(9);
        let pk = sk.public_key();
        let msg = [1u8; 32];
        let sig = sk.sign_prehash(&msg);
        let parsed = k256::ecdsa::Signature::from_slice(&sig.0).unwrap();
        let (r, s) = parsed.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let high = Signature(high.to_bytes().into());
        for b in BACKENDS {
            assert!(!verify(b, &pk, &msg, &high), "{b} accepted high-S");
        }
    }

    #[test]
    fn hybrid_and_invalid_keys_are_refused_by_both() {
        let sk = key(3);
        let msg = [5u8; 32];
        let sig = sk.sign_prehash(&msg);
        let mut hybrid = sk.public_key();
        // A hybrid key carries the parity of y in its prefix; libsecp256k1 parses these.
        hybrid.0[0] = 0x06 | (hybrid.0[64] & 1);
        let mut off_curve = sk.public_key();
        off_curve.0[64] ^= 1;
        for b in BACKENDS {
            assert!(!verify(b, &hybrid, &msg, &sig), "{b}");
            assert!(!verify(b, &off_curve, &msg, &sig), "{b}");
            assert!(!verify(b, &PublicKey([0; 65]), &msg, &sig), "{b}");
            assert!(!verify(b, &sk.public_key(), &msg, &Signature([0; 64])), "{b}");
            assert!(!verify(b, &sk.public_key(), &msg, &Signature([0xff; 64])), "{b}");
        }
        assert!(hybrid.validate().is_err());
        assert!(off_curve.validate().is_err());
        assert!(sk.public_key().validate().is_ok());
    }

    #[test]
    fn secret_key_edges() {
        assert_eq!(SecretKey::from_bytes(&[0; 32]).err(), Some(KeyError::InvalidSecret));
        assert_eq!(SecretKey::from_bytes(&[0xff; 32]).err(), Some(KeyError::InvalidSecret));
        assert!(SecretKey::from_hex("zz").is_err());
        let sk = SecretKey::generate();
        assert_eq!(SecretKey::from_bytes(&sk.to_bytes()).unwrap().public_key(), sk.public_key());
    }
}
