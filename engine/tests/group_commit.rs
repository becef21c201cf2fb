//! A group commit large enough to spread its documents over the cores (the tasks' 16 buckets)
//! behaves as one applied event after event: each document's events keep the group's order, the
//! envelopes come back in the group's order, and a group with a failing event fails whole, at
//! its first failing event, with nothing of it stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use adiuva_engine::{Effect, EventDraft, Workspace};
use adiuva_model::{Collection, RecordId};
use common::*;
use serde_json::json;

/// A task in whichever bucket its id falls in.
fn spread_task(id: RecordId, title: &str) -> (EventDraft, Effect) {
    let fields = fields(json!({"title": title, "status": "todo", "priority": "medium", "tags": [],
                               "created_at": "2026-12-07T10:00:00Z"}));
    (draft("task.created"), Effect::CreateRecord { collection: Collection::Tasks, id, fields })
}

/// Each document's created records, in log order.
fn created_by_document(workspace: &mut Workspace) -> BTreeMap<String, Vec<RecordId>> {
    let mut documents: BTreeMap<String, Vec<RecordId>> = BTreeMap::new();
    for event in workspace.events(&Default::default()).unwrap() {
        if let (Some(subject), "task.created") = (event.envelope.subject, event.envelope.kind.as_str()) {
            documents.entry(event.document).or_default().push(subject.record);
        }
    }
    documents
}

#[test]
fn a_group_spread_over_the_cores_keeps_the_order_of_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    let ids: Vec<RecordId> = (0..400).map(|_| RecordId::new()).collect();
    let group = ids.iter().enumerate().map(|(n, id)| spread_task(*id, &format!("task {n}"))).collect();
    let envelopes = workspace.commit_batch(group).unwrap();
    let returned: Vec<RecordId> = envelopes.iter().map(|e| e.subject.as_ref().unwrap().record).collect();
    assert_eq!(returned, ids, "the envelopes come back in the group's order");

    let position: BTreeMap<RecordId, usize> = ids.iter().enumerate().map(|(n, id)| (*id, n)).collect();
    let documents = created_by_document(&mut workspace);
    assert!(documents.len() > 8, "the group spans the buckets: {:?}", documents.keys());
    for (document, records) in &documents {
        let order: Vec<usize> = records.iter().map(|id| position[id]).collect();
        assert!(order.is_sorted(), "{document} holds its events in the group's order: {order:?}");
        assert!(records.iter().all(|id| Collection::Tasks.document_of(*id) == *document));
    }
    drop(workspace);
    let mut reopened = open(dir.path());
    assert_eq!(created_by_document(&mut reopened), documents);
    assert_eq!(reopened.list(Collection::Tasks).unwrap().len(), ids.len());
}

#[test]
fn a_group_fails_whole_at_its_first_failing_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = init(dir.path());
    let first = RecordId::new();
    let second = std::iter::repeat_with(RecordId::new)
        .find(|id| Collection::Tasks.document_of(*id) != Collection::Tasks.document_of(first))
        .unwrap();
    workspace.commit_batch(vec![spread_task(first, "first"), spread_task(second, "second")]).unwrap();
    let before = workspace.events(&Default::default()).unwrap().len();

    // Two events of the group create records that exist, in two documents: the earlier one (by
    // the group's order) is the one reported, whichever core reaches its document first.
    let mut group: Vec<_> = (0..300).map(|n| spread_task(RecordId::new(), &format!("task {n}"))).collect();
    group[120] = spread_task(second, "second again");
    group[200] = spread_task(first, "first again");
    let error = workspace.commit_batch(group).unwrap_err().to_string();
    assert!(error.contains(&second.to_string()), "{error}");
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 2, "nothing of the group is kept");
    assert_eq!(workspace.events(&Default::default()).unwrap().len(), before);

    let group = (0..100).map(|n| spread_task(RecordId::new(), &format!("later {n}"))).collect();
    workspace.commit_batch(group).unwrap();
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 102);
    drop(workspace);
    let mut reopened = open(dir.path());
    assert_eq!(reopened.list(Collection::Tasks).unwrap().len(), 102);
    assert_eq!(created_by_document(&mut reopened).values().map(Vec::len).sum::<usize>(), 102);
}
