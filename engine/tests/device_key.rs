//! Each device seals its store under a storage key of its own, not under a key derived from
//! the shared workspace key: a device removed from the workspace keeps the workspace keys it
//! had, and must still read nothing of this device's store. Older workspaces (sealed under the
//! derived key) still open, and move at `upgrade` or at a full compaction.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::chunk::{self, ChunkPlace};
use adiuva_engine::crypto::{KeyPurpose, SecretKey};
use adiuva_engine::keystore::{self, Header};
use adiuva_engine::store::{ChunkStore, SledStore, WriteBatch};
use adiuva_engine::{Upgrade, Workspace};
use adiuva_model::{Collection, ErrorCode};
use common::{FIXTURE_2026_12_PASSPHRASE, PASSPHRASE, add_note, add_task, copy_fixture};
use zeroize::Zeroizing;

/// Every sealed thing the workspace at `dir` holds, as (blob id, bytes): the store's values
/// (all but the cleartext header and the keyring) and the witness file.
fn stored_frames(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = SledStore::open(&dir.join("store")).unwrap();
    let mut frames: Vec<_> = store
        .scan_prefix(b"")
        .unwrap()
        .into_iter()
        .filter(|(key, _)| key.as_slice() != b"h" && key.as_slice() != b"k")
        .collect();
    frames.push((b"witness".to_vec(), std::fs::read(dir.join("witness")).unwrap()));
    frames
}

/// What a device holding only the workspace key (as every device of the workspace does, a
/// removed one included) derives to read a store: the workspace's id and the storage key
/// derived from the workspace key.
fn workspace_key_holder(dir: &Path, passphrase: &str) -> ([u8; 16], SecretKey) {
    let store = SledStore::open(&dir.join("store")).unwrap();
    let header = store.get(b"h").unwrap().unwrap();
    let keyring = store.get(b"k").unwrap().unwrap();
    let unlocked = keystore::unlock(&header, &keyring, || Some(Zeroizing::new(passphrase.into()))).unwrap();
    let derived = unlocked.keyring.workspace_key().unwrap().key.derive(KeyPurpose::LocalStorage);
    (Header::decode(&header).unwrap().workspace_id.to_bytes(), derived)
}

/// How many of the workspace's sealed things open with the workspace-derived key.
fn readable_with_workspace_key(dir: &Path, passphrase: &str) -> usize {
    let (workspace_id, derived) = workspace_key_holder(dir, passphrase);
    stored_frames(dir)
        .iter()
        .filter(|(key, bytes)| {
            let frame = chunk::parse_frame(bytes).unwrap();
            let place = ChunkPlace { workspace_id: &workspace_id, blob_id: key };
            if frame.signed {
                chunk::open_chunk(bytes, place, frame.kind, |_| Some(&derived)).is_ok()
            } else {
                chunk::open_local(bytes, place, frame.kind, |_| Some(&derived)).is_ok()
            }
        })
        .count()
}

#[test]
fn a_device_holding_the_workspace_key_reads_nothing_of_another_devices_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = common::init(dir.path());
    for index in 0..3 {
        add_task(&mut workspace, &format!("task {index}"), "secret description");
    }
    add_note(&mut workspace, "note", "secret body");
    workspace.compact().unwrap();
    add_task(&mut workspace, "in the tail", "secret description");
    drop(workspace);

    let frames = stored_frames(dir.path());
    // Snapshots, chunks, manifests, view bases and deltas, the witness: every kind is there.
    assert!(frames.len() >= 10, "{} frames", frames.len());
    assert_eq!(readable_with_workspace_key(dir.path(), PASSPHRASE), 0);
}

#[test]
fn an_older_workspace_moves_to_the_device_key_at_upgrade_and_then_refuses_the_old_key() {
    let dir = copy_fixture("workspace-2026-12");
    let before = stored_frames(dir.path()).len();
    assert_eq!(readable_with_workspace_key(dir.path(), FIXTURE_2026_12_PASSPHRASE), before);
    let original_manifest = SledStore::open(&dir.path().join("store")).unwrap().get(b"m/tasks").unwrap().unwrap();

    let open = || Workspace::open(dir.path(), || Some(Zeroizing::new(FIXTURE_2026_12_PASSPHRASE.into())));
    let mut workspace = open().unwrap();
    // Opening gives the device its storage key; what is stored stays readable until the move.
    add_task(&mut workspace, "written after the first open", "");
    let moved = workspace.upgrade().unwrap();
    assert!(moved.resealed > 0, "{moved:?}");
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 3);
    drop(workspace);
    assert_eq!(readable_with_workspace_key(dir.path(), FIXTURE_2026_12_PASSPHRASE), 0);

    let mut workspace = open().unwrap();
    assert_eq!(workspace.upgrade().unwrap(), Upgrade::default(), "nothing left to move");
    assert_eq!(workspace.list(Collection::Tasks).unwrap()[0]["title"], "Fixture task");
    drop(workspace);

    // Once moved, a blob sealed under the derived key is refused, even one the workspace wrote.
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    let mut batch = WriteBatch::default();
    batch.put(b"m/tasks".to_vec(), original_manifest);
    store.write(batch).unwrap();
    store.sync().unwrap();
    drop(store);
    let mut workspace = open().unwrap();
    let error = workspace.list(Collection::Tasks).unwrap_err();
    assert_eq!(error.code(), ErrorCode::UnknownEpoch, "{error}");
}

#[test]
fn a_full_compaction_moves_an_older_workspace_to_the_device_key() {
    let dir = copy_fixture("workspace-2026-12");
    let mut workspace =
        Workspace::open(dir.path(), || Some(Zeroizing::new(FIXTURE_2026_12_PASSPHRASE.into()))).unwrap();
    workspace.compact().unwrap();
    assert_eq!(workspace.list(Collection::Notes).unwrap()[0]["body"], "Body of the fixture note");
    drop(workspace);
    assert_eq!(readable_with_workspace_key(dir.path(), FIXTURE_2026_12_PASSPHRASE), 0);
}
