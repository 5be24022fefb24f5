//! Currency symbols: 1–8 characters `[A-Z0-9]`; `CAS` is the native currency.

use std::{fmt, str::FromStr};

use crate::{
    codec::{CodecError, Decode, Encode, Reader},
    limits::CURRENCY_LEN_MAX,
};

/// A currency symbol. Stored zero-padded, so the derived order is the symbols' text order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; CURRENCY_LEN_MAX]);

/// Why a currency symbol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid currency symbol {0:?}: 1 to 8 characters A-Z or 0-9")]
pub struct CurrencyError(pub String);

impl Currency {
    /// The native currency, in which fees are paid.
    pub const CAS: Self = Self(*b"CAS\0\0\0\0\0");

    /// A currency from its symbol.
    pub fn new(symbol: &str) -> Result<Self, CurrencyError> {
        let b = symbol.as_bytes();
        if b.is_empty()
            || b.len() > CURRENCY_LEN_MAX
            || !b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(CurrencyError(symbol.chars().take(16).collect()));
        }
        let mut out = [0u8; CURRENCY_LEN_MAX];
        out[..b.len()].copy_from_slice(b);
        Ok(Self(out))
    }

    /// Length of the symbol.
    pub fn len(&self) -> usize {
        self.0.iter().position(|&c| c == 0).unwrap_or(CURRENCY_LEN_MAX)
    }

    /// Never true: a symbol has at least one character. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The symbol.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.0[..self.len()]).unwrap_or("")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

impl Encode for Currency {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = self.len();
        out.push(n as u8);
        out.extend_from_slice(&self.0[..n]);
    }
}

impl Decode for Currency {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.count_u8("currency length", 1, CURRENCY_LEN_MAX)?;
        let b = r.take(n, "currency")?;
        if !b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            return Err(CodecError::Invalid { what: "currency", why: "characters are A-Z or 0-9" });
        }
        let mut out = [0u8; CURRENCY_LEN_MAX];
        out[..n].copy_from_slice(b);
        Ok(Self(out))
    }
}

/// Number of decimals of every amount: raw units are 10⁻⁸ of a coin.
pub const DECIMALS: u32 = 8;

/// Formats raw units as a decimal string (`150000000` → `1.5`).
pub fn format_amount(raw: i64) -> String {
    let unit = 10i128.pow(DECIMALS);
    let v = i128::from(raw);
    let (int, frac) = (v.abs() / unit, v.abs() % unit);
    let sign = if v < 0 { "-" } else { "" };
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let frac = format!("{frac:08}");
        format!("{sign}{int}.{}", frac.trim_end_matches('0'))
    }
}

/// Parses a decimal amount (`1.5` → `150000000`), refusing more than 8 decimals or overflow.
pub fn parse_amount(text: &str) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > DECIMALS as usize || int.len() > 19 {
        return None;
    }
    let int: i128 = int.parse().ok()?;
    let frac_value: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<8}").parse().ok()? };
    let raw = int * 10i128.pow(DECIMALS) + frac_value;
    i64::try_from(if neg { -raw } else { raw }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_exact;

    #[test]
    fn symbols() {
        assert_eq!(Currency::new("CAS").unwrap(), Currency::CAS);
        for bad in ["", "cas", "TOOLONGSYM", "B-C", "É"] {
            assert!(Currency::new(bad).is_err(), "{bad}");
        }
        let btc = Currency::new("BTC").unwrap();
        assert!(Currency::new("BT").unwrap() < btc && btc < Currency::new("BTCX").unwrap());
        assert_eq!(decode_exact::<Currency>(&btc.to_bytes()).unwrap(), btc);
        assert!(decode_exact::<Currency>(&[3, b'b', b't', b'c']).is_err());
        assert!(decode_exact::<Currency>(&[0]).is_err());
        assert!(
            decode_exact::<Currency>(&[9, b'A', b'A', b'A', b'A', b'A', b'A', b'A', b'A', b'A']).is_err()
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(format_amount(150_000_000), "1.5");
        assert_eq!(format_amount(-1), "-0.00000001");
        assert_eq!(format_amount(i64::MIN), "-92233720368.54775808");
        assert_eq!(parse_amount("1.5"), Some(150_000_000));
        assert_eq!(parse_amount("0.00000001"), Some(1));
        assert_eq!(parse_amount("1.000000001"), None);
        assert_eq!(parse_amount("92233720368.54775808"), None);
        assert_eq!(parse_amount("x"), None);
        assert_eq!(parse_amount("."), None);
        for raw in [0, 1, 99, 123_456_789, i64::MAX, i64::MIN + 1] {
            assert_eq!(parse_amount(&format_amount(raw)), Some(raw));
        }
    }
}
