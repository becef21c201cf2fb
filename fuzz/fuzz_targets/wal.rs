//! Fuzzes the write-ahead log decoder (`store/wal`, read back unauthenticated at every open) and
//! the manifest decoder (what a sealed manifest opens to).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = adiuva_engine::store::inspect_write_ahead_log(data);
    let _ = adiuva_engine::manifest::Manifest::decode(data);
});
