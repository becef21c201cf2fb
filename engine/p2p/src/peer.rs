//! This device's iroh endpoint: listening ([`PeerServer`]) and dialing ([`sync_once`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adiuva_model::DeviceId;
use iroh::endpoint::{Connection, PortmapperConfig, VarInt, presets};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};
use tracing::{info, warn};

use crate::error::{PeerError, Result};
use crate::session::{self, CLOSE_DONE, CLOSE_ERROR, CLOSE_REFUSED, Role, SessionReport, Wire, with_workspace};
use crate::ticket::PeerTicket;
use crate::{ALPN, SharedWorkspace};

/// How a peer endpoint binds and how long it waits.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// The address to listen on (`None`: every interface, a free port).
    pub bind: Option<SocketAddr>,
    /// How long a peer may send nothing in the middle of a session before it ends.
    pub stall: Duration,
    /// Ask the router for a port mapping (UPnP, PCP, NAT-PMP). Off on loopback.
    pub portmapper: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self { bind: None, stall: Duration::from_secs(30), portmapper: true }
    }
}

impl PeerOptions {
    /// Listening on 127.0.0.1 only, no port mapping: tests, and devices on one machine.
    pub fn loopback() -> Self {
        Self { bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))), portmapper: false, ..Self::default() }
    }
}

/// Binds this device's endpoint: its device key as the endpoint key, no relay, no address
/// lookup (a peer is dialed at the addresses its ticket names).
async fn bind(shared: &Arc<dyn SharedWorkspace>, options: &PeerOptions) -> Result<Endpoint> {
    let me = shared.workspace().device_id();
    let secret = with_workspace(shared, me, |w| Ok(w.endpoint_secret())).await?;
    let key = SecretKey::from_bytes(&secret);
    let failed = |detail: String| PeerError::Endpoint { detail };
    let mut builder =
        Endpoint::builder(presets::Minimal).secret_key(key).relay_mode(RelayMode::Disabled).alpns(vec![ALPN.to_vec()]);
    if !options.portmapper {
        builder = builder.portmapper_config(PortmapperConfig::Disabled);
    }
    if let Some(addr) = options.bind {
        builder = builder.clear_ip_transports().bind_addr(addr).map_err(|e| failed(e.to_string()))?;
    }
    builder.bind().await.map_err(|e| failed(e.to_string()))
}

/// This device listening for its peers until it is shut down.
pub struct PeerServer {
    router: Router,
}

impl PeerServer {
    pub async fn start(shared: Arc<dyn SharedWorkspace>, options: PeerOptions) -> Result<Self> {
        let endpoint = bind(&shared, &options).await?;
        let handler = SyncProtocol { shared, options };
        Ok(Self { router: Router::builder(endpoint).accept(ALPN, handler).spawn() })
    }

    /// The ticket a peer dials this device with.
    pub fn ticket(&self) -> PeerTicket {
        let endpoint = self.router.endpoint();
        let mut addrs: Vec<SocketAddr> = endpoint.addr().ip_addrs().copied().collect();
        for bound in endpoint.bound_sockets() {
            if !bound.ip().is_unspecified() && !addrs.contains(&bound) {
                addrs.push(bound);
            }
        }
        PeerTicket { device: DeviceId(*endpoint.id().as_bytes()), addrs }
    }

    /// Stops listening; sessions under way end.
    pub async fn shutdown(self) {
        if let Err(error) = self.router.shutdown().await {
            warn!(%error, "the peer endpoint did not shut down cleanly");
        }
    }
}

/// The listening side of the protocol.
#[derive(Clone)]
struct SyncProtocol {
    shared: Arc<dyn SharedWorkspace>,
    options: PeerOptions,
}

impl std::fmt::Debug for SyncProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncProtocol").finish_non_exhaustive()
    }
}

impl ProtocolHandler for SyncProtocol {
    async fn accept(&self, connection: Connection) -> std::result::Result<(), AcceptError> {
        let peer = DeviceId(*connection.remote_id().as_bytes());
        // Before anything is read from the peer: is it a device of this workspace?
        let check = {
            let shared = self.shared.clone();
            with_workspace(&shared, peer, move |w| w.check_peer(&peer)).await
        };
        if let Err(error) = check {
            warn!(peer = %peer, code = error.code().as_str(), %error, "refused a peer");
            connection.close(VarInt::from_u32(CLOSE_REFUSED), error.code().as_str().as_bytes());
            return Ok(());
        }
        let stall = self.options.stall;
        let streams = tokio::time::timeout(stall, connection.accept_bi()).await;
        let (send, recv) = match streams {
            Ok(Ok(streams)) => streams,
            Ok(Err(error)) => {
                warn!(peer = %peer, %error, "a peer left before its session began");
                return Ok(());
            }
            Err(_) => {
                warn!(peer = %peer, "a peer opened no stream; closing");
                connection.close(VarInt::from_u32(CLOSE_ERROR), b"peer.stalled");
                return Ok(());
            }
        };
        let mut wire = Wire {
            send,
            recv,
            connection: connection.clone(),
            peer,
            stall,
            peer_busy: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
        };
        match session::run(&self.shared, &mut wire, Role::Listener).await {
            Ok(report) => {
                info!(peer = %peer, applied = report.applied, rounds = report.rounds, converged = report.converged, "peer session ended");
                // The dialer closes once it read everything; wait for it, not forever.
                let _ = tokio::time::timeout(stall, connection.closed()).await;
            }
            Err(error) => {
                warn!(peer = %peer, code = error.code().as_str(), %error, "peer session failed");
                connection.close(VarInt::from_u32(CLOSE_ERROR), error.code().as_str().as_bytes());
            }
        }
        Ok(())
    }
}

/// Syncs once with the device `ticket` names, which must be a device of this workspace's list.
pub async fn sync_once(
    shared: Arc<dyn SharedWorkspace>,
    ticket: &PeerTicket,
    options: &PeerOptions,
) -> Result<SessionReport> {
    let endpoint = bind(&shared, &options_for_dialing(options)).await?;
    let result = dial(&shared, &endpoint, ticket, options).await;
    endpoint.close().await;
    result
}

/// A dialer binds where it can reach the ticket's addresses, on any free port.
fn options_for_dialing(options: &PeerOptions) -> PeerOptions {
    PeerOptions { bind: options.bind.map(|addr| SocketAddr::new(addr.ip(), 0)), ..options.clone() }
}

/// [`sync_once`] on an endpoint already bound.
pub async fn dial(
    shared: &Arc<dyn SharedWorkspace>,
    endpoint: &Endpoint,
    ticket: &PeerTicket,
    options: &PeerOptions,
) -> Result<SessionReport> {
    let peer = ticket.device;
    // This device talks to devices of its own list only.
    with_workspace(shared, peer, move |w| w.check_peer(&peer))
        .await
        .map_err(|error| PeerError::Refused { peer: peer.to_string(), reason: format!("not dialed: {error}") })?;
    let unreachable = |detail: String| PeerError::Unreachable { peer: peer.to_string(), detail };
    let id = iroh::PublicKey::from_bytes(&peer.0).map_err(|e| unreachable(format!("not a valid key: {e}")))?;
    let addr = EndpointAddr::from_parts(id, ticket.addrs.iter().copied().map(TransportAddr::Ip));
    let connection = tokio::time::timeout(options.stall, endpoint.connect(addr, ALPN))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", options.stall.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    // A listener that refuses this device closes at once, maybe before the stream opens.
    let (send, recv) = connection.open_bi().await.map_err(|e| session::ended(peer, Some(&e), e.to_string()))?;
    let mut wire = Wire {
        send,
        recv,
        connection: connection.clone(),
        peer,
        stall: options.stall,
        peer_busy: Duration::ZERO,
        bytes_sent: 0,
        bytes_received: 0,
    };
    let result = session::run(shared, &mut wire, Role::Dialer).await;
    match &result {
        Ok(_) => connection.close(VarInt::from_u32(CLOSE_DONE), b"done"),
        Err(error) => connection.close(VarInt::from_u32(CLOSE_ERROR), error.code().as_str().as_bytes()),
    }
    result
}
