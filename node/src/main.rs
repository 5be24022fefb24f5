//! The `caasiope` binary.

fn main() {}
