//! The `envelope` target (see `adiuva_fuzz::envelope`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::envelope(data));
