//! The tables and their codecs: everything that fixes the bytes on disk.
//!
//! Keys are fixed-width and big-endian so MDBX's byte order is numeric order (appends by height
//! and expiration land at the end of their table). Values use the engine's canonical codec, and
//! every decode of stored bytes returns an error naming the table, never a panic. Every table
//! is created with MDBX's default flags (byte-ordered keys, one value a key). The bytes are
//! pinned by `format_tests.rs`.
//!
//! One file on purpose, at the size limit: the chain's tables and the codecs of their keys and
//! values are one format, versioned as one ([`SCHEMA_VERSION`]): a change of it reads in one
//! place.

use engine::{
    Address, Encode, Hash,
    account::Account,
    address::ADDRESS_LEN,
    codec::{Decode, Reader, decode_exact, put_count_u8, put_count_u32},
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    limits::BLOCK_TXS_MAX,
    tx::{SignedTransaction, TxId},
};

use crate::table::{DecodeValue, EncodeValue, Invalid, Key, Table};

/// Version of this layout; a store of another version is refused at open.
pub(crate) const SCHEMA_VERSION: u64 = 4;

/// Declares a table: a unit type implementing [`Table`].
macro_rules! table {
    ($(#[$doc:meta])* $name:ident = $text:literal, $key:ty => $value:ty, written as $write:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl Table for $name {
            const NAME: &'static str = $text;
            type Key = $key;
            type Value = $value;
            type Write<'a> = $write;
        }
    };
}
pub(crate) use table;

table!(
    /// The store's settings and pointers: a few named rows, each of its own type ([`MetaField`]).
    Meta = "meta", MetaKey => Vec<u8>, written as &'a [u8]
);
table!(
    /// Header ‖ certificate of each ledger, by height.
    Headers = "headers", u64 => (LedgerHeader, Certificate), written as (&'a LedgerHeader, &'a Certificate)
);
table!(
    /// Each ledger's transactions (a u32 count, then each signed transaction), by height.
    Blocks = "blocks", u64 => Vec<SignedTransaction>, written as &'a EncodedBlock
);
table!(
    /// Where each transaction sits.
    TxIndex = "tx_index", TxId => TxLocation, written as &'a TxLocation
);
table!(
    /// Every account, by raw address.
    Accounts = "accounts", Address => Account, written as &'a Account
);
table!(
    /// One row per (transaction, address of it), in chain order; each links to the address's
    /// previous row.
    History = "history", HistoryKey => HistoryValue, written as &'a HistoryValue
);
table!(
    /// Each address's newest `history` row.
    HistoryHeads = "history_heads", Address => TxLocation, written as &'a TxLocation
);
table!(
    /// The replay window: ids by expiration, values empty.
    Replay = "replay", ReplayKey => (), written as ()
);

/// Every table of the layout, created together by `Store::create` (the evidence tables are
/// created apart: see `evidence.rs`).
pub(crate) const TABLES: [&str; 8] = [
    Meta::NAME,
    Headers::NAME,
    Blocks::NAME,
    TxIndex::NAME,
    Accounts::NAME,
    History::NAME,
    HistoryHeads::NAME,
    Replay::NAME,
];

/// A row of the `meta` table: its key and the type of its value.
pub(crate) trait MetaField {
    const KEY: &'static [u8];
    type Value: DecodeValue;
    type Write<'a>: EncodeValue + Copy;
}

/// A key of `meta`: one of the [`MetaField`] keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetaKey(pub(crate) &'static [u8]);

/// The fields of `meta`.
pub(crate) mod meta {
    use engine::ledger::ValidatorSet;

    use super::{MetaField, MetaKey};

    macro_rules! field {
        ($(#[$doc:meta])* $name:ident = $key:literal, $value:ty, written as $write:ty) => {
            $(#[$doc])*
            pub(crate) struct $name;

            impl MetaField for $name {
                const KEY: &'static [u8] = $key;
                type Value = $value;
                type Write<'a> = $write;
            }
        };
    }

    field!(
        /// Layout version (u64, engine codec).
        SchemaVersion = b"schema_version", u64, written as &'a u64
    );
    field!(
        /// Chain id (UTF-8), a copy of the genesis's for a quick look.
        ChainId = b"chain_id", String, written as &'a str
    );
    field!(
        /// The genesis TOML text, byte for byte as given to `create`.
        Genesis = b"genesis", String, written as &'a str
    );
    field!(
        /// Height of the last committed ledger (u64, engine codec).
        HeadHeight = b"head_height", u64, written as &'a u64
    );
    field!(
        /// Height up to which `accounts`, `tx_index`, `history`, `history_heads` and `replay`
        /// are written (u64, engine codec).
        IndexedHeight = b"indexed_height", u64, written as &'a u64
    );
    field!(
        /// The validator set that certifies the ledger after the indexed height (engine codec).
        Validators = b"validators", ValidatorSet, written as &'a ValidatorSet
    );

    field!(
        /// 0: `tx_index`, `history` and `history_heads` are not kept (a validator's or a node's
        /// store: no query needs them there). Absent (every store that keeps them): kept.
        QueryIndexes = b"query_indexes", u64, written as &'a u64
    );

    field!(
        /// The lowest height above 0 whose header and block are kept: a pruning store deleted
        /// those of heights `1..first_kept` (genesis's are always kept). Absent: nothing pruned.
        FirstKept = b"first_kept", u64, written as &'a u64
    );

    /// Every key of `meta`.
    pub(crate) const KEYS: [MetaKey; 8] = [
        MetaKey(SchemaVersion::KEY),
        MetaKey(ChainId::KEY),
        MetaKey(Genesis::KEY),
        MetaKey(HeadHeight::KEY),
        MetaKey(IndexedHeight::KEY),
        MetaKey(Validators::KEY),
        MetaKey(QueryIndexes::KEY),
        MetaKey(FirstKept::KEY),
    ];

    // The keys as the tests poke them, written out as schema version 4 wrote them.
    #[cfg(test)]
    pub(crate) const SCHEMA_VERSION: &[u8] = b"schema_version";
    #[cfg(test)]
    pub(crate) const GENESIS: &[u8] = b"genesis";
    #[cfg(test)]
    pub(crate) const HEAD_HEIGHT: &[u8] = b"head_height";
    #[cfg(test)]
    pub(crate) const INDEXED_HEIGHT: &[u8] = b"indexed_height";
}

impl Key for MetaKey {
    type Bytes = &'static [u8];

    fn encode_key(&self) -> &'static [u8] {
        self.0
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        meta::KEYS.into_iter().find(|k| k.0 == bytes).ok_or_else(|| Invalid::layout("an unknown key"))
    }
}

/// Heights: big-endian, so MDBX's order is theirs.
impl Key for u64 {
    type Bytes = [u8; 8];

    fn encode_key(&self) -> [u8; 8] {
        self.to_be_bytes()
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        <[u8; 8]>::try_from(bytes)
            .map(u64::from_be_bytes)
            .map_err(|_| Invalid::layout("a height key is not 8 bytes"))
    }
}

impl Key for TxId {
    type Bytes = [u8; 32];

    fn encode_key(&self) -> [u8; 32] {
        self.0
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        parse_id(bytes)
    }
}

/// Raw addresses: type byte ‖ body.
impl Key for Address {
    type Bytes = [u8; ADDRESS_LEN];

    fn encode_key(&self) -> [u8; ADDRESS_LEN] {
        *self.raw()
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        <[u8; ADDRESS_LEN]>::try_from(bytes)
            .ok()
            .and_then(|raw| Address::from_raw(raw).ok())
            .ok_or_else(|| Invalid::layout(format!("the key {} is not an address", hex(bytes))))
    }
}

/// Value of `tx_index` and `history_heads`: height BE ‖ index BE.
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

    fn from_bytes(bytes: &[u8]) -> Result<Self, Invalid> {
        let (Some(height), Some(index)) = (be_u64(bytes.get(..8)), be_u32(bytes.get(8..))) else {
            return Err(Invalid::layout(format!(
                "a location is {TX_LOCATION_LEN} bytes, not {}",
                bytes.len()
            )));
        };
        Ok(Self { height, index })
    }
}

impl DecodeValue for TxLocation {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        Self::from_bytes(bytes)
    }
}

impl EncodeValue for TxLocation {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        copy_into(buf, &self.to_bytes())
    }
}

fn be_u64(bytes: Option<&[u8]>) -> Option<u64> {
    bytes.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes)
}

fn be_u32(bytes: Option<&[u8]>) -> Option<u32> {
    bytes.and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes)
}

/// `buf` holding `bytes` (a fixed-width value: no allocation once `buf` has grown).
fn copy_into<'b>(buf: &'b mut Vec<u8>, bytes: &[u8]) -> &'b [u8] {
    buf.clear();
    buf.extend_from_slice(bytes);
    buf
}

/// Key of `history`: height BE ‖ index BE ‖ address — in chain order, so rows append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryKey {
    pub(crate) at: TxLocation,
    pub(crate) address: Address,
}

pub(crate) const HISTORY_KEY_LEN: usize = TX_LOCATION_LEN + ADDRESS_LEN;

impl Key for HistoryKey {
    type Bytes = [u8; HISTORY_KEY_LEN];

    fn encode_key(&self) -> [u8; HISTORY_KEY_LEN] {
        let mut key = [0u8; HISTORY_KEY_LEN];
        key[..TX_LOCATION_LEN].copy_from_slice(&self.at.to_bytes());
        key[TX_LOCATION_LEN..].copy_from_slice(self.address.raw());
        key
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        if bytes.len() != HISTORY_KEY_LEN {
            return Err(Invalid::layout(format!("a key is {HISTORY_KEY_LEN} bytes, not {}", bytes.len())));
        }
        let (at, address) = bytes.split_at(TX_LOCATION_LEN);
        Ok(Self { at: TxLocation::from_bytes(at)?, address: Address::decode_key(address)? })
    }
}

/// Value of `history`: transaction id (32) ‖ previous location (12, all zero when none: ledger 0
/// holds no transaction).
pub(crate) const HISTORY_VALUE_LEN: usize = 32 + TX_LOCATION_LEN;

/// A `history` row's value: the transaction id and the previous location in the same address's
/// history, which chains an address's rows newest to oldest from its `history_heads` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryValue {
    pub(crate) id: TxId,
    /// The address's previous entry, if any.
    pub(crate) previous: Option<TxLocation>,
}

impl EncodeValue for HistoryValue {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        let mut out = [0u8; HISTORY_VALUE_LEN];
        out[..32].copy_from_slice(&self.id.0);
        if let Some(p) = self.previous {
            out[32..].copy_from_slice(&p.to_bytes());
        }
        copy_into(buf, &out)
    }
}

impl DecodeValue for HistoryValue {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        if bytes.len() != HISTORY_VALUE_LEN {
            return Err(Invalid::layout(format!(
                "a value is {HISTORY_VALUE_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let (id, previous) = bytes.split_at(32);
        let id = parse_id(id)?;
        let previous = TxLocation::from_bytes(previous)?;
        let previous = (previous != TxLocation::at_height(0)).then_some(previous);
        if previous.is_some_and(|p| p.height == 0) {
            return Err(Invalid::layout("a previous entry at height 0"));
        }
        Ok(Self { id, previous })
    }
}

/// Key of `replay`: expiration BE ‖ transaction id. Expirations are positive (they exceed a
/// ledger time after genesis), so the keys' byte order is their time order; the derived order
/// (expiration, then id) is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReplayKey {
    pub(crate) expiration_ms: i64,
    pub(crate) id: TxId,
}

pub(crate) const REPLAY_KEY_LEN: usize = 8 + 32;

impl ReplayKey {
    /// The replay key of a transaction; `None` for a negative expiration, which would not sort
    /// by time.
    pub(crate) fn new(expiration_ms: i64, id: TxId) -> Option<Self> {
        (expiration_ms >= 0).then_some(Self { expiration_ms, id })
    }
}

impl Key for ReplayKey {
    type Bytes = [u8; REPLAY_KEY_LEN];

    fn encode_key(&self) -> [u8; REPLAY_KEY_LEN] {
        let mut key = [0u8; REPLAY_KEY_LEN];
        // Non-negative by construction (`ReplayKey::new`, `decode_key`).
        key[..8].copy_from_slice(&(self.expiration_ms as u64).to_be_bytes());
        key[8..].copy_from_slice(&self.id.0);
        key
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, Invalid> {
        let corrupt =
            || Invalid::layout(format!("a key is {REPLAY_KEY_LEN} bytes of a positive expiration and an id"));
        let expiration_ms = be_u64(bytes.get(..8)).and_then(|e| i64::try_from(e).ok()).ok_or_else(corrupt)?;
        let id = bytes.get(8..).and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(corrupt)?;
        Ok(Self { expiration_ms, id: Hash(id) })
    }
}

/// The empty value of `replay` (stored bytes are not looked at).
impl DecodeValue for () {
    fn decode_value(_: &[u8]) -> Result<Self, Invalid> {
        Ok(())
    }
}

impl EncodeValue for () {
    fn encode_value<'b>(&'b self, _: &'b mut Vec<u8>) -> &'b [u8] {
        &[]
    }
}

/// A 32-byte id stored as a key or value.
fn parse_id(bytes: &[u8]) -> Result<TxId, Invalid> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash)
        .map_err(|_| Invalid::layout(format!("a transaction id is 32 bytes, not {}", bytes.len())))
}

/// Values in the engine's canonical codec, decoded whole.
macro_rules! engine_codec {
    ($($t:ty),*) => {$(
        impl DecodeValue for $t {
            fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
                Ok(decode_exact(bytes)?)
            }
        }

        impl EncodeValue for $t {
            fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
                buf.clear();
                self.encode(buf);
                buf
            }
        }
    )*};
}

engine_codec!(u64, Account, ValidatorSet);

/// Value of `headers`: the header's canonical bytes, then the certificate's.
impl DecodeValue for (LedgerHeader, Certificate) {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        let mut r = Reader::new(bytes);
        let header = LedgerHeader::decode(&mut r)?;
        let certificate = Certificate::decode(&mut r)?;
        r.finish()?;
        Ok((header, certificate))
    }
}

impl EncodeValue for (&LedgerHeader, &Certificate) {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        buf.clear();
        self.0.encode(buf);
        self.1.encode(buf);
        buf
    }
}

/// Value of `blocks`: a u32 count, then each signed transaction.
impl DecodeValue for Vec<SignedTransaction> {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        let mut r = Reader::new(bytes);
        let n = r.count_u32("block transactions", 0, BLOCK_TXS_MAX)?;
        let txs = r.items::<SignedTransaction>(n)?;
        r.finish()?;
        Ok(txs)
    }
}

/// A `blocks` value being built: encoded as its ids are computed (the block's encoding is built
/// anyway; re-encoding each transaction for its id would double the work).
#[derive(Debug)]
pub(crate) struct EncodedBlock(Vec<u8>);

impl EncodedBlock {
    /// A block of `count` transactions, with room for `capacity` bytes.
    pub(crate) fn new(count: usize, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity);
        begin_block(count, &mut bytes);
        Self(bytes)
    }

    /// Appends a signed transaction in its canonical form and returns its id, hashed from the
    /// unsigned prefix as it is written.
    pub(crate) fn push(&mut self, tx: &SignedTransaction, chain_id: &str) -> TxId {
        let out = &mut self.0;
        let start = out.len();
        tx.tx.encode(out);
        let id = engine::tx::id_of_unsigned_bytes(chain_id, &out[start..]);
        // `Signed = Transaction | n u8 | n × (public key | signature)` (engine `tx` module).
        put_count_u8(out, tx.signatures.len());
        for s in &tx.signatures {
            s.encode(out);
        }
        debug_assert_eq!(out[start..], tx.to_bytes()[..], "signed transaction layout");
        id
    }
}

impl EncodeValue for EncodedBlock {
    fn encode_value<'b>(&'b self, _: &'b mut Vec<u8>) -> &'b [u8] {
        &self.0
    }
}

/// Starts a block value: the transaction count.
pub(crate) fn begin_block(count: usize, out: &mut Vec<u8>) {
    put_count_u32(out, count);
}

/// Raw `meta` values (a field's own type decodes them: [`MetaField`]).
impl DecodeValue for Vec<u8> {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        Ok(bytes.to_vec())
    }
}

impl EncodeValue for [u8] {
    fn encode_value<'b>(&'b self, _: &'b mut Vec<u8>) -> &'b [u8] {
        self
    }
}

/// UTF-8 text of `meta`.
impl DecodeValue for String {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| Invalid::layout("is not UTF-8"))
    }
}

impl EncodeValue for str {
    fn encode_value<'b>(&'b self, _: &'b mut Vec<u8>) -> &'b [u8] {
        self.as_bytes()
    }
}

/// Lower-case hex of a key, for error messages (keys are at most 65 bytes; `meta` keys are
/// ASCII and shown as such).
pub(crate) fn hex(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_lowercase() || *b == b'_') {
        return String::from_utf8_lossy(key).into_owned();
    }
    key.iter().map(|b| format!("{b:02x}")).collect()
}

// The table names and the hand-written encoders of schema version 4, verbatim, for `tests.rs`:
// it pokes raw bytes made by them, so each of its reads checks that the typed codecs read what
// the old code wrote.
#[cfg(test)]
pub(crate) const META: &str = "meta";
#[cfg(test)]
pub(crate) const HEADERS: &str = "headers";
#[cfg(test)]
pub(crate) const BLOCKS: &str = "blocks";
#[cfg(test)]
pub(crate) const TX_INDEX: &str = "tx_index";
#[cfg(test)]
pub(crate) const ACCOUNTS: &str = "accounts";
#[cfg(test)]
pub(crate) const HISTORY: &str = "history";

/// Key of `headers` and `blocks`: the height, big-endian.
#[cfg(test)]
pub(crate) const fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

#[cfg(test)]
pub(crate) fn history_key(at: TxLocation, address: &Address) -> [u8; HISTORY_KEY_LEN] {
    let mut key = [0u8; HISTORY_KEY_LEN];
    key[..TX_LOCATION_LEN].copy_from_slice(&at.to_bytes());
    key[TX_LOCATION_LEN..].copy_from_slice(address.raw());
    key
}

#[cfg(test)]
impl HistoryValue {
    pub(crate) fn to_bytes(self) -> [u8; HISTORY_VALUE_LEN] {
        let mut out = [0u8; HISTORY_VALUE_LEN];
        out[..32].copy_from_slice(&self.id.0);
        if let Some(p) = self.previous {
            out[32..].copy_from_slice(&p.to_bytes());
        }
        out
    }
}

/// Value of `headers`: the header's canonical bytes, then the certificate's.
#[cfg(test)]
pub(crate) fn encode_header(header: &LedgerHeader, certificate: &Certificate) -> Vec<u8> {
    let mut out = Vec::with_capacity((1 + 8 + 8 + 4 * 32) + 1 + certificate.signatures.len() * 65);
    engine::Encode::encode(header, &mut out);
    engine::Encode::encode(certificate, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded<V: EncodeValue + ?Sized>(value: &V) -> Vec<u8> {
        value.encode_value(&mut Vec::new()).to_vec()
    }

    #[test]
    fn locations_order_like_their_bytes() {
        let a = TxLocation { height: 1, index: u32::MAX };
        let b = TxLocation { height: 2, index: 0 };
        assert!(a < b && a.to_bytes() < b.to_bytes());
        assert_eq!(a.next(), b);
        assert_eq!(TxLocation::decode_value(&encoded(&a)).unwrap(), a);
        assert!(TxLocation::decode_value(&[0; 11]).is_err());
    }

    #[test]
    fn replay_keys_sort_by_expiration() {
        let early = ReplayKey::new(1_000, Hash([0xff; 32])).unwrap();
        let late = ReplayKey::new(256_000, Hash([0; 32])).unwrap();
        assert!(early < late && early.encode_key() < late.encode_key());
        assert_eq!(ReplayKey::decode_key(&late.encode_key()).unwrap(), late);
        assert!(ReplayKey::new(-1, Hash::ZERO).is_none());
        assert!(ReplayKey::decode_key(&[0xff; REPLAY_KEY_LEN]).is_err(), "above i64::MAX");
        assert!(ReplayKey::decode_key(&[0; 12]).is_err());
    }

    #[test]
    fn history_values_round_trip_and_refuse_bad_bytes() {
        let id = Hash([3; 32]);
        for previous in [None, Some(TxLocation { height: 4, index: 9 })] {
            let v = HistoryValue { id, previous };
            assert_eq!(HistoryValue::decode_value(&encoded(&v)).unwrap(), v);
        }
        assert!(HistoryValue::decode_value(&[0; 43]).is_err());
        let mut at_genesis = encoded(&HistoryValue { id, previous: None });
        at_genesis[43] = 1; // height 0, index 1
        assert!(HistoryValue::decode_value(&at_genesis).is_err());
    }

    /// Each codec against the bytes schema version 4 wrote, spelled out.
    #[test]
    fn codecs_write_the_bytes_of_schema_version_4() {
        let address = Address::from_raw([1; ADDRESS_LEN]).unwrap();
        let at = TxLocation { height: 0x0102, index: 0x0304 };
        assert_eq!(0x0102u64.encode_key(), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(encoded(&at), [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4]);
        assert_eq!(encoded(&0x0102u64), [2, 1, 0, 0, 0, 0, 0, 0], "meta integers: engine codec, LE");
        assert_eq!(Hash([5; 32]).encode_key(), [5; 32]);
        let history = HistoryKey { at, address }.encode_key();
        assert_eq!(history[..12], at.to_bytes());
        assert_eq!(history[12..], *address.raw());
        assert_eq!(history, history_key(at, &address));
        let value = HistoryValue { id: Hash([7; 32]), previous: Some(at) };
        assert_eq!(encoded(&value)[..32], [7; 32]);
        assert_eq!(encoded(&value)[32..], at.to_bytes());
        assert_eq!(encoded(&HistoryValue { previous: None, ..value })[32..], [0; 12]);
        let replay = ReplayKey::new(0x0a0b, Hash([9; 32])).unwrap().encode_key();
        assert_eq!(replay[..8], [0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        assert_eq!(replay[8..], [9; 32]);
        assert_eq!(encoded(&()), b"");
        assert_eq!(encoded("text"), b"text");
        let mut block = EncodedBlock::new(0, 0);
        assert_eq!(encoded(&block), [0, 0, 0, 0]);
        block = EncodedBlock::new(0x0102, 0);
        assert_eq!(encoded(&block), [2, 1, 0, 0], "the count: engine codec, LE");
        let names: Vec<&str> = TABLES.to_vec();
        let old = ["meta", "headers", "blocks", "tx_index", "accounts", "history", "history_heads", "replay"];
        assert_eq!(names, old);
    }

    fn location() -> impl Strategy<Value = TxLocation> {
        (any::<u64>(), any::<u32>()).prop_map(|(height, index)| TxLocation { height, index })
    }

    fn address() -> impl Strategy<Value = Address> {
        (prop::sample::select(vec![1u8, 2, 3, 4, 6]), any::<[u8; 20]>())
            .prop_map(|(kind, body)| Address::new(engine::AddressType::from_byte(kind).unwrap(), body))
    }

    proptest! {
        /// Stored bytes are untrusted: any bytes decode to a value or an error, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
            let _ = u64::decode_key(&bytes);
            let _ = TxId::decode_key(&bytes);
            let _ = Address::decode_key(&bytes);
            let _ = HistoryKey::decode_key(&bytes);
            let _ = ReplayKey::decode_key(&bytes);
            let _ = MetaKey::decode_key(&bytes);
            let _ = TxLocation::decode_value(&bytes);
            let _ = HistoryValue::decode_value(&bytes);
            let _ = u64::decode_value(&bytes);
            let _ = Account::decode_value(&bytes);
            let _ = ValidatorSet::decode_value(&bytes);
            let _ = <(LedgerHeader, Certificate)>::decode_value(&bytes);
            let _ = Vec::<SignedTransaction>::decode_value(&bytes);
            let _ = String::decode_value(&bytes);
        }

        /// Keys and values read back as written, and keys sort as their values: MDBX's byte
        /// order is the order the writers append in.
        #[test]
        fn codecs_round_trip_and_keys_keep_their_order(
            (a, b) in (location(), location()),
            (x, y) in (address(), address()),
            (e, f) in (0..=i64::MAX, 0..=i64::MAX),
            id in any::<[u8; 32]>(),
            previous in prop::option::of(location().prop_filter("ledger 0 holds no transaction", |p| p.height > 0)),
        ) {
            prop_assert_eq!(u64::decode_key(&a.height.encode_key()).unwrap(), a.height);
            prop_assert_eq!(TxLocation::decode_value(&encoded(&a)).unwrap(), a);
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            let (ka, kb) = (HistoryKey { at: a, address: x }, HistoryKey { at: b, address: y });
            prop_assert_eq!(HistoryKey::decode_key(&ka.encode_key()).unwrap(), ka);
            prop_assert_eq!((a, x.raw()).cmp(&(b, y.raw())), ka.encode_key().cmp(&kb.encode_key()));
            let (ra, rb) = (ReplayKey::new(e, Hash(id)).unwrap(), ReplayKey::new(f, Hash::ZERO).unwrap());
            prop_assert_eq!(ReplayKey::decode_key(&ra.encode_key()).unwrap(), ra);
            prop_assert_eq!(ra.cmp(&rb), ra.encode_key().cmp(&rb.encode_key()));
            let value = HistoryValue { id: Hash(id), previous };
            prop_assert_eq!(HistoryValue::decode_value(&encoded(&value)).unwrap(), value);
        }
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(u64::decode_key(&[0; 7]).is_err());
        assert!(TxId::decode_key(&[0; 31]).is_err());
        assert!(Address::decode_key(&[0; 20]).is_err());
        assert!(HistoryKey::decode_key(&[0; 32]).is_err());
        assert!(MetaKey::decode_key(b"head").is_err());
        assert_eq!(MetaKey::decode_key(b"head_height").unwrap(), MetaKey(meta::HeadHeight::KEY));
    }
}
