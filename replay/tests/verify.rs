//! `verify` against real damage and tampering of a workspace on disk: each fault is found and
//! named (document, chunk, change), a healthy workspace passes, and one run reports several.
//!
//! The tampering is done the way an attacker with the disk (and, for the signatures, the
//! device's unlocked keyring) would: through the store, re-sealing chunks with the device's
//! own storage key where the frame must still open.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::authorship::{Attestation, AttestationPlace, Decoded, SignedChanges};
use adiuva_engine::chunk::{self, BlobKind, ChunkPlace};
use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::keystore::{self, Header, Unlocked};
use adiuva_engine::store::{ChunkStore, SledStore, WriteBatch};
use adiuva_engine::{EventFilter, Workspace};
use adiuva_model::envelope::ENVELOPE_VERSION;
use adiuva_model::{Actor, Envelope, EventId, EventKind};
use adiuva_replay::verify::{self, Fault};
use automerge::transaction::Transactable;
use common::*;

/// A workspace with a snapshot and a tail: tasks and a note, a second device's task imported,
/// that device removed (the key rotated), a compaction, then three tasks and a note on top.
fn healthy(dir: &Path) {
    let other = tempfile::tempdir().unwrap();
    let mut a = init(dir);
    add_task(&mut a, "one");
    add_task(&mut a, "two");
    add_note(&mut a, "a note", "body");
    let mut b = join(&mut a, other.path(), "desktop");
    add_task(&mut b, "from b");
    sync(&mut b, &mut a, TASKS);
    a.remove_device(b.device_id()).unwrap();
    a.compact().unwrap();
    for title in ["four", "five", "six"] {
        add_task(&mut a, title);
    }
    add_note(&mut a, "another note", "body");
}

fn faults(dir: &Path) -> Vec<Fault> {
    let mut workspace = read_only(dir);
    verify::verify(&mut workspace, &mut |_| {}).unwrap().faults
}

#[track_caller]
fn assert_found(faults: &[Fault], code: &str, names: &[&str]) {
    assert!(
        faults.iter().any(|fault| fault.code == code && names.iter().all(|name| fault.message.contains(name))),
        "no {code} fault naming {names:?} in {faults:#?}"
    );
}

/// The store of a closed workspace, and the device's unlocked keys.
struct Raw {
    store: SledStore,
    workspace_id: [u8; 16],
    keys: Unlocked,
}

fn raw(dir: &Path) -> Raw {
    let store = SledStore::open(&dir.join("store")).unwrap();
    let header = store.get(b"h").unwrap().unwrap();
    let keyring = store.get(b"k").unwrap().unwrap();
    let keys = keystore::unlock(&header, &keyring, passphrase).unwrap();
    let workspace_id = Header::decode(&header).unwrap().workspace_id.to_bytes();
    Raw { store, workspace_id, keys }
}

impl Raw {
    fn get(&self, key: &[u8]) -> Vec<u8> {
        self.store.get(key).unwrap().expect("key present")
    }

    fn put(&self, key: &[u8], value: Vec<u8>) {
        let mut batch = WriteBatch::default();
        batch.put(key, value);
        self.store.write(batch).unwrap();
        self.store.sync().unwrap();
    }

    fn delete(&self, key: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.delete(key);
        self.store.write(batch).unwrap();
        self.store.sync().unwrap();
    }

    fn flip(&self, key: &[u8]) {
        let mut bytes = self.get(key);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        self.put(key, bytes);
    }

    fn keys(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.store.keys_with_prefix(prefix).unwrap()
    }

    fn changes(&self, key: &[u8]) -> SignedChanges {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        let opened =
            chunk::open_chunk(&self.get(key), place, BlobKind::Changes, |_| Some(self.keys.keyring.storage_key()))
                .unwrap();
        match SignedChanges::decode(&opened.payload).unwrap() {
            Decoded::Attested(signed) => signed,
            Decoded::Legacy => panic!("attested"),
        }
    }

    /// Seals `signed` as the device would, at `key`.
    fn reseal(&self, key: &[u8], signed: &SignedChanges) {
        let place = ChunkPlace { workspace_id: &self.workspace_id, blob_id: key };
        let sealed = chunk::seal_chunk(
            place,
            BlobKind::Changes,
            self.keys.keyring.storage_key(),
            &self.keys.identity,
            &signed.encode().unwrap(),
        )
        .unwrap();
        self.put(key, sealed);
    }
}

fn tail_keys(raw: &Raw) -> Vec<Vec<u8>> {
    let keys = raw.keys(b"c/tasks/0\0");
    assert_eq!(keys.len(), 3, "three tasks in the tail");
    keys
}

fn seq_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap())
}

fn change_hash(signed: &SignedChanges) -> String {
    automerge::Change::from_bytes(signed.changes[0].clone()).unwrap().hash().to_string()
}

#[test]
fn a_healthy_workspace_passes_and_the_command_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    assert_eq!(faults(dir.path()), vec![]);
    let out = replay(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn flipped_bytes_in_a_chunk_a_snapshot_and_a_manifest_are_named() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let raw = raw(dir.path());
    let chunk = tail_keys(&raw)[1].clone();
    raw.flip(&chunk);
    let snapshot = raw.keys(b"s/tasks/0\0").pop().unwrap();
    raw.flip(&snapshot);
    raw.flip(b"m/root");
    drop(raw);
    let found = faults(dir.path());
    assert_found(&found, "chunk.corrupt", &[TASKS, &format!("{TASKS}#{}", seq_of(&chunk))]);
    assert_found(&found, "chunk.corrupt", &[&format!("{TASKS} snapshot {}", seq_of(&snapshot))]);
    assert_found(&found, "chunk.corrupt", &["root manifest"]);

    // Several faults, one run, a non-zero exit, each printed.
    let out = replay(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let printed = String::from_utf8(out.stdout).unwrap();
    for name in [
        format!("{TASKS}#{}", seq_of(&chunk)),
        format!("{TASKS} snapshot {}", seq_of(&snapshot)),
        "root manifest".into(),
    ] {
        assert!(printed.contains(&name), "{name} in {printed}");
    }
    assert!(printed.contains("NOT intact"), "{printed}");
}

#[test]
fn a_chunk_from_another_workspace_is_named() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    healthy(dir.path());
    healthy(other.path());
    let foreign = raw(other.path());
    let key = tail_keys(&foreign)[0].clone();
    let bytes = foreign.get(&key);
    drop(foreign);
    raw(dir.path()).put(&key, bytes);
    assert_found(&faults(dir.path()), "chunk.corrupt", &[&format!("{TASKS}#{}", seq_of(&key))]);
}

#[test]
fn a_chunk_replayed_from_an_older_epoch_is_named() {
    let (dir, old, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = init(dir.path());
    add_task(&mut a, "before the rotation");
    let b = join(&mut a, other.path(), "desktop");
    drop(a);
    copy_dir(dir.path(), old.path());
    // The workspace goes on: the key rotates, two tasks are written under the new epoch.
    let mut a = Workspace::open(dir.path(), passphrase).unwrap();
    a.remove_device(b.device_id()).unwrap();
    add_task(&mut a, "under epoch 2");
    add_task(&mut a, "also under epoch 2");
    drop(a);
    // The copy from before the rotation writes its own task later, under epoch 1...
    let mut stale = Workspace::open(old.path(), passphrase).unwrap();
    let replayed = add_task(&mut stale, "under epoch 1");
    let replayed_change =
        stale.events(&EventFilter { record: Some(replayed), ..EventFilter::default() }).unwrap().pop().unwrap().change;
    drop(stale);
    // ...and its chunk is put in place of the first task written under epoch 2: same device,
    // same key, same slot, so the frame opens.
    let stale = raw(old.path());
    let key = stale.keys(b"c/tasks/0\0").pop().unwrap();
    let bytes = stale.get(&key);
    drop(stale);
    raw(dir.path()).put(&key, bytes);
    let found = faults(dir.path());
    assert_found(&found, "change.epoch_replayed", &[&replayed_change, "epoch 1", "epoch 2"]);
}

#[test]
fn forged_and_stripped_signatures_are_named() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let raw = raw(dir.path());
    let keys = tail_keys(&raw);
    let mut forged = raw.changes(&keys[0]);
    forged.attestations[0].signature[5] ^= 0x40;
    raw.reseal(&keys[0], &forged);
    let mut stripped = raw.changes(&keys[1]);
    stripped.attestations.clear();
    raw.reseal(&keys[1], &stripped);
    drop(raw);
    let found = faults(dir.path());
    assert_found(&found, "change.bad_signature", &[TASKS, &change_hash(&forged)]);
    assert_found(&found, "change.unsigned", &[TASKS, &change_hash(&stripped)]);
}

#[test]
fn a_change_by_a_device_never_authorized_is_named() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let intruder = DeviceIdentity::generate().unwrap();
    // The intruder's change sits where the last task was, on the same history.
    let last = {
        let raw = raw(dir.path());
        let key = tail_keys(&raw)[2].clone();
        (key.clone(), raw.changes(&key))
    };
    let original = automerge::Change::from_bytes(last.1.changes[0].clone()).unwrap();
    let mut workspace = read_only(dir.path());
    let history = workspace.automerge(TASKS).unwrap().fork_at(original.deps()).unwrap();
    drop(workspace);
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        id: EventId::new(),
        kind: EventKind::from_static("task.created"),
        actor: Actor::User,
        device: intruder.device_id(),
        time: chrono::Utc::now(),
        correlation: None,
        causation: None,
        subject: None,
    };
    let mut doc = automerge::AutoCommit::load(&history.save())
        .unwrap()
        .with_actor(automerge::ActorId::from(&intruder.device_id().0[..16]));
    doc.put(automerge::ROOT, ulid::Ulid::new().to_string(), "planted").unwrap();
    doc.commit_with(automerge::transaction::CommitOptions::default().with_message(envelope.encode().unwrap()));
    let planted = doc.get_changes(original.deps()).last().map(|c| c.raw_bytes().to_vec()).unwrap();
    let planted = automerge::Change::from_bytes(planted).unwrap();
    let raw = raw(dir.path());
    let place = AttestationPlace { workspace_id: &raw.workspace_id, document: TASKS };
    let attestation = Attestation::sign(&intruder, place, 1, vec![planted.hash()]);
    raw.reseal(
        &last.0,
        &SignedChanges { attestations: vec![attestation], changes: vec![planted.raw_bytes().to_vec()] },
    );
    drop(raw);
    let found = faults(dir.path());
    assert_found(&found, "device.unknown", &[&planted.hash().to_string(), TASKS, &intruder.device_id().to_string()]);
}

#[test]
fn a_missing_chunk_and_a_missing_dependency_are_named() {
    let (lost, emptied) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    healthy(lost.path());
    copy_dir(lost.path(), emptied.path());

    let raw_lost = raw(lost.path());
    let key = tail_keys(&raw_lost)[1].clone();
    raw_lost.delete(&key);
    drop(raw_lost);
    assert_found(&faults(lost.path()), "chunk.missing", &[TASKS, &format!("chunk {}", seq_of(&key))]);

    // The chunk is there, but the change the next one builds on is not.
    let raw = raw(emptied.path());
    let keys = tail_keys(&raw);
    let removed = change_hash(&raw.changes(&keys[1]));
    let dependent = change_hash(&raw.changes(&keys[2]));
    raw.reseal(&keys[1], &SignedChanges::default());
    drop(raw);
    assert_found(&faults(emptied.path()), "change.dependency_missing", &[TASKS, &dependent, &removed]);
}

#[test]
fn a_rolled_back_store_is_named() {
    let (dir, before) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    healthy(dir.path());
    copy_dir(dir.path(), before.path());
    let mut workspace = Workspace::open(dir.path(), passphrase).unwrap();
    add_task(&mut workspace, "after the copy");
    drop(workspace);
    // The store is put back as it was; the witness beside it remembers more.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    copy_dir(&before.path().join("store"), &dir.path().join("store"));
    assert_found(&faults(dir.path()), "store.rolled_back", &[TASKS]);
}

#[test]
fn several_kinds_of_fault_are_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let raw = raw(dir.path());
    let keys = tail_keys(&raw);
    raw.flip(&keys[0]);
    let mut stripped = raw.changes(&keys[2]);
    stripped.attestations.clear();
    raw.reseal(&keys[2], &stripped);
    let note_chunk = raw.keys(b"c/notes/").pop().unwrap();
    raw.delete(&note_chunk);
    drop(raw);
    let found = faults(dir.path());
    assert_found(&found, "chunk.corrupt", &[&format!("{TASKS}#{}", seq_of(&keys[0]))]);
    assert_found(&found, "change.unsigned", &[&change_hash(&stripped)]);
    assert_found(&found, "chunk.missing", &["notes/"]);
}
