//! The `peer_notice` target (see `adiuva_fuzz::peer_notice`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::peer_notice(data));
