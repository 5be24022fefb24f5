//! Sync- and gossip-channel payloads: canonical codec, bounded counts, `ledger_request` in step
//! with the decoder; the ledgers, bodies and evidence inside checked against the fixture. See
//! `caasiope_fuzz::sync_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::sync_message(data));
