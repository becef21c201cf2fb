//! The `document` target (see `adiuva_fuzz::document`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::document(data));
