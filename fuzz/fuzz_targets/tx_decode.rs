//! Signed-transaction decoding: canonical codec, `from_bytes` ≡ `decode_with_id`, stateless
//! checks and both signature backends on whatever decodes. See `caasiope_fuzz::tx_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::tx_decode(data));
