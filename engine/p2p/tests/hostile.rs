//! Hostile and unlucky peers over real iroh endpoints on loopback (no relay, no address lookup):
//! changes signed by a key the workspace does not know, inside an otherwise valid session or a
//! push; a peer that stalls mid-session, on either side; a reconnect with peer state the other
//! side no longer matches (a device restored from an older copy); two devices dialing each
//! other at once; an inviter whose refusal arrives after its stream ended. Each ends with a
//! typed error or a converged workspace, never a damaged one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_engine::workspace::PeerStates;
use adiuva_model::{Collection, ErrorCode};
use adiuva_p2p::frame::{Frame, VERSION};
use adiuva_p2p::join::JOIN_ALPN;
use adiuva_p2p::session::{CLOSE_ERROR, CLOSE_REFUSED};
use adiuva_p2p::{ALPN, PeerOptions, PeerServer, PeerTicket, Peers, sync_once};
use common::*;
use iroh::Endpoint;
use iroh::endpoint::{Connection, ConnectionError, RecvStream, SendStream};

/// A side that gives up on a silent peer quickly: the stall tests wait for it.
fn quick() -> PeerOptions {
    PeerOptions { stall: Duration::from_secs(1), ..PeerOptions::loopback() }
}

/// A peer that speaks the protocol's frames itself, as a test scripts it.
struct RawPeer {
    endpoint: Endpoint,
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
}

impl RawPeer {
    /// Dials the device `ticket` names with `secret` as its key and opens a session's stream.
    async fn dial(secret: [u8; 32], ticket: &PeerTicket) -> Self {
        let endpoint = raw_endpoint(secret).await;
        let connection = endpoint.connect(addr(ticket), ALPN).await.unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        Self { endpoint, connection, send, recv }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, frame: &Frame) {
        let body = frame.encode();
        self.write(&(body.len() as u32).to_be_bytes()).await;
        self.write(&body).await;
    }

    async fn receive(&mut self) -> Frame {
        let mut prefix = [0u8; 4];
        self.recv.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.recv.read_exact(&mut body).await.unwrap();
        Frame::decode(&body).unwrap()
    }

    /// The hello both ways, as the dialer.
    async fn hello(&mut self, workspace_id: [u8; 16]) {
        self.send(&Frame::Hello { version: VERSION, workspace_id }).await;
        assert!(matches!(self.receive().await, Frame::Hello { .. }));
    }

    /// Empty rounds until the other side's is empty too: a phase that brings nothing here.
    async fn settle_phase(&mut self) {
        loop {
            self.send(&Frame::Round(Vec::new())).await;
            let Frame::Round(theirs) = self.receive().await else { panic!("a round expected") };
            if theirs.is_empty() {
                return;
            }
        }
    }

    /// How the other side closed the connection: its code and reason.
    async fn closed(self) -> (u64, String) {
        let closed = self.connection.closed().await;
        self.endpoint.close().await;
        match closed {
            ConnectionError::ApplicationClosed(close) => {
                (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).into_owned())
            }
            other => panic!("closed with {other:?}"),
        }
    }
}

/// Closes a workspace once the tasks of a server shut down let go of it, so its directory can
/// be copied or opened again.
async fn close(workspace: Arc<Mutex<Workspace>>) {
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while Arc::strong_count(&workspace) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the workspace is still shared");
    drop(workspace);
}

fn task_titles(workspace: &Mutex<Workspace>) -> Vec<String> {
    let tasks = workspace.lock().unwrap().list(Collection::Tasks).unwrap();
    let mut titles: Vec<String> = tasks.iter().map(|task| task["title"].as_str().unwrap().to_owned()).collect();
    titles.sort();
    titles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_signed_by_an_unknown_key_in_a_valid_session_or_a_push_end_it_and_nothing_is_kept() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let hostile = join(&mut a, dirs[1].path(), "hostile");
    let honest = join(&mut a, dirs[2].path(), "honest");
    add_task(&mut a, "kept safe");
    let (hostile_secret, workspace_id) = (*hostile.endpoint_secret(), a.workspace_id().to_bytes());
    drop((a, hostile));
    // A fork of `a` adds a device `a` never hears of: its changes are well formed, of this
    // workspace, under its keys, and signed by a key `a`'s device list does not hold.
    copy_dir(dirs[0].path(), dirs[3].path());
    let mut outsider = join(&mut open(dirs[3].path()), dirs[4].path(), "outsider");
    add_task(&mut outsider, "signed by a key a does not know");
    let document = TASKS.to_owned();
    // The outsider's answer to `a`'s opening message: the changes `a` lacks.
    let mut a = open(dirs[0].path());
    assert!(a.document_names().unwrap().contains(&document));
    let (mut a_states, mut states) = (PeerStates::default(), PeerStates::default());
    let mut opening = a.peer_message(&mut a_states, &document).unwrap().unwrap();
    let mut rounds = 0;
    let message = loop {
        outsider.receive_peer_message(&mut states, &document, &opening).unwrap();
        let message = outsider.peer_message(&mut states, &document).unwrap().unwrap();
        if !message.changes.is_empty() {
            break message;
        }
        // `a`'s Bloom filter took the outsider's change for one `a` holds (a false positive,
        // about one run in a hundred): the next round asks for it by hash.
        rounds += 1;
        assert!(rounds < 4, "the outsider never sent its change");
        a.receive_peer_message(&mut a_states, &document, &message).unwrap();
        opening = a.peer_message(&mut a_states, &document).unwrap().unwrap();
    };

    let a = shared(a);
    let before = heads(&mut a.lock().unwrap());
    let (server, ticket) = serve(&a).await;

    // An authorized device, in a session that went well so far, passes them on.
    let mut peer = RawPeer::dial(hostile_secret, &ticket).await;
    peer.hello(workspace_id).await;
    peer.settle_phase().await;
    let unit = message.changes.clone();
    peer.send(&Frame::Round(vec![(document.clone(), message)])).await;
    let (code, reason) = peer.closed().await;
    assert_eq!(code, u64::from(CLOSE_ERROR));
    assert_eq!(reason, ErrorCode::DeviceUnknown.as_str());
    assert_eq!(heads(&mut a.lock().unwrap()), before);

    // Or pushes them, as a live link pushes new changes: the same checks, the same end.
    let mut peer = RawPeer::dial(hostile_secret, &ticket).await;
    peer.send(&Frame::Push { digest: [0; 32], units: vec![(document, unit)] }).await;
    let (code, reason) = peer.closed().await;
    assert_eq!(code, u64::from(CLOSE_ERROR));
    assert_eq!(reason, ErrorCode::DeviceUnknown.as_str());
    assert_eq!(heads(&mut a.lock().unwrap()), before);

    // The device goes on serving others, with what it held and nothing more.
    let honest = shared(honest);
    let report = sync_once(dyn_shared(&honest), &ticket, &options()).await.unwrap();
    assert!(report.converged, "{report:?}");
    assert_eq!(task_titles(&honest), ["kept safe"]);
    server.shutdown().await;
    close(a).await;
    let mut reopened = open(dirs[0].path());
    assert_eq!(heads(&mut reopened), before);
    assert_eq!(reopened.list(Collection::Tasks).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_that_stalls_mid_session_is_closed_as_stalled_while_others_are_served() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let hostile = join(&mut a, dirs[1].path(), "hostile");
    let honest = shared(join(&mut a, dirs[2].path(), "honest"));
    add_task(&mut a, "kept safe");
    let (hostile_secret, workspace_id) = (*hostile.endpoint_secret(), a.workspace_id().to_bytes());
    let before = heads(&mut a);
    let a = shared(a);
    let server = PeerServer::start(dyn_shared(&a), Peers::new(), quick()).await.unwrap();
    let ticket = server.ticket();

    // Silent after the hello, or silent halfway through a frame.
    for stop_after in [&[][..], &[0, 0, 0, 100, 2, 0, 0]] {
        let mut peer = RawPeer::dial(hostile_secret, &ticket).await;
        peer.hello(workspace_id).await;
        peer.write(stop_after).await;
        // Served while the stalled peer holds its connection.
        let report = sync_once(dyn_shared(&honest), &ticket, &options()).await.unwrap();
        assert!(report.converged, "{report:?}");
        let (code, reason) = peer.closed().await;
        assert_eq!((code, reason.as_str()), (u64::from(CLOSE_ERROR), ErrorCode::PeerStalled.as_str()));
    }
    assert_eq!(heads(&mut a.lock().unwrap()), before);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_stalls_mid_session_ends_the_dialers_sync_as_stalled() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let hostile = join(&mut a, dirs[1].path(), "hostile");
    add_task(&mut a, "kept safe");
    let before = heads(&mut a);
    let a = shared(a);
    // A device of the list listening, that answers the hello and then says nothing more.
    let (endpoint, ticket) = raw_listener(&hostile, ALPN).await;
    let workspace_id = a.lock().unwrap().workspace_id().to_bytes();
    let listening = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let (connection, mut send, mut recv) = first_stream(&endpoint).await;
            let mut hello = [0u8; 26];
            recv.read_exact(&mut hello).await.unwrap();
            let body = Frame::Hello { version: VERSION, workspace_id }.encode();
            send.write_all(&[&(body.len() as u32).to_be_bytes()[..], &body].concat()).await.unwrap();
            connection.closed().await
        }
    });

    let stalled = sync_once(dyn_shared(&a), &ticket, &quick()).await.unwrap_err();
    assert_eq!(stalled.code(), ErrorCode::PeerStalled, "{stalled}");
    assert!(matches!(listening.await.unwrap(), ConnectionError::ApplicationClosed(_)));
    assert_eq!(heads(&mut a.lock().unwrap()), before);
    endpoint.close().await;
}

/// Syncs `dialer` with the device listening at `ticket` until a session converges.
async fn synced(dialer: &Arc<Mutex<Workspace>>, ticket: &PeerTicket) -> adiuva_p2p::SessionReport {
    let report = sync_once(dyn_shared(dialer), ticket, &options()).await.unwrap();
    assert!(report.converged, "{report:?}");
    report
}

/// Replaces the workspace in `dir` by the older copy in `older`, directory and all.
fn restore(dir: &Path, older: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    copy_dir(older, dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_restored_from_an_older_copy_converges_losing_and_duplicating_nothing() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let older = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    {
        let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
        let mut b = join(&mut a, dirs[1].path(), "b");
        add_task(&mut a, "a first");
        add_task(&mut b, "b first");
        let (a, b) = (shared(a), shared(b));
        let (server, ticket) = serve(&a).await;
        synced(&b, &ticket).await;
        server.shutdown().await;
        close(a).await;
        close(b).await;
    }
    let mut expected: BTreeSet<String> = ["a first", "b first"].map(String::from).into();
    let add = |expected: &mut BTreeSet<String>, workspace: &Arc<Mutex<Workspace>>, title: String| {
        add_task(&mut workspace.lock().unwrap(), &title);
        expected.insert(title);
    };
    // Each side in turn (the dialer, then the listener) is put back to the copy taken here, its
    // peer state naming less than the other's says they share.
    for restored in [1, 0] {
        for (dir, copy) in dirs.iter().zip(&older) {
            std::fs::remove_dir_all(copy.path()).unwrap();
            copy_dir(dir.path(), copy.path());
        }
        let (a, b) = (shared(open(dirs[0].path())), shared(open(dirs[1].path())));
        for (workspace, name) in [(&a, "a"), (&b, "b")] {
            add(&mut expected, workspace, format!("{name} {restored}: synced, then forgotten by the restored side"));
        }
        let (server, ticket) = serve(&a).await;
        synced(&b, &ticket).await;
        server.shutdown().await;
        close(a).await;
        close(b).await;

        restore(dirs[restored].path(), older[restored].path());
        let (a, b) = (shared(open(dirs[0].path())), shared(open(dirs[1].path())));
        let other = if restored == 0 { &b } else { &a };
        add(&mut expected, other, format!("{restored}: on the side that was not restored, meanwhile"));
        let (server, ticket) = serve(&a).await;
        synced(&b, &ticket).await;
        // Settled: the next session brings nothing, and both write on from there.
        assert_eq!(synced(&b, &ticket).await.applied, 0);
        for (workspace, name) in [(&a, "a"), (&b, "b")] {
            add(&mut expected, workspace, format!("{name} {restored}: after they met again"));
        }
        synced(&b, &ticket).await;
        let expected: Vec<String> = expected.iter().cloned().collect();
        assert_eq!(task_titles(&a), expected);
        assert_eq!(task_titles(&b), expected);
        assert_eq!(heads(&mut a.lock().unwrap()), heads(&mut b.lock().unwrap()));
        server.shutdown().await;
        close(a).await;
        close(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_dialing_each_other_at_once_both_end_and_converge() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let b = join(&mut a, dirs[1].path(), "b");
    let (a, b) = (shared(a), shared(b));
    let (a_server, a_ticket) = serve(&a).await;
    let (b_server, b_ticket) = serve(&b).await;
    for round in 0..3 {
        for i in 0..20 {
            add_task(&mut a.lock().unwrap(), &format!("a {round}.{i}"));
            add_task(&mut b.lock().unwrap(), &format!("b {round}.{i}"));
        }
        let options = options();
        let (a_dialed, b_dialed) = tokio::join!(
            sync_once(dyn_shared(&a), &b_ticket, &options),
            sync_once(dyn_shared(&b), &a_ticket, &options)
        );
        a_dialed.unwrap();
        b_dialed.unwrap();
        assert_eq!(heads(&mut a.lock().unwrap()), heads(&mut b.lock().unwrap()), "round {round}");
        assert_eq!(task_titles(&a).len(), (round + 1) * 40);
        assert_eq!(task_titles(&a), task_titles(&b));
    }
    a_server.shutdown().await;
    b_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_closing_the_connection_after_the_stream_ended_is_a_typed_refusal() {
    let dirs = [tempfile::tempdir().unwrap()];
    let mut inviter = Workspace::init(dirs[0].path(), protection(), "inviter").unwrap();
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (_pending, request) = Workspace::request_join(&ticket.encode(), "joiner").unwrap();
    // An inviter that reads the request, ends its stream, and only then closes saying why: the
    // order a loaded machine delivered a refusal in.
    let (endpoint, peer) = raw_listener(&inviter, JOIN_ALPN).await;
    let refusing = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let (connection, mut send, mut recv) = first_stream(&endpoint).await;
            let mut length = [0u8; 4];
            recv.read_exact(&mut length).await.unwrap();
            send.finish().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            connection.close(CLOSE_REFUSED.into(), b"invite.unauthentic");
            connection.closed().await
        }
    });

    let refused = adiuva_p2p::join::request(&request, &peer, &quick()).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::PeerRefused, "{refused}");
    assert!(refused.to_string().contains("invite.unauthentic"), "{refused}");
    refusing.await.unwrap();
    endpoint.close().await;
}
