//! The relay commands: `account register|login|logout|status`, `sync` and `restore`. They open
//! the workspace in this process (a running daemon holds it: stop it first), since they hold
//! it for as long as the network takes and a password or phrase never crosses the local API.

use std::cell::Cell;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_sync::{Progress, RestoreFrom, SyncError, SyncReport};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use crate::unlock;

/// Where the account password comes from: this variable, else a prompt on the terminal.
pub const PASSWORD_ENV: &str = "ADIUVA_PASSWORD";

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create an account on a relay for this device, and keep its session on this device.
    Register {
        /// The relay, e.g. https://relay.example.com.
        #[arg(long)]
        server: String,
        #[arg(long)]
        email: String,
    },
    /// Sign this device in to an existing account.
    Login {
        #[arg(long)]
        server: String,
        #[arg(long)]
        email: String,
    },
    /// Forget the account's session on this device (the relay keeps what it holds).
    Logout,
    /// The account, its tier and usage, and this device's sync state.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// `adiuva restore`'s arguments.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub email: String,
    /// The 12-word recovery phrase (`adiuva recovery phrase` showed it).
    #[arg(long)]
    pub phrase: String,
    /// The workspace's id (`adiuva status` and `adiuva recovery phrase` show it).
    #[arg(long = "id", value_name = "WORKSPACE_ID")]
    pub workspace_id: String,
    /// This new device's name.
    #[arg(long, default_value = "restored")]
    pub device_name: String,
}

pub fn account(dir: &Path, command: AccountCommand) -> anyhow::Result<()> {
    let mut workspace = Workspace::open(dir, unlock::passphrase)?;
    match command {
        AccountCommand::Register { server, email } => sign_in(&mut workspace, &server, &email, true),
        AccountCommand::Login { server, email } => sign_in(&mut workspace, &server, &email, false),
        AccountCommand::Logout => {
            if adiuva_sync::sign_out(&mut workspace)? {
                println!("signed out; the relay keeps what it holds");
            } else {
                println!("not signed in");
            }
            Ok(())
        }
        AccountCommand::Status { json } => account_status(&mut workspace, json),
    }
}

fn sign_in(workspace: &mut Workspace, server: &str, email: &str, register: bool) -> anyhow::Result<()> {
    let password = password()?;
    let view = adiuva_sync::sign_in(workspace, server, email, &password, register).map_err(coded)?;
    let verb = if register { "registered" } else { "signed in as" };
    println!("{verb} {} on {server} (tier {})", view.email, view.tier);
    Ok(())
}

/// The account password: [`PASSWORD_ENV`], else typed on the terminal. Never an argument.
fn password() -> anyhow::Result<Zeroizing<String>> {
    if let Some(password) = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
        return Ok(Zeroizing::new(password));
    }
    anyhow::ensure!(std::io::stdin().is_terminal(), "set {PASSWORD_ENV} or run on a terminal to enter the password");
    Ok(Zeroizing::new(rpassword::prompt_password("Account password: ")?))
}

fn account_status(workspace: &mut Workspace, json: bool) -> anyhow::Result<()> {
    let Some(account) = adiuva_sync::Account::load(workspace).map_err(coded)? else {
        if json {
            println!("{}", serde_json::json!({ "signed_in": false }));
        } else {
            println!("not signed in; `adiuva account login --server URL --email E`");
        }
        return Ok(());
    };
    let state = workspace.relay_state(&account.server)?;
    let waiting = workspace.relay_waiting(&account.server)?;
    let online = adiuva_sync::account_view(workspace);
    if json {
        let view = online.as_ref().ok();
        println!(
            "{}",
            serde_json::json!({
                "signed_in": true,
                "server": account.server,
                "email": account.email,
                "online": view.is_some(),
                "tier": view.map(|v| v.tier.clone()),
                "usage_bytes": view.map(|v| v.usage_bytes),
                "quota_bytes": view.and_then(|v| v.quota_bytes),
                "cursor": state.cursor,
                "last_sync": state.last_sync,
                "waiting": waiting,
            })
        );
        return Ok(());
    }
    println!("account   {} on {}", account.email, account.server);
    match online {
        Ok(view) => {
            let quota = view.quota_bytes.map_or("unlimited".to_owned(), |q| format!("{q} bytes"));
            println!("online    tier {}, {} bytes stored of {quota}", view.tier, view.usage_bytes);
        }
        Err(error) => println!("offline   {error}"),
    }
    println!("last sync {}", state.last_sync.map_or("never".to_owned(), |t| t.to_rfc3339()));
    println!("waiting   {waiting} events wait to go out");
    Ok(())
}

/// `adiuva sync`: once. Offline is not a failure: it says so, and what waits stays queued.
pub fn sync(dir: &Path) -> anyhow::Result<()> {
    let mut workspace = Workspace::open(dir, unlock::passphrase)?;
    sync_open(&mut workspace)
}

/// Syncs an open workspace once, with progress, and prints the outcome.
pub fn sync_open(workspace: &mut Workspace) -> anyhow::Result<()> {
    let bar = Bar::new();
    let result = adiuva_sync::sync_once(workspace, &mut |step| bar.show(step));
    bar.clear();
    match result {
        Ok(report) => {
            print_report(&report);
            Ok(())
        }
        Err(error @ SyncError::Offline { .. }) => {
            let server = adiuva_sync::Account::load(workspace).ok().flatten().map(|a| a.server).unwrap_or_default();
            let waiting = workspace.relay_waiting(&server)?;
            println!("offline: {error}");
            println!("{waiting} events wait to go out");
            Ok(())
        }
        Err(error) => Err(coded(error)),
    }
}

fn print_report(report: &SyncReport) {
    println!(
        "synced: {} units pushed, {} pulled ({} changes applied{}{}); relay position {}; {} events wait to go out",
        report.pushed,
        report.pulled,
        report.applied,
        if report.pending > 0 { format!(", {} waiting for what they build on", report.pending) } else { String::new() },
        if report.refused > 0 { format!(", {} refused", report.refused) } else { String::new() },
        report.cursor,
        report.waiting,
    );
}

/// `adiuva restore`: an empty directory becomes the workspace, as a new device.
pub fn restore(dir: &Path, args: RestoreArgs) -> anyhow::Result<()> {
    let password = password()?;
    let protection = unlock::chosen_protection(unlock::KeyStore::Auto)?;
    let from = RestoreFrom {
        server: &args.server,
        email: &args.email,
        password: &password,
        workspace: &args.workspace_id,
        phrase: &args.phrase,
    };
    let bar = Bar::new();
    let result = adiuva_sync::restore(dir, protection, &from, &args.device_name, &mut |step| bar.show(step));
    bar.clear();
    let mut workspace = result.map_err(coded)?;
    let status = workspace.status()?;
    let events: usize = status.documents.iter().map(|d| d.events).sum();
    println!(
        "restored workspace {} in {} ({events} events); this device: {} ({})",
        workspace.workspace_id(),
        dir.display(),
        workspace.device_id().short(),
        args.device_name
    );
    Ok(())
}

/// A sync error as the error the command line prints with its code.
fn coded(error: SyncError) -> anyhow::Error {
    match error {
        SyncError::Engine(engine) => engine.into(),
        other => crate::service::Error::Reported { code: other.code(), message: other.to_string() }.into(),
    }
}

/// The progress of a long push, pull or restore: a bar on a terminal; elsewhere (a log, a
/// service manager, a script) a line at the start of each phase and at each further tenth.
enum Bar {
    Terminal(ProgressBar),
    Lines(Cell<Option<(&'static str, u64)>>),
}

impl Bar {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines(Cell::new(None));
        }
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self::Terminal(bar)
    }

    fn show(&self, step: Progress) {
        let (message, done, total) = match step {
            Progress::Pushing { done, total } => ("pushing units", done, total),
            Progress::Pulling { done, total } => ("pulling units", done, total),
        };
        match self {
            Self::Terminal(bar) => {
                bar.set_message(message);
                bar.set_length(total);
                bar.set_position(done);
            }
            Self::Lines(last) => {
                let tenth = (done * 10).checked_div(total).unwrap_or(10);
                if last.get() != Some((message, tenth)) {
                    last.set(Some((message, tenth)));
                    eprintln!("{message} {done}/{total}");
                }
            }
        }
    }

    fn clear(&self) {
        if let Self::Terminal(bar) = self {
            bar.finish_and_clear();
        }
    }
}
