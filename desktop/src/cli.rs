//! The command line: argument parsing and one function per command, each a thin layer over a
//! [`Service`]: the workspace's daemon when one runs, else the workspace opened here.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use adiuva_engine::Workspace;
use adiuva_model::record::{Priority, TaskStatus};
use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info_span;
use ulid::Ulid;

use crate::daemon::client::Remote;
use crate::daemon::control::DaemonCommand;
use crate::daemon::{self, DaemonFile};
use crate::import::ImportProgress;
use crate::llm::AskRequest;
use crate::llm::commands::{self as llm_commands, LlmCommand};
use crate::output;
use crate::peer::{self, PeerCommand};
use crate::relay::{self, AccountCommand, RestoreArgs};
use crate::search::{self, IndexCommand, SearchMode, SearchRequest, SearchSlot};
use crate::service::{DeviceRename, Local, LogQuery, NewNote, NewTask, Service, TaskPatch, TaskQuery};
use crate::unlock::{self, KeyStore};

/// How long a command waits for a daemon that is starting or stopping (it holds the workspace
/// but does not answer yet) before reporting the workspace as locked.
const WAIT_FOR_DAEMON: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(name = "adiuva", version, about = "Adiuva: a local-first, private personal assistant")]
pub struct Args {
    /// The workspace directory [default: the platform data directory, e.g. ~/.local/share/adiuva].
    #[arg(long, global = true, env = "ADIUVA_HOME", value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug); ADIUVA_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new workspace.
    Init {
        /// This device's name, shown in the device list.
        #[arg(long, default_value_t = default_device_name())]
        device_name: String,
        /// Where the workspace key is kept at rest.
        #[arg(long, value_enum, default_value_t = KeyStore::Auto)]
        key_store: KeyStore,
    },
    /// Tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Notes.
    #[command(subcommand)]
    Note(NoteCommand),
    /// Events with their envelopes, oldest first.
    Log {
        #[arg(long)]
        json: bool,
        /// A kind (`task.created`) or a kind prefix (`task`).
        #[arg(long)]
        kind: Option<String>,
        /// An actor (`user`, `plugin:email-scanner`) or an actor kind (`plugin`).
        #[arg(long)]
        actor: Option<String>,
        /// Only the events of this task (an id or unique prefix).
        #[arg(long)]
        task: Option<String>,
        /// Only the last N events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Workspace id, device, counts and storage size.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Import tasks and notes from a JSON Lines file (one object per line, with "type": "task" or "note").
    Import { file: PathBuf },
    /// Fold every document's recent changes into a compacted snapshot.
    Compact,
    /// After the witness file (which guards the store against rollback) was lost: trust the
    /// store as it is and record a new witness.
    ResetWitness,
    /// Bring a workspace written by an older version to this version's layout (each note in a
    /// document of its own) and keys (this device's own storage key). Running it again does nothing.
    Upgrade,
    /// Write the JSON Schema of every contract type into a directory.
    Schema {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The daemon: keeps the workspace open and serves it on 127.0.0.1; commands go through it
    /// while it runs.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The devices of this workspace.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Recovery of the workspace on a new machine.
    #[command(subcommand)]
    Recovery(RecoveryCommand),
    /// Language model providers: cloud ones with this device's keys, Ollama, a local model.
    #[command(subcommand)]
    Llm(LlmCommand),
    /// The relay account this device syncs through.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Sync once with the relay: push what it lacks, pull what is new. Offline is reported, not
    /// an error: what waits goes out at the next sync. With --peer, with that device directly.
    Sync {
        /// Sync with this device directly instead (its ticket: `adiuva peer ticket` there).
        #[arg(long, value_name = "TICKET")]
        peer: Option<String>,
        #[arg(long, requires = "peer")]
        json: bool,
        /// With --peer: stay connected, each side's new changes reaching the other as they are
        /// committed, until Ctrl-C or SIGTERM (held by the daemon while one runs).
        #[arg(long, requires = "peer")]
        live: bool,
    },
    /// This device as a peer of the workspace's other devices, with no server.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Restore a workspace from the relay into an empty directory (--workspace), as a new device;
    /// or, with --point, bring back into this workspace what a restore point holds.
    Restore(RestoreArgs),
    /// Restore points on the relay: compacted snapshots of the workspace, sealed.
    #[command(subcommand)]
    Backup(relay::BackupCommand),
    /// Ask the language models (the fallback chain, or one provider).
    Ask {
        prompt: String,
        /// Ask this provider only.
        #[arg(long)]
        provider: Option<String>,
        /// Print the answer token by token as it comes.
        #[arg(long)]
        stream: bool,
        /// The whole answer as JSON: text, tool calls, usage, cost, fallbacks.
        #[arg(long)]
        json: bool,
    },
    /// Find records (notes, tasks, calendar events, memory) by words and by meaning.
    Search {
        query: String,
        #[arg(long, value_enum, default_value_t = SearchMode::Hybrid)]
        mode: SearchMode,
        /// Only this collection (notes, tasks, calendar, memory).
        #[arg(long)]
        collection: Option<String>,
        /// Only records with this tag.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The search index: derived from the log, rebuilt at will.
    #[command(subcommand)]
    Index(IndexCommand),
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Every device, removed ones included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Rename a device (ID: its id, or a unique prefix of at least 4 hex digits).
    Rename { id: String, name: String },
    /// Remove a device: it keeps what it could read until now and nothing written from now on
    /// (the workspace key is rotated), and its later changes are refused.
    Remove { id: String },
    /// Invite a new device: prints a single-use, expiring ticket, then waits for the device to
    /// join (through the relay of this device's account).
    Invite(relay::InviteArgs),
    /// Join the workspace of TICKET as a new device, in an empty --workspace directory.
    Join(relay::JoinArgs),
}

#[derive(Subcommand, Debug)]
pub enum RecoveryCommand {
    /// Make a new 12-word recovery phrase and print it, once. Runs without the daemon (the
    /// phrase never goes through the local API).
    Phrase,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Add a task.
    Add {
        title: String,
        #[arg(long)]
        description: Option<String>,
        /// Due date, YYYY-MM-DD.
        #[arg(long)]
        due: Option<NaiveDate>,
        #[arg(long, value_enum)]
        priority: Option<PriorityArg>,
        /// A tag (repeat for several).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        project: Option<String>,
    },
    /// List tasks (open ones unless --all).
    List {
        #[arg(long)]
        json: bool,
        /// Include done and cancelled tasks.
        #[arg(long)]
        all: bool,
        #[arg(long = "tag")]
        tag: Option<String>,
    },
    /// Show one task with its history and any conflicting edits.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Mark a task done (ID: the id, or a unique prefix or suffix of it).
    Done { id: String },
    /// Change a task's fields.
    Edit {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "no_due")]
        due: Option<NaiveDate>,
        /// Remove the due date.
        #[arg(long)]
        no_due: bool,
        #[arg(long, value_enum)]
        priority: Option<PriorityArg>,
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Replace the tags (repeat for several).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete a task (its history stays in the log).
    Rm { id: String },
}

#[derive(Subcommand, Debug)]
pub enum NoteCommand {
    /// Add a note.
    Add {
        title: String,
        #[arg(long, conflicts_with = "file")]
        body: Option<String>,
        /// Read the body from a file.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// List notes.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PriorityArg {
    Low,
    Medium,
    High,
    Urgent,
}

impl From<PriorityArg> for Priority {
    fn from(value: PriorityArg) -> Self {
        match value {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Medium => Priority::Medium,
            PriorityArg::High => Priority::High,
            PriorityArg::Urgent => Priority::Urgent,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StatusArg {
    Todo,
    InProgress,
    Done,
    Cancelled,
}

impl From<StatusArg> for TaskStatus {
    fn from(value: StatusArg) -> Self {
        match value {
            StatusArg::Todo => TaskStatus::Todo,
            StatusArg::InProgress => TaskStatus::InProgress,
            StatusArg::Done => TaskStatus::Done,
            StatusArg::Cancelled => TaskStatus::Cancelled,
        }
    }
}

pub(crate) fn default_device_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "this device".into())
}

fn workspace_dir(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.workspace {
        Some(dir) => Ok(dir.clone()),
        None => dirs::data_dir()
            .map(|dir| dir.join("adiuva"))
            .context("no platform data directory; pass --workspace DIR or set ADIUVA_HOME"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = workspace_dir(&args)?;
    let correlation = Ulid::new();
    let span = info_span!("command", %correlation);
    let _entered = span.enter();
    match args.command {
        Command::Init { device_name, key_store } => init(&dir, &device_name, key_store),
        Command::Schema { out } => write_schemas(&out),
        Command::Daemon(command) => daemon::control::run(&dir, command, args.verbose),
        // Rewrites the store under the workspace: only without a daemon.
        Command::Upgrade => {
            let upgrade = Workspace::open(&dir, unlock::passphrase)?.upgrade()?;
            if upgrade == adiuva_engine::Upgrade::default() {
                println!("the workspace is current");
            } else {
                println!(
                    "upgraded: {} records moved into documents of their own, {} documents' changes attested by this device, {} stored parts moved to this device's own storage key",
                    upgrade.records_moved, upgrade.attested, upgrade.resealed
                );
            }
            Ok(())
        }
        Command::Recovery(RecoveryCommand::Phrase) => {
            let mut workspace = Workspace::open(&dir, unlock::passphrase)?;
            let phrase = workspace.create_recovery()?;
            println!("{}", phrase.as_str());
            eprintln!(
                "Write these 12 words down and keep them offline, with the workspace id {}: with your account they restore this workspace on a new machine.",
                workspace.workspace_id()
            );
            // The relay keeps the key wrapped under the phrase: a restore needs it.
            if adiuva_sync::Account::load(&workspace)?.is_some() {
                relay::sync_open(&mut workspace)?;
            }
            Ok(())
        }
        Command::Account(command) => relay::account(&dir, command),
        Command::Sync { peer: None, .. } => relay::sync(&dir, correlation),
        Command::Sync { peer: Some(ticket), json, live } => peer::sync(&dir, &ticket, json, live),
        Command::Peer(command @ (PeerCommand::Serve { .. } | PeerCommand::Ticket)) => peer::run(&dir, command),
        Command::Restore(args) => relay::restore(&dir, args),
        Command::Backup(command) => relay::backup(&dir, command),
        Command::Device(DeviceCommand::Invite(args)) => relay::invite(&dir, args),
        Command::Device(DeviceCommand::Join(args)) => relay::join(&dir, args),
        Command::ResetWitness => {
            Workspace::open_resetting_witness(&dir, unlock::passphrase)?;
            println!("recorded a new witness: the store is trusted as it is");
            Ok(())
        }
        command => {
            let deadline = Instant::now() + WAIT_FOR_DAEMON;
            loop {
                // Through the workspace's daemon when one runs, else on the workspace itself.
                if let Some(mut remote) = Remote::find(&dir, correlation) {
                    return execute(&mut remote, command);
                }
                match Workspace::open(&dir, unlock::passphrase) {
                    Ok(mut workspace) => {
                        // This process holds the lock: an address file left here is stale.
                        DaemonFile::remove_stale(&dir);
                        let search = &mut SearchSlot::default();
                        let removal = matches!(command, Command::Device(DeviceCommand::Remove { .. }));
                        execute(&mut Local { workspace: &mut workspace, correlation, search }, command)?;
                        // The relay revokes a removed device, and keeps the new epoch's envelopes
                        // for the devices that are away, as soon as it can.
                        if removal && adiuva_sync::Account::load(&workspace)?.is_some() {
                            relay::sync_open(&mut workspace)?;
                        }
                        return Ok(());
                    }
                    // A daemon starting or stopping holds the lock without answering yet.
                    Err(adiuva_engine::Error::WorkspaceLocked { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(40));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }
}

/// Runs one workspace command through `service` and prints its outcome.
fn execute(service: &mut dyn Service, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { .. }
        | Command::Schema { .. }
        | Command::Daemon(_)
        | Command::ResetWitness
        | Command::Recovery(_)
        | Command::Account(_)
        | Command::Sync { .. }
        | Command::Peer(PeerCommand::Serve { .. } | PeerCommand::Ticket)
        | Command::Restore(_)
        | Command::Backup(_)
        | Command::Upgrade => Ok(()),
        Command::Peer(command) => peer::switch(service, &command),
        Command::Device(command) => device(service, command),
        Command::Task(command) => task(service, command),
        Command::Note(command) => note(service, command),
        Command::Log { json, kind, actor, task, limit } => {
            output::events(&service.log(LogQuery { kind, actor, task, limit })?, json)
        }
        Command::Status { json } => {
            output::status(&service.status()?, service.sync_status()?.as_ref(), &service.peer_status()?, json)
        }
        Command::Import { file } => import(service, &file),
        Command::Compact => {
            service.compact()?;
            println!("compacted");
            Ok(())
        }
        Command::Llm(command) => llm_commands::run(service, command),
        Command::Ask { prompt, provider, stream, json } => {
            llm_commands::ask(service, AskRequest { prompt, provider, stream }, json)
        }
        Command::Search { query, mode, collection, tag, limit, json } => {
            search::search(service, SearchRequest { q: query, mode, collection, tag, limit: Some(limit) }, json)
        }
        Command::Index(command) => search::index(service, command),
    }
}

fn init(dir: &Path, device_name: &str, key_store: KeyStore) -> anyhow::Result<()> {
    // A daemon holds the workspace's lock: the workspace it serves exists.
    if Remote::find(dir, Ulid::new()).is_some() {
        return Err(adiuva_engine::Error::WorkspaceExists { path: dir.to_owned() }.into());
    }
    let protection = unlock::chosen_protection(key_store)?;
    let workspace = match Workspace::init(dir, protection, device_name) {
        Err(adiuva_engine::Error::KeyringUnavailable { detail }) if key_store == KeyStore::Auto => {
            tracing::info!(%detail, "no OS keyring; protecting the workspace key with a passphrase");
            Workspace::init(dir, unlock::new_passphrase()?, device_name)?
        }
        other => other?,
    };
    println!("created workspace {} in {}", workspace.workspace_id(), dir.display());
    println!("this device: {} ({device_name})", workspace.device_id().short());
    Ok(())
}

fn write_schemas(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    for (name, schema) in adiuva_model::schema::all() {
        let path = out.join(format!("{name}.schema.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote {} schemas to {}", adiuva_model::schema::all().len(), out.display());
    Ok(())
}

fn task(service: &mut dyn Service, command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Add { title, description, due, priority, tags, project } => {
            let new = NewTask { title, description, due, priority: priority.map(Priority::from), tags, project };
            println!("{}", service.add_task(new)?.id);
        }
        TaskCommand::List { json, all, tag } => output::tasks(&service.list_tasks(TaskQuery { all, tag })?, json)?,
        TaskCommand::Show { id, json } => {
            let detail = service.show_task(&id)?;
            output::task_detail(&detail.task, &detail.history, &detail.conflicts, json)?;
        }
        TaskCommand::Done { id } => println!("done {}", service.complete_task(&id)?.id),
        TaskCommand::Edit { id, title, description, due, no_due, priority, status, tags, project } => {
            let due = if no_due { Some(None) } else { due.map(Some) };
            let patch = TaskPatch {
                title,
                description,
                due,
                priority: priority.map(Priority::from),
                status: status.map(TaskStatus::from),
                tags,
                project,
            };
            println!("updated {}", service.edit_task(&id, patch)?.id);
        }
        TaskCommand::Rm { id } => println!("deleted {}", service.remove_task(&id)?.id),
    }
    Ok(())
}

fn device(service: &mut dyn Service, command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::List { json } => output::devices(&service.list_devices()?, json)?,
        DeviceCommand::Rename { id, name } => {
            println!("renamed {}", service.rename_device(&id, DeviceRename { name })?.id.short());
        }
        DeviceCommand::Remove { id } => {
            let removal = service.remove_device(&id)?;
            println!("removed {}; the workspace key is now at epoch {}", removal.id.short(), removal.epoch);
        }
        // Run in this process (`run`), never through a service.
        DeviceCommand::Invite(_) | DeviceCommand::Join(_) => {}
    }
    Ok(())
}

fn note(service: &mut dyn Service, command: NoteCommand) -> anyhow::Result<()> {
    match command {
        NoteCommand::Add { title, body, file, tags } => {
            let body = match (body, file) {
                (Some(body), _) => body,
                (None, Some(file)) => {
                    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
                }
                (None, None) => String::new(),
            };
            println!("{}", service.add_note(NewNote { title, body, tags })?.id);
            Ok(())
        }
        NoteCommand::List { json } => output::notes(&service.list_notes()?, json),
    }
}

/// Imports a JSON Lines file with a progress bar on the terminal.
fn import(service: &mut dyn Service, file: &Path) -> anyhow::Result<()> {
    let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} importing [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = |step| match step {
        ImportProgress::Committed { done, total } => {
            bar.set_length(total);
            bar.set_position(done);
        }
        ImportProgress::Compacting => {
            bar.set_style(
                ProgressStyle::with_template("{spinner} compacting")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    };
    let report = service.import(&file.display().to_string(), content, &mut progress)?;
    bar.finish_and_clear();
    println!(
        "imported {} events from {} in {:.2} s ({:.0} events/s){}",
        report.events,
        file.display(),
        report.seconds,
        report.events as f64 / report.seconds.max(f64::EPSILON),
        match report.skipped {
            0 => String::new(),
            skipped => format!("; {skipped} were already imported"),
        }
    );
    Ok(())
}
