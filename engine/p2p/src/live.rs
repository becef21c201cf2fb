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
//! [`Peers`] is what every connection of a device shares: that counter of changes, and which
//! peers are connected now (what `adiuva status` shows).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use adiuva_model::DeviceId;
use iroh::Endpoint;
use iroh::endpoint::{Connection, VarInt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::Result;
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

/// Stays connected to the device `ticket` names until `stop` completes or the connection
/// fails: a session at once, then one whenever either side gained changes (see the module
/// docs). `reported` is told about each session. Ends with the connection closed as done on
/// `stop`, or with the error that ended it.
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
    let connection = connect(&shared, endpoint, ticket, options).await?;
    let _link = peers.link(peer);
    info!(peer = %peer, "live with peer");
    let mut changes = peers.subscribe();
    let (noticed, mut notices) = mpsc::channel(1);
    let _listening = Aborting(tokio::spawn(forward_notices(connection.clone(), noticed)));
    let mut stop = std::pin::pin!(stop);
    let result = async {
        loop {
            // Whatever is committed from here on wakes the next session, if this one misses it.
            changes.borrow_and_update();
            let report = tokio::select! {
                // Every round's imports are durable as it ends: a session may stop anywhere.
                () = &mut stop => return Ok(()),
                report = session_on(&shared, &connection, peer, options) => report?,
            };
            if report.applied > 0 {
                peers.changed();
            }
            debug!(peer = %peer, applied = report.applied, rounds = report.rounds, "live session ended");
            reported(&report);
            let last = report.converged.then_some(report.digest);
            loop {
                tokio::select! {
                    () = &mut stop => return Ok(()),
                    changed = changes.changed() => {
                        if changed.is_ok() && gained_since(&shared, peer, last).await? {
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
    match &result {
        Ok(_) => connection.close(VarInt::from_u32(CLOSE_DONE), b"done"),
        Err(error) => connection.close(VarInt::from_u32(CLOSE_ERROR), error.code().as_str().as_bytes()),
    }
    result
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

/// The dialer's side of the notices: each byte the listener sends on its one-way stream is a
/// notice; the channel closes when the connection does.
async fn forward_notices(connection: Connection, noticed: mpsc::Sender<()>) {
    let mut buffer = [0u8; 64];
    let Ok(mut stream) = connection.accept_uni().await else { return };
    while let Ok(Some(read)) = stream.read(&mut buffer).await {
        if read > 0 {
            // One waiting notice is as good as many.
            let _ = noticed.try_send(());
        }
    }
    // The stream ended or failed: the connection is going. Wait for it so as not to end the link
    // before a session under way has reported how it ended.
    connection.closed().await;
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
