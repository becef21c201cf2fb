//! Old formats stay readable. Each fixture was written by the build of its time with
//! `adiuva init`, `task add`, `task done`, `note add`, `compact` and one more `task add`, so it
//! holds a snapshot and a tail; every later build must open it and read the same things:
//! - `fixtures/workspace-v1`: the first release of the storage format (header format 1, chunk
//!   format 1, manifest v1, envelope v1);
//! - `fixtures/workspace-2026-12`: the format of December 2026 (manifest v2, unsigned local
//!   blobs, read view bases and deltas; still header format 1, keyring format 1, chunk format
//!   1), protected by a passphrase that is not in Unicode normal form NFKC;
//! - `fixtures/workspace-2026-12-notes`: the same format, written by the last build to keep
//!   every note in the one `notes` document, with `adiuva init`, `task add`, `note add --file`
//!   and `note add`, `compact`, one more `note add` and `task done`, so its `notes` document
//!   holds a snapshot and a tail. It must also upgrade (notes into documents of their own).
//! - `fixtures/workspace-2026-12-devices`: the format with attestations (every change chunk a
//!   `SignedChanges`, snapshots `SignedSnapshot`s), a device list and key epochs, written with
//!   `adiuva init`, `task add`, `task done`, `note add`, `compact`, `recovery phrase`,
//!   `device remove` (the phrase's identity: the key is at epoch 2) and one more `task add`.
//!
//! Workspaces written before attestations upgrade too: `adiuva upgrade` attests this device's
//! own changes, after which everything they export verifies on another device.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::{EventFilter, Workspace};
use adiuva_model::Collection;
use common::{FIXTURE_2026_12_PASSPHRASE, copy_fixture};
use zeroize::Zeroizing;

const FIXTURE_PASSPHRASE: &str = "fixture passphrase v1";

fn open(dir: &Path, passphrase: &str) -> Workspace {
    Workspace::open(dir, || Some(Zeroizing::new(passphrase.into()))).unwrap()
}

/// Commits one more task, as any later command would; returns the document it went to.
fn add_task(workspace: &mut Workspace, title: &str) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("title".into(), title.into());
    let effect = adiuva_engine::Effect::CreateRecord {
        collection: Collection::Tasks,
        id: adiuva_model::RecordId::new(),
        fields,
    };
    let draft =
        adiuva_engine::EventDraft::new(adiuva_model::EventKind::from_static("task.created"), adiuva_model::Actor::User);
    workspace.commit(draft, effect).unwrap().subject.unwrap().document
}

/// Retitles a task; returns the document the edit went to.
fn edit_task(workspace: &mut Workspace, id: &str, title: &str) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("title".into(), title.into());
    let id = id.parse().unwrap();
    let effect = adiuva_engine::Effect::UpdateRecord { collection: Collection::Tasks, id, fields };
    let draft =
        adiuva_engine::EventDraft::new(adiuva_model::EventKind::from_static("task.updated"), adiuva_model::Actor::User);
    workspace.commit(draft, effect).unwrap().subject.unwrap().document
}

fn event_kinds(workspace: &mut Workspace) -> Vec<String> {
    workspace.events(&EventFilter::default()).unwrap().iter().map(|e| e.envelope.kind.to_string()).collect()
}

/// The (records, events, snapshot generation, tail chunks) of the tasks document.
fn tasks_status(workspace: &mut Workspace) -> (usize, usize, Option<u64>, u64) {
    let status = workspace.status().unwrap();
    assert!(status.documents.iter().all(|d| d.error.is_none()));
    let tasks = status.documents.iter().find(|d| d.name == "tasks").unwrap();
    (tasks.records, tasks.events, tasks.snapshot_generation, tasks.tail_chunks)
}

#[test]
fn a_workspace_written_by_format_v1_still_opens_and_reads_the_same() {
    let dir = copy_fixture("workspace-v1");
    let mut workspace = open(dir.path(), FIXTURE_PASSPHRASE);

    let tasks = workspace.list(Collection::Tasks).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["id"], "01M8K27EVA7D026PF3EVNW2DFB");
    assert_eq!(tasks[0]["title"], "Fixture task");
    assert_eq!(tasks[0]["description"], "Written by format v1");
    assert_eq!(tasks[0]["status"], "done");
    assert_eq!(tasks[0]["priority"], "high");
    assert_eq!(tasks[0]["due"], "2026-12-24");
    assert_eq!(tasks[1]["title"], "Tail task after compaction");
    let notes = workspace.list(Collection::Notes).unwrap();
    assert_eq!(notes[0]["body"], "Body of the fixture note");

    assert_eq!(
        event_kinds(&mut workspace),
        ["workspace.created", "task.created", "task.completed", "note.created", "task.created"]
    );
    // Format-1 manifests do not count events: counted from the document instead.
    assert_eq!(tasks_status(&mut workspace), (2, 3, Some(1), 1));

    // A task written before tasks were spread over buckets is edited where it is, and the
    // commit rewrites the manifest in the current format, with the count; a new task goes to
    // its bucket.
    assert_eq!(edit_task(&mut workspace, "01M8K27EVA7D026PF3EVNW2DFB", "Edited where it is"), "tasks");
    assert!(add_task(&mut workspace, "After the upgrade").starts_with("tasks/"));
    drop(workspace);
    let mut workspace = open(dir.path(), FIXTURE_PASSPHRASE);
    assert_eq!(tasks_status(&mut workspace).0, 2);
    assert_eq!(tasks_status(&mut workspace).1, 4);
    let titles: Vec<_> = workspace.list(Collection::Tasks).unwrap().iter().map(|t| t["title"].clone()).collect();
    assert_eq!(titles, ["Edited where it is", "Tail task after compaction", "After the upgrade"]);
}

#[test]
fn a_workspace_written_by_the_2026_12_format_still_opens_and_reads_the_same() {
    let dir = copy_fixture("workspace-2026-12");
    let mut workspace = open(dir.path(), FIXTURE_2026_12_PASSPHRASE);

    let tasks = workspace.list(Collection::Tasks).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["id"], "01M8VESQ6ERJK1MWWTM33T5T2B");
    assert_eq!(tasks[0]["title"], "Fixture task");
    assert_eq!(tasks[0]["description"], "Written by the 2026-12 format");
    assert_eq!(tasks[0]["status"], "done");
    assert_eq!(tasks[0]["priority"], "high");
    assert_eq!(tasks[0]["due"], "2026-12-24");
    assert_eq!(tasks[0]["tags"], serde_json::json!(["home"]));
    assert_eq!(tasks[1]["title"], "Tail task after compaction");
    let notes = workspace.list(Collection::Notes).unwrap();
    assert_eq!(notes[0]["title"], "Fixture note");
    assert_eq!(notes[0]["body"], "Body of the fixture note");
    assert_eq!(
        event_kinds(&mut workspace),
        ["workspace.created", "task.created", "task.completed", "note.created", "task.created"]
    );
    assert_eq!(tasks_status(&mut workspace), (2, 3, Some(1), 1));

    assert_eq!(edit_task(&mut workspace, "01M8VESQ6ERJK1MWWTM33T5T2B", "Edited where it is"), "tasks");
    add_task(&mut workspace, "After the upgrade");
    drop(workspace);
    let mut workspace = open(dir.path(), FIXTURE_2026_12_PASSPHRASE);
    assert_eq!(tasks_status(&mut workspace), (2, 4, Some(1), 2));
    let before = workspace.list(Collection::Tasks).unwrap();
    let events_before = workspace.events(&EventFilter::default()).unwrap();

    // `adiuva upgrade` moves the tasks into their buckets with nothing lost, and, run again,
    // does nothing.
    assert!(workspace.upgrade().unwrap().records_moved >= 2);
    assert_eq!(workspace.upgrade().unwrap().records_moved, 0, "an upgraded workspace has nothing to move");
    drop(workspace);
    let mut workspace = open(dir.path(), FIXTURE_2026_12_PASSPHRASE);
    assert_eq!(workspace.list(Collection::Tasks).unwrap(), before);
    assert_eq!(tasks_status(&mut workspace).0, 0, "the tasks document keeps the history, not the tasks");
    let status = workspace.status().unwrap();
    let buckets = status.documents.iter().find(|d| d.name == "tasks/*").unwrap();
    assert_eq!((buckets.records, buckets.events), (3, 3), "the new task's creation and two moved in");
    let after = workspace.events(&EventFilter::default()).unwrap();
    assert!(events_before.iter().all(|event| after.contains(event)));
    let history: Vec<String> = workspace
        .history(Collection::Tasks, "01M8VESQ6ERJK1MWWTM33T5T2B".parse().unwrap())
        .unwrap()
        .iter()
        .map(|e| e.envelope.kind.to_string())
        .collect();
    assert_eq!(history, ["task.created", "task.completed", "task.updated", "task.moved_out", "task.moved_in"]);
    // Edits now go to the bucket.
    assert!(edit_task(&mut workspace, "01M8VESQ6ERJK1MWWTM33T5T2B", "Edited in its bucket").starts_with("tasks/"));
}

const NOTES_FIXTURE_PASSPHRASE: &str = "fixture passphrase v2";

/// The notes `fixtures/workspace-2026-12-notes` holds, oldest first: id, title, body, tags.
const FIXTURE_NOTES: [(&str, &str, &str, &[&str]); 3] = [
    (
        "01M8VF48Q2PNMVPG0M8YSEHPF3",
        "Fixture note from a file",
        "# Meeting notes\n\nFirst line of a longer body.\nÜnïcode ✓ and a second paragraph.\n",
        &["work", "draft"],
    ),
    ("01M8VF48XQQYYJHAZ6FT6V9T45", "Short fixture note", "Body of the short note", &[]),
    ("01M8VF49XNJ5RPA4ACS2YGTKRY", "Tail note after compaction", "In the tail", &[]),
];

fn assert_v2_content(workspace: &mut Workspace) {
    let notes = workspace.list(Collection::Notes).unwrap();
    assert_eq!(notes.len(), FIXTURE_NOTES.len());
    for (note, (id, title, body, tags)) in notes.iter().zip(FIXTURE_NOTES) {
        assert_eq!(
            (note["id"].as_str(), note["title"].as_str(), note["body"].as_str()),
            (Some(id), Some(title), Some(body))
        );
        assert_eq!(note["tags"], serde_json::json!(tags));
    }
    let tasks = workspace.list(Collection::Tasks).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], "01M8VF487V1WTTPX3AFA02W901");
    assert_eq!(tasks[0]["description"], "Written before notes moved out");
    assert_eq!(tasks[0]["status"], "done");
    let user_events: Vec<String> = workspace
        .events(&EventFilter { actor: Some("user".into()), ..EventFilter::default() })
        .unwrap()
        .iter()
        .map(|e| e.envelope.kind.to_string())
        .collect();
    assert_eq!(user_events, ["task.created", "note.created", "note.created", "note.created", "task.completed"]);
}

#[test]
fn a_workspace_written_before_notes_had_documents_of_their_own_still_reads_the_same() {
    let dir = copy_fixture("workspace-2026-12-notes");
    let mut workspace = open(dir.path(), NOTES_FIXTURE_PASSPHRASE);
    assert_v2_content(&mut workspace);
    let status = workspace.status().unwrap();
    let notes = status.documents.iter().find(|d| d.name == "notes").unwrap();
    assert_eq!((notes.records, notes.events, notes.tail_chunks, notes.snapshot_generation), (3, 3, 1, Some(1)));
}

/// Before the upgrade a note of the shared `notes` document still takes edits; `adiuva
/// upgrade` moves every note into a document of its own with nothing lost (content, events,
/// history) and, run again, does nothing. The next build reopens the result the same.
#[test]
fn a_workspace_written_before_notes_had_documents_of_their_own_upgrades_with_nothing_lost() {
    let dir = copy_fixture("workspace-2026-12-notes");
    let mut workspace = open(dir.path(), NOTES_FIXTURE_PASSPHRASE);
    let edited: adiuva_model::RecordId = FIXTURE_NOTES[1].0.parse().unwrap();
    let mut fields = serde_json::Map::new();
    fields.insert("tags".into(), serde_json::json!(["edited"]));
    let effect = adiuva_engine::Effect::UpdateRecord { collection: Collection::Notes, id: edited, fields };
    let draft =
        adiuva_engine::EventDraft::new(adiuva_model::EventKind::from_static("note.updated"), adiuva_model::Actor::User);
    let updated = workspace.commit(draft, effect).unwrap();
    assert_eq!(updated.subject.unwrap().document, "notes", "a note not moved yet is edited where it is");
    let before: Vec<_> = workspace.events(&EventFilter::default()).unwrap();
    let notes_before = workspace.list(Collection::Notes).unwrap();
    assert_eq!(notes_before[1]["tags"], serde_json::json!(["edited"]));

    // The notes, and the tasks into their buckets.
    let tasks_before = workspace.list(Collection::Tasks).unwrap().len();
    assert_eq!(workspace.upgrade().unwrap().records_moved, 3 + tasks_before);
    assert_eq!(workspace.upgrade().unwrap().records_moved, 0, "an upgraded workspace has nothing to move");
    drop(workspace);

    let mut workspace = open(dir.path(), NOTES_FIXTURE_PASSPHRASE);
    assert_eq!(workspace.list(Collection::Notes).unwrap(), notes_before);
    let names = workspace.document_names().unwrap();
    for (id, ..) in FIXTURE_NOTES {
        assert!(names.contains(&format!("notes/{id}")), "{names:?}");
    }
    // Every earlier event is still in the log; the move added its own, by the system.
    let after = workspace.events(&EventFilter::default()).unwrap();
    assert!(before.iter().all(|event| after.contains(event)));
    let added: Vec<String> =
        after.iter().filter(|e| !before.contains(e)).map(|e| e.envelope.kind.to_string()).collect();
    assert_eq!(added.iter().filter(|kind| *kind == "note.moved_out").count(), 3);
    assert_eq!(added.iter().filter(|kind| *kind == "note.moved_in").count(), 3);
    let buckets = names.iter().filter(|name| name.starts_with("tasks/")).count();
    assert_eq!(added.iter().filter(|kind| *kind == "document.created").count(), 3 + buckets);
    // A moved note's history keeps its events from before the move.
    let history: Vec<String> =
        workspace.history(Collection::Notes, edited).unwrap().iter().map(|e| e.envelope.kind.to_string()).collect();
    assert_eq!(history, ["note.created", "note.updated", "note.moved_out", "note.moved_in"]);
    let status = workspace.status().unwrap();
    let shared = status.documents.iter().find(|d| d.name == "notes").unwrap();
    assert_eq!(shared.records, 0, "the shared document keeps the history, not the notes");
    let own = status.documents.iter().find(|d| d.name == "notes/*").unwrap();
    assert_eq!((own.records, own.events), (3, 3));
    assert_v2_content_after_upgrade(&mut workspace);
}

/// What `assert_v2_content` checks, but for the one note edited before the upgrade.
fn assert_v2_content_after_upgrade(workspace: &mut Workspace) {
    let notes = workspace.list(Collection::Notes).unwrap();
    for (note, (id, title, body, _)) in notes.iter().zip(FIXTURE_NOTES) {
        assert_eq!(
            (note["id"].as_str(), note["title"].as_str(), note["body"].as_str()),
            (Some(id), Some(title), Some(body))
        );
    }
    assert_eq!(workspace.list(Collection::Tasks).unwrap()[0]["status"], "done");
}

const DEVICES_FIXTURE_PASSPHRASE: &str = "fixture passphrase v3";

#[test]
fn a_workspace_written_with_devices_and_attestations_still_reads_the_same() {
    let dir = copy_fixture("workspace-2026-12-devices");
    let mut workspace = open(dir.path(), DEVICES_FIXTURE_PASSPHRASE);
    let tasks = workspace.list(Collection::Tasks).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["title"], "Fixture task");
    assert_eq!(tasks[0]["description"], "Written by the 2026-12 devices format");
    assert_eq!(tasks[0]["status"], "done");
    assert_eq!(tasks[1]["title"], "Tail task after the key rotation");
    assert_eq!(workspace.list(Collection::Notes).unwrap()[0]["body"], "Body of the fixture note");
    let status = workspace.status().unwrap();
    assert_eq!(status.key_epoch, 2);
    let devices = workspace.devices().unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().any(|d| d.this_device && !d.is_removed() && d.name == "fixture device"));
    assert!(devices.iter().any(|d| d.is_removed() && d.name == "recovery phrase"));
    assert_eq!(
        event_kinds(&mut workspace),
        [
            "workspace.created",
            "task.created",
            "task.completed",
            "document.created",
            "note.created",
            "device.added",
            "device.removed",
            "task.created"
        ]
    );
    assert_every_change_attested_by(&mut workspace);
    let upgrade = workspace.upgrade().unwrap();
    assert_eq!(upgrade, adiuva_engine::Upgrade { records_moved: 2, ..Default::default() }, "the tasks move");
    add_task(&mut workspace, "After reopening");
    drop(workspace);
    assert_eq!(open(dir.path(), DEVICES_FIXTURE_PASSPHRASE).list(Collection::Tasks).unwrap().len(), 3);
}

/// Every document exports (so every change carries an attestation), and each attestation is
/// this device's and verifies.
fn assert_every_change_attested_by(workspace: &mut Workspace) {
    use adiuva_engine::authorship::{AttestationPlace, Decoded, SignedChanges};
    let workspace_id = workspace.workspace_id().to_bytes();
    let device = workspace.device_id();
    for document in workspace.document_names().unwrap() {
        let exported = workspace.export_changes(&document, &[]).unwrap();
        let Decoded::Attested(unit) = SignedChanges::decode(&exported).unwrap() else { panic!("{document}: legacy") };
        for attestation in &unit.attestations {
            assert_eq!(attestation.signer, device, "{document}");
            assert!(attestation.verify(AttestationPlace { workspace_id: &workspace_id, document: &document }));
        }
    }
}

#[test]
fn workspaces_written_before_attestations_upgrade_and_then_export_verifiable_changes() {
    for (fixture, passphrase) in [
        ("workspace-v1", FIXTURE_PASSPHRASE),
        ("workspace-2026-12", FIXTURE_2026_12_PASSPHRASE),
        ("workspace-2026-12-notes", NOTES_FIXTURE_PASSPHRASE),
    ] {
        let dir = copy_fixture(fixture);
        let mut workspace = open(dir.path(), passphrase);
        let error = workspace.export_changes("tasks", &[]).unwrap_err();
        assert_eq!(error.code(), adiuva_model::ErrorCode::ChangeUnsigned, "{fixture}: {error}");
        let upgrade = workspace.upgrade().unwrap();
        // The tasks document is compacted (and so attested) as its tasks move to their buckets.
        assert!(upgrade.attested >= 1 && upgrade.records_moved >= 2, "{fixture}: {upgrade:?}");
        assert_every_change_attested_by(&mut workspace);
        assert_eq!(workspace.upgrade().unwrap().attested, 0, "{fixture}: attested once");
        drop(workspace);
        assert_every_change_attested_by(&mut open(dir.path(), passphrase));
    }
}
