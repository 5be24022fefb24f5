//! What the replication reports ([`ReplicationStatus`]): per table ([`TableStatus`]) and
//! overall, and the same in the Prometheus text format.

use super::Table;

/// Replication state of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableStatus {
    /// The table.
    pub table: Table,
    /// First height not yet in the table (the table holds heights `0..next_height`); `None`
    /// until its writer has read it from the server.
    pub next_height: Option<u64>,
    /// Failed operations on this table since start (each retried).
    pub errors: u64,
    /// Incomplete ledgers found at the end of the table since start (a server committed part
    /// of an INSERT whose connection was cut), deleted and written again.
    pub repairs: u64,
}

impl TableStatus {
    /// Highest height whose rows are all in the table, if any.
    pub fn replicated_height(&self) -> Option<u64> {
        self.next_height.and_then(|n| n.checked_sub(1))
    }
}

/// A snapshot of the replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// Every replicated table.
    pub tables: Vec<TableStatus>,
    /// Height of the source's last committed ledger, if it could be read.
    pub head: Option<u64>,
    /// Committed ledgers not yet in every table: `head + 1 − min(next_height)`, a table not
    /// yet read counting as empty.
    pub lag_ledgers: u64,
    /// Milliseconds from the timestamp of the first ledger not yet in every table to now (0
    /// when caught up, and when that timestamp is in the future); `None` if the source could
    /// not be read.
    pub lag_ms: Option<u64>,
    /// Failed operations since start (each retried).
    pub errors: u64,
    /// The last failure, for logs.
    pub last_error: Option<String>,
    /// Writer threads running: fewer than started means one died (a bug: it panicked).
    pub writers_running: usize,
}

impl ReplicationStatus {
    /// Whether every table holds every committed ledger.
    pub fn caught_up(&self) -> bool {
        self.head.is_some() && self.lag_ledgers == 0
    }

    /// The status in the Prometheus text format (base units: ledgers, seconds).
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_table = |f: &dyn Fn(&TableStatus) -> String| -> Vec<(String, String)> {
            self.tables.iter().map(|t| (format!("{{table=\"{}\"}}", t.table), f(t))).collect()
        };
        metric(
            "caasiope_replication_ledgers",
            "gauge",
            "Ledgers replicated into the table (heights 0 to n-1).",
            &per_table(&|t| t.next_height.unwrap_or(0).to_string()),
        );
        metric(
            "caasiope_replication_table_errors_total",
            "counter",
            "Failed replication operations on the table, each retried.",
            &per_table(&|t| t.errors.to_string()),
        );
        metric(
            "caasiope_replication_repairs_total",
            "counter",
            "Incomplete ledgers found at the end of the table (an INSERT cut short), deleted and written again.",
            &per_table(&|t| t.repairs.to_string()),
        );
        if let Some(head) = self.head {
            metric(
                "caasiope_replication_head_height",
                "gauge",
                "Height of the last committed ledger.",
                &[(String::new(), head.to_string())],
            );
        }
        metric(
            "caasiope_replication_lag_ledgers",
            "gauge",
            "Committed ledgers not yet in every table.",
            &[(String::new(), self.lag_ledgers.to_string())],
        );
        if let Some(ms) = self.lag_ms {
            metric(
                "caasiope_replication_lag_seconds",
                "gauge",
                "Time since the oldest ledger not yet in every table was committed; 0 when caught up.",
                &[(String::new(), format!("{}.{:03}", ms / 1000, ms % 1000))],
            );
        }
        metric(
            "caasiope_replication_writers_running",
            "gauge",
            "Writer threads running.",
            &[(String::new(), self.writers_running.to_string())],
        );
        metric(
            "caasiope_replication_errors_total",
            "counter",
            "Failed replication operations, each retried.",
            &[(String::new(), self.errors.to_string())],
        );
        out
    }
}
