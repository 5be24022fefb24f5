//! Taking a snapshot: one read transaction of a store, written out in the order the module
//! documentation gives.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    time::Instant,
};

use engine::{
    Hash,
    codec::{Encode, put_count_u32},
    ledger::LedgerHeader,
    merkle::{ChunkSummary, chunk_of, chunk_summary, root_of_chunks},
};

use super::{FORMAT, MAGIC, SnapshotReport, bad, put_record, set_changes_below};
use crate::{
    StoreError, StoreReader,
    layout::{Accounts, Meta, meta},
    reader::{self, read_meta},
    store::{Env, require_env},
    table::{Table, open},
    verify::open_read_only,
};

/// Takes a snapshot of the store in `dir` into the file `out` (created; refused if it exists),
/// read-only: a node may be running on the store (one read transaction sees one commit).
pub fn snapshot(dir: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<SnapshotReport, StoreError> {
    let dir = dir.as_ref();
    removed_on_error(out.as_ref(), |out| {
        require_env(dir)?;
        take(&open_read_only(dir)?, dir, out)
    })
}

/// [`snapshot`] of the store `reader` reads, from the process that has it open (its
/// environment cannot be opened twice in one process).
pub fn snapshot_of(reader: &StoreReader, out: impl AsRef<Path>) -> Result<SnapshotReport, StoreError> {
    removed_on_error(out.as_ref(), |out| take(reader.env(), Path::new("the store"), out))
}

/// `write(out)`, with the file removed if it fails (a file begun is not a snapshot; one that
/// existed before was never opened, and is left).
fn removed_on_error(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<SnapshotReport, StoreError>,
) -> Result<SnapshotReport, StoreError> {
    let existed = out.exists();
    let result = write(out);
    if result.is_err() && !existed {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// The snapshot of the store in `env` (named `dir` in errors) at its indexed height, in `out`.
fn take(env: &Env, dir: &Path, out: &Path) -> Result<SnapshotReport, StoreError> {
    let start = Instant::now();
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

    // The set changes, checked to lead from the genesis set to the set that certified H.
    let changes = set_changes_below(&txn, height)?;
    let parent = window.first().unwrap_or(&boundary);
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
    // 3. Ledger H whole, then the window down from H − 1 (ledgers by ids), then its boundary's
    // header: each record checks against the one before it as it arrives.
    buf.clear();
    head.encode(&mut buf);
    head_certificate.encode(&mut buf);
    put_count_u32(&mut buf, head_block.len());
    for tx in &head_block {
        tx.encode(&mut buf);
    }
    let mut window_ids = head_block.len() as u64;
    bytes += put_record(&mut w, &buf, "the snapshot's ledger")?;
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
    boundary.encode(&mut buf);
    bytes += put_record(&mut w, &buf, "the window's boundary header")?;
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
