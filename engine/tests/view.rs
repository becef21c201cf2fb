//! The read view and the event index never disagree with the log: after any mix of local edits,
//! imports from another device, failed commits and compactions, the records read through the
//! view (cached, or stored and reopened) equal the records rebuilt from the Automerge document,
//! the events read through the index equal the events rebuilt from the documents, and the
//! counts `status` gives without loading Automerge are the document's.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::store::{ChunkStore, SledStore, WriteBatch};
use adiuva_engine::{Effect, LoggedEvent, Workspace, WorkspaceOptions};
use adiuva_model::{Collection, RecordId};
use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
enum Step {
    Create {
        device: usize,
        record: usize,
        title: String,
    },
    SetTitle {
        device: usize,
        record: usize,
        title: String,
    },
    SetDescription {
        device: usize,
        record: usize,
        text: String,
    },
    Delete {
        device: usize,
        record: usize,
    },
    /// Every change of one device imported by the other.
    Sync {
        from: usize,
    },
    Compact {
        device: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let (device, record) = (0..2usize, 0..4usize);
    prop_oneof![
        (device.clone(), record.clone(), "[a-z]{1,6}").prop_map(|(device, record, title)| Step::Create {
            device,
            record,
            title
        }),
        (device.clone(), record.clone(), "[a-z]{1,6}").prop_map(|(device, record, title)| Step::SetTitle {
            device,
            record,
            title
        }),
        (device.clone(), record.clone(), "[a-z ]{0,12}")
            .prop_map(|(device, record, text)| { Step::SetDescription { device, record, text } }),
        (device.clone(), record).prop_map(|(device, record)| Step::Delete { device, record }),
        device.clone().prop_map(|from| Step::Sync { from }),
        device.prop_map(|device| Step::Compact { device }),
    ]
}

fn record_pool() -> Vec<RecordId> {
    // All in one bucket, the one the steps sync.
    (0..4u8).map(|i| RecordId(ulid::Ulid::from_parts(1_764_400_000_000, u128::from(i) * 16))).collect()
}

/// Compacting every few chunks makes the view fold into new bases often.
fn open_small(dir: &Path) -> Workspace {
    let options = WorkspaceOptions { compact_after_chunks: 3, ..WorkspaceOptions::default() };
    Workspace::open_with(dir, passphrase, options).unwrap()
}

fn run(workspaces: &mut [Workspace; 2], ids: &[RecordId], step: &Step) {
    let collection = Collection::Tasks;
    let (device, effect) = match step {
        Step::Create { device, record, title } => (
            *device,
            Effect::CreateRecord {
                collection,
                id: ids[*record],
                fields: fields(json!({"title": title, "description": "", "status": "todo", "tags": ["x"]})),
            },
        ),
        Step::SetTitle { device, record, title } => {
            (*device, Effect::UpdateRecord { collection, id: ids[*record], fields: fields(json!({"title": title})) })
        }
        Step::SetDescription { device, record, text } => (
            *device,
            Effect::UpdateRecord { collection, id: ids[*record], fields: fields(json!({"description": text})) },
        ),
        Step::Delete { device, record } => (*device, Effect::DeleteRecord { collection, id: ids[*record] }),
        Step::Sync { from } => {
            let bundle = workspaces[*from].export_changes(TASKS, &[]).unwrap();
            workspaces[1 - from].import_changes(TASKS, &bundle).unwrap();
            return;
        }
        Step::Compact { device } => {
            workspaces[*device].compact().unwrap();
            return;
        }
    };
    // Edits of records a device does not have fail, and must leave the view as it was.
    let _ = workspaces[device].commit(draft("task.changed"), effect);
}

/// The records and events as the documents themselves give them: the stored views and event
/// indexes removed, so they are rebuilt.
fn rebuilt_from_the_log(dir: &Path) -> (Vec<Value>, Vec<LoggedEvent>) {
    {
        let store = SledStore::open(&dir.join("store")).unwrap();
        let mut batch = WriteBatch::default();
        for prefix in [&b"v/"[..], b"d/", b"e/", b"x/"] {
            for key in store.keys_with_prefix(prefix).unwrap() {
                batch.delete(key);
            }
        }
        store.write(batch).unwrap();
        store.sync().unwrap();
    }
    let mut workspace = open(dir);
    (workspace.list(Collection::Tasks).unwrap(), workspace.events(&Default::default()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_view_always_equals_the_document(steps in proptest::collection::vec(step(), 1..24)) {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut first = init(dirs[0].path());
        drop(join(&mut first, dirs[1].path(), "second"));
        drop(first);
        let ids = record_pool();
        let mut workspaces = [open_small(dirs[0].path()), open_small(dirs[1].path())];
        // Read before the steps so the cached views are the ones kept current by each commit.
        for workspace in &mut workspaces {
            workspace.list(Collection::Tasks).unwrap();
        }
        for step in &steps {
            run(&mut workspaces, &ids, step);
        }
        let cached: Vec<Vec<Value>> = workspaces.iter_mut().map(|w| w.list(Collection::Tasks).unwrap()).collect();
        let indexed: Vec<Vec<LoggedEvent>> = workspaces.iter_mut().map(|w| w.events(&Default::default()).unwrap()).collect();
        drop(workspaces);
        for ((dir, cached), indexed) in dirs.iter().zip(cached).zip(indexed) {
            let mut workspace = open(dir.path());
            let stored = workspace.list(Collection::Tasks).unwrap();
            prop_assert_eq!(&stored, &cached);
            // The counts `status` takes from views and manifests are the document's.
            let status = workspace.status().unwrap();
            let (records, events_counted) =
                status.documents.iter().find(|d| d.name == "tasks/*").map_or((0, 0), |d| (d.records, d.events));
            prop_assert_eq!(records, stored.len());
            let events = workspace.events(&Default::default()).unwrap();
            prop_assert_eq!(events_counted, events.iter().filter(|e| e.document == TASKS).count());
            prop_assert_eq!(&events, &indexed);
            drop(workspace);
            let (records, events) = rebuilt_from_the_log(dir.path());
            prop_assert_eq!(&records, &cached);
            prop_assert_eq!(&events, &indexed);
        }
    }
}

/// A view read from a base and many delta records (an import the compactions have not folded
/// yet) is stored again as a base at its next load, so later loads do not pack the deltas
/// again; what it reads stays the document's.
#[test]
fn a_view_loaded_from_many_deltas_is_stored_again_as_a_base() {
    let dir = tempfile::tempdir().unwrap();
    drop(init(dir.path()));
    let options = WorkspaceOptions { compact_after_chunks: u64::MAX, compact_after_bytes: u64::MAX };
    let mut workspace = Workspace::open_with(dir.path(), passphrase, options).unwrap();
    let group: Vec<_> = (0..5000).map(|n| (draft("task.created"), task_effect(&format!("task {n}"), ""))).collect();
    workspace.commit_batch(group).unwrap();
    drop(workspace);
    let deltas =
        |dir: &Path| SledStore::open(&dir.join("store")).unwrap().keys_with_prefix(b"d/tasks/0\0").unwrap().len();
    assert!(deltas(dir.path()) > 0);

    let mut workspace = open(dir.path());
    let listed = workspace.list(Collection::Tasks).unwrap();
    assert_eq!(listed.len(), 5000);
    drop(workspace);
    assert_eq!(deltas(dir.path()), 0, "the deltas were folded into a new base");
    let mut workspace = open(dir.path());
    assert_eq!(workspace.list(Collection::Tasks).unwrap(), listed);
    drop(workspace);
    let (rebuilt, _) = rebuilt_from_the_log(dir.path());
    assert_eq!(rebuilt, listed);
}
