//! Workload builders and benchmarks of Caasiope node's hot paths.
//!
//! * [`workload`]: genesis files with many funded accounts and pre-signed transfers;
//! * [`budget`]: the engine's per-transfer cost against one signature verification, as JSON.
//!
//! Criterion benchmarks of the individual hot paths live in `benches/`.

pub mod budget;
pub mod workload;

/// The median of `xs` (not empty): with an even count, the mean of the two middle values.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}
