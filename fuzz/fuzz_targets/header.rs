//! The `header` target (see `adiuva_fuzz::header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::header(data));
