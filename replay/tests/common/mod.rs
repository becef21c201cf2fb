//! What the replay tests share: a workspace built the way people use one — tasks and notes on
//! three devices, changes imported from the others, a device removed (so the key rotated), a
//! chain of events caused by one another, a compaction — with the state and events recorded
//! after every step, to check each command's answer against.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use adiuva_engine::{Effect, EventDraft, EventFilter, KeyProtection, LoggedEvent, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use adiuva_replay::state::State;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub const PASSPHRASE: &str = "correct horse battery staple";

pub fn passphrase() -> Option<Zeroizing<String>> {
    Some(Zeroizing::new(PASSPHRASE.to_owned()))
}

pub fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

pub fn init(dir: &Path) -> Workspace {
    Workspace::init(dir, protection(), "laptop").unwrap()
}

/// Opened as the replay tool opens it.
pub fn read_only(dir: &Path) -> Workspace {
    Workspace::open_read_only(dir, passphrase).unwrap()
}

/// A new device of `inviter`'s workspace in `dir`, the messages passed in memory.
pub fn join(inviter: &mut Workspace, dir: &Path, name: &str) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), name).unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    pending.complete(dir, protection(), &acceptance).unwrap()
}

/// What one sync round of `document` from `from` to `to` does.
pub fn sync(from: &mut Workspace, to: &mut Workspace, document: &str) {
    let unit = from.export_changes(document, &[]).unwrap();
    let imported = to.import_changes(document, &unit).unwrap();
    assert!(imported.refused.is_empty() && imported.pending == 0, "{imported:?}");
}

pub fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields must be an object"),
    }
}

pub fn draft(kind: &str, actor: Actor) -> EventDraft {
    EventDraft::new(EventKind::new(kind).unwrap(), actor)
}

/// The bucket of the tasks the tests add: tests of one document's log find every task there.
pub const TASKS: &str = "tasks/0";

/// A new task id whose record goes to [`TASKS`].
pub fn task_id() -> RecordId {
    std::iter::repeat_with(RecordId::new).find(|id| Collection::Tasks.document_of(*id) == TASKS).unwrap()
}

pub fn add_task(workspace: &mut Workspace, title: &str) -> RecordId {
    let id = task_id();
    let fields = fields(json!({"title": title, "description": "", "status": "todo", "priority": "medium",
                               "tags": [], "created_at": "2026-12-02T10:00:00Z"}));
    workspace
        .commit(draft("task.created", Actor::User), Effect::CreateRecord { collection: Collection::Tasks, id, fields })
        .unwrap();
    id
}

pub fn add_note(workspace: &mut Workspace, title: &str, body: &str) -> RecordId {
    let id = RecordId::new();
    let fields = fields(json!({"title": title, "body": body, "tags": [], "created_at": "2026-12-02T10:00:00Z"}));
    workspace
        .commit(draft("note.created", Actor::User), Effect::CreateRecord { collection: Collection::Notes, id, fields })
        .unwrap();
    id
}

pub fn note_document(id: RecordId) -> String {
    Collection::Notes.document_of(id)
}

/// Every record of every collection, as the workspace lists them now.
pub fn state_of(workspace: &mut Workspace) -> State {
    let mut state = State::new();
    for collection in Collection::ALL {
        let records: BTreeMap<String, Value> = workspace
            .list(collection)
            .unwrap()
            .into_iter()
            .map(|record| (record["id"].as_str().unwrap().to_owned(), record))
            .collect();
        if !records.is_empty() {
            state.insert(collection.name().to_owned(), records);
        }
    }
    state
}

/// One step of the built workspace: the events it added (in log order) and the state after it.
pub struct Moment {
    pub events: Vec<LoggedEvent>,
    pub state: State,
}

#[derive(Default)]
struct Recorder {
    seen: HashSet<String>,
    moments: Vec<Moment>,
}

impl Recorder {
    fn record(&mut self, workspace: &mut Workspace) {
        let events: Vec<LoggedEvent> = workspace
            .events(&EventFilter::default())
            .unwrap()
            .into_iter()
            .filter(|event| self.seen.insert(event.change.clone()))
            .collect();
        assert!(!events.is_empty(), "every recorded step adds events");
        self.moments.push(Moment { events, state: state_of(workspace) });
    }
}

/// The built workspace (device A's directory; B's and C's kept for the tests that need them).
pub struct Built {
    pub a: tempfile::TempDir,
    pub b: tempfile::TempDir,
    pub c: tempfile::TempDir,
    pub moments: Vec<Moment>,
    pub devices: Devices,
    pub records: Records,
}

pub struct Devices {
    pub a: String,
    pub b: String,
    /// Removed after its task was imported.
    pub c: String,
}

pub struct Records {
    /// Created on A, then updated.
    pub milk: RecordId,
    /// Created on B, imported.
    pub from_b: RecordId,
    /// Created on C before C was removed, imported.
    pub from_c: RecordId,
    /// A note created on A and later deleted.
    pub deleted_note: RecordId,
    /// The task step 2 of an approved plan created.
    pub planned: RecordId,
    pub correlation: ulid::Ulid,
}

impl Built {
    pub fn path(&self) -> &Path {
        self.a.path()
    }

    pub fn all_events(&self) -> Vec<&LoggedEvent> {
        self.moments.iter().flat_map(|moment| &moment.events).collect()
    }
}

pub fn build() -> Built {
    let (a_dir, b_dir, c_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut recorder = Recorder::default();
    let mut a = init(a_dir.path());
    recorder.record(&mut a);
    let milk = add_task(&mut a, "buy milk");
    recorder.record(&mut a);
    let deleted_note = add_note(&mut a, "first note", "to be deleted");
    recorder.record(&mut a);
    let mut b = join(&mut a, b_dir.path(), "desktop");
    recorder.record(&mut a);
    let mut c = join(&mut a, c_dir.path(), "old phone");
    recorder.record(&mut a);

    let from_b = add_task(&mut b, "written on b");
    sync(&mut b, &mut a, TASKS);
    recorder.record(&mut a);
    let b_note = add_note(&mut b, "b's note", "a body written on b");
    sync(&mut b, &mut a, &note_document(b_note));
    recorder.record(&mut a);

    let update = fields(json!({"title": "buy oat milk", "status": "done"}));
    a.commit(
        draft("task.updated", Actor::User),
        Effect::UpdateRecord { collection: Collection::Tasks, id: milk, fields: update },
    )
    .unwrap();
    recorder.record(&mut a);

    let from_c = add_task(&mut c, "written on c");
    sync(&mut c, &mut a, TASKS);
    recorder.record(&mut a);
    a.remove_device(c.device_id()).unwrap();
    recorder.record(&mut a);

    // A chat message, the plan the task agent proposed for it, the person's approval, and the
    // task step 2 of the plan created: one correlation, each caused by the one before.
    let correlation = ulid::Ulid::new();
    let message = a
        .commit(
            draft("conversation.message", Actor::User).correlated(Some(correlation)),
            Effect::CreateRecord {
                collection: Collection::Conversations,
                id: RecordId::new(),
                fields: fields(json!({"role": "user", "text": "plan my week"})),
            },
        )
        .unwrap();
    recorder.record(&mut a);
    let plan = RecordId::new();
    let proposed = a
        .commit(
            draft("plan.proposed", "agent:task".parse().unwrap())
                .correlated(Some(correlation))
                .caused_by(Some(message.id)),
            Effect::CreateRecord {
                collection: Collection::Plans,
                id: plan,
                fields: fields(json!({"title": "the week", "status": "proposed"})),
            },
        )
        .unwrap();
    recorder.record(&mut a);
    let approved = a
        .commit(
            draft("plan.approved", Actor::User).correlated(Some(correlation)).caused_by(Some(proposed.id)),
            Effect::UpdateRecord {
                collection: Collection::Plans,
                id: plan,
                fields: fields(json!({"status": "approved"})),
            },
        )
        .unwrap();
    recorder.record(&mut a);
    let planned = task_id();
    let step: Actor = format!("plan:{plan}/step:2").parse().unwrap();
    a.commit(
        draft("task.created", step).correlated(Some(correlation)).caused_by(Some(approved.id)),
        Effect::CreateRecord {
            collection: Collection::Tasks,
            id: planned,
            fields: fields(json!({"title": "book the dentist", "status": "todo", "priority": "high", "tags": []})),
        },
    )
    .unwrap();
    recorder.record(&mut a);

    a.commit(
        draft("note.deleted", Actor::User),
        Effect::DeleteRecord { collection: Collection::Notes, id: deleted_note },
    )
    .unwrap();
    recorder.record(&mut a);
    // Snapshots, then a tail on top of them.
    a.compact().unwrap();
    add_task(&mut a, "after the compaction");
    recorder.record(&mut a);
    add_note(&mut a, "a note in the tail", "body");
    recorder.record(&mut a);

    let devices = Devices { a: a.device_id().to_string(), b: b.device_id().to_string(), c: c.device_id().to_string() };
    drop((a, b, c));
    Built {
        a: a_dir,
        b: b_dir,
        c: c_dir,
        moments: recorder.moments,
        devices,
        records: Records { milk, from_b, from_c, deleted_note, planned, correlation },
    }
}

/// Every file under `dir` with its bytes.
pub fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The replay binary, unlocking with the test passphrase.
pub fn replay(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_adiuva-replay"))
        .args(args)
        .env("ADIUVA_PASSPHRASE", PASSPHRASE)
        .env_remove("ADIUVA_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap()
}
