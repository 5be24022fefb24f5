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

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::Path,
    sync::Arc,
    time::Instant,
};

use engine::{
    Backend, Hash,
    account::Account,
    codec::{Decode, Encode, Reader, decode_exact, put_count_u32},
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    merkle::{CHUNK_PREFIXES, ChunkSummary, chunk_of, chunk_summary, root_of_chunks, tx_root},
    state::State,
    tx::{SignedTransaction, TxId},
};
use libmdbx::{NoWriteMap, RW, TableFlags, Transaction, WriteFlags};
use rayon::prelude::*;

use crate::{
    Durability, Store, StoreError, StoreOptions,
    layout::{
        Accounts, Blocks, EncodedBlock, Headers, Meta, Replay, ReplayKey, SCHEMA_VERSION, TABLES, meta, table,
    },
    reader::{self, read_meta},
    store::{Env, open_env, require_env},
    table::{DecodeValue, EncodeValue, Invalid, Table, Txn, open},
    verify::open_read_only,
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

/// Creates the table in a store made before it existed.
pub(crate) fn ensure_tables(env: &Env) -> Result<(), StoreError> {
    let txn = env.begin_rw_txn()?;
    create_tables(&txn)?;
    txn.commit()?;
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

/// Takes a snapshot of the store in `dir` into the file `out` (created; refused if it exists),
/// read-only: a node may be running on the store (one read transaction sees one commit).
pub fn snapshot(dir: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<SnapshotReport, StoreError> {
    let out = out.as_ref();
    let existed = out.exists();
    let result = snapshot_into(dir.as_ref(), out);
    if result.is_err() && !existed {
        // A file begun is not a snapshot: removed (one that existed was never opened).
        let _ = std::fs::remove_file(out);
    }
    result
}

fn snapshot_into(dir: &Path, out: &Path) -> Result<SnapshotReport, StoreError> {
    let start = Instant::now();
    require_env(dir)?;
    let env = open_read_only(dir)?;
    let txn = env.begin_ro_txn()?;
    let m = read_meta(&txn, dir)?;
    let chain_id = m.genesis.params.chain_id.clone();
    let height = m.indexed_height;
    if height == 0 {
        return Err(bad("the store is at genesis: nothing to snapshot"));
    }
    let (head, head_certificate) = reader::header(&txn, height)?
        .ok_or_else(|| bad(format!("no header at the indexed height {height}")))?;
    let head_block = reader::block(&txn, height)?.ok_or_else(|| bad(format!("no block at {height}")))?;

    // The window: down from H to the last ledger at least max_ttl older (or genesis).
    let oldest_useful = head.timestamp_ms.saturating_sub(m.genesis.params.max_ttl_ms);
    let mut window: Vec<LedgerHeader> = Vec::new();
    let mut h = height - 1;
    let boundary = loop {
        let (header, _) = reader::header(&txn, h)?.ok_or_else(|| {
            bad(format!(
                "the replay window reaches ledger {h}, which this store no longer keeps (it keeps {}..): take the snapshot from a store that keeps max_ttl of ledgers",
                m.first_kept
            ))
        })?;
        if h == 0 || header.timestamp_ms <= oldest_useful {
            break header;
        }
        window.push(header);
        h -= 1;
    };
    window.reverse();

    // The set changes, checked to lead from the genesis set to the set that certified H.
    let changes = set_changes_below(&txn, height)?;
    let parent = window.last().unwrap_or(&boundary);
    let mut set_hash = m.genesis.validators.hash();
    for c in &changes {
        set_hash = c.validators.hash();
    }
    if set_hash != parent.validator_set_hash {
        return Err(bad(
            "this store does not record every validator-set change since genesis (it was made before they were recorded): take the snapshot from another",
        ));
    }

    let file = File::options().write(true).create_new(true).open(out)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = 0u64;
    let mut buf = Vec::new();

    let accounts_table = open::<Accounts, _>(&txn)?;
    // The manifest first needs every chunk's summary: one pass over the accounts for it, a
    // second to write them (both in key order, one chunk's entries held at a time).
    let mut manifest: Vec<ChunkSummary> = Vec::new();
    let mut entries: Vec<([u8; 21], Hash)> = Vec::new();
    let mut accounts = 0u64;
    let mut current: Option<u32> = None;
    for row in accounts_table.cursor()?.rows(None) {
        let (address, account) = row?;
        let account = reader::check_account(&address, account)?;
        let key = *address.raw();
        let prefix = chunk_of(&key);
        if current.is_some_and(|p| p != prefix) {
            manifest.push(summary(current, &entries)?);
            entries.clear();
        }
        current = Some(prefix);
        entries.push((key, account.leaf_hash()));
        accounts += 1;
    }
    if current.is_some() {
        manifest.push(summary(current, &entries)?);
    }
    let root = root_of_chunks(&manifest).map_err(|e| bad(e.to_string()))?;
    if root != head.state_root {
        return Err(StoreError::Corrupt {
            table: Accounts::NAME,
            why: format!("the accounts hash to {root}, not ledger {height}'s state root"),
        });
    }

    // 1. Preamble.
    buf.clear();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&FORMAT.to_le_bytes());
    let genesis_text =
        open::<Meta, _>(&txn)?.field::<meta::Genesis>()?.ok_or_else(|| bad("the store holds no genesis"))?;
    put_count_u32(&mut buf, genesis_text.len());
    buf.extend_from_slice(genesis_text.as_bytes());
    buf.extend_from_slice(&height.to_le_bytes());
    for n in [changes.len(), window.len(), manifest.len()] {
        put_count_u32(&mut buf, n);
    }
    bytes += put_record(&mut w, &buf, "the preamble")?;
    // 2. Set changes.
    for c in &changes {
        buf.clear();
        c.encode(&mut buf);
        bytes += put_record(&mut w, &buf, "a set change")?;
    }
    // 3. The window: boundary header, ledgers by ids, ledger H whole.
    buf.clear();
    boundary.encode(&mut buf);
    bytes += put_record(&mut w, &buf, "the window's first header")?;
    let mut window_ids = 0u64;
    for header in &window {
        let block = reader::block(&txn, header.height)?
            .ok_or_else(|| bad(format!("no block at {}", header.height)))?;
        buf.clear();
        header.encode(&mut buf);
        put_count_u32(&mut buf, block.len());
        for tx in &block {
            buf.extend_from_slice(&tx.id(&chain_id).0);
        }
        window_ids += block.len() as u64;
        bytes += put_record(&mut w, &buf, "a window ledger")?;
    }
    buf.clear();
    head.encode(&mut buf);
    head_certificate.encode(&mut buf);
    put_count_u32(&mut buf, head_block.len());
    for tx in &head_block {
        tx.encode(&mut buf);
    }
    window_ids += head_block.len() as u64;
    bytes += put_record(&mut w, &buf, "the snapshot's ledger")?;
    // 4. The next set.
    buf.clear();
    m.validators.encode(&mut buf);
    bytes += put_record(&mut w, &buf, "the next validator set")?;
    // 5. The manifest.
    buf.clear();
    for s in &manifest {
        buf.extend_from_slice(&s.prefix.to_le_bytes());
        buf.extend_from_slice(&s.keys.to_le_bytes());
        buf.extend_from_slice(&s.hash.0);
    }
    bytes += put_record(&mut w, &buf, "the manifest")?;
    // 6. The chunks.
    let mut cursor = accounts_table.cursor()?;
    let mut rows = cursor.rows(None);
    for s in &manifest {
        buf.clear();
        for _ in 0..s.keys {
            let (address, account) = rows.next().ok_or_else(|| bad("the accounts changed while read"))??;
            debug_assert_eq!(chunk_of(address.raw()), s.prefix);
            account.encode(&mut buf);
        }
        bytes += put_record(&mut w, &buf, "a chunk")?;
    }
    w.flush()?;
    w.into_inner().map_err(|e| StoreError::Io(e.into_error()))?.sync_all()?;
    Ok(SnapshotReport {
        height,
        ledger_hash: head.hash(&chain_id),
        state_root: head.state_root,
        accounts,
        chunks: manifest.len() as u64,
        set_changes: changes.len() as u64,
        window_ledgers: window.len() as u64,
        window_ids,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        open_seconds: 0.0,
    })
}

fn summary(prefix: Option<u32>, entries: &[([u8; 21], Hash)]) -> Result<ChunkSummary, StoreError> {
    chunk_summary(prefix.unwrap_or_default(), entries)
        .map_err(|e| StoreError::Corrupt { table: Accounts::NAME, why: e.to_string() })
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

/// Restores the snapshot `file` into a new store in `dir` (refused if it holds one), for the
/// chain of `genesis_toml` — the operator's copy, the only thing trusted — and, if given, at the
/// `trusted` ledger. What is checked: see `storage/src/snapshot.rs`. The store is then opened
/// (its state rebuilt and checked against the certified root once more) and dropped.
pub fn restore(
    file: impl AsRef<Path>,
    dir: impl AsRef<Path>,
    genesis_toml: &str,
    trusted: Option<TrustedLedger>,
    durability: Durability,
) -> Result<SnapshotReport, StoreError> {
    let (file, dir) = (file.as_ref(), dir.as_ref());
    if require_env(dir).is_ok() {
        return Err(StoreError::AlreadyExists(dir.to_owned()));
    }
    let made_dir = !dir.exists();
    let result = restore_into(file, dir, genesis_toml, trusted, durability);
    if result.is_err() {
        // Nothing was committed: remove what the environment left (its files, and the
        // directory if this made it), so the restore may simply be run again.
        for name in [crate::store::DATA_FILE, "mdbx.lck"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        if made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

fn restore_into(
    file: &Path,
    dir: &Path,
    genesis_toml: &str,
    trusted: Option<TrustedLedger>,
    durability: Durability,
) -> Result<SnapshotReport, StoreError> {
    let start = Instant::now();
    let genesis = Genesis::from_toml(genesis_toml)?;
    let chain_id = genesis.params.chain_id.clone();
    let genesis_state = State::from_genesis(&genesis);
    let bytes_total = std::fs::metadata(file)?.len();
    let mut input = BufReader::with_capacity(1 << 20, File::open(file)?);
    let mut buf = Vec::new();

    // 1. Preamble.
    let (height, n_changes, n_window, n_chunks) = {
        let rec = get_record(&mut input, &mut buf, "the preamble")?;
        let mut r = Reader::new(rec);
        let e = |e: engine::CodecError| bad(format!("the preamble: {e}"));
        if r.take(MAGIC.len(), "magic").map_err(e)? != MAGIC {
            return Err(bad("not a snapshot file"));
        }
        let format = r.u32("format").map_err(e)?;
        if format != FORMAT {
            return Err(bad(format!("format {format}, this build reads {FORMAT}")));
        }
        let n = r.count_u32("genesis bytes", 0, engine::limits::GENESIS_BYTES_MAX).map_err(e)?;
        let text = std::str::from_utf8(r.take(n, "genesis").map_err(e)?)
            .map_err(|_| bad("the genesis is not UTF-8"))?;
        if text != genesis_toml {
            let theirs = Genesis::from_toml(text).map_err(|e| bad(format!("its genesis: {e}")))?;
            return Err(bad(if State::from_genesis(&theirs).head_hash() == genesis_state.head_hash() {
                "the snapshot's genesis text differs from this one's (the same chain, written otherwise): use the chain's genesis file as it was given"
            } else {
                "the snapshot is of another chain: its genesis differs from this one"
            }));
        }
        let height = r.u64("height").map_err(e)?;
        let n_changes = r.count_u32("set changes", 0, COUNT_MAX).map_err(e)?;
        let n_window = r.count_u32("window ledgers", 0, COUNT_MAX).map_err(e)?;
        let n_chunks = r.count_u32("chunks", 0, CHUNK_PREFIXES as usize).map_err(e)?;
        r.finish().map_err(e)?;
        (height, n_changes, n_window, n_chunks)
    };
    if height == 0 {
        return Err(bad("a snapshot of genesis"));
    }

    // 2. The set changes, from the genesis set.
    let mut set = genesis.validators.clone();
    let mut changes = Vec::with_capacity(n_changes.min(1024));
    let mut last_change = 0u64;
    for _ in 0..n_changes {
        let c: SetChange = decode_record(get_record(&mut input, &mut buf, "a set change")?, "a set change")?;
        let at = c.header.height;
        if at <= last_change || at >= height {
            return Err(bad(format!("set change at {at}: out of order or not below {height}")));
        }
        c.certificate
            .verify_header(&set, &chain_id, &c.header, Backend::Libsecp256k1)
            .map_err(|e| bad(format!("the set change at {at} is not certified by the set before it: {e}")))?;
        if c.validators.hash() != c.header.validator_set_hash {
            return Err(bad(format!("the set change at {at} is not the set its header names")));
        }
        set = c.validators.clone();
        last_change = at;
        changes.push(c);
    }

    // 3. The window: one chain from the boundary to H, then H's certificate.
    let boundary: LedgerHeader = decode_record(
        get_record(&mut input, &mut buf, "the window's first header")?,
        "the window's first header",
    )?;
    if boundary.height == 0 && boundary != *genesis_state.head() {
        return Err(bad("the window starts at a genesis header other than this genesis's"));
    }
    let env = create_env(dir, durability)?;
    let txn = env.begin_rw_txn()?;
    for name in TABLES {
        txn.create_table(Some(name), TableFlags::default())?;
    }
    crate::evidence::create_tables(&txn)?;
    create_tables(&txn)?;
    let t_replay = open::<Replay, RW>(&txn)?;
    let max_ttl = genesis.params.max_ttl_ms;
    let mut previous = boundary;
    let mut window_ids = 0u64;
    let mut wbuf = Vec::new();
    for _ in 0..n_window {
        let rec = get_record(&mut input, &mut buf, "a window ledger")?;
        let mut r = Reader::new(rec);
        let e = |e: engine::CodecError| bad(format!("a window ledger: {e}"));
        let header = LedgerHeader::decode(&mut r).map_err(e)?;
        let n = r.count_u32("ids", 0, engine::limits::BLOCK_TXS_MAX).map_err(e)?;
        let mut ids: Vec<TxId> = r.items::<Hash>(n).map_err(e)?;
        r.finish().map_err(e)?;
        follows(&header, &previous, &chain_id)?;
        if tx_root(&ids) != header.tx_root {
            return Err(bad(format!(
                "the ids of ledger {} are not those its header commits to",
                header.height
            )));
        }
        // One expiration a ledger, rising with the ledgers' times: the ids sorted append.
        let expiration = header.timestamp_ms.saturating_add(max_ttl);
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if let Some(key) = ReplayKey::new(expiration, id) {
                t_replay.put(&key, (), WriteFlags::APPEND, &mut wbuf)?;
                window_ids += 1;
            }
        }
        previous = header;
    }
    let (head, certificate, block) = {
        let rec = get_record(&mut input, &mut buf, "the snapshot's ledger")?;
        let mut r = Reader::new(rec);
        let e = |e: engine::CodecError| bad(format!("the snapshot's ledger: {e}"));
        let header = LedgerHeader::decode(&mut r).map_err(e)?;
        let certificate = Certificate::decode(&mut r).map_err(e)?;
        let n = r.count_u32("transactions", 0, engine::limits::BLOCK_TXS_MAX).map_err(e)?;
        let block: Vec<SignedTransaction> = r.items(n).map_err(e)?;
        r.finish().map_err(e)?;
        (header, certificate, block)
    };
    if head.height != height {
        return Err(bad(format!("the snapshot's ledger is {}, its preamble says {height}", head.height)));
    }
    follows(&head, &previous, &chain_id)?;
    if previous.validator_set_hash != set.hash() {
        return Err(bad(format!(
            "the set changes do not lead to the set of ledger {height} (a change is missing)"
        )));
    }
    certificate
        .verify_header(&set, &chain_id, &head, Backend::Libsecp256k1)
        .map_err(|e| bad(format!("ledger {height} is not certified: {e}")))?;
    if let Some(t) = trusted {
        if t.height != height || t.hash != head.hash(&chain_id) {
            return Err(bad(format!(
                "the snapshot's ledger {height} is not the trusted ledger {} {}",
                t.height, t.hash
            )));
        }
    }
    if boundary.height != 0 && boundary.timestamp_ms > head.timestamp_ms.saturating_sub(max_ttl) {
        return Err(bad("the replay window starts too late: it must reach max_ttl back"));
    }
    let mut encoded = EncodedBlock::new(block.len(), 0);
    let ids: Vec<TxId> = block.iter().map(|tx| encoded.push(tx, &chain_id)).collect();
    if tx_root(&ids) != head.tx_root {
        return Err(bad(format!("the block of ledger {height} is not the one its header commits to")));
    }
    // The root commits to the ids, which leave the signatures out: the block is kept and
    // served to peers, so every signature is checked too.
    block.par_iter().zip(&ids).try_for_each(|(tx, id)| {
        engine::validate::verify_signatures(tx, id, &chain_id, Backend::Libsecp256k1)
            .map(drop)
            .map_err(|e| bad(format!("ledger {height}, transaction {id}: {e}")))
    })?;
    for (tx, id) in block.iter().zip(&ids) {
        if let Some(key) = ReplayKey::new(tx.tx.expiration_ms, *id) {
            if tx.tx.expiration_ms > head.timestamp_ms {
                t_replay.put(&key, (), WriteFlags::UPSERT, &mut wbuf)?;
                window_ids += 1;
            }
        }
    }

    // 4. The next set.
    let next: ValidatorSet =
        decode_record(get_record(&mut input, &mut buf, "the next validator set")?, "the next validator set")?;
    if next.hash() != head.validator_set_hash {
        return Err(bad(format!("the next validator set is not the one ledger {height} names")));
    }

    // 5. The manifest, against the certified state root.
    let manifest: Vec<ChunkSummary> = {
        let rec = get_record(&mut input, &mut buf, "the manifest")?;
        if rec.len() != n_chunks * 44 {
            return Err(bad(format!("the manifest holds {} bytes, not {n_chunks} summaries", rec.len())));
        }
        rec.chunks_exact(44)
            .map(|s| {
                let (prefix, rest) = s.split_at(4);
                let (keys, hash) = rest.split_at(8);
                ChunkSummary {
                    prefix: u32::from_le_bytes(prefix.try_into().unwrap_or_default()),
                    keys: u64::from_le_bytes(keys.try_into().unwrap_or_default()),
                    hash: Hash(hash.try_into().unwrap_or_default()),
                }
            })
            .collect()
    };
    let root = root_of_chunks(&manifest).map_err(|e| bad(format!("the manifest: {e}")))?;
    if root != head.state_root {
        return Err(bad(format!("the manifest does not hash to ledger {height}'s state root")));
    }

    // 6. The chunks, each against its summary, appended in address order: read a batch at a
    // time (bounded in bytes), checked on every core, written in order.
    let t_accounts = open::<Accounts, RW>(&txn)?;
    let mut accounts = 0u64;
    let mut batch: Vec<(&ChunkSummary, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut chunks = manifest.iter().peekable();
    while let Some(s) = chunks.next() {
        let mut rec = Vec::new();
        get_record(&mut input, &mut rec, "a chunk")?;
        batch_bytes += rec.len();
        batch.push((s, rec));
        if batch_bytes < CHECK_BATCH_BYTES && chunks.peek().is_some() {
            continue;
        }
        let checked: Vec<Result<Vec<Account>, StoreError>> =
            batch.par_iter().map(|(s, rec)| check_chunk(s, rec)).collect();
        for chunk in checked {
            for a in chunk? {
                t_accounts.put(&a.address, &a, WriteFlags::APPEND, &mut wbuf)?;
                accounts += 1;
            }
        }
        batch.clear();
        batch_bytes = 0;
    }
    let mut rest = [0u8; 1];
    if input.read(&mut rest)? != 0 {
        return Err(bad("bytes after the last chunk"));
    }

    // The tables and meta of a pruned store at H.
    let t_headers = open::<Headers, RW>(&txn)?;
    let t_blocks = open::<Blocks, RW>(&txn)?;
    t_headers.put(&0, (genesis_state.head(), &Certificate::default()), WriteFlags::APPEND, &mut wbuf)?;
    t_blocks.put(&0, &EncodedBlock::new(0, 4), WriteFlags::APPEND, &mut wbuf)?;
    t_headers.put(&height, (&head, &certificate), WriteFlags::APPEND, &mut wbuf)?;
    t_blocks.put(&height, &encoded, WriteFlags::APPEND, &mut wbuf)?;
    let t_changes = open::<SetChanges, RW>(&txn)?;
    for c in &changes {
        t_changes.put(&c.header.height, c, WriteFlags::APPEND, &mut wbuf)?;
    }
    if head.validator_set_hash != previous.validator_set_hash {
        let c = SetChange { header: head, certificate: certificate.clone(), validators: next.clone() };
        t_changes.put(&height, &c, WriteFlags::APPEND, &mut wbuf)?;
    }
    let t_meta = open::<Meta, RW>(&txn)?;
    let flags = WriteFlags::UPSERT;
    t_meta.put_field::<meta::SchemaVersion>(&SCHEMA_VERSION, flags)?;
    t_meta.put_field::<meta::ChainId>(&chain_id, flags)?;
    t_meta.put_field::<meta::Genesis>(genesis_toml, flags)?;
    t_meta.put_field::<meta::HeadHeight>(&height, flags)?;
    t_meta.put_field::<meta::IndexedHeight>(&height, flags)?;
    t_meta.put_field::<meta::Validators>(&next, flags)?;
    t_meta.put_field::<meta::QueryIndexes>(&0, flags)?;
    t_meta.put_field::<meta::FirstKept>(&height, flags)?;
    txn.commit()?;
    drop(env);

    // Opened as a node would: the state rebuilt from the tables and checked against the root.
    let options = StoreOptions { durability, without_query_indexes: true, ..StoreOptions::default() };
    let opening = Instant::now();
    let (_, state) = Store::open_with(dir, options)?;
    let open_seconds = opening.elapsed().as_secs_f64();
    debug_assert_eq!(state.state_root(), head.state_root);
    Ok(SnapshotReport {
        height,
        ledger_hash: head.hash(&chain_id),
        state_root: head.state_root,
        accounts,
        chunks: manifest.len() as u64,
        set_changes: changes.len() as u64,
        window_ledgers: n_window as u64,
        window_ids,
        bytes: bytes_total,
        seconds: start.elapsed().as_secs_f64(),
        open_seconds,
    })
}

/// Bytes of chunk records read before they are checked together on the rayon pool.
const CHECK_BATCH_BYTES: usize = 16 << 20;

/// The accounts of chunk `s`'s record, checked against its summary.
fn check_chunk(s: &ChunkSummary, rec: &[u8]) -> Result<Vec<Account>, StoreError> {
    let mut r = Reader::new(rec);
    let mut accounts = Vec::new();
    while r.remaining() > 0 {
        if accounts.len() as u64 >= s.keys {
            return Err(bad(format!("chunk {:#x} holds more accounts than its summary", s.prefix)));
        }
        accounts.push(Account::decode(&mut r).map_err(|e| bad(format!("chunk {:#x}: {e}", s.prefix)))?);
    }
    let entries: Vec<([u8; 21], Hash)> = accounts.iter().map(|a| (*a.address.raw(), a.leaf_hash())).collect();
    let found = chunk_summary(s.prefix, &entries).map_err(|e| bad(format!("chunk {:#x}: {e}", s.prefix)))?;
    if found != *s {
        return Err(bad(format!("chunk {:#x} is not the one the manifest lists", s.prefix)));
    }
    Ok(accounts)
}

/// `header` is the child of `parent`.
fn follows(header: &LedgerHeader, parent: &LedgerHeader, chain_id: &str) -> Result<(), StoreError> {
    if header.height != parent.height.wrapping_add(1)
        || header.previous != parent.hash(chain_id)
        || header.timestamp_ms <= parent.timestamp_ms
    {
        return Err(bad(format!("ledger {} does not follow ledger {}", header.height, parent.height)));
    }
    Ok(())
}

/// A new environment in `dir` (checked by the caller to hold no store).
fn create_env(dir: &Path, durability: Durability) -> Result<Arc<Env>, StoreError> {
    std::fs::create_dir_all(dir)?;
    Ok(Arc::new(open_env(dir, Some(durability))?))
}
