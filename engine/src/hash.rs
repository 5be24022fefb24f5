//! Hash functions and the domain separation of every BLAKE3 use.
//!
//! Keccak-256 (original padding, as in Ethereum) hashes addresses and declarations so addresses
//! stay identical to the original Caasiope network's. SHA-256 serves HashLock declarations.
//! BLAKE3 hashes everything else, always keyed by a key derived from a distinct context string,
//! so no hash of one kind can be replayed as a hash of another.

use std::{fmt, sync::LazyLock};

use sha2::Digest as _;

/// A 32-byte digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash: the empty Merkle tree and the genesis ledger's parent.
    pub const ZERO: Self = Self([0; 32]);

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out)?;
        Ok(Self(out))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Keccak-256 with the original (pre-FIPS) padding.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    sha3::Keccak256::digest(data).into()
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// Every distinct use of BLAKE3. Each has its own context string and so its own derived key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Domain {
    /// Transaction id: chain id, then the canonical transaction bytes without signatures.
    TxId = 0,
    /// Ledger hash: chain id, then the canonical header bytes.
    Ledger,
    /// Leaf of the transaction Merkle tree (a transaction id).
    TxLeaf,
    /// Inner node of the transaction Merkle tree.
    TxNode,
    /// Transaction root: the leaf count, then the tree's top node.
    TxRoot,
    /// Leaf of the state trie (a canonical account).
    StateLeaf,
    /// Inner (branch) node of the state trie.
    StateNode,
    /// The validator set committed to by a ledger header.
    ValidatorSet,
    /// A payment-channel voucher signed by the payer: chain id, channel address, cumulative amount.
    Voucher,
    /// A consensus vote: chain id, then the vote's canonical bytes.
    Vote,
}

impl Domain {
    const ALL: [Self; 10] = [
        Self::TxId,
        Self::Ledger,
        Self::TxLeaf,
        Self::TxNode,
        Self::TxRoot,
        Self::StateLeaf,
        Self::StateNode,
        Self::ValidatorSet,
        Self::Voucher,
        Self::Vote,
    ];

    /// The BLAKE3 `derive_key` context string. Changing one changes the protocol.
    pub const fn context(self) -> &'static str {
        match self {
            Self::TxId => "caasiope 2026-11 transaction id",
            Self::Ledger => "caasiope 2026-11 ledger hash",
            Self::TxLeaf => "caasiope 2026-11 transaction merkle leaf",
            Self::TxNode => "caasiope 2026-11 transaction merkle node",
            Self::TxRoot => "caasiope 2026-11 transaction merkle root",
            Self::StateLeaf => "caasiope 2026-11 state trie leaf",
            Self::StateNode => "caasiope 2026-11 state trie node",
            Self::ValidatorSet => "caasiope 2026-11 validator set",
            Self::Voucher => "caasiope 2026-11 payment channel voucher",
            Self::Vote => "caasiope 2026-11 consensus vote",
        }
    }
}

// Deriving a key costs a few compressions; do it once per domain, not per hash.
static KEYS: LazyLock<[[u8; 32]; Domain::ALL.len()]> =
    LazyLock::new(|| Domain::ALL.map(|d| blake3::derive_key(d.context(), &[])));

/// A BLAKE3 hasher keyed for `domain`.
pub fn hasher(domain: Domain) -> blake3::Hasher {
    blake3::Hasher::new_keyed(&KEYS[domain as usize])
}

/// A BLAKE3 hasher keyed for `domain` that has already absorbed the chain id (length-prefixed),
/// for every hash that a signature covers: what is signed on one network is void on another.
pub fn chain_hasher(domain: Domain, chain_id: &str) -> blake3::Hasher {
    let mut h = hasher(domain);
    // Chain ids are at most `limits::CHAIN_ID_LEN_MAX` bytes, checked where they are parsed.
    h.update(&[chain_id.len() as u8]);
    h.update(chain_id.as_bytes());
    h
}

/// Keyed BLAKE3 of one contiguous buffer: the cheapest form, with no streaming hasher to set up.
pub fn keyed(domain: Domain, bytes: &[u8]) -> Hash {
    Hash(*blake3::keyed_hash(&KEYS[domain as usize], bytes).as_bytes())
}

/// Keyed BLAKE3 of the concatenation of `parts`.
pub fn hash_parts(domain: Domain, parts: &[&[u8]]) -> Hash {
    if let [one] = parts {
        return keyed(domain, one);
    }
    let mut h = hasher(domain);
    for p in parts {
        h.update(p);
    }
    Hash(*h.finalize().as_bytes())
}

/// Finishes a hasher into a [`struct@Hash`].
pub fn finish(h: &blake3::Hasher) -> Hash {
    Hash(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_is_the_original_padding() {
        // Keccak-256 of the empty string (Ethereum), not SHA3-256's a7ffc6f8…
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        // The vector file's hash-lock: keccak256 of 32 zero bytes.
        assert_eq!(
            hex::encode(keccak256(&[0u8; 32])),
            "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563"
        );
    }

    #[test]
    fn domains_are_distinct() {
        let keys = &*KEYS;
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
            }
        }
        assert_ne!(hash_parts(Domain::TxLeaf, &[b"x"]), hash_parts(Domain::TxNode, &[b"x"]));
    }

    #[test]
    fn chain_id_changes_the_hash() {
        let a = finish(chain_hasher(Domain::TxId, "localnet").update(b"tx"));
        let b = finish(chain_hasher(Domain::TxId, "mainnet").update(b"tx"));
        assert_ne!(a, b);
    }
}
