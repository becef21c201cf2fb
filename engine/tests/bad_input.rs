//! Bad input at the engine's edges: document names that could collide with other keys, and
//! record values that must never be quoted in an error.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_engine::Effect;
use adiuva_model::record::Task;
use adiuva_model::{Collection, ErrorCode, RecordId};
use common::*;
use serde_json::json;

#[test]
fn document_names_that_could_collide_with_other_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    add_task(&mut workspace, "kept", "");
    let names_before = workspace.document_names().unwrap();
    // `activity/2026-11` NUL seq: the keys of this name's log would be another document's chunks.
    let colliding = format!("activity/2026-11\0{}", String::from_utf8_lossy(&[0, 0, 0, 0, 0, 0, 0, 1]));
    for name in [colliding.as_str(), "tasks\0", "", "activity/../tasks", &"a".repeat(500)] {
        let mut changes = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut changes, automerge::ROOT, "x", 1).unwrap();
        let error = workspace.import_changes(name, &changes.save()).unwrap_err();
        assert_eq!(error.code(), ErrorCode::DocumentNameInvalid, "{name:?}: {error}");
        assert_eq!(workspace.heads(name).unwrap_err().code(), ErrorCode::DocumentNameInvalid, "{name:?}");
        assert_eq!(workspace.export_changes(name, &[]).unwrap_err().code(), ErrorCode::DocumentNameInvalid);
    }
    assert_eq!(workspace.document_names().unwrap(), names_before, "no bad name reached the directory");
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 1);
}

#[test]
fn errors_never_quote_record_values() {
    const SECRET: &str = "MARKER-SECRET-VALUE-31f9";
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    // Fields the engine stores as given, which do not fit the task schema.
    let id = RecordId::new();
    let effect = Effect::CreateRecord {
        collection: Collection::Tasks,
        id,
        fields: fields(json!({"title": "t", "priority": SECRET, "status": "todo", "tags": [],
                              "created_at": "2026-11-29T10:00:00Z"})),
    };
    workspace.commit(draft("task.created"), effect).unwrap();
    let errors = [
        workspace.list_as::<Task>(Collection::Tasks).unwrap_err(),
        workspace.get_as::<Task>(Collection::Tasks, id).unwrap_err(),
    ];
    for error in errors {
        assert_eq!(error.code(), ErrorCode::RecordInvalid, "{error}");
        assert!(!error.to_string().contains(SECRET), "the error quotes a record value: {error}");
        assert!(!format!("{error:?}").contains(SECRET), "the error's debug form quotes a record value: {error:?}");
    }
}
