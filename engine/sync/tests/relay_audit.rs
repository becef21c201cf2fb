//! Reading a workspace from a real relay for an audit: the copy holds the relay's log (every
//! document's heads, every event, the device list) and adds no device anywhere — not on the
//! relay, not in the workspace; the read grant it reads with reads but writes nothing, is
//! bound to its workspace and device, and expires; a wrong phrase is a typed error that leaves
//! nothing behind; a unit that does not open is reported, and the copy goes on past it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use adiuva_engine::identity::DeviceIdentity;
use adiuva_engine::{EventFilter, Workspace};
use adiuva_model::ErrorCode;
use adiuva_sync::{RelayClient, RestoreFrom};
use common::*;
use zeroize::Zeroizing;

/// The workspace's authorized devices as the relay lists them.
fn devices_on_relay(relay: &Relay, email: &str, device: &Workspace) -> Vec<String> {
    let client = RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, device.device_id()).unwrap().access_token;
    let url = format!("{}/api/v1/workspaces/{}/devices", relay.url, device.workspace_id());
    let mut answer = ureq::get(&url).header("authorization", &format!("Bearer {token}")).call().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&answer.body_mut().read_to_vec().unwrap()).unwrap();
    let mut devices: Vec<String> =
        listed.as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap().to_owned()).collect();
    devices.sort();
    devices
}

fn device_ids(workspace: &mut Workspace) -> Vec<(String, bool)> {
    workspace.devices().unwrap().iter().map(|d| (d.id.to_string(), d.is_removed())).collect()
}

/// Two devices, one of them removed (so the key rotated), tasks and notes from both, and a
/// recovery phrase whose wrapped key the relay holds.
fn audited_workspace(relay: &mut Relay, dirs: &[tempfile::TempDir], email: &str) -> (Workspace, String) {
    let mut a = first_device(relay, dirs[0].path(), email);
    let mut b = join(&mut a, relay, dirs[1].path(), email, "b");
    add_task(&mut a, "on a");
    sync(&mut a);
    sync(&mut b);
    add_task(&mut b, "on b");
    add_note(&mut b, "b's note", "written on b");
    sync(&mut b);
    sync(&mut a);
    a.remove_device(b.device_id()).unwrap();
    add_task(&mut a, "after the rotation");
    let phrase = a.create_recovery().unwrap().to_string();
    add_note(&mut a, "a's note", "after the phrase");
    sync(&mut a);
    (a, phrase)
}

fn copy(server: &str, email: &str, ws: &str, phrase: &str, dir: &Path) -> adiuva_sync::Result<adiuva_sync::AuditCopy> {
    let from = RestoreFrom { server, email, password: PASSWORD, workspace: ws, phrase };
    adiuva_sync::copy_for_audit(dir, protection(), &from, &mut |_| {})
}

#[test]
fn an_audit_copy_holds_the_relays_log_and_adds_no_device_anywhere() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "audit@example.com";
    let (mut a, phrase) = audited_workspace(&mut relay, &dirs, email);
    let ws = a.workspace_id().to_string();
    let on_relay = devices_on_relay(&relay, email, &a);
    let in_workspace = device_ids(&mut a);

    let target = dirs[2].path().join("copy");
    let wrong = adiuva_engine::recovery::new_phrase().unwrap();
    let error = copy(&relay.url, email, &ws, &wrong, &target).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RecoveryWrongPhrase, "{error}");
    assert!(!target.exists(), "a wrong phrase leaves nothing behind");

    let from = RestoreFrom { server: &relay.url, email, password: PASSWORD, workspace: &ws, phrase: &phrase };
    let mut pulled = Vec::new();
    let copied =
        adiuva_sync::copy_for_audit(&target, protection(), &from, &mut |progress| pulled.push(progress)).unwrap();
    assert_eq!(copied.workspace_id, a.workspace_id());
    assert!(copied.units > 0);
    assert!(
        matches!(pulled.last(), Some(adiuva_sync::Progress::Pulling { done, total }) if *done == copied.head && *total == copied.head)
    );

    let mut audited = Workspace::open_read_only(&target, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
    for document in a.document_names().unwrap() {
        assert_eq!(a.heads(&document).unwrap(), audited.heads(&document).unwrap(), "{document}");
    }
    let changes = |workspace: &mut Workspace| -> Vec<String> {
        workspace.events(&EventFilter::default()).unwrap().into_iter().map(|event| event.change).collect()
    };
    assert_eq!(changes(&mut audited), changes(&mut a), "every event, nothing added");
    let copy_devices: Vec<(String, bool)> = device_ids(&mut audited);
    assert_eq!(copy_devices, in_workspace, "the copy's device list is the workspace's");
    assert!(!copy_devices.iter().any(|(id, _)| *id == audited.device_id().to_string()), "the copy is no device");

    // Nothing granted lasts, nothing was added: on the relay (the audit's session revoked too),
    // and in the log after a sync.
    let log = std::fs::read_to_string(relay.data.with_extension("log")).unwrap();
    let logouts = log.lines().filter(|line| line.contains("/api/v1/auth/logout") && line.contains("204")).count();
    assert_eq!(logouts, 2, "the wrong phrase's session and the copy's were both revoked");
    assert_eq!(devices_on_relay(&relay, email, &a), on_relay);
    sync(&mut a);
    assert_eq!(device_ids(&mut a), in_workspace);

    // A unit no device can open (here a device's junk upload) is a fault the copy reports and
    // goes on past, where a restore stops.
    let client = RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, a.device_id()).unwrap().access_token;
    let junk = client.put_blob(&token, &ws, b"not a unit of any workspace").unwrap().seq;
    let past = copy(&relay.url, email, &ws, &phrase, &dirs[2].path().join("past junk")).unwrap();
    let faults: Vec<_> = past.refused.iter().map(|(seq, error)| (*seq, error.code())).collect();
    assert_eq!(faults, [(junk, ErrorCode::SyncUnitMalformed)]);
    let audited =
        Workspace::open_read_only(&dirs[2].path().join("past junk"), || Some(Zeroizing::new(PASSPHRASE.into())));
    let mut audited = audited.unwrap();
    for document in a.document_names().unwrap() {
        assert_eq!(a.heads(&document).unwrap(), audited.heads(&document).unwrap(), "{document}");
    }
}

#[test]
fn a_read_grant_reads_but_cannot_write_is_bound_to_its_device_and_expires() {
    let mut relay = Relay::start_with(&["--read-grant-ttl", "2"]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "grant@example.com";
    let (a, phrase) = audited_workspace(&mut relay, &dirs, email);
    let ws = a.workspace_id().to_string();
    let on_relay = devices_on_relay(&relay, email, &a);
    let client = RelayClient::new(&relay.url);
    let auditor = DeviceIdentity::generate().unwrap();
    let token = client.sign_in(false, email, PASSWORD, auditor.device_id()).unwrap().access_token;
    let record = client.get_recovery(&token, &ws).unwrap();
    let unwrapped =
        adiuva_engine::recovery::unwrap(&phrase, &adiuva_model::hex::decode(&record.wrapped_key).unwrap()).unwrap();
    let proof = |context: &str, challenge: &str| {
        let message = format!("{context}\n{ws}\n{}\n{challenge}", auditor.device_id());
        unwrapped.keys.identity.sign(message.as_bytes())
    };
    // A proof made for authorizing is no proof for reading (and uses the challenge up).
    let error = client
        .read_grant(&token, &ws, &record.challenge, &proof("adiuva relay recovery proof v1", &record.challenge))
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayProofInvalid, "{error}");
    let challenge = client.get_recovery(&token, &ws).unwrap().challenge;
    let grant =
        client.read_grant(&token, &ws, &challenge, &proof("adiuva relay recovery read v1", &challenge)).unwrap();
    let error =
        client.read_grant(&token, &ws, &challenge, &proof("adiuva relay recovery read v1", &challenge)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayProofInvalid, "a challenge is single use: {error}");

    // It reads the sequence and its blobs; without it the device is refused as before.
    let page = client.changes_granted(&token, Some(&grant.grant), &ws, 0).unwrap();
    let first = &page.changes[0];
    client.get_blob_granted(&token, Some(&grant.grant), &ws, &first.id).unwrap();
    let error = client.changes(&token, &ws, 0).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayDeviceNotAuthorized, "{error}");

    // It writes nothing: every write route refuses the device, grant or not.
    let put = |path: &str, body: &[u8]| {
        let url = format!("{}/api/v1/workspaces/{ws}/{path}", relay.url);
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut answer = agent
            .put(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header("x-adiuva-read-grant", &grant.grant)
            .header("content-type", "application/octet-stream")
            .send(body)
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&answer.body_mut().read_to_vec().unwrap()).unwrap();
        (answer.status().as_u16(), body["error"]["code"].as_str().unwrap().to_owned())
    };
    let blob = b"written with a read grant";
    let refused = (403, "relay.device_not_authorized".to_owned());
    assert_eq!(put(&format!("blobs/{}", blake3::hash(blob).to_hex()), blob), refused);
    assert_eq!(put(&format!("devices/{}", auditor.device_id()), b""), refused);
    assert_eq!(put(&format!("key-envelopes/{}/1", auditor.device_id()), b"envelope"), refused);

    // Bound to its device: another device of the account cannot use it.
    let other = DeviceIdentity::generate().unwrap();
    let other_token = client.sign_in(false, email, PASSWORD, other.device_id()).unwrap().access_token;
    let error = client.changes_granted(&other_token, Some(&grant.grant), &ws, 0).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayGrantInvalid, "{error}");
    let error = client.changes_granted(&token, Some("not.a.grant"), &ws, 0).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayGrantInvalid, "{error}");

    // It expires.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let error = client.changes_granted(&token, Some(&grant.grant), &ws, 0).unwrap_err();
    assert_eq!(error.code(), ErrorCode::RelayGrantExpired, "{error}");
    assert_eq!(devices_on_relay(&relay, email, &a), on_relay, "no device was authorized");
}
