//! Profiling runs of Caasiope node's hot paths.
//!
//! Drivers that run a benchmark under `perf record` (where the kernel allows it) or
//! `valgrind --tool=callgrind`, and turn the result into a ranked summary or a flamegraph.
//! Filled in by the pipeline issue; the crate exists now so the workspace layout is fixed.
