//! This device's iroh endpoint: listening ([`PeerServer`]) and dialing ([`sync_once`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adiuva_model::DeviceId;
use iroh::endpoint::{Connection, PortmapperConfig, VarInt, presets};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::error::{PeerError, Result};
use crate::frame::Frame;
use crate::join::{JOIN_ALPN, JoinProtocol};
use crate::live::{self, Peers};
use crate::push;
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
    bind_with(SecretKey::from_bytes(&secret), options, vec![ALPN.to_vec()]).await
}

/// Binds an endpoint with `key`, accepting `alpns` (a router sets its own).
pub(crate) async fn bind_with(key: SecretKey, options: &PeerOptions, alpns: Vec<Vec<u8>>) -> Result<Endpoint> {
    let failed = |detail: String| PeerError::Endpoint { detail };
    let mut builder = Endpoint::builder(presets::Minimal).secret_key(key).relay_mode(RelayMode::Disabled).alpns(alpns);
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
    /// Starts listening. `peers` is shared with this device's other connections: what one
    /// peer brings, the others connected live are told of.
    pub async fn start(shared: Arc<dyn SharedWorkspace>, peers: Arc<Peers>, options: PeerOptions) -> Result<Self> {
        let endpoint = bind(&shared, &options).await?;
        let handler = SyncProtocol { shared, peers, options };
        Ok(Self { router: Router::builder(endpoint).accept(ALPN, handler).spawn() })
    }

    /// Starts listening with invitations open too: a device holding one of this workspace's
    /// invitations may join on [`JOIN_ALPN`] (see [`join`](crate::join)); each device let in is
    /// sent on the receiver.
    pub async fn start_inviting(
        shared: Arc<dyn SharedWorkspace>,
        peers: Arc<Peers>,
        options: PeerOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<DeviceId>)> {
        let endpoint = bind(&shared, &options).await?;
        let (joined, joins) = mpsc::unbounded_channel();
        let join = JoinProtocol { shared: shared.clone(), joined, stall: options.stall };
        let handler = SyncProtocol { shared, peers, options };
        let router = Router::builder(endpoint).accept(ALPN, handler).accept(JOIN_ALPN, join).spawn();
        Ok((Self { router }, joins))
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
    peers: Arc<Peers>,
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
        let _link = self.peers.link(peer);
        let (ended_with, last) = watch::channel(None);
        let news = live::send_news(
            self.shared.clone(),
            self.peers.clone(),
            connection.clone(),
            peer,
            last,
            self.options.stall,
        );
        tokio::select! {
            () = self.sessions(&connection, peer, &ended_with) => {}
            // Returns only when the connection is gone.
            () = news => {}
        }
        Ok(())
    }
}

impl SyncProtocol {
    /// The sessions the dialer opens on `connection`, one at a time, until it closes it (a dialer
    /// syncing once does after its session; a live one stays). Each session's heads, when both
    /// sides ended with them, go to `ended_with`.
    async fn sessions(&self, connection: &Connection, peer: DeviceId, ended_with: &watch::Sender<Option<[u8; 32]>>) {
        let stall = self.options.stall;
        let mut first = true;
        loop {
            // The first stream comes at once; later ones whenever the dialer has news, for as
            // long as the connection lives (QUIC keep-alives and idle timeout watch it).
            let streams = if first {
                match tokio::time::timeout(stall, connection.accept_bi()).await {
                    Ok(streams) => streams,
                    Err(_) => {
                        warn!(peer = %peer, "a peer opened no stream; closing");
                        connection.close(VarInt::from_u32(CLOSE_ERROR), b"peer.stalled");
                        return;
                    }
                }
            } else {
                connection.accept_bi().await
            };
            let (send, recv) = match streams {
                Ok(streams) => streams,
                Err(error) => {
                    if first {
                        warn!(peer = %peer, %error, "a peer left before its session began");
                    } else {
                        debug!(peer = %peer, %error, "peer connection ended");
                    }
                    return;
                }
            };
            first = false;
            let mut wire = Wire::new(send, recv, connection.clone(), peer, stall);
            let result = match wire.receive_frame().await {
                Ok(Frame::Push { digest, units }) => self.take_push(&mut wire, digest, units).await,
                Ok(first) => session::run(&self.shared, &mut wire, Role::Listener, Some(first)).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(report) => {
                    info!(peer = %peer, applied = report.applied, rounds = report.rounds, converged = report.converged, "peer session ended");
                    ended_with.send_replace(report.converged.then_some(report.digest));
                    if report.applied > 0 {
                        self.peers.changed();
                    }
                }
                Err(error) => {
                    warn!(peer = %peer, code = error.code().as_str(), %error, "peer session failed");
                    connection.close(VarInt::from_u32(CLOSE_ERROR), error.code().as_str().as_bytes());
                    return;
                }
            }
        }
    }
}

impl SyncProtocol {
    /// Takes in the dialer's push and answers it with this side's heads digest.
    async fn take_push(
        &self,
        wire: &mut Wire,
        digest: [u8; 32],
        units: Vec<(String, Vec<u8>)>,
    ) -> Result<SessionReport> {
        let (report, heads) = push::take(&self.shared, wire.peer, digest, units).await?;
        wire.send_frame(&Frame::Heads(report.digest)).await?;
        if let Some(heads) = heads {
            push::settle(&self.shared, wire.peer, heads).await?;
        }
        Ok(report)
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

/// Stays connected to the device `ticket` names until `stop` completes, syncing whenever
/// either side gained changes and dialing it again when it went away (see
/// [`live`](crate::live)); `reported` is told about each session.
pub async fn sync_live(
    shared: Arc<dyn SharedWorkspace>,
    peers: Arc<Peers>,
    ticket: &PeerTicket,
    options: &PeerOptions,
    stop: impl Future<Output = ()>,
    reported: impl FnMut(&SessionReport),
) -> Result<()> {
    let endpoint = bind(&shared, &options_for_dialing(options)).await?;
    let result = live::live(shared, peers, &endpoint, ticket, options, stop, reported).await;
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
    let connection = connect(shared, endpoint, ticket, options).await?;
    let result = live::session_on(shared, &connection, ticket.device, options).await;
    match &result {
        Ok(_) => connection.close(VarInt::from_u32(CLOSE_DONE), b"done"),
        Err(error) => connection.close(VarInt::from_u32(CLOSE_ERROR), error.code().as_str().as_bytes()),
    }
    result
}

/// Connects to the device `ticket` names, which must be a device of this workspace's list.
pub(crate) async fn connect(
    shared: &Arc<dyn SharedWorkspace>,
    endpoint: &Endpoint,
    ticket: &PeerTicket,
    options: &PeerOptions,
) -> Result<Connection> {
    let peer = ticket.device;
    // This device talks to devices of its own list only.
    with_workspace(shared, peer, move |w| w.check_peer(&peer))
        .await
        .map_err(|error| PeerError::Refused { peer: peer.to_string(), reason: format!("not dialed: {error}") })?;
    let unreachable = |detail: String| PeerError::Unreachable { peer: peer.to_string(), detail };
    let id = iroh::PublicKey::from_bytes(&peer.0).map_err(|e| unreachable(format!("not a valid key: {e}")))?;
    let addr = EndpointAddr::from_parts(id, ticket.addrs.iter().copied().map(TransportAddr::Ip));
    tokio::time::timeout(options.stall, endpoint.connect(addr, ALPN))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", options.stall.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))
}
