//! One writer thread: reads batches of ledgers from the source and writes the rows of its
//! tables, each table at its own position.

use std::{
    future::Future,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use clickhouse::{Client, Compression, RowOwned, RowWrite};

use super::{
    AnalyticsError, ClickHouseConfig, RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MIN_MS, SERVER_BLOCK_ROWS, Shared,
    Table,
    rows::{self, ChainInfo, ProgressRow, Rows},
    schema::{self, PROGRESS_TABLE},
    source::{LedgerSource, SourceLedger},
};

/// What one step did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Wrote a batch: look for the next at once.
    Worked,
    /// Every table is at the head: wait for new ledgers.
    Idle,
    /// The test hook ended the writer.
    Crashed,
}

/// A failed step: what failed, and on which table.
struct Failure {
    table: Option<Table>,
    error: AnalyticsError,
}

impl From<AnalyticsError> for Failure {
    fn from(error: AnalyticsError) -> Self {
        Self { table: None, error }
    }
}

impl From<crate::StoreError> for Failure {
    fn from(error: crate::StoreError) -> Self {
        Self { table: None, error: error.into() }
    }
}

fn on(table: Table) -> impl FnOnce(AnalyticsError) -> Failure {
    move |error| Failure { table: Some(table), error }
}

pub(super) struct Writer {
    /// The tables this writer owns, and for each the first height not yet replicated (`None`
    /// until read from the server, and again after any failure on it).
    tables: Vec<(Table, Option<u64>)>,
    config: Arc<ClickHouseConfig>,
    shared: Arc<Shared>,
    source: Arc<dyn LedgerSource>,
    chain: Arc<ChainInfo>,
    runtime: tokio::runtime::Runtime,
    /// Requests in the configured database.
    client: Client,
    /// Requests outside any database: `CREATE DATABASE` (a client whose database does not
    /// exist yet is refused by the server).
    admin: Client,
    schema_ready: bool,
    /// Successful INSERTs so far (for the test hook).
    inserts: u64,
}

/// How often a writer asks whether a deletion it requested is done.
const DELETION_POLL: Duration = Duration::from_millis(20);

/// The start of the `query_id` of every INSERT a writer makes into `table` of `database`.
fn query_id_prefix(database: &str, table: Table) -> String {
    format!("caasiope-{database}-{}-", table.name())
}

fn client(config: &ClickHouseConfig) -> Client {
    // No compression and no schema validation: ClickHouse 18.16 knows neither the client's
    // LZ4 framing nor RowBinaryWithNamesAndTypes.
    let mut c =
        Client::default().with_url(&config.url).with_compression(Compression::None).with_validation(false);
    if let Some(user) = &config.user {
        c = c.with_user(user);
    }
    if let Some(password) = &config.password {
        c = c.with_password(password);
    }
    c
}

impl Writer {
    pub(super) fn new(
        tables: Vec<Table>,
        config: Arc<ClickHouseConfig>,
        shared: Arc<Shared>,
        source: Arc<dyn LedgerSource>,
        chain: Arc<ChainInfo>,
        runtime: tokio::runtime::Runtime,
    ) -> Self {
        let admin = client(&config);
        let client = admin.clone().with_database(&config.database);
        Self {
            tables: tables.into_iter().map(|t| (t, None)).collect(),
            config,
            shared,
            source,
            chain,
            runtime,
            client,
            admin,
            schema_ready: false,
            inserts: 0,
        }
    }

    /// The writer's loop, until stopped.
    pub(super) fn run(mut self) {
        /// Counts the writer out however it ends, a panic included.
        struct Running(Arc<Shared>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let _running = Running(self.shared.clone());
        let mut backoff_ms = RETRY_BACKOFF_MIN_MS;
        while !self.shared.stopping() {
            match self.step() {
                Ok(Outcome::Worked) => backoff_ms = RETRY_BACKOFF_MIN_MS,
                Ok(Outcome::Idle) => {
                    backoff_ms = RETRY_BACKOFF_MIN_MS;
                    self.shared.wait(Duration::from_millis(self.config.poll_interval_ms));
                }
                Ok(Outcome::Crashed) => return,
                Err(Failure { table, error }) => {
                    self.shared.record_error(table, &error);
                    self.shared.wait(Duration::from_millis(backoff_ms));
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MAX_MS);
                }
            }
        }
    }

    /// Runs one request on the writer's runtime, bounded by the request timeout.
    fn block_on<T>(
        &self,
        request: impl Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, AnalyticsError> {
        let timeout_ms = self.config.request_timeout_ms;
        self.runtime
            // The timer is made inside the runtime: it needs its time driver.
            .block_on(async { tokio::time::timeout(Duration::from_millis(timeout_ms), request).await })
            .map_err(|_| AnalyticsError::Timeout(timeout_ms))?
            .map_err(AnalyticsError::from)
    }

    /// One round: resume points known, the next whole ledgers read and turned into rows, each
    /// table's rows inserted (or a checkpoint when it has none) and its position advanced.
    fn step(&mut self) -> Result<Outcome, Failure> {
        self.ensure_schema()?;
        for i in 0..self.tables.len() {
            let (table, next) = self.tables[i];
            if next.is_none() {
                let next = self.resume_point(table).map_err(on(table))?;
                self.tables[i].1 = Some(next);
                self.shared.set_next(table, Some(next));
            }
        }
        let head = self.source.head().map_err(AnalyticsError::from)?;
        self.shared.head.store(head, std::sync::atomic::Ordering::Release);
        let Some(from) = self.tables.iter().filter_map(|(_, n)| *n).min() else { return Ok(Outcome::Idle) };
        if from > head {
            return Ok(Outcome::Idle);
        }
        let ledgers = self.read_batch(from, head)?;
        let to = from + ledgers.len() as u64 - 1;
        let mut rows = Rows::default();
        let mut wanted = Vec::with_capacity(self.tables.len());
        for (header, certificate, transactions) in &ledgers {
            wanted.clear();
            wanted.extend(
                self.tables.iter().filter(|(_, n)| n.is_some_and(|n| n <= header.height)).map(|(t, _)| *t),
            );
            rows::add_ledger(&self.chain, &wanted, header, certificate, transactions, &mut rows)?;
        }
        for i in 0..self.tables.len() {
            if self.write_table(i, &rows, to)? == Outcome::Crashed {
                return Ok(Outcome::Crashed);
            }
        }
        Ok(Outcome::Worked)
    }

    /// Whole ledgers from `from`, at most `batch_ledgers_max`, until the rows reach
    /// `batch_rows_max` (always at least one ledger, whatever its size).
    fn read_batch(&self, from: u64, head: u64) -> Result<Vec<SourceLedger>, Failure> {
        let mut ledgers: Vec<SourceLedger> = Vec::new();
        let mut rows_estimate = 0;
        let mut height = from;
        while height <= head
            && ledgers.len() < self.config.batch_ledgers_max
            && rows_estimate < self.config.batch_rows_max
        {
            let ledger = self.source.ledger(height)?.ok_or(AnalyticsError::MissingLedger(height))?;
            if ledger.0.height != height {
                return Err(AnalyticsError::InvalidLedger {
                    height,
                    why: format!("the source returned ledger {} instead", ledger.0.height),
                }
                .into());
            }
            rows_estimate += rows::rows_estimate(&ledger.2);
            if height == 0 {
                rows_estimate += self.chain.genesis_balances.len() + self.chain.genesis_declarations.len();
            }
            ledgers.push(ledger);
            height += 1;
        }
        Ok(ledgers)
    }

    /// Table `i`'s rows of the batch ending at `to` inserted, or a checkpoint at `to` when it
    /// has none there; its position then moves past `to`. A table already past `to` is skipped.
    fn write_table(&mut self, i: usize, rows: &Rows, to: u64) -> Result<Outcome, Failure> {
        let (table, Some(next)) = self.tables[i] else { return Ok(Outcome::Worked) };
        if next > to {
            return Ok(Outcome::Worked);
        }
        // From the first request on, the table's position is only known again once the
        // request is known to have succeeded: any failure re-reads it from the server.
        self.tables[i].1 = None;
        if rows.len(table) > 0 {
            // One id per (table, first ledger): a retry of an INSERT that the server is
            // still running is refused instead of running twice.
            let query_id = format!("{}{next}", query_id_prefix(&self.config.database, table));
            self.insert_rows(table, rows, &query_id).map_err(on(table))?;
            if self.crash_due() {
                return Ok(Outcome::Crashed);
            }
        }
        if rows.last_height(table) != Some(to) {
            let row = ProgressRow { table_name: table.name(), height: to };
            let query_id = format!("{}checkpoint-{to}", query_id_prefix(&self.config.database, table));
            self.insert(PROGRESS_TABLE, std::slice::from_ref(&row), Some(&query_id)).map_err(on(table))?;
            if self.crash_due() {
                return Ok(Outcome::Crashed);
            }
        }
        self.tables[i].1 = Some(to + 1);
        self.shared.set_next(table, Some(to + 1));
        Ok(Outcome::Worked)
    }

    /// Whether the test hook ends the writer now (after counting one more INSERT).
    fn crash_due(&mut self) -> bool {
        self.inserts += 1;
        #[cfg(any(test, feature = "test-utils"))]
        if self.config.crash_after_inserts.is_some_and(|n| self.inserts >= n) {
            return true;
        }
        false
    }

    /// Creates the database and the tables if missing, once per replicator: the first writer
    /// does it while the others wait (concurrent `CREATE … IF NOT EXISTS` of one table can
    /// fail on old servers).
    fn ensure_schema(&mut self) -> Result<(), AnalyticsError> {
        if self.schema_ready {
            return Ok(());
        }
        let mut ready = self.shared.schema_ready.lock().unwrap_or_else(PoisonError::into_inner);
        if !*ready {
            let db = &self.config.database;
            let mut statements = vec![schema::create_database(db)];
            statements.extend(self.config.tables.iter().map(|&t| schema::create_table(db, t)));
            statements.push(schema::create_progress_table(db));
            for sql in &statements {
                self.block_on(self.admin.query(sql).execute())?;
            }
            *ready = true;
        }
        drop(ready);
        self.schema_ready = true;
        Ok(())
    }

    /// The first height not yet in `table`, as the server says: past both its highest row and
    /// its highest checkpoint, once the ledger of its highest row is known to be whole.
    ///
    /// A server may commit a prefix of an INSERT whose connection was cut mid-body (ClickHouse
    /// 18.16 reads the early end of a chunked body as the end of the data), so the last ledger
    /// of the table is counted against the source when no checkpoint covers it; a ledger found
    /// short (or long) has its rows deleted, and is written again. Only the last ledger can be
    /// incomplete: every INSERT starts where the table is whole, and its rows are in height
    /// order.
    fn resume_point(&self, table: Table) -> Result<u64, AnalyticsError> {
        self.check_quiet(table)?;
        let name = table.name();
        // One request (every request of a resume can fail on a flaky link, and each failure
        // starts the resume over after a longer backoff): the table's rows, highest height and
        // rows at that height, and its checkpoints. One join at most, and a scalar subquery, for
        // ClickHouse 18.16.
        let (rows, max_height, at_max, checkpoints, checkpoint): (u64, u64, u64, u64, u64) = self.block_on(
            self.client
                .query(&format!(
                    "SELECT r.rows, r.top, r.at_top, c.n, c.top FROM \
                     (SELECT count() AS rows, max(height) AS top, \
                      countIf(height = (SELECT max(height) FROM `{name}`)) AS at_top FROM `{name}`) AS r \
                     CROSS JOIN (SELECT count() AS n, max(height) AS top FROM `{PROGRESS_TABLE}` \
                      WHERE table_name = '{name}') AS c"
                ))
                .fetch_one(),
        )?;
        self.check_same_chain()?;
        let after_rows = if rows > 0 { max_height + 1 } else { 0 };
        let after_checkpoint = if checkpoints > 0 { checkpoint + 1 } else { 0 };
        if after_rows > after_checkpoint {
            let expected = self.rows_of(table, max_height)?;
            if at_max != expected {
                // Rare and worth an operator's eye; also counted in the status.
                eprintln!(
                    "caasiope: clickhouse: {name} holds {at_max} rows of ledger {max_height}, not \
                     {expected} (an INSERT cut short): deleting them to write the ledger again"
                );
                self.delete_ledger(table, max_height)?;
                self.shared.record_repair(table);
                return Ok(max_height);
            }
        }
        Ok(after_rows.max(after_checkpoint))
    }

    /// Fails (to be retried) while the server still runs an INSERT of this writer into `table`
    /// (one whose connection dropped: its outcome is only final once it ends) or a deletion in
    /// it: the table's position is read only once both are settled.
    fn check_quiet(&self, table: Table) -> Result<(), AnalyticsError> {
        let name = table.name();
        let (running, deleting): (u64, u64) = self.block_on(
            self.admin
                .query(&format!(
                    "SELECT p.n, m.n FROM \
                     (SELECT count() AS n FROM system.processes WHERE startsWith(query_id, '{}')) AS p \
                     CROSS JOIN ({}) AS m",
                    query_id_prefix(&self.config.database, table),
                    self.pending_deletions_query(table),
                ))
                .fetch_one(),
        )?;
        if running > 0 {
            return Err(AnalyticsError::Unsettled(format!("an earlier INSERT into {name} still runs")));
        }
        if deleting > 0 {
            return Err(AnalyticsError::Unsettled(format!("a deletion in {name} still runs")));
        }
        Ok(())
    }

    /// The query counting the mutations of `table` the server has not finished (as `n`).
    fn pending_deletions_query(&self, table: Table) -> String {
        format!(
            "SELECT count() AS n FROM system.mutations WHERE database = '{}' AND table = '{}' AND is_done = 0",
            self.config.database,
            table.name()
        )
    }

    /// Mutations of `table` the server has not finished.
    fn pending_deletions(&self, table: Table) -> Result<u64, AnalyticsError> {
        self.block_on(self.admin.query(&self.pending_deletions_query(table)).fetch_one())
    }

    /// How many rows of `table` the source's ledger `height` makes.
    fn rows_of(&self, table: Table, height: u64) -> Result<u64, AnalyticsError> {
        let Some((header, certificate, transactions)) = self.source.ledger(height)? else {
            return Err(AnalyticsError::OtherChain(format!(
                "{} holds ledger {height}, which the source does not have",
                table.name()
            )));
        };
        let mut rows = Rows::default();
        rows::add_ledger(&self.chain, &[table], &header, &certificate, &transactions, &mut rows)?;
        Ok(rows.len(table) as u64)
    }

    /// Deletes the rows of ledger `height` from `table` and waits (up to the request timeout)
    /// until the server has applied the deletion.
    fn delete_ledger(&self, table: Table, height: u64) -> Result<(), AnalyticsError> {
        let name = table.name();
        self.block_on(
            self.client.query(&format!("ALTER TABLE `{name}` DELETE WHERE height = {height}")).execute(),
        )?;
        let deadline = Instant::now() + Duration::from_millis(self.config.request_timeout_ms);
        while self.pending_deletions(table)? > 0 {
            if Instant::now() >= deadline || self.shared.stopping() {
                return Err(AnalyticsError::Unsettled(format!(
                    "the deletion of ledger {height} in {name} still runs"
                )));
            }
            std::thread::sleep(DELETION_POLL);
        }
        Ok(())
    }

    /// Refuses a database whose last ledger is not the source's ledger at that height: it was
    /// written from another chain (or from a source that lost ledgers), and appending would mix
    /// them. Checked before any table is resumed, by every writer, against the `ledgers` table
    /// (when it is replicated: it is the table that names ledgers by hash).
    fn check_same_chain(&self) -> Result<(), AnalyticsError> {
        if !self.config.tables.contains(&Table::Ledgers) {
            return Ok(());
        }
        let (rows, height, stored): (u64, u64, String) = self.block_on(
            self.client.query("SELECT count(), max(height), argMax(hash, height) FROM `ledgers`").fetch_one(),
        )?;
        if rows == 0 {
            return Ok(());
        }
        let Some((header, _, _)) = self.source.ledger(height)? else {
            return Err(AnalyticsError::OtherChain(format!(
                "it holds ledger {height}, which the source does not have"
            )));
        };
        let hash = header.hash(&self.chain.chain_id).to_hex();
        if stored != hash {
            return Err(AnalyticsError::OtherChain(format!(
                "its ledger {height} is {stored}, the source's is {hash}"
            )));
        }
        Ok(())
    }

    fn insert_rows(&self, table: Table, rows: &Rows, query_id: &str) -> Result<(), AnalyticsError> {
        let id = Some(query_id);
        match table {
            Table::Ledgers => self.insert(table.name(), &rows.ledgers, id),
            Table::Transactions => self.insert(table.name(), &rows.transactions, id),
            Table::Legs => self.insert(table.name(), &rows.legs, id),
            Table::Declarations => self.insert(table.name(), &rows.declarations, id),
            Table::BalanceChanges => self.insert(table.name(), &rows.balance_changes, id),
        }
    }

    /// One INSERT of `rows` into `table`: one block, so one part, so all or nothing.
    fn insert<R: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &[R],
        query_id: Option<&str>,
    ) -> Result<(), AnalyticsError> {
        self.block_on(async {
            let mut insert = self.client.insert::<R>(table).await?;
            if let Some(id) = query_id {
                insert = insert.with_setting("query_id", id);
            }
            if rows.len() >= SERVER_BLOCK_ROWS {
                // A single ledger larger than the server's default block: raise the block size
                // for this INSERT so it still forms one block.
                insert = insert.with_setting("max_insert_block_size", (rows.len() + 1).to_string());
            }
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        })
    }
}
