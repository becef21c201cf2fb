//! The peer commands: `peer serve` (this device listening for the workspace's other devices, in
//! the foreground), `peer on|off` (the daemon listening while it runs), `peer ticket` (the
//! address a listening device is dialed at) and `sync --peer TICKET [--live]` (one session with
//! a device, or a connection that stays open), and `device invite --p2p` / `device join` with
//! its ticket (a device let in with no relay). `peer serve` and `sync --peer` without a daemon
//! open the workspace in this process, holding it for as long as the network takes; with a
//! daemon, `sync --peer --live` asks it to hold the connection until this command ends.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::DeviceId;
use adiuva_p2p::{JoinTicket, PeerError, PeerOptions, PeerServer, PeerTicket, Peers, SessionReport, SharedWorkspace};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::{self, Service};
use crate::unlock;

/// The device setting that says whether the daemon listens for peers (`on` or absent).
pub const LISTEN_SETTING: &str = "peer/listen";

/// Where a listening device writes its ticket, beside the workspace's store, while it listens.
const TICKET_FILE: &str = "peer-ticket";

#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Listen for this workspace's other devices and sync with each that connects, until
    /// stopped (Ctrl-C, SIGTERM). Prints this device's ticket first.
    Serve {
        /// The address to listen on, e.g. 127.0.0.1:0 [default: every interface, a free port].
        #[arg(long, env = "ADIUVA_PEER_BIND")]
        bind: Option<SocketAddr>,
    },
    /// Print the ticket of this device while it listens: what `sync --peer` dials.
    Ticket,
    /// Have the daemon listen for this workspace's other devices whenever it runs.
    On,
    /// Stop the daemon listening for peers.
    Off,
}

/// Listening options from the environment: `ADIUVA_PEER_BIND` (the daemon's bind address) and
/// how long a peer may send nothing mid-session before the session ends (tests shorten it).
pub fn options_from_env() -> PeerOptions {
    options(std::env::var("ADIUVA_PEER_BIND").ok().and_then(|addr| addr.parse().ok()))
}

fn options(bind: Option<SocketAddr>) -> PeerOptions {
    let mut options = match bind {
        Some(addr) if addr.ip().is_loopback() => PeerOptions { bind: Some(addr), ..PeerOptions::loopback() },
        bind => PeerOptions { bind, ..PeerOptions::default() },
    };
    if let Some(seconds) = std::env::var("ADIUVA_PEER_STALL_SECS").ok().and_then(|s| s.parse().ok()) {
        options.stall = Duration::from_secs(seconds);
    }
    options
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn shared(dir: &Path) -> anyhow::Result<Arc<dyn SharedWorkspace>> {
    let workspace = Workspace::open(dir, unlock::passphrase)?;
    Ok(Arc::new(Mutex::new(workspace)))
}

/// A peer error as the service reports it, its code kept.
pub fn service_error(error: PeerError) -> service::Error {
    match error {
        PeerError::Engine { source, .. } => source.into(),
        other => service::Error::Reported { code: other.code(), message: other.to_string() },
    }
}

fn coded(error: PeerError) -> anyhow::Error {
    service_error(error).into()
}

/// `peer on|off`, through the daemon when one runs.
pub fn switch(service: &mut dyn Service, command: &PeerCommand) -> anyhow::Result<()> {
    let status = service.set_peer_listening(matches!(command, PeerCommand::On))?;
    match (&status.listening, matches!(command, PeerCommand::On)) {
        (Some(ticket), _) => println!("listening at {ticket}"),
        (None, true) => println!("peers on: the daemon listens for this workspace's devices when it runs"),
        (None, false) => println!("peers off: this device does not listen for peers"),
    }
    Ok(())
}

pub fn run(dir: &Path, command: PeerCommand) -> anyhow::Result<()> {
    match command {
        PeerCommand::On | PeerCommand::Off => Ok(()),
        PeerCommand::Serve { bind } => serve(dir, options(bind)),
        PeerCommand::Ticket => {
            let path = dir.join(TICKET_FILE);
            let ticket = std::fs::read_to_string(&path)
                .ok()
                .context("this device is not listening: run `adiuva peer serve` (or the daemon with peers on)")?;
            println!("{}", ticket.trim());
            Ok(())
        }
    }
}

fn serve(dir: &Path, options: PeerOptions) -> anyhow::Result<()> {
    let shared = shared(dir)?;
    runtime()?.block_on(async {
        let server = PeerServer::start(shared, Peers::new(), options).await.map_err(coded)?;
        let ticket = server.ticket().to_string();
        let ticket_file = TicketFile::write(dir, &ticket)?;
        println!("{ticket}");
        std::io::stdout().flush()?;
        eprintln!("listening for this workspace's devices; Ctrl-C stops");
        stop_signal().await?;
        server.shutdown().await;
        drop(ticket_file);
        Ok(())
    })
}

/// `adiuva device invite --p2p`: listens with an invitation open and prints a ticket naming
/// both; returns once a device joined and its first session ended (it takes in the workspace
/// at once), or fails when the invitation expired or on Ctrl-C or SIGTERM.
pub fn invite(dir: &Path, valid_for: chrono::Duration) -> anyhow::Result<()> {
    let shared = shared(dir)?;
    let invitation = shared.workspace().invite(valid_for)?;
    let (invite, until) = (invitation.encode(), invitation.expires_at);
    drop(invitation);
    runtime()?.block_on(async {
        let (peers, options) = (Peers::new(), options_from_env());
        let started = PeerServer::start_inviting(shared.clone(), peers.clone(), options.clone()).await;
        let (server, mut joins) = started.map_err(coded)?;
        let ticket = JoinTicket { invite, peer: server.ticket() };
        println!("{ticket}");
        std::io::stdout().flush()?;
        eprintln!(
            "On the new device: adiuva --workspace DIR device join TICKET (single use, valid until {}, while this runs).",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let expiry = (until - Utc::now()).to_std().unwrap_or_default();
        let outcome = async {
            let joined = tokio::select! {
                joined = joins.recv() => joined,
                () = tokio::time::sleep(expiry) => None,
            };
            let device = joined.context("no device joined before the ticket expired")?;
            println!("device {} joined", device.short());
            std::io::stdout().flush()?;
            // Done once a session with it ended with both sides holding the same; given up once
            // it left without one, or never came.
            let (joined_at, mut seen) = (std::time::Instant::now(), false);
            let synced = || anyhow::Ok(shared.workspace().peer_states(&device)?.last_sync.is_some());
            while !synced()? {
                let connected = peers.connected().contains(&device);
                seen |= connected;
                if !connected && (seen || joined_at.elapsed() > options.stall) && !synced()? {
                    anyhow::bail!("the device joined but did not take in the workspace: `adiuva sync --peer` there, while this device listens, does");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        };
        let result = tokio::select! {
            result = outcome => result,
            stopped = stop_signal() => stopped.and(Err(anyhow::anyhow!("stopped before a device joined and synced"))),
        };
        server.shutdown().await;
        result
    })
}

/// `adiuva device join TICKET` with a ticket of `device invite --p2p`: asks the inviter, which
/// must still be listening, to let this device in, creates the workspace in `dir`, and takes in
/// the rest from the inviter.
pub fn join(dir: &Path, ticket: &str, name: &str) -> anyhow::Result<()> {
    let ticket: JoinTicket = ticket.parse().map_err(coded)?;
    let (pending, request) = Workspace::request_join(&ticket.invite, name)?;
    let protection = unlock::chosen_protection(unlock::KeyStore::Auto)?;
    let options = dialing_options(&ticket.peer);
    let runtime = runtime()?;
    eprintln!("Asking the inviting device to let this one in…");
    let acceptance = runtime.block_on(adiuva_p2p::join::request(&request, &ticket.peer, &options)).map_err(coded)?;
    let workspace = pending.complete(dir, protection, &acceptance)?;
    let (workspace_id, device) = (workspace.workspace_id(), workspace.device_id());
    let shared: Arc<dyn SharedWorkspace> = Arc::new(Mutex::new(workspace));
    let report = runtime.block_on(adiuva_p2p::sync_once(shared, &ticket.peer, &options)).map_err(coded)?;
    println!(
        "joined workspace {workspace_id} in {}; this device: {} ({name}); {} changes taken in",
        dir.display(),
        device.short(),
        report.applied
    );
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// The ticket file, removed when the device stops listening.
pub struct TicketFile(PathBuf);

impl TicketFile {
    pub fn write(dir: &Path, ticket: &str) -> anyhow::Result<Self> {
        let path = dir.join(TICKET_FILE);
        std::fs::write(&path, format!("{ticket}\n")).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TicketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `adiuva sync --peer TICKET [--live]`: one session with the device the ticket names, or a
/// connection that stays open until Ctrl-C or SIGTERM.
pub fn sync(dir: &Path, ticket: &str, json: bool, live: bool) -> anyhow::Result<()> {
    let ticket: PeerTicket = ticket.parse().map_err(coded)?;
    if live && let Some(remote) = crate::daemon::client::Remote::find(dir, ulid::Ulid::new()) {
        return live_through_daemon(&remote, &ticket, json);
    }
    let options = dialing_options(&ticket);
    let shared = shared(dir)?;
    let runtime = runtime()?;
    if !live {
        let report = runtime.block_on(adiuva_p2p::sync_once(shared, &ticket, &options)).map_err(coded)?;
        return print_report(&SessionView::of(ticket.device, &report), json);
    }
    let mut printed = Ok(());
    let result = runtime.block_on(async {
        let stop = async {
            if let Err(error) = stop_signal().await {
                tracing::warn!(%error, "cannot wait for signals; ending now");
            }
        };
        adiuva_p2p::sync_live(shared, Peers::new(), &ticket, &options, stop, |report| {
            if printed.is_ok() {
                printed = print_report(&SessionView::of(ticket.device, report), json);
            }
        })
        .await
    });
    result.map_err(coded)?;
    printed?;
    eprintln!("live sync with peer {} ended", ticket.device.short());
    Ok(())
}

/// A dialer on loopback when every address of the ticket is.
pub fn dialing_options(ticket: &PeerTicket) -> PeerOptions {
    let loopback = ticket.addrs.iter().all(|addr| addr.ip().is_loopback());
    options(loopback.then(|| SocketAddr::from(([127, 0, 0, 1], 0))))
}

/// `sync --peer --live` while a daemon runs: the daemon holds the connection (and its commits
/// reach the peer) until this command is stopped.
fn live_through_daemon(remote: &crate::daemon::client::Remote, ticket: &PeerTicket, json: bool) -> anyhow::Result<()> {
    let first = remote.peer_live_start(&ticket.to_string())?;
    print_report(&first, json)?;
    eprintln!("live with peer {} through the daemon; Ctrl-C ends it", ticket.device.short());
    runtime()?.block_on(stop_signal())?;
    remote.peer_live_stop(&ticket.device.to_string())?;
    eprintln!("live sync with peer {} ended", ticket.device.short());
    Ok(())
}

/// What one peer session did, as `sync --peer` prints it and the daemon's API answers it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    #[schema(value_type = String)]
    pub peer: DeviceId,
    /// Changes received and applied here.
    pub applied: usize,
    /// Changes received and kept aside until what they build on arrives.
    pub pending: usize,
    pub rounds: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Both sides ended holding the same changes.
    pub converged: bool,
}

impl SessionView {
    pub fn of(peer: DeviceId, report: &SessionReport) -> Self {
        Self {
            peer,
            applied: report.applied,
            pending: report.pending,
            rounds: report.rounds,
            bytes_sent: report.bytes_sent,
            bytes_received: report.bytes_received,
            converged: report.converged,
        }
    }
}

fn print_report(report: &SessionView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        let state = if report.converged { "both hold the same changes" } else { "not yet the same changes" };
        println!(
            "synced with peer {}: {} changes received, {} waiting; {state}",
            report.peer.short(),
            report.applied,
            report.pending
        );
    }
    // A live sync prints as sessions end: whoever reads it sees each at once.
    std::io::stdout().flush()?;
    Ok(())
}

/// This device's peers, as `status` shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct PeerStatus {
    /// Whether the daemon listens for peers when it runs (`peer on`).
    pub on: bool,
    /// The ticket this device is listening at, if it is (the daemon only).
    pub listening: Option<String>,
    /// Peers connected now, then the others this device synced with before.
    pub peers: Vec<PeerView>,
}

/// One peer of this device.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    #[schema(value_type = String)]
    pub id: DeviceId,
    /// Its name in the device list.
    pub name: Option<String>,
    pub connected: bool,
    /// Changes of this device the peer was not known to hold at the last session's end.
    pub lacks: usize,
    /// When a session with it last ended with both holding the same changes.
    pub last_sync: Option<DateTime<Utc>>,
}

/// Every peer this device synced with or is connected to (`connected`), with what each lacks.
pub fn peer_status(
    workspace: &mut Workspace,
    connected: &[DeviceId],
    listening: Option<String>,
) -> service::Result<PeerStatus> {
    let on = workspace.device_setting(LISTEN_SETTING)?.is_some_and(|value| value == b"on");
    let devices = workspace.devices()?;
    let mut ids: Vec<DeviceId> = connected.to_vec();
    for known in workspace.known_peers()? {
        if !ids.contains(&known) {
            ids.push(known);
        }
    }
    let mut peers = Vec::with_capacity(ids.len());
    for id in ids {
        let lacks = workspace.peer_lacks(&id)?.values().sum();
        let last_sync = workspace.peer_states(&id)?.last_sync;
        let name = devices.iter().find(|device| device.id == id).map(|device| device.name.clone());
        peers.push(PeerView { id, name, connected: connected.contains(&id), lacks, last_sync });
    }
    Ok(PeerStatus { on, listening, peers })
}

/// Stores whether the daemon listens for peers.
pub fn set_listening(workspace: &mut Workspace, on: bool) -> service::Result<()> {
    if on {
        workspace.set_device_setting(LISTEN_SETTING, b"on")?;
    } else {
        workspace.remove_device_setting(LISTEN_SETTING)?;
    }
    Ok(())
}
