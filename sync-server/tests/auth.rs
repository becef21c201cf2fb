//! Accounts and sessions against the real server: registration, login, refresh rotation and
//! reuse revoking the family, expired and forged tokens, and that no password or token reaches
//! the data directory or the logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn register_login_me_and_wrong_credentials() {
    let (_dir, data) = data_dir();
    let server = Server::start(&data, &[]);
    let laptop = TestDevice::new(1);
    let session = register(&server, "Person@Example.com", &laptop);
    server
        .call(
            "POST",
            "/api/v1/auth/register",
            None,
            Body::Json(json!({"email": "person@example.com", "password": PASSWORD, "device_id": laptop.id()})),
        )
        .expect_error(409, "relay.account_exists");
    let me = server.call("GET", "/api/v1/auth/me", Some(&session.access), Body::None).expect(200).json();
    assert_eq!(me["email"], "person@example.com");
    assert_eq!(me["tier"], "free");
    assert_eq!(me["quota_bytes"], 0);
    assert_eq!(me["requests_per_minute"], 20);
    for (email, password) in [("person@example.com", "wrong password!"), ("nobody@example.com", PASSWORD)] {
        server
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Body::Json(json!({"email": email, "password": password, "device_id": laptop.id()})),
            )
            .expect_error(401, "relay.bad_credentials");
    }
    for body in [
        json!({"email": "not-an-email", "password": PASSWORD, "device_id": laptop.id()}),
        json!({"email": "a@b.c", "password": "short", "device_id": laptop.id()}),
        json!({"email": "a@b.c", "password": PASSWORD, "device_id": "not hex"}),
        json!({"email": "a@b.c", "password": PASSWORD, "device_id": laptop.id(), "extra": 1}),
        json!({"email": "a@b.c"}),
    ] {
        let answer = server.call("POST", "/api/v1/auth/register", None, Body::Json(body.clone()));
        assert!((400..500).contains(&answer.status), "{body}: {}", answer.status);
        assert!(answer.code().starts_with("input."), "{body}: {}", answer.code());
    }
    let second = login(&server, "PERSON@example.com", &TestDevice::new(2));
    server.call("GET", "/api/v1/auth/me", Some(&second.access), Body::None).expect(200);
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let (_dir, data) = data_dir();
    let server = Server::start(&data, &[]);
    let device = TestDevice::new(1);
    let first = register(&server, "rotate@example.com", &device);
    let other_login = login(&server, "rotate@example.com", &device);

    let second = refresh(&server, &first).expect(200).json();
    let second = Session {
        access: second["access_token"].as_str().unwrap().into(),
        refresh: second["refresh_token"].as_str().unwrap().into(),
    };
    assert_ne!(second.refresh, first.refresh);
    server.call("GET", "/api/v1/auth/me", Some(&second.access), Body::None).expect(200);

    // The first refresh token again: reuse. The family (first, second) is revoked.
    refresh(&server, &first).expect_error(401, "relay.refresh_reused");
    refresh(&server, &second).expect_error(401, "relay.refresh_invalid");
    server.call("GET", "/api/v1/auth/me", Some(&second.access), Body::None).expect_error(401, "relay.unauthorized");
    server.call("GET", "/api/v1/auth/me", Some(&first.access), Body::None).expect_error(401, "relay.unauthorized");

    // Another login's family is untouched.
    server.call("GET", "/api/v1/auth/me", Some(&other_login.access), Body::None).expect(200);
    refresh(&server, &other_login).expect(200);
    server
        .call("POST", "/api/v1/auth/refresh", None, Body::Json(json!({"refresh_token": "00"})))
        .expect_error(401, "relay.refresh_invalid");
}

#[test]
fn logout_revokes_the_session_and_only_it() {
    let (_dir, data) = data_dir();
    let server = Server::start(&data, &[]);
    let device = TestDevice::new(1);
    let session = register(&server, "logout@example.com", &device);
    let other_login = login(&server, "logout@example.com", &device);
    server.call("POST", "/api/v1/auth/logout", Some(&session.access), Body::None).expect(204);
    server.call("GET", "/api/v1/auth/me", Some(&session.access), Body::None).expect_error(401, "relay.unauthorized");
    refresh(&server, &session).expect_error(401, "relay.refresh_invalid");
    server.call("GET", "/api/v1/auth/me", Some(&other_login.access), Body::None).expect(200);
}

#[test]
fn missing_forged_and_expired_tokens_are_refused() {
    let (_dir, data) = data_dir();
    let server = Server::start(&data, &["--access-token-ttl", "1"]);
    let device = TestDevice::new(1);
    let session = register(&server, "tokens@example.com", &device);

    // A token signed with another secret, and one with its payload altered.
    let forged = forge(&session.access);
    let mut parts: Vec<String> = session.access.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = parts.join(".");
    for token in [None, Some("garbage"), Some(forged.as_str()), Some(tampered.as_str()), Some("")] {
        server.call("GET", "/api/v1/auth/me", token, Body::None).expect_error(401, "relay.unauthorized");
    }
    // Accepted while valid, which the server then remembers as verified; expiry is exact (no
    // leeway) for a remembered token as for a new one: wait past the 1-second lifetime.
    server.call("GET", "/api/v1/auth/me", Some(&session.access), Body::None).expect(200);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    server.call("GET", "/api/v1/auth/me", Some(&session.access), Body::None).expect_error(401, "relay.token_expired");
    let renewed = refresh(&server, &session).expect(200).json();
    server.call("GET", "/api/v1/auth/me", renewed["access_token"].as_str(), Body::None).expect(200);
}

#[test]
fn an_answer_given_before_the_body_is_read_says_the_connection_closes() {
    let (_dir, data) = data_dir();
    let server = Server::start(&data, &[]);
    let mut connection = std::net::TcpStream::connect(&server.address).unwrap();
    connection.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();

    // A body fully read, even one refused after reading: the connection stays open.
    let body = r#"{"email": "nobody@example.com"}"#;
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = exchange(&mut connection, &[head.as_bytes(), body.as_bytes()]);
    assert!(answer.starts_with("http/1.1 400") && !answer.contains("connection: close"), "{answer}");

    // Refused (no token) before its body arrived: the server closes the connection after
    // answering, and the answer says so, or a client would send its next request into it.
    let head = "PUT /api/v1/workspaces/ws1/blobs/00 HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\n";
    let answer = exchange(&mut connection, &[head.as_bytes()]);
    assert!(answer.starts_with("http/1.1 401") && answer.contains("connection: close"), "{answer}");
}

/// Writes one request in parts and reads its answer (head and `content-length` bytes).
fn exchange(connection: &mut std::net::TcpStream, parts: &[&[u8]]) -> String {
    use std::io::{Read, Write};
    for part in parts {
        connection.write_all(part).unwrap();
    }
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        connection.read_exact(&mut byte).unwrap();
        answer.push(byte[0]);
    }
    let head = String::from_utf8(answer).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0; length];
    connection.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// The same claims, signed HS256 with a secret that is not the server's.
pub fn forge(token: &str) -> String {
    let mut parts = token.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let signing_input = format!("{header}.{payload}");
    let key = jsonwebtoken::EncodingKey::from_secret(b"not the server's secret");
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{signing_input}.{signature}")
}

#[test]
fn no_password_or_token_reaches_the_data_directory_or_the_logs() {
    const MARKER: &str = "MARKER-7f3a9c-secret-passphrase";
    let (dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let device = TestDevice::new(9);
    let email = "marker@example.com";
    server
        .call(
            "POST",
            "/api/v1/auth/register",
            None,
            Body::Json(json!({"email": email, "password": MARKER, "device_id": device.id()})),
        )
        .expect(201);
    server.set_tier(email, "pro", 1);
    let session = server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Body::Json(json!({"email": email, "password": MARKER, "device_id": device.id()})),
        )
        .expect(200)
        .json();
    let access = session["access_token"].as_str().unwrap().to_owned();
    let refresh_token = session["refresh_token"].as_str().unwrap().to_owned();
    server.call("POST", "/api/v1/workspaces", Some(&access), Body::Json(json!({"id": "ws-marker"}))).expect(201);
    // Ciphertext as a client would send it: nothing readable.
    let blob: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    put_blob(&server, &access, "ws-marker", &blob).expect(201);
    server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Body::Json(json!({"email": email, "password": format!("{MARKER}-wrong"), "device_id": device.id()})),
        )
        .expect(401);
    let rotated = server
        .call("POST", "/api/v1/auth/refresh", None, Body::Json(json!({"refresh_token": refresh_token})))
        .expect(200)
        .json();
    server.stop();

    let needles = [
        MARKER.to_owned(),
        access.clone(),
        refresh_token.clone(),
        rotated["refresh_token"].as_str().unwrap().to_owned(),
    ];
    let mut files = Vec::new();
    collect_files(dir.path(), &mut files);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "log")), "the log file is searched too");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret in clear",
                file.display()
            );
        }
    }
}

fn collect_files(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { collect_files(&path, files) } else { files.push(path) }
    }
}
