//! Damage and tampering: a flipped byte, a lost or truncated chunk, truncated store files, a
//! wrong passphrase, an altered header, a newer envelope. Each is a typed error that names what
//! is wrong; nothing panics; what does not depend on the damage stays readable.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::store::{ChunkStore, SledStore, WriteBatch, inspect_write_ahead_log};
use adiuva_engine::{Error, KeyProtection, Workspace};
use adiuva_model::{Collection, ErrorCode};
use common::*;
use zeroize::Zeroizing;

/// A workspace with two tasks (one chunk each) and a note, closed.
fn workspace_with_tasks_and_a_note(dir: &Path) {
    let mut workspace = init(dir);
    add_task(&mut workspace, "first", "one");
    add_task(&mut workspace, "second", "two");
    add_note(&mut workspace, "unrelated note", "still readable");
}

fn raw_store(dir: &Path) -> SledStore {
    SledStore::open(&dir.join("store")).unwrap()
}

fn raw_value(dir: &Path, key: &[u8]) -> Vec<u8> {
    raw_store(dir).get(key).unwrap().expect("key present")
}

fn rewrite(dir: &Path, key: &[u8], change: impl FnOnce(&mut Vec<u8>)) {
    let mut value = raw_value(dir, key);
    change(&mut value);
    put_raw(dir, key, value);
}

fn put_raw(dir: &Path, key: &[u8], value: Vec<u8>) {
    let store = raw_store(dir);
    let mut batch = WriteBatch::default();
    batch.put(key, value);
    store.write(batch).unwrap();
    store.sync().unwrap();
}

fn delete(dir: &Path, key: &[u8]) {
    let store = raw_store(dir);
    let mut batch = WriteBatch::default();
    batch.delete(key);
    store.write(batch).unwrap();
    store.sync().unwrap();
}

fn task_chunk_key(seq: u64) -> Vec<u8> {
    [format!("c/{TASKS}\0").as_bytes(), &seq.to_be_bytes()].concat()
}

/// The damage must surface as `expected` when tasks are read, while notes stay readable.
fn assert_tasks_damaged_notes_fine(dir: &Path, expected: ErrorCode) {
    let mut workspace = open(dir);
    let error = workspace.list(Collection::Tasks).unwrap_err();
    assert_eq!(error.code(), expected, "{error}");
    assert!(error.to_string().contains(TASKS), "the error names the document: {error}");
    let notes = workspace.list(Collection::Notes).unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["body"], "still readable");
    let status = workspace.status().unwrap();
    let tasks = status.documents.iter().find(|d| d.name == TASKS).unwrap();
    assert!(tasks.error.as_deref().is_some_and(|e| e.starts_with(expected.as_str())), "{:?}", tasks.error);
    assert!(status.documents.iter().filter(|d| d.name != TASKS).all(|d| d.error.is_none()));
}

#[test]
fn flipped_bytes_anywhere_in_a_chunk_are_named_errors() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    let length = raw_store(template.path()).get(&task_chunk_key(1)).unwrap().unwrap().len();
    // Every region of the frame: magic, format, kind, epoch, nonce, ciphertext, tag. (Every
    // single byte is covered by the chunk format's unit tests; here each flip costs a full
    // Argon2id unlock.)
    let positions = [0, 4, 5, 6, 9, 10, 20, 33, 34, 60, length / 2, length - 17, length - 1];
    for position in positions {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        rewrite(dir.path(), &task_chunk_key(1), |bytes| bytes[position] ^= 0x20);
        let mut workspace = open(dir.path());
        let error = workspace.list(Collection::Tasks).unwrap_err();
        assert!(
            matches!(error, Error::Chunk { ref document, ref blob, .. } if document == TASKS && *blob == format!("{TASKS}#1")),
            "byte {position}: {error}"
        );
        assert!(
            matches!(error.code(), ErrorCode::ChunkCorrupt | ErrorCode::ChunkMalformed | ErrorCode::UnknownEpoch),
            "byte {position}: {error}"
        );
        assert_eq!(workspace.list(Collection::Notes).unwrap().len(), 1);
    }
}

#[test]
fn a_flipped_byte_in_a_change_chunk_leaves_other_documents_readable() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    rewrite(dir.path(), &task_chunk_key(0), |bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
    });
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);
}

#[test]
fn a_lost_chunk_is_detected_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    delete(dir.path(), &task_chunk_key(0));
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkMissing);
    // Losing the newest chunk is caught too: the manifest knows how many there must be.
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    delete(dir.path(), &task_chunk_key(1));
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkMissing);
}

#[test]
fn a_truncated_chunk_is_detected() {
    for keep in [0, 5, 12, 40] {
        let dir = tempfile::tempdir().unwrap();
        workspace_with_tasks_and_a_note(dir.path());
        rewrite(dir.path(), &task_chunk_key(1), |bytes| bytes.truncate(keep));
        assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkMalformed);
    }
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    rewrite(dir.path(), &task_chunk_key(1), |bytes| bytes.truncate(bytes.len() - 1));
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);
}

#[test]
fn a_chunk_moved_to_another_slot_or_a_stray_chunk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    let first = raw_store(dir.path()).get(&task_chunk_key(0)).unwrap().unwrap();
    put_raw(dir.path(), &task_chunk_key(1), first.clone());
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);

    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    put_raw(dir.path(), &task_chunk_key(7), first);
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkUnexpected);
}

/// A closed workspace whose tasks are all folded into a snapshot, and a note.
fn compacted_workspace(dir: &Path, tasks: usize, description: &str) {
    let mut workspace = init(dir);
    for index in 0..tasks {
        add_task(&mut workspace, &format!("task {index}"), description);
    }
    add_note(&mut workspace, "unrelated note", "still readable");
    workspace.compact().unwrap();
}

#[test]
fn damage_to_a_snapshot_part_is_detected_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    compacted_workspace(dir.path(), 50, "text");
    let part_key =
        raw_store(dir.path()).keys_with_prefix(b"s/tasks/0\0").unwrap().into_iter().next().expect("a snapshot part");
    rewrite(dir.path(), &part_key, |bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 4;
    });
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);
    delete(dir.path(), &part_key);
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkMissing);
}

#[test]
fn a_truncated_snapshot_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    compacted_workspace(dir.path(), 200, "a description long enough to make the snapshot big");
    // The snapshot is large enough to live in a file of its own: truncate that file.
    let snapshot = value_file_starting_with(dir.path(), SNAPSHOT_FRAME).expect("a snapshot file");
    let length = std::fs::metadata(&snapshot).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&snapshot).unwrap().set_len(length / 2).unwrap();
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);
    std::fs::remove_file(&snapshot).unwrap();
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::StoreCorrupt);
}

/// The start of a sealed snapshot: magic, format 2, kind 2.
const SNAPSHOT_FRAME: &[u8] = b"ADVC\x02\x02";

/// A value file of the store (values over 4 KiB live in files) that starts with `prefix`.
fn value_file_starting_with(dir: &Path, prefix: &[u8]) -> Option<std::path::PathBuf> {
    let values = dir.join("store").join("values");
    std::fs::read_dir(values)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|file| std::fs::read(file).unwrap().starts_with(prefix))
}

#[test]
fn a_damaged_or_lost_read_view_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    compacted_workspace(dir.path(), 200, "a description long enough to put the read view in a file");
    let expected = open(dir.path()).list(Collection::Tasks).unwrap();
    assert_eq!(expected.len(), 200);
    // The view is the other large value: neither a chunk nor a snapshot.
    let view = std::fs::read_dir(dir.path().join("store").join("values"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|file| !std::fs::read(file).unwrap().starts_with(b"ADVC"))
        .expect("a read view file");
    let mut bytes = std::fs::read(&view).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&view, bytes).unwrap();
    assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap(), expected);
    // Rebuilt and stored again: the next open reads the view, and so does one without it.
    assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap(), expected);
    delete(dir.path(), b"v/tasks/0");
    assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap(), expected);
}

#[test]
fn damage_to_the_manifest_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    rewrite(dir.path(), b"m/tasks/0", |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    });
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);
    // Without its manifest, the document's chunks are strays, not an empty document.
    delete(dir.path(), b"m/tasks/0");
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkUnexpected);
}

#[test]
fn damage_to_the_root_document_fails_open_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    rewrite(dir.path(), &[&b"c/root\0"[..], &0u64.to_be_bytes()].concat(), |bytes| bytes[50] ^= 1);
    let error = Workspace::open(dir.path(), passphrase).err().expect("open must fail");
    assert!(matches!(error, Error::Chunk { ref document, .. } if document == "root"), "{error}");
}

#[test]
fn wrong_or_missing_passphrase_is_a_typed_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    let wrong = Workspace::open(dir.path(), || Some(Zeroizing::new("not the passphrase".into()))).err().unwrap();
    assert_eq!(wrong.code(), ErrorCode::WrongPassphrase);
    let missing = Workspace::open(dir.path(), || None).err().unwrap();
    assert_eq!(missing.code(), ErrorCode::PassphraseRequired);
    assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap().len(), 2);
}

#[test]
fn an_altered_header_never_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    rewrite(dir.path(), b"h", |bytes| {
        let text = String::from_utf8(bytes.clone()).unwrap().replace("\"iterations\":3", "\"iterations\":4");
        *bytes = text.into_bytes();
    });
    let error = Workspace::open(dir.path(), passphrase).err().unwrap();
    assert_eq!(error.code(), ErrorCode::WrongPassphrase, "{error}");
    rewrite(dir.path(), b"h", |bytes| bytes.truncate(10));
    let error = Workspace::open(dir.path(), passphrase).err().unwrap();
    assert_eq!(error.code(), ErrorCode::WorkspaceFormat, "{error}");
}

/// The store directory of `template` taken at this moment, as a later rollback would put it
/// back.
fn store_copy(template: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&template.join("store"), copy.path());
    copy
}

fn put_store_back(dir: &Path, copy: &Path) {
    std::fs::remove_dir_all(dir.join("store")).unwrap();
    copy_dir(copy, &dir.join("store"));
}

/// One more task and one more note, committed and closed.
fn add_a_task_and_a_note(dir: &Path) {
    let mut workspace = open(dir);
    add_task(&mut workspace, "third", "three");
    add_note(&mut workspace, "second note", "");
}

#[test]
fn a_store_rolled_back_as_a_whole_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    let older = store_copy(dir.path());
    add_a_task_and_a_note(dir.path());
    // Every per-chunk check passes on the older store: only the witness can tell.
    put_store_back(dir.path(), older.path());
    // The newer note's document was registered in the root document, whose witness count is
    // checked as the workspace opens.
    let error = Workspace::open(dir.path(), passphrase).err().unwrap();
    assert!(
        matches!(&error, Error::StoreRolledBack { document, found, expected } if document == "root" && found < expected),
        "{error}"
    );
}

/// A store log cut short, with the write-ahead log gone too (as when the whole store directory is
/// an older or damaged copy), so that nothing repairs it.
#[test]
fn truncated_store_files_are_a_typed_error_never_a_silently_older_workspace() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    add_a_task_and_a_note(template.path());
    let log = template.path().join("store").join("db");
    let length = std::fs::metadata(&log).unwrap().len();
    let mut rolled_back = 0;
    // sled's records sit in the first few KiB of its segment; the rest is preallocated.
    for keep in (0..24).map(|i| i * 2048).chain([length / 2, length - 1]) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        for (file, keep) in [("db", keep), ("wal", 0)] {
            let file = std::fs::OpenOptions::new().write(true).open(dir.path().join("store").join(file)).unwrap();
            file.set_len(keep).unwrap();
        }
        let outcome = std::panic::catch_unwind(|| match Workspace::open(dir.path(), passphrase) {
            Err(error) => Err(error.code()),
            Ok(mut workspace) => Ok((
                workspace.list(Collection::Tasks).map(|t| t.len()).map_err(|e| e.code()),
                workspace.list(Collection::Notes).map(|n| n.len()).map_err(|e| e.code()),
            )),
        });
        let outcome = outcome.unwrap_or_else(|_| panic!("truncating the store log to {keep} bytes panicked"));
        eprintln!("store log truncated to {keep} of {length} bytes: {outcome:?}");
        // Never a silently shorter workspace: a typed error, at open or for the document that
        // lost chunks, or everything that was there.
        let damage =
            [ErrorCode::StoreCorrupt, ErrorCode::WorkspaceFormat, ErrorCode::StoreRolledBack, ErrorCode::ChunkMissing];
        match outcome {
            Err(code) => {
                assert!(damage.contains(&code), "keep {keep}: {code:?}");
                // Adding a note registers its document: an older root is caught at open.
                rolled_back += usize::from(code == ErrorCode::StoreRolledBack);
            }
            Ok((tasks, notes)) => {
                assert!(matches!(tasks, Ok(3)) || tasks.is_err_and(|c| damage.contains(&c)), "keep {keep}: {tasks:?}");
                assert!(matches!(notes, Ok(2)) || notes.is_err_and(|c| damage.contains(&c)), "keep {keep}: {notes:?}");
                rolled_back += usize::from(tasks == Err(ErrorCode::StoreRolledBack));
            }
        }
    }
    assert!(rolled_back > 0, "some truncation must leave an older store, caught by the witness");
}

#[test]
fn an_envelope_from_a_newer_version_is_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    add_task(&mut workspace, "kept", "");
    let mut newer = automerge::AutoCommit::new();
    let message = r#"{"v":2,"id":"01JDQ6R5X0000000000000000A","kind":"task.created","actor":"user"}"#;
    automerge::transaction::Transactable::put(&mut newer, automerge::ROOT, "01JDQ6R5X0000000000000000B", "x").unwrap();
    newer.commit_with(automerge::transaction::CommitOptions::default().with_message(message));
    // Refused for its envelope before anything else is looked at (it carries no attestation).
    let unit = adiuva_engine::authorship::SignedChanges {
        attestations: vec![],
        changes: newer.get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect(),
    };
    let error = workspace.import_changes(TASKS, &unit.encode().unwrap()).unwrap_err();
    assert_eq!(error.code(), ErrorCode::EnvelopeVersion, "{error}");
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 1);
    drop(workspace);
    assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap().len(), 1);
}

#[test]
fn an_emptied_store_is_not_taken_for_no_workspace() {
    let dir = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(dir.path());
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    drop(raw_store(dir.path())); // an empty store, as an `init` cut short would leave
    let error = Workspace::open(dir.path(), passphrase).err().expect("open must fail");
    assert_eq!(error.code(), ErrorCode::WorkspaceFormat, "{error}");
    assert!(error.to_string().contains("witness"), "{error}");
    let error = Workspace::init(dir.path(), KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), "d")
        .err()
        .expect("init must not replace the lost workspace's witness");
    assert_eq!(error.code(), ErrorCode::WorkspaceExists, "{error}");
}

#[test]
fn a_deleted_witness_is_refused_not_a_silently_disabled_rollback_check() {
    let dir = tempfile::tempdir().unwrap();
    let older = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    add_task(&mut workspace, "first", "");
    drop(workspace);
    copy_dir(dir.path(), older.path());
    let mut workspace = open(dir.path());
    add_task(&mut workspace, "second", "");
    drop(workspace);
    // An older copy of the store put back, and the witness that would catch it deleted.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    copy_dir(&older.path().join("store"), &dir.path().join("store"));
    std::fs::remove_file(dir.path().join("witness")).unwrap();
    let error = Workspace::open(dir.path(), passphrase).err().expect("open must refuse");
    assert_eq!(error.code(), ErrorCode::WitnessMissing, "{error}");
    assert!(error.to_string().contains("reset-witness"), "the error gives the way out: {error}");
    // The way out is explicit: trust the store as it is, and guard it from then on.
    let mut workspace = Workspace::open_resetting_witness(dir.path(), passphrase).unwrap();
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 1);
    drop(workspace);
    assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap().len(), 1);
    std::fs::remove_file(dir.path().join("witness")).unwrap();
    assert_eq!(Workspace::open(dir.path(), passphrase).err().unwrap().code(), ErrorCode::WitnessMissing);
}

/// A closed workspace's store, as a template to damage copies of.
fn template_copy(template: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(template, dir.path());
    dir
}

#[test]
fn damage_to_the_write_ahead_log_is_a_typed_error() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    let wal = |dir: &Path| dir.join("store").join("wal");
    let (records, torn) = inspect_write_ahead_log(&std::fs::read(wal(template.path())).unwrap()).unwrap();
    assert!(records >= 2 && !torn, "the log must hold records to damage: {records}");
    // A damaged record with others after it was acknowledged and cannot be skipped; a damaged
    // header (both slots: one of them is the current generation's) is not an empty log.
    // Records start at 1024, after the two 512-byte header slots.
    for positions in [&[8, 520][..], &[1024], &[1029], &[1036], &[1064]] {
        let dir = template_copy(template.path());
        let mut bytes = std::fs::read(wal(dir.path())).unwrap();
        for &position in positions {
            bytes[position] ^= 0x10;
        }
        std::fs::write(wal(dir.path()), bytes).unwrap();
        let error = Workspace::open(dir.path(), passphrase).err().expect("open must fail");
        assert_eq!(error.code(), ErrorCode::StoreCorrupt, "bytes {positions:?}: {error}");
    }
}

#[test]
fn damage_to_the_witness_is_a_typed_error() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    let witness = |dir: &Path| dir.join("witness");
    let damaged = |change: &dyn Fn(&mut Vec<u8>), expected: ErrorCode| {
        let dir = template_copy(template.path());
        let mut bytes = std::fs::read(witness(dir.path())).unwrap();
        change(&mut bytes);
        std::fs::write(witness(dir.path()), bytes).unwrap();
        let error = Workspace::open(dir.path(), passphrase).err().expect("open must fail");
        assert_eq!(error.code(), expected, "{error}");
        assert!(error.to_string().contains("witness"), "{error}");
    };
    damaged(&|bytes| bytes[40] ^= 1, ErrorCode::ChunkCorrupt);
    damaged(&|bytes| bytes.truncate(8), ErrorCode::ChunkMalformed);
    // Another workspace's witness does not pass for this one's.
    let other = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(other.path());
    let foreign = std::fs::read(witness(other.path())).unwrap();
    damaged(&|bytes| bytes.clone_from(&foreign), ErrorCode::ChunkCorrupt);
    // The store's mark that a witness exists is sealed like everything else.
    let dir = template_copy(template.path());
    rewrite(dir.path(), b"w", |bytes| bytes[20] ^= 1);
    let error = Workspace::open(dir.path(), passphrase).err().expect("open must fail");
    assert_eq!(error.code(), ErrorCode::ChunkCorrupt, "{error}");
}

#[test]
fn damage_to_the_keyring_or_the_header_never_unlocks() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    // The keyring is authenticated encryption under the passphrase's key: a damaged one cannot
    // be told from a wrong passphrase, and unlocks nothing.
    let dir = template_copy(template.path());
    rewrite(dir.path(), b"k", |bytes| bytes[30] ^= 1);
    assert_eq!(Workspace::open(dir.path(), passphrase).err().unwrap().code(), ErrorCode::WrongPassphrase);
    rewrite(dir.path(), b"k", |bytes| bytes.truncate(3));
    let error = Workspace::open(dir.path(), passphrase).err().unwrap();
    assert!(matches!(error.code(), ErrorCode::WrongPassphrase | ErrorCode::WorkspaceFormat), "{error}");
    for key in [&b"k"[..], b"h"] {
        let dir = template_copy(template.path());
        delete(dir.path(), key);
        assert_eq!(Workspace::open(dir.path(), passphrase).err().unwrap().code(), ErrorCode::WorkspaceFormat);
    }
}

#[test]
fn a_manifest_from_another_document_or_an_older_one_is_refused() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    let dir = template_copy(template.path());
    // The note is a document of its own (`notes/ID`).
    let note_manifest = raw_store(dir.path()).keys_with_prefix(b"m/notes/").unwrap().remove(0);
    put_raw(dir.path(), b"m/tasks/0", raw_value(dir.path(), &note_manifest));
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::ChunkCorrupt);
    // An older manifest of the same document: the witness knows the document had more chunks.
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    add_task(&mut workspace, "first", "one");
    drop(workspace);
    let older = raw_value(dir.path(), b"m/tasks/0");
    let mut workspace = open(dir.path());
    add_task(&mut workspace, "second", "two");
    add_note(&mut workspace, "unrelated note", "still readable");
    drop(workspace);
    put_raw(dir.path(), b"m/tasks/0", older);
    assert_tasks_damaged_notes_fine(dir.path(), ErrorCode::StoreRolledBack);
}

#[test]
fn damaged_moved_or_lost_read_view_deltas_cost_a_rebuild_never_wrong_records() {
    let template = tempfile::tempdir().unwrap();
    workspace_with_tasks_and_a_note(template.path());
    let deltas = raw_store(template.path()).keys_with_prefix(b"d/tasks/0\0").unwrap();
    assert_eq!(deltas.len(), 2, "one delta per commit");
    let notes_delta = raw_store(template.path()).keys_with_prefix(b"d/notes/").unwrap().remove(0);
    // (Reading stores a rebuilt base: read a copy.)
    let expected = open(template_copy(template.path()).path()).list(Collection::Tasks).unwrap();
    let damages: [&dyn Fn(&Path); 4] = [
        &|dir| rewrite(dir, &deltas[1], |bytes| bytes[30] ^= 1),
        &|dir| delete(dir, &deltas[0]),
        &|dir| put_raw(dir, &deltas[1], raw_value(dir, &deltas[0])),
        &|dir| put_raw(dir, &deltas[1], raw_value(dir, &notes_delta)),
    ];
    for (index, damage) in damages.iter().enumerate() {
        let dir = template_copy(template.path());
        damage(dir.path());
        assert_eq!(open(dir.path()).list(Collection::Tasks).unwrap(), expected, "damage {index}");
        assert_eq!(open(dir.path()).list(Collection::Notes).unwrap().len(), 1, "damage {index}");
    }
}

#[test]
fn value_files_flipped_or_swapped_between_keys_are_refused() {
    let template = tempfile::tempdir().unwrap();
    let mut workspace = init(template.path());
    for index in 0..200 {
        add_task(&mut workspace, &format!("task {index}"), "a description long enough to make the snapshot big");
    }
    // One note (a document of its own) long enough that its snapshot is a value file too.
    let body: String = (0..3000u64).map(|index| format!("{:x} ", index.wrapping_mul(2_654_435_761))).collect();
    add_note(&mut workspace, "long note", &body);
    workspace.compact().unwrap();
    drop(workspace);
    let snapshots: Vec<_> = std::fs::read_dir(template.path().join("store").join("values"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|file| std::fs::read(file).unwrap().starts_with(SNAPSHOT_FRAME))
        .collect();
    assert_eq!(snapshots.len(), 2, "a tasks and a notes snapshot, each in a value file");
    let names: Vec<_> = snapshots.iter().map(|file| file.file_name().unwrap().to_owned()).collect();
    let values = |dir: &Path| dir.join("store").join("values");
    let both_refused = |dir: &Path, expected: ErrorCode| {
        let mut workspace = open(dir);
        for collection in [Collection::Tasks, Collection::Notes] {
            let error = workspace.list(collection).unwrap_err();
            assert_eq!(error.code(), expected, "{error}");
        }
    };
    // Each key's pointer now leads to the other key's file.
    let dir = template_copy(template.path());
    let (first, second) = (values(dir.path()).join(&names[0]), values(dir.path()).join(&names[1]));
    let swap = values(dir.path()).join("swap");
    std::fs::rename(&first, &swap).unwrap();
    std::fs::rename(&second, &first).unwrap();
    std::fs::rename(&swap, &second).unwrap();
    both_refused(dir.path(), ErrorCode::ChunkCorrupt);
    // A flipped byte in each.
    let dir = template_copy(template.path());
    for name in &names {
        let file = values(dir.path()).join(name);
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 8;
        std::fs::write(&file, bytes).unwrap();
    }
    both_refused(dir.path(), ErrorCode::ChunkCorrupt);
}
