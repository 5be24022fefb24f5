//! Write-ahead log records, signing states and equivocation proofs: canonical codec; the
//! messages inside and the proofs checked against the fixture's validators with both backends.
//! See `caasiope_fuzz::wal_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::wal_record(data));
