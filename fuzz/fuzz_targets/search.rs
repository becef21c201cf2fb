//! The `search` target (see `adiuva_fuzz::search`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::search(data));
