//! The `relay_unit` target (see `adiuva_fuzz::relay_unit`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::relay_unit(data));
