//! Ledger headers, certificates, validator sets, accounts and SPV proofs: canonical codec, and
//! the proof verifiers against the fixture's validator set. See `caasiope_fuzz::ledger_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::ledger_decode(data));
