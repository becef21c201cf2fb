//! What the peer tests share: workspaces, edits, and raw iroh endpoints on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use adiuva_p2p::{ALPN, PeerOptions, PeerServer, PeerTicket, Peers, SharedWorkspace};
use iroh::endpoint::{Connection, ConnectionError, RecvStream, SendStream, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub const PASSPHRASE: &str = "correct horse battery staple";

pub fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

pub fn open(dir: &Path) -> Workspace {
    Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap()
}

/// Copies a closed workspace's directory: an older copy to restore, or a fork.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn join(inviter: &mut Workspace, dir: &Path, name: &str) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), name).unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    pending.complete(dir, protection(), &acceptance).unwrap()
}

pub fn task_event(title: &str) -> (EventDraft, Effect) {
    let Value::Object(fields) = json!({"title": title, "description": "", "status": "todo", "priority": "medium",
                                       "tags": [], "created_at": "2026-12-03T10:00:00Z"})
    else {
        unreachable!()
    };
    let effect = Effect::CreateRecord { collection: Collection::Tasks, id: task_id(), fields };
    (EventDraft::new(EventKind::new("task.created").unwrap(), Actor::User), effect)
}

/// The bucket of the tests' tasks: all in one, so that how many changes a sync carries is
/// exact (a task into a new bucket brings its registration too).
pub const TASKS: &str = "tasks/0";

/// A new task id whose record goes to [`TASKS`].
pub fn task_id() -> RecordId {
    std::iter::repeat_with(RecordId::new).find(|id| Collection::Tasks.document_of(*id) == TASKS).unwrap()
}

pub fn add_task(workspace: &mut Workspace, title: &str) -> RecordId {
    let (draft, effect) = task_event(title);
    let id = effect.record();
    workspace.commit(draft, effect).unwrap();
    id
}

pub fn add_note(workspace: &mut Workspace, title: &str) {
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
pub fn heads(workspace: &mut Workspace) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for name in workspace.document_names().unwrap() {
        let mut heads: Vec<String> = workspace.heads(&name).unwrap().iter().map(|h| h.to_string()).collect();
        heads.sort();
        all.push((name, heads));
    }
    all.sort();
    all
}

pub fn shared(workspace: Workspace) -> Arc<Mutex<Workspace>> {
    Arc::new(Mutex::new(workspace))
}

pub fn dyn_shared(workspace: &Arc<Mutex<Workspace>>) -> Arc<dyn SharedWorkspace> {
    workspace.clone()
}

pub async fn serve(workspace: &Arc<Mutex<Workspace>>) -> (PeerServer, PeerTicket) {
    serve_sharing(workspace, Peers::new()).await
}

/// Listening, with `peers` shared with this device's other connections.
pub async fn serve_sharing(workspace: &Arc<Mutex<Workspace>>, peers: Arc<Peers>) -> (PeerServer, PeerTicket) {
    let server = PeerServer::start(dyn_shared(workspace), peers, PeerOptions::loopback()).await.unwrap();
    let ticket = server.ticket();
    assert!(!ticket.addrs.is_empty());
    (server, ticket)
}

/// A dialer's options: patient, since a loaded machine may take seconds over a round in a debug
/// build (no test waits for this limit).
pub fn options() -> PeerOptions {
    PeerOptions { stall: Duration::from_secs(60), ..PeerOptions::loopback() }
}

/// A bare iroh endpoint with `secret` as its key: a peer that speaks whatever a test makes it.
pub async fn raw_endpoint(secret: [u8; 32]) -> Endpoint {
    raw_endpoint_accepting(secret, Vec::new()).await
}

/// [`raw_endpoint`], accepting connections for `alpns`.
pub async fn raw_endpoint_accepting(secret: [u8; 32], alpns: Vec<Vec<u8>>) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&secret))
        .relay_mode(RelayMode::Disabled)
        .alpns(alpns)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}

/// A raw endpoint with `device`'s key accepting `alpn`, and the ticket to dial it at.
pub async fn raw_listener(device: &Workspace, alpn: &[u8]) -> (Endpoint, PeerTicket) {
    let endpoint = raw_endpoint_accepting(*device.endpoint_secret(), vec![alpn.to_vec()]).await;
    let ticket = PeerTicket { device: device.device_id(), addrs: endpoint.bound_sockets() };
    (endpoint, ticket)
}

/// The first connection a raw endpoint accepts, and the first stream pair its dialer opens.
pub async fn first_stream(endpoint: &Endpoint) -> (Connection, SendStream, RecvStream) {
    let connection = endpoint.accept().await.unwrap().await.unwrap();
    let (send, recv) = connection.accept_bi().await.unwrap();
    (connection, send, recv)
}

pub fn addr(ticket: &PeerTicket) -> EndpointAddr {
    EndpointAddr::from_parts(
        iroh::PublicKey::from_bytes(&ticket.device.0).unwrap(),
        ticket.addrs.iter().copied().map(TransportAddr::Ip),
    )
}

/// Sends `bytes` as a raw peer and returns the close code the listener ended the connection with.
pub async fn close_code_after(secret: [u8; 32], ticket: &PeerTicket, bytes: &[u8]) -> u64 {
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
