//! `caasiope db stats`: what each table of a store holds and takes, and the data file's use —
//! the measure behind a role's storage budget (docs/PERFORMANCE.md).

use std::path::Path;

use crate::{
    StoreError, StoreReader, StoreSpace,
    evidence::{Evidence, EvidenceCounts},
    layout::TABLES,
    store::require_env,
    table::Table,
    verify::open_read_only,
};

/// One table's rows and pages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    /// The table's name.
    pub name: &'static str,
    /// Its rows.
    pub entries: u64,
    /// Its pages (branch, leaf and overflow) in bytes.
    pub bytes: u64,
    /// Its B-tree's depth.
    pub depth: u32,
}

/// Every table of a store, and its data file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// The page size, bytes.
    pub page_bytes: u32,
    /// The data file's size.
    pub file_bytes: u64,
    /// The bytes of it in use (pages allocated, less those free for reuse).
    pub used_bytes: u64,
    /// Free pages, bytes: reused by later writes before the file grows.
    pub free_bytes: u64,
    /// Height of the last committed ledger.
    pub head_height: u64,
    /// The tables, in the layout's order.
    pub tables: Vec<TableStats>,
}

/// The statistics of the store in `dir` (read-only; a node may be running on it).
pub fn stats(dir: impl AsRef<Path>) -> Result<StoreStats, StoreError> {
    let dir = dir.as_ref();
    require_env(dir)?;
    let reader = StoreReader::new(std::sync::Arc::new(open_read_only(dir)?));
    let StoreSpace { file_bytes, used_bytes, free_bytes } = reader.space()?;
    let env = reader.env();
    let page_bytes = env.stat()?.page_size();
    let txn = env.begin_ro_txn()?;
    let mut tables = Vec::new();
    for name in TABLES.into_iter().chain([Evidence::NAME, EvidenceCounts::NAME]) {
        // A store made before the evidence tables has none.
        let Ok(table) = txn.open_table(Some(name)) else { continue };
        let stat = txn.table_stat(&table)?;
        let pages = stat.branch_pages() + stat.leaf_pages() + stat.overflow_pages();
        tables.push(TableStats {
            name,
            entries: stat.entries() as u64,
            bytes: pages as u64 * u64::from(stat.page_size()),
            depth: stat.depth(),
        });
    }
    drop(txn);
    Ok(StoreStats {
        page_bytes,
        file_bytes,
        used_bytes,
        free_bytes,
        head_height: reader.head_height()?,
        tables,
    })
}
