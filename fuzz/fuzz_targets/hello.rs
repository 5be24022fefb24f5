//! The hello of a peer connection: `parse_hello` accepts only what `hello_payload` sends, and
//! reads back any chain id it is sent. See `caasiope_fuzz::hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caasiope_fuzz::hello(data));
