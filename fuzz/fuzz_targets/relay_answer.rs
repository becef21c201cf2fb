//! The `relay_answer` target (see `adiuva_fuzz::relay_answer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::relay_answer(data));
