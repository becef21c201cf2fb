//! The `view` target (see `adiuva_fuzz::view`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::view(data));
