#![no_main]
//! See `orelay_checks::decode::object_header`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::decode::object_header(data));
