//! Transactions: canonical form, id and signatures.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! Transaction  = version u8 | expiration_ms i64
//!              | n u8 | n × Declaration
//!              | n u8 | n × Leg (inputs) | n u8 | n × Leg (outputs)
//!              | n u8 | n message bytes
//!              | fee payer (21) | fee amount i64
//! Leg          = address (21) | currency (u8 length + symbol) | amount i64
//! Signed       = Transaction | n u8 | n × (public key 65 | signature 64), sorted by public key
//! ```
//!
//! The id is keyed BLAKE3 over the chain id and the unsigned bytes; signatures sign the id.

use crate::{
    address::Address,
    codec::{CodecError, Decode, Encode, Reader, check_strictly_ascending, decode_exact},
    currency::Currency,
    declaration::Declaration,
    hash::{self, Domain, Hash},
    keys::{PublicKey, SecretKey, Signature},
    limits::{DECLARATIONS_MAX, INPUTS_MAX, MESSAGE_LEN_MAX, OUTPUTS_MAX, SIGNATURES_MAX, TX_BYTES_MAX},
};

/// The only transaction version this engine knows.
pub const TX_VERSION: u8 = 1;

/// A transaction id: keyed BLAKE3 over the chain id and the unsigned canonical bytes.
pub type TxId = Hash;

/// One input or output: an amount of a currency leaving or reaching an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Leg {
    /// The account.
    pub address: Address,
    /// The currency.
    pub currency: Currency,
    /// Raw units (10⁻⁸); must be positive.
    pub amount: i64,
}

/// Who pays the fee, and how much (always in CAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Fee {
    /// The paying account; its spend rule must be satisfied.
    pub payer: Address,
    /// Raw CAS units.
    pub amount: i64,
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Transaction {
    /// Format version, [`TX_VERSION`].
    pub version: u8,
    /// Ledger time (unix ms) from which the transaction is void.
    pub expiration_ms: i64,
    /// Declarations published or used by the transaction.
    pub declarations: Vec<Declaration>,
    /// What leaves accounts.
    pub inputs: Vec<Leg>,
    /// What reaches accounts.
    pub outputs: Vec<Leg>,
    /// Free-form bytes (e.g. a gateway's deposit reference), at most 128.
    #[serde(serialize_with = "hex_bytes")]
    pub message: Vec<u8>,
    /// The fee.
    pub fee: Fee,
}

fn hex_bytes<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// One signature of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TxSignature {
    /// The signer's public key.
    pub public_key: PublicKey,
    /// Its signature over the transaction id.
    pub signature: Signature,
}

/// A transaction with its signatures, as it travels and is stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct SignedTransaction {
    /// The transaction.
    #[serde(flatten)]
    pub tx: Transaction,
    /// Signatures, sorted by public key, one per key.
    pub signatures: Vec<TxSignature>,
}

impl Transaction {
    /// The transaction id on chain `chain_id`.
    pub fn id(&self, chain_id: &str) -> TxId {
        id_of_unsigned_bytes(chain_id, &self.to_bytes())
    }

    /// Signs with every key (in any order) and returns the signed transaction.
    pub fn sign(self, chain_id: &str, keys: &[&SecretKey]) -> SignedTransaction {
        let id = self.id(chain_id);
        let mut signatures: Vec<TxSignature> = keys
            .iter()
            .map(|k| TxSignature { public_key: k.public_key(), signature: k.sign_prehash(&id.0) })
            .collect();
        signatures.sort_by_key(|s| s.public_key);
        signatures.dedup_by(|a, b| a.public_key == b.public_key);
        SignedTransaction { tx: self, signatures }
    }
}

/// The id of a transaction given its unsigned canonical bytes.
pub fn id_of_unsigned_bytes(chain_id: &str, unsigned: &[u8]) -> TxId {
    let mut h = hash::chain_hasher(Domain::TxId, chain_id);
    h.update(unsigned);
    hash::finish(&h)
}

impl SignedTransaction {
    /// Decodes a signed transaction from untrusted bytes and computes its id on the way, hashing
    /// the unsigned prefix in place instead of re-encoding it.
    pub fn decode_with_id(bytes: &[u8], chain_id: &str) -> Result<(Self, TxId), CodecError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(CodecError::OverLimit {
                what: "transaction bytes",
                got: bytes.len(),
                max: TX_BYTES_MAX,
            });
        }
        let mut r = Reader::new(bytes);
        let tx = Transaction::decode(&mut r)?;
        let unsigned_len = bytes.len() - r.remaining();
        let signatures = decode_signatures(&mut r)?;
        r.finish()?;
        let id = id_of_unsigned_bytes(chain_id, bytes.get(..unsigned_len).unwrap_or_default());
        Ok((Self { tx, signatures }, id))
    }

    /// Decodes a signed transaction from untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(CodecError::OverLimit {
                what: "transaction bytes",
                got: bytes.len(),
                max: TX_BYTES_MAX,
            });
        }
        decode_exact(bytes)
    }

    /// The transaction id on chain `chain_id`.
    pub fn id(&self, chain_id: &str) -> TxId {
        self.tx.id(chain_id)
    }
}

impl Encode for Leg {
    fn encode(&self, out: &mut Vec<u8>) {
        self.address.encode(out);
        self.currency.encode(out);
        out.extend_from_slice(&self.amount.to_le_bytes());
    }
}

impl Decode for Leg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self { address: Address::decode(r)?, currency: Currency::decode(r)?, amount: r.i64("amount")? })
    }
}

impl Encode for Transaction {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.expiration_ms.to_le_bytes());
        put_list(out, &self.declarations);
        put_list(out, &self.inputs);
        put_list(out, &self.outputs);
        out.push(self.message.len() as u8);
        out.extend_from_slice(&self.message);
        self.fee.payer.encode(out);
        out.extend_from_slice(&self.fee.amount.to_le_bytes());
    }
}

fn put_list<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    crate::codec::put_count_u8(out, items.len());
    for item in items {
        item.encode(out);
    }
}

impl Decode for Transaction {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let version = r.u8("version")?;
        if version != TX_VERSION {
            return Err(CodecError::UnknownTag { what: "transaction version", tag: version });
        }
        let expiration_ms = r.i64("expiration")?;
        let n = r.count_u8("declarations", 0, DECLARATIONS_MAX)?;
        let declarations = r.items(n)?;
        let n = r.count_u8("inputs", 0, INPUTS_MAX)?;
        let inputs = r.items(n)?;
        let n = r.count_u8("outputs", 0, OUTPUTS_MAX)?;
        let outputs = r.items(n)?;
        let n = r.count_u8("message length", 0, MESSAGE_LEN_MAX)?;
        let message = r.take(n, "message")?.to_vec();
        let fee = Fee { payer: Address::decode(r)?, amount: r.i64("fee")? };
        Ok(Self { version, expiration_ms, declarations, inputs, outputs, message, fee })
    }
}

impl Encode for TxSignature {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.public_key.0);
        out.extend_from_slice(&self.signature.0);
    }
}

impl Decode for TxSignature {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            public_key: PublicKey(r.array("public key")?),
            signature: Signature(r.array("signature")?),
        })
    }
}

fn decode_signatures(r: &mut Reader<'_>) -> Result<Vec<TxSignature>, CodecError> {
    let n = r.count_u8("signatures", 0, SIGNATURES_MAX)?;
    let signatures: Vec<TxSignature> = r.items(n)?;
    check_strictly_ascending(&signatures, "signatures", |s| s.public_key)?;
    Ok(signatures)
}

impl Encode for SignedTransaction {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tx.encode(out);
        put_list(out, &self.signatures);
    }
}

impl Decode for SignedTransaction {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let tx = Transaction::decode(r)?;
        let signatures = decode_signatures(r)?;
        Ok(Self { tx, signatures })
    }
}
