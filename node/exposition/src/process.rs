//! The process's own metrics, read from `/proc/self` at each scrape, under the names every
//! Prometheus client library uses (`process_*`), so stock dashboards and alerts apply.

use std::fmt::Write as _;

/// What `/proc/self` says of this process.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: u64,
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3, `state`, is index 0).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// Reads `stat` (of `/proc/self/stat`) with the clock tick, page size and boot time given.
fn parse(stat: &str, ticks_per_second: f64, page_bytes: u64, boot_time_seconds: f64) -> Option<Process> {
    let f = stat_fields(stat)?;
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second,
        threads: field(20)?,
        start_time_seconds: boot_time_seconds + field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_bytes,
        open_fds: 0,
        max_fds: 0,
    })
}

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    let mut p = parse(&stat, ticks.max(1) as f64, page.max(1) as u64, boot)?;
    p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        p.max_fds = limit.rlim_cur;
    }
    Some(p)
}

/// Appends the `process_*` families (nothing where `/proc` cannot be read).
pub fn render(out: &mut String) {
    let Some(p) = read() else { return };
    let families: [(&str, &str, &str, String); 7] = [
        (
            "cpu_seconds_total",
            "counter",
            "User and system CPU time spent, seconds.",
            p.cpu_seconds.to_string(),
        ),
        ("resident_memory_bytes", "gauge", "Resident memory size, bytes.", p.resident_bytes.to_string()),
        ("virtual_memory_bytes", "gauge", "Virtual memory size, bytes.", p.virtual_bytes.to_string()),
        ("threads", "gauge", "Operating-system threads of the process.", p.threads.to_string()),
        ("open_fds", "gauge", "Open file descriptors.", p.open_fds.to_string()),
        (
            "max_fds",
            "gauge",
            "Most file descriptors the process may open (RLIMIT_NOFILE).",
            p.max_fds.to_string(),
        ),
        (
            "start_time_seconds",
            "gauge",
            "Start time of the process since the unix epoch, seconds.",
            p.start_time_seconds.to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(
            out,
            "# HELP process_{name} {help}\n# TYPE process_{name} {kind}\nprocess_{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_a_command_name_holding_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss …
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194304 10 0 0 0 250 150 0 0 20 0 7 0 1000 123456789 300 18446744073709551615";
        let p = parse(stat, 100.0, 4096, 1_700_000_000.0).unwrap();
        assert_eq!(
            p,
            Process {
                cpu_seconds: 4.0,
                resident_bytes: 300 * 4096,
                virtual_bytes: 123_456_789,
                threads: 7,
                start_time_seconds: 1_700_000_010.0,
                open_fds: 0,
                max_fds: 0,
            }
        );
        assert_eq!(parse("42 (x) S 1", 100.0, 4096, 0.0), None);
    }

    #[test]
    fn this_process_is_read() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines().find_map(|l| l.strip_prefix(&format!("process_{name} "))).unwrap().parse().unwrap()
        };
        assert!(value("resident_memory_bytes") > 1e6, "{out}");
        assert!(value("threads") >= 1.0);
        assert!(value("open_fds") >= 3.0);
        assert!(value("max_fds") >= value("open_fds"));
        assert!(value("start_time_seconds") > 1.6e9);
    }
}
