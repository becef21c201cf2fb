//! Fuzzes the envelope decoder: commit messages arrive from other devices.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = adiuva_model::Envelope::decode(text)
    {
        // What decodes must re-encode and decode to the same envelope.
        assert_eq!(adiuva_model::Envelope::decode(&envelope.encode()).ok(), Some(envelope));
    }
});
