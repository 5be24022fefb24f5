//! What the benchmarks measure themselves with: the process's CPU time and memory, and the
//! order statistics of their samples.

/// A field of `/proc/self/status`, in kB (0 if absent): `VmHWM:` is the peak resident memory
/// (file-backed MDBX pages included), `RssAnon:` the process's own allocations now.
pub(crate) fn proc_status_kb(field: &str) -> u64 {
    status_kb("/proc/self/status", field)
}

/// [`proc_status_kb`] of process `pid` (0 if it is gone).
pub(crate) fn proc_status_kb_of(pid: u32, field: &str) -> u64 {
    status_kb(&format!("/proc/{pid}/status"), field)
}

fn status_kb(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used, all threads.
pub(crate) fn process_cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is valid for writes of one rusage; RUSAGE_SELF needs nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The value at rank `p` (0 to 1, nearest rank) of `sorted` (ascending); the default value for
/// an empty slice.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    let Some(last) = sorted.len().checked_sub(1) else { return T::default() };
    let i = (last as f64 * p).round() as usize;
    sorted[i.min(last)]
}

pub(crate) use bench::median;

/// The report of the run of median `ratio`, with `summary` of every run (in run order) under
/// `runs`: the machine is shared and its speed drifts by tens of percent between runs.
pub(crate) fn median_run(
    mut runs: Vec<serde_json::Value>,
    summary: impl Fn(&serde_json::Value) -> serde_json::Value,
) -> serde_json::Value {
    let listed: Vec<serde_json::Value> = runs.iter().map(&summary).collect();
    let ratio = |r: &serde_json::Value| r["ratio"].as_f64().unwrap_or(0.0);
    runs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let mut report = if runs.is_empty() { serde_json::json!({}) } else { runs.swap_remove(runs.len() / 2) };
    report["runs"] = serde_json::json!(listed);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_run_is_reported_with_every_run_listed_in_order() {
        let runs = [0.9, 0.5, 0.7].map(|r| serde_json::json!({ "ratio": r, "extra": "kept" }));
        let report = median_run(runs.to_vec(), |r| serde_json::json!({ "ratio": r["ratio"] }));
        assert_eq!(report["ratio"], 0.7);
        assert_eq!(report["extra"], "kept");
        assert_eq!(report["runs"], serde_json::json!([{ "ratio": 0.9 }, { "ratio": 0.5 }, { "ratio": 0.7 }]));
    }
}
