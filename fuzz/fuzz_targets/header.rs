//! Fuzzes the workspace header decoder: the header is the one record stored in clear.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = adiuva_engine::keystore::Header::decode(data);
});
