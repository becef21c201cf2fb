//! Fuzzes the decoders of what is kept beside the log, after decryption: a read view base, a
//! read view delta and an event index (base or part).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = adiuva_engine::view::RecordView::decode(data);
    let _ = adiuva_engine::event_index::EventIndex::decode(data);
    if let Ok(delta) = adiuva_engine::view::Delta::decode(data) {
        let mut view = adiuva_engine::view::RecordView::default();
        view.apply(&delta);
    }
});
