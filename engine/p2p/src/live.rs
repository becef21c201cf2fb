//! Live sync: a connection that stays open after its first session, so a change reaches the
//! peer as soon as it is committed.
//!
//! Sessions on a live connection are always opened by the dialer, one at a time, each on a
//! stream of its own: the first at once, then one whenever this device gained changes the
//! peer may lack (a local commit, or an import from any peer), and one whenever the listener
//! says it gained some. The listener says so on a one-way stream of its own, a byte per
//! notice; it never starts a session, so the two sides never run two sessions of one link at
//! once. A change is "one the peer may lack" when this device's heads differ from those the
//! link's last session ended with on both sides, so a session's own imports wake nobody.
//!
//! A link whose peer goes away (closed, unreachable, stalled) after a session completed is
//! dialed again, waiting [`RECONNECT_FIRST`] and doubling up to [`RECONNECT_MAX`]; the first
//! session of the new connection brings whatever either side gained meanwhile.
//!
//! [`Peers`] is what every connection of a device shares: that counter of changes, and which
//! peers are connected now (what `adiuva status` shows).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use adiuva_model::DeviceId;
use iroh::Endpoint;
use iroh::endpoint::{Connection, VarInt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{PeerError, Result};
use crate::peer::connect;
use crate::session::{self, CLOSE_DONE, CLOSE_ERROR, Role, SessionReport, Wire, with_workspace};
use crate::{PeerOptions, PeerTicket, SharedWorkspace};

/// What a device's peer connections share.
pub struct Peers {
    /// Bumped whenever the workspace gained changes (a local commit, or an import).
    changed: watch::Sender<u64>,
    /// The peers connected now, with how many connections each.
    connected: Mutex<BTreeMap<DeviceId, usize>>,
}

impl Default for Peers {
    fn default() -> Self {
        Self { changed: watch::Sender::new(0), connected: Mutex::new(BTreeMap::new()) }
    }
}

impl Peers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Tells every live connection that the workspace gained changes: call it after each
    /// durable local commit.
    pub fn changed(&self) {
        self.changed.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The peers connected now.
    pub fn connected(&self) -> Vec<DeviceId> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<DeviceId, usize>> {
        self.connected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `peer` as connected until the returned guard drops.
    pub(crate) fn link(self: &Arc<Self>, peer: DeviceId) -> Link {
        *self.lock().entry(peer).or_default() += 1;
        Link { peers: self.clone(), peer }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A connected peer, counted in [`Peers::connected`] while this lives.
pub(crate) struct Link {
    peers: Arc<Peers>,
    peer: DeviceId,
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut connected = self.peers.lock();
        if let Some(count) = connected.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                connected.remove(&self.peer);
            }
        }
    }
}

/// A task aborted when this drops.
struct Aborting(JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This device's heads digest, if it differs from `last` (what the link's last session ended
/// with on both sides): whether the peer may lack something.
async fn gained_since(shared: &Arc<dyn SharedWorkspace>, peer: DeviceId, last: Option<[u8; 32]>) -> Result<bool> {
    let now = with_workspace(shared, peer, |w| w.peer_heads()).await?.digest();
    Ok(Some(now) != last)
}

/// The first wait before dialing a peer again after a live link was lost; it doubles on each
/// failed attempt up to [`RECONNECT_MAX`], and starts over once a session completes.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(500);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Stays connected to the device `ticket` names until `stop` completes: a session at once, then
/// one whenever either side gained changes (see the module docs). `reported` is told about each
/// session. A link lost once a session completed (the peer went away, or stalled) is dialed
/// again, with backoff, until it comes back; a refusal, a protocol error, or any failure before
/// the first session ends it with that error. Ends with the connection closed as done on `stop`.
pub(crate) async fn live(
    shared: Arc<dyn SharedWorkspace>,
    peers: Arc<Peers>,
    endpoint: &Endpoint,
    ticket: &PeerTicket,
    options: &PeerOptions,
    stop: impl Future<Output = ()>,
    mut reported: impl FnMut(&SessionReport),
) -> Result<()> {
    let peer = ticket.device;
    let mut stop = std::pin::pin!(stop);
    let mut delay = RECONNECT_FIRST;
    let mut sessions = 0;
    loop {
        let before = sessions;
        let attempt = async {
            let connection = connect(&shared, endpoint, ticket, options).await?;
            linked(&shared, &peers, &connection, peer, options, &mut reported, &mut sessions).await
        };
        let error = tokio::select! {
            () = &mut stop => return Ok(()),
            result = attempt => match result {
                Ok(never) => match never {},
                Err(error) => error,
            },
        };
        let transient = matches!(error, PeerError::Unreachable { .. } | PeerError::Stalled { .. });
        if sessions == 0 || !transient {
            return Err(error);
        }
        if sessions > before {
            delay = RECONNECT_FIRST;
        }
        warn!(peer = %peer, code = error.code().as_str(), %error, retry_in_ms = delay.as_millis() as u64, "live peer link lost; dialing again");
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One live connection: sessions as the module docs say, until it fails (`stop` is the
/// caller's: dropping this future closes the connection as done). `sessions` counts those that
/// completed.
async fn linked(
    shared: &Arc<dyn SharedWorkspace>,
    peers: &Arc<Peers>,
    connection: &Connection,
    peer: DeviceId,
    options: &PeerOptions,
    reported: &mut impl FnMut(&SessionReport),
    sessions: &mut usize,
) -> Result<Infallible> {
    let _link = peers.link(peer);
    // Closed as done when the caller stops this future; with the error when it fails.
    let closing = Closing(connection.clone());
    info!(peer = %peer, "live with peer");
    let mut changes = peers.subscribe();
    let (noticed, mut notices) = mpsc::channel(1);
    let _listening = Aborting(tokio::spawn(forward_notices(connection.clone(), noticed)));
    let result = async {
        loop {
            // Whatever is committed from here on wakes the next session, if this one misses it.
            changes.borrow_and_update();
            // Every round's imports are durable as it ends: a session may stop anywhere.
            let report = session_on(shared, connection, peer, options).await?;
            *sessions += 1;
            if report.applied > 0 {
                peers.changed();
            }
            debug!(peer = %peer, applied = report.applied, rounds = report.rounds, "live session ended");
            reported(&report);
            let last = report.converged.then_some(report.digest);
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_ok() && gained_since(shared, peer, last).await? {
                            break;
                        }
                    }
                    notice = notices.recv() => match notice {
                        Some(()) => break,
                        None => return Err(session::ended(peer, connection.close_reason().as_ref(), "the connection ended".into())),
                    },
                }
            }
        }
    }
    .await;
    if let Err(error) = &result {
        closing.0.close(VarInt::from_u32(CLOSE_ERROR), error.code().as_str().as_bytes());
    }
    result
}

/// Closes a live connection as done when dropped (a connection already closed keeps the
/// reason it was closed with).
struct Closing(Connection);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close(VarInt::from_u32(CLOSE_DONE), b"done");
    }
}

/// One session on a new stream of `connection`, as its dialer.
pub(crate) async fn session_on(
    shared: &Arc<dyn SharedWorkspace>,
    connection: &Connection,
    peer: DeviceId,
    options: &PeerOptions,
) -> Result<SessionReport> {
    // A listener that refuses this device closes at once, maybe before the stream opens.
    let (send, recv) = connection.open_bi().await.map_err(|e| session::ended(peer, Some(&e), e.to_string()))?;
    let mut wire = Wire::new(send, recv, connection.clone(), peer, options.stall);
    session::run(shared, &mut wire, Role::Dialer).await
}

/// The dialer's side of the notices (see [`read_notices`]); the channel closes when the
/// connection does.
async fn forward_notices(connection: Connection, noticed: mpsc::Sender<()>) {
    let Ok(stream) = connection.accept_uni().await else { return };
    read_notices(stream, &noticed).await;
    // The stream ended or failed: the connection is going. Wait for it so as not to end the link
    // before a session under way has reported how it ended.
    connection.closed().await;
}

/// Reads the listener's one-way stream of notices until it ends or fails: whatever bytes come,
/// each read of some is a notice (the listener sends one byte per notice; their values mean
/// nothing). One waiting notice is as good as many, so at most one waits in `noticed`.
pub async fn read_notices(mut stream: impl AsyncRead + Unpin, noticed: &mpsc::Sender<()>) {
    let mut buffer = [0u8; 64];
    while let Ok(read) = stream.read(&mut buffer).await
        && read > 0
    {
        let _ = noticed.try_send(());
    }
}

/// The listener's side of the notices: while the connection lasts, tells the dialer each time
/// this device gained changes beyond what the link's last session ended with (`last`).
pub(crate) async fn send_notices(
    shared: Arc<dyn SharedWorkspace>,
    peers: Arc<Peers>,
    connection: Connection,
    peer: DeviceId,
    last: watch::Receiver<Option<[u8; 32]>>,
) {
    let mut changes = peers.subscribe();
    changes.borrow_and_update();
    let mut stream = None;
    while changes.changed().await.is_ok() {
        let last = *last.borrow();
        match gained_since(&shared, peer, last).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(error) => {
                warn!(peer = %peer, %error, "cannot read this device's heads for a live peer");
                continue;
            }
        }
        if stream.is_none() {
            match connection.open_uni().await {
                Ok(opened) => stream = Some(opened),
                Err(_) => return,
            }
        }
        if let Some(stream) = stream.as_mut()
            && stream.write_all(&[1]).await.is_err()
        {
            return;
        }
    }
}
