//! Two stateless `adiuva-server` instances on one PostgreSQL and one S3 bucket (the real servers
//! `scripts/test` starts): a session, a workspace and its blobs made through one are served by
//! the other, the live socket on one hears of uploads through the other, and no password or
//! token reaches the database's or the bucket's files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;

use common::*;
use serde_json::json;

#[test]
fn two_instances_serve_one_user_from_postgres_and_s3() {
    const MARKER: &str = "MARKER-cloud-91c2-passphrase";
    let Some(servers) = CloudServers::from_env("two_instances_serve_one_user_from_postgres_and_s3") else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = servers.fresh_database();
    let bucket = format!("relay-{}", ulid::Ulid::new().to_string().to_lowercase());
    let backend = servers.backend(&database, &bucket);
    let first = Server::start_on(backend.clone(), dir.path(), &dir.path().join("first.log"), &[]);
    let second = Server::start_on(backend, dir.path(), &dir.path().join("second.log"), &[]);

    let device = TestDevice::new(1);
    let email = "cloud@example.com";
    first
        .call(
            "POST",
            "/api/v1/auth/register",
            None,
            Body::Json(json!({"email": email, "password": MARKER, "device_id": device.id()})),
        )
        .expect(201);
    first.admin_set_tier(email, "team", 5);
    let session = second
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
    first.call("POST", "/api/v1/workspaces", Some(&access), Body::Json(json!({"id": "ws"}))).expect(201);

    let mut socket = {
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/api/v1/workspaces/ws/live",
            second.address
        ))
        .unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {access}").parse().unwrap());
        let stream = TcpStream::connect(&second.address).unwrap();
        // A safety net, not a timed assertion: a silent socket fails the test instead of hanging it.
        stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        tungstenite::client(request, stream).unwrap().0
    };
    assert_eq!(read_seq(&mut socket), 0);

    let blobs: Vec<Vec<u8>> =
        (0..6u32).map(|i| (0..2048u32).map(|j| (j.wrapping_mul(31).wrapping_add(i * 7)) as u8).collect()).collect();
    for (i, blob) in blobs.iter().enumerate() {
        let through = if i % 2 == 0 { &first } else { &second };
        assert_eq!(put_blob(through, &access, "ws", blob).expect(201).json()["seq"], i as u64 + 1);
    }
    assert_eq!(put_blob(&second, &access, "ws", &blobs[0]).expect(200).json()["seq"], 1);
    // The socket on the second instance hears of uploads through the first.
    while read_seq(&mut socket) < 6 {}
    for (i, blob) in blobs.iter().enumerate() {
        let through = if i % 2 == 0 { &second } else { &first };
        let got =
            through.call("GET", &format!("/api/v1/workspaces/ws/blobs/{}", blob_id(blob)), Some(&access), Body::None);
        assert_eq!(got.expect(200).bytes, *blob);
    }
    let page = first.call("GET", "/api/v1/workspaces/ws/changes?after=3", Some(&access), Body::None).expect(200).json();
    assert_eq!(page["changes"].as_array().unwrap().len(), 3);

    // A refresh through one instance, reuse through the other: the family is revoked on both.
    let rotated = first
        .call("POST", "/api/v1/auth/refresh", None, Body::Json(json!({"refresh_token": refresh_token})))
        .expect(200)
        .json();
    second
        .call("POST", "/api/v1/auth/refresh", None, Body::Json(json!({"refresh_token": refresh_token})))
        .expect_error(401, "relay.refresh_reused");
    first
        .call("GET", "/api/v1/auth/me", rotated["access_token"].as_str(), Body::None)
        .expect_error(401, "relay.unauthorized");

    let needles = [MARKER.to_owned(), access, refresh_token];
    let mut searched = 0;
    for root in
        [servers.s3_dir.clone(), servers.postgres_dir.clone(), Some(dir.path().to_owned())].into_iter().flatten()
    {
        searched += search(&root, &needles);
    }
    assert!(searched > 0);
}

fn read_seq(socket: &mut tungstenite::WebSocket<TcpStream>) -> u64 {
    loop {
        if let tungstenite::Message::Text(text) = socket.read().unwrap() {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            return value["seq"].as_u64().unwrap();
        }
    }
}

/// Files under `root` searched for any needle; panics on a find.
fn search(root: &std::path::Path, needles: &[String]) -> usize {
    let mut searched = 0;
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            searched += search(&path, needles);
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        searched += 1;
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret in clear",
                path.display()
            );
        }
    }
    searched
}
