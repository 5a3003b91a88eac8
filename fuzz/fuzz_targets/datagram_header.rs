#![no_main]
//! See `orelay_checks::decode::datagram_header`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| orelay_checks::decode::datagram_header(data));
