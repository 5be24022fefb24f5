//! Workload builders and benchmarks of Caasiope node's hot paths.
//!
//! * [`workload`]: genesis files with many funded accounts and pre-signed transfers;
//! * [`budget`]: the engine's per-transfer cost against one signature verification, as JSON.
//!
//! Criterion benchmarks of the individual hot paths live in `benches/`.

pub mod budget;
pub mod workload;
