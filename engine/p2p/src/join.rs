//! Joining a workspace over P2P, with no relay: `adiuva device invite --p2p` listens with an
//! invitation open, `adiuva device join TICKET` dials it.
//!
//! The ticket is the engine's invitation and the inviter's peer ticket, joined by `+`
//! (`adiuva-join-p2p-1-INVITE+PEER`). On [`JOIN_ALPN`] the joiner sends its
//! [`JoinRequest`] and the inviter answers with its [`JoinAcceptance`], each one length-prefixed
//! JSON frame; both are MAC'd under the invitation's secret, so the transport needs no trust of
//! its own and a dialer without the ticket gets nothing. The joiner then syncs the rest as a
//! device of the workspace, on [`ALPN`](crate::ALPN), like any peer.

use std::sync::Arc;
use std::time::Duration;

use adiuva_engine::{JoinAcceptance, JoinRequest};
use adiuva_model::DeviceId;
use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointAddr, SecretKey, TransportAddr};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::{PeerError, Result};
use crate::peer::bind_with;
use crate::session::{CLOSE_DONE, CLOSE_ERROR, CLOSE_REFUSED, ended, with_workspace};
use crate::{PeerOptions, PeerTicket, SharedWorkspace};

/// The join protocol's ALPN.
pub const JOIN_ALPN: &[u8] = b"adiuva/join/1";
/// How long a joiner whose answer broke off waits for the inviter's close to say why.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

const PREFIX: &str = "adiuva-join-p2p-1-";
/// The largest join request read: a request is a few hundred bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The largest acceptance read: it holds the root document.
pub const MAX_ACCEPTANCE: usize = crate::frame::MAX_FRAME;

/// An invitation and where the inviter listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTicket {
    /// The engine's invitation (`adiuva-invite-1-…`), secret included.
    pub invite: String,
    pub peer: PeerTicket,
}

impl JoinTicket {
    pub fn is_join_ticket(text: &str) -> bool {
        text.trim().starts_with(PREFIX)
    }
}

impl std::fmt::Display for JoinTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}+{}", self.invite, self.peer)
    }
}

impl std::str::FromStr for JoinTicket {
    type Err = PeerError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |detail: &str| PeerError::TicketInvalid { detail: detail.to_owned() };
        let rest =
            text.trim().strip_prefix(PREFIX).ok_or_else(|| invalid("it does not start with adiuva-join-p2p-1-"))?;
        let (invite, peer) = rest.split_once('+').ok_or_else(|| invalid("no + between the invitation and the peer"))?;
        Ok(JoinTicket { invite: invite.to_owned(), peer: peer.parse()? })
    }
}

/// The inviter's side: answers join requests, telling `joined` of each device let in.
#[derive(Clone)]
pub(crate) struct JoinProtocol {
    pub shared: Arc<dyn SharedWorkspace>,
    pub joined: mpsc::UnboundedSender<DeviceId>,
    pub stall: Duration,
}

impl std::fmt::Debug for JoinProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinProtocol").finish_non_exhaustive()
    }
}

impl ProtocolHandler for JoinProtocol {
    async fn accept(&self, connection: Connection) -> std::result::Result<(), AcceptError> {
        let dialer = DeviceId(*connection.remote_id().as_bytes());
        match self.answer(&connection, dialer).await {
            Ok(device) => {
                info!(device = %device, "a device joined over P2P");
                let _ = self.joined.send(device);
                // The joiner closes once it read the acceptance.
                connection.closed().await;
            }
            Err(error) => {
                warn!(peer = %dialer, code = error.code().as_str(), %error, "refused a join request");
                let code = if matches!(error, PeerError::Engine { .. }) { CLOSE_REFUSED } else { CLOSE_ERROR };
                connection.close(VarInt::from_u32(code), error.code().as_str().as_bytes());
            }
        }
        Ok(())
    }
}

impl JoinProtocol {
    async fn answer(&self, connection: &Connection, dialer: DeviceId) -> Result<DeviceId> {
        let (mut send, mut recv) = tokio::time::timeout(self.stall, connection.accept_bi())
            .await
            .map_err(|_| PeerError::Stalled { peer: dialer.to_string(), seconds: self.stall.as_secs() })?
            .map_err(|e| ended(dialer, Some(&e), e.to_string()))?;
        let request: JoinRequest = read_json(&mut recv, dialer, MAX_REQUEST, self.stall).await?;
        let device = request.device_id;
        // The engine checks the MAC, the invitation (open, unexpired) and uses it up.
        let acceptance = with_workspace(&self.shared, dialer, move |w| w.accept_join(&request)).await?;
        write_json(&mut send, dialer, &acceptance).await?;
        send.finish().map_err(|e| PeerError::Unreachable { peer: dialer.to_string(), detail: e.to_string() })?;
        Ok(device)
    }
}

/// The joiner's side: sends `pending_request` to the inviter at `peer` and returns its
/// acceptance (for [`PendingJoin::complete`](adiuva_engine::PendingJoin::complete)).
pub async fn request(
    pending_request: &JoinRequest,
    peer: &PeerTicket,
    options: &PeerOptions,
) -> Result<JoinAcceptance> {
    // Any key: the request's MAC, not the transport, says who may join.
    let endpoint = bind_with(SecretKey::generate(), options, Vec::new()).await?;
    let result = async {
        let inviter = peer.device;
        let unreachable = |detail: String| PeerError::Unreachable { peer: inviter.to_string(), detail };
        let id = iroh::PublicKey::from_bytes(&inviter.0).map_err(|e| unreachable(format!("not a valid key: {e}")))?;
        let addr = EndpointAddr::from_parts(id, peer.addrs.iter().copied().map(TransportAddr::Ip));
        let connection = tokio::time::timeout(options.stall, endpoint.connect(addr, JOIN_ALPN))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", options.stall.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| ended(inviter, Some(&e), e.to_string()))?;
        write_json(&mut send, inviter, pending_request).await?;
        // An inviter that refuses closes the connection saying why. Its stream may end just
        // before that close arrives (a busy machine sends them apart): the reason is waited for
        // a moment rather than reported as a lost connection.
        let acceptance = match read_json(&mut recv, inviter, MAX_ACCEPTANCE, options.stall).await {
            Ok(acceptance) => Ok(acceptance),
            Err(error) => {
                let reason = match connection.close_reason() {
                    Some(reason) => Some(reason),
                    None => tokio::time::timeout(REFUSAL_GRACE, connection.closed()).await.ok(),
                };
                Err(match reason {
                    Some(reason) => ended(inviter, Some(&reason), error.to_string()),
                    None => error,
                })
            }
        };
        connection.close(VarInt::from_u32(CLOSE_DONE), b"done");
        acceptance
    }
    .await;
    endpoint.close().await;
    result
}

async fn write_json(send: &mut SendStream, peer: DeviceId, value: &impl serde::Serialize) -> Result<()> {
    let lost = |detail: String| PeerError::Unreachable { peer: peer.to_string(), detail };
    let body = serde_json::to_vec(value).map_err(|e| lost(e.to_string()))?;
    let length = u32::try_from(body.len()).map_err(|_| lost("a message over 4 GiB".into()))?;
    send.write_all(&length.to_be_bytes()).await.map_err(|e| lost(e.to_string()))?;
    send.write_all(&body).await.map_err(|e| lost(e.to_string()))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
    peer: DeviceId,
    limit: usize,
    stall: Duration,
) -> Result<T> {
    tokio::time::timeout(stall, read_message(recv, peer, limit))
        .await
        .map_err(|_| PeerError::Stalled { peer: peer.to_string(), seconds: stall.as_secs() })?
}

/// Reads one message of the join protocol from `peer`: a length of at most `limit`, then as
/// many bytes of JSON. Public for the `join` fuzz target.
pub async fn read_message<T: serde::de::DeserializeOwned>(
    mut recv: impl AsyncRead + Unpin,
    peer: DeviceId,
    limit: usize,
) -> Result<T> {
    let lost = |e: std::io::Error| PeerError::Unreachable { peer: peer.to_string(), detail: e.to_string() };
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(lost)?;
    let length = u32::from_be_bytes(prefix);
    if u64::from(length) > limit as u64 {
        return Err(PeerError::FrameTooLarge { peer: peer.to_string(), length: length.into(), limit: limit as u64 });
    }
    // Grown as bytes arrive: a peer announcing a large message and sending none costs nothing.
    let mut body = Vec::new();
    recv.take(length.into()).read_to_end(&mut body).await.map_err(lost)?;
    if body.len() != length as usize {
        return Err(PeerError::Unreachable {
            peer: peer.to_string(),
            detail: "the stream ended inside a message".into(),
        });
    }
    serde_json::from_slice(&body)
        .map_err(|e| PeerError::FrameMalformed { peer: peer.to_string(), detail: e.to_string() })
}
