//! `adiuva daemon run|start|stop|status`.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adiuva_engine::Workspace;
use adiuva_model::ErrorCode;
use anyhow::Context;
use clap::Subcommand;
use ulid::Ulid;

use super::DaemonFile;
use super::client::Remote;
use crate::service::Error;
use crate::unlock::{self, PASSPHRASE_ENV};

/// Where a detached daemon writes its log, in the workspace directory.
const LOG_FILE: &str = "daemon.log";
/// How long `start` waits for the daemon to answer (opening a large workspace takes seconds),
/// and `stop` for it to close the workspace.
const PATIENCE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground (for service managers); SIGTERM or SIGINT stop it.
    Run,
    /// Start the daemon in the background; returns once it answers.
    Start,
    /// Stop the daemon once it has answered the requests in flight.
    Stop,
    /// Whether a daemon runs, with its pid, address, uptime, documents loaded and memory.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(dir: &Path, command: DaemonCommand, verbose: u8) -> anyhow::Result<()> {
    match command {
        DaemonCommand::Run => {
            run_with_allocator_settings();
            super::run(dir, Workspace::open(dir, unlock::passphrase)?)
        }
        DaemonCommand::Start => start(dir, verbose),
        DaemonCommand::Stop => stop(dir),
        DaemonCommand::Status { json } => status(dir, json),
    }
}

/// mimalloc's settings for a process that stays: freed memory goes back to the system at once
/// (not after a delay, and not committed ahead), so a daemon that once unlocked the workspace
/// (Argon2id's 64 MiB) or answered a large list does not keep that memory while it idles: about
/// 120 MB less resident with 100k tasks loaded (`desktop/benches/daemon.rs`). mimalloc reads
/// them from the environment when the process starts, and setting them in-process would take
/// `unsafe`: so `daemon run` starts itself again with them, once (same pid, same arguments).
const ALLOCATOR_SETTINGS: [(&str, &str); 2] = [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// Returns only if the settings are in place already, or if starting again failed (the daemon
/// then runs with the defaults: more memory, nothing else).
fn run_with_allocator_settings() {
    if ALLOCATOR_SETTINGS.iter().all(|(name, _)| std::env::var_os(name).is_some()) {
        return;
    }
    let error = match std::env::current_exe() {
        Ok(program) => Command::new(program).args(std::env::args_os().skip(1)).envs(ALLOCATOR_SETTINGS).exec(),
        Err(error) => error,
    };
    tracing::warn!(%error, "could not restart with the allocator's settings; running with its defaults");
}

fn start(dir: &Path, verbose: u8) -> anyhow::Result<()> {
    if let Some(remote) = Remote::find(dir, Ulid::new()) {
        let running = remote.daemon_status()?;
        println!("a daemon already runs for {} (pid {}, {})", dir.display(), running.pid, running.address);
        return Ok(());
    }
    let mut passphrase: Option<zeroize::Zeroizing<String>> = None;
    loop {
        let child = spawn(dir, verbose, passphrase.as_ref().map(|p| p.as_str()))?;
        match wait_until_answering(dir, child)? {
            Ok(announced) => {
                println!("daemon started for {} (pid {}, {})", dir.display(), announced.pid, announced.address);
                return Ok(());
            }
            // The daemon has no terminal to ask on: ask here, once, and hand it over.
            Err(Error::Reported { code: ErrorCode::PassphraseRequired, .. })
                if passphrase.is_none() && std::io::stdin().is_terminal() =>
            {
                let typed = rpassword::prompt_password("Workspace passphrase: ")?;
                passphrase = Some(zeroize::Zeroizing::new(typed));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// `adiuva --workspace DIR daemon run`, detached: its own process group, no terminal, its log
/// in the workspace directory (owner-only).
fn spawn(dir: &Path, verbose: u8, passphrase: Option<&str>) -> anyhow::Result<Child> {
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = Command::new(std::env::current_exe().context("finding this program")?);
    command.arg("--workspace").arg(dir).args(["daemon", "run"]);
    for _ in 0..verbose {
        command.arg("-v");
    }
    if let Some(passphrase) = passphrase {
        command.env(PASSPHRASE_ENV, passphrase);
    }
    let started = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the daemon")?;
    Ok(started)
}

/// Waits until the daemon `child` answers (its announced pid is the child's and its port
/// accepts), or exits: then its last error line in the log says why.
fn wait_until_answering(dir: &Path, mut child: Child) -> anyhow::Result<Result<DaemonFile, Error>> {
    let deadline = Instant::now() + PATIENCE;
    let log_start = std::fs::metadata(dir.join(LOG_FILE)).map(|m| m.len()).unwrap_or_default();
    loop {
        if let Some(exit) = child.try_wait()? {
            return Ok(Err(last_error(dir, log_start).unwrap_or_else(|| Error::Reported {
                code: ErrorCode::DaemonNotRunning,
                message: format!("the daemon exited ({exit}); see {}", dir.join(LOG_FILE).display()),
            })));
        }
        if let Some(announced) = DaemonFile::read(dir).filter(|announced| announced.pid == child.id())
            && Remote::find(dir, Ulid::new()).is_some()
        {
            return Ok(Ok(announced));
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the daemon did not answer within {} s; see {}",
                PATIENCE.as_secs(),
                dir.join(LOG_FILE).display()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The last `error[code]: message` line the daemon wrote to its log since `from`.
fn last_error(dir: &Path, from: u64) -> Option<Error> {
    let log = std::fs::read(dir.join(LOG_FILE)).ok()?;
    let text = String::from_utf8_lossy(log.get(usize::try_from(from).ok()?..)?).into_owned();
    let line = text.lines().rev().find(|line| line.starts_with("error["))?;
    let (code, message) = line.strip_prefix("error[")?.split_once("]: ")?;
    let code = serde_json::from_value(serde_json::Value::String(code.to_owned())).ok()?;
    Some(Error::Reported { code, message: message.to_owned() })
}

fn stop(dir: &Path) -> anyhow::Result<()> {
    let Some(remote) = Remote::find(dir, Ulid::new()) else {
        println!("no daemon runs for {}", dir.display());
        return Ok(());
    };
    remote.stop()?;
    // Stopped once the workspace is closed: every acknowledged commit durable, the lock free.
    let deadline = Instant::now() + PATIENCE;
    while Workspace::is_held(dir) {
        anyhow::ensure!(Instant::now() < deadline, "the daemon did not stop within {} s", PATIENCE.as_secs());
        std::thread::sleep(POLL);
    }
    println!("daemon stopped");
    Ok(())
}

fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let Some(remote) = Remote::find(dir, Ulid::new()) else {
        return Err(Error::Reported {
            code: ErrorCode::DaemonNotRunning,
            message: format!("no daemon runs for {}", dir.display()),
        }
        .into());
    };
    let status = remote.daemon_status()?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "pid        {}", status.pid)?;
    writeln!(out, "address    {}", status.address)?;
    writeln!(
        out,
        "uptime     {} s (since {})",
        status.uptime_seconds,
        status.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    writeln!(
        out,
        "documents  {}",
        if status.documents_loaded.is_empty() { "-".into() } else { status.documents_loaded.join(", ") }
    )?;
    match status.resident_bytes {
        Some(bytes) => writeln!(out, "memory     {:.1} MiB", bytes as f64 / (1024.0 * 1024.0))?,
        None => writeln!(out, "memory     unknown")?,
    }
    if let Some(progress) = status.indexing {
        writeln!(out, "indexing   {} of {} records", progress.done, progress.total)?;
    }
    Ok(())
}
