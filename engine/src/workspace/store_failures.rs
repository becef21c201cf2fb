//! Store failures injected through [`ChunkStore`]: every write or barrier of `init`, of a
//! commit and of a compaction is made to fail in turn, and what the workspace holds in memory,
//! and what a reopen finds, must be exactly what the store acknowledged.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use adiuva_model::{Collection, RecordId};
use serde_json::json;
use zeroize::Zeroizing;

use super::*;
use crate::records::Effect;
use crate::store::Entry;

const PASSPHRASE: &str = "correct horse battery staple";

fn passphrase() -> Option<Zeroizing<String>> {
    Some(Zeroizing::new(PASSPHRASE.into()))
}

fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

/// A real store whose writes and barriers fail (or panic) once `budget` of them are spent,
/// until the budget is raised again.
struct FailingStore {
    inner: SledStore,
    budget: Arc<AtomicU64>,
    panics: bool,
}

impl FailingStore {
    fn spend(&self) -> Result<(), StoreError> {
        match self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)) {
            Ok(_) => Ok(()),
            Err(_) if self.panics => panic!("injected panic"),
            Err(_) => Err(StoreError::Io { source: std::io::Error::other("injected failure") }),
        }
    }
}

impl ChunkStore for FailingStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan_prefix(prefix)
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.keys_with_prefix(prefix)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.spend()?;
        self.inner.write(batch)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.spend()?;
        self.inner.sync()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

/// The lock and a failing store over the workspace in `dir`.
fn failing(dir: &Path, budget: &Arc<AtomicU64>) -> (File, Box<dyn ChunkStore>) {
    failing_with(dir, budget, false)
}

fn failing_with(dir: &Path, budget: &Arc<AtomicU64>, panics: bool) -> (File, Box<dyn ChunkStore>) {
    std::fs::create_dir_all(dir).unwrap();
    let lock = lock_dir(dir).unwrap();
    let inner = SledStore::open(&store_dir(dir)).unwrap();
    (lock, Box::new(FailingStore { inner, budget: budget.clone(), panics }))
}

/// A new workspace on a [`FailingStore`] that lets every write through until `budget` is lowered.
fn failing_workspace() -> (tempfile::TempDir, Arc<AtomicU64>, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let budget = Arc::new(AtomicU64::new(u64::MAX));
    let (lock, store) = failing(dir.path(), &budget);
    let workspace = Workspace::init_in(dir.path(), lock, store, protection(), "device").unwrap();
    (dir, budget, workspace)
}

fn task(title: &str) -> (EventDraft, Effect) {
    // Every task in one bucket, so that its document compacts often.
    let id = std::iter::repeat_with(RecordId::new).find(|id| Collection::Tasks.document_of(*id) == "tasks/0");
    task_with_id(title, id.unwrap())
}

/// A task in whichever bucket `id` falls in.
fn task_with_id(title: &str, id: RecordId) -> (EventDraft, Effect) {
    let fields = json!({"title": title, "description": "", "status": "todo", "priority": "medium", "tags": [],
                        "created_at": "2026-11-29T10:00:00Z"});
    let Value::Object(fields) = fields else { unreachable!() };
    let effect = Effect::CreateRecord { collection: Collection::Tasks, id, fields };
    let draft = EventDraft::new(adiuva_model::EventKind::new("task.created").unwrap(), adiuva_model::Actor::User);
    (draft, effect)
}

fn task_ids(workspace: &mut Workspace) -> BTreeSet<String> {
    workspace.list(Collection::Tasks).unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

/// The records the log's events created (the read view is not consulted).
fn created_ids(workspace: &mut Workspace) -> BTreeSet<String> {
    let events = workspace.events(&Default::default()).unwrap();
    events.iter().filter_map(|event| event.envelope.subject.as_ref()).map(|s| s.record.to_string()).collect()
}

#[test]
fn init_cut_short_at_any_store_write_leaves_no_workspace_or_a_complete_one() {
    for allowed in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(AtomicU64::new(allowed));
        let (lock, store) = failing(dir.path(), &budget);
        if Workspace::init_in(dir.path(), lock, store, protection(), "device").is_ok() {
            assert!(allowed > 0, "init must write something");
            break;
        }
        let mut workspace = match Workspace::open(dir.path(), passphrase) {
            Ok(workspace) => workspace,
            Err(Error::WorkspaceNotFound { .. }) => Workspace::init(dir.path(), protection(), "device")
                .unwrap_or_else(|e| panic!("after {allowed} writes: init must run again: {e}")),
            Err(e) => panic!("after {allowed} writes: neither a workspace nor none: {e}"),
        };
        workspace
            .commit_batch(vec![task("after a cut-short init")])
            .unwrap_or_else(|e| panic!("after {allowed} writes: the workspace opens, so it must take commits: {e}"));
    }
}

/// A commit (single or group, with compactions along the way) fails at each of its store writes
/// in turn; the store then works again. Memory must roll back to what is durable: the next
/// commits, the reads of the live workspace and a reopen all agree, and nothing acknowledged
/// is lost.
#[test]
fn a_failed_store_write_leaves_memory_exactly_as_the_store_has_it() {
    let (dir, budget, mut workspace) = failing_workspace();
    workspace.options = WorkspaceOptions { compact_after_chunks: 3, compact_after_bytes: u64::MAX };
    let mut acknowledged = BTreeSet::new();
    let mut failures = 0;
    for round in 0..60u64 {
        // Rounds 1, 3, 5...: fail at the round's 0th, 1st, 2nd... write or barrier.
        if round % 2 == 1 {
            budget.store(round / 2 % 6, Ordering::SeqCst);
        }
        let events: Vec<_> = (0..1 + round % 3).map(|i| task(&format!("task {round}.{i}"))).collect();
        let ids: Vec<String> = events.iter().map(|(_, effect)| effect.record().to_string()).collect();
        match workspace.commit_batch(events) {
            Ok(_) => acknowledged.extend(ids),
            Err(_) => failures += 1,
        }
        budget.store(u64::MAX, Ordering::SeqCst);
        let live = task_ids(&mut workspace);
        assert!(live.is_superset(&acknowledged), "round {round}: an acknowledged task is missing");
        assert_eq!(created_ids(&mut workspace), live, "round {round}: the documents and the read view disagree");
    }
    assert!(failures >= 5, "the injected failures must hit commits: {failures}");
    let live = task_ids(&mut workspace);
    let events = workspace.events(&Default::default()).unwrap().len();
    drop(workspace);
    let mut reopened = Workspace::open(dir.path(), passphrase).unwrap();
    assert_eq!(task_ids(&mut reopened), live, "memory ran ahead of, or behind, the store");
    assert_eq!(reopened.events(&Default::default()).unwrap().len(), events);
}

/// A group large enough to be applied and staged on every core, over all the buckets, whose
/// store write fails: nothing of it stays in memory, and the next group and a reopen find
/// exactly what was acknowledged.
#[test]
fn a_group_across_the_cores_whose_write_fails_leaves_memory_as_the_store_has_it() {
    let (dir, budget, mut workspace) = failing_workspace();
    let group =
        |name: &str| -> Vec<_> { (0..200).map(|n| task_with_id(&format!("{name} {n}"), RecordId::new())).collect() };
    workspace.commit_batch(group("first")).unwrap();
    let acknowledged = task_ids(&mut workspace);
    let documents: Vec<String> = workspace.docs.keys().cloned().collect();
    let heads = |workspace: &mut Workspace| -> Vec<Vec<automerge::ChangeHash>> {
        documents.iter().map(|document| workspace.document(document).unwrap().doc.get_heads()).collect()
    };
    let before = heads(&mut workspace);
    budget.store(0, Ordering::SeqCst);
    assert!(workspace.commit_batch(group("failed")).is_err());
    budget.store(u64::MAX, Ordering::SeqCst);
    assert_eq!(heads(&mut workspace), before, "a document in memory kept changes the store refused");
    assert_eq!(task_ids(&mut workspace), acknowledged, "memory kept a group the store refused");
    assert_eq!(created_ids(&mut workspace), acknowledged);
    workspace.commit_batch(group("after")).unwrap();
    let live = task_ids(&mut workspace);
    assert_eq!(live.len(), 400);
    drop(workspace);
    let mut reopened = Workspace::open(dir.path(), passphrase).unwrap();
    assert_eq!(task_ids(&mut reopened), live);
    assert_eq!(created_ids(&mut reopened), live);
}

/// A compaction a commit starts saves on its own thread while commits go on, and a later commit
/// installs it with the chunks written meanwhile left in the tail. Writes fail in turn, those
/// of the installs included: a commit that installs a compaction is not failed by it, and a
/// reopen finds every acknowledged task and event.
#[test]
fn a_background_compaction_keeps_what_was_written_while_it_saved() {
    let (dir, budget, mut workspace) = failing_workspace();
    workspace.options = WorkspaceOptions { compact_after_chunks: 3, compact_after_bytes: u64::MAX };
    let tail =
        |workspace: &Workspace| workspace.docs.get("tasks/0").map(|d| (d.manifest.tail_start, d.manifest.next_seq));
    let (mut acknowledged, mut installed_with_tail, mut failures) = (BTreeSet::new(), 0, 0);
    for round in 0..48u64 {
        let before = tail(&workspace);
        if round % 4 == 3 {
            budget.store(round / 4 % 6, Ordering::SeqCst);
        }
        let (draft, effect) = task(&format!("task {round}"));
        let id = effect.record().to_string();
        match workspace.commit_batch(vec![(draft, effect)]) {
            Ok(_) => {
                acknowledged.insert(id);
            }
            Err(_) => failures += 1,
        }
        budget.store(u64::MAX, Ordering::SeqCst);
        if let (Some((start_before, _)), Some((start, next))) = (before, tail(&workspace))
            && start != start_before
            && start < next
        {
            installed_with_tail += 1;
        }
        assert!(task_ids(&mut workspace).is_superset(&acknowledged), "round {round}: an acknowledged task is missing");
    }
    assert!(failures >= 3, "the injected failures must hit commits: {failures}");
    assert!(installed_with_tail > 0, "no compaction was installed with chunks written after it began");
    let live = task_ids(&mut workspace);
    let events = workspace.events(&Default::default()).unwrap().len();
    drop(workspace);
    let mut reopened = Workspace::open(dir.path(), passphrase).unwrap();
    assert_eq!(task_ids(&mut reopened), live);
    assert_eq!(created_ids(&mut reopened), live);
    assert_eq!(reopened.events(&Default::default()).unwrap().len(), events);
}

/// A panic in the middle of a commit unwinds through the workspace's `Drop`: it must record
/// nothing (memory may be halfway through a change), and the workspace opens as it was.
#[test]
fn a_panic_unwinding_through_close_records_no_witness() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Arc::new(AtomicU64::new(u64::MAX));
    let (lock, store) = failing_with(dir.path(), &budget, true);
    let mut workspace = Workspace::init_in(dir.path(), lock, store, protection(), "device").unwrap();
    workspace.commit_batch(vec![task("kept")]).unwrap();
    workspace.write_witness().unwrap();
    let witness = std::fs::read(dir.path().join("witness")).unwrap();
    budget.store(0, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        workspace.commit_batch(vec![task("never stored")]).ok();
    }));
    assert!(unwound.is_err(), "the injected panic must unwind");
    assert_eq!(std::fs::read(dir.path().join("witness")).unwrap(), witness, "the witness was rewritten");
    let mut reopened = Workspace::open(dir.path(), passphrase).unwrap();
    assert_eq!(task_ids(&mut reopened).len(), 1);
}

/// A compaction stopped at each of its store writes in turn (the process then gone): the
/// workspace reopens with every event, and compacts on the next try.
#[test]
fn compaction_cut_short_at_any_store_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = Workspace::init(dir.path(), protection(), "device").unwrap();
    workspace.commit_batch((0..5).map(|i| task(&format!("group {i}"))).collect()).unwrap();
    for i in 0..5 {
        workspace.commit_batch(vec![task(&format!("single {i}"))]).unwrap();
    }
    let expected = task_ids(&mut workspace);
    drop(workspace);
    for allowed in 0.. {
        let budget = Arc::new(AtomicU64::new(allowed));
        let (lock, store) = failing(dir.path(), &budget);
        let mut workspace =
            Workspace::open_in(dir.path(), lock, store, passphrase, WorkspaceOptions::default(), Witness::Check)
                .unwrap();
        let compacted = workspace.compact().is_ok();
        // Nothing more reaches the store (the witness file at close records only durable counts).
        budget.store(0, Ordering::SeqCst);
        drop(workspace);
        let mut reopened = Workspace::open(dir.path(), passphrase)
            .unwrap_or_else(|e| panic!("after {allowed} writes of a compaction: {e}"));
        assert_eq!(task_ids(&mut reopened), expected, "after {allowed} writes of a compaction");
        assert_eq!(created_ids(&mut reopened), expected, "after {allowed} writes of a compaction");
        if compacted {
            assert!(allowed > 0);
            break;
        }
    }
}

#[test]
fn a_unit_held_back_or_dismissed_whose_write_fails_is_left_as_it_was() {
    const RELAY: &str = "https://relay.test";
    let (_dir, budget, mut workspace) = failing_workspace();
    let unopened = Error::UnitCorrupt { unit: "#7".into() };
    budget.store(0, Ordering::SeqCst);
    let error = workspace.hold_unit(RELAY, 7, &unopened).unwrap_err();
    assert_eq!(error.code(), adiuva_model::ErrorCode::StoreIo, "{error}");
    budget.store(u64::MAX, Ordering::SeqCst);
    let held = |workspace: &Workspace| {
        (workspace.relay_state(RELAY).unwrap().cursor, workspace.unsettled_units(RELAY).unwrap().held.len())
    };
    assert_eq!(held(&workspace), (0, 0), "held and the cursor are one write");
    workspace.hold_unit(RELAY, 7, &unopened).unwrap();
    assert_eq!(held(&workspace), (7, 1));
    // A dismissal whose write fails leaves the unit held, to be dismissed again.
    budget.store(0, Ordering::SeqCst);
    let error = workspace.dismiss_held_unit(RELAY, 7).unwrap_err();
    assert_eq!(error.code(), adiuva_model::ErrorCode::StoreIo, "{error}");
    budget.store(u64::MAX, Ordering::SeqCst);
    assert_eq!(held(&workspace), (7, 1));
    workspace.dismiss_held_unit(RELAY, 7).unwrap();
    assert_eq!(held(&workspace), (7, 0));
}
