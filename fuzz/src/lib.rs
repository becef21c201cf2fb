//! The fuzz targets' bodies, one function per target, over every decoder of bytes from
//! outside: other devices, the relay, the disk. The binaries in `fuzz_targets/` run them under
//! libFuzzer (`scripts/fuzz`); the test below replays every input of each target's committed
//! corpus (`seeds/TARGET/`: hand-made and real samples, and what long runs kept, minimized),
//! of the local corpus a run grew (`corpus/TARGET/`, not committed) and every crash kept as a
//! regression fixture (`regressions/TARGET/`) through them in the regular test run, so a fixed
//! crash stays fixed.
//!
//! A target must never panic on any input: a decoder's bad input is an `Err`. The assertions
//! inside check round trips (what decodes re-encodes to the same thing).

use adiuva_engine::authorship::{Decoded, SignedChanges, SignedSnapshot};
use adiuva_engine::chunk::{BlobKind, ChunkPlace, open_chunk, open_local, parse_frame, seal_local};
use adiuva_engine::crypto::SecretKey;

/// A target's body: bytes in, no panic.
pub type Target = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("chunk", chunk),
    ("header", header),
    ("view", view),
    ("wal", wal),
    ("signed", signed),
    ("invite", invite),
    ("search", search),
    ("peer", peer),
];

/// Commit messages arrive from other devices.
pub fn envelope(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = adiuva_model::Envelope::decode(text)
    {
        // What decodes must re-encode and decode to the same envelope.
        let encoded = envelope.encode().ok();
        assert_eq!(encoded.and_then(|text| adiuva_model::Envelope::decode(&text).ok()), Some(envelope));
    }
}

const KINDS: [BlobKind; 7] = [
    BlobKind::Changes,
    BlobKind::Snapshot,
    BlobKind::Manifest,
    BlobKind::ReadView,
    BlobKind::ReadViewDelta,
    BlobKind::EventIndex,
    BlobKind::Pending,
];

/// Chunks and local blobs from disk, peers and the relay: the frame decoders on the bytes as
/// they are, then — with a key the target knows — the decoders behind the AEAD: the first byte
/// picks a blob kind, the rest is sealed as such a blob's payload, opened through the real
/// path and decoded as what that kind holds.
pub fn chunk(data: &[u8]) {
    let _ = parse_frame(data);
    let key = SecretKey::from_bytes([7; 32]);
    let place = ChunkPlace { workspace_id: &[1; 16], blob_id: b"c/tasks\0\0\0\0\0\0\0\0\0" };
    for kind in KINDS {
        let _ = open_chunk(data, place, kind, |_| Some(&key));
        let _ = open_local(data, place, kind, |_| Some(&key));
    }
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let Ok(sealed) = seal_local(place, kind, &key, payload) else {
        return;
    };
    let opened = open_local(&sealed, place, kind, |_| Some(&key));
    assert_eq!(opened.as_deref().ok(), Some(payload), "a sealed blob opens to its payload");
    match kind {
        BlobKind::Changes | BlobKind::Pending => {
            if let Ok(Decoded::Attested(unit)) = SignedChanges::decode(payload) {
                for change in unit.changes {
                    let _ = automerge::Change::from_bytes(change);
                }
            }
        }
        BlobKind::Snapshot => {
            if let Ok(Decoded::Attested(snapshot)) = SignedSnapshot::decode(payload) {
                let _ = automerge::Automerge::load(&snapshot.document);
            }
        }
        BlobKind::Manifest => {
            let _ = adiuva_engine::manifest::Manifest::decode(payload);
        }
        BlobKind::ReadView => {
            let _ = adiuva_engine::view::RecordView::decode(payload);
        }
        BlobKind::ReadViewDelta => view(payload),
        BlobKind::EventIndex => {
            let _ = adiuva_engine::event_index::EventIndex::decode(payload);
        }
        _ => {}
    }
}

/// The one record stored in clear.
pub fn header(data: &[u8]) {
    let _ = adiuva_engine::keystore::Header::decode(data);
}

/// What is kept beside the log, after decryption: read view bases and deltas, event indexes.
pub fn view(data: &[u8]) {
    let _ = adiuva_engine::view::RecordView::decode(data);
    let _ = adiuva_engine::event_index::EventIndex::decode(data);
    if let Ok(delta) = adiuva_engine::view::Delta::decode(data) {
        let mut view = adiuva_engine::view::RecordView::default();
        view.apply(&delta);
    }
}

/// The write-ahead log (read back unauthenticated at every open, also by a read-only open) and
/// manifests.
pub fn wal(data: &[u8]) {
    let _ = adiuva_engine::store::inspect_write_ahead_log(data);
    let _ = adiuva_engine::manifest::Manifest::decode(data);
}

/// What other devices send, after decryption: signed changes (tail chunks, exports, relay
/// bundles), signed snapshots (relay restore points) and invitation tickets.
pub fn signed(data: &[u8]) {
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
}

/// The invitation messages a joining device and an inviter exchange (through the relay, as
/// opaque JSON): a join request and a join acceptance.
pub fn invite(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<adiuva_engine::JoinRequest>(data) {
        let encoded = serde_json::to_vec(&request).ok();
        assert!(encoded.is_some_and(|bytes| serde_json::from_slice::<adiuva_engine::JoinRequest>(&bytes).is_ok()));
    }
    let _ = serde_json::from_slice::<adiuva_engine::JoinAcceptance>(data);
}

/// The search index's stored vectors, after decryption (a vector shard), and the text the
/// index cuts into words and chunks (notes from other devices).
pub fn search(data: &[u8]) {
    if let Ok((model, entries)) = adiuva_search::vectors::decode_shard(data) {
        let refs: Vec<_> = entries.iter().map(|(hash, vector)| (hash, vector)).collect();
        assert_eq!(adiuva_search::vectors::encode_shard(&model, &refs), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        use adiuva_search::text::analyzer;
        use tantivy::tokenizer::TokenStream;
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let token = stream.token();
            assert!(token.offset_from <= token.offset_to && text.is_char_boundary(token.offset_to));
        }
        let chunks = adiuva_search::record::chunk(text);
        assert!(!chunks.is_empty());
    }
}

/// What a peer sends over the peer protocol: frames (hello, rounds, heads) and, inside a
/// round, Automerge sync messages; and peer tickets as text.
pub fn peer(data: &[u8]) {
    use adiuva_p2p::frame::Frame;
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data);
        if let Frame::Round(entries) = frame {
            for (_, message) in entries {
                let _ = automerge::sync::Message::decode(&message.sync);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ticket) = text.parse::<adiuva_p2p::PeerTicket>()
    {
        assert_eq!(ticket.to_string().parse::<adiuva_p2p::PeerTicket>().ok(), Some(ticket));
    }
}

#[cfg(test)]
mod tests {
    // Tests fail loudly: unwrapping is how they assert.
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    /// Every input of every target's corpora and every crash fixed runs through its target
    /// without a panic.
    #[test]
    fn every_corpus_input_and_kept_crash_runs_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut ran = 0;
        for (name, target) in super::TARGETS {
            for dir in ["seeds", "corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let input = std::fs::read(&path).unwrap();
                    let outcome = std::panic::catch_unwind(|| target(&input));
                    assert!(outcome.is_ok(), "{name} panics on {}", path.display());
                    ran += 1;
                }
            }
        }
        assert!(ran >= super::TARGETS.len(), "every target has at least one input ({ran} ran)");
    }
}
