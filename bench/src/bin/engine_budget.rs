//! Prints the engine's per-transfer cost budget as JSON (see `caasiope_bench::budget`).
//!
//! `cargo run --release -p caasiope-bench --bin engine-budget -- [TXS] [ACCOUNTS]`

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let mut cfg = caasiope_bench::budget::BudgetConfig::default();
    match (args.next(), args.next()) {
        (None, _) => {}
        (Some(Ok(txs)), None) => cfg.txs = txs,
        (Some(Ok(txs)), Some(Ok(accounts))) if accounts >= txs => {
            cfg.txs = txs;
            cfg.accounts = accounts;
        }
        _ => {
            eprintln!("error: usage: engine-budget [TXS] [ACCOUNTS ≥ TXS]");
            std::process::exit(2);
        }
    }
    cfg.senders = cfg.txs.min(cfg.accounts);
    let mut report = caasiope_bench::budget::run(cfg, 3);
    report["seal_parallel"] = caasiope_bench::budget::seal_parallel(cfg);
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
}
