//! Address32: raw 21-byte addresses and their 40-character text form.
//!
//! The text form is bit-compatible with the original Caasiope network: the type byte as two
//! 5-bit groups (zero-padded), the 20-byte body as 32 groups, then a 6-group bech32 checksum
//! (BIP-173 generator, final constant 1) over those 34 groups alone — no human-readable part, no
//! separator. That framing is not one the `bech32` crate exposes, and the checksum is the
//! ten-line reference polymod, so it is written out here rather than pulled in for one function.

use std::{fmt, str::FromStr};

use crate::{
    codec::{CodecError, Decode, Encode, Reader},
    hash::keccak256,
};

/// Length of a raw address: type byte + 20-byte body.
pub const ADDRESS_LEN: usize = 21;
/// Length of the text form.
pub const ADDRESS_TEXT_LEN: usize = 40;

const ALPHABET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GENERATOR: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];
/// What the polymod step XORs in for each value of the 5 bits shifted out (the generators of
/// its set bits): one lookup a step instead of five tests.
const SHIFTED_OUT: [u32; 32] = {
    let mut table = [0u32; 32];
    let mut top = 0;
    while top < 32 {
        let mut i = 0;
        while i < 5 {
            if (top >> i) & 1 == 1 {
                table[top] ^= GENERATOR[i];
            }
            i += 1;
        }
        top += 1;
    }
    table
};
/// The value of each byte in the alphabet, either case (`NOT_IN_ALPHABET` for the others).
const VALUE_OF: [u8; 256] = {
    let mut table = [NOT_IN_ALPHABET; 256];
    let mut v = 0;
    while v < 32 {
        table[ALPHABET[v] as usize] = v as u8;
        table[ALPHABET[v].to_ascii_uppercase() as usize] = v as u8;
        v += 1;
    }
    table
};
const NOT_IN_ALPHABET: u8 = 0xff;
const DATA_GROUPS: usize = 34;

/// Why an address text or raw address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not 40 bytes of text (non-ASCII characters count by their UTF-8 bytes).
    #[error("an address is {ADDRESS_TEXT_LEN} ASCII characters, got {0} bytes")]
    Length(usize),
    /// Upper and lower case mixed.
    #[error("an address is all lower case or all upper case, not mixed")]
    MixedCase,
    /// A character outside the bech32 alphabet.
    #[error("character {ch:?} at position {pos} is not in the bech32 alphabet")]
    Character {
        /// The character.
        ch: char,
        /// Its position.
        pos: usize,
    },
    /// The checksum does not match.
    #[error("address checksum does not match")]
    Checksum,
    /// The two padding bits of the type byte are not zero.
    #[error("address type padding bits are not zero")]
    Padding,
    /// The type byte names no account type.
    #[error("unknown address type {0:#04x}")]
    UnknownType(u8),
}

/// The kind of account an address belongs to: its type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum AddressType {
    /// Last 20 bytes of Keccak-256 of a 65-byte public key.
    Ecdsa = 0x01,
    /// First 20 bytes of Keccak-256 of a MultiSig declaration.
    #[serde(rename = "multisig")]
    MultiSig = 0x02,
    /// First 20 bytes of Keccak-256 of a HashLock declaration.
    #[serde(rename = "hashlock")]
    HashLock = 0x03,
    /// The lock time (i64 LE unix seconds) followed by 12 zero bytes.
    #[serde(rename = "timelock")]
    TimeLock = 0x04,
    /// First 20 bytes of Keccak-256 of a PaymentChannel declaration.
    #[serde(rename = "channel")]
    PaymentChannel = 0x06,
}

impl AddressType {
    /// The type for a type byte.
    pub const fn from_byte(b: u8) -> Result<Self, AddressError> {
        Ok(match b {
            0x01 => Self::Ecdsa,
            0x02 => Self::MultiSig,
            0x03 => Self::HashLock,
            0x04 => Self::TimeLock,
            0x06 => Self::PaymentChannel,
            other => return Err(AddressError::UnknownType(other)),
        })
    }

    /// The name used in JSON and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ecdsa => "ecdsa",
            Self::MultiSig => "multisig",
            Self::HashLock => "hashlock",
            Self::TimeLock => "timelock",
            Self::PaymentChannel => "channel",
        }
    }
}

/// A raw address of a known type. Ordered by its raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address([u8; ADDRESS_LEN]);

impl Address {
    /// An address from raw bytes whose type byte is known.
    pub const fn from_raw(raw: [u8; ADDRESS_LEN]) -> Result<Self, AddressError> {
        match AddressType::from_byte(raw[0]) {
            Ok(_) => Ok(Self(raw)),
            Err(e) => Err(e),
        }
    }

    /// An address of `kind` with `body`.
    pub fn new(kind: AddressType, body: [u8; 20]) -> Self {
        let mut raw = [0u8; ADDRESS_LEN];
        raw[0] = kind as u8;
        raw[1..].copy_from_slice(&body);
        Self(raw)
    }

    /// The ECDSA address of a 65-byte uncompressed public key (0x04 included in the hash).
    pub fn from_public_key(public_key: &[u8; 65]) -> Self {
        let digest = keccak256(public_key);
        let mut body = [0u8; 20];
        body.copy_from_slice(&digest[12..]);
        Self::new(AddressType::Ecdsa, body)
    }

    /// The address of a hashed declaration: the first 20 bytes of Keccak-256 of its bytes.
    pub(crate) fn from_declaration_bytes(kind: AddressType, declaration: &[u8]) -> Self {
        let digest = keccak256(declaration);
        let mut body = [0u8; 20];
        body.copy_from_slice(&digest[..20]);
        Self::new(kind, body)
    }

    /// The TimeLock address of a lock time in unix seconds.
    pub fn timelock(unix_seconds: i64) -> Self {
        let mut body = [0u8; 20];
        body[..8].copy_from_slice(&unix_seconds.to_le_bytes());
        Self::new(AddressType::TimeLock, body)
    }

    /// The lock time of a TimeLock address, `None` for other types or a non-zero tail.
    pub fn timelock_seconds(&self) -> Option<i64> {
        if self.kind() != AddressType::TimeLock || self.0[9..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut le = [0u8; 8];
        le.copy_from_slice(&self.0[1..9]);
        Some(i64::from_le_bytes(le))
    }

    /// The account type.
    pub fn kind(&self) -> AddressType {
        // The constructors only admit known type bytes.
        AddressType::from_byte(self.0[0]).unwrap_or(AddressType::Ecdsa)
    }

    /// The raw 21 bytes.
    pub const fn raw(&self) -> &[u8; ADDRESS_LEN] {
        &self.0
    }

    /// The 20-byte body.
    pub fn body(&self) -> &[u8] {
        &self.0[1..]
    }

    /// The 40-character text form.
    pub fn to_text(&self) -> String {
        encode_text(&self.0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The alphabet is ASCII: never an error.
        f.write_str(std::str::from_utf8(&text_bytes(&self.0)).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_raw(decode_text(s)?)
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = text_bytes(&self.0);
        // The alphabet is ASCII: never an error.
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Encode for Address {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Address {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Self::from_raw(r.array("address")?)
            .map_err(|_| CodecError::Invalid { what: "address", why: "unknown address type" })
    }
}

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v) ^ SHIFTED_OUT[top as usize];
    }
    chk
}

fn to_groups(raw: &[u8; ADDRESS_LEN]) -> [u8; DATA_GROUPS] {
    let mut groups = [0u8; DATA_GROUPS];
    // The type byte alone, left-aligned in 10 bits.
    groups[0] = raw[0] >> 3;
    groups[1] = (raw[0] & 0x07) << 2;
    // The 160-bit body is exactly 32 groups.
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut g = 2;
    for &b in &raw[1..] {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            groups[g] = ((acc >> bits) & 0x1f) as u8;
            g += 1;
        }
    }
    groups
}

/// The text form of any 21 raw bytes (the type byte is not checked; see [`Address`] for that).
pub fn encode_text(raw: &[u8; ADDRESS_LEN]) -> String {
    text_bytes(raw).iter().map(|&b| char::from(b)).collect()
}

/// The text form as ASCII bytes, on the stack ([`Address`]'s `Display` and `Serialize` write it
/// from there).
fn text_bytes(raw: &[u8; ADDRESS_LEN]) -> [u8; ADDRESS_TEXT_LEN] {
    let groups = to_groups(raw);
    let residue = polymod(groups.iter().copied().chain([0u8; 6])) ^ 1;
    let mut text = [0u8; ADDRESS_TEXT_LEN];
    for (t, &g) in text.iter_mut().zip(&groups) {
        *t = ALPHABET[usize::from(g)];
    }
    for (i, t) in text[DATA_GROUPS..].iter_mut().enumerate() {
        *t = ALPHABET[((residue >> (5 * (5 - i))) & 0x1f) as usize];
    }
    text
}

/// Parses the text form into 21 raw bytes (any type byte; see [`Address`] for a checked one).
pub fn decode_text(text: &str) -> Result<[u8; ADDRESS_LEN], AddressError> {
    let bytes = text.as_bytes();
    if bytes.len() != ADDRESS_TEXT_LEN {
        return Err(AddressError::Length(bytes.len()));
    }
    let has_lower = bytes.iter().any(u8::is_ascii_lowercase);
    let has_upper = bytes.iter().any(u8::is_ascii_uppercase);
    if has_lower && has_upper {
        return Err(AddressError::MixedCase);
    }
    let mut values = [0u8; ADDRESS_TEXT_LEN];
    for (pos, (&b, v)) in bytes.iter().zip(values.iter_mut()).enumerate() {
        *v = VALUE_OF[usize::from(b)];
        if *v == NOT_IN_ALPHABET {
            return Err(AddressError::Character { ch: char::from(b), pos });
        }
    }
    if polymod(values.iter().copied()) != 1 {
        return Err(AddressError::Checksum);
    }
    if values[1] & 0x03 != 0 {
        return Err(AddressError::Padding);
    }
    let mut raw = [0u8; ADDRESS_LEN];
    raw[0] = (values[0] << 3) | (values[1] >> 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut i = 1;
    for &v in &values[2..DATA_GROUPS] {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            raw[i] = ((acc >> bits) & 0xff) as u8;
            i += 1;
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type_byte() {
        for t in 0..=255u8 {
            let mut raw = [0u8; ADDRESS_LEN];
            raw[0] = t;
            for (i, b) in raw[1..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37).wrapping_add(t);
            }
            let text = encode_text(&raw);
            assert_eq!(text.len(), ADDRESS_TEXT_LEN);
            assert_eq!(decode_text(&text), Ok(raw));
            assert_eq!(decode_text(&text.to_ascii_uppercase()), Ok(raw));
        }
    }

    #[test]
    fn any_single_character_change_is_caught() {
        let text = encode_text(&[1; ADDRESS_LEN]);
        for pos in 0..ADDRESS_TEXT_LEN {
            for &c in ALPHABET {
                let mut t = text.clone().into_bytes();
                if t[pos] == c {
                    continue;
                }
                t[pos] = c;
                let t = String::from_utf8(t).unwrap();
                assert!(decode_text(&t).is_err(), "{t} accepted");
            }
        }
    }

    /// BIP-173's polymod as written there, five tests a step: the table's reference.
    fn reference_polymod(values: &[u8]) -> u32 {
        let mut chk: u32 = 1;
        for &v in values {
            let top = chk >> 25;
            chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
            for (i, g) in GENERATOR.iter().enumerate() {
                if (top >> i) & 1 == 1 {
                    chk ^= g;
                }
            }
        }
        chk
    }

    #[test]
    fn table_polymod_is_the_reference() {
        let mut values = [0u8; 64];
        let mut x: u32 = 0x1234_5678;
        for round in 0..2_000 {
            for v in values.iter_mut() {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *v = (x >> 27) as u8;
            }
            let n = round % values.len();
            assert_eq!(polymod(values[..n].iter().copied()), reference_polymod(&values[..n]));
        }
    }

    #[test]
    fn every_byte_outside_the_alphabet_is_named() {
        let text = encode_text(&[1; ADDRESS_LEN]);
        for b in 0..=255u8 {
            let in_alphabet = ALPHABET.contains(&b.to_ascii_lowercase());
            let mut t = text.clone().into_bytes();
            t[7] = b;
            let Ok(t) = String::from_utf8(t) else { continue };
            match decode_text(&t) {
                Err(AddressError::Character { ch, pos: 7 }) => {
                    assert!(!in_alphabet, "{b:#x} refused");
                    assert_eq!(ch, char::from(b));
                }
                // An upper-case letter in lower-case text is refused as mixed case first.
                _ => assert!(in_alphabet || b.is_ascii_uppercase(), "{b:#x} not named"),
            }
        }
        assert_eq!(
            format!("{}", Address::new(AddressType::Ecdsa, [7; 20])),
            Address::new(AddressType::Ecdsa, [7; 20]).to_text()
        );
    }

    #[test]
    fn non_ascii_is_refused_without_panic() {
        assert!(decode_text("é").is_err());
        assert!(decode_text(&"é".repeat(20)).is_err());
        assert!("qyl68tygnjx6qqwrsmynmejmc9wxlw7almv3397é".parse::<Address>().is_err());
    }
}
