//! Fuzzes the decoders of what other devices send (after decryption): signed changes (tail
//! chunks, exports, bundles), signed snapshots (restore points) and invitation tickets.
#![no_main]

use adiuva_engine::authorship::{Decoded, SignedChanges, SignedSnapshot};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // What decodes must re-encode to the same bytes: the format has one encoding.
    if let Ok(Decoded::Attested(unit)) = SignedChanges::decode(data) {
        assert_eq!(unit.encode().ok().as_deref(), Some(data));
    }
    if let Ok(Decoded::Attested(snapshot)) = SignedSnapshot::decode(data) {
        assert_eq!(snapshot.encode().ok().as_deref(), Some(data));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ticket) = adiuva_engine::Ticket::decode(text)
    {
        assert_eq!(adiuva_engine::Ticket::decode(&ticket.encode()).map(|t| t.invite_id).ok(), Some(ticket.invite_id));
    }
});
