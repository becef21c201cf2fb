//! Peer sync between real workspaces over real iroh endpoints on loopback (no relay, no address
//! lookup): convergence, what a reconnect sends, and peers that must be refused or that
//! misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::{Collection, ErrorCode};
use adiuva_p2p::session::{CLOSE_ERROR, CLOSE_REFUSED};
use adiuva_p2p::{PeerOptions, PeerServer, sync_once};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_converge_and_a_reconnect_sends_only_what_is_new() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let mut b = join(&mut a, dirs[1].path(), "b");
    // Concurrent edits, while apart.
    for i in 0..20 {
        add_task(&mut a, &format!("a{i}"));
    }
    for i in 0..5 {
        add_task(&mut b, &format!("b{i}"));
        add_note(&mut b, &format!("note b{i}"));
    }
    let (a, b) = (shared(a), shared(b));
    let (server, ticket) = serve(&a).await;

    let first = sync_once(dyn_shared(&b), &ticket, &options()).await.unwrap();
    assert!(first.converged, "{first:?}");
    assert!(first.applied >= 20, "{first:?}");
    assert_eq!(heads(&mut a.lock().unwrap()), heads(&mut b.lock().unwrap()));
    assert_eq!(b.lock().unwrap().list(Collection::Tasks).unwrap().len(), 25);
    assert_eq!(a.lock().unwrap().list(Collection::Notes).unwrap().len(), 5);

    // Nothing new: only the opening messages of each document go out.
    let again = sync_once(dyn_shared(&b), &ticket, &options()).await.unwrap();
    assert!(again.converged);
    assert_eq!(again.applied, 0);
    assert!(again.bytes_received < first.bytes_received / 2, "{again:?} after {first:?}");

    // One new change: it, and no more, crosses.
    add_task(&mut a.lock().unwrap(), "one more");
    let one = sync_once(dyn_shared(&b), &ticket, &options()).await.unwrap();
    assert!(one.converged);
    assert_eq!(one.applied, 1);
    assert_eq!(heads(&mut a.lock().unwrap()), heads(&mut b.lock().unwrap()));
    assert!(b.lock().unwrap().peer_lacks(&a.lock().unwrap().device_id()).unwrap().is_empty());
    server.shutdown().await;
}

/// Each change crosses once. Messages that crossed in flight made Automerge take the new
/// device's empty document for one that lost everything, and send every change again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_joined_empty_receives_each_change_once() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let b = join(&mut a, dirs[1].path(), "b");
    a.commit_batch((0..500).map(|i| task_event(&format!("task {i}"))).collect()).unwrap();
    let changes = a.export_changes(TASKS, &[]).unwrap().len() as u64;
    let (a, b) = (shared(a), shared(b));
    let (server, ticket) = serve(&a).await;

    let report = sync_once(dyn_shared(&b), &ticket, &options()).await.unwrap();
    assert!(report.converged, "{report:?}");
    assert_eq!(report.applied, 501, "the tasks and their bucket's registration");
    assert!(report.bytes_received < changes + changes / 5, "{report:?}, the changes are {changes} bytes");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_unknown_devices_are_refused_before_any_data_moves() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let mut removed = join(&mut a, dirs[1].path(), "removed");
    let mut other = Workspace::init(dirs[2].path(), protection(), "another workspace").unwrap();
    a.remove_device(removed.device_id()).unwrap();
    add_task(&mut removed, "written after its removal");
    add_task(&mut other, "of another workspace");
    let before = heads(&mut a);
    let a = shared(a);
    let (server, ticket) = serve(&a).await;

    // The removed device still lists `a`, so it dials; `a` refuses it.
    let removed_secret = *removed.endpoint_secret();
    let refused = sync_once(dyn_shared(&shared(removed)), &ticket, &options()).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::PeerRefused, "{refused}");
    assert!(refused.to_string().contains("device.removed"), "{refused}");

    // A device of another workspace does not even dial a device not in its list.
    let other_secret = *other.endpoint_secret();
    let not_dialed = sync_once(dyn_shared(&shared(other)), &ticket, &options()).await.unwrap_err();
    assert_eq!(not_dialed.code(), ErrorCode::PeerRefused);
    // Dialing anyway, it is refused by the listener, as is an unknown key and the removed device.
    for secret in [other_secret, [42; 32], removed_secret] {
        assert_eq!(
            close_code_after(secret, &ticket, b"\0\0\0\x16\x01ADVP\x01hello, any data?").await,
            u64::from(CLOSE_REFUSED)
        );
    }
    assert_eq!(heads(&mut a.lock().unwrap()), before);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_gets_a_closed_connection_and_the_device_serves_others() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let hostile = join(&mut a, dirs[1].path(), "hostile");
    let honest = join(&mut a, dirs[2].path(), "honest");
    add_task(&mut a, "kept safe");
    let hostile_secret = *hostile.endpoint_secret();
    let workspace_id = a.workspace_id().to_bytes();
    drop(hostile);
    let before = heads(&mut a);
    let a = shared(a);
    let (server, ticket) = serve(&a).await;

    let hello = [&[0, 0, 0, 22, 1][..], b"ADVP", &[1], &workspace_id].concat();
    let oversized = [&hello[..], &[0xff, 0xff, 0xff, 0xff]].concat();
    let garbage_frame = [&hello[..], &[0, 0, 0, 3, 9, 9, 9]].concat();
    // A round whose message for the root is not an Automerge sync message.
    let bad_sync = [&hello[..], &[0, 0, 0, 21, 2, 0, 0, 0, 1, 0, 4], b"root", &[0, 0, 0, 2, 7, 7, 0, 0, 0, 0]].concat();
    for bytes in [&b"garbage before any hello"[..], &oversized, &garbage_frame, &bad_sync] {
        assert_eq!(close_code_after(hostile_secret, &ticket, bytes).await, u64::from(CLOSE_ERROR));
    }
    assert_eq!(heads(&mut a.lock().unwrap()), before);

    let report = sync_once(dyn_shared(&shared(honest)), &ticket, &options()).await.unwrap();
    assert!(report.converged, "{report:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_busy_taking_in_a_large_round_is_not_taken_for_stalled() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let b = join(&mut a, dirs[1].path(), "b");
    // Enough changes that the new device takes longer than the stall limit to take them in.
    for group in 0..10 {
        let events = (0..1000).map(|i| task_event(&format!("task {group}.{i}"))).collect();
        a.commit_batch(events).unwrap();
    }
    let (a, b) = (shared(a), shared(b));
    // Only the listener is quick to call a stall: it is the side that waits while the new
    // device takes the changes in. The new device waits patiently while they are gathered.
    let quick = PeerOptions { stall: Duration::from_secs(1), ..PeerOptions::loopback() };
    let server = PeerServer::start(dyn_shared(&a), adiuva_p2p::Peers::new(), quick).await.unwrap();

    let report = sync_once(dyn_shared(&b), &server.ticket(), &PeerOptions::loopback()).await.unwrap();
    assert!(report.converged, "{report:?}");
    assert_eq!(b.lock().unwrap().list(Collection::Tasks).unwrap().len(), 10_000);
    server.shutdown().await;
}
