//! Devices syncing through a real `adiuva-server` on loopback: two and three devices editing
//! tasks and notes concurrently, and while the relay is down, converge to the same records and
//! heads; the relay holds nothing in clear, and only padded sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use adiuva_model::ErrorCode;
use common::*;

fn assert_converged(devices: &mut [&mut adiuva_engine::Workspace]) {
    let first = snapshot(devices[0]);
    assert!(!first.tasks.is_empty(), "there are tasks");
    for device in devices.iter_mut().skip(1) {
        let other = snapshot(device);
        assert_eq!(first.tasks, other.tasks, "tasks differ");
        assert_eq!(first.notes, other.notes, "notes differ");
        assert_eq!(first.heads, other.heads, "heads differ");
    }
}

#[test]
fn two_devices_converge_after_concurrent_edits_and_an_outage() {
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "two@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    let shared = add_task(&mut a, "shared");
    sync(&mut a);
    sync(&mut b);
    // Both edit the same task and add their own records, concurrently.
    edit_task(&mut a, shared, "title by a");
    edit_task(&mut b, shared, "title by b");
    add_note(&mut a, "note by a", "written on a");
    add_task(&mut b, "task by b");
    assert!(adiuva_sync::sync_once(&mut a, &mut |_| {}).unwrap().pushed > 0);
    sync(&mut b);
    sync(&mut a);
    assert_converged(&mut [&mut a, &mut b]);

    // The relay goes down: work goes on, sync reports offline and what waits.
    relay.kill();
    add_task(&mut a, "offline on a");
    add_note(&mut b, "offline on b", "body");
    edit_task(&mut b, shared, "offline title by b");
    let error = adiuva_sync::sync_once(&mut a, &mut |_| {}).unwrap_err();
    assert_eq!(error.code(), ErrorCode::SyncOffline, "{error}");
    assert!(a.relay_waiting(&relay.url).unwrap() > 0);
    relay.restart();
    sync(&mut a);
    assert_eq!(a.relay_waiting(&relay.url).unwrap(), 0);
    sync(&mut b);
    sync(&mut a);
    assert_converged(&mut [&mut a, &mut b]);
    // Nothing new: a sync sends nothing.
    assert_eq!(sync(&mut b).pushed, 0);
}

#[test]
fn three_devices_converge_after_concurrent_edits_and_an_outage() {
    let mut relay = Relay::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let email = "three@example.com";
    let mut a = first_device(&mut relay, dirs[0].path(), email);
    let mut b = join(&mut a, &relay, dirs[1].path(), email, "b");
    let mut c = join(&mut a, &relay, dirs[2].path(), email, "c");
    let shared = add_task(&mut a, "shared");
    let note = add_note(&mut a, "shared note", "first body");
    sync(&mut a); // authorizes b and c on the relay
    sync(&mut b);
    sync(&mut c);
    for (n, device) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        edit_task(device, shared, &format!("title by device {n}"));
        add_task(device, &format!("task of device {n}"));
        add_note(device, &format!("note of device {n}"), "body");
    }
    for device in [&mut a, &mut b, &mut c] {
        sync(device);
    }
    sync(&mut a);
    sync(&mut b);
    assert_converged(&mut [&mut a, &mut b, &mut c]);
    assert!(a.get(adiuva_model::Collection::Notes, note).unwrap().is_some());

    relay.kill();
    for (n, device) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        edit_task(device, shared, &format!("offline title by device {n}"));
        add_task(device, &format!("offline task of device {n}"));
        let error = adiuva_sync::sync_once(device, &mut |_| {}).unwrap_err();
        assert_eq!(error.code(), ErrorCode::SyncOffline);
    }
    relay.restart();
    for device in [&mut c, &mut b, &mut a] {
        sync(device);
    }
    sync(&mut c);
    sync(&mut b);
    assert_converged(&mut [&mut a, &mut b, &mut c]);
    let tasks = a.list(adiuva_model::Collection::Tasks).unwrap();
    assert_eq!(tasks.len(), 7, "the shared task and two of each device's: none lost, none twice");
}

#[test]
fn a_marker_in_a_task_is_nowhere_in_clear_on_the_relay_and_units_are_padded() {
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "marker@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    let marker = "MARKER-4f1e9c-relay-plaintext";
    add_task(&mut a, &format!("task {marker}"));
    add_note(&mut a, "note", &format!("body {marker}"));
    sync(&mut a);
    sync(&mut b);
    let tasks = b.list(adiuva_model::Collection::Tasks).unwrap();
    assert!(tasks.iter().any(|t| t["title"].as_str().unwrap().contains(marker)), "b reads it");
    relay.stop();
    let files = files_under(relay.data.parent().unwrap());
    assert!(files.len() > 2);
    for (path, bytes) in &files {
        assert!(!contains(bytes, marker.as_bytes()), "{} holds the marker in clear", path.display());
    }
    relay.restart();
    // The relay sees sizes only in buckets: powers of two of at least 1 KiB.
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let session = client.sign_in(false, email, PASSWORD, a.device_id()).unwrap();
    let page = client.changes(&session.access_token, &a.workspace_id().to_string(), 0).unwrap();
    assert!(!page.changes.is_empty());
    for entry in &page.changes {
        assert!(entry.size >= 1024 && entry.size.is_power_of_two(), "unit of {} bytes", entry.size);
    }
}

#[test]
fn a_device_does_not_pull_back_its_own_units() {
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "own-units@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    sync(&mut a);
    sync(&mut b);
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, a.device_id()).unwrap().access_token;
    let ws = a.workspace_id().to_string();
    for n in 0..3 {
        add_task(&mut a, &format!("task {n} on a"));
        sync(&mut a);
    }
    let head = client.changes(&token, &ws, 0).unwrap().head;
    assert_eq!(a.relay_state(&relay.url).unwrap().cursor, head);
    assert_eq!(sync(&mut a).pulled, 0);

    // b's unit is pulled once, and a's own, pushed after it, is not.
    add_task(&mut b, "on b");
    sync(&mut b);
    add_task(&mut a, "on a, after b's");
    assert_eq!(sync(&mut a).pulled, 1);
    assert_eq!(a.relay_state(&relay.url).unwrap().cursor, client.changes(&token, &ws, 0).unwrap().head);
    assert_eq!(sync(&mut a).pulled, 0);
    sync(&mut b);
    assert_converged(&mut [&mut a, &mut b]);
}
