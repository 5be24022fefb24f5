//! Restoring a snapshot: each record read in the file's order and checked against what the
//! records before it established, from the operator's genesis; every row written into one write
//! transaction, committed only once the last check has passed.

use std::{
    fs::File,
    io::{BufReader, Read},
    path::Path,
    sync::Arc,
    time::Instant,
};

use engine::{
    Backend, Hash,
    account::Account,
    codec::{Decode, Reader},
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader, ValidatorSet},
    merkle::{CHUNK_PREFIXES, ChunkSummary, chunk_summary, root_of_chunks, tx_root},
    state::State,
    tx::{SignedTransaction, TxId},
};
use libmdbx::{RW, TableFlags, WriteFlags};
use rayon::prelude::*;

use super::{
    COUNT_MAX, FORMAT, MAGIC, SetChange, SetChanges, SnapshotReport, TrustedLedger, bad, decode_record,
    get_record,
};
use crate::{
    Durability, Store, StoreError, StoreOptions,
    layout::{
        Accounts, Blocks, EncodedBlock, Headers, Meta, Replay, ReplayKey, SCHEMA_VERSION, TABLES, meta,
    },
    store::{DATA_FILE, Env, open_env, require_env},
    table::{Txn, open},
};

/// Bytes of chunk records read before they are checked together on the rayon pool.
const CHECK_BATCH_BYTES: usize = 16 << 20;
/// Bytes of a manifest line: prefix u32, keys u64, hash.
const SUMMARY_BYTES: usize = 4 + 8 + 32;

/// Restores the snapshot `file` into a new store in `dir` (refused if it holds one), for the
/// chain of `genesis_toml` — the operator's copy, the only thing trusted — and, if given, at the
/// `trusted` ledger. What is checked: see `storage/src/snapshot/mod.rs`. The store is then
/// opened (its state rebuilt and checked against the certified root once more) and dropped.
pub fn restore(
    file: impl AsRef<Path>,
    dir: impl AsRef<Path>,
    genesis_toml: &str,
    trusted: Option<TrustedLedger>,
    durability: Durability,
) -> Result<SnapshotReport, StoreError> {
    let input = BufReader::with_capacity(1 << 20, File::open(file)?);
    restore_from(input, dir, genesis_toml, trusted, durability)
}

/// [`restore`] of a snapshot read from `input` as it arrives (from a peer, say): each record
/// is checked when it is read, so a snapshot that is not the chain's is refused at its first
/// wrong record, and nothing of it is kept.
pub fn restore_from(
    input: impl Read,
    dir: impl AsRef<Path>,
    genesis_toml: &str,
    trusted: Option<TrustedLedger>,
    durability: Durability,
) -> Result<SnapshotReport, StoreError> {
    let dir = dir.as_ref();
    if require_env(dir).is_ok() {
        return Err(StoreError::AlreadyExists(dir.to_owned()));
    }
    let made_dir = !dir.exists();
    let result = restore_into(Counted { input, bytes: 0 }, dir, genesis_toml, trusted, durability);
    if result.is_err() {
        // Nothing was committed: remove what the environment left (its files, and the
        // directory if this made it), so the restore may simply be run again.
        for name in [DATA_FILE, "mdbx.lck"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        if made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    input: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The chain being restored, and the snapshot being read.
struct Restore<'g, R> {
    genesis: Genesis,
    genesis_toml: &'g str,
    genesis_state: State,
    chain_id: String,
    input: Counted<R>,
    /// The current record's bytes.
    buf: Vec<u8>,
    /// Rows' bytes being written.
    wbuf: Vec<u8>,
}

/// What the preamble announces.
struct Preamble {
    height: u64,
    changes: usize,
    window: usize,
    chunks: usize,
}

/// Ledger `H` and what its window established.
struct Head {
    header: LedgerHeader,
    certificate: Certificate,
    block: EncodedBlock,
    /// `H`'s parent: its validator-set hash names the set that certified `H`.
    parent: LedgerHeader,
    window_ledgers: u64,
    window_ids: u64,
}

fn restore_into<R: Read>(
    input: Counted<R>,
    dir: &Path,
    genesis_toml: &str,
    trusted: Option<TrustedLedger>,
    durability: Durability,
) -> Result<SnapshotReport, StoreError> {
    let start = Instant::now();
    let genesis = Genesis::from_toml(genesis_toml)?;
    let mut r = Restore {
        chain_id: genesis.params.chain_id.clone(),
        genesis_state: State::from_genesis(&genesis),
        genesis,
        genesis_toml,
        input,
        buf: Vec::new(),
        wbuf: Vec::new(),
    };
    let preamble = r.preamble()?;
    let (set, changes) = r.set_changes(&preamble)?;

    let env = create_env(dir, durability)?;
    let txn = env.begin_rw_txn()?;
    for name in TABLES {
        txn.create_table(Some(name), TableFlags::default())?;
    }
    crate::store::create_later_tables(&txn)?;
    let head = r.head_and_window(&txn, &preamble, &set, trusted)?;
    let next: ValidatorSet = decode_record(
        get_record(&mut r.input, &mut r.buf, "the next validator set")?,
        "the next validator set",
    )?;
    if next.hash() != head.header.validator_set_hash {
        return Err(bad(format!("the next validator set is not the one ledger {} names", preamble.height)));
    }
    let manifest = r.manifest(&preamble, &head.header)?;
    let accounts = r.chunks(&txn, &manifest)?;
    let mut rest = [0u8; 1];
    if r.input.read(&mut rest)? != 0 {
        return Err(bad("bytes after the last chunk"));
    }
    r.write_ledgers_and_meta(&txn, &head, &changes, &next)?;
    txn.commit()?;
    drop(env);

    // Opened as a node would: the state rebuilt from the tables and checked against the root.
    let options = StoreOptions { durability, without_query_indexes: true, ..StoreOptions::default() };
    let opening = Instant::now();
    let (_, state) = Store::open_with(dir, options)?;
    let open_seconds = opening.elapsed().as_secs_f64();
    debug_assert_eq!(state.state_root(), head.header.state_root);
    Ok(SnapshotReport {
        height: preamble.height,
        ledger_hash: head.header.hash(&r.chain_id),
        state_root: head.header.state_root,
        accounts,
        chunks: manifest.len() as u64,
        set_changes: changes.len() as u64,
        window_ledgers: head.window_ledgers,
        window_ids: head.window_ids,
        bytes: r.input.bytes,
        seconds: start.elapsed().as_secs_f64(),
        open_seconds,
    })
}

impl<R: Read> Restore<'_, R> {
    /// The preamble: the format, this chain's genesis text, the height and the counts.
    fn preamble(&mut self) -> Result<Preamble, StoreError> {
        let rec = get_record(&mut self.input, &mut self.buf, "the preamble")?;
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
        if text != self.genesis_toml {
            // Compared parsed, never by building their genesis state: a peer's preamble could
            // name millions of generated accounts only to make this joiner build them.
            let theirs = Genesis::from_toml(text).map_err(|e| bad(format!("its genesis: {e}")))?;
            return Err(bad(if theirs.config == self.genesis.config {
                "the snapshot's genesis text differs from this one's (the same chain, written otherwise): use the chain's genesis file as it was given"
            } else {
                "the snapshot is of another chain: its genesis differs from this one"
            }));
        }
        let height = r.u64("height").map_err(e)?;
        let changes = r.count_u32("set changes", 0, COUNT_MAX).map_err(e)?;
        let window = r.count_u32("window ledgers", 0, COUNT_MAX).map_err(e)?;
        let chunks = r.count_u32("chunks", 0, CHUNK_PREFIXES as usize).map_err(e)?;
        r.finish().map_err(e)?;
        if height == 0 {
            return Err(bad("a snapshot of genesis"));
        }
        Ok(Preamble { height, changes, window, chunks })
    }

    /// The set changes, each certified by the set before it from the genesis set: the set they
    /// lead to, and the changes.
    fn set_changes(&mut self, p: &Preamble) -> Result<(ValidatorSet, Vec<SetChange>), StoreError> {
        let mut set = self.genesis.validators.clone();
        let mut changes = Vec::with_capacity(p.changes.min(1024));
        let mut last = 0u64;
        for _ in 0..p.changes {
            let c: SetChange =
                decode_record(get_record(&mut self.input, &mut self.buf, "a set change")?, "a set change")?;
            let at = c.header.height;
            if at <= last || at >= p.height {
                return Err(bad(format!("set change at {at}: out of order or not below {}", p.height)));
            }
            c.certificate.verify_header(&set, &self.chain_id, &c.header, Backend::Libsecp256k1).map_err(
                |e| bad(format!("the set change at {at} is not certified by the set before it: {e}")),
            )?;
            if c.validators.hash() != c.header.validator_set_hash {
                return Err(bad(format!("the set change at {at} is not the set its header names")));
            }
            set = c.validators.clone();
            last = at;
            changes.push(c);
        }
        Ok((set, changes))
    }

    /// Ledger `H`, certified by `set`, its block whole; then the window down from `H − 1`, each
    /// header the parent of the one before it and its ids under its root, kept as the replay
    /// window; then the window's boundary. Every record is checked as it arrives.
    fn head_and_window(
        &mut self,
        txn: &Txn<'_, RW>,
        p: &Preamble,
        set: &ValidatorSet,
        trusted: Option<TrustedLedger>,
    ) -> Result<Head, StoreError> {
        let rec = get_record(&mut self.input, &mut self.buf, "the snapshot's ledger")?;
        let mut r = Reader::new(rec);
        let e = |e: engine::CodecError| bad(format!("the snapshot's ledger: {e}"));
        let header = LedgerHeader::decode(&mut r).map_err(e)?;
        let certificate = Certificate::decode(&mut r).map_err(e)?;
        let n = r.count_u32("transactions", 0, engine::limits::BLOCK_TXS_MAX).map_err(e)?;
        let block: Vec<SignedTransaction> = r.items(n).map_err(e)?;
        r.finish().map_err(e)?;
        let height = p.height;
        if header.height != height {
            return Err(bad(format!(
                "the snapshot's ledger is {}, its preamble says {height}",
                header.height
            )));
        }
        certificate
            .verify_header(set, &self.chain_id, &header, Backend::Libsecp256k1)
            .map_err(|e| bad(format!("ledger {height} is not certified: {e}")))?;
        if let Some(t) = trusted {
            if t.height != height || t.hash != header.hash(&self.chain_id) {
                return Err(bad(format!(
                    "the snapshot's ledger {height} is not the trusted ledger {} {}",
                    t.height, t.hash
                )));
            }
        }
        let mut encoded = EncodedBlock::new(block.len(), 0);
        let ids: Vec<TxId> = block.iter().map(|tx| encoded.push(tx, &self.chain_id)).collect();
        if tx_root(&ids) != header.tx_root {
            return Err(bad(format!("the block of ledger {height} is not the one its header commits to")));
        }
        // The root commits to the ids, which leave the signatures out: the block is kept and
        // served to peers, so every signature is checked too.
        let chain_id = &self.chain_id;
        block.par_iter().zip(&ids).try_for_each(|(tx, id)| {
            engine::validate::verify_signatures(tx, id, chain_id, Backend::Libsecp256k1)
                .map(drop)
                .map_err(|e| bad(format!("ledger {height}, transaction {id}: {e}")))
        })?;
        let t_replay = open::<Replay, RW>(txn)?;
        let mut window_ids = 0u64;
        for (tx, id) in block.iter().zip(&ids) {
            if let Some(key) = ReplayKey::new(tx.tx.expiration_ms, *id) {
                if tx.tx.expiration_ms > header.timestamp_ms {
                    t_replay.put(&key, (), WriteFlags::UPSERT, &mut self.wbuf)?;
                    window_ids += 1;
                }
            }
        }

        let max_ttl = self.genesis.params.max_ttl_ms;
        let oldest = header.timestamp_ms.saturating_sub(max_ttl);
        // The set that certified H is the one its parent names.
        let names_the_set = |parent: &LedgerHeader| {
            if parent.validator_set_hash == set.hash() {
                Ok(())
            } else {
                Err(bad(format!(
                    "the set changes do not lead to the set of ledger {height} (a change is missing)"
                )))
            }
        };
        let mut child = header;
        let mut parent = None;
        for _ in 0..p.window {
            let rec = get_record(&mut self.input, &mut self.buf, "a window ledger")?;
            let mut r = Reader::new(rec);
            let e = |e: engine::CodecError| bad(format!("a window ledger: {e}"));
            let ledger = LedgerHeader::decode(&mut r).map_err(e)?;
            let n = r.count_u32("ids", 0, engine::limits::BLOCK_TXS_MAX).map_err(e)?;
            let ids: Vec<TxId> = r.items::<Hash>(n).map_err(e)?;
            r.finish().map_err(e)?;
            follows(&child, &ledger, &self.chain_id)?;
            if child.height == height {
                names_the_set(&ledger)?;
                parent = Some(ledger);
            }
            if ledger.timestamp_ms <= oldest {
                return Err(bad(format!("ledger {} is older than the replay window", ledger.height)));
            }
            if tx_root(&ids) != ledger.tx_root {
                return Err(bad(format!(
                    "the ids of ledger {} are not those its header commits to",
                    ledger.height
                )));
            }
            let expiration = ledger.timestamp_ms.saturating_add(max_ttl);
            for id in ids {
                if let Some(key) = ReplayKey::new(expiration, id) {
                    t_replay.put(&key, (), WriteFlags::UPSERT, &mut self.wbuf)?;
                    window_ids += 1;
                }
            }
            child = ledger;
        }
        let boundary: LedgerHeader = decode_record(
            get_record(&mut self.input, &mut self.buf, "the window's boundary header")?,
            "the window's boundary header",
        )?;
        follows(&child, &boundary, &self.chain_id)?;
        if child.height == height {
            names_the_set(&boundary)?;
        }
        if boundary.height == 0 {
            if boundary != *self.genesis_state.head() {
                return Err(bad("the window ends at a genesis header other than this genesis's"));
            }
        } else if boundary.timestamp_ms > oldest {
            return Err(bad("the replay window ends too early: it must reach max_ttl back"));
        }
        let parent = parent.unwrap_or(boundary);
        Ok(Head { header, certificate, block: encoded, parent, window_ledgers: p.window as u64, window_ids })
    }

    /// The manifest, checked to hash to `head`'s state root.
    fn manifest(&mut self, p: &Preamble, head: &LedgerHeader) -> Result<Vec<ChunkSummary>, StoreError> {
        let rec = get_record(&mut self.input, &mut self.buf, "the manifest")?;
        if rec.len() != p.chunks * SUMMARY_BYTES {
            return Err(bad(format!("the manifest holds {} bytes, not {} summaries", rec.len(), p.chunks)));
        }
        let manifest: Vec<ChunkSummary> = rec
            .chunks_exact(SUMMARY_BYTES)
            .map(|s| {
                let (prefix, rest) = s.split_at(4);
                let (keys, hash) = rest.split_at(8);
                ChunkSummary {
                    prefix: u32::from_le_bytes(prefix.try_into().unwrap_or_default()),
                    keys: u64::from_le_bytes(keys.try_into().unwrap_or_default()),
                    hash: Hash(hash.try_into().unwrap_or_default()),
                }
            })
            .collect();
        let root = root_of_chunks(&manifest).map_err(|e| bad(format!("the manifest: {e}")))?;
        if root != head.state_root {
            return Err(bad(format!("the manifest does not hash to ledger {}'s state root", p.height)));
        }
        Ok(manifest)
    }

    /// The chunks, each against its summary, appended in address order: read a batch at a
    /// time (bounded in bytes), checked on every core, written in order. Returns the accounts
    /// written.
    fn chunks(&mut self, txn: &Txn<'_, RW>, manifest: &[ChunkSummary]) -> Result<u64, StoreError> {
        let t_accounts = open::<Accounts, RW>(txn)?;
        let mut accounts = 0u64;
        let mut batch: Vec<(&ChunkSummary, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut chunks = manifest.iter().peekable();
        while let Some(s) = chunks.next() {
            let mut rec = Vec::new();
            get_record(&mut self.input, &mut rec, "a chunk")?;
            batch_bytes += rec.len();
            batch.push((s, rec));
            if batch_bytes < CHECK_BATCH_BYTES && chunks.peek().is_some() {
                continue;
            }
            let checked: Vec<Result<Vec<Account>, StoreError>> =
                batch.par_iter().map(|(s, rec)| check_chunk(s, rec)).collect();
            for chunk in checked {
                for a in chunk? {
                    t_accounts.put(&a.address, &a, WriteFlags::APPEND, &mut self.wbuf)?;
                    accounts += 1;
                }
            }
            batch.clear();
            batch_bytes = 0;
        }
        Ok(accounts)
    }

    /// The rest of a pruned store at `H`: genesis's ledger and `H`'s, the set changes (and
    /// `H`'s own if it names a new set), and `meta`.
    fn write_ledgers_and_meta(
        &mut self,
        txn: &Txn<'_, RW>,
        head: &Head,
        changes: &[SetChange],
        next: &ValidatorSet,
    ) -> Result<(), StoreError> {
        let height = head.header.height;
        let buf = &mut self.wbuf;
        let t_headers = open::<Headers, RW>(txn)?;
        let t_blocks = open::<Blocks, RW>(txn)?;
        t_headers.put(&0, (self.genesis_state.head(), &Certificate::default()), WriteFlags::APPEND, buf)?;
        t_blocks.put(&0, &EncodedBlock::new(0, 4), WriteFlags::APPEND, buf)?;
        t_headers.put(&height, (&head.header, &head.certificate), WriteFlags::APPEND, buf)?;
        t_blocks.put(&height, &head.block, WriteFlags::APPEND, buf)?;
        let t_changes = open::<SetChanges, RW>(txn)?;
        for c in changes {
            t_changes.put(&c.header.height, c, WriteFlags::APPEND, buf)?;
        }
        if head.header.validator_set_hash != head.parent.validator_set_hash {
            let c = SetChange {
                header: head.header,
                certificate: head.certificate.clone(),
                validators: next.clone(),
            };
            t_changes.put(&height, &c, WriteFlags::APPEND, buf)?;
        }
        let t_meta = open::<Meta, RW>(txn)?;
        let flags = WriteFlags::UPSERT;
        t_meta.put_field::<meta::SchemaVersion>(&SCHEMA_VERSION, flags)?;
        t_meta.put_field::<meta::ChainId>(&self.chain_id, flags)?;
        t_meta.put_field::<meta::Genesis>(self.genesis_toml, flags)?;
        t_meta.put_field::<meta::HeadHeight>(&height, flags)?;
        t_meta.put_field::<meta::IndexedHeight>(&height, flags)?;
        t_meta.put_field::<meta::Validators>(next, flags)?;
        t_meta.put_field::<meta::QueryIndexes>(&0, flags)?;
        t_meta.put_field::<meta::FirstKept>(&height, flags)?;
        Ok(())
    }
}

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
