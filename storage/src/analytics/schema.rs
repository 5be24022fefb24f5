//! The DDL of the SQL side: plain types only (UInt/Int, String, DateTime), so every server from
//! 18.16 (no Int128, no DateTime64, LowCardinality unreliable) to current runs it unchanged.
//!
//! Every table is a `MergeTree` without `PARTITION BY`: all rows of one INSERT then land in a
//! single part, written whole or not at all (the writer keeps each INSERT under the server's
//! `max_insert_block_size`, so the server forms one block from it) — of the rows the server
//! received: a body cut short may be committed as a prefix, which the writer finds and mends
//! when it resumes. See `docs/ANALYTICS.md`.
//!
//! On a cluster, each table keeps its name as a `Distributed` table (what the replicator
//! inserts into and reads back, and what analysts query) over a `<name>_local` table of the same
//! columns and engine on every shard. The sharding key, `intDiv(height, shard_ledgers)`, gives
//! each run of `shard_ledgers` ledgers to one shard in turn, so one INSERT of whole ledgers
//! within such a run is one part on one shard, as on a single server.

use super::Table;

/// The table of per-table replication checkpoints.
pub(crate) const PROGRESS_TABLE: &str = "replication_progress";

/// `CREATE DATABASE IF NOT EXISTS` for `database`.
pub(crate) fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS `{database}`")
}

/// The columns of `table`.
const fn columns(table: Table) -> &'static str {
    match table {
        Table::Ledgers => {
            "(
    height UInt64,
    hash String,
    timestamp_ms Int64,
    time DateTime,
    previous_hash String,
    tx_root String,
    state_root String,
    validator_set_hash String,
    tx_count UInt32,
    certificate_round UInt32,
    certificate_signers UInt16
)"
        }
        Table::Transactions => {
            "(
    height UInt64,
    tx_index UInt32,
    id String,
    expiration_ms Int64,
    fee_payer String,
    fee_amount Int64,
    message_hex String,
    input_count UInt16,
    output_count UInt16,
    declaration_count UInt16,
    signature_count UInt16,
    time DateTime
)"
        }
        Table::Legs => {
            "(
    height UInt64,
    tx_index UInt32,
    leg_index UInt16,
    tx_id String,
    kind String,
    address String,
    currency String,
    amount Int64,
    time DateTime
)"
        }
        Table::Declarations => {
            "(
    height UInt64,
    tx_index UInt32,
    decl_index UInt16,
    tx_id String,
    kind String,
    address String,
    json String,
    time DateTime
)"
        }
        Table::BalanceChanges => {
            "(
    height UInt64,
    address String,
    currency String,
    delta Int64,
    time DateTime
)"
        }
    }
}

/// The sorting key of `table`: height first, so a ledger's rows are found by the primary key.
const fn order_by(table: Table) -> &'static str {
    match table {
        Table::Ledgers => "height",
        Table::Transactions => "(height, tx_index)",
        Table::Legs => "(height, tx_index, leg_index)",
        Table::Declarations => "(height, tx_index, decl_index)",
        Table::BalanceChanges => "(height, address, currency)",
    }
}

/// The columns of [`PROGRESS_TABLE`].
const PROGRESS_COLUMNS: &str = "(
    table_name String,
    height UInt64
)";

/// The name of `table`'s local table on each shard of a cluster.
pub(crate) fn local_name(table: &str) -> String {
    format!("{table}_local")
}

/// `CREATE TABLE IF NOT EXISTS` for `table` in `database`, named `name` (its own name on one
/// server, its local name on a shard).
fn create_merge_tree(database: &str, table: Table, name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{name}` {} ENGINE = MergeTree() ORDER BY {}",
        columns(table),
        order_by(table)
    )
}

/// `CREATE TABLE IF NOT EXISTS` for `table` in `database`.
pub(crate) fn create_table(database: &str, table: Table) -> String {
    create_merge_tree(database, table, table.name())
}

/// `CREATE TABLE IF NOT EXISTS` for the checkpoints, named `name`. A ReplacingMergeTree keyed
/// by table name: merges keep each table's highest checkpoint, and readers take `max(height)`
/// anyway, so unmerged rows never matter.
fn create_progress_merge_tree(database: &str, name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{name}` {PROGRESS_COLUMNS} \
         ENGINE = ReplacingMergeTree(height) ORDER BY table_name"
    )
}

/// `CREATE TABLE IF NOT EXISTS` for the checkpoints.
pub(crate) fn create_progress_table(database: &str) -> String {
    create_progress_merge_tree(database, PROGRESS_TABLE)
}

/// The engine of the `Distributed` table `name` of `database` over the shards' local tables of
/// `cluster`, as `system.tables.engine_full` shows it (the replicator compares the two).
pub(crate) fn distributed_engine(cluster: &str, database: &str, name: &str, shard_ledgers: u64) -> String {
    format!("Distributed({cluster}, {database}, {}, intDiv(height, {shard_ledgers}))", local_name(name))
}

/// `CREATE TABLE IF NOT EXISTS` for the `Distributed` table `name` (of columns `columns`).
fn create_distributed(
    database: &str,
    name: &str,
    columns: &str,
    cluster: &str,
    shard_ledgers: u64,
) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{name}` {columns} ENGINE = {}",
        distributed_engine(cluster, database, name, shard_ledgers)
    )
}

/// Every statement that creates the schema in `database`, in order: what the replicator runs at
/// start. Users who want other engines (a cluster's `ReplicatedMergeTree`) create the tables
/// first with the same columns; `IF NOT EXISTS` then leaves them alone.
pub fn create_statements(database: &str) -> Vec<String> {
    let mut out = vec![create_database(database)];
    out.extend(Table::ALL.iter().map(|&t| create_table(database, t)));
    out.push(create_progress_table(database));
    out
}

/// The DDL of a schema sharded over a cluster ([`create_cluster_statements`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatements {
    /// Run on every shard: the database and the `<table>_local` tables, `MergeTree`s as on one
    /// server. Users who want replicas create them first with a replicated engine.
    pub shard: Vec<String>,
    /// Run on every server that is queried (every shard, and the one the replicator talks to):
    /// the database and the `Distributed` tables under the tables' own names.
    pub distributed: Vec<String>,
}

/// The statements that create `tables` (and the checkpoints) of `database` sharded over
/// `cluster`, each run of `shard_ledgers` ledgers on one shard: what the replicator runs with a
/// [`crate::ClickHouseConfig::cluster`], the shard statements on each shard's server directly.
pub fn create_cluster_statements(
    database: &str,
    tables: &[Table],
    cluster: &str,
    shard_ledgers: u64,
) -> ClusterStatements {
    let mut shard = vec![create_database(database)];
    shard.extend(tables.iter().map(|&t| create_merge_tree(database, t, &local_name(t.name()))));
    shard.push(create_progress_merge_tree(database, &local_name(PROGRESS_TABLE)));
    let mut distributed = vec![create_database(database)];
    distributed.extend(
        tables.iter().map(|&t| create_distributed(database, t.name(), columns(t), cluster, shard_ledgers)),
    );
    distributed.push(create_distributed(database, PROGRESS_TABLE, PROGRESS_COLUMNS, cluster, shard_ledgers));
    ClusterStatements { shard, distributed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_schema_is_the_single_one_behind_distributed_tables() {
        let single = create_statements("db");
        let cluster = create_cluster_statements("db", &Table::ALL, "c", 100);
        assert_eq!(cluster.shard.len(), single.len());
        // The local tables are the single server's, renamed.
        for (local, one) in cluster.shard.iter().zip(&single) {
            let renamed = Table::ALL
                .iter()
                .map(|t| t.name())
                .chain([PROGRESS_TABLE])
                .fold(one.clone(), |sql, t| sql.replace(&format!("`{t}`"), &format!("`{t}_local`")));
            assert_eq!(local, &renamed);
        }
        assert_eq!(
            cluster.distributed[3],
            format!(
                "CREATE TABLE IF NOT EXISTS `db`.`legs` {} ENGINE = Distributed(c, db, legs_local, intDiv(height, 100))",
                columns(Table::Legs)
            )
        );
        assert!(
            cluster.distributed[6]
                .contains("Distributed(c, db, replication_progress_local, intDiv(height, 100))")
        );
    }
}
