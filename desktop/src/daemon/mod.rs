//! `adiuva daemon`: one long-running process per workspace. It holds the workspace (and so its
//! lock) open, keeps its documents loaded, serves the local API on 127.0.0.1 and runs the
//! background work.
//!
//! At start it writes `daemon.json` (owner-only) into the workspace directory: its pid, address
//! and a per-launch bearer token. A client finds the daemon there; a file left by a daemon that
//! died is stale, which the workspace lock proves (whoever holds the lock may remove it).
//!
//! Stopping (SIGTERM, SIGINT or `adiuva daemon stop`): the server stops accepting, answers what
//! it had accepted (so every acknowledged commit is durable), event streams end, background
//! work stops, `daemon.json` is removed, and the workspace closes (witness written, lock
//! released).

mod api;
mod background;
pub mod client;
pub mod control;
mod events;
mod guard;
mod live_sync;
mod llm_api;
mod peers;

pub use api::ImportQuery;
pub use events::FollowQuery;
pub use llm_api::Chain;
pub use peers::{Listening, LiveRequest};

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use adiuva_engine::{FollowedEvent, Workspace};
use adiuva_search::Indexed;
use axum::serve::ListenerExt;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::search::{IndexProgress, SearchSlot};
use crate::service;

/// The file a running daemon announces itself in, inside the workspace directory.
const DAEMON_FILE: &str = "daemon.json";

/// Commit groups an event stream may fall behind by before it re-reads the log from its cursor.
const STREAM_BUFFER: usize = 1024;

/// What a running daemon writes for its clients. Owner-only: the token is the key to the API.
#[derive(Clone, Serialize, Deserialize)]
pub struct DaemonFile {
    pub pid: u32,
    pub address: SocketAddr,
    pub token: String,
    pub started_at: DateTime<Utc>,
}

impl DaemonFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(DAEMON_FILE)
    }

    /// The announced daemon, if a file is there and readable.
    pub fn read(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(Self::path(dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Written to a temporary file created owner-only, then renamed: a reader never sees half.
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let temporary = dir.join(format!("{DAEMON_FILE}.tmp"));
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, Self::path(dir))
    }

    /// Removes a file left by a daemon that is gone. Only whoever holds the workspace lock may
    /// call this: holding it proves no daemon runs.
    pub fn remove_stale(dir: &Path) {
        match std::fs::remove_file(Self::path(dir)) {
            Ok(()) => info!("removed the address file of a daemon that is no longer running"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => warn!(%error, "could not remove a stale daemon address file"),
        }
    }
}

/// What every request handler shares.
pub struct Shared {
    workspace: Mutex<Workspace>,
    /// The search index, kept current by the background job and before every search. Taken
    /// after the workspace, never before.
    search: Mutex<SearchSlot>,
    /// Held through a whole search index update, so a second one waits for the first rather
    /// than embed the same text again.
    indexing: Mutex<()>,
    /// How far the index update under way has got (`daemon status` shows it).
    index_progress: Mutex<Option<IndexProgress>>,
    /// Live sync with the relay: woken by commits and by the relay's announcements.
    live: Arc<live_sync::LiveSync>,
    /// Peers: listening while peers are on, live connections, told of every commit.
    peer: peers::DaemonPeers,
    /// Every durable commit group, as the engine reports it.
    committed: broadcast::Sender<Arc<[FollowedEvent]>>,
    /// The address clients must name in `Host` (and `Origin`, if they send one).
    address: SocketAddr,
    token: String,
    started: Instant,
    started_at: DateTime<Utc>,
    /// Becomes true when the daemon stops; event streams end on it.
    stopping: watch::Receiver<bool>,
    /// Asks the daemon to stop (the `stop` route).
    stop: watch::Sender<bool>,
}

impl Shared {
    /// The workspace, for one operation. A handler that panicked mid-operation leaves the
    /// engine's in-memory state as the engine left it: the engine drops what a failed commit
    /// touched, so later requests go on.
    fn workspace(&self) -> MutexGuard<'_, Workspace> {
        self.workspace.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The search index; take the workspace first.
    fn search(&self) -> MutexGuard<'_, SearchSlot> {
        self.search.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Brings the search index up to date (`fresh`: from nothing, as a rebuild does). The
    /// workspace and the index are held only to read what changed and to put the result in,
    /// never while the model embeds: requests go on during a first build of a large workspace.
    fn update_search_index(
        &self,
        fresh: bool,
        progress: &mut dyn FnMut(IndexProgress),
    ) -> service::Result<Option<Indexed>> {
        let _one_at_a_time = self.indexing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut pending = {
            let mut workspace = self.workspace();
            let mut search = self.search();
            if fresh {
                search.clear();
            }
            search.prepare(&mut workspace)?
        };
        let show = |now: Option<IndexProgress>| {
            *self.index_progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
        };
        let embedded = pending.embed(&mut |done, total| {
            show(Some(IndexProgress { done, total }));
            progress(IndexProgress { done, total });
            // A stopping daemon does not wait for the model through a large workspace; what
            // was embedded is dropped, and the next start builds again.
            if *self.stopping.borrow() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        show(None);
        if embedded?.is_break() {
            return Ok(None);
        }
        let mut workspace = self.workspace();
        self.search().apply(&mut workspace, pending)
    }
}

/// Runs the daemon in the foreground until SIGTERM, SIGINT or a stop request.
pub fn run(dir: &Path, workspace: Workspace) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(dir, workspace))
}

async fn serve(dir: &Path, mut workspace: Workspace) -> anyhow::Result<()> {
    // The workspace is open, so this process holds the lock: any file there is stale.
    DaemonFile::remove_stale(dir);
    let (committed, _) = broadcast::channel(STREAM_BUFFER);
    let sender = committed.clone();
    let live = Arc::new(live_sync::LiveSync::default());
    let waker = live.clone();
    let peer = peers::DaemonPeers::default();
    let live_peers = peer.peers.clone();
    workspace.on_commit(Box::new(move |events| {
        // No subscriber is not an error: nobody follows the stream right now.
        let _ = sender.send(events.to_vec().into());
        waker.wake();
        live_peers.changed();
    }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let (stop, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        workspace: Mutex::new(workspace),
        search: Mutex::new(SearchSlot::default()),
        indexing: Mutex::new(()),
        index_progress: Mutex::new(None),
        live,
        peer,
        committed,
        address,
        token: guard::new_token()?,
        started: Instant::now(),
        started_at: Utc::now(),
        stopping: stopping.clone(),
        stop: stop.clone(),
    });
    let mut background = background::Registry::new(stopping.clone());
    background::register_all(&mut background, &shared, dir);
    let app = api::router(shared.clone());
    let announced =
        DaemonFile { pid: std::process::id(), address, token: shared.token.clone(), started_at: shared.started_at };
    announced.write(dir)?;
    info!(%address, pid = announced.pid, "daemon listening");

    let signal_stop = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = signal_stop.send(true);
    });
    let until_stopped = stopping.clone();
    // Without TCP_NODELAY a small answer on a kept-alive connection waits for a delayed ACK.
    let listener = listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stopped(until_stopped).await;
            info!("stopping: finishing the requests in flight");
        })
        .await;
    // Reached once every accepted request is answered (so every acknowledged commit is durable).
    let _ = stop.send(true);
    background.stop().await;
    shared.peer.stop_links().await;
    DaemonFile::remove_stale(dir);
    drop(app_state_into_workspace(shared));
    info!("daemon stopped");
    Ok(served?)
}

/// The workspace back from the shared state, to close it here (witness, lock) rather than
/// whenever the last handle goes.
fn app_state_into_workspace(shared: Arc<Shared>) -> Option<Workspace> {
    match Arc::try_unwrap(shared) {
        Ok(shared) => Some(shared.workspace.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())),
        Err(_) => {
            warn!("a request still holds the workspace; it closes when that ends");
            None
        }
    }
}

/// Returns once the daemon is stopping.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    // The receiver's guard stays inside: the future is `Send`.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        warn!("cannot listen for signals; stop the daemon with `adiuva daemon stop`");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM"),
        _ = interrupt.recv() => info!("SIGINT"),
    }
}

/// The daemon process's resident memory, from `/proc` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
