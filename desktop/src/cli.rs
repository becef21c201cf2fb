//! The command line: argument parsing and one function per command, each a thin layer over the
//! engine's workspace API.

use std::path::PathBuf;

use adiuva_engine::{Effect, EventDraft, EventFilter, Workspace, fields_of};
use adiuva_model::record::{Note, Priority, Task, TaskStatus};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use anyhow::Context;
use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use tracing::info_span;
use ulid::Ulid;

use crate::output;
use crate::unlock::{self, KeyStore};

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

fn default_device_name() -> String {
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

/// One invocation's context: its workspace and the correlation id of everything it does.
struct Session {
    workspace: Workspace,
    correlation: Ulid,
}

impl Session {
    fn draft(&self, kind: &str) -> anyhow::Result<EventDraft> {
        Ok(EventDraft::new(EventKind::new(kind)?, Actor::User).correlated(Some(self.correlation)))
    }

    fn commit(&mut self, kind: &str, effect: Effect) -> anyhow::Result<()> {
        let draft = self.draft(kind)?;
        self.workspace.commit(draft, effect)?;
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = workspace_dir(&args)?;
    let correlation = Ulid::new();
    let span = info_span!("command", %correlation);
    let _entered = span.enter();
    if let Command::Init { device_name, key_store } = &args.command {
        return init(&dir, device_name, *key_store);
    }
    if let Command::Schema { out } = &args.command {
        return write_schemas(out);
    }
    if let Command::ResetWitness = &args.command {
        Workspace::open_resetting_witness(&dir, unlock::passphrase)?;
        println!("recorded a new witness: the store is trusted as it is");
        return Ok(());
    }
    let workspace = Workspace::open(&dir, unlock::passphrase)?;
    let mut session = Session { workspace, correlation };
    match args.command {
        Command::Init { .. } | Command::Schema { .. } | Command::ResetWitness => Ok(()),
        Command::Task(command) => task(&mut session, command),
        Command::Note(command) => note(&mut session, command),
        Command::Log { json, kind, actor, task, limit } => {
            let record = task.map(|id| session.workspace.resolve_id(Collection::Tasks, &id)).transpose()?;
            let mut events = session.workspace.events(&EventFilter { kind, actor, record })?;
            if let Some(limit) = limit {
                events.drain(..events.len().saturating_sub(limit));
            }
            output::events(&events, json)
        }
        Command::Status { json } => output::status(&session.workspace.status()?, json),
        Command::Import { file } => crate::import::run(&mut session.workspace, &file, correlation),
        Command::Compact => {
            session.workspace.compact()?;
            println!("compacted");
            Ok(())
        }
        Command::Upgrade => {
            let upgrade = session.workspace.upgrade()?;
            if upgrade == adiuva_engine::Upgrade::default() {
                println!("the workspace is current");
            } else {
                println!(
                    "upgraded: {} records moved into documents of their own, {} stored parts moved to this device's own storage key",
                    upgrade.records_moved, upgrade.resealed
                );
            }
            Ok(())
        }
    }
}

fn init(dir: &std::path::Path, device_name: &str, key_store: KeyStore) -> anyhow::Result<()> {
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

fn write_schemas(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    for (name, schema) in adiuva_model::schema::all() {
        let path = out.join(format!("{name}.schema.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote {} schemas to {}", adiuva_model::schema::all().len(), out.display());
    Ok(())
}

fn task(session: &mut Session, command: TaskCommand) -> anyhow::Result<()> {
    let collection = Collection::Tasks;
    match command {
        TaskCommand::Add { title, description, due, priority, tags, project } => {
            let title = non_empty_title(title)?;
            let task = Task {
                id: RecordId::new(),
                title,
                description: description.unwrap_or_default(),
                status: TaskStatus::Todo,
                priority: priority.map(Priority::from).unwrap_or_default(),
                due,
                tags,
                project,
                created_at: Utc::now(),
            };
            let fields = fields_of(collection, &task)?;
            session.commit("task.created", Effect::CreateRecord { collection, id: task.id, fields })?;
            println!("{}", task.id);
            Ok(())
        }
        TaskCommand::List { json, all, tag } => {
            let tasks: Vec<Task> = session
                .workspace
                .list_as::<Task>(collection)?
                .into_iter()
                .filter(|t| all || matches!(t.status, TaskStatus::Todo | TaskStatus::InProgress))
                .filter(|t| tag.as_ref().is_none_or(|tag| t.tags.contains(tag)))
                .collect();
            output::tasks(&tasks, json)
        }
        TaskCommand::Show { id, json } => {
            let id = session.workspace.resolve_id(collection, &id)?;
            let task = session.workspace.get_as::<Task>(collection, id)?.context("the task vanished")?;
            let history = session.workspace.history(collection, id)?;
            let conflicts = session.workspace.conflicts(collection, id)?;
            output::task_detail(&task, &history, &conflicts, json)
        }
        TaskCommand::Done { id } => {
            let id = session.workspace.resolve_id(collection, &id)?;
            let mut fields = Map::new();
            fields.insert("status".into(), serde_json::to_value(TaskStatus::Done)?);
            session.commit("task.completed", Effect::UpdateRecord { collection, id, fields })?;
            println!("done {id}");
            Ok(())
        }
        TaskCommand::Edit { id, title, description, due, no_due, priority, status, tags, project } => {
            let id = session.workspace.resolve_id(collection, &id)?;
            let mut fields = Map::new();
            if let Some(title) = title {
                fields.insert("title".into(), Value::String(non_empty_title(title)?));
            }
            if let Some(description) = description {
                fields.insert("description".into(), Value::String(description));
            }
            if let Some(due) = due {
                fields.insert("due".into(), serde_json::to_value(due)?);
            }
            if no_due {
                fields.insert("due".into(), Value::Null);
            }
            if let Some(priority) = priority {
                fields.insert("priority".into(), serde_json::to_value(Priority::from(priority))?);
            }
            if let Some(status) = status {
                fields.insert("status".into(), serde_json::to_value(TaskStatus::from(status))?);
            }
            if let Some(tags) = tags {
                fields.insert("tags".into(), serde_json::to_value(tags)?);
            }
            if let Some(project) = project {
                fields.insert("project".into(), Value::String(project));
            }
            anyhow::ensure!(
                !fields.is_empty(),
                "nothing to change: give at least one of --title, --description, --due, --no-due, --priority, --status, --tag, --project"
            );
            session.commit("task.updated", Effect::UpdateRecord { collection, id, fields })?;
            println!("updated {id}");
            Ok(())
        }
        TaskCommand::Rm { id } => {
            let id = session.workspace.resolve_id(collection, &id)?;
            session.commit("task.deleted", Effect::DeleteRecord { collection, id })?;
            println!("deleted {id}");
            Ok(())
        }
    }
}

fn note(session: &mut Session, command: NoteCommand) -> anyhow::Result<()> {
    let collection = Collection::Notes;
    match command {
        NoteCommand::Add { title, body, file, tags } => {
            let body = match (body, file) {
                (Some(body), _) => body,
                (None, Some(file)) => {
                    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
                }
                (None, None) => String::new(),
            };
            let note = Note { id: RecordId::new(), title: non_empty_title(title)?, body, tags, created_at: Utc::now() };
            let fields = fields_of(collection, &note)?;
            session.commit("note.created", Effect::CreateRecord { collection, id: note.id, fields })?;
            println!("{}", note.id);
            Ok(())
        }
        NoteCommand::List { json } => output::notes(&session.workspace.list_as::<Note>(collection)?, json),
    }
}

pub fn non_empty_title(title: String) -> anyhow::Result<String> {
    let trimmed = title.trim();
    anyhow::ensure!(!trimmed.is_empty(), "a title cannot be empty");
    Ok(trimmed.to_owned())
}
