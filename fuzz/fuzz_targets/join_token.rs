#![no_main]
//! See `orelay_checks::token::join_token`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::token::join_token(data));
