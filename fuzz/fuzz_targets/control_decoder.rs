#![no_main]
//! See `orelay_checks::decode::control_decoder`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::decode::control_decoder(data));
