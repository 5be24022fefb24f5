//! Profiling runs of Caasiope node's hot paths.
//!
//! The `caasiope-perf` driver runs a command under `perf record` (software clock sampling, which
//! works where hardware counters are not exposed) or, where the kernel forbids perf,
//! `valgrind --tool=callgrind` (instruction counts, repeatable on a noisy machine), and writes a
//! ranked summary — and, for perf, a flamegraph — into an output directory.
//!
//! `scripts/profile` builds the `profiling` profile and profiles the pipeline benchmark.

use std::{collections::HashMap, io::BufRead};

/// Self and inclusive sample counts per function, from folded stacks (`a;b;c 12` lines).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranking {
    /// Total samples.
    pub total: u64,
    /// (function, self samples), most first.
    pub by_self: Vec<(String, u64)>,
    /// (function, inclusive samples), most first.
    pub by_inclusive: Vec<(String, u64)>,
}

/// Ranks the functions of folded stacks by self and inclusive samples.
pub fn rank_folded(folded: impl BufRead) -> Ranking {
    let mut self_counts: HashMap<String, u64> = HashMap::new();
    let mut incl_counts: HashMap<String, u64> = HashMap::new();
    let mut total = 0u64;
    for line in folded.lines().map_while(Result::ok) {
        let Some((stack, count)) = line.rsplit_once(' ') else { continue };
        let Ok(count) = count.trim().parse::<u64>() else { continue };
        total += count;
        let frames: Vec<&str> = stack.split(';').collect();
        if let Some(leaf) = frames.last() {
            *self_counts.entry((*leaf).to_owned()).or_default() += count;
        }
        // A recursive function counts once per stack for its inclusive time.
        let mut seen: Vec<&str> = Vec::with_capacity(frames.len());
        for f in frames {
            if !seen.contains(&f) {
                seen.push(f);
                *incl_counts.entry(f.to_owned()).or_default() += count;
            }
        }
    }
    let sorted = |m: HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    Ranking { total, by_self: sorted(self_counts), by_inclusive: sorted(incl_counts) }
}

impl Ranking {
    /// A text table of the top `n` functions by self and by inclusive samples.
    pub fn report(&self, n: usize) -> String {
        let pct = |c: u64| if self.total == 0 { 0.0 } else { 100.0 * c as f64 / self.total as f64 };
        let mut out = format!("total weight {} (perf: ns of cpu-clock)\n\nself %   function\n", self.total);
        for (f, c) in self.by_self.iter().take(n) {
            out.push_str(&format!("{:6.2}   {f}\n", pct(*c)));
        }
        out.push_str("\ninclusive %   function\n");
        for (f, c) in self.by_inclusive.iter().take(n) {
            out.push_str(&format!("{:11.2}   {f}\n", pct(*c)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_self_and_inclusive() {
        let folded = "main;verify;ecmult 70\nmain;apply 20\nmain;verify 5\nmain;apply;apply 5\n";
        let r = rank_folded(folded.as_bytes());
        assert_eq!(r.total, 100);
        assert_eq!(r.by_self[0], ("ecmult".to_owned(), 70));
        assert_eq!(r.by_inclusive[0], ("main".to_owned(), 100));
        assert!(r.by_inclusive.contains(&("apply".to_owned(), 25)), "recursion counted once per stack");
        assert!(r.report(3).contains("70.00   ecmult"));
    }
}
