//! The `daemon_request` target (see `adiuva_fuzz::daemon_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| adiuva_fuzz::daemon_request(data));
