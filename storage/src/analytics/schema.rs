//! The DDL of the SQL side: plain types only (UInt/Int, String, DateTime), so every server from
//! 18.16 (no Int128, no DateTime64, LowCardinality unreliable) to current runs it unchanged.
//!
//! Every table is a `MergeTree` without `PARTITION BY`: all rows of one INSERT then land in a
//! single part, written whole or not at all (the writer keeps each INSERT under the server's
//! `max_insert_block_size`, so the server forms one block from it) — of the rows the server
//! received: a body cut short may be committed as a prefix, which the writer finds and mends
//! when it resumes. See `docs/ANALYTICS.md`.

use super::Table;

/// The table of per-table replication checkpoints.
pub(crate) const PROGRESS_TABLE: &str = "replication_progress";

/// `CREATE DATABASE IF NOT EXISTS` for `database`.
pub(crate) fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS `{database}`")
}

/// The columns and engine clause of `table`.
const fn body(table: Table) -> &'static str {
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
) ENGINE = MergeTree() ORDER BY height"
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
) ENGINE = MergeTree() ORDER BY (height, tx_index)"
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
) ENGINE = MergeTree() ORDER BY (height, tx_index, leg_index)"
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
) ENGINE = MergeTree() ORDER BY (height, tx_index, decl_index)"
        }
        Table::BalanceChanges => {
            "(
    height UInt64,
    address String,
    currency String,
    delta Int64,
    time DateTime
) ENGINE = MergeTree() ORDER BY (height, address, currency)"
        }
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `table` in `database`.
pub(crate) fn create_table(database: &str, table: Table) -> String {
    format!("CREATE TABLE IF NOT EXISTS `{database}`.`{}` {}", table.name(), body(table))
}

/// `CREATE TABLE IF NOT EXISTS` for the checkpoints. A ReplacingMergeTree keyed by table
/// name: merges keep each table's highest checkpoint, and readers take `max(height)` anyway,
/// so unmerged rows never matter.
pub(crate) fn create_progress_table(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{PROGRESS_TABLE}` (
    table_name String,
    height UInt64
) ENGINE = ReplacingMergeTree(height) ORDER BY table_name"
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
