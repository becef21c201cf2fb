//! The `key_envelope` target (see `adiuva_fuzz::key_envelope`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::key_envelope(data));
