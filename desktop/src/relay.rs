//! The relay commands: `account register|login|logout|status|dismiss`, `sync`, `restore`, `backup
//! now|list` and `device invite|join`. They open
//! the workspace in this process (a running daemon holds it: stop it first), since they hold
//! it for as long as the network takes and a password or phrase never crosses the local API.

use std::cell::Cell;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::ErrorCode;
use adiuva_sync::{Progress, RestoreFrom, SyncError, SyncReport};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
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
    /// Stop trying again a relay unit held back because it does not open here (`account
    /// status` names them): `sync` no longer fails for it. Should it ever open, its changes
    /// reach this device only through a peer.
    Dismiss {
        /// The unit's number in the relay's sequence.
        unit: u64,
    },
}

/// `adiuva restore`'s arguments.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Bring back what restore point ID holds into this workspace (`adiuva backup list`).
    #[arg(long, value_name = "ID", conflicts_with_all = ["server", "email", "phrase", "workspace_id"])]
    pub point: Option<String>,
    #[arg(long, required_unless_present = "point")]
    pub server: Option<String>,
    #[arg(long, required_unless_present = "point")]
    pub email: Option<String>,
    /// The 12-word recovery phrase (`adiuva recovery phrase` showed it).
    #[arg(long, required_unless_present = "point")]
    pub phrase: Option<String>,
    /// The workspace's id (`adiuva status` and `adiuva recovery phrase` show it).
    #[arg(long = "id", value_name = "WORKSPACE_ID", required_unless_present = "point")]
    pub workspace_id: Option<String>,
    /// This new device's name.
    #[arg(long, default_value = "restored")]
    pub device_name: String,
    /// Hold back relay unit N if it does not open, instead of stopping there (as a sync holds
    /// it: tried again at each sync); for a unit judged junk that no restore point covers yet.
    #[arg(long = "hold-unit", value_name = "N", conflicts_with = "point")]
    pub hold_units: Vec<u64>,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Make a restore point now and keep it on the relay.
    Now,
    /// The workspace's restore points on the relay, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `adiuva device invite`'s arguments.
#[derive(clap::Args, Debug)]
pub struct InviteArgs {
    /// How long the ticket stays valid, in minutes (at most 7 days).
    #[arg(long, value_name = "MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=10080))]
    pub valid_for: u32,
    /// Print the ticket and return: the next `adiuva sync` (or the daemon) lets the device in.
    #[arg(long)]
    pub no_wait: bool,
    /// Invite with no relay: this device listens, the ticket names where, and the command waits
    /// until the new device joined and took in the workspace.
    #[arg(long, conflicts_with = "no_wait")]
    pub p2p: bool,
}

/// `adiuva device join`'s arguments.
#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// The ticket `adiuva device invite` printed.
    pub ticket: String,
    /// This new device's name.
    #[arg(long, default_value_t = crate::cli::default_device_name())]
    pub device_name: String,
}

/// `adiuva device invite`: opens an invitation on the account's relay, prints its ticket, and
/// (unless `--no-wait`) lets the device in when it joins.
pub fn invite(dir: &Path, args: InviteArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let valid_for = chrono::Duration::minutes(i64::from(args.valid_for));
    if args.p2p {
        return crate::peer::invite(dir, valid_for);
    }
    let mut workspace = Workspace::open(dir, unlock::passphrase)?;
    let ticket = adiuva_sync::invite(&mut workspace, valid_for).map_err(coded)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", ticket.encode().as_str())?;
    stdout.flush()?;
    let until = ticket.expires_at;
    eprintln!(
        "On the new device: adiuva --workspace DIR device join TICKET (single use, valid until {}).",
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if args.no_wait {
        return Ok(());
    }
    eprintln!("Waiting for the device to join…");
    let joined = adiuva_sync::wait_for_join(&mut workspace, until).map_err(coded)?;
    anyhow::ensure!(!joined.is_empty(), "no device joined before the ticket expired");
    for device in joined {
        println!("device {} joined", device.short());
    }
    Ok(())
}

/// `adiuva device join TICKET`: an empty directory becomes a new device of the ticket's
/// workspace.
pub fn join(dir: &Path, args: JoinArgs) -> anyhow::Result<()> {
    if adiuva_p2p::JoinTicket::is_join_ticket(&args.ticket) {
        return crate::peer::join(dir, &args.ticket, &args.device_name);
    }
    anyhow::ensure!(
        adiuva_sync::RelayTicket::is_relay_ticket(&args.ticket),
        "this is not a ticket `adiuva device invite` prints"
    );
    let ticket = adiuva_sync::RelayTicket::decode(&args.ticket).map_err(coded)?;
    let password = password()?;
    let protection = unlock::chosen_protection(unlock::KeyStore::Auto)?;
    eprintln!("Waiting for the inviting device to let this one in…");
    let bar = Bar::new();
    let result = adiuva_sync::join(dir, protection, &ticket, &password, &args.device_name, &mut |step| bar.show(step));
    bar.clear();
    let workspace = result.map_err(coded)?;
    println!(
        "joined workspace {} in {}; this device: {} ({})",
        workspace.workspace_id(),
        dir.display(),
        workspace.device_id().short(),
        args.device_name
    );
    Ok(())
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
        AccountCommand::Dismiss { unit } => {
            let account = adiuva_sync::Account::load(&workspace)?.ok_or_else(|| anyhow::anyhow!("not signed in"))?;
            let held = workspace.dismiss_held_unit(&account.server, unit)?;
            println!("dismissed relay unit #{unit} ({}); it is not tried again", held.code.as_str());
            Ok(())
        }
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
    let unsettled = workspace.unsettled_units(&account.server)?;
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
                "refused_units": unsettled.refused,
                "held_units": unsettled.held,
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
    for (seq, unit) in &unsettled.refused {
        for (document, code, message) in &unit.refusals {
            let document = document.as_deref().unwrap_or("(the unit)");
            println!("refused   unit #{seq}, {document}: {} ({message})", code.as_str());
        }
    }
    for (seq, unit) in &unsettled.held {
        println!(
            "held back unit #{seq}: {} ({}); fetched and tried again at each sync (`adiuva account dismiss {seq}` stops that)",
            unit.code.as_str(),
            unit.reason
        );
    }
    Ok(())
}

/// `adiuva sync`: once, through the workspace's daemon when one runs. Offline is not a
/// failure: it says so, and what waits stays queued.
pub fn sync(dir: &Path, correlation: ulid::Ulid) -> anyhow::Result<()> {
    if let Some(remote) = crate::daemon::client::Remote::find(dir, correlation) {
        let outcome = remote.sync_now()?;
        print_outcome(&outcome);
        return held_back(&outcome);
    }
    let mut workspace = Workspace::open(dir, unlock::passphrase)?;
    sync_open(&mut workspace)
}

/// Syncs an open workspace once, with progress, and prints the outcome.
pub fn sync_open(workspace: &mut Workspace) -> anyhow::Result<()> {
    let bar = Bar::new();
    let result = adiuva_sync::sync_once(workspace, &mut |step| bar.show(step));
    bar.clear();
    let outcome = match result {
        Ok(report) => SyncOutcome::synced(&report),
        Err(error @ SyncError::Offline { .. }) => {
            let server = adiuva_sync::Account::load(workspace).ok().flatten().map(|a| a.server).unwrap_or_default();
            SyncOutcome::offline(&error, workspace.relay_waiting(&server)?)
        }
        Err(error) => return Err(coded(error)),
    };
    print_outcome(&outcome);
    held_back(&outcome)
}

/// A sync that held back a unit of the relay's sequence went on past it, but did not take it
/// in: that fails the command, with the unit's code, once the rest is synced.
fn held_back(outcome: &SyncOutcome) -> anyhow::Result<()> {
    match outcome.held_units.first() {
        Some(unit) => Err(crate::service::Error::Reported {
            code: unit.code,
            message: format!("relay unit #{} does not open here: {}", unit.seq, unit.reason),
        }
        .into()),
        None => Ok(()),
    }
}

/// What one `adiuva sync` did, the same whether it ran here or in the daemon (`POST /v1/sync`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct SyncOutcome {
    /// Units uploaded.
    pub pushed: u64,
    /// Units pulled.
    pub pulled: u64,
    /// Changes applied from them.
    pub applied: usize,
    /// Changes kept aside until what they build on arrives.
    pub pending: usize,
    /// Changes refused as a removed device's.
    pub refused: usize,
    /// Units of the relay's sequence this device refused and keeps to try again.
    #[serde(default)]
    pub refused_units: usize,
    /// Units of the relay's sequence that do not open here, held back: the sync went on past
    /// them, and fetches and tries each again at every sync.
    #[serde(default)]
    pub held_units: Vec<HeldUnitView>,
    /// The relay's sequence number this device has pulled up to.
    pub cursor: u64,
    /// This device's events the relay has not acknowledged.
    pub waiting: u64,
    /// Why the relay could not be reached, if it could not (what waits stays queued).
    pub offline: Option<String>,
}

impl SyncOutcome {
    pub fn synced(report: &SyncReport) -> Self {
        Self {
            pushed: report.pushed,
            pulled: report.pulled,
            applied: report.applied,
            pending: report.pending,
            refused: report.refused,
            refused_units: report.refused_units,
            held_units: (report.held_units.iter())
                .map(|(seq, unit)| HeldUnitView { seq: *seq, code: unit.code, reason: unit.reason.clone() })
                .collect(),
            cursor: report.cursor,
            waiting: report.waiting,
            offline: None,
        }
    }

    pub fn offline(error: &SyncError, waiting: u64) -> Self {
        Self { waiting, offline: Some(error.to_string()), ..Self::default() }
    }
}

/// A unit of the relay's sequence held back (see [`adiuva_engine::HeldUnit`]).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HeldUnitView {
    /// Its number in the relay's sequence.
    pub seq: u64,
    /// The stable code of why it does not open here.
    #[schema(value_type = String)]
    pub code: ErrorCode,
    pub reason: String,
}

pub fn print_outcome(outcome: &SyncOutcome) {
    if let Some(reason) = &outcome.offline {
        println!("offline: {reason}");
        println!("{} events wait to go out", outcome.waiting);
        return;
    }
    println!(
        "synced: {} units pushed, {} pulled ({} changes applied{}{}); relay position {}; {} events wait to go out",
        outcome.pushed,
        outcome.pulled,
        outcome.applied,
        if outcome.pending > 0 {
            format!(", {} waiting for what they build on", outcome.pending)
        } else {
            String::new()
        },
        if outcome.refused > 0 { format!(", {} refused", outcome.refused) } else { String::new() },
        outcome.cursor,
        outcome.waiting,
    );
    if outcome.refused_units > 0 {
        println!(
            "{} relay units refused: a device sent what cannot be taken in (`adiuva status`; kept to be tried again)",
            outcome.refused_units
        );
    }
    for unit in &outcome.held_units {
        println!(
            "held back relay unit #{}: it does not open here ({}: {}); the rest was synced; it is tried again at each sync until it opens or `adiuva account dismiss {}`",
            unit.seq,
            unit.code.as_str(),
            unit.reason,
            unit.seq
        );
    }
}

/// `adiuva restore`: an empty directory becomes the workspace, as a new device; with
/// `--point`, a restore point's content comes back into this workspace.
pub fn restore(dir: &Path, args: RestoreArgs) -> anyhow::Result<()> {
    if let Some(point) = &args.point {
        let mut workspace = Workspace::open(dir, unlock::passphrase)?;
        let bar = Bar::new();
        let result = adiuva_sync::restore_point(&mut workspace, point, &mut |step| bar.show(step));
        bar.clear();
        let restored = result.map_err(coded)?;
        println!(
            "restore point {point} applied: {} changes this device lacked brought back{}",
            restored.applied,
            if restored.refused > 0 { format!(", {} refused", restored.refused) } else { String::new() }
        );
        return Ok(());
    }
    let (Some(server), Some(email), Some(phrase), Some(workspace_id)) =
        (&args.server, &args.email, &args.phrase, &args.workspace_id)
    else {
        anyhow::bail!("--server, --email, --phrase and --id name what to restore");
    };
    let password = password()?;
    let protection = unlock::chosen_protection(unlock::KeyStore::Auto)?;
    let from = RestoreFrom { server, email, password: &password, workspace: workspace_id, phrase };
    let bar = Bar::new();
    let result =
        adiuva_sync::restore(dir, protection, &from, &args.device_name, &args.hold_units, &mut |step| bar.show(step));
    bar.clear();
    let mut workspace = result.map_err(|error| {
        if let SyncError::Engine(engine) = &error
            && let Some(seq) = engine.unopened_relay_unit()
        {
            eprintln!(
                "relay unit #{seq} does not open: the relay altered it, or a device uploaded what no device can open; \
                 if you judge it junk, `--hold-unit {seq}` restores the rest and holds it back"
            );
        }
        coded(error)
    })?;
    for (seq, unit) in workspace.unsettled_units(server)?.held {
        println!(
            "held back relay unit #{seq}: {} ({}); tried again at each sync until it opens or `adiuva account dismiss {seq}`",
            unit.code.as_str(),
            unit.reason
        );
    }
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

/// `adiuva backup now|list`.
pub fn backup(dir: &Path, command: BackupCommand) -> anyhow::Result<()> {
    let mut workspace = Workspace::open(dir, unlock::passphrase)?;
    match command {
        BackupCommand::Now => {
            let bar = Bar::new();
            let result = adiuva_sync::backup_now(&mut workspace, &mut |step| bar.show(step));
            bar.clear();
            let point = result.map_err(coded)?;
            println!("restore point {}: {} bytes in {} blobs", point.id, point.size_bytes, point.chunk_count);
        }
        BackupCommand::List { json } => {
            let points = adiuva_sync::backup_list(&mut workspace).map_err(coded)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&points)?);
            } else if points.is_empty() {
                println!("no restore points; `adiuva backup now` makes one");
            } else {
                for point in points {
                    println!(
                        "{}  {}  {} bytes in {} blobs",
                        point.id,
                        point.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        point.size_bytes,
                        point.chunk_count
                    );
                }
            }
        }
    }
    Ok(())
}

/// A sync error as the error the command line prints with its code.
fn coded(error: SyncError) -> anyhow::Error {
    match error {
        SyncError::Engine(engine) => engine.into(),
        other => service_error(other).into(),
    }
}

/// A sync error as a service error (what the daemon answers), its code kept.
pub fn service_error(error: SyncError) -> crate::service::Error {
    match error {
        SyncError::Engine(engine) => crate::service::Error::Engine(engine),
        other => crate::service::Error::Reported { code: other.code(), message: other.to_string() },
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
