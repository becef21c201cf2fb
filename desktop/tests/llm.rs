//! `adiuva llm …` and `adiuva ask` with the real binary, against a double of OpenAI's API on
//! loopback, without and with the daemon; the API key (a marker) never appears in any output,
//! log line, workspace file or the synced log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

const PASSPHRASE: &str = "llm test passphrase";
const KEY: &str = "sk-MARKER-9d3e1f7a2c6b4e80";

/// An OpenAI double: chat completions (whole or streamed) and the model list; it remembers the
/// `Authorization` headers it saw.
fn start_openai_double() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().fallback(
                move |headers: HeaderMap, uri: axum::http::Uri, body: axum::body::Bytes| {
                    let recorded = recorded.clone();
                    async move {
                        let auth =
                            headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                        recorded.lock().unwrap().push(auth);
                        answer(uri.path(), &serde_json::from_slice(&body).unwrap_or(Value::Null))
                    }
                },
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{}/v1", receiver.recv().unwrap()), seen)
}

fn answer(path: &str, body: &Value) -> Response {
    let json = |value: Value| {
        Response::builder().header("content-type", "application/json").body(Body::from(value.to_string())).unwrap()
    };
    if path == "/v1/models" {
        return json(
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "system"}]}),
        );
    }
    if body["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let events = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hello"}), Value::Null),
            chunk(json!({"content": " from the stream"}), Value::Null),
            chunk(json!({}), json!("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}})
            ),
            "data: [DONE]\n\n".to_owned(),
        ];
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(events.concat()))
            .unwrap();
    }
    json(json!({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, I am the double."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}}))
}

fn adiuva(workspace: &Path, args: &[&str]) -> Output {
    let mut command = common::adiuva_command(workspace, PASSPHRASE, args);
    command.env("ADIUVA_API_KEY", KEY).env("ADIUVA_LOG", "debug");
    command.output().unwrap()
}

/// Runs a command that must succeed; returns its stdout. Its output and logs must not hold the key.
fn ok(workspace: &Path, args: &[&str]) -> String {
    let output = adiuva(workspace, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{args:?}: {stdout}\n{stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "{args:?} printed the key");
    assert!(!stderr.contains(&KEY[10..]), "{args:?} logged part of the key");
    stdout.into_owned()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(files_under(&path)) } else { files.push(path) }
    }
    files
}

fn providers_and_ask(ws: &Path, base_url: &str) {
    let list: Value = serde_json::from_str(&ok(ws, &["llm", "list", "--json"])).unwrap();
    assert_eq!(list["chain"], json!(["work"]));
    assert_eq!(list["providers"][0]["base_url"], base_url);
    assert_eq!(list["providers"][0]["key"], "device_settings", "no keyring here: the sealed device settings");

    let answer: Value = serde_json::from_str(&ok(ws, &["ask", "Say hello", "--json"])).unwrap();
    assert_eq!(answer["text"], "Hello, I am the double.");
    assert_eq!(answer["provider"], "work");
    assert_eq!(answer["usage"]["input_tokens"], 11);
    let streamed = ok(ws, &["ask", "Say hello", "--stream"]);
    assert_eq!(streamed.trim(), "Hello from the stream");
    assert_eq!(ok(ws, &["llm", "models", "work"]).trim(), "gpt-4o-mini");
    assert!(ok(ws, &["llm", "test", "work"]).contains("work (gpt-4o-mini) answered"));
}

#[test]
fn providers_are_configured_on_the_device_and_answer_with_and_without_the_daemon() {
    let (base_url, seen) = start_openai_double();
    let dir = tempfile::tempdir().unwrap();
    let ws = &dir.path().join("ws");
    ok(ws, &["init"]);
    let added = ok(ws, &["llm", "add", "work", "--kind", "openai", "--model", "gpt-4o-mini", "--base-url", &base_url]);
    assert!(added.contains("added work (openai gpt-4o-mini)"), "{added}");
    providers_and_ask(ws, &base_url);

    assert!(ok(ws, &["daemon", "start"]).contains("daemon started"));
    providers_and_ask(ws, &base_url);
    let usage: Value = serde_json::from_str(&ok(ws, &["llm", "usage", "--json"])).unwrap();
    assert_eq!(usage["summary"]["by_provider"]["work"]["calls"], 6, "{usage}");
    assert_eq!(usage["summary"]["all"]["input_tokens"], 66);
    assert!(usage["recent"].as_array().unwrap().iter().all(|r| r["correlation"].is_string() && r["outcome"] == "ok"));
    ok(ws, &["daemon", "stop"]);

    // The key reached the provider, and nothing else: not the synced log, not a file in clear.
    assert!(seen.lock().unwrap().iter().all(|auth| auth == &format!("Bearer {KEY}")));
    assert!(!ok(ws, &["log", "--json"]).contains("sk-MARKER"));
    for file in files_under(ws) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "{} holds the key in clear", file.display());
        let is_log = file.extension().is_some_and(|e| e == "log");
        assert!(
            is_log || !bytes.windows(11).any(|w| w == b"gpt-4o-mini"),
            "{} holds the settings in clear",
            file.display()
        );
    }

    let removed = ok(ws, &["llm", "remove", "work"]);
    assert!(removed.contains("removed work"));
    let output = adiuva(ws, &["ask", "anyone there?"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[llm.no_provider]"));
}

#[test]
fn the_chain_falls_back_and_says_why() {
    let (base_url, _) = start_openai_double();
    let dir = tempfile::tempdir().unwrap();
    let ws = &dir.path().join("ws");
    ok(ws, &["init"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    ok(
        ws,
        &[
            "llm",
            "add",
            "down",
            "--kind",
            "groq",
            "--model",
            "llama-3.1-8b-instant",
            "--base-url",
            &format!("http://{closed}/openai/v1"),
        ],
    );
    ok(ws, &["llm", "add", "up", "--kind", "openai", "--model", "gpt-4o-mini", "--base-url", &base_url]);
    ok(ws, &["llm", "set-default", "down", "up"]);
    let output = adiuva(ws, &["ask", "Say hello"]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "Hello, I am the double.");
    let footer = String::from_utf8_lossy(&output.stderr);
    assert!(footer.contains("fell back: down (llama-3.1-8b-instant): [llm.unreachable]"), "{footer}");
    let unknown = adiuva(ws, &["llm", "set-default", "nobody"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("error[llm.unknown_provider]"));
}
