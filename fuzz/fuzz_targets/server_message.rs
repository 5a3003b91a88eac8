#![no_main]
//! See `orelay_checks::decode::server_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::decode::server_message(data));
