//! The `import` target (see `adiuva_fuzz::import`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::import(data));
