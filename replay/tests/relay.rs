//! A relay backup audited as its directory is: the built workspace synced to a real relay
//! (`adiuva-server` on loopback), then every answer of `adiuva-replay … --server URL --email E
//! --phrase P --id WS` compared with the same command on the directory; afterwards the relay's
//! authorized devices and the workspace's device list are what they were, and no copy is left
//! in the temporary directory. A wrong phrase is a typed error that leaves nothing either; a
//! unit that does not open is a fault, the rest audited.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../engine/sync/tests/common/mod.rs"]
mod relay_harness;

use std::path::Path;
use std::process::Output;

use adiuva_engine::{EventFilter, Workspace};
use common::*;
use relay_harness::{PASSWORD, Relay};
use serde_json::Value;

const EMAIL: &str = "auditor@example.com";

/// `adiuva-replay ARGS`, with its temporary directory in `tmp` and the account's password.
fn replay_in(tmp: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_adiuva-replay"))
        .args(args)
        .env("ADIUVA_PASSPHRASE", PASSPHRASE)
        .env("ADIUVA_PASSWORD", PASSWORD)
        .env("TMPDIR", tmp)
        .env_remove("ADIUVA_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The workspace's authorized devices as the relay lists them.
fn devices_on_relay(relay: &Relay, workspace: &Workspace) -> Vec<String> {
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, EMAIL, PASSWORD, workspace.device_id()).unwrap().access_token;
    let url = format!("{}/api/v1/workspaces/{}/devices", relay.url, workspace.workspace_id());
    let mut answer = ureq::get(&url).header("authorization", &format!("Bearer {token}")).call().unwrap();
    let listed: Value = serde_json::from_slice(&answer.body_mut().read_to_vec().unwrap()).unwrap();
    let mut devices: Vec<String> =
        listed.as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap().to_owned()).collect();
    devices.sort();
    devices
}

fn device_list(workspace: &mut Workspace) -> Vec<(String, bool)> {
    workspace.devices().unwrap().iter().map(|d| (d.id.to_string(), d.is_removed())).collect()
}

#[test]
fn a_relay_backup_answers_as_its_directory_and_leaves_no_device_behind() {
    let built = build();
    let mut relay = Relay::start();
    let mut a = Workspace::open(built.path(), passphrase).unwrap();
    adiuva_sync::sign_in(&mut a, &relay.url, EMAIL, PASSWORD, true).unwrap();
    relay.set_tier(EMAIL, "team", 100);
    adiuva_sync::sign_in(&mut a, &relay.url, EMAIL, PASSWORD, false).unwrap();
    let phrase = a.create_recovery().unwrap().to_string();
    adiuva_sync::sync_once(&mut a, &mut |_| {}).unwrap();
    let ws = a.workspace_id().to_string();
    let on_relay = devices_on_relay(&relay, &a);
    let in_workspace = device_list(&mut a);
    let changes: Vec<String> =
        a.events(&EventFilter::default()).unwrap().into_iter().map(|event| event.change).collect();
    drop(a);

    let tmp = tempfile::tempdir().unwrap();
    let dir = built.path().to_str().unwrap().to_owned();
    let from_relay = ["--server", relay.url.as_str(), "--email", EMAIL, "--phrase", phrase.as_str(), "--id", &ws];
    let both = |args: &[&str]| -> (String, String) {
        let on_dir = stdout(&replay_in(tmp.path(), &[&args[..1], &[dir.as_str()], &args[1..]].concat()));
        let on_relay = stdout(&replay_in(tmp.path(), &[args, &from_relay[..]].concat()));
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left its copy behind: {left:?}");
        (on_dir, on_relay)
    };

    let (on_dir, on_relay_report) = both(&["verify", "--json"]);
    let (on_dir, on_relay_report): (Value, Value) =
        (serde_json::from_str(&on_dir).unwrap(), serde_json::from_str(&on_relay_report).unwrap());
    assert_eq!(on_relay_report["faults"], serde_json::json!([]), "{on_relay_report}");
    assert_eq!(on_dir["faults"], serde_json::json!([]));
    assert_eq!(on_relay_report["documents"], on_dir["documents"]);
    assert_eq!(on_relay_report["changes"], on_dir["changes"]);

    let (on_dir, relayed) = both(&["events", "--format", "json"]);
    assert_eq!(relayed, on_dir);
    let listed: Vec<Value> = serde_json::from_str(&relayed).unwrap();
    assert_eq!(listed.len(), changes.len(), "every event, and no `device.added` for the audit");

    for change in [&changes[1], &changes[changes.len() / 2], &changes[changes.len() - 1]] {
        let (on_dir, relayed) = both(&["at", "--change", change, "--format", "json"]);
        assert_eq!(relayed, on_dir, "at {change}");
    }
    let milk = built.records.milk.to_string();
    let (on_dir, relayed) = both(&["history", &milk, "--json"]);
    assert_eq!(relayed, on_dir);
    let (on_dir, relayed) = both(&["diff", &changes[2], &changes[changes.len() - 1], "--json"]);
    assert_eq!(relayed, on_dir);

    // A wrong phrase: a typed error, and nothing left.
    let wrong = adiuva_engine::recovery::new_phrase().unwrap();
    let output = replay_in(
        tmp.path(),
        &["verify", "--server", &relay.url, "--email", EMAIL, "--phrase", wrong.as_str(), "--id", &ws],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[recovery.wrong_phrase]"), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    // No device was authorized on the relay, and none joined the workspace.
    let mut a = Workspace::open(built.path(), passphrase).unwrap();
    assert_eq!(devices_on_relay(&relay, &a), on_relay);
    adiuva_sync::sync_once(&mut a, &mut |_| {}).unwrap();
    assert_eq!(device_list(&mut a), in_workspace);

    // A unit that does not open (a device's junk upload, or the relay's doing) is a fault the
    // audit reports, exit 1, having read everything else.
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, EMAIL, PASSWORD, a.device_id()).unwrap().access_token;
    let junk = client.put_blob(&token, &ws, b"not a unit of any workspace").unwrap().seq;
    let output = replay_in(tmp.path(), &[&["verify", "--json"], &from_relay[..]].concat());
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1, "{report}");
    assert_eq!(faults[0]["code"], "sync.unit_malformed");
    assert!(faults[0]["message"].as_str().unwrap().starts_with(&format!("relay unit #{junk}:")), "{report}");
    assert_eq!(report["changes"], on_relay_report["changes"], "everything else was read");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
