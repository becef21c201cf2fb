//! Live sync: a connection that stays open after its first session, so a change reaches the
//! peer as soon as it is committed.
//!
//! Sessions on a live connection are always opened by the dialer, one at a time, each on a
//! stream of its own: the first at once, then one whenever a push cannot do. Whenever a side
//! gained changes the peer may lack (a local commit, or an import from any peer), it pushes
//! them (see [`push`](crate::push)): the dialer on a stream of its own, which the listener
//! tells from a session by its first frame; the listener on its stream of news, which the
//! dialer takes in between sessions. A push that cannot be made (too many changes) or that
//! leaves the digests different ends in a session: the dialer runs one, the listener sends a
//! notice for one. The listener never starts a session, so the two sides never run two
//! sessions of one link at once. A change is "one the peer may lack" when this device's heads
//! differ from those the link's last session or push ended with on both sides, so a session's
//! own imports wake nobody.
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
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{PeerError, Result};
use crate::frame::Frame;
use crate::peer::connect;
use crate::push;
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
    let (noticed, mut news) = mpsc::channel(1);
    let _listening = Aborting(tokio::spawn(forward_news(connection.clone(), peer, options.stall, noticed)));
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
            let mut last = report.converged.then_some(report.digest);
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            continue;
                        }
                        match push_on(shared, connection, peer, options, last).await? {
                            Pushed::Nothing => {}
                            Pushed::Taken(report) => {
                                reported(&report);
                                last = Some(report.digest);
                            }
                            Pushed::NeedsSession => break,
                        }
                    }
                    next = news.recv() => match next {
                        Some(Ok(News::Notice)) => break,
                        Some(Ok(News::Push { digest, units, answer })) => {
                            let (report, heads) = push::take(shared, peer, digest, units).await?;
                            let _ = answer.send(report.digest);
                            if report.applied > 0 {
                                peers.changed();
                            }
                            debug!(peer = %peer, applied = report.applied, converged = report.converged, "live push taken in");
                            reported(&report);
                            if let Some(heads) = heads {
                                push::settle(shared, peer, heads).await?;
                            }
                            if !report.converged {
                                break;
                            }
                            last = Some(report.digest);
                        }
                        Some(Err(error)) => return Err(error),
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
    session::run(shared, &mut wire, Role::Dialer, None).await
}

/// What came of the dialer's push of its new changes.
enum Pushed {
    /// The peer is known to hold everything already.
    Nothing,
    /// The peer took them in and holds what this side holds.
    Taken(SessionReport),
    /// Too many to push, or the peer holds something this side lacks: run a session.
    NeedsSession,
}

/// The dialer's push (see [`push`]): on a stream of its own, answered by the listener with its
/// heads digest, as the listener's pushes are.
async fn push_on(
    shared: &Arc<dyn SharedWorkspace>,
    connection: &Connection,
    peer: DeviceId,
    options: &PeerOptions,
    last: Option<[u8; 32]>,
) -> Result<Pushed> {
    let Some((frame, heads)) = with_workspace(shared, peer, move |w| push::news_for(w, peer, [last, None])).await?
    else {
        return Ok(Pushed::Nothing);
    };
    let (Frame::Push { digest, .. }, Some(heads)) = (&frame, heads) else {
        return Ok(Pushed::NeedsSession);
    };
    let digest = *digest;
    let (send, recv) = connection.open_bi().await.map_err(|e| session::ended(peer, Some(&e), e.to_string()))?;
    let mut wire = Wire::new(send, recv, connection.clone(), peer, options.stall);
    wire.send_frame(&frame).await?;
    match wire.receive_frame().await? {
        Frame::Heads(theirs) if theirs == digest => {
            push::settle(shared, peer, heads).await?;
            let (bytes_sent, bytes_received) = (wire.bytes_sent, wire.bytes_received);
            Ok(Pushed::Taken(SessionReport {
                peer: Some(peer),
                converged: true,
                digest,
                bytes_sent,
                bytes_received,
                ..SessionReport::default()
            }))
        }
        Frame::Heads(_) => Ok(Pushed::NeedsSession),
        _ => Err(PeerError::Protocol { peer: peer.to_string(), detail: "a push answered with another frame".into() }),
    }
}

/// What the listener's stream of news brings the dialer.
enum News {
    /// The listener gained changes it could not push: run a session.
    Notice,
    /// New changes; `answer` takes this side's heads digest once they are taken in.
    Push { digest: [u8; 32], units: Vec<(String, Vec<u8>)>, answer: oneshot::Sender<[u8; 32]> },
}

/// The dialer's side of the news: reads the stream the listener opens for it and hands each
/// frame to the link, answering each push with what the link took in. A frame that is neither
/// a notice nor a push, or not a frame at all, is handed on as the error that ends the link; the
/// channel closes when the connection does.
async fn forward_news(connection: Connection, peer: DeviceId, stall: Duration, news: mpsc::Sender<Result<News>>) {
    let Ok((send, recv)) = connection.accept_bi().await else { return };
    let mut wire = Wire::new(send, recv, connection.clone(), peer, stall);
    loop {
        match wire.receive_news().await {
            // One waiting notice is as good as many; a push waits for its turn, and the listener
            // sends nothing more until it is answered.
            Ok(Frame::Notice) => {
                let _ = news.try_send(Ok(News::Notice));
            }
            Ok(Frame::Push { digest, units }) => {
                let (answer, answered) = oneshot::channel();
                if news.send(Ok(News::Push { digest, units, answer })).await.is_err() {
                    return;
                }
                let Ok(digest) = answered.await else { return };
                if wire.send_frame(&Frame::Heads(digest)).await.is_err() {
                    break;
                }
            }
            Ok(_) => {
                let detail = "a frame other than a notice or a push on the stream of news".into();
                let _ = news.send(Err(PeerError::Protocol { peer: peer.to_string(), detail })).await;
                return;
            }
            Err(error) => {
                // A stream that ends with its connection is not the peer's fault: wait for the
                // connection so a session under way reports how it ended.
                if matches!(error, PeerError::Unreachable { .. }) {
                    break;
                }
                let _ = news.send(Err(error)).await;
                return;
            }
        }
    }
    connection.closed().await;
}

/// The listener's side of the news: while the connection lasts, each time this device gained
/// changes beyond what the dialer is known to hold (what the link's last session ended with,
/// `last`, or the last push it took), pushes them, or sends a notice when they cannot be pushed
/// (see [`push`]); after a push it waits for the answer before it sends anything more.
pub(crate) async fn send_news(
    shared: Arc<dyn SharedWorkspace>,
    peers: Arc<Peers>,
    connection: Connection,
    peer: DeviceId,
    last: watch::Receiver<Option<[u8; 32]>>,
    stall: Duration,
) {
    let mut changes = peers.subscribe();
    changes.borrow_and_update();
    let mut wire = None;
    let mut pushed = None;
    while changes.changed().await.is_ok() {
        let known = [*last.borrow(), pushed];
        let (frame, heads) = match with_workspace(&shared, peer, move |w| push::news_for(w, peer, known)).await {
            Ok(Some(news)) => news,
            Ok(None) => continue,
            Err(error) => {
                warn!(peer = %peer, %error, "cannot tell a live peer what this device gained");
                continue;
            }
        };
        if wire.is_none() {
            match connection.open_bi().await {
                Ok((send, recv)) => wire = Some(Wire::new(send, recv, connection.clone(), peer, stall)),
                Err(_) => return,
            }
        }
        let Some(wire) = wire.as_mut() else { return };
        if wire.send_frame(&frame).await.is_err() {
            return;
        }
        let Some(heads) = heads else { continue };
        // Answered once the dialer is between sessions; what this device gains meanwhile waits.
        match wire.receive_news().await {
            Ok(Frame::Heads(theirs)) if theirs == heads.digest() => {
                if let Err(error) = push::settle(&shared, peer, heads).await {
                    warn!(peer = %peer, %error, "cannot record what a live peer took in");
                }
                pushed = Some(theirs);
            }
            // The dialer lacks something the push could not bring: it runs a session.
            Ok(Frame::Heads(_)) => {}
            Ok(_) => {
                warn!(peer = %peer, "a live peer answered a push with another frame; closing");
                connection.close(VarInt::from_u32(CLOSE_ERROR), b"peer.protocol");
                return;
            }
            Err(_) => return,
        }
    }
}
