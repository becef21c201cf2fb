//! The `apply` target (see `adiuva_fuzz::apply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::apply(data));
