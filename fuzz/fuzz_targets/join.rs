//! The `join` target (see `adiuva_fuzz::join`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::join(data));
