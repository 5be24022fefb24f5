//! Asynchronous replication of committed ledgers into ClickHouse: the SQL side of storage
//! (DESIGN §6).
//!
//! A [`Replicator`] reads committed ledgers from a [`LedgerSource`] (the store) and writes them
//! into five tables — `ledgers`, `transactions`, `legs`, `declarations`, `balance_changes` —
//! with several writer threads, each owning some of the tables and a small tokio runtime of its
//! own for the (async) ClickHouse client. It only reads the source, on its own threads: the
//! committing caller never waits for it.
//!
//! # Exactly once
//!
//! Every INSERT covers whole, contiguous ledgers of one table, in height order, as one block
//! (one `MergeTree` part: no `PARTITION BY`, fewer rows than the server's block). After an
//! INSERT whose last ledger left no row in that table, a checkpoint row `(table, height)` goes
//! into `replication_progress`. The server applies an INSERT whole or not at all — except that
//! one whose connection is cut in the middle of its body may be committed as a prefix of its
//! rows (ClickHouse 18.16 takes the early end of a chunked body for the end of the data). A
//! table therefore holds the rows of ledgers `0..R` and possibly part of ledger `R`'s. Each
//! writer resumes a table from `max(its max(height) + 1, its checkpoint + 1)` once the ledger
//! of its highest row, when no checkpoint covers it, has been counted against the source: an
//! incomplete one has its rows deleted (`ALTER TABLE … DELETE`, waited for) and is written
//! again. The ledgers between that point and `R` have no rows in the table, so writing them
//! again adds nothing. The writer re-reads that point from the server after every failure
//! too, and only once no INSERT of its own into the table still runs on the server (each
//! carries a `query_id` naming the table), so an INSERT whose outcome it never learnt (the
//! connection dropped) is neither written twice nor left short.
//!
//! # A cluster
//!
//! With [`ClickHouseConfig::cluster`], the tables are sharded: each name above is a
//! `Distributed` table over `<name>_local` tables on every shard, sharded by
//! `intDiv(height, shard_ledgers)`. The writer cuts its batches at those ranges, so every
//! INSERT (through the `Distributed` table, with `insert_distributed_sync = 1`) lands whole on one
//! shard, as one part, before it is acknowledged: the invariant above holds over the union of
//! the shards, which is what the resume reads through the `Distributed` tables.
//!
//! See `docs/ANALYTICS.md` for the schema, the sign convention of legs and example queries.

mod rows;
mod schema;
mod source;
mod status;
mod writer;

use std::{
    fmt,
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use engine::genesis::Genesis;

pub use schema::{ClusterStatements, create_cluster_statements, create_statements};
pub use source::{LedgerSource, SourceLedger};
pub use status::{ReplicationStatus, TableStatus};

use crate::StoreError;

/// Most writer threads: one per table.
pub const WRITERS_MAX: usize = Table::ALL.len();
/// Rows the server puts in one block by default (`max_insert_block_size`): an INSERT of fewer
/// rows is one block, so one part, so atomic.
pub const SERVER_BLOCK_ROWS: usize = 1_048_576;
/// Largest allowed `batch_rows_max`.
pub const BATCH_ROWS_LIMIT: usize = 500_000;
/// Largest allowed `batch_ledgers_max`.
pub const BATCH_LEDGERS_LIMIT: usize = 10_000;
/// First wait after a failure; doubled after each further failure up to the maximum.
pub const RETRY_BACKOFF_MIN_MS: u64 = 100;
/// Longest wait between two attempts.
pub const RETRY_BACKOFF_MAX_MS: u64 = 5_000;
/// Most shards of a cluster (each is asked about its running INSERTs at every resume).
pub const SHARDS_MAX: usize = 64;
/// Largest allowed `shard_ledgers`.
pub const SHARD_LEDGERS_LIMIT: u64 = 1_000_000;

const _: () = {
    // A batch of several ledgers never reaches the server's block size: it stays one part.
    assert!(BATCH_ROWS_LIMIT < SERVER_BLOCK_ROWS);
    assert!(RETRY_BACKOFF_MIN_MS <= RETRY_BACKOFF_MAX_MS);
};

/// A replicated table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// One row per ledger (height 0 is genesis).
    Ledgers,
    /// One row per transaction.
    Transactions,
    /// One row per input, output, fee debit and fee credit.
    Legs,
    /// One row per declaration (genesis ones at height 0).
    Declarations,
    /// One row per (ledger, address, currency) whose balance changed (genesis at height 0).
    BalanceChanges,
}

impl Table {
    /// Every table, in schema order.
    pub const ALL: [Self; 5] =
        [Self::Ledgers, Self::Transactions, Self::Legs, Self::Declarations, Self::BalanceChanges];

    /// The SQL name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ledgers => "ledgers",
            Self::Transactions => "transactions",
            Self::Legs => "legs",
            Self::Declarations => "declarations",
            Self::BalanceChanges => "balance_changes",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// Relative cost of writing the table (rows per transaction), heaviest first when tables
    /// are shared among writers.
    const fn weight(self) -> u8 {
        match self {
            Self::Legs => 4,
            Self::BalanceChanges => 3,
            Self::Transactions => 2,
            Self::Ledgers => 1,
            Self::Declarations => 0,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of the replicator: the `[clickhouse]` section of a node's configuration.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface of the server, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database of the tables (created if missing): `[A-Za-z_][A-Za-z0-9_]*`, at most 64.
    pub database: String,
    /// User, if not the server's default.
    pub user: Option<String>,
    /// Password of the user.
    pub password: Option<String>,
    /// Writer threads, 1 to [`WRITERS_MAX`]; the tables are shared among them.
    pub writers: usize,
    /// Tables to replicate (default all).
    pub tables: Vec<Table>,
    /// Most ledgers per INSERT, 1 to [`BATCH_LEDGERS_LIMIT`].
    pub batch_ledgers_max: usize,
    /// Rows per INSERT above which a batch takes no more ledgers, 1 to [`BATCH_ROWS_LIMIT`]
    /// (a single ledger with more rows is still one INSERT, and one block).
    pub batch_rows_max: usize,
    /// How often a caught-up writer looks for new ledgers ([`Replicator::notify`] wakes it
    /// sooner).
    pub poll_interval_ms: u64,
    /// Longest one request to the server may take before it counts as failed.
    pub request_timeout_ms: u64,
    /// The cluster (a name of the servers' `remote_servers`) to shard the tables over, `None`
    /// for one server: each table is then a `Distributed` table over `<table>_local` tables on
    /// every shard, and [`ClickHouseConfig::url`] the server the INSERTs and reads go through.
    pub cluster: Option<String>,
    /// With `cluster`: every shard's HTTP URL, in the cluster's shard order, at most
    /// [`SHARDS_MAX`]. The replicator creates the local tables on each (no `ON CLUSTER`: that
    /// needs ZooKeeper), deletes an incomplete ledger on each and looks there for its INSERTs
    /// still running.
    pub shards: Vec<String>,
    /// With `cluster`: consecutive ledgers one shard holds before the next shard's turn, 1 to
    /// [`SHARD_LEDGERS_LIMIT`]; the sharding key is `intDiv(height, shard_ledgers)`. A batch never
    /// spans two such ranges, so each INSERT lands whole on one shard. Fixed when the tables are
    /// created: the replicator refuses a `Distributed` table with another key.
    pub shard_ledgers: u64,
    /// Testing only: each writer thread ends abruptly, as if the process were killed, right
    /// after its n-th successful INSERT (data or checkpoint).
    #[cfg(any(test, feature = "test-utils"))]
    #[serde(skip)]
    pub crash_after_inserts: Option<u64>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "caasiope".into(),
            user: None,
            password: None,
            writers: 2,
            tables: Table::ALL.to_vec(),
            batch_ledgers_max: 1_000,
            batch_rows_max: 100_000,
            poll_interval_ms: 200,
            request_timeout_ms: 30_000,
            cluster: None,
            shards: Vec::new(),
            shard_ledgers: 1_000,
            #[cfg(any(test, feature = "test-utils"))]
            crash_after_inserts: None,
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("writers", &self.writers)
            .field("tables", &self.tables)
            .field("batch_ledgers_max", &self.batch_ledgers_max)
            .field("batch_rows_max", &self.batch_rows_max)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("cluster", &self.cluster)
            .field("shards", &self.shards)
            .field("shard_ledgers", &self.shard_ledgers)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Checks every setting against its bounds.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        let bad = |why: String| Err(AnalyticsError::Config(why));
        let is_http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if !is_http(&self.url) {
            return bad(format!("url {:?} is not http:// or https://", self.url));
        }
        if !is_identifier(&self.database) {
            return bad(format!("database {:?} is not [A-Za-z_][A-Za-z0-9_]*, at most 64", self.database));
        }
        match &self.cluster {
            None if !self.shards.is_empty() => return bad("shards are for a cluster: set cluster".into()),
            None => {}
            Some(cluster) => {
                if !is_identifier(cluster) {
                    return bad(format!("cluster {cluster:?} is not [A-Za-z_][A-Za-z0-9_]*, at most 64"));
                }
                if !(1..=SHARDS_MAX).contains(&self.shards.len()) {
                    return bad(format!("a cluster needs 1 to {SHARDS_MAX} shards (their URLs)"));
                }
                if let Some(url) = self.shards.iter().find(|u| !is_http(u)) {
                    return bad(format!("shard {url:?} is not http:// or https://"));
                }
                let mut urls: Vec<&String> = self.shards.iter().collect();
                urls.sort_unstable();
                urls.dedup();
                if urls.len() != self.shards.len() {
                    return bad("shards lists a URL twice".into());
                }
                if !(1..=SHARD_LEDGERS_LIMIT).contains(&self.shard_ledgers) {
                    return bad(format!(
                        "shard_ledgers {} is not 1 to {SHARD_LEDGERS_LIMIT}",
                        self.shard_ledgers
                    ));
                }
            }
        }
        if !(1..=WRITERS_MAX).contains(&self.writers) {
            return bad(format!("writers {} is not 1 to {WRITERS_MAX}", self.writers));
        }
        if self.tables.is_empty() {
            return bad("no table to replicate".into());
        }
        if !(1..=BATCH_LEDGERS_LIMIT).contains(&self.batch_ledgers_max) {
            return bad(format!(
                "batch_ledgers_max {} is not 1 to {BATCH_LEDGERS_LIMIT}",
                self.batch_ledgers_max
            ));
        }
        if !(1..=BATCH_ROWS_LIMIT).contains(&self.batch_rows_max) {
            return bad(format!("batch_rows_max {} is not 1 to {BATCH_ROWS_LIMIT}", self.batch_rows_max));
        }
        if self.poll_interval_ms == 0 || self.request_timeout_ms == 0 {
            return bad("poll_interval_ms and request_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

/// Whether `name` is safe in SQL unquoted: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 bytes.
fn is_identifier(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Why replication failed (every failure is counted and retried; only [`Replicator::start`]
/// returns one).
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A setting out of its bounds.
    #[error("clickhouse config: {0}")]
    Config(String),
    /// The server refused a request, or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A request took longer than `request_timeout_ms`.
    #[error("clickhouse: no answer within {0} ms")]
    Timeout(u64),
    /// The source could not be read.
    #[error("source: {0}")]
    Source(#[from] StoreError),
    /// The source lacks a ledger at or below its head.
    #[error("source has no ledger {0} although its head is above it")]
    MissingLedger(u64),
    /// A ledger whose rows cannot be formed.
    #[error("ledger {height}: {why}")]
    InvalidLedger {
        /// Its height.
        height: u64,
        /// What is wrong.
        why: String,
    },
    /// Something the writer started earlier on the server (an INSERT whose connection dropped,
    /// a deletion) has not ended: the table's position is read again later.
    #[error("clickhouse: {0}")]
    Unsettled(String),
    /// The database holds ledgers of another chain (or beyond the source's head).
    #[error("database holds another chain: {0}")]
    OtherChain(String),
    /// The servers or the tables are not what the configuration describes (a cluster whose
    /// shards are not the configured ones, a table sharded otherwise or not at all).
    #[error("clickhouse: {0}")]
    Layout(String),
    /// A thread or runtime could not be started.
    #[error("could not start a writer: {0}")]
    Start(#[from] std::io::Error),
}

/// Position of a table not yet read from the server.
const UNKNOWN: u64 = u64::MAX;

/// State shared by the writers and the handle.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Bumped by [`Replicator::notify`] and at stop; waiting writers watch it.
    generation: Mutex<u64>,
    wake: Condvar,
    /// Per table: the first height not yet replicated, or [`UNKNOWN`].
    next: [AtomicU64; 5],
    table_errors: [AtomicU64; 5],
    /// Per table: incomplete last ledgers found and deleted (to be written again).
    repairs: [AtomicU64; 5],
    errors: AtomicU64,
    /// Last head a writer read, or [`UNKNOWN`].
    head: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Whether the schema was created (once per replicator, by the first writer to connect).
    schema_ready: Mutex<bool>,
    /// Writer threads that have not exited.
    running: AtomicUsize,
}

impl Shared {
    fn new() -> Self {
        Self {
            stop: AtomicBool::new(false),
            generation: Mutex::new(0),
            wake: Condvar::new(),
            next: std::array::from_fn(|_| AtomicU64::new(UNKNOWN)),
            table_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            repairs: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: AtomicU64::new(0),
            head: AtomicU64::new(UNKNOWN),
            last_error: Mutex::new(None),
            schema_ready: Mutex::new(false),
            running: AtomicUsize::new(0),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn wake_all(&self) {
        *self.generation.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.wake.notify_all();
    }

    /// Sleeps up to `timeout`, or until woken or stopped.
    fn wait(&self, timeout: Duration) {
        let guard = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = *guard;
        let _unused = self
            .wake
            .wait_timeout_while(guard, timeout, |g| *g == seen && !self.stopping())
            .unwrap_or_else(PoisonError::into_inner);
    }

    fn set_next(&self, table: Table, next: Option<u64>) {
        self.next[table.index()].store(next.unwrap_or(UNKNOWN), Ordering::Release);
    }

    fn next(&self, table: Table) -> Option<u64> {
        Some(self.next[table.index()].load(Ordering::Acquire)).filter(|&n| n != UNKNOWN)
    }

    fn record_repair(&self, table: Table) {
        self.repairs[table.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn record_error(&self, table: Option<Table>, error: &AnalyticsError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = table {
            self.table_errors[t.index()].fetch_add(1, Ordering::Relaxed);
        }
        let text = match table {
            Some(t) => format!("{t}: {error}"),
            None => error.to_string(),
        };
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}

/// The running replication: writer threads copying committed ledgers into ClickHouse.
/// Dropping it stops it like [`Replicator::stop`].
pub struct Replicator {
    shared: Arc<Shared>,
    source: Arc<dyn LedgerSource>,
    tables: Vec<Table>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Replicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicator")
            .field("tables", &self.tables)
            .field("writers", &self.threads.len())
            .finish()
    }
}

impl Replicator {
    /// Starts replicating every committed ledger of `source` (whose genesis is `genesis`) into
    /// the database of `config`, creating the schema if missing. Returns at once: connecting,
    /// creating and catching up happen on the writer threads, which retry every failure with
    /// back-off (see [`Replicator::status`]). Fails only on an invalid config or when a thread
    /// cannot be started.
    pub fn start(
        config: ClickHouseConfig,
        source: Arc<dyn LedgerSource>,
        genesis: &Genesis,
    ) -> Result<Self, AnalyticsError> {
        config.validate()?;
        let mut tables = config.tables.clone();
        tables.sort_unstable();
        tables.dedup();
        let config = Arc::new(ClickHouseConfig { tables: tables.clone(), ..config });
        let chain = Arc::new(rows::ChainInfo::new(genesis));
        let shared = Arc::new(Shared::new());
        let mut by_weight = tables.clone();
        by_weight.sort_by_key(|t| std::cmp::Reverse(t.weight()));
        let writers = config.writers.min(by_weight.len());
        let mut replicator = Self { shared: shared.clone(), source, tables, threads: Vec::new() };
        for w in 0..writers {
            let own: Vec<Table> = by_weight.iter().skip(w).step_by(writers).copied().collect();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let writer = writer::Writer::new(
                own,
                config.clone(),
                shared.clone(),
                replicator.source.clone(),
                chain.clone(),
                runtime,
            );
            // Counted before the thread starts, so a status taken right after `start` sees it.
            shared.running.fetch_add(1, Ordering::AcqRel);
            // On failure the writers already started are stopped by `replicator`'s drop.
            let handle =
                std::thread::Builder::new().name(format!("clickhouse-{w}")).spawn(move || writer.run())?;
            replicator.threads.push(handle);
        }
        Ok(replicator)
    }

    /// Wakes the writers waiting for new ledgers (call after a commit to cut the lag below the
    /// poll interval). Never blocks on replication.
    pub fn notify(&self) {
        self.shared.wake_all();
    }

    /// The current replication state. Reads the source's head and one ledger's timestamp.
    pub fn status(&self) -> ReplicationStatus {
        let head = match self.source.head() {
            Ok(h) => Some(h),
            Err(_) => Some(self.shared.head.load(Ordering::Acquire)).filter(|&h| h != UNKNOWN),
        };
        let tables: Vec<TableStatus> = self
            .tables
            .iter()
            .map(|&table| TableStatus {
                table,
                next_height: self.shared.next(table),
                errors: self.shared.table_errors[table.index()].load(Ordering::Relaxed),
                repairs: self.shared.repairs[table.index()].load(Ordering::Relaxed),
            })
            .collect();
        let behind = tables.iter().map(|t| t.next_height.unwrap_or(0)).min().unwrap_or(0);
        let lag_ledgers = head.map_or(0, |h| (h + 1).saturating_sub(behind));
        let lag_ms = if lag_ledgers == 0 {
            Some(0)
        } else {
            self.source
                .timestamp_ms(behind)
                .ok()
                .flatten()
                .map(|ts| engine::clock::now_ms().saturating_sub(ts).max(0) as u64)
        };
        ReplicationStatus {
            tables,
            head,
            lag_ledgers,
            lag_ms,
            errors: self.shared.errors.load(Ordering::Relaxed),
            last_error: self.shared.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            writers_running: self.shared.running.load(Ordering::Acquire),
        }
    }

    /// [`Replicator::status`] in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.status().metrics_text()
    }

    /// Stops the writers: each finishes the batch it is writing (a batch that keeps failing is
    /// abandoned at its next retry) and exits. Returns the final status.
    pub fn stop(mut self) -> ReplicationStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
        for handle in self.threads.drain(..) {
            // A writer that panicked has nothing left to clean up; its tables resume at the
            // next start from what the server holds.
            let _ = handle.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked() {
        assert!(ClickHouseConfig::default().validate().is_ok());
        let bad = [
            ClickHouseConfig { database: "".into(), ..Default::default() },
            ClickHouseConfig { database: "x`y".into(), ..Default::default() },
            ClickHouseConfig { database: "a".repeat(65), ..Default::default() },
            ClickHouseConfig { writers: WRITERS_MAX + 1, ..Default::default() },
            ClickHouseConfig { batch_ledgers_max: 0, ..Default::default() },
            ClickHouseConfig { batch_rows_max: BATCH_ROWS_LIMIT + 1, ..Default::default() },
            ClickHouseConfig { poll_interval_ms: 0, ..Default::default() },
            ClickHouseConfig { url: "ftp://x".into(), ..Default::default() },
            ClickHouseConfig { shards: vec!["http://a:1".into()], ..Default::default() },
            ClickHouseConfig { cluster: Some("c".into()), ..Default::default() },
            ClickHouseConfig {
                cluster: Some("c-1".into()),
                shards: vec!["http://a:1".into()],
                ..Default::default()
            },
            ClickHouseConfig { cluster: Some("c".into()), shards: vec!["a:1".into()], ..Default::default() },
            ClickHouseConfig {
                cluster: Some("c".into()),
                shards: vec!["http://a:1".into(), "http://a:1".into()],
                ..Default::default()
            },
            ClickHouseConfig {
                cluster: Some("c".into()),
                shards: vec!["http://a:1".into()],
                shard_ledgers: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(AnalyticsError::Config(_))), "{config:?}");
        }
        // The node's `[clickhouse]` section: only the keys it sets, the rest defaulted.
        let config: ClickHouseConfig = serde_json::from_str(
            r#"{"url": "http://10.0.0.1:8123", "database": "explorer", "writers": 3, "tables": ["legs", "balance_changes"]}"#,
        )
        .unwrap();
        assert_eq!(config.writers, 3);
        assert_eq!(config.tables, [Table::Legs, Table::BalanceChanges]);
        assert_eq!(config.batch_rows_max, ClickHouseConfig::default().batch_rows_max);
        assert!(serde_json::from_str::<ClickHouseConfig>(r#"{"urls": "x"}"#).is_err());
        let config: ClickHouseConfig = serde_json::from_str(
            r#"{"url": "http://a:1", "cluster": "caasiope", "shards": ["http://a:1", "http://b:1"], "shard_ledgers": 10}"#,
        )
        .unwrap();
        assert!(config.validate().is_ok(), "{config:?}");
        assert_eq!((config.shards.len(), config.shard_ledgers), (2, 10));
        assert!(
            !format!("{:?}", ClickHouseConfig { password: Some("secret".into()), ..Default::default() })
                .contains("secret")
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let status = ReplicationStatus {
            tables: vec![
                TableStatus { table: Table::Ledgers, next_height: Some(10), errors: 0, repairs: 0 },
                TableStatus { table: Table::Legs, next_height: None, errors: 2, repairs: 1 },
            ],
            head: Some(12),
            lag_ledgers: 13,
            lag_ms: Some(1_250),
            errors: 3,
            last_error: None,
            writers_running: 2,
        };
        let text = status.metrics_text();
        for line in [
            "caasiope_replication_ledgers{table=\"ledgers\"} 10",
            "caasiope_replication_ledgers{table=\"legs\"} 0",
            "caasiope_replication_table_errors_total{table=\"legs\"} 2",
            "caasiope_replication_repairs_total{table=\"legs\"} 1",
            "caasiope_replication_head_height 12",
            "caasiope_replication_lag_ledgers 13",
            "caasiope_replication_lag_seconds 1.250",
            "caasiope_replication_writers_running 2",
            "caasiope_replication_errors_total 3",
            "# TYPE caasiope_replication_errors_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!status.caught_up());
        assert_eq!(status.tables[0].replicated_height(), Some(9));
        assert_eq!(status.tables[1].replicated_height(), None);
    }
}
