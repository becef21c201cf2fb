//! The `adiuva` command line, run as a real process against real workspaces in temporary
//! directories, as a person or a script would.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const PASSPHRASE: &str = "a passphrase for the cli tests";

fn command(workspace: &Path, args: &[&str]) -> Command {
    common::adiuva_command(workspace, PASSPHRASE, args)
}

fn adiuva(workspace: &Path, args: &[&str]) -> Output {
    command(workspace, args).output().unwrap()
}

fn adiuva_with(workspace: &Path, passphrase: &str, args: &[&str]) -> Output {
    command(workspace, args).env("ADIUVA_PASSPHRASE", passphrase).output().unwrap()
}

fn ok(workspace: &Path, args: &[&str]) -> String {
    let output = adiuva(workspace, args);
    assert!(output.status.success(), "adiuva {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn json(workspace: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(workspace, args)).unwrap()
}

fn new_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["init", "--device-name", "test laptop"]);
    assert!(out.contains("created workspace"), "{out}");
    dir
}

#[test]
fn tasks_add_list_edit_done_and_remove() {
    let dir = new_workspace();
    let ws = dir.path();
    let id = ok(
        ws,
        &[
            "task",
            "add",
            "Renew passport",
            "--due",
            "2026-12-24",
            "--priority",
            "high",
            "--tag",
            "admin",
            "--tag",
            "travel",
        ],
    );
    let id = id.trim();
    ok(ws, &["task", "add", "Water the plants"]);

    let tasks = json(ws, &["task", "list", "--json"]);
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["id"], id);
    assert_eq!(tasks[0]["title"], "Renew passport");
    assert_eq!(tasks[0]["status"], "todo");
    assert_eq!(tasks[0]["priority"], "high");
    assert_eq!(tasks[0]["due"], "2026-12-24");
    assert_eq!(tasks[0]["tags"], serde_json::json!(["admin", "travel"]));

    // Any unique prefix names a task.
    ok(ws, &["task", "edit", &id[..20], "--description", "Photos first", "--project", "life", "--no-due"]);
    // ...and so does a unique suffix: ids made close together share their time prefix.
    ok(ws, &["task", "done", &id[id.len() - 6..].to_ascii_lowercase()]);
    let shown = json(ws, &["task", "show", id, "--json"]);
    assert_eq!(shown["task"]["status"], "done");
    assert_eq!(shown["task"]["description"], "Photos first");
    assert_eq!(shown["task"]["project"], "life");
    assert!(shown["task"].get("due").is_none());
    let kinds: Vec<&str> =
        shown["history"].as_array().unwrap().iter().map(|e| e["envelope"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["task.created", "task.updated", "task.completed"]);

    assert_eq!(json(ws, &["task", "list", "--json"]).as_array().unwrap().len(), 1, "done tasks are hidden");
    assert_eq!(json(ws, &["task", "list", "--json", "--all"]).as_array().unwrap().len(), 2);
    ok(ws, &["task", "rm", id]);
    assert_eq!(json(ws, &["task", "list", "--json", "--all"]).as_array().unwrap().len(), 1);

    let human = ok(ws, &["task", "list"]);
    assert!(human.contains("Water the plants") && human.contains("STATUS"), "{human}");
}

#[test]
fn notes_from_text_and_file() {
    let dir = new_workspace();
    let ws = dir.path();
    let file = ws.join("draft.md");
    std::fs::write(&file, "# Heading\n\nBody from a file.\n").unwrap();
    ok(ws, &["note", "add", "Inline", "--body", "Short body"]);
    ok(ws, &["note", "add", "From file", "--file", file.to_str().unwrap(), "--tag", "draft"]);
    let notes = json(ws, &["note", "list", "--json"]);
    let notes = notes.as_array().unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["body"], "Short body");
    assert_eq!(notes[1]["body"], "# Heading\n\nBody from a file.\n");
    assert_eq!(notes[1]["tags"], serde_json::json!(["draft"]));
}

#[test]
fn log_lists_envelopes_with_filters() {
    let dir = new_workspace();
    let ws = dir.path();
    let id = ok(ws, &["task", "add", "One"]);
    ok(ws, &["task", "done", id.trim()]);
    ok(ws, &["note", "add", "N"]);
    let all = json(ws, &["log", "--json"]);
    let kinds: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["envelope"]["kind"].as_str().unwrap()).collect();
    // A task's bucket and a note's own document are registered (by the system) as the first
    // record goes in.
    assert_eq!(
        kinds,
        ["workspace.created", "document.created", "task.created", "task.completed", "document.created", "note.created"]
    );
    let first_task = &all[2]["envelope"];
    for field in ["v", "id", "kind", "actor", "device", "time", "correlation", "subject"] {
        assert!(first_task.get(field).is_some(), "envelope lacks {field}: {first_task}");
    }
    assert_eq!(first_task["actor"], "user");
    assert_eq!(json(ws, &["log", "--json", "--kind", "task"]).as_array().unwrap().len(), 2);
    assert_eq!(json(ws, &["log", "--json", "--kind", "task.completed"]).as_array().unwrap().len(), 1);
    assert_eq!(json(ws, &["log", "--json", "--actor", "system"]).as_array().unwrap().len(), 3);
    assert_eq!(json(ws, &["log", "--json", "--task", id.trim()]).as_array().unwrap().len(), 2);
    assert_eq!(json(ws, &["log", "--json", "--limit", "1"])[0]["envelope"]["kind"], "note.created");
}

#[test]
fn status_reports_ids_counts_and_size() {
    let dir = new_workspace();
    let ws = dir.path();
    ok(ws, &["task", "add", "One"]);
    let status = json(ws, &["status", "--json"]);
    assert_eq!(status["workspace_id"].as_str().unwrap().len(), 26);
    assert_eq!(status["device_id"].as_str().unwrap().len(), 64);
    assert!(status["storage_bytes"].as_u64().unwrap() > 0);
    let tasks = status["documents"].as_array().unwrap().iter().find(|d| d["name"] == "tasks/*").unwrap();
    assert_eq!(tasks["records"], 1);
    assert_eq!(tasks["events"], 1);
}

#[test]
fn import_commits_every_line_or_nothing() {
    let dir = new_workspace();
    let ws = dir.path();
    let file = ws.join("import.jsonl");
    let mut lines: Vec<String> = (0..2500)
        .map(|i| format!(r#"{{"type":"task","title":"Imported {i}","priority":"low","tags":["bulk"]}}"#))
        .collect();
    lines.push(r#"{"type":"note","title":"Imported note","body":"text"}"#.into());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = ok(ws, &["import", file.to_str().unwrap()]);
    assert!(out.contains("imported 2501 events"), "{out}");
    assert_eq!(json(ws, &["task", "list", "--json"]).as_array().unwrap().len(), 2500);
    assert_eq!(json(ws, &["note", "list", "--json"]).as_array().unwrap().len(), 1);
    // The import folded its tail into snapshots, and `status` counts every event.
    let status = json(ws, &["status", "--json"]);
    let tasks = status["documents"].as_array().unwrap().iter().find(|d| d["name"] == "tasks/*").unwrap().clone();
    assert_eq!((tasks["tail_chunks"].as_u64(), tasks["events"].as_u64()), (Some(0), Some(2500)), "{tasks}");
    assert_eq!(tasks["records"], 2500);
    // Every imported task is its own event, with one correlation id for the whole import.
    let events = json(ws, &["log", "--json", "--kind", "task.created"]);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 2500);
    let correlation = &events[0]["envelope"]["correlation"];
    assert!(events.iter().all(|e| &e["envelope"]["correlation"] == correlation));

    let bad = ws.join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"task\",\"title\":\"fine\"}\n{\"type\":\"task\",\"titel\":\"typo\"}\n").unwrap();
    let output = adiuva(ws, &["import", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.jsonl:2"), "the error names the line: {stderr}");
    assert_eq!(json(ws, &["task", "list", "--json"]).as_array().unwrap().len(), 2500, "nothing imported");
}

/// A file of `tasks` task lines and one note line.
fn import_file(dir: &Path, tasks: usize) -> std::path::PathBuf {
    let file = dir.join("import.jsonl");
    let mut lines: Vec<String> =
        (0..tasks).map(|i| format!(r#"{{"type":"task","title":"Imported {i}","tags":["bulk"]}}"#)).collect();
    lines.push(r#"{"type":"note","title":"Imported note","body":"text"}"#.into());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

fn task_titles(workspace: &Path) -> Vec<String> {
    let tasks = json(workspace, &["task", "list", "--json"]);
    let mut titles: Vec<String> =
        tasks.as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect();
    titles.sort();
    titles
}

#[test]
fn importing_the_same_file_again_adds_nothing() {
    let dir = new_workspace();
    let ws = dir.path();
    ok(ws, &["task", "add", "By hand"]);
    let file = import_file(ws, 10);
    ok(ws, &["import", file.to_str().unwrap()]);
    let once = task_titles(ws);
    assert_eq!(once.len(), 11);
    let out = ok(ws, &["import", file.to_str().unwrap()]);
    assert!(out.contains("imported 0 events") && out.contains("11 were already imported"), "{out}");
    assert_eq!(task_titles(ws), once);
    assert_eq!(json(ws, &["note", "list", "--json"]).as_array().unwrap().len(), 1);
    assert_eq!(json(ws, &["log", "--json", "--kind", "task.created"]).as_array().unwrap().len(), 11);
    // Another file with the same lines is another import.
    let other = ws.join("other.jsonl");
    std::fs::write(&other, std::fs::read_to_string(&file).unwrap() + "\n").unwrap();
    ok(ws, &["import", other.to_str().unwrap()]);
    assert_eq!(task_titles(ws).len(), 21);
}

/// An import killed (SIGKILL) at moments spread over its run, then run again to the end: every
/// line is there exactly once.
#[test]
fn an_interrupted_import_run_again_imports_every_line_once() {
    const TASKS: usize = 3000;
    let mut interrupted_midway = 0;
    for delay_ms in [150, 400, 700, 1000, 1500, 2500] {
        let dir = new_workspace();
        let ws = dir.path();
        let file = import_file(ws, TASKS);
        let mut child = command(ws, &["import", file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let kept = task_titles(ws).len();
        if kept > 0 && kept < TASKS {
            interrupted_midway += 1;
        }
        ok(ws, &["import", file.to_str().unwrap()]);
        let titles = task_titles(ws);
        let mut expected: Vec<String> = (0..TASKS).map(|i| format!("Imported {i}")).collect();
        expected.sort();
        assert_eq!(titles, expected, "killed after {delay_ms} ms with {kept} tasks kept");
        assert_eq!(json(ws, &["note", "list", "--json"]).as_array().unwrap().len(), 1);
    }
    eprintln!("{interrupted_midway} kills left a partial import");
}

#[test]
fn a_lost_witness_is_refused_until_reset_witness() {
    let dir = new_workspace();
    let ws = dir.path();
    ok(ws, &["task", "add", "Kept"]);
    std::fs::remove_file(ws.join("witness")).unwrap();
    let output = adiuva(ws, &["task", "list"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("error[store.witness_missing]"), "{stderr}");
    assert!(stderr.contains("adiuva reset-witness"), "the error says the way out: {stderr}");
    ok(ws, &["reset-witness"]);
    assert!(ws.join("witness").exists());
    assert_eq!(json(ws, &["task", "list", "--json"]).as_array().unwrap().len(), 1);
}

/// A workspace written before notes had documents of their own and tasks were spread over
/// buckets: `adiuva upgrade` moves its notes and tasks out, and `note list`, `task list` and the
/// users' events read the same before and after.
#[test]
fn upgrade_moves_notes_into_their_own_documents_and_lists_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/workspace-2026-12-notes"), ws);
    let run = |args: &[&str]| {
        let output = command(ws, args).env("ADIUVA_PASSPHRASE", "fixture passphrase v2").output().unwrap();
        assert!(output.status.success(), "adiuva {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let notes = run(&["note", "list", "--json"]);
    let user_log = run(&["log", "--json", "--actor", "user"]);
    let tasks = run(&["task", "list", "--all", "--json"]);
    let moved = 3 + serde_json::from_str::<Value>(&tasks).unwrap().as_array().unwrap().len();
    assert!(run(&["upgrade"]).contains(&format!("{moved} records moved")), "the fixture's three notes and its tasks");
    assert_eq!(run(&["upgrade"]), "the workspace is current\n");
    assert_eq!(run(&["note", "list", "--json"]), notes);
    assert_eq!(run(&["task", "list", "--all", "--json"]), tasks);
    assert_eq!(run(&["log", "--json", "--actor", "user"]), user_log);
    let status: Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    let own = status["documents"].as_array().unwrap().iter().find(|d| d["name"] == "notes/*").unwrap().clone();
    assert_eq!(own["records"], 3, "{own}");
}

#[test]
fn errors_are_typed_and_clear() {
    let dir = new_workspace();
    let ws = dir.path();
    ok(ws, &["task", "add", "Secret"]);

    let wrong = Command::new(env!("CARGO_BIN_EXE_adiuva"))
        .args(["--workspace", ws.to_str().unwrap(), "task", "list"])
        .env("ADIUVA_PASSPHRASE", "not it")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("error[key.wrong_passphrase]"));

    let missing = tempfile::tempdir().unwrap();
    let output = adiuva(&missing.path().join("nothing"), &["task", "list"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[workspace.not_found]"));

    let output = adiuva(ws, &["init"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[workspace.exists]"));

    let output = adiuva(ws, &["task", "done", "ZZZZ"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[record.not_found]"));

    let output = adiuva(ws, &["task", "add", "   "]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("title cannot be empty"));
    assert_eq!(json(ws, &["task", "list", "--json"]).as_array().unwrap().len(), 1);
}

#[test]
fn schema_export_writes_every_contract_type() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("schema");
    ok(dir.path(), &["schema", "--out", out.to_str().unwrap()]);
    let envelope: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("Envelope.schema.json")).unwrap()).unwrap();
    assert!(envelope["properties"]["actor"].is_object());
    assert!(out.join("Task.schema.json").exists() && out.join("BillingTier.schema.json").exists());
}

#[test]
fn init_refuses_a_short_passphrase_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let output = adiuva_with(dir.path(), "seven c", &["init"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[key.passphrase_too_short]"), "{stderr}");
    // Nothing half-made is left behind: a good passphrase then creates the workspace.
    let output = adiuva_with(dir.path(), "eight ch", &["init"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn upgrade_moves_an_older_workspace_and_then_finds_it_current() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/workspace-2026-12");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    // Its passphrase is not in NFKC ("ﬁ" is "fi"): as typed, and normalized, both open it.
    let passphrase = "fixture passphrase \u{FB01}ve \u{C5}";
    let upgrade = adiuva_with(dir.path(), passphrase, &["upgrade"]);
    let stdout = String::from_utf8_lossy(&upgrade.stdout);
    assert!(upgrade.status.success() && stdout.starts_with("upgraded: "), "{stdout}");
    let again = adiuva_with(dir.path(), "fixture passphrase five \u{C5}", &["upgrade"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), "the workspace is current\n");
    let list = adiuva_with(dir.path(), passphrase, &["task", "list", "--all", "--json"]);
    let tasks: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(tasks[0]["title"], "Fixture task");
}

fn copy_dir(from: &Path, to: &Path) {
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

#[test]
fn a_workspace_is_owner_only_and_a_shared_one_opens_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = new_workspace();
    let ws = dir.path();
    ok(ws, &["task", "add", "Private"]);
    let mut stack = vec![ws.to_owned()];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // Every file and directory, sled's own included: none is open to group or others.
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
        seen += 1;
    }
    assert!(seen >= 6, "{seen} entries");

    let output = adiuva(ws, &["task", "list"]);
    assert!(output.status.success() && output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::set_permissions(ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = adiuva(ws, &["task", "list"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("other users of this machine can access the workspace"), "{stderr}");
}

/// `recovery phrase` prints 12 words and adds the phrase's identity to the device list;
/// `device list`, `rename` (by an id prefix) and `remove` (which rotates the key) work on it,
/// and a device cannot remove itself.
#[test]
fn devices_are_listed_renamed_and_removed_with_a_key_rotation() {
    let dir = new_workspace();
    let ws = dir.path();
    let phrase = ok(ws, &["recovery", "phrase"]);
    assert_eq!(phrase.split_whitespace().count(), 12, "{phrase}");
    let devices = json(ws, &["device", "list", "--json"]);
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let me = devices.iter().find(|d| d["this_device"] == true).unwrap()["id"].as_str().unwrap().to_owned();
    let other = devices.iter().find(|d| d["this_device"] == false).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(ok(ws, &["device", "rename", &other[..8], "Old phrase"]).starts_with("renamed "));
    assert!(ok(ws, &["device", "list"]).contains("Old phrase"));
    let refused = adiuva(ws, &["device", "remove", &me]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("error[input.invalid]"));
    assert!(ok(ws, &["device", "remove", &other]).contains("epoch 2"));
    assert_eq!(json(ws, &["status", "--json"])["key_epoch"], 2);
    let listed = ok(ws, &["device", "list"]);
    assert!(listed.contains("removed") && listed.contains("this device"), "{listed}");
    let missing = adiuva(ws, &["device", "rename", "ffffffff", "x"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("error[device.not_found]"));
}

/// `search` finds by words and by meaning at once after each write, filters by collection and
/// tag, and answers in JSON; `index rebuild` embeds nothing that did not change; without the
/// model a search goes by words and says so, and a search by meaning fails with its code.
#[test]
fn search_finds_records_by_words_and_meaning_and_index_rebuilds() {
    let dir = new_workspace();
    let ws = dir.path();
    let passport =
        ok(ws, &["note", "add", "Passport", "--body", "Renew it before the trip to Lisbon.", "--tag", "travel"]);
    let passport = passport.trim();
    let bread = ok(ws, &["task", "add", "Bake sourdough", "--description", "Feed the rye starter first"]);
    let bread = bread.trim();
    let hits = json(ws, &["search", "passport", "--json"]);
    assert_eq!(hits[0]["id"], passport);
    assert_eq!(hits[0]["collection"], "notes");
    assert_eq!(hits[0]["title"], "Passport");
    assert!(
        hits[0]["snippet"].as_str().unwrap().contains("**Passport**")
            || hits[0]["snippet"].as_str().unwrap().contains("**passport**")
    );
    let hits = json(ws, &["search", "travel documents for going abroad", "--mode", "vector", "--json"]);
    assert_eq!(hits[0]["id"], passport);
    let hits = json(ws, &["search", "bread", "--collection", "tasks", "--json"]);
    assert_eq!(hits.as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect::<Vec<_>>(), [bread]);
    assert_eq!(json(ws, &["search", "passport", "--tag", "kitchen", "--json"]), serde_json::json!([]));
    let table = ok(ws, &["search", "rye"]);
    assert!(table.contains("Bake sourdough") && table.contains("**rye**"), "{table}");

    // Deleted: gone from the very next search.
    ok(ws, &["task", "rm", bread]);
    assert!(!ok(ws, &["search", "sourdough", "--json"]).contains(bread));

    let rebuilt = ok(ws, &["index", "rebuild"]);
    assert!(rebuilt.contains("indexed 1 records") && rebuilt.contains("0 chunks embedded"), "{rebuilt}");
    let status = json(ws, &["index", "status", "--json"]);
    assert_eq!((status["records"].as_u64(), status["vectors"].as_u64()), (Some(1), Some(1)));

    // Bad input, and no model.
    for (args, code) in [
        (vec!["search", "   "], "input.invalid"),
        (vec!["search", "x", "--collection", "nothing"], "input.invalid"),
        (vec!["search", "x", "--limit", "0"], "input.invalid"),
    ] {
        let output = adiuva(ws, &args);
        assert!(String::from_utf8_lossy(&output.stderr).starts_with(&format!("error[{code}]")), "{args:?}");
    }
    let no_model =
        command(ws, &["search", "passport", "--json"]).env("ADIUVA_EMBEDDING_MODEL", ws.join("none")).output().unwrap();
    assert!(no_model.status.success());
    assert!(String::from_utf8_lossy(&no_model.stderr).contains("searched by words only"));
    assert!(String::from_utf8_lossy(&no_model.stdout).contains(passport));
    let no_model = command(ws, &["search", "passport", "--mode", "vector"])
        .env("ADIUVA_EMBEDDING_MODEL", ws.join("none"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no_model.stderr).starts_with("error[search.model_missing]"));
}
