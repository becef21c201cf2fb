//! Fuzzes the envelope decoder: commit messages arrive from other devices.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = adiuva_model::Envelope::decode(text)
    {
        // What decodes must re-encode and decode to the same envelope.
        let encoded = envelope.encode().ok();
        assert_eq!(encoded.and_then(|text| adiuva_model::Envelope::decode(&text).ok()), Some(envelope));
    }
});
