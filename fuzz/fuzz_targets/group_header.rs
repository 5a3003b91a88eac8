#![no_main]
//! See `orelay_checks::decode::group_header`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::decode::group_header(data));
