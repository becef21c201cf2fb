//! The `peer` target (see `adiuva_fuzz::peer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::peer(data));
