//! Peer sync between real workspaces over real iroh endpoints on loopback (no relay, no address
//! lookup): convergence, what a reconnect sends, and peers that must be refused or that
//! misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::{Actor, Collection, ErrorCode, EventKind, RecordId};
use adiuva_p2p::session::{CLOSE_ERROR, CLOSE_REFUSED};
use adiuva_p2p::{ALPN, PeerOptions, PeerServer, PeerTicket, SharedWorkspace, sync_once};
use iroh::endpoint::{ConnectionError, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

const PASSPHRASE: &str = "correct horse battery staple";

fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

fn join(inviter: &mut Workspace, dir: &Path, name: &str) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), name).unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    pending.complete(dir, protection(), &acceptance).unwrap()
}

fn task_event(title: &str) -> (EventDraft, Effect) {
    let Value::Object(fields) = json!({"title": title, "description": "", "status": "todo", "priority": "medium",
                                       "tags": [], "created_at": "2026-12-03T10:00:00Z"})
    else {
        unreachable!()
    };
    let effect = Effect::CreateRecord { collection: Collection::Tasks, id: RecordId::new(), fields };
    (EventDraft::new(EventKind::new("task.created").unwrap(), Actor::User), effect)
}

fn add_task(workspace: &mut Workspace, title: &str) -> RecordId {
    let (draft, effect) = task_event(title);
    let id = effect.record();
    workspace.commit(draft, effect).unwrap();
    id
}

fn add_note(workspace: &mut Workspace, title: &str) {
    let fields: Map<String, Value> = [
        ("title".to_owned(), json!(title)),
        ("body".to_owned(), json!("a body")),
        ("tags".to_owned(), json!([])),
        ("created_at".to_owned(), json!("2026-12-03T10:00:00Z")),
    ]
    .into_iter()
    .collect();
    let effect = Effect::CreateRecord { collection: Collection::Notes, id: RecordId::new(), fields };
    workspace.commit(EventDraft::new(EventKind::new("note.created").unwrap(), Actor::User), effect).unwrap();
}

/// Every document's name and sorted heads.
fn heads(workspace: &mut Workspace) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for name in workspace.document_names().unwrap() {
        let mut heads: Vec<String> = workspace.heads(&name).unwrap().iter().map(|h| h.to_string()).collect();
        heads.sort();
        all.push((name, heads));
    }
    all.sort();
    all
}

fn shared(workspace: Workspace) -> Arc<Mutex<Workspace>> {
    Arc::new(Mutex::new(workspace))
}

fn dyn_shared(workspace: &Arc<Mutex<Workspace>>) -> Arc<dyn SharedWorkspace> {
    workspace.clone()
}

async fn serve(workspace: &Arc<Mutex<Workspace>>) -> (PeerServer, PeerTicket) {
    let server =
        PeerServer::start(dyn_shared(workspace), adiuva_p2p::Peers::new(), PeerOptions::loopback()).await.unwrap();
    let ticket = server.ticket();
    assert!(!ticket.addrs.is_empty());
    (server, ticket)
}

fn options() -> PeerOptions {
    PeerOptions { stall: Duration::from_secs(5), ..PeerOptions::loopback() }
}

/// A bare iroh endpoint with `secret` as its key: a peer that speaks whatever a test makes it.
async fn raw_endpoint(secret: [u8; 32]) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&secret))
        .relay_mode(RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}

fn addr(ticket: &PeerTicket) -> EndpointAddr {
    EndpointAddr::from_parts(
        iroh::PublicKey::from_bytes(&ticket.device.0).unwrap(),
        ticket.addrs.iter().copied().map(TransportAddr::Ip),
    )
}

/// Sends `bytes` as a raw peer and returns the close code the listener ended the connection with.
async fn close_code_after(secret: [u8; 32], ticket: &PeerTicket, bytes: &[u8]) -> u64 {
    let endpoint = raw_endpoint(secret).await;
    let connection = endpoint.connect(addr(ticket), ALPN).await.unwrap();
    // A listener that refuses the peer at once may close before the stream opens.
    let closed = match connection.open_bi().await {
        Ok((mut send, mut recv)) => {
            let _ = send.write_all(bytes).await;
            let _ = recv.read_to_end(1 << 20).await;
            connection.closed().await
        }
        Err(refused) => refused,
    };
    let code = match closed {
        ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("closed with {other:?}"),
    };
    endpoint.close().await;
    code
}

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
