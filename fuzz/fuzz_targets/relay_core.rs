#![no_main]
//! See `orelay_checks::core::relay_core`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::core::relay_core(data));
