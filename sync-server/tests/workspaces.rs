//! Workspaces against the real server: device authorization and removal, content-addressed
//! blobs and the sequence, the live socket, key envelopes, recovery, invites and restore points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;

use common::*;
use ed25519_dalek::Signer;
use serde_json::{Value, json};

#[test]
fn only_authorized_devices_use_a_workspace_and_a_removed_one_gets_403_everywhere() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let (laptop, desktop) = (TestDevice::new(1), TestDevice::new(2));
    let laptop_session = account_with_workspace(&mut server, "devices@example.com", "team", 10, &laptop, "ws1");
    let desktop_session = login(&server, "devices@example.com", &desktop);
    let token = Some(desktop_session.access.as_str());

    put_blob(&server, &desktop_session.access, "ws1", b"before").expect_error(403, "relay.device_not_authorized");
    server
        .call("GET", "/api/v1/workspaces/ws1/devices", token, Body::None)
        .expect_error(403, "relay.device_not_authorized");
    // Not authorized devices cannot authorize themselves.
    server
        .call("PUT", &format!("/api/v1/workspaces/ws1/devices/{}", desktop.id()), token, Body::None)
        .expect_error(403, "relay.device_not_authorized");

    let path = format!("/api/v1/workspaces/ws1/devices/{}", desktop.id());
    server.call("PUT", &path, Some(&laptop_session.access), Body::None).expect(201);
    server.call("PUT", &path, Some(&laptop_session.access), Body::None).expect(204);
    let devices = server.call("GET", "/api/v1/workspaces/ws1/devices", token, Body::None).expect(200).json();
    let ids: Vec<&str> = devices.as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&laptop.id().as_str()) && ids.contains(&desktop.id().as_str()));
    let blob = put_blob(&server, &desktop_session.access, "ws1", b"from the desktop").expect(201).json();

    // Another account's device never sees the workspace.
    let stranger = TestDevice::new(3);
    let stranger_session = register(&server, "stranger@example.com", &stranger);
    server
        .call("GET", "/api/v1/workspaces/ws1/changes", Some(&stranger_session.access), Body::None)
        .expect_error(404, "relay.workspace_not_found");
    server
        .call("POST", "/api/v1/workspaces", Some(&stranger_session.access), Body::Json(json!({"id": "ws1"})))
        .expect_error(409, "relay.workspace_exists");

    server.call("DELETE", &path, Some(&laptop_session.access), Body::None).expect(204);
    server.call("DELETE", &path, Some(&laptop_session.access), Body::None).expect_error(404, "relay.not_found");
    let id = blob["id"].as_str().unwrap();
    let desktop_id = desktop.id();
    let refused: Vec<(&str, String, Body)> = vec![
        ("GET", "/api/v1/workspaces/ws1/devices".into(), Body::None),
        ("PUT", format!("/api/v1/workspaces/ws1/devices/{desktop_id}"), Body::None),
        ("DELETE", format!("/api/v1/workspaces/ws1/devices/{}", laptop.id()), Body::None),
        ("PUT", format!("/api/v1/workspaces/ws1/blobs/{}", blob_id(b"x")), Body::Bytes(b"x".to_vec())),
        ("GET", format!("/api/v1/workspaces/ws1/blobs/{id}"), Body::None),
        ("GET", "/api/v1/workspaces/ws1/changes?after=0".into(), Body::None),
        ("GET", "/api/v1/workspaces/ws1/live".into(), Body::None),
        ("PUT", format!("/api/v1/workspaces/ws1/key-envelopes/{desktop_id}/1"), Body::Bytes(vec![1])),
        ("GET", format!("/api/v1/workspaces/ws1/key-envelopes/{desktop_id}/1"), Body::None),
        ("GET", format!("/api/v1/workspaces/ws1/key-envelopes/{desktop_id}"), Body::None),
        (
            "PUT",
            "/api/v1/workspaces/ws1/recovery".into(),
            Body::Json(json!({"wrapped_key": "00", "verifier": hex(&[0; 32])})),
        ),
        (
            "POST",
            "/api/v1/workspaces/ws1/invites".into(),
            Body::Json(json!({"invite_id": "i", "expires_at": "2099-01-01T00:00:00Z", "proof_hash": hex(&[0; 32])})),
        ),
        ("GET", "/api/v1/workspaces/ws1/joins".into(), Body::None),
        ("GET", "/api/v1/backup?workspace=ws1".into(), Body::None),
        ("GET", "/api/v1/backup/history?workspace=ws1".into(), Body::None),
        (
            "PUT",
            "/api/v1/backup".into(),
            Body::Json(
                json!({"workspace": "ws1", "version": 1, "checksum": "c", "chunk_count": 0, "size_bytes": 0, "blob_ids": []}),
            ),
        ),
    ];
    for (method, path, body) in refused {
        server.call(method, &path, token, body).expect_error(403, "relay.device_not_authorized");
    }
    // Its account-level routes still answer; the laptop carries on.
    server.call("GET", "/api/v1/auth/me", token, Body::None).expect(200);
    put_blob(&server, &laptop_session.access, "ws1", b"after the removal").expect(201);
}

#[test]
fn blobs_are_content_addressed_idempotent_and_pulled_after_a_cursor() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let device = TestDevice::new(1);
    let session = account_with_workspace(&mut server, "blobs@example.com", "pro", 1, &device, "ws");
    let token = Some(session.access.as_str());

    server
        .call(
            "PUT",
            &format!("/api/v1/workspaces/ws/blobs/{}", blob_id(b"other")),
            token,
            Body::Bytes(b"bytes".to_vec()),
        )
        .expect_error(400, "relay.blob_id_mismatch");
    server
        .call("PUT", "/api/v1/workspaces/ws/blobs/NOTHEX", token, Body::Bytes(b"x".to_vec()))
        .expect_error(400, "input.invalid");
    let upper = blob_id(b"x").to_uppercase();
    server
        .call("PUT", &format!("/api/v1/workspaces/ws/blobs/{upper}"), token, Body::Bytes(b"x".to_vec()))
        .expect_error(400, "input.invalid");

    let blobs: Vec<Vec<u8>> = (0..5).map(|i| format!("ciphertext {i}").into_bytes()).collect();
    for (i, blob) in blobs.iter().enumerate() {
        let entry = put_blob(&server, &session.access, "ws", blob).expect(201).json();
        assert_eq!(entry["seq"], i as u64 + 1);
        assert_eq!(entry["size"], blob.len());
    }
    // A retry: same number, nothing new.
    let again = put_blob(&server, &session.access, "ws", &blobs[2]).expect(200).json();
    assert_eq!(again["seq"], 3);
    let me = server.call("GET", "/api/v1/auth/me", token, Body::None).expect(200).json();
    assert_eq!(me["usage_bytes"], blobs.iter().map(Vec::len).sum::<usize>());

    let got = server
        .call("GET", &format!("/api/v1/workspaces/ws/blobs/{}", blob_id(&blobs[4])), token, Body::None)
        .expect(200);
    assert_eq!(got.bytes, blobs[4]);
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    server
        .call("GET", &format!("/api/v1/workspaces/ws/blobs/{}", blob_id(b"never")), token, Body::None)
        .expect_error(404, "relay.not_found");

    let page =
        server.call("GET", "/api/v1/workspaces/ws/changes?after=2&limit=2", token, Body::None).expect(200).json();
    assert_eq!(page["head"], 5);
    let seqs: Vec<u64> = page["changes"].as_array().unwrap().iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(page["changes"][0]["id"], blob_id(&blobs[2]));
    let all = server.call("GET", "/api/v1/workspaces/ws/changes", token, Body::None).expect(200).json();
    assert_eq!(all["changes"].as_array().unwrap().len(), 5);
    let none = server.call("GET", "/api/v1/workspaces/ws/changes?after=5", token, Body::None).expect(200).json();
    assert!(none["changes"].as_array().unwrap().is_empty());
    server.call("GET", "/api/v1/workspaces/ws/changes?after=-1", token, Body::None).expect_error(400, "input.invalid");
    server.call("GET", "/api/v1/workspaces/ws/changes?cursor=1", token, Body::None).expect_error(400, "input.invalid");

    // The same bytes in another workspace are that workspace's own entry.
    server.call("POST", "/api/v1/workspaces", token, Body::Json(json!({"id": "ws2"}))).expect(201);
    assert_eq!(put_blob(&server, &session.access, "ws2", &blobs[0]).expect(201).json()["seq"], 1);

    // Everything survives a restart.
    server.stop();
    server.restart();
    let after =
        server.call("GET", "/api/v1/workspaces/ws/changes", Some(&session.access), Body::None).expect(200).json();
    assert_eq!(after, all);
    assert_eq!(put_blob(&server, &session.access, "ws", b"sixth").expect(201).json()["seq"], 6);
}

#[test]
fn the_live_socket_announces_new_blobs_and_closes_for_a_removed_device() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let (laptop, desktop) = (TestDevice::new(1), TestDevice::new(2));
    let laptop_session = account_with_workspace(&mut server, "live@example.com", "pro", 1, &laptop, "ws");
    let desktop_session = login(&server, "live@example.com", &desktop);
    let device_path = format!("/api/v1/workspaces/ws/devices/{}", desktop.id());
    server.call("PUT", &device_path, Some(&laptop_session.access), Body::None).expect(201);
    put_blob(&server, &laptop_session.access, "ws", b"first").expect(201);

    let mut socket = connect_live(&server, &desktop_session.access, "ws");
    assert_eq!(next_json(&mut socket), json!({"seq": 1}));
    put_blob(&server, &laptop_session.access, "ws", b"second").expect(201);
    assert_eq!(next_json(&mut socket), json!({"seq": 2}));
    put_blob(&server, &laptop_session.access, "ws", b"second").expect(200);
    put_blob(&server, &laptop_session.access, "ws", b"third").expect(201);
    assert_eq!(next_json(&mut socket), json!({"seq": 3}));

    server.call("DELETE", &device_path, Some(&laptop_session.access), Body::None).expect(204);
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(other) => assert!(!other.is_text(), "a removed device was told {other:?}"),
        }
    }
    // Without a token there is no socket.
    let request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/api/v1/workspaces/ws/live",
        server.address
    ))
    .unwrap();
    let stream = TcpStream::connect(&server.address).unwrap();
    match tungstenite::client(request, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {:?}", other.map(|(_, r)| r.status())),
    }
}

fn connect_live(server: &Server, token: &str, ws: &str) -> tungstenite::WebSocket<TcpStream> {
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/api/v1/workspaces/{ws}/live",
        server.address
    ))
    .unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(&server.address).unwrap();
    // Not a timed assertion: a safety net so a silent socket fails instead of hanging the test.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    tungstenite::client(request, stream).unwrap().0
}

fn next_json(socket: &mut tungstenite::WebSocket<TcpStream>) -> Value {
    loop {
        match socket.read().unwrap() {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[test]
fn key_envelopes_recovery_and_invites() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let (laptop, fresh, joiner) = (TestDevice::new(1), TestDevice::new(2), TestDevice::new(3));
    let laptop_session = account_with_workspace(&mut server, "keys@example.com", "team", 10, &laptop, "ws");
    let token = Some(laptop_session.access.as_str());

    // Envelopes: opaque bytes per device and epoch.
    let envelope_path =
        |device: &TestDevice, epoch: u32| format!("/api/v1/workspaces/ws/key-envelopes/{}/{epoch}", device.id());
    server.call("PUT", &envelope_path(&laptop, 1), token, Body::Bytes(vec![7; 80])).expect(204);
    server.call("PUT", &envelope_path(&laptop, 2), token, Body::Bytes(vec![8; 80])).expect(204);
    assert_eq!(server.call("GET", &envelope_path(&laptop, 2), token, Body::None).expect(200).bytes, vec![8; 80]);
    server.call("GET", &envelope_path(&laptop, 3), token, Body::None).expect_error(404, "relay.not_found");
    let epochs = server
        .call("GET", &format!("/api/v1/workspaces/ws/key-envelopes/{}", laptop.id()), token, Body::None)
        .expect(200)
        .json();
    assert_eq!(epochs, json!([1, 2]));
    server
        .call("PUT", &envelope_path(&laptop, 4), token, Body::Bytes(vec![0; 64 * 1024 + 1]))
        .expect_error(413, "input.too_large");
    server
        .call("PUT", "/api/v1/workspaces/ws/key-envelopes/zz/1", token, Body::Bytes(vec![1]))
        .expect_error(400, "input.invalid");

    // Recovery: the phrase's key is stood in for by a signing key the relay only knows the public half of.
    let phrase_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let recovery = json!({"wrapped_key": hex(&[9; 72]), "verifier": hex(phrase_key.verifying_key().as_bytes())});
    server.call("PUT", "/api/v1/workspaces/ws/recovery", token, Body::Json(recovery)).expect(204);
    let fresh_session = login(&server, "keys@example.com", &fresh);
    let fresh_token = Some(fresh_session.access.as_str());
    server
        .call("GET", "/api/v1/workspaces/ws/changes", fresh_token, Body::None)
        .expect_error(403, "relay.device_not_authorized");
    let record = server.call("GET", "/api/v1/workspaces/ws/recovery", fresh_token, Body::None).expect(200).json();
    assert_eq!(record["wrapped_key"], hex(&[9; 72]));
    let challenge = record["challenge"].as_str().unwrap();
    let message = format!("adiuva relay recovery proof v1\nws\n{}\n{challenge}", fresh.id());
    // A wrong key's signature fails and uses up the challenge.
    let wrong = ed25519_dalek::SigningKey::from_bytes(&[43; 32]).sign(message.as_bytes());
    server
        .call(
            "POST",
            "/api/v1/workspaces/ws/recovery/authorize",
            fresh_token,
            Body::Json(json!({"challenge": challenge, "signature": hex(&wrong.to_bytes())})),
        )
        .expect_error(403, "relay.proof_invalid");
    let good = phrase_key.sign(message.as_bytes());
    server
        .call(
            "POST",
            "/api/v1/workspaces/ws/recovery/authorize",
            fresh_token,
            Body::Json(json!({"challenge": challenge, "signature": hex(&good.to_bytes())})),
        )
        .expect_error(403, "relay.proof_invalid");
    let challenge =
        server.call("GET", "/api/v1/workspaces/ws/recovery", fresh_token, Body::None).expect(200).json()["challenge"]
            .as_str()
            .unwrap()
            .to_owned();
    let message = format!("adiuva relay recovery proof v1\nws\n{}\n{challenge}", fresh.id());
    let good = phrase_key.sign(message.as_bytes());
    server
        .call(
            "POST",
            "/api/v1/workspaces/ws/recovery/authorize",
            fresh_token,
            Body::Json(json!({"challenge": challenge, "signature": hex(&good.to_bytes())})),
        )
        .expect(201);
    server.call("GET", "/api/v1/workspaces/ws/changes", fresh_token, Body::None).expect(200);
    // Another account cannot even read the record.
    let stranger = register(&server, "other@example.com", &TestDevice::new(4));
    server
        .call("GET", "/api/v1/workspaces/ws/recovery", Some(&stranger.access), Body::None)
        .expect_error(404, "relay.workspace_not_found");

    // Invites: the relay holds the proof's hash; the MAC is for the inviter.
    let proof = [5u8; 32];
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let invite = json!({"invite_id": "inv1", "expires_at": expires, "proof_hash": blob_id(&proof)});
    server.call("POST", "/api/v1/workspaces/ws/invites", token, Body::Json(invite.clone())).expect(201);
    server
        .call("POST", "/api/v1/workspaces/ws/invites", token, Body::Json(invite))
        .expect_error(409, "relay.invite_used");
    let past = json!({"invite_id": "inv2", "expires_at": "2020-01-01T00:00:00Z", "proof_hash": blob_id(&proof)});
    server.call("POST", "/api/v1/workspaces/ws/invites", token, Body::Json(past)).expect_error(400, "input.invalid");
    let joiner_session = login(&server, "keys@example.com", &joiner);
    let join = |proof: &[u8]| json!({"proof": hex(proof), "payload": hex(b"box public key"), "mac": hex(&[1; 32])});
    let joiner_token = Some(joiner_session.access.as_str());
    server
        .call("POST", "/api/v1/invites/inv1/join", joiner_token, Body::Json(join(&[6; 32])))
        .expect_error(403, "relay.proof_invalid");
    server
        .call("POST", "/api/v1/invites/nope/join", joiner_token, Body::Json(join(&proof)))
        .expect_error(404, "relay.invite_not_found");
    server
        .call("POST", "/api/v1/invites/inv1/join", Some(&stranger.access), Body::Json(join(&proof)))
        .expect_error(404, "relay.invite_not_found");
    server.call("POST", "/api/v1/invites/inv1/join", joiner_token, Body::Json(join(&proof))).expect(201);
    server
        .call("POST", "/api/v1/invites/inv1/join", joiner_token, Body::Json(join(&proof)))
        .expect_error(409, "relay.invite_used");
    let joins = server.call("GET", "/api/v1/workspaces/ws/joins", token, Body::None).expect(200).json();
    assert_eq!(joins[0]["device"], joiner.id());
    assert_eq!(joins[0]["payload"], hex(b"box public key"));
    assert_eq!(joins[0]["authorized"], false);
    server.call("PUT", &format!("/api/v1/workspaces/ws/devices/{}", joiner.id()), token, Body::None).expect(201);
    let joins = server.call("GET", "/api/v1/workspaces/ws/joins", token, Body::None).expect(200).json();
    assert_eq!(joins[0]["authorized"], true);
}

#[test]
fn restore_points_latest_history_304_and_delete() {
    let (_dir, data) = data_dir();
    let mut server = Server::start(&data, &[]);
    let device = TestDevice::new(1);
    let session = account_with_workspace(&mut server, "backup@example.com", "power", 1, &device, "ws");
    let token = Some(session.access.as_str());
    server.call("GET", "/api/v1/backup", token, Body::None).expect_error(404, "relay.not_found");

    let chunks: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 100]).collect();
    for chunk in &chunks {
        put_blob(&server, &session.access, "ws", chunk).expect(201);
    }
    let ids: Vec<String> = chunks.iter().map(|c| blob_id(c)).collect();
    let point = |version: u32, ids: &[String]| json!({"workspace": "ws", "version": version, "checksum": blob_id(b"snapshot"), "chunk_count": ids.len(), "size_bytes": 300, "blob_ids": ids});
    server
        .call("PUT", "/api/v1/backup", token, Body::Json(point(1, &[blob_id(b"not uploaded")])))
        .expect_error(409, "relay.blob_missing");
    let first = server.call("PUT", "/api/v1/backup", token, Body::Json(point(1, &ids[..2]))).expect(201).json();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = server.call("PUT", "/api/v1/backup", token, Body::Json(point(2, &ids))).expect(201).json();

    let latest = server.call("GET", "/api/v1/backup", token, Body::None).expect(200);
    let last_modified = latest.header("last-modified").unwrap().to_owned();
    let body = latest.json();
    assert_eq!(body["id"], second["id"]);
    assert_eq!(body["version"], 2);
    assert_eq!(body["blob_ids"], json!(ids));
    assert_eq!(body["chunk_count"], 3);
    server.call_with("GET", "/api/v1/backup", token, Body::None, &[("if-modified-since", &last_modified)]).expect(304);
    server
        .call_with(
            "GET",
            "/api/v1/backup",
            token,
            Body::None,
            &[("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT")],
        )
        .expect(200);

    let history = server.call("GET", "/api/v1/backup/history?workspace=ws", token, Body::None).expect(200).json();
    let versions: Vec<u64> = history.as_array().unwrap().iter().map(|p| p["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2]);
    assert!(history[0].get("blob_ids").is_none(), "history lists no blob ids");
    for field in ["id", "timestamp", "checksum", "chunk_count", "size_bytes", "workspace"] {
        assert!(history[1].get(field).is_some(), "{field}");
    }

    let second_id = second["id"].as_str().unwrap();
    // One restore point by its id, with its blob ids (an older one than the latest too).
    let one = server.call("GET", &format!("/api/v1/backup/{}", first["id"].as_str().unwrap()), token, Body::None);
    assert_eq!(one.expect(200).json()["blob_ids"], json!(ids[..2]));
    server.call("GET", "/api/v1/backup/not-an-id", token, Body::None).expect_error(404, "relay.not_found");
    server.call("DELETE", &format!("/api/v1/backup/{second_id}"), token, Body::None).expect(204);
    server
        .call("DELETE", &format!("/api/v1/backup/{second_id}"), token, Body::None)
        .expect_error(404, "relay.not_found");
    server.call("DELETE", "/api/v1/backup/not-an-id", token, Body::None).expect_error(404, "relay.not_found");
    let latest = server.call("GET", "/api/v1/backup", token, Body::None).expect(200).json();
    assert_eq!(latest["id"], first["id"]);
    // The blobs of a forgotten restore point stay in the workspace.
    server.call("GET", &format!("/api/v1/workspaces/ws/blobs/{}", ids[2]), token, Body::None).expect(200);
}
