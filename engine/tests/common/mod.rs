//! Helpers shared by the engine's integration tests: real workspaces in temporary directories.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub const PASSPHRASE: &str = "correct horse battery staple";

pub fn passphrase() -> Option<Zeroizing<String>> {
    Some(Zeroizing::new(PASSPHRASE.to_owned()))
}

pub fn init(dir: &Path) -> Workspace {
    Workspace::init(dir, KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), "test device").unwrap()
}

/// A second device of `inviter`'s workspace in `dir`: invited, requested, accepted and
/// installed, the messages passed in memory as a transport would carry them.
pub fn join(inviter: &mut Workspace, dir: &Path, name: &str) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), name).unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    pending.complete(dir, KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), &acceptance).unwrap()
}

/// Brings `to` up to date with `from` for `document` (what one sync round does).
pub fn sync_document(from: &mut Workspace, to: &mut Workspace, document: &str) -> adiuva_engine::Imported {
    let bundle = from.export_changes(document, &[]).unwrap();
    to.import_changes(document, &bundle).unwrap()
}

pub fn open(dir: &Path) -> Workspace {
    Workspace::open(dir, passphrase).unwrap()
}

pub fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields must be an object"),
    }
}

pub fn draft(kind: &str) -> EventDraft {
    EventDraft::new(EventKind::new(kind).unwrap(), Actor::User)
}

/// The bucket of the tasks the tests add ([`task_id`]): tests of one document's sync, authorship
/// and storage find every task there.
pub const TASKS: &str = "tasks/0";

/// A new task id whose record goes to [`TASKS`].
pub fn task_id() -> RecordId {
    std::iter::repeat_with(RecordId::new).find(|id| Collection::Tasks.document_of(*id) == TASKS).unwrap()
}

pub fn task_effect(title: &str, description: &str) -> Effect {
    Effect::CreateRecord {
        collection: Collection::Tasks,
        id: task_id(),
        fields: fields(json!({"title": title, "description": description, "status": "todo", "priority": "medium",
                              "tags": [], "created_at": "2026-11-29T10:00:00Z"})),
    }
}

pub fn add_task(workspace: &mut Workspace, title: &str, description: &str) -> RecordId {
    let effect = task_effect(title, description);
    let id = effect.record();
    workspace.commit(draft("task.created"), effect).unwrap();
    id
}

pub fn add_note(workspace: &mut Workspace, title: &str, body: &str) -> RecordId {
    let id = RecordId::new();
    let effect = Effect::CreateRecord {
        collection: Collection::Notes,
        id,
        fields: fields(json!({"title": title, "body": body, "tags": [], "created_at": "2026-11-29T10:00:00Z"})),
    };
    workspace.commit(draft("note.created"), effect).unwrap();
    id
}

/// Every file under `dir`, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Copies a directory tree (a workspace) to `to`.
/// The passphrase of `fixtures/workspace-2026-12`: "ﬁ" (U+FB01) is "fi" in NFKC.
pub const FIXTURE_2026_12_PASSPHRASE: &str = "fixture passphrase \u{FB01}ve \u{C5}";

/// A copy of a fixture: opening writes (checkpoint, witness), never to the fixture itself.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    dir
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
