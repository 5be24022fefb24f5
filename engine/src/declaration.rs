//! Declarations: the data that defines or unlocks a special account, carried by transactions.
//!
//! Serialization (type tag first, little-endian) is the one hashed for addresses, so MultiSig,
//! HashLock and TimeLock addresses are identical to the original network's:
//!
//! | tag | declaration | body |
//! |---|---|---|
//! | 0x00 | MultiSig | signer count (u8), 21-byte signers sorted by text form, required (i16) |
//! | 0x01 | HashLock | hash type (u8: 0 Keccak-256, 1 SHA-256), 32-byte hash |
//! | 0x02 | Secret | 32-byte preimage |
//! | 0x03 | TimeLock | i64 unix seconds |
//! | 0x04 | PaymentChannel | payer (21), payee (21), currency, expiry (i64 unix ms) |
//! | 0x05 | Voucher | channel (21), cumulative amount (i64), payer public key (65), signature (64) |
//! | 0x06 | ValidatorUpdate | consensus public key (65), weight (u64; 0 removes) |

use crate::{
    address::{Address, AddressType},
    codec::{CodecError, Decode, Encode, Reader, check_strictly_ascending},
    currency::Currency,
    hash::{self, Domain, keccak256, sha256},
    keys::{self, Backend, PublicKey, SecretKey, Signature},
    limits::{MULTISIG_SIGNERS_MAX, VALIDATOR_WEIGHT_MAX},
};

/// The hash function of a HashLock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashType {
    /// Keccak-256 (original padding).
    Keccak256 = 0,
    /// SHA-256: what Bitcoin-family HTLCs use, so cross-chain swaps share one secret.
    Sha256 = 1,
}

impl HashType {
    /// The hash of a preimage under this function.
    pub fn digest(self, preimage: &[u8]) -> [u8; 32] {
        match self {
            Self::Keccak256 => keccak256(preimage),
            Self::Sha256 => sha256(preimage),
        }
    }
}

/// X-of-Y signers, each any account type (nested MultiSigs included).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MultiSig {
    signers: Vec<Address>,
    required: i16,
}

impl MultiSig {
    /// A MultiSig of `required` among `signers` (sorted here into canonical order).
    pub fn new(mut signers: Vec<Address>, required: i16) -> Result<Self, CodecError> {
        signers.sort_by_cached_key(Address::to_text);
        if signers.windows(2).any(|w| w[0] == w[1]) {
            return Err(CodecError::Invalid { what: "multisig", why: "a signer is listed twice" });
        }
        let ms = Self { signers, required };
        ms.check()?;
        Ok(ms)
    }

    /// Signers in canonical order (by text form).
    pub fn signers(&self) -> &[Address] {
        &self.signers
    }

    /// How many signers must be satisfied.
    pub const fn required(&self) -> i16 {
        self.required
    }

    fn check(&self) -> Result<(), CodecError> {
        let n = self.signers.len();
        if n == 0 || n > MULTISIG_SIGNERS_MAX {
            return Err(CodecError::Invalid { what: "multisig", why: "1 to 20 signers" });
        }
        // The original network sorts signers by their text form, not their raw bytes.
        check_strictly_ascending(&self.signers, "multisig signers", Address::to_text)?;
        if self.required < 1 || self.required as usize > n {
            return Err(CodecError::Invalid { what: "multisig", why: "required is 1 to the signer count" });
        }
        Ok(())
    }
}

/// A payment channel from `payer` to `payee` in one currency, until `expiry_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PaymentChannel {
    /// Signs vouchers; takes what is left after expiry. Must be an ECDSA address.
    pub payer: Address,
    /// Claims with vouchers before expiry.
    pub payee: Address,
    /// The channel's currency.
    pub currency: Currency,
    /// Ledger time (unix ms) from which the payer may take the rest.
    pub expiry_ms: i64,
}

/// A payer's off-chain promise: the payee may have claimed up to `cumulative` from `channel`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Voucher {
    /// The channel's address.
    pub channel: Address,
    /// Total amount the payee may have claimed so far, over all claims.
    pub cumulative: i64,
    /// The payer's public key (must hash to the channel's payer).
    pub public_key: PublicKey,
    /// The payer's signature over [`Voucher::signing_hash`].
    pub signature: Signature,
}

impl Voucher {
    /// The hash the payer signs: chain id, channel address and cumulative amount.
    pub fn signing_hash(chain_id: &str, channel: &Address, cumulative: i64) -> [u8; 32] {
        let mut h = hash::chain_hasher(Domain::Voucher, chain_id);
        h.update(channel.raw());
        h.update(&cumulative.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// A voucher signed by `payer`.
    pub fn sign(chain_id: &str, channel: Address, cumulative: i64, payer: &SecretKey) -> Self {
        let signature = payer.sign_prehash(&Self::signing_hash(chain_id, &channel, cumulative));
        Self { channel, cumulative, public_key: payer.public_key(), signature }
    }

    /// Whether the signature is valid (it says nothing of who the payer is).
    pub fn verify(&self, chain_id: &str, backend: Backend) -> bool {
        let h = Self::signing_hash(chain_id, &self.channel, self.cumulative);
        keys::verify(backend, &self.public_key, &h, &self.signature)
    }
}

/// A change to the validator set, authorized by the governance account; effective next height.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ValidatorUpdate {
    /// The validator's consensus key.
    pub public_key: PublicKey,
    /// New voting weight; 0 removes the validator.
    pub weight: u64,
}

/// Everything a transaction can declare.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Declaration {
    /// Defines a MultiSig account.
    #[serde(rename = "multisig")]
    MultiSig(MultiSig),
    /// Defines a HashLock account.
    #[serde(rename = "hashlock")]
    HashLock {
        /// The hash function.
        hash_type: HashType,
        /// The hash a secret must match.
        #[serde(serialize_with = "hex32")]
        hash: [u8; 32],
    },
    /// Reveals a preimage that unlocks HashLocks.
    Secret {
        /// The preimage.
        #[serde(serialize_with = "hex32")]
        preimage: [u8; 32],
    },
    /// Declares a TimeLock (its address already encodes the time; declaring is optional).
    #[serde(rename = "timelock")]
    TimeLock {
        /// Lock time in unix seconds.
        unix_seconds: i64,
    },
    /// Defines a payment channel.
    #[serde(rename = "payment_channel")]
    PaymentChannel(PaymentChannel),
    /// A payer's voucher, used by a channel claim.
    Voucher(Voucher),
    /// A validator-set change.
    ValidatorUpdate(ValidatorUpdate),
}

fn hex32<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

impl Declaration {
    /// The address this declaration defines, if it defines one.
    pub fn address(&self) -> Option<Address> {
        let kind = match self {
            Self::MultiSig(_) => AddressType::MultiSig,
            Self::HashLock { .. } => AddressType::HashLock,
            Self::PaymentChannel(_) => AddressType::PaymentChannel,
            Self::TimeLock { unix_seconds } => return Some(Address::timelock(*unix_seconds)),
            Self::Secret { .. } | Self::Voucher(_) | Self::ValidatorUpdate(_) => return None,
        };
        Some(Address::from_declaration_bytes(kind, &self.to_bytes()))
    }

    /// Whether the declaration is kept on its account (defines a spend rule).
    pub const fn is_account_definition(&self) -> bool {
        matches!(
            self,
            Self::MultiSig(_) | Self::HashLock { .. } | Self::PaymentChannel(_) | Self::TimeLock { .. }
        )
    }
}

impl Encode for Declaration {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::MultiSig(ms) => {
                out.push(0x00);
                out.push(ms.signers.len() as u8);
                for s in &ms.signers {
                    s.encode(out);
                }
                out.extend_from_slice(&ms.required.to_le_bytes());
            }
            Self::HashLock { hash_type, hash } => {
                out.push(0x01);
                out.push(*hash_type as u8);
                out.extend_from_slice(hash);
            }
            Self::Secret { preimage } => {
                out.push(0x02);
                out.extend_from_slice(preimage);
            }
            Self::TimeLock { unix_seconds } => {
                out.push(0x03);
                out.extend_from_slice(&unix_seconds.to_le_bytes());
            }
            Self::PaymentChannel(ch) => {
                out.push(0x04);
                ch.payer.encode(out);
                ch.payee.encode(out);
                ch.currency.encode(out);
                out.extend_from_slice(&ch.expiry_ms.to_le_bytes());
            }
            Self::Voucher(v) => {
                out.push(0x05);
                v.channel.encode(out);
                out.extend_from_slice(&v.cumulative.to_le_bytes());
                out.extend_from_slice(&v.public_key.0);
                out.extend_from_slice(&v.signature.0);
            }
            Self::ValidatorUpdate(u) => {
                out.push(0x06);
                out.extend_from_slice(&u.public_key.0);
                out.extend_from_slice(&u.weight.to_le_bytes());
            }
        }
    }
}

impl Decode for Declaration {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.u8("declaration tag")? {
            0x00 => Self::MultiSig(decode_multisig(r)?),
            0x01 => {
                let hash_type = match r.u8("hash type")? {
                    0 => HashType::Keccak256,
                    1 => HashType::Sha256,
                    tag => {
                        return Err(CodecError::UnknownTag { what: "hash type", tag });
                    }
                };
                Self::HashLock { hash_type, hash: r.array("hashlock hash")? }
            }
            0x02 => Self::Secret { preimage: r.array("secret")? },
            0x03 => Self::TimeLock { unix_seconds: r.i64("timelock")? },
            0x04 => Self::PaymentChannel(decode_payment_channel(r)?),
            0x05 => Self::Voucher(decode_voucher(r)?),
            0x06 => Self::ValidatorUpdate(decode_validator_update(r)?),
            tag => {
                return Err(CodecError::UnknownTag { what: "declaration", tag });
            }
        })
    }
}

/// The body of a `MultiSig` declaration (tag 0x00): its signers and required count, checked.
fn decode_multisig(r: &mut Reader<'_>) -> Result<MultiSig, CodecError> {
    let n = r.count_u8("multisig signers", 1, MULTISIG_SIGNERS_MAX)?;
    let signers = r.items::<Address>(n)?;
    let ms = MultiSig { signers, required: r.i16("multisig required")? };
    ms.check()?;
    Ok(ms)
}

/// The body of a `PaymentChannel` declaration (tag 0x04): an ECDSA payer and a positive expiry.
fn decode_payment_channel(r: &mut Reader<'_>) -> Result<PaymentChannel, CodecError> {
    let ch = PaymentChannel {
        payer: Address::decode(r)?,
        payee: Address::decode(r)?,
        currency: Currency::decode(r)?,
        expiry_ms: r.i64("channel expiry")?,
    };
    if ch.payer.kind() != AddressType::Ecdsa {
        return Err(CodecError::Invalid {
            what: "payment channel",
            why: "the payer signs vouchers, so it is an ECDSA address",
        });
    }
    if ch.expiry_ms <= 0 {
        return Err(CodecError::Invalid {
            what: "payment channel",
            why: "expiry is a positive unix time in ms",
        });
    }
    Ok(ch)
}

/// The body of a `Voucher` declaration (tag 0x05): a payment-channel address and a positive
/// cumulative amount.
fn decode_voucher(r: &mut Reader<'_>) -> Result<Voucher, CodecError> {
    let v = Voucher {
        channel: Address::decode(r)?,
        cumulative: r.i64("voucher amount")?,
        public_key: PublicKey(r.array("voucher key")?),
        signature: Signature(r.array("voucher signature")?),
    };
    if v.channel.kind() != AddressType::PaymentChannel {
        return Err(CodecError::Invalid { what: "voucher", why: "the channel is a payment-channel address" });
    }
    if v.cumulative <= 0 {
        return Err(CodecError::Invalid { what: "voucher", why: "the cumulative amount is positive" });
    }
    Ok(v)
}

/// The body of a `ValidatorUpdate` declaration (tag 0x06): a key and a weight of at most
/// `VALIDATOR_WEIGHT_MAX`.
fn decode_validator_update(r: &mut Reader<'_>) -> Result<ValidatorUpdate, CodecError> {
    let u = ValidatorUpdate {
        public_key: PublicKey(r.array("validator key")?),
        weight: r.u64("validator weight")?,
    };
    if u.weight > VALIDATOR_WEIGHT_MAX {
        return Err(CodecError::OverLimit {
            what: "validator weight",
            got: usize::try_from(u.weight).unwrap_or(usize::MAX),
            max: VALIDATOR_WEIGHT_MAX as usize,
        });
    }
    Ok(u)
}

/// The HTLC of DESIGN §3.3: MultiSig 1-of-2 over {MultiSig 2-of-2 {receiver, HashLock},
/// MultiSig 2-of-2 {sender, TimeLock}}. Returns every declaration needed to spend it, the
/// outer one first; its address is `declarations[0].address()`.
pub fn htlc(
    sender: Address,
    receiver: Address,
    hash_type: HashType,
    hash: [u8; 32],
    refund_after_unix_seconds: i64,
) -> Result<Vec<Declaration>, CodecError> {
    let hashlock = Declaration::HashLock { hash_type, hash };
    let timelock = Address::timelock(refund_after_unix_seconds);
    let claim = MultiSig::new(vec![receiver, address_of(&hashlock)?], 2)?;
    let refund = MultiSig::new(vec![sender, timelock], 2)?;
    let claim = Declaration::MultiSig(claim);
    let refund = Declaration::MultiSig(refund);
    let outer = Declaration::MultiSig(MultiSig::new(vec![address_of(&claim)?, address_of(&refund)?], 1)?);
    Ok(vec![outer, claim, refund, hashlock])
}

fn address_of(d: &Declaration) -> Result<Address, CodecError> {
    d.address().ok_or(CodecError::Invalid { what: "declaration", why: "defines no address" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_exact;

    fn addr(n: u8) -> Address {
        Address::new(AddressType::Ecdsa, [n; 20])
    }

    #[test]
    fn multisig_rules() {
        assert!(MultiSig::new(vec![], 1).is_err());
        assert!(MultiSig::new(vec![addr(1)], 0).is_err());
        assert!(MultiSig::new(vec![addr(1)], 2).is_err());
        assert!(MultiSig::new(vec![addr(1), addr(1)], 1).is_err(), "duplicate signer");
        assert!(MultiSig::new((0..21).map(addr).collect(), 1).is_err());
        let ms = MultiSig::new(vec![addr(3), addr(1), addr(2)], 2).unwrap();
        let d = Declaration::MultiSig(ms);
        assert_eq!(decode_exact::<Declaration>(&d.to_bytes()).unwrap(), d);
        // The same signers in another order on the wire are refused.
        let Declaration::MultiSig(ms) = &d else { unreachable!() };
        let mut bytes = vec![0x00, 3];
        for s in ms.signers().iter().rev() {
            bytes.extend_from_slice(s.raw());
        }
        bytes.extend_from_slice(&2i16.to_le_bytes());
        assert_eq!(
            decode_exact::<Declaration>(&bytes),
            Err(CodecError::NotCanonicalOrder("multisig signers"))
        );
    }

    #[test]
    fn every_declaration_round_trips() {
        let sk = SecretKey::from_bytes(&[4; 32]).unwrap();
        let channel = PaymentChannel {
            payer: sk.public_key().address(),
            payee: addr(2),
            currency: Currency::CAS,
            expiry_ms: 5,
        };
        let ch_addr = Declaration::PaymentChannel(channel.clone()).address().unwrap();
        assert_eq!(ch_addr.kind(), AddressType::PaymentChannel);
        let all = vec![
            Declaration::MultiSig(MultiSig::new(vec![addr(1), addr(2)], 1).unwrap()),
            Declaration::HashLock { hash_type: HashType::Sha256, hash: [7; 32] },
            Declaration::Secret { preimage: [8; 32] },
            Declaration::TimeLock { unix_seconds: -1 },
            Declaration::PaymentChannel(channel),
            Declaration::Voucher(Voucher::sign("t", ch_addr, 10, &sk)),
            Declaration::ValidatorUpdate(ValidatorUpdate { public_key: sk.public_key(), weight: 3 }),
        ];
        for d in all {
            let bytes = d.to_bytes();
            assert_eq!(decode_exact::<Declaration>(&bytes).unwrap(), d);
            for cut in 0..bytes.len() {
                assert!(decode_exact::<Declaration>(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn vouchers_bind_chain_channel_and_amount() {
        let sk = SecretKey::from_bytes(&[4; 32]).unwrap();
        let ch = Address::new(AddressType::PaymentChannel, [1; 20]);
        let v = Voucher::sign("localnet", ch, 100, &sk);
        for b in [Backend::K256, Backend::Libsecp256k1] {
            assert!(v.verify("localnet", b));
            assert!(!v.verify("other", b));
            assert!(!Voucher { cumulative: 101, ..v.clone() }.verify("localnet", b));
        }
    }

    #[test]
    fn htlc_shape() {
        let decls = htlc(addr(1), addr(2), HashType::Sha256, [9; 32], 1_700_000_000).unwrap();
        assert_eq!(decls.len(), 4);
        let Declaration::MultiSig(outer) = &decls[0] else { panic!("outer is a multisig") };
        assert_eq!(outer.required(), 1);
        assert_eq!(outer.signers().len(), 2);
    }
}
