//! The frame decoder of a peer connection, fed in chunks: the frames a one-shot reading finds,
//! each re-encoding to its bytes; errors at the bad header, and for good; memory bounded by
//! what arrived. See `caasiope_fuzz::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::frames(data));
