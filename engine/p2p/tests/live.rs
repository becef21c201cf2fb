//! Live peer sync over real iroh endpoints on loopback: a connection that stays open carries
//! each new change as it is committed, in both directions and on to the listener's other live
//! peers (the listener's as a push, with a session where a push cannot do), dials its peer
//! again when it went away until it is back, and ends cleanly when asked to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::{Collection, RecordId};
use adiuva_p2p::{PeerOptions, PeerServer, PeerTicket, Peers, SessionReport, sync_live};
use common::*;
use tokio::sync::{mpsc, oneshot};

/// Long enough for a loaded machine; the tests wait for events, never for this.
const PATIENCE: Duration = Duration::from_secs(120);

/// The links' logs, in the test's output when it fails (a live link's sessions and pushes
/// interleave in ways no report shows).
fn logs() {
    let _ =
        tracing_subscriber::fmt().with_test_writer().with_env_filter("adiuva_p2p=debug,adiuva_engine=info").try_init();
}

fn patient() -> PeerOptions {
    PeerOptions { stall: PATIENCE, ..PeerOptions::loopback() }
}

/// A device: its workspace and what its connections share.
struct Device {
    workspace: Arc<Mutex<Workspace>>,
    peers: Arc<Peers>,
}

impl Device {
    fn new(workspace: Workspace) -> Self {
        Self { workspace: shared(workspace), peers: Peers::new() }
    }

    /// A local commit, told to this device's live connections as the daemon does.
    fn add_task(&self, title: &str) -> RecordId {
        let id = add_task(&mut self.workspace.lock().unwrap(), title);
        self.peers.changed();
        id
    }

    fn has(&self, id: RecordId) -> bool {
        self.workspace.lock().unwrap().list(Collection::Tasks).unwrap().iter().any(|task| task["id"] == id.to_string())
    }
}

/// A live dialer running: its session reports, and the switch that stops it.
struct LiveDialer {
    reports: mpsc::UnboundedReceiver<SessionReport>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<adiuva_p2p::Result<()>>,
}

impl LiveDialer {
    fn start(device: &Device, ticket: &PeerTicket) -> Self {
        let (sender, reports) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let (shared, peers, ticket) = (dyn_shared(&device.workspace), device.peers.clone(), ticket.clone());
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.await;
            };
            sync_live(shared, peers, &ticket, &patient(), stop, move |report| {
                let _ = sender.send(report.clone());
            })
            .await
        });
        Self { reports, stop: Some(stop), task }
    }

    /// Waits, session by session, until `until` holds.
    async fn wait_for(&mut self, what: &str, until: impl Fn() -> bool) {
        let waited = tokio::time::timeout(PATIENCE, async {
            while !until() {
                if self.reports.recv().await.is_none() {
                    self.ended().await;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "{what}: not within {PATIENCE:?}");
    }

    /// The next session's or push's report.
    async fn next(&mut self) -> SessionReport {
        let report = tokio::time::timeout(PATIENCE, self.reports.recv()).await.expect("a report within the patience");
        match report {
            Some(report) => report,
            None => self.ended().await,
        }
    }

    /// Fails the test with what ended the link (its reports stopped).
    async fn ended(&mut self) -> ! {
        let result = (&mut self.task).await;
        panic!("the live connection ended: {result:?}")
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits until `device` has no peer connected (a peer that closed is counted out once its
/// listener read the close).
async fn wait_until_alone(device: &Device) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !device.peers.connected().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "peers still connected: {:?}", device.peers.connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_carries_each_new_change_both_ways_and_on_to_other_live_peers() {
    logs();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let b = join(&mut a, dirs[1].path(), "b");
    let c = join(&mut a, dirs[2].path(), "c");
    add_task(&mut a, "before the connection");
    let (a, b, c) = (Device::new(a), Device::new(b), Device::new(c));
    let (server, ticket) = serve_sharing(&a.workspace, a.peers.clone()).await;

    let mut b_live = LiveDialer::start(&b, &ticket);
    let mut c_live = LiveDialer::start(&c, &ticket);
    // The first session brings what was there before.
    b_live
        .wait_for("the first session", || b.workspace.lock().unwrap().list(Collection::Tasks).unwrap().len() == 1)
        .await;

    // The listener's change reaches the dialer, with no sync asked for.
    let from_a = a.add_task("on the listener");
    b_live.wait_for("a's change on b", || b.has(from_a)).await;
    // The dialer's change reaches the listener, and through it the listener's other live peer.
    let from_b = b.add_task("on a dialer");
    c_live.wait_for("b's change on c", || c.has(from_b)).await;
    assert!(a.has(from_b));
    assert_eq!(a.peers.connected().len(), 2);
    // Neither side believes the other lacks anything: the side that sent the last change knows
    // the other took it, though the other had nothing more to say.
    let a_id = a.workspace.lock().unwrap().device_id();
    let b_id = b.workspace.lock().unwrap().device_id();
    b_live
        .wait_for("b's session with a ended", || b.workspace.lock().unwrap().peer_lacks(&a_id).unwrap().is_empty())
        .await;
    assert!(a.workspace.lock().unwrap().peer_lacks(&b_id).unwrap().is_empty());

    // Stopping ends the connection cleanly: the listener counts the peer out.
    b_live.stop().await;
    c_live.stop().await;
    wait_until_alone(&a).await;
    let mut all = [&a, &b, &c].map(|device| heads(&mut device.workspace.lock().unwrap()));
    all.sort();
    assert_eq!(all[0], all[2]);
    server.shutdown().await;
}

/// Polls until `until` holds (what a listener records has no report to wait for).
async fn eventually(what: &str, until: impl Fn() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !until() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within {PATIENCE:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_change_reaches_a_live_peer_as_a_push_both_ways_and_a_session_takes_over_where_a_push_cannot() {
    logs();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let b = join(&mut a, dirs[1].path(), "b");
    let (a, b) = (Device::new(a), Device::new(b));
    let a_id = a.workspace.lock().unwrap().device_id();
    let b_id = b.workspace.lock().unwrap().device_id();
    let (server, ticket) = serve_sharing(&a.workspace, a.peers.clone()).await;
    let mut b_live = LiveDialer::start(&b, &ticket);
    let first = b_live.next().await;
    assert!(first.converged && first.rounds > 0, "{first:?}");
    // The listener stores how the session ended after the dialer reported it; a change
    // committed before that goes as a notice, and a session brings it.
    eventually("a records the first session", || {
        a.workspace.lock().unwrap().peer_states(&b_id).unwrap().last_sync.is_some()
    })
    .await;

    // One new change travels as a push, in no round, and each side records that the other holds
    // it; the first task of a bucket comes with the bucket's registration.
    let pushed = a.add_task("pushed");
    let report = b_live.next().await;
    assert_eq!((report.rounds, report.applied, report.converged), (0, 2, true), "{report:?}");
    assert!(b.has(pushed));
    // Each records it once the answer is sent or read.
    eventually("b records that it holds a's push", || {
        b.workspace.lock().unwrap().peer_lacks(&a_id).unwrap().is_empty()
    })
    .await;
    eventually("a records that b holds the push", || a.workspace.lock().unwrap().peer_lacks(&b_id).unwrap().is_empty())
        .await;
    // The dialer's own change goes the other way as a push too.
    let from_b = b.add_task("pushed by the dialer");
    let report = b_live.next().await;
    assert_eq!((report.rounds, report.applied, report.converged), (0, 0, true), "{report:?}");
    assert!(a.has(from_b));
    eventually("a records that it holds b's push", || {
        a.workspace.lock().unwrap().peer_lacks(&b_id).unwrap().is_empty()
    })
    .await;

    // b holds a change a lacks (committed without telling its links) when a's push comes: the
    // digests differ after it, and a session settles both. The links' pushes may cross in
    // other orders too (b's link may still hold a wake from its own last push); whichever way,
    // each side ends with the other's change.
    let unannounced = add_task(&mut b.workspace.lock().unwrap(), "unannounced on b");
    let from_a = a.add_task("pushed while b holds news");
    b_live.wait_for("a's change on b and b's on a", || b.has(from_a) && a.has(unannounced)).await;

    // More changes than a push carries (1,000): a notice, and a session brings them (one
    // already under way may bring some). Pushes may still come, with nothing b lacks.
    let many = (0..1001).map(|index| task_event(&format!("one of many, {index}"))).collect();
    a.workspace.lock().unwrap().commit_batch(many).unwrap();
    a.peers.changed();
    let mut brought = 0;
    while brought < 1001 {
        let report = b_live.next().await;
        assert!(report.rounds > 0 || report.applied == 0, "a push carried part of the 1,001: {report:?}");
        brought += report.applied;
    }
    assert_eq!(brought, 1001);
    assert_eq!(heads(&mut a.workspace.lock().unwrap()), heads(&mut b.workspace.lock().unwrap()));
    b_live.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_link_whose_listener_goes_away_dials_again_until_it_is_back() {
    logs();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = Workspace::init(dirs[0].path(), protection(), "a").unwrap();
    let b = join(&mut a, dirs[1].path(), "b");
    let (a, b) = (Device::new(a), Device::new(b));
    let (server, ticket) = serve_sharing(&a.workspace, a.peers.clone()).await;
    let mut b_live = LiveDialer::start(&b, &ticket);
    let first = a.add_task("before the listener goes away");
    b_live.wait_for("the first change on b", || b.has(first)).await;

    // Gone, and back at the same address: each side wrote meanwhile.
    server.shutdown().await;
    wait_until_alone(&b).await;
    let from_a = a.add_task("on a, while apart");
    let from_b = b.add_task("on b, while apart");
    let again = PeerOptions { bind: Some(ticket.addrs[0]), ..patient() };
    let server = PeerServer::start(dyn_shared(&a.workspace), a.peers.clone(), again).await.unwrap();
    assert_eq!(server.ticket(), ticket);
    b_live.wait_for("both changes on both sides", || b.has(from_a) && a.has(from_b)).await;
    assert_eq!(heads(&mut a.workspace.lock().unwrap()), heads(&mut b.workspace.lock().unwrap()));
    b_live.stop().await;
    server.shutdown().await;
}
