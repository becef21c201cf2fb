//! Fuzzes the chunk and local blob decoders: chunks are read back from disk and, later, from
//! peers and the relay; local blobs from disk.
#![no_main]

use adiuva_engine::chunk::{BlobKind, ChunkPlace, open_chunk, open_local, parse_frame};
use adiuva_engine::crypto::SecretKey;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data);
    let key = SecretKey::from_bytes([7; 32]);
    let place = ChunkPlace { workspace_id: &[1; 16], blob_id: b"c/tasks\0\0\0\0\0\0\0\0\0" };
    for kind in [BlobKind::Changes, BlobKind::Snapshot, BlobKind::Manifest, BlobKind::ReadView] {
        let _ = open_chunk(data, place, kind, |_| Some(&key));
        let _ = open_local(data, place, kind, |_| Some(&key));
    }
});
