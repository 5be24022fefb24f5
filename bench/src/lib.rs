//! Workload builders and benchmarks of Caasiope node's hot paths.
