//! The daemon as a real process: started, stopped, signalled and killed like a person's or a
//! service manager's would be, with the real command line and raw HTTP clients against it.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const PASSPHRASE: &str = "marker-passphrase-5b1e0c";

fn adiuva_command(workspace: &Path, args: &[&str]) -> Command {
    common::adiuva_command(workspace, PASSPHRASE, args)
}

fn adiuva(workspace: &Path, args: &[&str]) -> Output {
    adiuva_command(workspace, args).output().unwrap()
}

fn ok(workspace: &Path, args: &[&str]) -> String {
    let output = adiuva(workspace, args);
    assert!(output.status.success(), "adiuva {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn new_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "--device-name", "test laptop"]);
    dir
}

/// What `daemon.json` says.
fn announced(workspace: &Path) -> Option<Value> {
    std::fs::read(workspace.join("daemon.json")).ok().map(|bytes| serde_json::from_slice(&bytes).unwrap())
}

fn address(workspace: &Path) -> String {
    announced(workspace).unwrap()["address"].as_str().unwrap().to_owned()
}

fn token(workspace: &Path) -> String {
    announced(workspace).unwrap()["token"].as_str().unwrap().to_owned()
}

/// A daemon in the foreground, as a service manager runs it; it answers once this returns.
fn run_daemon(workspace: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(workspace.join("foreground.log")).unwrap();
    let mut args = vec!["daemon", "run"];
    args.extend_from_slice(extra);
    let mut child = adiuva_command(workspace, &args).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon exited: {status}: {}",
                std::fs::read_to_string(workspace.join("foreground.log")).unwrap()
            );
        }
        if let Some(file) = announced(workspace)
            && file["pid"] == child.id()
            && TcpStream::connect(file["address"].as_str().unwrap()).is_ok()
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap().success());
}

/// One HTTP/1.0 request (the connection closes after the answer); `headers` replace the
/// defaults of the same name.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&request(addr, method, path, headers, body)).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    all.insert("host".into(), addr.into());
    all.insert("content-type".into(), "application/json".into());
    all.insert("content-length".into(), body.len().to_string());
    for (name, value) in headers {
        all.insert(name.to_ascii_lowercase(), (*value).to_owned());
    }
    let mut out = format!("{method} {path} HTTP/1.0\r\n");
    for (name, value) in all.iter().filter(|(_, value)| !value.is_empty()) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A request with the daemon's token.
fn api(workspace: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let bearer = format!("Bearer {}", token(workspace));
    http(&address(workspace), method, path, &[("authorization", &bearer)], body)
}

/// Follows `/v1/events` from `cursor` until `count` events arrived; returns them with the id
/// (cursor) of each.
fn follow(workspace: &Path, cursor: Option<&str>, count: usize) -> Vec<(String, Value)> {
    let bearer = format!("Bearer {}", token(workspace));
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(cursor) = cursor {
        headers.push(("last-event-id", cursor));
    }
    let addr = address(workspace);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.write_all(&request(&addr, "GET", "/v1/events", &headers, b"")).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "{line}");
    let (mut events, mut id, mut data) = (Vec::new(), String::new(), String::new());
    // Not a timed assertion: a safety net, so a stream that stalls fails the test instead of
    // hanging it (keep-alive comments arrive every 15 s, so a read timeout would never fire).
    let started = std::time::Instant::now();
    while events.len() < count {
        assert!(started.elapsed() < Duration::from_secs(300), "only {} of {count} events arrived", events.len());
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended after {} events", events.len());
        let line = line.trim_end();
        if let Some(value) = line.strip_prefix("id: ") {
            id = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = value.to_owned();
        } else if line.is_empty() && !data.is_empty() {
            events.push((id.clone(), serde_json::from_str(&data).unwrap()));
            data.clear();
        }
    }
    events
}

fn event_ids(events: &[(String, Value)]) -> Vec<String> {
    events.iter().map(|(_, event)| event["envelope"]["id"].as_str().unwrap().to_owned()).collect()
}

/// stdout, stderr and exit code of a command, with the one line that legitimately differs
/// between two runs (the store's size on disk) left out.
fn observed(workspace: &Path, args: &[&str]) -> (String, String, Option<i32>) {
    let output = adiuva(workspace, args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stdout = match serde_json::from_str::<Value>(&stdout) {
        Ok(mut value) if value.get("storage_bytes").is_some() => {
            value["storage_bytes"] = Value::Null;
            value.to_string()
        }
        _ => stdout.lines().filter(|line| !line.starts_with("storage ")).collect::<Vec<_>>().join("\n"),
    };
    (stdout, String::from_utf8(output.stderr).unwrap(), output.status.code())
}

#[test]
fn every_command_prints_the_same_through_the_daemon_as_without() {
    let dir = new_workspace();
    let ws = dir.path();
    let first =
        ok(ws, &["task", "add", "Renew passport", "--due", "2026-12-24", "--priority", "high", "--tag", "admin"]);
    let first = first.trim().to_owned();
    ok(ws, &["task", "add", "Water the plants", "--tag", "home"]);
    ok(ws, &["task", "edit", &first, "--description", "Photos first", "--project", "life"]);
    let second = ok(ws, &["task", "add", "Call the bank"]).trim().to_owned();
    ok(ws, &["task", "done", &second]);
    ok(ws, &["note", "add", "Groceries", "--body", "Eggs\nMilk"]);
    let file = ws.join("import.jsonl");
    std::fs::write(&file, "{\"type\":\"task\",\"title\":\"Imported\",\"tags\":[\"bulk\"]}\n").unwrap();
    ok(ws, &["import", file.to_str().unwrap()]);
    // The search index stored once, so no run below reports building it.
    ok(ws, &["index", "rebuild"]);

    let reads: Vec<Vec<&str>> = vec![
        vec!["task", "list"],
        vec!["task", "list", "--json"],
        vec!["task", "list", "--all", "--json"],
        vec!["task", "list", "--tag", "admin"],
        vec!["task", "show", &first],
        vec!["task", "show", &first[..20], "--json"],
        vec!["note", "list"],
        vec!["note", "list", "--json"],
        vec!["log"],
        vec!["log", "--json"],
        vec!["log", "--json", "--kind", "task", "--actor", "user", "--limit", "2"],
        vec!["log", "--task", &first],
        vec!["status"],
        vec!["status", "--json"],
        vec!["search", "passport"],
        vec!["search", "groceries milk", "--json"],
        vec!["search", "plants", "--mode", "text", "--tag", "home", "--json"],
        vec!["index", "status", "--json"],
        // Failures: the same code, message and exit status.
        vec!["task", "done", "ZZZZ"],
        vec!["task", "show", "0"],
        vec!["task", "add", "   "],
        vec!["task", "edit", &first],
        vec!["log", "--task", "nothing-like-it"],
        vec!["init"],
        vec!["import", "/nonexistent/file.jsonl"],
        vec!["search", " "],
    ];
    let direct: Vec<_> = reads.iter().map(|args| observed(ws, args)).collect();
    let started = ok(ws, &["daemon", "start"]);
    assert!(started.contains("daemon started"), "{started}");
    for (args, direct) in reads.iter().zip(&direct) {
        assert_eq!(&observed(ws, args), direct, "adiuva {args:?} differs through the daemon");
    }

    // Writes go through the daemon (it holds the lock: they could not run otherwise) and print
    // what they print without it.
    let id = ok(ws, &["task", "add", "Through the daemon", "--tag", "x"]).trim().to_owned();
    assert_eq!(id.len(), 26);
    assert_eq!(ok(ws, &["task", "edit", &id, "--no-due", "--priority", "low"]), format!("updated {id}\n"));
    assert_eq!(ok(ws, &["task", "done", &id[id.len() - 6..]]), format!("done {id}\n"));
    let history = ok(ws, &["log", "--json", "--task", &id]);
    let kinds: Vec<String> = serde_json::from_str::<Vec<Value>>(&history)
        .unwrap()
        .iter()
        .map(|e| e["envelope"]["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["task.created", "task.updated", "task.completed"]);
    // Every write is in the very next search through the daemon, and a deletion is gone from it.
    assert!(ok(ws, &["search", "through the daemon", "--json"]).contains(&id));
    assert_eq!(ok(ws, &["task", "rm", &id]), format!("deleted {id}\n"));
    assert!(!ok(ws, &["search", "through the daemon", "--json"]).contains(&id));
    let note_file = ws.join("note.md");
    std::fs::write(&note_file, "# From a file\n").unwrap();
    assert_eq!(ok(ws, &["note", "add", "Filed", "--file", note_file.to_str().unwrap()]).trim().len(), 26);
    let bad = ws.join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"task\",\"title\":\"fine\"}\n{\"type\":\"task\",\"titel\":\"typo\"}\n").unwrap();
    let (_, stderr, code) = observed(ws, &["import", bad.to_str().unwrap()]);
    assert!(stderr.starts_with("error[input.invalid]: ") && stderr.contains("bad.jsonl:2"), "{stderr}");
    assert_eq!(code, Some(1));
    let many = ws.join("many.jsonl");
    let lines: Vec<String> = (0..2500).map(|i| format!("{{\"type\":\"task\",\"title\":\"Bulk {i}\"}}")).collect();
    std::fs::write(&many, lines.join("\n")).unwrap();
    assert!(ok(ws, &["import", many.to_str().unwrap()]).starts_with("imported 2500 events from "));
    assert_eq!(ok(ws, &["compact"]), "compacted\n");

    let status: Value = serde_json::from_str(&ok(ws, &["daemon", "status", "--json"])).unwrap();
    assert_eq!(status["address"], address(ws));
    assert!(status["resident_bytes"].as_u64().unwrap() > 0);
    assert!(
        status["documents_loaded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.starts_with("tasks/")))
    );
    let after_daemon = ok(ws, &["task", "list", "--all", "--json"]);
    assert_eq!(ok(ws, &["daemon", "stop"]), "daemon stopped\n");
    assert!(announced(ws).is_none(), "the address file is removed");
    assert_eq!(ok(ws, &["task", "list", "--all", "--json"]), after_daemon, "the same without the daemon");
    let (_, stderr, code) = observed(ws, &["daemon", "status"]);
    assert!(stderr.starts_with("error[daemon.not_running]"), "{stderr}");
    assert_eq!(code, Some(1));
}

#[test]
fn the_event_stream_delivers_each_commit_once_in_order_across_reconnects() {
    let dir = new_workspace();
    let ws = dir.path();
    let mut daemon = run_daemon(ws, &[]);
    // Before anything else: the workspace's own first event.
    let before = follow(ws, None, 1);
    let adders: Vec<_> = (0..3)
        .map(|client| {
            let ws = ws.to_owned();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| ok(&ws, &["task", "add", &format!("client {client} task {i}")]).trim().to_owned())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Follow while the tasks are added, drop the connection halfway, resume from the last id
    // seen once they are all in.
    let first_half = follow(ws, Some(&before[0].0), 15);
    for adder in adders {
        adder.join().unwrap();
    }
    // The workspace's creation, thirty tasks, and the registration of each bucket they went to.
    let logged: Vec<Value> = serde_json::from_str(&ok(ws, &["log", "--json"])).unwrap();
    assert_eq!(logged.iter().filter(|e| e["envelope"]["kind"] == "task.created").count(), 30);
    let second_half = follow(ws, Some(&first_half.last().unwrap().0), logged.len() - 16);
    let mut seen: Vec<(String, Value)> = before;
    seen.extend(first_half);
    seen.extend(second_half);
    let ids = event_ids(&seen);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    // Every event the log holds, exactly once.
    let logged: BTreeSet<String> = logged.iter().map(|e| e["envelope"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), logged);
    // Each document's events arrive in its order, numbered without a gap.
    let mut per_document: BTreeMap<String, u64> = BTreeMap::new();
    for (_, event) in &seen {
        let next = per_document.entry(event["document"].as_str().unwrap().to_owned()).or_default();
        *next += 1;
        assert_eq!(event["seq"].as_u64(), Some(*next), "{event}");
    }
    // A cursor this log does not reach is refused, typed.
    let (status, body) = api(ws, "GET", "/v1/events?cursor=tasks:999", b"");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("input.invalid")));
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn requests_without_the_token_or_from_elsewhere_are_refused_and_change_nothing() {
    let dir = new_workspace();
    let ws = dir.path();
    let mut daemon = run_daemon(ws, &["-vv"]);
    let addr = address(ws);
    let token = token(ws);
    let bearer = format!("Bearer {token}");
    let body = br#"{"title":"should not exist"}"#;
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let refusals: Vec<(Headers, u16, &str)> = vec![
        (vec![], 401, "api.unauthorized"),
        (vec![("authorization", "Bearer 0000")], 401, "api.unauthorized"),
        (vec![("authorization", token.as_str())], 401, "api.unauthorized"),
        (vec![("authorization", &bearer), ("host", "evil.example")], 403, "api.forbidden"),
        (vec![("authorization", &bearer), ("host", "evil.example:80")], 403, "api.forbidden"),
        (vec![("authorization", &bearer), ("origin", "http://evil.example")], 403, "api.forbidden"),
        (vec![("authorization", &bearer), ("origin", "null")], 403, "api.forbidden"),
    ];
    for (headers, status, code) in &refusals {
        let (got, answer) = http(&addr, "POST", "/v1/tasks", headers, body);
        assert_eq!((got, answer["error"]["code"].as_str()), (*status, Some(*code)), "{headers:?}");
    }
    let own_origin = format!("http://{addr}");
    let (status, _) = http(&addr, "GET", "/v1/tasks", &[("authorization", &bearer), ("origin", &own_origin)], b"");
    assert_eq!(status, 200, "the daemon's own origin is fine");
    let (status, tasks) = api(ws, "GET", "/v1/tasks?all=true", b"");
    assert_eq!((status, tasks), (200, json!([])), "nothing was created");

    // The token file is owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.join("daemon.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Secrets stay out of the log, even at debug level: the passphrase, the token, a record's
    // text.
    let marker = "marker-title-9f3a";
    ok(ws, &["task", "add", marker, "--description", marker]);
    ok(ws, &["task", "list", "--tag", marker]);
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    let log = std::fs::read_to_string(ws.join("foreground.log")).unwrap();
    assert!(log.contains("daemon listening") && log.contains("request"), "the log is written: {log}");
    for secret in [PASSPHRASE, token.as_str(), marker] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
}

#[test]
fn bad_input_gets_a_typed_client_error_and_changes_nothing() {
    let dir = new_workspace();
    let ws = dir.path();
    let note = ok(ws, &["note", "add", "A note"]).trim().to_owned();
    let mut daemon = run_daemon(ws, &[]);
    let events_before = api(ws, "GET", "/v1/log", b"").1.as_array().unwrap().len();
    let huge = format!("{{\"title\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v1/tasks".into(), b"{not json".to_vec(), 400, "input.invalid"),
        ("POST", "/v1/tasks".into(), br#"{"title":"x","colour":"red"}"#.to_vec(), 400, "input.invalid"),
        ("POST", "/v1/tasks".into(), br#"{"title":"   "}"#.to_vec(), 400, "input.invalid"),
        ("POST", "/v1/tasks".into(), br#"{"title":"x","due":"someday"}"#.to_vec(), 400, "input.invalid"),
        ("POST", "/v1/tasks".into(), br#"[1,2]"#.to_vec(), 400, "input.invalid"),
        ("POST", "/v1/tasks".into(), huge.into_bytes(), 413, "input.too_large"),
        ("PATCH", format!("/v1/tasks/{note}"), br#"{"title":"y"}"#.to_vec(), 404, "record.not_found"),
        ("GET", format!("/v1/tasks/{note}"), vec![], 404, "record.not_found"),
        ("GET", "/v1/tasks/%FF%FE".into(), vec![], 400, "input.invalid"),
        ("POST", "/v1/tasks/ZZZZ/done".into(), vec![], 404, "record.not_found"),
        ("DELETE", "/v1/tasks/..%2F..".into(), vec![], 404, "record.not_found"),
        ("GET", "/v1/tasks?all=maybe".into(), vec![], 400, "input.invalid"),
        ("GET", "/v1/log?limit=-1".into(), vec![], 400, "input.invalid"),
        ("GET", "/v1/log?unknown=1".into(), vec![], 400, "input.invalid"),
        ("POST", "/v1/import?source=x".into(), b"{\"type\":\"spaceship\"}\n".to_vec(), 400, "input.invalid"),
        ("POST", "/v1/import".into(), vec![], 400, "input.invalid"),
        ("GET", "/v1/nothing-here".into(), vec![], 404, "api.not_found"),
        ("PUT", "/v1/tasks".into(), vec![], 405, "api.not_found"),
    ];
    for (method, path, body, status, code) in &cases {
        let (got, answer) = api(ws, method, path, body);
        assert_eq!((got, answer["error"]["code"].as_str()), (*status, Some(*code)), "{method} {path}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let events_after = api(ws, "GET", "/v1/log", b"").1.as_array().unwrap().len();
    assert_eq!(events_after, events_before, "nothing was committed");
    signal(&daemon, "INT");
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn the_openapi_document_validates_and_every_route_answers_as_documented() {
    let dir = new_workspace();
    let ws = dir.path();
    let id = ok(ws, &["task", "add", "Documented"]).trim().to_owned();
    // A second device to rename and remove: the recovery phrase's identity.
    ok(ws, &["recovery", "phrase"]);
    let devices: Vec<Value> = serde_json::from_str(&ok(ws, &["device", "list", "--json"])).unwrap();
    let device = devices.iter().find(|d| d["this_device"] == false).unwrap()["id"].as_str().unwrap().to_owned();
    // The language model routes answer from the local model: no network needed.
    let gguf = std::env::var("ADIUVA_SMOLLM2_GGUF").expect("ADIUVA_SMOLLM2_GGUF (scripts/test installs the model)");
    ok(ws, &["llm", "add", "local", "--kind", "local", "--model", "smollm2", "--model-path", &gguf]);
    let new_provider = serde_json::to_vec(
        &serde_json::json!({"name": "local2", "kind": "local", "model": "smollm2", "model_path": gguf}),
    )
    .unwrap();
    let mut daemon = run_daemon(ws, &[]);
    let (status, document) = api(ws, "GET", "/v1/openapi.json", b"");
    assert_eq!(status, 200);
    let file = ws.join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let validated = Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    assert!(
        validated.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    // A sample request for each operation; the answer's status must be one it documents.
    let samples: BTreeMap<(&str, &str), (&str, Vec<u8>)> = BTreeMap::from([
        (("post", "/v1/tasks"), ("/v1/tasks", br#"{"title":"Sample","tags":["a"]}"#.to_vec())),
        (("get", "/v1/tasks"), ("/v1/tasks?all=true&tag=a", vec![])),
        (("get", "/v1/tasks/{id}"), ("/v1/tasks/ID", vec![])),
        (("patch", "/v1/tasks/{id}"), ("/v1/tasks/ID", br#"{"due":null,"status":"in_progress"}"#.to_vec())),
        (("post", "/v1/tasks/{id}/done"), ("/v1/tasks/ID/done", vec![])),
        (("post", "/v1/notes"), ("/v1/notes", br#"{"title":"N","body":"b"}"#.to_vec())),
        (("get", "/v1/notes"), ("/v1/notes", vec![])),
        (("get", "/v1/log"), ("/v1/log?kind=task&actor=user&task=ID&limit=5", vec![])),
        (("get", "/v1/status"), ("/v1/status", vec![])),
        (("get", "/v1/sync"), ("/v1/sync", vec![])),
        (("post", "/v1/sync"), ("/v1/sync", vec![])),
        (("post", "/v1/import"), ("/v1/import?source=sample.jsonl", b"{\"type\":\"note\",\"title\":\"I\"}\n".to_vec())),
        (("post", "/v1/compact"), ("/v1/compact", vec![])),
        (("get", "/v1/daemon"), ("/v1/daemon", vec![])),
        (("get", "/v1/openapi.json"), ("/v1/openapi.json", vec![])),
        (("delete", "/v1/tasks/{id}"), ("/v1/tasks/ID", vec![])),
        (("post", "/v1/daemon/stop"), ("/v1/daemon/stop", vec![])),
        (("get", "/v1/devices"), ("/v1/devices", vec![])),
        (("patch", "/v1/devices/{id}"), ("/v1/devices/DEVICE", br#"{"name":"Renamed"}"#.to_vec())),
        (("delete", "/v1/devices/{id}"), ("/v1/devices/DEVICE", vec![])),
        (("post", "/v1/llm/providers"), ("/v1/llm/providers", new_provider)),
        (("get", "/v1/llm/providers"), ("/v1/llm/providers", vec![])),
        (("delete", "/v1/llm/providers/{name}"), ("/v1/llm/providers/local2", vec![])),
        (("put", "/v1/llm/chain"), ("/v1/llm/chain", br#"{"names":["local"]}"#.to_vec())),
        (("post", "/v1/llm/providers/{name}/test"), ("/v1/llm/providers/local/test", vec![])),
        (("get", "/v1/llm/providers/{name}/models"), ("/v1/llm/providers/local/models", vec![])),
        (("get", "/v1/llm/usage"), ("/v1/llm/usage", vec![])),
        (("post", "/v1/ask"), ("/v1/ask", br#"{"prompt":"Say hi","stream":true}"#.to_vec())),
        (("get", "/v1/search"), ("/v1/search?q=Documented&mode=text&collection=tasks&limit=5", vec![])),
        (("get", "/v1/index"), ("/v1/index", vec![])),
        (("post", "/v1/index/rebuild"), ("/v1/index/rebuild", vec![])),
        (("get", "/v1/peers"), ("/v1/peers", vec![])),
        (("put", "/v1/peers"), ("/v1/peers", br#"{"on":false}"#.to_vec())),
        (("post", "/v1/peers/live"), ("/v1/peers/live", br#"{"ticket":"not a peer ticket"}"#.to_vec())),
        (("delete", "/v1/peers/live/{id}"), ("/v1/peers/live/DEVICE", vec![])),
    ]);
    let mut documented = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let sampled: BTreeSet<(String, String)> = samples.keys().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let events = ("get".to_owned(), "/v1/events".to_owned());
    assert!(documented.remove(&events), "the event stream is documented (its test follows it)");
    assert_eq!(documented, sampled, "every documented operation has a sample here");
    // Deleting the sample task comes after the routes that use it, and stopping comes last.
    let mut order: Vec<_> = samples.iter().collect();
    order.sort_by_key(|((method, path), _)| (*path == "/v1/daemon/stop", *method == "delete"));
    for ((method, template), (path, body)) in order {
        let path = path.replace("DEVICE", &device).replace("ID", &id);
        let (status, answer) = api(ws, &method.to_ascii_uppercase(), &path, body);
        let responses = &document["paths"][*template][*method]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "{method} {path} answered {status}, not documented: {answer}"
        );
        // Routes whose success needs another party (a relay account, a listening peer): the
        // documented refusal, with its code.
        let refusal = match (*method, *template) {
            ("post", "/v1/sync") => Some((409, "sync.not_signed_in")),
            ("post", "/v1/peers/live") => Some((400, "peer.ticket_invalid")),
            ("delete", "/v1/peers/live/{id}") => Some((404, "device.not_found")),
            _ => None,
        };
        if let Some((expected, code)) = refusal {
            assert_eq!((status, answer["error"]["code"].as_str()), (expected, Some(code)), "{method} {path}: {answer}");
            continue;
        }
        assert!(status < 300, "{method} {path}: the sample succeeds: {answer}");
    }
    assert!(daemon.wait().unwrap().success(), "the stop route stops the daemon cleanly");
}

/// A first build of the search index embeds every text, minutes on a large workspace: the
/// daemon runs the model holding no lock, so writes and reads go on meanwhile, and its status
/// shows how far the build has got.
/// A workspace of `notes` notes of 80 words each, imported.
fn workspace_of_notes(notes: usize) -> tempfile::TempDir {
    let dir = new_workspace();
    let words =
        ["garden", "invoice", "river", "meeting", "passport", "tomato", "lecture", "engine", "violin", "harbor"];
    let lines: Vec<String> = (0..notes)
        .map(|n| {
            let body: Vec<&str> = (0..80).map(|i| words[(n * 7 + i * i * 3) % words.len()]).collect();
            json!({"type": "note", "title": format!("Note {n}"), "body": body.join(" ")}).to_string()
        })
        .collect();
    let file = dir.path().join("notes.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    ok(dir.path(), &["import", file.to_str().unwrap()]);
    dir
}

/// Waits while `until_done` runs for the daemon's status to show its first search index build
/// under way, less than half done; whether it did.
fn first_build_under_way(ws: &Path, notes: usize, until_done: impl Fn() -> bool) -> bool {
    while !until_done() {
        let (status, body) = api(ws, "GET", "/v1/daemon", b"");
        assert_eq!(status, 200);
        if body["indexing"]["done"].as_u64().is_some_and(|done| done < notes as u64 / 2)
            && body["indexing"]["total"] == notes
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn requests_go_on_while_the_first_search_index_build_embeds() {
    const NOTES: usize = 300;
    let dir = workspace_of_notes(NOTES);
    let ws = dir.path();
    let mut daemon = run_daemon(ws, &[]);
    let searching = {
        let ws = ws.to_owned();
        std::thread::spawn(move || ok(&ws, &["search", "harbor violin", "--json"]))
    };
    let under_way = first_build_under_way(ws, NOTES, || searching.is_finished());
    assert!(under_way, "the daemon answered its status while the build embedded, and showed its progress");
    let id = ok(ws, &["task", "add", "Written while the index builds"]).trim().to_owned();
    assert_eq!(ok(ws, &["task", "list", "--json"]).matches(&id).count(), 1);
    assert!(!searching.is_finished(), "the write and the read did not wait for the build");
    let hits: Vec<Value> = serde_json::from_str(&searching.join().unwrap()).unwrap();
    assert!(!hits.is_empty());
    // What was written during the build is in the next search.
    assert!(ok(ws, &["search", "written while the index builds", "--json"]).contains(&id));
    assert_eq!(ok(ws, &["daemon", "stop"]), "daemon stopped\n");
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn a_daemon_stopping_during_the_first_search_index_build_does_not_wait_for_it() {
    const NOTES: usize = 120;
    let dir = workspace_of_notes(NOTES);
    let ws = dir.path();
    let mut daemon = run_daemon(ws, &[]);
    assert!(first_build_under_way(ws, NOTES, || false));
    assert_eq!(ok(ws, &["daemon", "stop"]), "daemon stopped\n");
    assert!(daemon.wait().unwrap().success());
    // The daemon stopped mid-build, so it stored no vectors: a build now embeds every note
    // again (one that had waited for the build would find them all stored).
    let rebuilt = ok(ws, &["index", "rebuild"]);
    assert!(rebuilt.contains(", 0 reused") && !rebuilt.contains(": 0 chunks embedded"), "{rebuilt}");
}

#[test]
fn sigterm_stops_cleanly_with_every_acknowledged_commit_kept() {
    let dir = new_workspace();
    let ws = dir.path();
    let mut daemon = run_daemon(ws, &[]);
    let ids: Vec<String> = (0..20).map(|i| ok(ws, &["task", "add", &format!("Task {i}")]).trim().to_owned()).collect();
    signal(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    assert!(announced(ws).is_none(), "the address file is removed");
    // The lock is free: this opens the workspace itself.
    let tasks: Vec<Value> = serde_json::from_str(&ok(ws, &["task", "list", "--json"])).unwrap();
    let listed: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids);
}

#[test]
fn a_killed_daemon_leaves_nothing_that_blocks_the_next_command() {
    let dir = new_workspace();
    let ws = dir.path();
    assert!(ok(ws, &["daemon", "start"]).contains("daemon started"));
    assert!(ok(ws, &["daemon", "start"]).contains("already runs"), "two daemons never run at once");
    let id = ok(ws, &["task", "add", "Before the crash"]).trim().to_owned();
    let pid = announced(ws).unwrap()["pid"].as_u64().unwrap().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    while Path::new(&format!("/proc/{pid}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default().contains("State:\tZ")
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(announced(ws).is_some(), "the dead daemon's file is still there");
    // The next command finds the file stale, opens the workspace itself and removes it.
    assert!(ok(ws, &["task", "list"]).contains(&id));
    assert!(announced(ws).is_none(), "the stale file is removed");
    assert!(ok(ws, &["daemon", "start"]).contains("daemon started"));
    assert!(ok(ws, &["task", "list"]).contains(&id));
    assert_eq!(ok(ws, &["daemon", "stop"]), "daemon stopped\n");
}

/// A small deterministic generator: the kill moments vary from round to round, and a failure
/// can be replayed from the printed seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_commit() {
    let dir = new_workspace();
    let ws = dir.path().to_owned();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {seed}");
    let mut random = Lcg(seed);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    for round in 0..30 {
        let mut daemon = run_daemon(&ws, &[]);
        let (addr, bearer) = (address(&ws), format!("Bearer {}", token(&ws)));
        let clients: Vec<_> = (0..3)
            .map(|client| {
                let (addr, bearer) = (addr.clone(), bearer.clone());
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0.. {
                        let body = format!("{{\"title\":\"round {round} client {client} task {i}\"}}");
                        let Ok(mut stream) = TcpStream::connect(&addr) else { break };
                        let headers = [("authorization", bearer.as_str())];
                        if stream.write_all(&request(&addr, "POST", "/v1/tasks", &headers, body.as_bytes())).is_err() {
                            break;
                        }
                        let mut answer = Vec::new();
                        if stream.read_to_end(&mut answer).is_err() {
                            break;
                        }
                        let text = String::from_utf8_lossy(&answer);
                        // Acknowledged means: a 201 with the stored task came back.
                        let Some((_, body)) = text.split_once("\r\n\r\n").filter(|_| text.starts_with("HTTP/1.0 201"))
                        else {
                            break;
                        };
                        let task: Value = serde_json::from_str(body).unwrap();
                        ids.push(task["id"].as_str().unwrap().to_owned());
                    }
                    ids
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(random.below(150)));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        for client in clients {
            acknowledged.extend(client.join().unwrap());
        }
        // The stale file must not block the restart, nor the next command.
        let tasks: Vec<Value> = serde_json::from_str(&ok(&ws, &["task", "list", "--json"])).unwrap();
        let present: BTreeSet<String> = tasks.iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
        let lost: Vec<&String> = acknowledged.difference(&present).collect();
        assert!(lost.is_empty(), "round {round} (seed {seed}): acknowledged tasks lost: {lost:?}");
    }
    assert!(acknowledged.len() > 30, "the clients committed something ({})", acknowledged.len());
}
