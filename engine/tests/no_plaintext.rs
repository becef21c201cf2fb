//! Nothing written into a task or note appears in clear anywhere under the workspace
//! directory: not in change chunks, not in manifests, not in snapshots, not in the witness,
//! before or after compaction, nor after edits, deletion, or a group commit. And every value the
//! store holds is a sealed frame, so data that is only compressed cannot pass for encrypted.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_engine::Effect;
use adiuva_engine::store::{ChunkStore, SledStore};
use adiuva_model::Collection;
use common::*;
use serde_json::json;

const MARKERS: [&str; 5] = [
    "MARKER-TITLE-7f3a9c",
    "MARKER-DESCRIPTION-b81e44",
    "MARKER-NOTE-BODY-0c5d2e",
    "MARKER-EDIT-91aa0f",
    "MARKER-GROUP-5e6b7d",
];

fn assert_no_marker_on_disk(dir: &std::path::Path, stage: &str) {
    let files = files_under(dir);
    assert!(files.len() >= 3, "{stage}: expected workspace files, found {files:?}");
    for (path, bytes) in &files {
        for marker in MARKERS.iter().chain([&PASSPHRASE]) {
            assert!(!contains(bytes, marker.as_bytes()), "{stage}: {marker:?} in clear in {}", path.display());
            // Automerge compresses large columns; look for a marker's distinctive middle too.
            assert!(!contains(bytes, &marker.as_bytes()[7..]), "{stage}: part of {marker:?} in {}", path.display());
        }
    }
}

/// Frame starts: a signed chunk or a local blob, format 2 (sealed under the device's storage key).
const FRAMES: [&[u8]; 2] = [b"ADVC\x02", b"ADVL\x02"];

fn assert_every_value_sealed(dir: &std::path::Path) {
    let store = SledStore::open(&dir.join("store")).unwrap();
    let entries = store.scan_prefix(b"").unwrap();
    assert!(entries.len() > 10, "{} entries", entries.len());
    for (key, value) in entries {
        // The header is cleartext by design (and the keyring's associated data); the keyring
        // is sealed under the key-encryption key in its own format.
        if key == b"h" || key == b"k" {
            continue;
        }
        assert!(FRAMES.iter().any(|frame| value.starts_with(frame)), "{:?} holds an unsealed value", key);
        if value.starts_with(FRAMES[0]) {
            adiuva_engine::chunk::parse_frame(&value).unwrap();
        }
    }
    let values = dir.join("store").join("values");
    let files: Vec<_> = std::fs::read_dir(values).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!files.is_empty(), "the test must cover value files");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(FRAMES.iter().any(|frame| bytes.starts_with(frame)), "{} is not a sealed frame", file.display());
    }
}

#[test]
fn task_and_note_text_never_reaches_the_disk_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    let task = add_task(&mut workspace, MARKERS[0], MARKERS[1]);
    add_note(&mut workspace, "a note", &format!("{} and a long body {}", MARKERS[2], "lorem ipsum ".repeat(800)));
    workspace
        .commit(
            draft("task.updated"),
            Effect::UpdateRecord {
                collection: Collection::Tasks,
                id: task,
                fields: fields(json!({"description": format!("{} {}", MARKERS[1], MARKERS[3])})),
            },
        )
        .unwrap();
    let group: Vec<_> =
        (0..300).map(|i| (draft("task.created"), task_effect(&format!("{} {i}", MARKERS[4]), MARKERS[4]))).collect();
    workspace.commit_batch(group).unwrap();
    assert_no_marker_on_disk(dir.path(), "after commits");

    workspace.compact().unwrap();
    assert_no_marker_on_disk(dir.path(), "after compaction");

    workspace.commit(draft("task.deleted"), Effect::DeleteRecord { collection: Collection::Tasks, id: task }).unwrap();
    drop(workspace);
    assert_no_marker_on_disk(dir.path(), "after close");
    assert_every_value_sealed(dir.path());

    // And the text is really there, for whoever holds the key.
    let mut workspace = open(dir.path());
    let notes = workspace.list(Collection::Notes).unwrap();
    assert!(notes[0]["body"].as_str().unwrap().contains(MARKERS[2]));
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 300);
}
