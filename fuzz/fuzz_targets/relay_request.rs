//! The `relay_request` target (see `adiuva_fuzz::relay_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::relay_request(data));
