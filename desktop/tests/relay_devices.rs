//! `adiuva device invite` and `adiuva device join` over a real `adiuva-server` on loopback,
//! each a real `adiuva` process: the ticket one prints makes the other a device of the same
//! workspace, the ticket works once, and the relay never holds the joined device's name, a
//! record or the acceptance in clear. `backup now|list` and `restore --point` through the
//! same binary. A unit that does not open: `adiuva sync` syncs the rest and fails with its
//! code, and `status` and `account status` show it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../engine/sync/tests/common/mod.rs"]
mod common;
mod relay_cli;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::*;
use relay_cli::{adiuva, succeeded, titles};
use serde_json::Value;

#[test]
fn a_ticket_from_device_invite_makes_a_second_device_once() {
    let mut relay = Relay::start();
    let (a_dir, b_dir, c_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b_dir = b_dir.path().join("joined");
    let email = "invite@example.com";
    {
        let mut a = first_device(&mut relay, a_dir.path(), email);
        add_task(&mut a, "written before the invite: plumb-marker-4711");
        sync(&mut a);
    }

    let mut inviter = adiuva(a_dir.path())
        .args(["device", "invite", "--valid-for", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(inviter.stdout.take().unwrap());
    let mut ticket = String::new();
    stdout.read_line(&mut ticket).unwrap();
    let ticket = ticket.trim().to_owned();
    assert!(ticket.starts_with("adiuva-join-relay-1-"), "{ticket:?}");

    let joined = succeeded(
        adiuva(&b_dir).args(["device", "join", &ticket, "--device-name", "desk-name-marker"]).output().unwrap(),
    );
    assert!(joined.contains("joined workspace"), "{joined}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = inviter.wait().unwrap();
    assert!(status.success(), "the inviter failed");
    assert!(rest.contains("joined"), "{rest}");

    // The new device holds what was written before, and the device list shows both.
    assert_eq!(titles(&b_dir), ["written before the invite: plumb-marker-4711"]);
    let devices: Value =
        serde_json::from_str(&succeeded(adiuva(&b_dir).args(["device", "list", "--json"]).output().unwrap())).unwrap();
    let names: Vec<&str> = devices.as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{devices}");
    assert!(names.contains(&"desk-name-marker"));

    // Both write and sync through the relay from then on.
    succeeded(adiuva(&b_dir).args(["task", "add", "written on the joined device"]).output().unwrap());
    succeeded(adiuva(&b_dir).arg("sync").output().unwrap());
    succeeded(adiuva(a_dir.path()).arg("sync").output().unwrap());
    assert_eq!(titles(a_dir.path()), titles(&b_dir));
    assert_eq!(titles(a_dir.path()).len(), 2);

    // Single use: the same ticket again is refused by the relay, and nothing is created.
    let again = adiuva(c_dir.path()).args(["device", "join", &ticket]).output().unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("relay.invite_used"), "{stderr}");
    assert!(!c_dir.path().join("store").exists());

    // A restore point made on one device, listed and applied on the other (which holds it all
    // already: nothing to bring back).
    let made = succeeded(adiuva(a_dir.path()).args(["backup", "now"]).output().unwrap());
    assert!(made.starts_with("restore point "), "{made}");
    let points: Value =
        serde_json::from_str(&succeeded(adiuva(&b_dir).args(["backup", "list", "--json"]).output().unwrap())).unwrap();
    let id = points[0]["id"].as_str().unwrap();
    assert_eq!(points.as_array().unwrap().len(), 1);
    let applied = succeeded(adiuva(&b_dir).args(["restore", "--point", id]).output().unwrap());
    assert!(applied.contains("applied: 0 changes"), "{applied}");

    // The relay held the acceptance, the units and the restore point, sealed: no name, record or marker in clear.
    for (path, bytes) in files_under(&relay.data) {
        for marker in [b"desk-name-marker".as_slice(), b"plumb-marker-4711", b"written on the joined device"] {
            assert!(
                !contains(&bytes, marker),
                "{} holds {:?} in clear",
                path.display(),
                String::from_utf8_lossy(marker)
            );
        }
    }
}

#[test]
fn a_ticket_that_is_not_one_is_refused_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let output = adiuva(dir.path()).args(["device", "join", "adiuva-join-relay-1-00ff"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invite.ticket_invalid"), "{stderr}");
    let output = adiuva(dir.path()).args(["device", "join", "something else"]).output().unwrap();
    assert!(!output.status.success());
    assert!(!dir.path().join("store").exists());
}

#[test]
fn a_unit_that_does_not_open_fails_adiuva_sync_with_its_code_once_the_rest_is_synced_and_status_names_it_until_dismissed()
 {
    let mut relay = Relay::start();
    let dir = tempfile::tempdir().unwrap();
    let email = "held@example.com";
    let (device, ws, phrase) = {
        let mut a = first_device(&mut relay, dir.path(), email);
        let phrase = a.create_recovery().unwrap().to_string();
        sync(&mut a);
        (a.device_id(), a.workspace_id().to_string(), phrase)
    };
    // A device of the workspace uploads bytes no device can open.
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, device).unwrap().access_token;
    let junk = client.put_blob(&token, &ws, b"not a unit of any workspace").unwrap().seq;

    succeeded(adiuva(dir.path()).args(["task", "add", "written after the junk"]).output().unwrap());
    let synced = adiuva(dir.path()).arg("sync").output().unwrap();
    assert!(!synced.status.success());
    let (stdout, stderr) = (String::from_utf8_lossy(&synced.stdout), String::from_utf8_lossy(&synced.stderr));
    assert!(stdout.contains(&format!("held back relay unit #{junk}")), "{stdout}");
    assert!(stdout.contains("0 events wait to go out"), "the rest was synced: {stdout}");
    assert!(stderr.contains("sync.unit_malformed"), "{stderr}");

    let status = succeeded(adiuva(dir.path()).arg("status").output().unwrap());
    assert!(status.contains("held back  1 relay units"), "{status}");
    let account = succeeded(adiuva(dir.path()).args(["account", "status"]).output().unwrap());
    assert!(account.contains(&format!("held back unit #{junk}: sync.unit_malformed")), "{account}");

    // No restore point covers it: a restore stops at it and names it; told to, holds it back.
    let restored = tempfile::tempdir().unwrap();
    let restore = |target: &str, hold: &[&str]| {
        let mut command = adiuva(&restored.path().join(target));
        command.args(["restore", "--server", &relay.url, "--email", email, "--phrase", &phrase, "--id", &ws]);
        command.args(hold).output().unwrap()
    };
    let stopped = restore("stopped", &[]);
    assert!(!stopped.status.success());
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stderr.contains(&format!("`--hold-unit {junk}` restores the rest")), "{stderr}");
    assert!(stderr.contains("sync.unit_malformed"), "{stderr}");
    let held = succeeded(restore("held", &["--hold-unit", &junk.to_string()]));
    assert!(held.contains(&format!("held back relay unit #{junk}: sync.unit_malformed")), "{held}");
    let tasks = succeeded(adiuva(&restored.path().join("held")).args(["task", "list"]).output().unwrap());
    assert!(tasks.contains("written after the junk"), "{tasks}");

    // Judged junk and dismissed, it is tried no more: `sync` succeeds, and nothing is held.
    let dismissed = succeeded(adiuva(dir.path()).args(["account", "dismiss", &junk.to_string()]).output().unwrap());
    assert!(dismissed.contains(&format!("dismissed relay unit #{junk} (sync.unit_malformed)")), "{dismissed}");
    let again = adiuva(dir.path()).args(["account", "dismiss", &junk.to_string()]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("input.invalid"), "{again:?}");
    succeeded(adiuva(dir.path()).arg("sync").output().unwrap());
    let status = succeeded(adiuva(dir.path()).arg("status").output().unwrap());
    assert!(!status.contains("held back"), "{status}");
}
