//! Fuzzes the read view decoders: a stored base (deflated JSON) and a delta, after decryption.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = adiuva_engine::view::RecordView::decode(data);
    if let Ok(delta) = adiuva_engine::view::Delta::decode(data) {
        let mut view = adiuva_engine::view::RecordView::default();
        view.apply(&delta);
    }
});
