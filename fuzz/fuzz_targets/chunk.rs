//! The `chunk` target (see `adiuva_fuzz::chunk`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::chunk(data));
