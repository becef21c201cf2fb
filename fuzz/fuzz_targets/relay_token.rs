//! The `relay_token` target (see `adiuva_fuzz::relay_token`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::relay_token(data));
