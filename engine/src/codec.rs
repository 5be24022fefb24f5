//! The canonical binary codec.
//!
//! Every value has exactly one encoding: integers are fixed-width little-endian, lengths and
//! counts are fixed-width and bounded, enums are one tag byte, sets are sorted and unique.
//! Decoding checks every length against its limit before allocating, rejects any form the
//! encoder would not produce, and [`decode_exact`] rejects trailing bytes, so
//! `encode(decode(b)) == b` for every accepted `b`.

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a value.
    #[error("unexpected end of input while reading {0}")]
    UnexpectedEnd(&'static str),
    /// Bytes remain after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// A count or length is over its limit.
    #[error("{what}: {got} is over the limit of {max}")]
    OverLimit {
        /// What was counted.
        what: &'static str,
        /// The count read.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A count or length is under its minimum.
    #[error("{what}: {got} is under the minimum of {min}")]
    UnderLimit {
        /// What was counted.
        what: &'static str,
        /// The count read.
        got: usize,
        /// The minimum.
        min: usize,
    },
    /// An enum tag or version that is not defined.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// The enum.
        what: &'static str,
        /// The byte read.
        tag: u8,
    },
    /// A value outside its domain (e.g. a bad currency symbol, an address of an unknown type).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why.
        why: &'static str,
    },
    /// Elements that must be strictly ascending are not (unsorted or duplicated).
    #[error("{0} are not in canonical order (sorted, no duplicates)")]
    NotCanonicalOrder(&'static str),
}

/// A value with a canonical encoding.
pub trait Encode {
    /// Appends the canonical encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The canonical encoding as a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// Reads one value, leaving the reader after it.
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

/// Decodes exactly one value from `bytes`, refusing trailing bytes.
pub fn decode_exact<T: Decode>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut r = Reader::new(bytes);
    let value = T::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// A cursor over untrusted bytes. Every read is bounds-checked and returns an error, never panics.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not yet read.
    pub const fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next byte, not consumed.
    pub fn peek_u8(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    /// Fails unless every byte was read.
    pub const fn finish(&self) -> Result<(), CodecError> {
        if self.bytes.is_empty() { Ok(()) } else { Err(CodecError::TrailingBytes(self.bytes.len())) }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::UnexpectedEnd(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian i16.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, CodecError> {
        Ok(i16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A little-endian i64.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A boolean: exactly 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::Invalid { what, why: "a boolean is 0 or 1" }),
        }
    }

    /// A one-byte count, checked against `min..=max` before anything is allocated.
    pub fn count_u8(&mut self, what: &'static str, min: usize, max: usize) -> Result<usize, CodecError> {
        let n = usize::from(self.u8(what)?);
        check_count(what, n, min, max)
    }

    /// A four-byte count, checked against `min..=max` before anything is allocated.
    pub fn count_u32(&mut self, what: &'static str, min: usize, max: usize) -> Result<usize, CodecError> {
        let n = self.u32(what)? as usize;
        check_count(what, n, min, max)
    }

    /// `n` values, where `n` has already been checked against its limit.
    pub fn items<T: Decode>(&mut self, n: usize) -> Result<Vec<T>, CodecError> {
        // Each item takes at least one byte, so a count larger than the rest of the input is
        // refused before it sizes an allocation.
        if n > self.bytes.len() {
            return Err(CodecError::UnexpectedEnd("items"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }
}

fn check_count(what: &'static str, n: usize, min: usize, max: usize) -> Result<usize, CodecError> {
    if n > max {
        return Err(CodecError::OverLimit { what, got: n, max });
    }
    if n < min {
        return Err(CodecError::UnderLimit { what, got: n, min });
    }
    Ok(n)
}

/// Fails unless `items` is strictly ascending by `key` (sorted, no duplicates).
pub fn check_strictly_ascending<T, K: Ord>(
    items: &[T],
    what: &'static str,
    key: impl Fn(&T) -> K,
) -> Result<(), CodecError> {
    if items.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        Ok(())
    } else {
        Err(CodecError::NotCanonicalOrder(what))
    }
}

/// Appends a count that the caller guarantees fits the limit it is decoded against.
pub fn put_count_u8(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n <= u8::MAX as usize, "count {n} does not fit a byte");
    out.push(n as u8);
}

/// Appends a four-byte count.
pub fn put_count_u32(out: &mut Vec<u8>, n: usize) {
    debug_assert!(u32::try_from(n).is_ok(), "count {n} does not fit four bytes");
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

impl Encode for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Decode for u64 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.u64("u64")
    }
}

impl Encode for crate::Hash {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for crate::Hash {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self(r.array("hash")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("x"), Ok(0x0201));
        assert_eq!(r.u16("y"), Err(CodecError::UnexpectedEnd("y")));
        assert_eq!(r.u8("z"), Ok(3));
        assert!(r.finish().is_ok());
    }

    #[test]
    fn counts_are_checked_before_allocation() {
        let mut r = Reader::new(&[200]);
        assert!(matches!(r.count_u8("n", 0, 10), Err(CodecError::OverLimit { got: 200, .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        let n = r.count_u32("n", 0, usize::MAX).unwrap();
        assert_eq!(r.items::<u64>(n), Err(CodecError::UnexpectedEnd("items")));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert_eq!(decode_exact::<u64>(&[0; 9]), Err(CodecError::TrailingBytes(1)));
        assert_eq!(decode_exact::<u64>(&7u64.to_le_bytes()), Ok(7));
    }

    #[test]
    fn booleans_are_canonical() {
        assert!(Reader::new(&[2]).bool("b").is_err());
        assert_eq!(Reader::new(&[1]).bool("b"), Ok(true));
    }
}
