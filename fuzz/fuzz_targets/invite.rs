//! The `invite` target (see `adiuva_fuzz::invite`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::invite(data));
