//! Prometheus text exposition shared by the node's crates (format 0.0.4, what `promtool check
//! metrics` checks): [`Histogram`]s of durations with fixed buckets, family headers, label
//! values escaped, and the process's own metrics ([`process::render`]).
//!
//! Counters and gauges stay plain atomics in their owners; a histogram is a fixed array of
//! atomic counts (one relaxed add per observation, no lock), rendered cumulative.

pub mod process;

use std::{
    fmt::Write as _,
    marker::PhantomData,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// The bucket bounds (seconds, increasing) of a kind of histogram.
pub trait Buckets {
    /// The `le` bounds.
    const BOUNDS: &'static [f64];
}

/// For what takes from milliseconds to a minute: a transaction's way from submission to
/// commit, a height, a round.
#[derive(Debug)]
pub struct Slow;

impl Buckets for Slow {
    const BOUNDS: &'static [f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
}

/// For what takes from a tenth of a millisecond to seconds: a batch verified, a ledger stored,
/// an API request answered.
#[derive(Debug)]
pub struct Fast;

impl Buckets for Fast {
    const BOUNDS: &'static [f64] =
        &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
}

/// A histogram of durations: counts per bucket of `B`, their sum and count.
#[derive(Debug)]
pub struct Histogram<B> {
    /// Observations per bucket (not cumulative), the last for those above every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, nanoseconds.
    sum_ns: AtomicU64,
    buckets: PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Self {
            counts: (0..=B::BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            buckets: PhantomData,
        }
    }
}

impl<B: Buckets> Histogram<B> {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let bucket = B::BOUNDS.iter().position(|&b| seconds <= b).unwrap_or(B::BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Something rendered as the samples of one histogram family.
pub trait Render {
    /// Appends the samples as series of family `name` with `labels` (already formatted
    /// `k="v",…`, or empty): cumulative `_bucket`s up to `+Inf`, `_sum`, `_count`.
    fn render(&self, out: &mut String, name: &str, labels: &str);
}

impl<B: Buckets> Render for Histogram<B> {
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = B::BOUNDS.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Appends the `# HELP` and `# TYPE` lines of a family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", escape_help(help));
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value as the exposition format wants it (backslash, quote and line feed escaped).
pub fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_infinity() {
        struct Two;
        impl Buckets for Two {
            const BOUNDS: &'static [f64] = &[0.1, 1.0];
        }
        let h = Histogram::<Two>::default();
        for ms in [50, 100, 500, 2_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "route=\"/a\"");
        assert_eq!(
            out,
            "x_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\nx_seconds_bucket{route=\"/a\",le=\"1\"} 3\n\
             x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\nx_seconds_sum{route=\"/a\"} 2.65\n\
             x_seconds_count{route=\"/a\"} 4\n"
        );
        assert_eq!(h.count(), 4);
        let mut out = String::new();
        Histogram::<Slow>::default().render(&mut out, "y_seconds", "");
        assert!(
            out.contains("y_seconds_bucket{le=\"+Inf\"} 0\ny_seconds_sum 0\ny_seconds_count 0\n"),
            "{out}"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        header(&mut out, "z_total", "counter", "one\\two\nthree");
        assert_eq!(out, "# HELP z_total one\\\\two\\nthree\n# TYPE z_total counter\n");
    }
}
