//! Peers in the daemon: this device listening for the workspace's other devices while peers are
//! on (the device setting [`LISTEN_SETTING`], `adiuva peer on|off`), and the live connections
//! `adiuva sync --peer TICKET --live` asks for while a daemon runs. Every durable local commit
//! is told to all of them ([`Peers::changed`]), so it reaches each live peer at once; what one
//! peer brings reaches the others the same way. `GET /v1/peers` lists the connected peers, and
//! every peer synced with before, with what each still lacks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use adiuva_engine::Workspace;
use adiuva_model::DeviceId;
use adiuva_p2p::{PeerServer, PeerTicket, Peers, SharedWorkspace};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::Shared;
use super::guard::{ApiError, Body, Correlation, ErrorBody, Segments};
use crate::peer::{self, LISTEN_SETTING, PeerStatus, SessionView, TicketFile};

/// The daemon's peers: what its connections share, its listening state, its live connections.
pub struct DaemonPeers {
    pub peers: Arc<Peers>,
    /// Counts `peer on|off` requests; the listening job acts on each.
    switched: watch::Sender<u64>,
    /// What the listening job last made of the setting.
    listening: watch::Sender<ListenState>,
    /// The live connections asked for, by peer.
    links: Mutex<BTreeMap<DeviceId, LiveLink>>,
}

/// The listening job's state, after the `switched` request it last acted on.
#[derive(Clone, Default)]
struct ListenState {
    acted_on: u64,
    ticket: Option<String>,
    error: Option<String>,
}

struct LiveLink {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Default for DaemonPeers {
    fn default() -> Self {
        Self {
            peers: Peers::new(),
            switched: watch::Sender::new(0),
            listening: watch::Sender::new(ListenState::default()),
            links: Mutex::new(BTreeMap::new()),
        }
    }
}

impl DaemonPeers {
    fn links(&self) -> MutexGuard<'_, BTreeMap<DeviceId, LiveLink>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends every live connection and waits for each to close (the daemon is stopping).
    pub async fn stop_links(&self) {
        let links = std::mem::take(&mut *self.links());
        for (_, link) in links {
            let _ = link.stop.send(());
            let _ = link.task.await;
        }
    }
}

impl SharedWorkspace for Shared {
    fn workspace(&self) -> MutexGuard<'_, Workspace> {
        Shared::workspace(self)
    }
}

/// The listening job: listens while the setting says so, starting and stopping as `peer on|off`
/// switch it, until the daemon stops. The ticket is in the workspace directory meanwhile
/// (`adiuva peer ticket` prints it).
pub async fn listen(shared: Arc<Shared>, dir: PathBuf, stopping: watch::Receiver<bool>) {
    let state = &shared.peer;
    let mut switched = state.switched.subscribe();
    let mut server: Option<(PeerServer, TicketFile)> = None;
    loop {
        let acted_on = *switched.borrow_and_update();
        let reading = shared.clone();
        let on = tokio::task::spawn_blocking(move || reading.workspace().device_setting(LISTEN_SETTING)).await;
        let mut error = None;
        match on {
            Ok(Ok(on)) if on.as_deref() == Some(b"on") => {
                if server.is_none() {
                    match start(&shared, &dir).await {
                        Ok(started) => server = Some(started),
                        Err(failed) => {
                            warn!(error = %failed, "cannot listen for peers");
                            error = Some(failed);
                        }
                    }
                }
            }
            Ok(Ok(_)) => {
                if let Some((server, ticket)) = server.take() {
                    server.shutdown().await;
                    drop(ticket);
                    info!("stopped listening for peers");
                }
            }
            Ok(Err(failed)) => error = Some(failed.to_string()),
            Err(failed) => error = Some(failed.to_string()),
        }
        let ticket = server.as_ref().map(|(server, _)| server.ticket().to_string());
        state.listening.send_replace(ListenState { acted_on, ticket, error });
        tokio::select! {
            () = super::stopped(stopping.clone()) => break,
            changed = switched.changed() => if changed.is_err() { break },
        }
    }
    if let Some((server, ticket)) = server.take() {
        server.shutdown().await;
        drop(ticket);
    }
}

async fn start(shared: &Arc<Shared>, dir: &std::path::Path) -> Result<(PeerServer, TicketFile), String> {
    let options = peer::options_from_env();
    let server = PeerServer::start(shared.clone(), shared.peer.peers.clone(), options)
        .await
        .map_err(|error| error.to_string())?;
    let ticket = server.ticket().to_string();
    match TicketFile::write(dir, &ticket) {
        Ok(file) => {
            info!(%ticket, "listening for peers");
            Ok((server, file))
        }
        Err(error) => {
            server.shutdown().await;
            Err(error.to_string())
        }
    }
}

/// The peer status with what only the daemon knows: who is connected, where it listens.
async fn status(shared: &Arc<Shared>, correlation: Correlation) -> Result<PeerStatus, ApiError> {
    let connected = shared.peer.peers.connected();
    let listening = shared.peer.listening.borrow().ticket.clone();
    shared.call(correlation, move |service| peer::peer_status(service.workspace, &connected, listening)).await
}

#[utoipa::path(get, path = "/v1/peers", tag = "peers",
    responses((status = 200, description = "Whether this device listens for peers and where; the connected peers and those synced with before, with how many changes each still lacks", body = PeerStatus)))]
pub async fn peer_status(
    State(shared): State<Arc<Shared>>,
    correlation: Correlation,
) -> Result<Json<PeerStatus>, ApiError> {
    Ok(Json(status(&shared, correlation).await?))
}

/// Whether the daemon listens for peers.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Listening {
    pub on: bool,
}

#[utoipa::path(put, path = "/v1/peers", tag = "peers", request_body = Listening,
    responses((status = 200, description = "Stored; the daemon listens (or stops) before answering", body = PeerStatus),
              (status = 502, description = "The peer endpoint could not start (`peer.endpoint`)", body = ErrorBody)))]
pub async fn set_listening(
    State(shared): State<Arc<Shared>>,
    correlation: Correlation,
    Body(request): Body<Listening>,
) -> Result<Json<PeerStatus>, ApiError> {
    let on = request.on;
    shared.call(correlation, move |service| peer::set_listening(service.workspace, on)).await?;
    let mut request_number = 0;
    shared.peer.switched.send_modify(|count| {
        *count += 1;
        request_number = *count;
    });
    let mut listening = shared.peer.listening.subscribe();
    let acted = listening.wait_for(|state| state.acted_on >= request_number).await.map(|state| state.error.clone());
    if let Ok(Some(error)) = acted {
        return Err(crate::peer::service_error(adiuva_p2p::PeerError::Endpoint { detail: error }).into());
    }
    Ok(Json(status(&shared, correlation).await?))
}

/// A live connection to ask for.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveRequest {
    /// The peer's ticket.
    pub ticket: String,
}

#[utoipa::path(post, path = "/v1/peers/live", tag = "peers", request_body = LiveRequest,
    responses((status = 200, description = "Connected: the first session; the daemon stays connected, syncing whenever either side gains changes, until `DELETE /v1/peers/live/{id}` or it stops", body = SessionView),
              (status = 400, description = "Not a peer ticket", body = ErrorBody),
              (status = 502, description = "The peer refused this device, or cannot be reached", body = ErrorBody)))]
pub async fn start_live(
    State(shared): State<Arc<Shared>>,
    Body(request): Body<LiveRequest>,
) -> Result<Json<SessionView>, ApiError> {
    let ticket: PeerTicket = request.ticket.parse().map_err(|e| ApiError::from(peer::service_error(e)))?;
    let peer = ticket.device;
    let (first_session, first) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let linked = shared.clone();
    let stopping = shared.stopping.clone();
    let task = tokio::spawn(async move {
        let options = peer::dialing_options(&ticket);
        let stop = async move {
            tokio::select! {
                _ = stopped => {}
                () = super::stopped(stopping) => {}
            }
        };
        let mut first_session = Some(first_session);
        let peers = linked.peer.peers.clone();
        let result = adiuva_p2p::sync_live(linked, peers, &ticket, &options, stop, |report| {
            if let Some(first) = first_session.take() {
                let _ = first.send(Ok(SessionView::of(peer, report)));
            }
        })
        .await;
        match (result, first_session) {
            (Err(error), Some(first)) => {
                let _ = first.send(Err(error));
            }
            (Err(error), None) => {
                warn!(peer = %peer, code = error.code().as_str(), %error, "live peer connection ended")
            }
            (Ok(()), _) => info!(peer = %peer, "live peer connection closed"),
        }
    });
    // One live connection per peer: a new one replaces the last.
    let replaced = shared.peer.links().insert(peer, LiveLink { stop, task });
    if let Some(replaced) = replaced {
        let _ = replaced.stop.send(());
    }
    match first.await {
        Ok(Ok(view)) => Ok(Json(view)),
        Ok(Err(error)) => Err(peer::service_error(error).into()),
        Err(_) => Err(ApiError::internal("the live connection ended before its first session")),
    }
}

#[utoipa::path(delete, path = "/v1/peers/live/{id}", tag = "peers",
    params(("id" = String, Path, description = "The peer's device id")),
    responses((status = 200, description = "The live connection is closed", body = PeerStatus),
              (status = 404, description = "No live connection to that peer", body = ErrorBody)))]
pub async fn stop_live(
    State(shared): State<Arc<Shared>>,
    correlation: Correlation,
    Segments(id): Segments<String>,
) -> Result<Json<PeerStatus>, ApiError> {
    let link = id.parse::<DeviceId>().ok().and_then(|peer| shared.peer.links().remove(&peer));
    let Some(link) = link else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            adiuva_model::ErrorCode::DeviceNotFound,
            format!("no live connection to peer {id}"),
        ));
    };
    let _ = link.stop.send(());
    let _ = link.task.await;
    Ok(Json(status(&shared, correlation).await?))
}
