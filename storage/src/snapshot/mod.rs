//! State snapshots: a store's certified state in one file, and a new store restored from one —
//! every part checked against what the chain certifies before anything is kept.
//!
//! A snapshot is taken at the store's indexed height `H` (the height its `accounts` table
//! holds) and holds, as length-prefixed records in this order:
//!
//! 1. the preamble: magic, format version, the genesis text, `H` and the record counts;
//! 2. every validator-set change below `H` (`set_changes`: the header that named a new set, its
//!    certificate, the set) — the path from the genesis set to the set that certified `H`;
//! 3. the replay window: the header of the last ledger at least `max_ttl` older than `H` (or
//!    genesis's), then each ledger after it below `H` as header and transaction ids (their
//!    certificates add nothing: the chain of hashes up to `H` binds them), then ledger `H`
//!    whole (header, certificate, block);
//! 4. the set that certifies the ledger after `H`;
//! 5. the manifest: the summary of every non-empty chunk of the state trie
//!    ([`engine::merkle::ChunkSummary`]);
//! 6. the chunks: each one's accounts in address order.
//!
//! [`restore`] trusts only the genesis the operator gives it. It follows the set changes from
//! the genesis set, each certified by the set before it; checks `H`'s certificate under the set
//! so reached; checks the window's headers form one chain ending at `H` and each ledger's ids
//! hash to its transaction root; checks the next set against `H`'s header, the manifest against
//! `H`'s state root ([`engine::merkle::root_of_chunks`]) and each chunk against its summary as
//! it is read. All of it goes into one write transaction committed only when every check has
//! passed, so a bad or truncated snapshot leaves no store. The certificates are only as good as
//! the sets that signed them: like any light client, this assumes every set kept less than a
//! third of its weight Byzantine while it was in force (and that retired validators' keys are
//! not used to sign another chain; see docs/DEPLOY.md).
//!
//! The replay window is kept by id: an id's expiration is taken as its ledger's time plus
//! `max_ttl` (its own is at most that; a transaction with that id past its expiration is refused
//! as expired anyway), except for ledger `H`'s, whose block is in the file.
//!
//! The restored store holds ledger `H` and genesis, as a pruned store does (its first kept
//! height is `H`); the node syncs the ledgers after it from its peers. It keeps neither the
//! transaction index nor the account history (an explorer replays from genesis).

mod restore;
mod take;
#[cfg(test)]
mod tests;

use std::{
    io::{Read, Write},
    path::Path,
};

use engine::{
    Hash,
    codec::{Decode, Encode, Reader, decode_exact},
    ledger::{Certificate, LedgerHeader, ValidatorSet},
};
use libmdbx::{NoWriteMap, RW, TableFlags, Transaction, WriteFlags};
pub use restore::{restore, restore_from};
pub use take::{snapshot, snapshot_of};

use crate::{
    StoreError,
    layout::table,
    table::{DecodeValue, EncodeValue, Invalid, Table, Txn, open},
};

table!(
    /// Each ledger whose header names a validator set other than its parent's: its header,
    /// certificate and the new set, by height. Never pruned: the path from the genesis set to
    /// today's, which a snapshot carries.
    SetChanges = "set_changes", u64 => SetChange, written as &'a SetChange
);

/// Largest record of a snapshot file (a chunk, the manifest, a window ledger's ids, ledger
/// `H`'s block): a length above it is refused before anything is allocated.
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 64 << 20;

/// First bytes of a snapshot file.
const MAGIC: &[u8; 16] = b"caasiope-state/1";
/// Format version of the file.
const FORMAT: u32 = 1;
/// Most set changes, window ledgers or chunks a preamble may announce (each is read before
/// anything is allocated for it; this only turns nonsense counts into a clear error).
const COUNT_MAX: usize = 1 << 24;

/// A ledger that named a new validator set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SetChange {
    pub(crate) header: LedgerHeader,
    pub(crate) certificate: Certificate,
    pub(crate) validators: ValidatorSet,
}

impl Encode for SetChange {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        self.certificate.encode(out);
        self.validators.encode(out);
    }
}

impl Decode for SetChange {
    fn decode(r: &mut Reader<'_>) -> Result<Self, engine::CodecError> {
        Ok(Self {
            header: LedgerHeader::decode(r)?,
            certificate: Certificate::decode(r)?,
            validators: ValidatorSet::decode(r)?,
        })
    }
}

impl DecodeValue for SetChange {
    fn decode_value(bytes: &[u8]) -> Result<Self, Invalid> {
        Ok(decode_exact(bytes)?)
    }
}

impl EncodeValue for SetChange {
    fn encode_value<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        buf.clear();
        self.encode(buf);
        buf
    }
}

pub(crate) fn create_tables(txn: &Transaction<'_, RW, NoWriteMap>) -> Result<(), StoreError> {
    txn.create_table(Some(SetChanges::NAME), TableFlags::default())?;
    Ok(())
}

/// Records ledger `header` (certified by `certificate`) as a set change if it names another set
/// than its parent `parent`, in the commit's write transaction.
pub(crate) fn record_set_change(
    txn: &Txn<'_, RW>,
    parent: &LedgerHeader,
    header: &LedgerHeader,
    certificate: &Certificate,
    validators: &ValidatorSet,
) -> Result<(), StoreError> {
    if header.validator_set_hash == parent.validator_set_hash {
        return Ok(());
    }
    let change =
        SetChange { header: *header, certificate: certificate.clone(), validators: validators.clone() };
    open::<SetChanges, RW>(txn)?.put(&header.height, &change, WriteFlags::APPEND, &mut Vec::new())
}

/// The set changes below `height` (none if the table does not exist: a store made before it).
fn set_changes_below<K: libmdbx::TransactionKind>(
    txn: &Txn<'_, K>,
    height: u64,
) -> Result<Vec<SetChange>, StoreError> {
    let table = match open::<SetChanges, K>(txn) {
        Ok(t) => t,
        Err(StoreError::Mdbx(libmdbx::Error::NotFound)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for row in table.cursor()?.rows(None) {
        let (h, change) = row?;
        if h >= height {
            break;
        }
        out.push(change);
    }
    Ok(out)
}

/// What a snapshot holds, and what taking or restoring it cost.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SnapshotReport {
    /// The height of the state.
    pub height: u64,
    /// The hash of ledger `height`.
    pub ledger_hash: Hash,
    /// Its state root.
    pub state_root: Hash,
    /// Accounts.
    pub accounts: u64,
    /// Non-empty chunks.
    pub chunks: u64,
    /// Validator-set changes since genesis.
    pub set_changes: u64,
    /// Ledgers of the replay window below `height` (ids only) and the ids they hold.
    pub window_ledgers: u64,
    /// Transaction ids in the replay window kept.
    pub window_ids: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Wall-clock seconds taken.
    pub seconds: f64,
    /// Of those, the seconds of a restore's last step, the store opened as a node opens it (its
    /// state rebuilt and checked); 0 for a snapshot taken.
    pub open_seconds: f64,
}

fn bad(why: impl Into<String>) -> StoreError {
    StoreError::Snapshot(why.into())
}

/// Writes one record: its length (u32 LE) and bytes.
fn put_record(out: &mut impl Write, bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    if bytes.len() > SNAPSHOT_RECORD_BYTES_MAX {
        return Err(bad(format!("{what} takes {} bytes, above the record limit", bytes.len())));
    }
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)?;
    Ok(4 + bytes.len() as u64)
}

/// Reads one record into `buf` (reused).
fn get_record<'b>(input: &mut impl Read, buf: &'b mut Vec<u8>, what: &str) -> Result<&'b [u8], StoreError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(|e| bad(format!("{what}: {e}")))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > SNAPSHOT_RECORD_BYTES_MAX {
        return Err(bad(format!("{what}: a record of {len} bytes, above the limit")));
    }
    buf.clear();
    buf.resize(len, 0);
    input.read_exact(buf).map_err(|e| bad(format!("{what}: {e}")))?;
    Ok(buf)
}

/// Decodes a whole record.
fn decode_record<T: Decode>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    decode_exact(bytes).map_err(|e| bad(format!("{what}: {e}")))
}

/// A snapshot file opened to serve its records by index, to peers restoring from it: its
/// records' places are read once; each record is then read on demand (positioned reads, from
/// any thread).
#[derive(Debug)]
pub struct SnapshotFile {
    file: std::fs::File,
    /// Each record's bytes: offset and length.
    records: Vec<(u64, u32)>,
    height: u64,
}

impl SnapshotFile {
    /// Opens the snapshot file at `path` (one this process wrote: only its framing and its
    /// preamble's height are read here).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let mut input = std::io::BufReader::new(&file);
        let mut records = Vec::new();
        let mut at = 0u64;
        let mut preamble = Vec::new();
        while at < size {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len);
            if records.is_empty() {
                preamble.resize(len as usize, 0);
                input.read_exact(&mut preamble)?;
            } else {
                std::io::Seek::seek_relative(&mut input, i64::from(len))?;
            }
            records.push((at + 4, len));
            at += 4 + u64::from(len);
        }
        if at != size {
            return Err(bad("the file ends inside a record"));
        }
        // Magic, format, genesis text, then the height.
        let mut r = Reader::new(&preamble);
        let e = |e: engine::CodecError| bad(format!("the preamble: {e}"));
        r.take(MAGIC.len() + 4, "magic and format").map_err(e)?;
        let n = r.count_u32("genesis bytes", 0, r.remaining()).map_err(e)?;
        r.take(n, "genesis").map_err(e)?;
        let height = r.u64("height").map_err(e)?;
        Ok(Self { file, records, height })
    }

    /// The snapshot's height.
    pub const fn height(&self) -> u64 {
        self.height
    }

    /// How many records the file holds.
    pub fn records(&self) -> u32 {
        u32::try_from(self.records.len()).unwrap_or(u32::MAX)
    }

    /// Record `i`'s bytes, `None` past the last.
    pub fn record(&self, i: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(&(offset, len)) = self.records.get(i as usize) else { return Ok(None) };
        let mut bytes = vec![0; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut bytes, offset)?;
        Ok(Some(bytes))
    }
}

/// Appends one record (length and bytes) to a snapshot file being received.
pub fn append_record(out: &mut impl Write, bytes: &[u8]) -> Result<(), StoreError> {
    put_record(out, bytes, "a record").map(drop)
}

/// Where a restore may be pinned: the hash of one ledger the operator trusts (learnt from
/// members out of band), which the snapshot's ledger must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedLedger {
    /// Height.
    pub height: u64,
    /// Ledger hash.
    pub hash: Hash,
}
