//! Table names, key layouts and value codecs: everything that fixes the bytes on disk.
//!
//! Keys are fixed-width and big-endian so MDBX's byte order is numeric order (appends by height
//! and expiration land at the end of their table). Values use the engine's canonical codec, and
//! every decode of stored bytes returns an error naming the table, never a panic.

use engine::{
    Address, CodecError, Hash,
    address::ADDRESS_LEN,
    codec::{Decode, Reader, decode_exact, put_count_u8, put_count_u32},
    ledger::{Certificate, LedgerHeader},
    limits::BLOCK_TXS_MAX,
    tx::{SignedTransaction, TxId},
};

use crate::StoreError;

/// Version of this layout; a store of another version is refused at open.
pub(crate) const SCHEMA_VERSION: u64 = 4;

pub(crate) const META: &str = "meta";
pub(crate) const HEADERS: &str = "headers";
pub(crate) const BLOCKS: &str = "blocks";
pub(crate) const TX_INDEX: &str = "tx_index";
pub(crate) const ACCOUNTS: &str = "accounts";
pub(crate) const HISTORY: &str = "history";
pub(crate) const HISTORY_HEADS: &str = "history_heads";
pub(crate) const REPLAY: &str = "replay";

/// Every table, created together by `Store::create`.
pub(crate) const TABLES: [&str; 8] =
    [META, HEADERS, BLOCKS, TX_INDEX, ACCOUNTS, HISTORY, HISTORY_HEADS, REPLAY];

/// Keys of the `meta` table.
pub(crate) mod meta {
    /// Layout version (u64, engine codec).
    pub(crate) const SCHEMA_VERSION: &[u8] = b"schema_version";
    /// Chain id (UTF-8), a copy of the genesis's for a quick look.
    pub(crate) const CHAIN_ID: &[u8] = b"chain_id";
    /// The genesis TOML text, byte for byte as given to `create`.
    pub(crate) const GENESIS: &[u8] = b"genesis";
    /// Height of the last committed ledger (u64, engine codec).
    pub(crate) const HEAD_HEIGHT: &[u8] = b"head_height";
    /// The validator set that certifies the ledger after the indexed height (engine codec).
    pub(crate) const VALIDATORS: &[u8] = b"validators";
    /// Height up to which `accounts`, `tx_index`, `history`, `history_heads` and `replay` are
    /// written (u64).
    pub(crate) const INDEXED_HEIGHT: &[u8] = b"indexed_height";
}

/// Key of `headers` and `blocks`: the height, big-endian.
pub(crate) const fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

/// Value of `tx_index`: height BE ‖ index BE.
pub(crate) const TX_LOCATION_LEN: usize = 12;

/// Where a transaction sits in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxLocation {
    /// Height of its ledger.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
}

impl TxLocation {
    /// The first position of ledger `height`: where a history page starting at that height
    /// begins.
    pub const fn at_height(height: u64) -> Self {
        Self { height, index: 0 }
    }

    /// The position right after this one: where the next history page begins.
    pub const fn next(self) -> Self {
        match self.index.checked_add(1) {
            Some(index) => Self { height: self.height, index },
            None => Self { height: self.height.saturating_add(1), index: 0 },
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; TX_LOCATION_LEN] {
        let mut out = [0u8; TX_LOCATION_LEN];
        out[..8].copy_from_slice(&self.height.to_be_bytes());
        out[8..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8], table: &'static str) -> Result<Self, StoreError> {
        let (Some(height), Some(index)) = (be_u64(bytes.get(..8)), be_u32(bytes.get(8..))) else {
            return Err(StoreError::Corrupt {
                table,
                why: format!("a location is {TX_LOCATION_LEN} bytes, not {}", bytes.len()),
            });
        };
        Ok(Self { height, index })
    }
}

fn be_u64(bytes: Option<&[u8]>) -> Option<u64> {
    bytes.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes)
}

fn be_u32(bytes: Option<&[u8]>) -> Option<u32> {
    bytes.and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes)
}

/// Key of `history`: height BE ‖ index BE ‖ address — in chain order, so rows append. The value
/// is [`HistoryValue`]: the transaction id and the previous location in the same address's
/// history, which chains an address's rows newest to oldest from its `history_heads` row.
pub(crate) const HISTORY_KEY_LEN: usize = TX_LOCATION_LEN + ADDRESS_LEN;

pub(crate) fn history_key(at: TxLocation, address: &Address) -> [u8; HISTORY_KEY_LEN] {
    let mut key = [0u8; HISTORY_KEY_LEN];
    key[..TX_LOCATION_LEN].copy_from_slice(&at.to_bytes());
    key[TX_LOCATION_LEN..].copy_from_slice(address.raw());
    key
}

/// Value of `history`: transaction id (32) ‖ previous location (12, all zero when none: ledger 0
/// holds no transaction).
pub(crate) const HISTORY_VALUE_LEN: usize = 32 + TX_LOCATION_LEN;

/// A `history` row's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryValue {
    pub(crate) id: TxId,
    /// The address's previous entry, if any.
    pub(crate) previous: Option<TxLocation>,
}

impl HistoryValue {
    pub(crate) fn to_bytes(self) -> [u8; HISTORY_VALUE_LEN] {
        let mut out = [0u8; HISTORY_VALUE_LEN];
        out[..32].copy_from_slice(&self.id.0);
        if let Some(p) = self.previous {
            out[32..].copy_from_slice(&p.to_bytes());
        }
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != HISTORY_VALUE_LEN {
            return Err(StoreError::Corrupt {
                table: HISTORY,
                why: format!("a value is {HISTORY_VALUE_LEN} bytes, not {}", bytes.len()),
            });
        }
        let id = parse_id(&bytes[..32], HISTORY)?;
        let previous = TxLocation::from_bytes(&bytes[32..], HISTORY)?;
        let previous = (previous != TxLocation::at_height(0)).then_some(previous);
        if previous.is_some_and(|p| p.height == 0) {
            return Err(StoreError::Corrupt { table: HISTORY, why: "a previous entry at height 0".into() });
        }
        Ok(Self { id, previous })
    }
}

/// Key of `replay`: expiration BE ‖ transaction id; the value is empty.
pub(crate) const REPLAY_KEY_LEN: usize = 8 + 32;

/// The replay key of a transaction. Expirations are positive (they exceed a ledger time after
/// genesis); a negative one would not sort by time, so it is refused.
pub(crate) fn replay_key(expiration_ms: i64, id: &TxId) -> Option<[u8; REPLAY_KEY_LEN]> {
    let expiration = u64::try_from(expiration_ms).ok()?;
    let mut key = [0u8; REPLAY_KEY_LEN];
    key[..8].copy_from_slice(&expiration.to_be_bytes());
    key[8..].copy_from_slice(&id.0);
    Some(key)
}

/// Reads a replay key back: (expiration, id).
pub(crate) fn parse_replay_key(key: &[u8]) -> Result<(i64, TxId), StoreError> {
    let corrupt = || StoreError::Corrupt {
        table: REPLAY,
        why: format!("a key is {REPLAY_KEY_LEN} bytes of a positive expiration and an id"),
    };
    let expiration = be_u64(key.get(..8)).and_then(|e| i64::try_from(e).ok()).ok_or_else(corrupt)?;
    let id = key.get(8..).and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(corrupt)?;
    Ok((expiration, Hash(id)))
}

/// A 32-byte id stored as a key or value.
pub(crate) fn parse_id(bytes: &[u8], table: &'static str) -> Result<TxId, StoreError> {
    <[u8; 32]>::try_from(bytes).map(Hash).map_err(|_| StoreError::Corrupt {
        table,
        why: format!("a transaction id is 32 bytes, not {}", bytes.len()),
    })
}

/// Value of `headers`: the header's canonical bytes, then the certificate's.
pub(crate) fn encode_header(header: &LedgerHeader, certificate: &Certificate) -> Vec<u8> {
    let mut out = Vec::with_capacity((1 + 8 + 8 + 4 * 32) + 1 + certificate.signatures.len() * 65);
    engine::Encode::encode(header, &mut out);
    engine::Encode::encode(certificate, &mut out);
    out
}

pub(crate) fn decode_header(bytes: &[u8]) -> Result<(LedgerHeader, Certificate), CodecError> {
    let mut r = Reader::new(bytes);
    let header = LedgerHeader::decode(&mut r)?;
    let certificate = Certificate::decode(&mut r)?;
    r.finish()?;
    Ok((header, certificate))
}

/// Appends a signed transaction in its canonical form and returns its id, hashed from the
/// unsigned prefix as it is written (the block's encoding is built anyway; re-encoding each
/// transaction for its id would double the work).
pub(crate) fn encode_tx_with_id(tx: &SignedTransaction, chain_id: &str, out: &mut Vec<u8>) -> TxId {
    let start = out.len();
    engine::Encode::encode(&tx.tx, out);
    let id = engine::tx::id_of_unsigned_bytes(chain_id, &out[start..]);
    // `Signed = Transaction | n u8 | n × (public key | signature)` (engine `tx` module).
    put_count_u8(out, tx.signatures.len());
    for s in &tx.signatures {
        engine::Encode::encode(s, out);
    }
    debug_assert_eq!(out[start..], engine::Encode::to_bytes(tx)[..], "signed transaction layout");
    id
}

/// Starts a block value: the transaction count.
pub(crate) fn begin_block(count: usize, out: &mut Vec<u8>) {
    put_count_u32(out, count);
}

/// Value of `blocks`: a u32 count, then each signed transaction.
pub(crate) fn decode_block(bytes: &[u8]) -> Result<Vec<SignedTransaction>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.count_u32("block transactions", 0, BLOCK_TXS_MAX)?;
    let txs = r.items::<SignedTransaction>(n)?;
    r.finish()?;
    Ok(txs)
}

/// Decodes a stored value of `table` with the engine codec, naming the table and key on failure.
pub(crate) fn decode_value<T: Decode>(
    table: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    decode_exact(bytes).map_err(|error| decode_error(table, key, error))
}

pub(crate) fn decode_error(table: &'static str, key: &[u8], error: CodecError) -> StoreError {
    StoreError::Decode { table, key: hex(key), error }
}

/// Lower-case hex of a key, for error messages (keys are at most 40 bytes; `meta` keys are
/// ASCII and shown as such).
pub(crate) fn hex(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_lowercase() || *b == b'_') {
        return String::from_utf8_lossy(key).into_owned();
    }
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_order_like_their_bytes() {
        let a = TxLocation { height: 1, index: u32::MAX };
        let b = TxLocation { height: 2, index: 0 };
        assert!(a < b && a.to_bytes() < b.to_bytes());
        assert_eq!(a.next(), b);
        assert_eq!(TxLocation::from_bytes(&a.to_bytes(), TX_INDEX).unwrap(), a);
        assert!(TxLocation::from_bytes(&[0; 11], TX_INDEX).is_err());
    }

    #[test]
    fn replay_keys_sort_by_expiration() {
        let early = replay_key(1_000, &Hash([0xff; 32])).unwrap();
        let late = replay_key(256_000, &Hash([0; 32])).unwrap();
        assert!(early < late);
        assert_eq!(parse_replay_key(&late).unwrap(), (256_000, Hash([0; 32])));
        assert!(replay_key(-1, &Hash::ZERO).is_none());
        assert!(parse_replay_key(&[0xff; REPLAY_KEY_LEN]).is_err(), "above i64::MAX");
        assert!(parse_replay_key(&[0; 12]).is_err());
    }

    #[test]
    fn history_values_round_trip_and_refuse_bad_bytes() {
        let id = Hash([3; 32]);
        for previous in [None, Some(TxLocation { height: 4, index: 9 })] {
            let v = HistoryValue { id, previous };
            assert_eq!(HistoryValue::from_bytes(&v.to_bytes()).unwrap(), v);
        }
        assert!(HistoryValue::from_bytes(&[0; 43]).is_err());
        let mut at_genesis = HistoryValue { id, previous: None }.to_bytes();
        at_genesis[43] = 1; // height 0, index 1
        assert!(HistoryValue::from_bytes(&at_genesis).is_err());
    }
}
