//! The peer commands: `peer serve` (this device listening for the workspace's other devices, in
//! the foreground), `peer ticket` (the address a listening device is dialed at) and
//! `sync --peer TICKET` (one session with a device). Like relay sync they open the workspace in
//! this process: they hold it for as long as the network takes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_p2p::{PeerError, PeerOptions, PeerServer, PeerTicket, SessionReport, SharedWorkspace};
use anyhow::Context;
use clap::Subcommand;

use crate::unlock;

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
    /// Print the ticket of this device while `peer serve` runs: what `sync --peer` dials.
    Ticket,
}

/// How long a peer may send nothing mid-session before the session ends (tests shorten it).
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

fn coded(error: PeerError) -> anyhow::Error {
    match error {
        PeerError::Engine { source, .. } => source.into(),
        other => crate::service::Error::Reported { code: other.code(), message: other.to_string() }.into(),
    }
}

pub fn run(dir: &Path, command: PeerCommand) -> anyhow::Result<()> {
    match command {
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
        let server = PeerServer::start(shared, options).await.map_err(coded)?;
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

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// The ticket file, removed when the device stops listening.
struct TicketFile(PathBuf);

impl TicketFile {
    fn write(dir: &Path, ticket: &str) -> anyhow::Result<Self> {
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

/// `adiuva sync --peer TICKET`: one session with the device the ticket names.
pub fn sync(dir: &Path, ticket: &str, json: bool) -> anyhow::Result<()> {
    let ticket: PeerTicket = ticket.parse().map_err(coded)?;
    let loopback = ticket.addrs.iter().all(|addr| addr.ip().is_loopback());
    let options = options(loopback.then(|| SocketAddr::from(([127, 0, 0, 1], 0))));
    let shared = shared(dir)?;
    let report = runtime()?.block_on(adiuva_p2p::sync_once(shared, &ticket, &options)).map_err(coded)?;
    print_report(&ticket, &report, json)
}

fn print_report(ticket: &PeerTicket, report: &SessionReport, json: bool) -> anyhow::Result<()> {
    if json {
        let view = serde_json::json!({
            "peer": ticket.device.to_string(),
            "applied": report.applied,
            "pending": report.pending,
            "rounds": report.rounds,
            "bytes_sent": report.bytes_sent,
            "bytes_received": report.bytes_received,
            "converged": report.converged,
        });
        println!("{view}");
    } else {
        let state = if report.converged { "both hold the same changes" } else { "not yet the same changes" };
        println!(
            "synced with peer {}: {} changes received, {} waiting; {state}",
            ticket.device.short(),
            report.applied,
            report.pending
        );
    }
    Ok(())
}
