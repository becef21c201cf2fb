//! The OpenAPI document: it validates, every operation in it answers a sample request with a
//! status it documents, every operation with a token rejects a missing one, and malformed,
//! unknown-field and oversized bodies get a documented 4xx with a typed error, never a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// A documented operation: (method, path template).
type Operation = (&'static str, &'static str);

fn documented(document: &Value, method: &str, path: &str) -> Vec<u16> {
    document["paths"][path][method]["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect()
}

#[test]
fn the_document_validates_and_every_route_answers_as_documented() {
    let (dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let (device, other) = (TestDevice::new(1), TestDevice::new(2));
    let session = account_with_workspace(&mut server, "openapi@example.com", "team", 20, &device, "ws");
    let token = session.access.clone();

    let document = server.call("GET", "/api/v1/openapi.json", None, Body::None).expect(200).json();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let validated = Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    assert!(
        validated.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    let blob = b"a sample blob".to_vec();
    let id = blob_id(&blob);
    let proof = [3u8; 32];
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let other_id = other.id();
    // (method, documented path) → (request path, body). Ordered so each finds what it needs.
    let samples: Vec<(Operation, (String, Body))> = vec![
        (("get", "/api/v1/health"), ("/api/v1/health".into(), Body::None)),
        (("get", "/api/v1/openapi.json"), ("/api/v1/openapi.json".into(), Body::None)),
        (
            ("post", "/api/v1/auth/register"),
            (
                "/api/v1/auth/register".into(),
                Body::Json(json!({"email": "sample@example.com", "password": PASSWORD, "device_id": other_id})),
            ),
        ),
        (
            ("post", "/api/v1/auth/login"),
            (
                "/api/v1/auth/login".into(),
                Body::Json(json!({"email": "openapi@example.com", "password": PASSWORD, "device_id": device.id()})),
            ),
        ),
        (
            ("post", "/api/v1/auth/refresh"),
            ("/api/v1/auth/refresh".into(), Body::Json(json!({"refresh_token": session.refresh}))),
        ),
        (("get", "/api/v1/auth/me"), ("/api/v1/auth/me".into(), Body::None)),
        (("post", "/api/v1/auth/logout"), ("/api/v1/auth/logout".into(), Body::None)),
        (("post", "/api/v1/workspaces"), ("/api/v1/workspaces".into(), Body::Json(json!({"id": "ws2"})))),
        (("get", "/api/v1/workspaces/{ws}/devices"), ("/api/v1/workspaces/ws/devices".into(), Body::None)),
        (
            ("put", "/api/v1/workspaces/{ws}/devices/{device}"),
            (format!("/api/v1/workspaces/ws/devices/{other_id}"), Body::None),
        ),
        (
            ("put", "/api/v1/workspaces/{ws}/blobs/{id}"),
            (format!("/api/v1/workspaces/ws/blobs/{id}"), Body::Bytes(blob.clone())),
        ),
        (("get", "/api/v1/workspaces/{ws}/blobs/{id}"), (format!("/api/v1/workspaces/ws/blobs/{id}"), Body::None)),
        (
            ("get", "/api/v1/workspaces/{ws}/changes"),
            ("/api/v1/workspaces/ws/changes?after=0&limit=10".into(), Body::None),
        ),
        (("get", "/api/v1/workspaces/{ws}/live"), ("/api/v1/workspaces/ws/live".into(), Body::None)),
        (
            ("put", "/api/v1/workspaces/{ws}/key-envelopes/{device}/{epoch}"),
            (format!("/api/v1/workspaces/ws/key-envelopes/{other_id}/1"), Body::Bytes(vec![1, 2, 3])),
        ),
        (
            ("get", "/api/v1/workspaces/{ws}/key-envelopes/{device}/{epoch}"),
            (format!("/api/v1/workspaces/ws/key-envelopes/{other_id}/1"), Body::None),
        ),
        (
            ("get", "/api/v1/workspaces/{ws}/key-envelopes/{device}"),
            (format!("/api/v1/workspaces/ws/key-envelopes/{other_id}"), Body::None),
        ),
        (
            ("put", "/api/v1/workspaces/{ws}/recovery"),
            (
                "/api/v1/workspaces/ws/recovery".into(),
                Body::Json(json!({"wrapped_key": "0102", "verifier": hex(device.key.verifying_key().as_bytes())})),
            ),
        ),
        (("get", "/api/v1/workspaces/{ws}/recovery"), ("/api/v1/workspaces/ws/recovery".into(), Body::None)),
        (
            ("post", "/api/v1/workspaces/{ws}/recovery/authorize"),
            (
                "/api/v1/workspaces/ws/recovery/authorize".into(),
                Body::Json(json!({"challenge": hex(&[0; 32]), "signature": hex(&[0; 64])})),
            ),
        ),
        (
            ("post", "/api/v1/workspaces/{ws}/recovery/read"),
            (
                "/api/v1/workspaces/ws/recovery/read".into(),
                Body::Json(json!({"challenge": hex(&[0; 32]), "signature": hex(&[0; 64])})),
            ),
        ),
        (
            ("post", "/api/v1/workspaces/{ws}/invites"),
            (
                "/api/v1/workspaces/ws/invites".into(),
                Body::Json(json!({"invite_id": "inv", "expires_at": expires, "proof_hash": blob_id(&proof)})),
            ),
        ),
        (
            ("post", "/api/v1/invites/{invite}/join"),
            (
                "/api/v1/invites/inv/join".into(),
                Body::Json(json!({"proof": hex(&proof), "payload": "00", "mac": "00"})),
            ),
        ),
        (("get", "/api/v1/workspaces/{ws}/joins"), ("/api/v1/workspaces/ws/joins".into(), Body::None)),
        (
            ("put", "/api/v1/backup"),
            (
                "/api/v1/backup".into(),
                Body::Json(
                    json!({"workspace": "ws", "version": 1, "checksum": "c", "chunk_count": 1, "size_bytes": 13, "blob_ids": [id]}),
                ),
            ),
        ),
        (("get", "/api/v1/backup"), ("/api/v1/backup?workspace=ws".into(), Body::None)),
        (("get", "/api/v1/backup/history"), ("/api/v1/backup/history".into(), Body::None)),
        (("get", "/api/v1/backup/{id}"), ("/api/v1/backup/01J00000000000000000000000".into(), Body::None)),
        (("delete", "/api/v1/backup/{id}"), ("/api/v1/backup/01J00000000000000000000000".into(), Body::None)),
        (
            ("delete", "/api/v1/workspaces/{ws}/devices/{device}"),
            (format!("/api/v1/workspaces/ws/devices/{other_id}"), Body::None),
        ),
    ];
    let operations: BTreeMap<(String, String), &Value> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().unwrap().iter().map(move |(method, op)| ((method.clone(), path.clone()), op))
        })
        .collect();
    let sampled: Vec<(String, String)> = samples.iter().map(|((m, p), _)| (m.to_string(), p.to_string())).collect();
    for operation in operations.keys() {
        assert!(sampled.contains(operation), "no sample request for {operation:?}");
    }
    // Logging out revokes its session: it gets one of its own.
    let spare = login(&server, "openapi@example.com", &device).access;
    for ((method, path), (request, body)) in samples {
        let token = if path == "/api/v1/auth/logout" { &spare } else { &token };
        let answer = server.call(&method.to_uppercase(), &request, Some(token), body);
        let documented = documented(&document, method, path);
        assert!(
            documented.contains(&answer.status),
            "{method} {path}: {} is not documented ({documented:?})",
            answer.status
        );
        assert!(answer.status < 500, "{method} {path}: {}", answer.status);
    }

    // Every operation that needs a token: none → 401, documented.
    for ((method, path), operation) in &operations {
        if operation.get("security").is_some_and(|s| s == &json!([{}])) {
            continue;
        }
        let request = path
            .replace("{ws}", "ws")
            .replace("{device}", &other_id)
            .replace("{epoch}", "1")
            .replace("{id}", &id)
            .replace("{invite}", "inv");
        let answer = server.call(&method.to_uppercase(), &request, None, Body::Bytes(vec![]));
        assert_eq!((answer.status, answer.code().as_str()), (401, "relay.unauthorized"), "{method} {path}");
        assert!(documented(&document, method, path).contains(&401), "{method} {path} does not document 401");
    }

    // Malformed, unknown-field, wrongly typed and oversized bodies on every JSON route.
    let huge = format!("{{\"id\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    for ((method, path), operation) in &operations {
        let takes_json = operation["requestBody"]["content"].get("application/json").is_some();
        if !takes_json {
            continue;
        }
        let request = path.replace("{ws}", "ws").replace("{invite}", "inv");
        for body in ["{", "[]", "{\"unknown_field\": 1}", "null", "{\"email\": 5}"] {
            let answer = server.call(&method.to_uppercase(), &request, Some(&token), Body::RawJson(body));
            assert!((400..500).contains(&answer.status), "{method} {path} with {:.20}: {}", body, answer.status);
            assert!(
                documented(&document, method, path).contains(&answer.status) || answer.status == 429,
                "{method} {path} with {:.20}: {} is not documented",
                body,
                answer.status
            );
            assert!(answer.code().contains('.'), "{method} {path}: untyped error");
        }
        let answer = server.call(&method.to_uppercase(), &request, Some(&token), Body::Bytes(b"{}".to_vec()));
        assert!((400..500).contains(&answer.status), "{method} {path} without a JSON content type: {}", answer.status);
        let (status, error) = server.raw(&method.to_uppercase(), &request, &token, "application/json", huge.as_bytes());
        assert_eq!((status, &error["error"]["code"]), (413, &json!("input.too_large")), "{method} {path} with 2 MiB");
        assert!(documented(&document, method, path).contains(&413), "{method} {path} does not document 413");
    }
    // A blob over 16 MiB, and unknown routes and methods.
    let big = vec![0u8; 16 * 1024 * 1024 + 1];
    let (status, error) = server.raw(
        "PUT",
        &format!("/api/v1/workspaces/ws/blobs/{}", blob_id(&big)),
        &token,
        "application/octet-stream",
        &big,
    );
    assert_eq!((status, &error["error"]["code"]), (413, &json!("input.too_large")));
    server.call("GET", "/api/v1/nothing", Some(&token), Body::None).expect_error(404, "relay.no_route");
    server.call("PATCH", "/api/v1/auth/me", Some(&token), Body::None).expect_error(405, "relay.no_route");
    let answer = server.call_with("GET", "/api/v1/health", None, Body::None, &[("x-request-id", "client-chosen-1")]);
    assert_eq!(answer.header("x-request-id"), Some("client-chosen-1"));
    assert!(server.logs().contains("client-chosen-1"), "the request id is in the log");
}
