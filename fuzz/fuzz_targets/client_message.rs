#![no_main]
//! See `orelay_checks::decode::client_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::decode::client_message(data));
