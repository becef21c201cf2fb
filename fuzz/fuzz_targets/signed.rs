//! The `signed` target (see `adiuva_fuzz::signed`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::signed(data));
