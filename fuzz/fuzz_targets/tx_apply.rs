//! The stateful rules and apply of one decoded transaction, signatures taken as given, on the
//! fixture's genesis state: conservation after apply, exact rollback after a refusal. See
//! `caasiope_fuzz::tx_apply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    caasiope_fuzz::tx_apply(data);
});
