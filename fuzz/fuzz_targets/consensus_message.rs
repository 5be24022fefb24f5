//! Consensus-channel messages: canonical codec; signatures checked with both backends against
//! the fixture's validators, and none found that they did not make. See
//! `caasiope_fuzz::consensus_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::consensus_message(data));
