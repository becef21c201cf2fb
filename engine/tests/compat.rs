//! Old formats stay readable: `fixtures/workspace-v1` was written by the first release of the
//! storage format (header format 1, chunk format 1, manifest v1, envelope v1) with
//! `adiuva init`, `task add`, `task done`, `note add`, `compact` and one more `task add`, so it
//! holds a snapshot and a tail. Every later build must open it and read the same things.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::{EventFilter, Workspace};
use adiuva_model::Collection;
use common::copy_dir;
use zeroize::Zeroizing;

const FIXTURE_PASSPHRASE: &str = "fixture passphrase v1";

#[test]
fn a_workspace_written_by_format_v1_still_opens_and_reads_the_same() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workspace-v1");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path()); // opening writes (checkpoint, witness): never the fixture itself
    let mut workspace = Workspace::open(dir.path(), || Some(Zeroizing::new(FIXTURE_PASSPHRASE.into()))).unwrap();

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

    let kinds: Vec<String> =
        workspace.events(&EventFilter::default()).unwrap().iter().map(|e| e.envelope.kind.to_string()).collect();
    assert_eq!(kinds, ["workspace.created", "task.created", "task.completed", "note.created", "task.created"]);
    let status = workspace.status().unwrap();
    let tasks_document = status.documents.iter().find(|d| d.name == "tasks").unwrap();
    assert_eq!(tasks_document.snapshot_generation, Some(1));
    assert_eq!(tasks_document.tail_chunks, 1);
    // Format-1 manifests do not count events: counted from the document instead.
    assert_eq!((tasks_document.records, tasks_document.events), (2, 3));
    assert!(status.documents.iter().all(|d| d.error.is_none()));

    // A commit rewrites the manifest in the current format, with the count.
    let id = adiuva_model::RecordId::new();
    let mut fields = serde_json::Map::new();
    fields.insert("title".into(), "After the upgrade".into());
    let effect = adiuva_engine::Effect::CreateRecord { collection: Collection::Tasks, id, fields };
    let draft =
        adiuva_engine::EventDraft::new(adiuva_model::EventKind::from_static("task.created"), adiuva_model::Actor::User);
    workspace.commit(draft, effect).unwrap();
    drop(workspace);
    let mut workspace = Workspace::open(dir.path(), || Some(Zeroizing::new(FIXTURE_PASSPHRASE.into()))).unwrap();
    let status = workspace.status().unwrap();
    let tasks_document = status.documents.iter().find(|d| d.name == "tasks").unwrap();
    assert_eq!((tasks_document.records, tasks_document.events), (3, 4));
}
