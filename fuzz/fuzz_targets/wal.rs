//! The `wal` target (see `adiuva_fuzz::wal`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::wal(data));
