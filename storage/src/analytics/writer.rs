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
    /// With a cluster: each shard's server, outside any database, in shard order.
    shards: Vec<Client>,
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

/// A client of the server at `url` with the configured credentials.
fn client(config: &ClickHouseConfig, url: &str) -> Client {
    // No compression and no schema validation: ClickHouse 18.16 knows neither the client's
    // LZ4 framing nor RowBinaryWithNamesAndTypes.
    let mut c = Client::default().with_url(url).with_compression(Compression::None).with_validation(false);
    if let Some(user) = &config.user {
        c = c.with_user(user);
    }
    if let Some(password) = &config.password {
        c = c.with_password(password);
    }
    c
}

/// Whether `shown` (a `system.tables.engine_full`) is the engine `want`: servers differ in
/// spacing and quoting (18.16 shows `Distributed(c, db, t, intDiv(height, 4))` as written, current
/// ones `Distributed('c', 'db', 't', intDiv(height, 4))`).
fn same_engine(shown: &str, want: &str) -> bool {
    let normal =
        |s: &str| s.chars().filter(|c| !c.is_whitespace() && !"`'\"".contains(*c)).collect::<String>();
    normal(shown) == normal(want)
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
        let admin = client(&config, &config.url);
        let client = admin.clone().with_database(&config.database);
        let shards = config.shards.iter().map(|url| self::client(&config, url)).collect();
        Self {
            tables: tables.into_iter().map(|t| (t, None)).collect(),
            config,
            shared,
            source,
            chain,
            runtime,
            client,
            admin,
            shards,
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
    /// `batch_rows_max` (always at least one ledger, whatever its size); on a cluster, none past
    /// the end of `from`'s run of `shard_ledgers` ledgers: the batch's INSERTs then go whole to
    /// one shard.
    fn read_batch(&self, from: u64, head: u64) -> Result<Vec<SourceLedger>, Failure> {
        let mut ledgers: Vec<SourceLedger> = Vec::new();
        let mut rows_estimate = 0;
        let mut height = from;
        let last = match self.config.cluster {
            Some(_) => {
                let k = self.config.shard_ledgers;
                head.min((from - from % k).saturating_add(k - 1))
            }
            None => head,
        };
        while height <= last
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
            match &self.config.cluster {
                None => {
                    let mut statements = vec![schema::create_database(db)];
                    statements.extend(self.config.tables.iter().map(|&t| schema::create_table(db, t)));
                    statements.push(schema::create_progress_table(db));
                    for sql in &statements {
                        self.block_on(self.admin.query(sql).execute())?;
                    }
                }
                Some(cluster) => {
                    self.check_cluster(cluster)?;
                    let ddl = schema::create_cluster_statements(
                        db,
                        &self.config.tables,
                        cluster,
                        self.config.shard_ledgers,
                    );
                    // Without `ON CLUSTER` (ZooKeeper in 18.16): on each shard's server itself.
                    for shard in &self.shards {
                        for sql in &ddl.shard {
                            self.block_on(shard.query(sql).execute())?;
                        }
                    }
                    for server in self.servers() {
                        for sql in &ddl.distributed {
                            self.block_on(server.query(sql).execute())?;
                        }
                    }
                }
            }
            self.check_engines()?;
            *ready = true;
        }
        drop(ready);
        self.schema_ready = true;
        Ok(())
    }

    /// The servers a writer talks to: the configured one, and every other shard of a cluster.
    fn servers(&self) -> impl Iterator<Item = &Client> {
        let others = self.shards.iter().zip(&self.config.shards).filter(|(_, url)| **url != self.config.url);
        std::iter::once(&self.admin).chain(others.map(|(c, _)| c))
    }

    /// Refuses a cluster whose shards are not the configured servers: the configured server
    /// must see `cluster` with as many shards as configured, and each configured shard must be
    /// that shard of it (`system.clusters.is_local`).
    fn check_cluster(&self, cluster: &str) -> Result<(), AnalyticsError> {
        let count: u64 = self.block_on(
            self.admin
                .query(&format!(
                    "SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = '{cluster}'"
                ))
                .fetch_one(),
        )?;
        if count != self.shards.len() as u64 {
            return Err(AnalyticsError::Layout(format!(
                "{} sees {count} shards in cluster {cluster}, but {} are configured",
                self.config.url,
                self.shards.len()
            )));
        }
        for (i, (shard, url)) in self.shards.iter().zip(&self.config.shards).enumerate() {
            let (n, shard_num): (u64, u64) = self.block_on(
                shard
                    .query(&format!(
                        "SELECT count(), toUInt64(min(shard_num)) FROM system.clusters \
                         WHERE cluster = '{cluster}' AND is_local = 1"
                    ))
                    .fetch_one(),
            )?;
            if (n, shard_num) != (1, i as u64 + 1) {
                let is = match n {
                    0 => format!("is no shard of cluster {cluster}"),
                    1 => format!("is shard {shard_num} of cluster {cluster}"),
                    _ => format!("is {n} replicas of cluster {cluster}"),
                };
                return Err(AnalyticsError::Layout(format!(
                    "the server of shards[{i}] ({url}) {is}, not shard {}",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// Refuses tables that are not what the configuration asks for: on one server, a
    /// `Distributed` table (a database set up for a cluster); on a cluster, anything but the
    /// `Distributed` table with this cluster, local table and sharding key (another
    /// `shard_ledgers` would let an INSERT straddle two shards). Any other engine on one server
    /// is the user's choice (a replicated one, see `docs/ANALYTICS.md`).
    fn check_engines(&self) -> Result<(), AnalyticsError> {
        let db = &self.config.database;
        let names: Vec<&str> =
            self.config.tables.iter().map(|t| t.name()).chain(std::iter::once(PROGRESS_TABLE)).collect();
        let list = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
        let engines: Vec<(String, String)> = self.block_on(
            self.admin
                .query(&format!(
                    "SELECT name, engine_full FROM system.tables WHERE database = '{db}' AND name IN ({list})"
                ))
                .fetch_all(),
        )?;
        for name in names {
            let Some((_, engine)) = engines.iter().find(|(n, _)| n == name) else {
                return Err(AnalyticsError::Layout(format!("table {name} was not created")));
            };
            match &self.config.cluster {
                None if engine.starts_with("Distributed") => {
                    return Err(AnalyticsError::Layout(format!(
                        "{name} is {engine}: the database is sharded over a cluster, and the \
                         configuration names none"
                    )));
                }
                None => {}
                Some(cluster) => {
                    let want = schema::distributed_engine(cluster, db, name, self.config.shard_ledgers);
                    if !same_engine(engine, &want) {
                        return Err(AnalyticsError::Layout(format!(
                            "{name} is {engine}, not {want} (created with another cluster or shard_ledgers, \
                             or without a cluster)"
                        )));
                    }
                }
            }
        }
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
        // rows at that height, and its checkpoints. One join per SELECT, and the scalar subquery
        // in a WHERE, not in an aggregate: ClickHouse 18.16 refuses the latter on a Distributed
        // table ("Not found column countIf(equals(height, _subquery1))").
        let (rows, max_height, at_max, checkpoints, checkpoint): (u64, u64, u64, u64, u64) = self.block_on(
            self.client
                .query(&format!(
                    "SELECT rc.rows, rc.top, a.at_top, rc.n, rc.checkpoint FROM \
                     (SELECT r.rows, r.top, c.n, c.checkpoint FROM \
                      (SELECT count() AS rows, max(height) AS top FROM `{name}`) AS r \
                      CROSS JOIN (SELECT count() AS n, max(height) AS checkpoint FROM `{PROGRESS_TABLE}` \
                       WHERE table_name = '{name}') AS c) AS rc \
                     CROSS JOIN (SELECT count() AS at_top FROM `{name}` \
                      WHERE height = (SELECT max(height) FROM `{name}`)) AS a"
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
    ///
    /// On a cluster, every server is asked: a shard's part of an INSERT runs there as an INSERT
    /// into the local table, under another query id (18.16 does not pass the initiator's on), and
    /// could outlive the initiator's if their connection broke.
    fn check_quiet(&self, table: Table) -> Result<(), AnalyticsError> {
        let name = table.name();
        let prefix = query_id_prefix(&self.config.database, table);
        let ours = match self.config.cluster {
            None => format!("startsWith(query_id, '{prefix}')"),
            // Only the replicator writes into the local tables. (No `?` in the SQL: the client
            // takes it for a bound argument.)
            Some(_) => format!(
                "startsWith(query_id, '{prefix}') OR startsWith(initial_query_id, '{prefix}') \
                 OR match(query, '^INSERT INTO [`]*{}[`]*[.][`]*{}[`]*[ (]')",
                self.config.database,
                schema::local_name(name)
            ),
        };
        let sql = format!(
            "SELECT p.n, m.n FROM (SELECT count() AS n FROM system.processes WHERE {ours}) AS p \
             CROSS JOIN ({}) AS m",
            self.pending_deletions_query(table),
        );
        for server in self.servers() {
            let (running, deleting): (u64, u64) = self.block_on(server.query(&sql).fetch_one())?;
            if running > 0 {
                return Err(AnalyticsError::Unsettled(format!("an earlier INSERT into {name} still runs")));
            }
            if deleting > 0 {
                return Err(AnalyticsError::Unsettled(format!("a deletion in {name} still runs")));
            }
        }
        Ok(())
    }

    /// The table whose rows a deletion rewrites: the table itself, or on a cluster its local
    /// table on each shard.
    fn stored_name(&self, table: Table) -> String {
        match self.config.cluster {
            None => table.name().to_owned(),
            Some(_) => schema::local_name(table.name()),
        }
    }

    /// The query counting the mutations of `table` a server has not finished (as `n`).
    fn pending_deletions_query(&self, table: Table) -> String {
        format!(
            "SELECT count() AS n FROM system.mutations WHERE database = '{}' AND table = '{}' AND is_done = 0",
            self.config.database,
            self.stored_name(table)
        )
    }

    /// Mutations of `table` the servers have not finished.
    fn pending_deletions(&self, table: Table) -> Result<u64, AnalyticsError> {
        let sql = self.pending_deletions_query(table);
        let mut pending = 0;
        for server in self.servers() {
            pending += self.block_on(server.query(&sql).fetch_one::<u64>())?;
        }
        Ok(pending)
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
    /// until the server has applied the deletion. On a cluster: from the local table of every
    /// shard (a `Distributed` table takes no `ALTER … DELETE`, and `ON CLUSTER` needs ZooKeeper).
    fn delete_ledger(&self, table: Table, height: u64) -> Result<(), AnalyticsError> {
        let name = table.name();
        let sql = format!(
            "ALTER TABLE `{}`.`{}` DELETE WHERE height = {height}",
            self.config.database,
            self.stored_name(table)
        );
        match self.config.cluster {
            None => self.block_on(self.admin.query(&sql).execute())?,
            Some(_) => {
                for shard in &self.shards {
                    self.block_on(shard.query(&sql).execute())?;
                }
            }
        }
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
            if self.config.cluster.is_some() {
                // Acknowledged only once the rows are in their shard's local table, not queued
                // on this server for a later send: a resume reads every acknowledged row back.
                insert = insert.with_setting("insert_distributed_sync", "1");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_compare_across_server_versions() {
        let want = schema::distributed_engine("caasiope", "db", "legs", 1000);
        assert!(same_engine("Distributed(caasiope, db, legs_local, intDiv(height, 1000))", &want));
        assert!(same_engine("Distributed('caasiope', 'db', 'legs_local', intDiv(height, 1000))", &want));
        assert!(!same_engine("Distributed('caasiope', 'db', 'legs_local', intDiv(height, 100))", &want));
        assert!(!same_engine("Distributed('other', 'db', 'legs_local', intDiv(height, 1000))", &want));
        assert!(!same_engine("MergeTree ORDER BY (height, tx_index, leg_index)", &want));
    }
}
