//! Convergence: replicas applying random operations concurrently and merging in random orders
//! always end with the same state and the same heads; concurrent edits of one text keep both.
//!
//! The in-memory property test drives the engine's record effects on bare Automerge documents
//! (fast enough for hundreds of cases); the workspace tests then show the same through real,
//! encrypted, durable workspaces exchanging changes with `export_changes` / `import_changes`,
//! for tasks (one document) and for notes (a document per note).

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_engine::Effect;
use adiuva_model::{Collection, RecordId};
use automerge::transaction::CommitOptions;
use automerge::{ActorId, Automerge};
use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A pool of record ids every replica draws from, so operations collide on the same records (all
/// in one bucket: the document [`TASKS`] that tests sync).
fn record_pool() -> Vec<RecordId> {
    (0..4u8).map(|i| RecordId(ulid::Ulid::from_parts(1_764_400_000_000, u128::from(i) * 16))).collect()
}

#[derive(Clone, Debug)]
enum Operation {
    Create {
        record: usize,
        title: String,
    },
    SetTitle {
        record: usize,
        title: String,
    },
    /// Insert `word` into the description at character `at` (clamped).
    EditDescription {
        record: usize,
        at: usize,
        word: String,
    },
    SetStatus {
        record: usize,
        done: bool,
    },
    Delete {
        record: usize,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    let record = 0..4usize;
    prop_oneof![
        (record.clone(), "[a-z]{1,6}").prop_map(|(record, title)| Operation::Create { record, title }),
        (record.clone(), "[a-z]{1,6}").prop_map(|(record, title)| Operation::SetTitle { record, title }),
        (record.clone(), 0..20usize, "[a-z]{1,4}").prop_map(|(record, at, word)| Operation::EditDescription {
            record,
            at,
            word
        }),
        (record.clone(), any::<bool>()).prop_map(|(record, done)| Operation::SetStatus { record, done }),
        record.prop_map(|record| Operation::Delete { record }),
    ]
}

/// Applies one operation as one change (its own envelope-bearing commit), like the workspace
/// does. Operations that do not apply to the replica's current state (editing a record it does
/// not have) are skipped, as the engine would refuse them.
fn apply(doc: &mut Automerge, ids: &[RecordId], operation: &Operation) {
    let collection = Collection::Tasks;
    let effect = match operation {
        Operation::Create { record, title } => Effect::CreateRecord {
            collection,
            id: ids[*record],
            fields: fields(json!({"title": title, "description": "", "status": "todo", "tags": []})),
        },
        Operation::SetTitle { record, title } => {
            Effect::UpdateRecord { collection, id: ids[*record], fields: fields(json!({"title": title})) }
        }
        Operation::EditDescription { record, at, word } => {
            let current = adiuva_engine::records::read_record(doc, ids[*record], None)
                .and_then(|r| r["description"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let chars: Vec<char> = current.chars().collect();
            let at = (*at).min(chars.len());
            let edited: String =
                chars[..at].iter().chain(word.chars().collect::<Vec<_>>().iter()).chain(&chars[at..]).collect();
            Effect::UpdateRecord { collection, id: ids[*record], fields: fields(json!({"description": edited})) }
        }
        Operation::SetStatus { record, done } => Effect::UpdateRecord {
            collection,
            id: ids[*record],
            fields: fields(json!({"status": if *done { "done" } else { "todo" }})),
        },
        Operation::Delete { record } => Effect::DeleteRecord { collection, id: ids[*record] },
    };
    let options = CommitOptions::default().with_message("{}");
    let _ = doc.transact_with(|_| options, |tx| effect.apply(tx));
}

fn state(doc: &Automerge) -> serde_json::Value {
    let mut records = serde_json::Map::new();
    for id in adiuva_engine::records::record_ids(doc) {
        if let Some(record) = adiuva_engine::records::read_record(doc, id, None) {
            records.insert(id.to_string(), record);
        }
    }
    serde_json::Value::Object(records)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_merge_order(
        histories in proptest::collection::vec(proptest::collection::vec(operation(), 0..12), 2..5),
        merge_orders in proptest::collection::vec(proptest::collection::vec(0..5usize, 0..12), 5),
        rounds in 1..4usize,
    ) {
        let ids = record_pool();
        let mut replicas: Vec<Automerge> = (0..histories.len())
            .map(|i| Automerge::new().with_actor(ActorId::from(vec![i as u8 + 1; 16])))
            .collect();
        // Operations interleave with partial merges: each round applies a slice of every
        // replica's history, then merges pairs in a random order.
        for round in 0..rounds {
            for (replica, history) in replicas.iter_mut().zip(&histories) {
                let slice = history.len() * round / rounds..history.len() * (round + 1) / rounds;
                for operation in &history[slice] {
                    apply(replica, &ids, operation);
                }
            }
            let count = replicas.len();
            for (target, order) in merge_orders.iter().enumerate().take(count) {
                for &source in order.iter().filter(|&&s| s < count && s != target) {
                    let changes = replicas[source].get_changes(&[]);
                    replicas[target].apply_changes(changes).unwrap();
                }
            }
        }
        // Finally everyone receives everything, each in its own order.
        for target in 0..replicas.len() {
            let mut sources: Vec<usize> = (0..replicas.len()).filter(|&s| s != target).collect();
            let shift = target % sources.len().max(1);
            sources.rotate_left(shift);
            for source in sources {
                let changes = replicas[source].get_changes(&[]);
                replicas[target].apply_changes(changes).unwrap();
            }
        }
        let mut expected_heads = replicas[0].get_heads();
        expected_heads.sort();
        let expected_state = state(&replicas[0]);
        for replica in &replicas[1..] {
            let mut heads = replica.get_heads();
            heads.sort();
            prop_assert_eq!(&heads, &expected_heads);
            prop_assert_eq!(state(replica), expected_state.clone());
        }
    }
}

#[test]
fn concurrent_edits_of_one_description_keep_both() {
    let ids = record_pool();
    let mut left = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
    apply(&mut left, &ids, &Operation::Create { record: 0, title: "t".into() });
    apply(&mut left, &ids, &Operation::EditDescription { record: 0, at: 0, word: "The quick fox".into() });
    let mut right = left.fork().with_actor(ActorId::from(vec![2; 16]));
    apply(&mut left, &ids, &Operation::EditDescription { record: 0, at: 10, word: "brown ".into() });
    apply(&mut right, &ids, &Operation::EditDescription { record: 0, at: 13, word: " jumps".into() });
    left.merge(&mut right).unwrap();
    right.merge(&mut left).unwrap();
    let description =
        |doc: &Automerge| adiuva_engine::records::read_record(doc, ids[0], None).unwrap()["description"].clone();
    assert_eq!(description(&left), "The quick brown fox jumps");
    assert_eq!(description(&right), description(&left));
    assert_eq!(left.get_heads(), right.get_heads());
}

/// Two real workspaces (encrypted, durable) edit the same task concurrently and exchange their
/// changes: both keep both description edits, show the title conflict, and agree on heads —
/// also after reopening from disk.
#[test]
fn workspaces_exchanging_changes_converge_and_keep_concurrent_edits() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = init(dir_a.path());
    let mut b = join(&mut a, dir_b.path(), "b");
    let id = add_task(&mut a, "Plan the trip", "Book the train");
    let bundle = a.export_changes(TASKS, &[]).unwrap();
    assert_eq!(b.import_changes(TASKS, &bundle).unwrap().applied, 1);
    assert_eq!(b.import_changes(TASKS, &bundle).unwrap().applied, 0, "importing twice changes nothing");
    let since_a = a.heads(TASKS).unwrap();
    let since_b = b.heads(TASKS).unwrap();

    let update = |text: &str, title: &str| Effect::UpdateRecord {
        collection: Collection::Tasks,
        id,
        fields: fields(json!({"description": text, "title": title})),
    };
    a.commit(draft("task.updated"), update("Book the night train", "Plan the trip!")).unwrap();
    b.commit(draft("task.updated"), update("Book the train and the hotel", "Plan the holiday")).unwrap();

    let from_a = a.export_changes(TASKS, &since_a).unwrap();
    let from_b = b.export_changes(TASKS, &since_b).unwrap();
    assert_eq!(b.import_changes(TASKS, &from_a).unwrap().applied, 1);
    assert_eq!(a.import_changes(TASKS, &from_b).unwrap().applied, 1);

    let task_a = a.get(Collection::Tasks, id).unwrap().unwrap();
    let task_b = b.get(Collection::Tasks, id).unwrap().unwrap();
    assert_eq!(task_a, task_b);
    assert_eq!(task_a["description"], "Book the night train and the hotel");
    let conflicts = a.conflicts(Collection::Tasks, id).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].field, "title");
    assert_eq!(conflicts[0].values.len(), 2);
    assert_eq!(a.heads(TASKS).unwrap(), b.heads(TASKS).unwrap());
    // The history names both devices.
    let devices: std::collections::HashSet<_> =
        a.history(Collection::Tasks, id).unwrap().iter().map(|e| e.envelope.device).collect();
    assert_eq!(devices.len(), 2);

    let heads = a.heads(TASKS).unwrap();
    drop(a);
    let mut reopened = open(dir_a.path());
    assert_eq!(reopened.heads(TASKS).unwrap(), heads);
    assert_eq!(reopened.get(Collection::Tasks, id).unwrap().unwrap(), task_b);
}

#[derive(Clone, Debug)]
enum NoteStep {
    Create {
        device: usize,
        note: usize,
    },
    /// Insert `word` into the body at character `at` (clamped).
    EditBody {
        device: usize,
        note: usize,
        at: usize,
        word: String,
    },
    /// Every note document of one device imported by the other.
    Sync {
        from: usize,
    },
}

fn note_step() -> impl Strategy<Value = NoteStep> {
    let (device, note) = (0..2usize, 0..3usize);
    prop_oneof![
        (device.clone(), note.clone()).prop_map(|(device, note)| NoteStep::Create { device, note }),
        (device.clone(), note, 0..12usize, "[a-z]{1,4}").prop_map(|(device, note, at, word)| NoteStep::EditBody {
            device,
            note,
            at,
            word
        }),
        device.prop_map(|from| NoteStep::Sync { from }),
    ]
}

fn note_documents(workspace: &mut adiuva_engine::Workspace) -> Vec<String> {
    workspace.document_names().unwrap().into_iter().filter(|name| name.starts_with("notes/")).collect()
}

fn sync_notes(workspaces: &mut [adiuva_engine::Workspace; 2], from: usize) {
    for document in note_documents(&mut workspaces[from]) {
        let bundle = workspaces[from].export_changes(&document, &[]).unwrap();
        workspaces[1 - from].import_changes(&document, &bundle).unwrap();
    }
}

fn run_note_step(workspaces: &mut [adiuva_engine::Workspace; 2], ids: &[RecordId], step: &NoteStep) {
    let collection = Collection::Notes;
    match step {
        NoteStep::Create { device, note } => {
            let fields = fields(json!({"title": format!("note {note}"), "body": "", "tags": []}));
            // Creating a note a device has already is refused, as the engine would.
            let _ = workspaces[*device]
                .commit(draft("note.created"), Effect::CreateRecord { collection, id: ids[*note], fields });
        }
        NoteStep::EditBody { device, note, at, word } => {
            let Some(current) = workspaces[*device].get(collection, ids[*note]).unwrap() else {
                return; // this device does not have the note yet
            };
            let chars: Vec<char> = current["body"].as_str().unwrap_or_default().chars().collect();
            let at = (*at).min(chars.len());
            let body: String =
                chars[..at].iter().copied().chain(word.chars()).chain(chars[at..].iter().copied()).collect();
            let effect = Effect::UpdateRecord { collection, id: ids[*note], fields: fields(json!({"body": body})) };
            workspaces[*device].commit(draft("note.updated"), effect).unwrap();
        }
        NoteStep::Sync { from } => sync_notes(workspaces, *from),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Notes live in documents of their own: two real workspaces editing notes concurrently and
    /// exchanging those documents converge, in memory and after reopening.
    #[test]
    fn workspaces_editing_notes_converge(steps in proptest::collection::vec(note_step(), 1..20)) {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut first = init(dirs[0].path());
        let second = join(&mut first, dirs[1].path(), "second");
        let mut workspaces = [first, second];
        let ids: Vec<RecordId> = record_pool().into_iter().take(3).collect();
        for step in &steps {
            run_note_step(&mut workspaces, &ids, step);
        }
        sync_notes(&mut workspaces, 0);
        sync_notes(&mut workspaces, 1);
        let listed: Vec<Vec<Value>> = workspaces.iter_mut().map(|w| w.list(Collection::Notes).unwrap()).collect();
        prop_assert_eq!(&listed[0], &listed[1]);
        let documents = note_documents(&mut workspaces[0]);
        prop_assert_eq!(&documents, &note_documents(&mut workspaces[1]));
        for document in &documents {
            prop_assert_eq!(workspaces[0].heads(document).unwrap(), workspaces[1].heads(document).unwrap());
        }
        drop(workspaces);
        for dir in &dirs {
            prop_assert_eq!(&open(dir.path()).list(Collection::Notes).unwrap(), &listed[0]);
        }
    }
}

/// Concurrent edits of one note's body, in two workspaces, both survive the exchange.
#[test]
fn concurrent_edits_of_one_note_keep_both() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = init(dir_a.path());
    let mut b = join(&mut a, dir_b.path(), "b");
    let id = add_note(&mut a, "Trip", "The quick fox");
    let document = format!("notes/{id}");
    assert_eq!(note_documents(&mut a), std::slice::from_ref(&document));
    b.import_changes(&document, &a.export_changes(&document, &[]).unwrap()).unwrap();
    let body =
        |text: &str| Effect::UpdateRecord { collection: Collection::Notes, id, fields: fields(json!({"body": text})) };
    a.commit(draft("note.updated"), body("The quick brown fox")).unwrap();
    b.commit(draft("note.updated"), body("The quick fox jumps")).unwrap();
    let (from_a, from_b) = (a.export_changes(&document, &[]).unwrap(), b.export_changes(&document, &[]).unwrap());
    b.import_changes(&document, &from_a).unwrap();
    a.import_changes(&document, &from_b).unwrap();
    for workspace in [&mut a, &mut b] {
        assert_eq!(workspace.get(Collection::Notes, id).unwrap().unwrap()["body"], "The quick brown fox jumps");
        assert_eq!(workspace.history(Collection::Notes, id).unwrap().len(), 3);
    }
    assert_eq!(a.heads(&document).unwrap(), b.heads(&document).unwrap());
}
