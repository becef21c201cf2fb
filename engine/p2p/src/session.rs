//! One sync session between two devices over one QUIC stream pair, after each side checked the
//! other's key against its device list.
//!
//! 1. **Hello**: the dialer sends its protocol version and workspace id, the listener answers
//!    with its own; a different version or workspace ends the session.
//! 2. **Rounds**, in turn: the dialer sends the first round (a message per document that has
//!    something to say, see [`Frame::Round`]); then each side takes in the round it read and
//!    answers with its own. Each message is made after taking in the one before, as Automerge's
//!    sync protocol expects: messages that cross (each side sending while the other does) make
//!    a side whose document was empty look as though it lost everything, and Automerge sends
//!    every change again. The session moves on after two empty rounds in a row, one from each
//!    side: both sides see both, so both decide alike. The root document goes first, alone (it
//!    says who may write and which documents exist), then every other document together; a
//!    peer removed by what the root brought is dropped before the second phase.
//! 3. **Heads**: each side sends a digest of every document's heads; equal digests mean both
//!    hold the same changes.
//!
//! Each round's imports are durable before the peer state naming them is stored, so a session
//! cut at any point (a peer killed, a connection lost, a stream stalled past the timeout) ends
//! with a typed error and the next one resumes from what was stored. A session that has not
//! settled after [`MAX_ROUNDS`] rounds ends too: no session runs forever.

use std::sync::Arc;
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_engine::workspace::{PeerStates, ROOT_DOCUMENT};
use adiuva_model::{Collection, DeviceId};
use iroh::endpoint::{ConnectionError, RecvStream, SendStream};
use tracing::debug;

use crate::SharedWorkspace;
use crate::error::{PeerError, Result};
use crate::frame::{self, Frame, ROUND_BUDGET, VERSION};

/// Rounds a side sends per phase before it ends the session as looping. Automerge settles in a
/// handful of round trips; each round carries up to [`ROUND_BUDGET`] of changes, so this bounds a session
/// at several GiB moved.
pub const MAX_ROUNDS: usize = 256;

/// The slowest rate at which a peer is expected to take in a round it received (check every
/// change, import it, make it durable). Before its next frame a peer may be silent beyond the
/// stall limit for as long as taking in our last round takes at this rate: a new device taking
/// in a large workspace is busy, not stalled. Bounded, since a round is bounded.
const IMPORT_RATE_FLOOR_BYTES_PER_S: f64 = 64.0 * 1024.0;

/// Close codes: the session ended well, the peer is refused, or this side found an error.
pub const CLOSE_DONE: u32 = 0;
pub const CLOSE_REFUSED: u32 = 1;
pub const CLOSE_ERROR: u32 = 2;

/// What one session did.
#[derive(Clone, Debug, Default)]
pub struct SessionReport {
    pub peer: Option<DeviceId>,
    /// Changes received and applied here.
    pub applied: usize,
    /// Changes received and kept in the pending area (missing dependencies, or a removed
    /// device's beyond its removal).
    pub pending: usize,
    pub rounds: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Both sides ended holding the same heads in every document.
    pub converged: bool,
    /// A digest of this side's heads as the session ended.
    pub digest: [u8; 32],
}

/// Whether this side dialed or was dialed: the dialer speaks first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Dialer,
    Listener,
}

pub(crate) struct Wire {
    pub send: SendStream,
    pub recv: RecvStream,
    pub connection: iroh::endpoint::Connection,
    pub peer: DeviceId,
    pub stall: Duration,
    /// How long, beyond `stall`, the peer may take before its next frame starts: the time it
    /// needs to take in the round this side sent last.
    pub peer_busy: Duration,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Wire {
    pub fn new(
        send: SendStream,
        recv: RecvStream,
        connection: iroh::endpoint::Connection,
        peer: DeviceId,
        stall: Duration,
    ) -> Self {
        Self { send, recv, connection, peer, stall, peer_busy: Duration::ZERO, bytes_sent: 0, bytes_received: 0 }
    }

    fn peer_text(&self) -> String {
        self.peer.to_string()
    }

    /// Why the connection ended, as the peer said it when it closed it.
    fn lost(&self, detail: String) -> PeerError {
        ended(self.peer, self.connection.close_reason().as_ref(), detail)
    }

    async fn write(send: &mut SendStream, body: &[u8]) -> std::result::Result<(), String> {
        let length = u32::try_from(body.len()).map_err(|_| "a frame over 4 GiB".to_owned())?;
        send.write_all(&length.to_be_bytes()).await.map_err(|e| e.to_string())?;
        send.write_all(body).await.map_err(|e| e.to_string())
    }

    /// Reads one frame: its start within `first_byte` (whenever it comes if `None`), the rest
    /// with no gap over `stall`.
    async fn read(
        recv: &mut RecvStream,
        first_byte: Option<Duration>,
        stall: Duration,
    ) -> std::result::Result<Vec<u8>, ReadFailure> {
        let mut prefix = [0u8; 4];
        let started = recv.read_exact(&mut prefix);
        match first_byte {
            Some(limit) => tokio::time::timeout(limit, started).await.map_err(|_| ReadFailure::Stalled)?,
            None => started.await,
        }
        .map_err(ReadFailure::lost)?;
        let length = frame::frame_length(prefix).map_err(ReadFailure::TooLarge)?;
        let mut body = vec![0u8; length];
        tokio::time::timeout(stall, recv.read_exact(&mut body))
            .await
            .map_err(|_| ReadFailure::Stalled)?
            .map_err(ReadFailure::lost)?;
        Ok(body)
    }

    fn failed(&self, failure: ReadFailure) -> PeerError {
        let peer = self.peer_text();
        match failure {
            ReadFailure::Stalled => PeerError::Stalled { peer, seconds: self.stall.as_secs() },
            ReadFailure::TooLarge(length) => {
                PeerError::FrameTooLarge { peer, length: length as u64, limit: frame::MAX_FRAME as u64 }
            }
            ReadFailure::Lost(detail) => self.lost(detail),
        }
    }

    fn decode(&self, body: &[u8]) -> Result<Frame> {
        Frame::decode(body).map_err(|e| PeerError::FrameMalformed { peer: self.peer_text(), detail: e.0 })
    }

    pub async fn send_frame(&mut self, frame: &Frame) -> Result<()> {
        let body = frame.encode();
        Self::write(&mut self.send, &body).await.map_err(|detail| self.lost(detail))?;
        self.sent(&body);
        Ok(())
    }

    pub async fn receive_frame(&mut self) -> Result<Frame> {
        self.receive(Some(self.stall + self.peer_busy)).await
    }

    /// The next frame of a live link's news, which comes whenever the peer has some (the
    /// connection's idle timeout watches a peer that went away).
    pub async fn receive_news(&mut self) -> Result<Frame> {
        self.receive(None).await
    }

    async fn receive(&mut self, first_byte: Option<Duration>) -> Result<Frame> {
        let body = Self::read(&mut self.recv, first_byte, self.stall).await.map_err(|failure| self.failed(failure))?;
        self.bytes_received += 4 + body.len() as u64;
        self.decode(&body)
    }

    /// Counts `body` as sent; the peer takes it in before it sends its next frame.
    fn sent(&mut self, body: &[u8]) {
        self.peer_busy = Duration::from_secs_f64(body.len() as f64 / IMPORT_RATE_FLOOR_BYTES_PER_S);
        self.bytes_sent += 4 + body.len() as u64;
    }

    /// Sends `frame` while reading the peer's, which it sends at the same time.
    async fn exchange(&mut self, frame: &Frame) -> Result<Frame> {
        let body = frame.encode();
        let first_byte = self.stall + self.peer_busy;
        let (written, read) =
            tokio::join!(Self::write(&mut self.send, &body), Self::read(&mut self.recv, Some(first_byte), self.stall));
        written.map_err(|detail| self.lost(detail))?;
        let received = read.map_err(|failure| self.failed(failure))?;
        self.sent(&body);
        self.bytes_received += 4 + received.len() as u64;
        self.decode(&received)
    }
}

/// The error for a connection to `peer` that ended with `reason`: a refusal or a session error
/// when the peer closed it saying so, else unreachable (with `detail`, what failed here).
pub(crate) fn ended(peer: DeviceId, reason: Option<&ConnectionError>, detail: String) -> PeerError {
    let peer = peer.to_string();
    match reason {
        Some(ConnectionError::ApplicationClosed(close)) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            match close.error_code.into_inner() {
                code if code == u64::from(CLOSE_REFUSED) => PeerError::Refused { peer, reason },
                code if code == u64::from(CLOSE_ERROR) => {
                    PeerError::Protocol { peer, detail: format!("the peer ended the session: {reason}") }
                }
                _ => PeerError::Unreachable { peer, detail: format!("the peer closed the connection: {reason}") },
            }
        }
        _ => PeerError::Unreachable { peer, detail },
    }
}

enum ReadFailure {
    Stalled,
    TooLarge(usize),
    Lost(String),
}

impl ReadFailure {
    fn lost(error: impl std::fmt::Display) -> Self {
        ReadFailure::Lost(error.to_string())
    }
}

/// Runs `work` on the workspace on a blocking thread (the engine writes durably).
pub(crate) async fn with_workspace<R: Send + 'static>(
    shared: &Arc<dyn SharedWorkspace>,
    peer: DeviceId,
    work: impl FnOnce(&mut Workspace) -> adiuva_engine::Result<R> + Send + 'static,
) -> Result<R> {
    let shared = shared.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut workspace = shared.workspace();
        work(&mut workspace)
    })
    .await;
    match joined {
        Ok(result) => result.map_err(|source| PeerError::Engine { peer: peer.to_string(), source }),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(PeerError::Unreachable { peer: peer.to_string(), detail: "shutting down".into() }),
    }
}

/// Runs a session on `wire` (see the module docs).
/// A listener passes the stream's first frame, which it read to tell a session from a push.
pub(crate) async fn run(
    shared: &Arc<dyn SharedWorkspace>,
    wire: &mut Wire,
    role: Role,
    first: Option<Frame>,
) -> Result<SessionReport> {
    let peer = wire.peer;
    let workspace_id = with_workspace(shared, peer, |w| Ok(w.workspace_id().to_bytes())).await?;
    let hello = Frame::Hello { version: VERSION, workspace_id };
    let theirs = match role {
        Role::Dialer => {
            wire.send_frame(&hello).await?;
            wire.receive_frame().await?
        }
        Role::Listener => {
            let theirs = match first {
                Some(frame) => frame,
                None => wire.receive_frame().await?,
            };
            check_hello(wire, &theirs, &workspace_id)?;
            wire.send_frame(&hello).await?;
            theirs
        }
    };
    check_hello(wire, &theirs, &workspace_id)?;

    let mut report = SessionReport { peer: Some(peer), ..SessionReport::default() };
    let states = with_workspace(shared, peer, move |w| w.peer_states(&peer)).await?;
    let states = phase(shared, wire, role, states, Phase::Root, &mut report).await?;
    // The root may have brought this peer's removal.
    with_workspace(shared, peer, move |w| w.check_peer(&peer)).await.map_err(|error| PeerError::Refused {
        peer: peer.to_string(),
        reason: format!("{error} (learned during this session)"),
    })?;
    let mut states = phase(shared, wire, role, states, Phase::Documents, &mut report).await?;

    let heads = with_workspace(shared, peer, |w| w.peer_heads()).await?;
    let digest = heads.digest();
    report.converged = wire.exchange(&Frame::Heads(digest)).await? == Frame::Heads(digest);
    report.digest = digest;
    if report.converged {
        states.settled(&heads);
        states.last_sync = Some(chrono::Utc::now());
    }
    with_workspace(shared, peer, move |w| w.set_peer_states(&peer, &states)).await?;
    report.bytes_sent = wire.bytes_sent;
    report.bytes_received = wire.bytes_received;
    Ok(report)
}

fn check_hello(wire: &Wire, frame: &Frame, workspace_id: &[u8; 16]) -> Result<()> {
    let peer = wire.peer.to_string();
    match frame {
        Frame::Hello { version, .. } if *version != VERSION => Err(PeerError::Protocol {
            peer,
            detail: format!("protocol version {version}, this device speaks {VERSION}"),
        }),
        Frame::Hello { workspace_id: theirs, .. } if theirs != workspace_id => {
            Err(PeerError::ForeignWorkspace { peer, theirs: adiuva_model::hex::encode(theirs) })
        }
        Frame::Hello { .. } => Ok(()),
        Frame::Round(_) | Frame::Heads(_) | Frame::Notice | Frame::Push { .. } => {
            Err(PeerError::Protocol { peer, detail: "another frame before the hello".into() })
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Root,
    Documents,
}

impl Phase {
    fn documents(self, workspace: &mut Workspace) -> adiuva_engine::Result<Vec<String>> {
        Ok(match self {
            Phase::Root => vec![ROOT_DOCUMENT.to_owned()],
            Phase::Documents => workspace.document_names()?.into_iter().filter(|name| name != ROOT_DOCUMENT).collect(),
        })
    }
}

async fn phase(
    shared: &Arc<dyn SharedWorkspace>,
    wire: &mut Wire,
    role: Role,
    mut states: PeerStates,
    phase: Phase,
    report: &mut SessionReport,
) -> Result<PeerStates> {
    let peer = wire.peer;
    let mut my_turn = role == Role::Dialer;
    // Whether the last round, either way, was empty: a second one in a row settles the phase.
    let mut last_empty = false;
    let mut sent = 0;
    // What this side's last allowed round carried, for a session that does not settle.
    let mut last_round = String::new();
    loop {
        if my_turn {
            if sent == MAX_ROUNDS {
                return Err(PeerError::SyncLoop { peer: peer.to_string(), rounds: MAX_ROUNDS, last_round });
            }
            let (returned, mine) = with_workspace(shared, peer, move |w| {
                let mut round = Vec::new();
                let mut bytes = 0;
                for document in phase.documents(w)? {
                    // The rest waits for the next round: a message, once made, must be sent.
                    if bytes >= ROUND_BUDGET {
                        break;
                    }
                    if let Some(message) = w.peer_message(&mut states, &document)? {
                        bytes += message.sync.len() + message.changes.len();
                        round.push((document, message));
                    }
                }
                Ok((states, round))
            })
            .await?;
            states = returned;
            sent += 1;
            report.rounds += 1;
            let empty = mine.is_empty();
            if sent == MAX_ROUNDS {
                last_round = describe_round(&mine);
            }
            // Fields are formatted only when the event is enabled.
            debug!(%peer, ?phase, round = describe_round(&mine), "round sent");
            wire.send_frame(&Frame::Round(mine)).await?;
            if empty && last_empty {
                break;
            }
            last_empty = empty;
        } else {
            let Frame::Round(theirs) = wire.receive_frame().await? else {
                return Err(PeerError::Protocol {
                    peer: peer.to_string(),
                    detail: "another frame in place of a round".into(),
                });
            };
            let empty = theirs.is_empty();
            if empty && last_empty {
                break;
            }
            last_empty = empty;
            if !empty {
                debug!(%peer, ?phase, round = describe_round(&theirs), "round received");
                let (returned, applied, pending) = take_in(shared, peer, states, phase, theirs).await?;
                debug!(%peer, ?phase, applied, pending, "round taken in");
                states = returned;
                report.applied += applied;
                report.pending += pending;
            }
        }
        my_turn = !my_turn;
    }
    debug!(?phase, rounds = report.rounds, "phase settled");
    Ok(states)
}

/// Each document of a round with the sizes of its sync message and of the changes it carries.
fn describe_round(round: &[(String, adiuva_engine::workspace::PeerMessage)]) -> String {
    let documents: Vec<String> = (round.iter())
        .map(|(document, message)| format!("{document} {}+{} B", message.sync.len(), message.changes.len()))
        .collect();
    documents.join(", ")
}

/// Takes in the peer's round: every message imported (durably), then the states naming what
/// they brought stored. Returns the states and the changes applied and kept pending.
async fn take_in(
    shared: &Arc<dyn SharedWorkspace>,
    peer: DeviceId,
    mut states: PeerStates,
    phase: Phase,
    theirs: Vec<(String, adiuva_engine::workspace::PeerMessage)>,
) -> Result<(PeerStates, usize, usize)> {
    let (states, applied, pending, unknown) = with_workspace(shared, peer, move |w| {
        let known = phase.documents(w)?;
        // A document the peer's root gained after this session's root phase (a task's new
        // bucket, written meanwhile or brought by another peer): its changes register it here
        // as any import does, and the next session's root phase brings its registration.
        let arrived_since = |document: &str| {
            phase == Phase::Documents && document != ROOT_DOCUMENT && Collection::of_document(document).is_some()
        };
        if let Some((document, _)) =
            theirs.iter().find(|(document, _)| !known.contains(document) && !arrived_since(document))
        {
            return Ok((states, 0, 0, Some(document.clone())));
        }
        let imported = w.receive_peer_round(&mut states, &theirs)?;
        // Every import above is durable: the states naming it may be stored.
        w.set_peer_states(&peer, &states)?;
        Ok((states, imported.applied, imported.pending + imported.refused.len(), None))
    })
    .await?;
    if let Some(document) = unknown {
        let detail = format!("a message for {document:?}, which is not a document of this phase here");
        return Err(PeerError::Protocol { peer: peer.to_string(), detail });
    }
    Ok((states, applied, pending))
}
