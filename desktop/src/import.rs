//! `adiuva import FILE.jsonl`: bulk import through group commit.
//!
//! The whole file is parsed and checked before anything is written, so a bad line (reported
//! with its number) imports nothing rather than half a file. Events are then committed in groups
//! of [`GROUP_SIZE`]: each is still its own event with its own envelope, but a group shares one
//! durability barrier. A crash mid-import keeps every group that had completed.
//!
//! Idempotent: a record's id is derived from the file's content and the record's line
//! ([`line_id`]), and records already in the workspace are skipped. Running the same file again,
//! after an interruption or not, adds only what is missing.

use std::io::BufRead;
use std::time::Instant;

use adiuva_engine::{Effect, EventDraft, Workspace, fields_of, json_error};
use adiuva_model::record::{Note, Priority, Task, TaskStatus};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

use crate::service::{Error, Result, non_empty_title};

/// Events per group commit: large enough that the barrier's cost vanishes per event, small
/// enough that progress moves smoothly and a group stays a few hundred KiB.
const GROUP_SIZE: usize = 1000;

/// How far an import is, as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportProgress {
    /// `done` of `total` events are durable.
    Committed { done: u64, total: u64 },
    /// Every event is durable; the documents' tails are being folded into snapshots.
    Compacting,
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Events committed.
    pub events: u64,
    /// Records of the file the workspace already had (imported before), skipped.
    pub skipped: u64,
    pub seconds: f64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Task(TaskLine),
    Note(NoteLine),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskLine {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    status: TaskStatus,
    #[serde(default)]
    priority: Priority,
    due: Option<NaiveDate>,
    #[serde(default)]
    tags: Vec<String>,
    project: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteLine {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// A parsed import, ready to commit.
pub struct Parsed {
    events: Vec<(EventKind, Effect)>,
    skipped: u64,
    started: Instant,
}

/// Reads and checks every line of `content` (named `source` in errors); any error names its
/// line and nothing is imported.
pub fn parse(source: &str, content: &[u8]) -> Result<Parsed> {
    let started = Instant::now();
    let file_hash = blake3::hash(content);
    let mut events = Vec::new();
    for (index, line) in content.lines().enumerate() {
        let number = index + 1;
        let at = |detail: String| Error::invalid(format!("{source}:{number}: {detail}"));
        let line = line.map_err(|_| at("not readable text".into()))?;
        if line.trim().is_empty() {
            continue;
        }
        // Without serde's own message: it quotes the line's values.
        let parsed: Line =
            serde_json::from_str(&line).map_err(|e| at(format!("not an import line: it {}", json_error(&e))))?;
        events.push(to_event(parsed, line_id(file_hash.as_bytes(), number)).map_err(|e| at(e.to_string()))?);
    }
    Ok(Parsed { events, skipped: 0, started })
}

/// Where an import goes: a workspace, or the daemon's shared one (taken for one group at a time,
/// so other clients are served between groups).
pub trait Target {
    fn exists(&mut self, effect: &Effect) -> adiuva_engine::Result<bool>;
    fn commit(&mut self, group: Vec<(EventDraft, Effect)>) -> adiuva_engine::Result<()>;
    fn compact(&mut self) -> adiuva_engine::Result<()>;
}

impl Target for Workspace {
    fn exists(&mut self, effect: &Effect) -> adiuva_engine::Result<bool> {
        Ok(self.get(effect.collection(), effect.record())?.is_some())
    }

    fn commit(&mut self, group: Vec<(EventDraft, Effect)>) -> adiuva_engine::Result<()> {
        self.commit_batch(group).map(drop)
    }

    fn compact(&mut self) -> adiuva_engine::Result<()> {
        Workspace::compact(self)
    }
}

/// Commits what `parsed` holds that the target does not have yet, group by group, then folds
/// the documents' tails.
pub fn run(
    mut parsed: Parsed,
    correlation: Ulid,
    target: &mut dyn Target,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImportReport> {
    let in_file = parsed.events.len();
    let mut present = Vec::with_capacity(in_file);
    for (_, effect) in &parsed.events {
        present.push(target.exists(effect)?);
    }
    let mut present = present.into_iter();
    parsed.events.retain(|_| present.next() == Some(false));
    parsed.skipped = (in_file - parsed.events.len()) as u64;
    let total = parsed.events.len() as u64;
    let mut done = 0;
    let mut pending = parsed.events.into_iter();
    loop {
        let group: Vec<(EventDraft, Effect)> = pending
            .by_ref()
            .take(GROUP_SIZE)
            .map(|(kind, effect)| (EventDraft::new(kind, Actor::User).correlated(Some(correlation)), effect))
            .collect();
        if group.is_empty() {
            break;
        }
        let count = group.len() as u64;
        target.commit(group).map_err(|source| Error::Partial {
            context: format!("import stopped after {done} of {total} events (those are kept)"),
            source,
        })?;
        done += count;
        progress(ImportProgress::Committed { done, total });
    }
    // Fold what the import left in the documents' tails into their snapshots now, so the next
    // command does not replay thousands of changes.
    progress(ImportProgress::Compacting);
    target.compact().map_err(|source| Error::Partial {
        context: "the import is complete and durable; folding it into snapshots failed".into(),
        source,
    })?;
    Ok(ImportReport { events: total, skipped: parsed.skipped, seconds: parsed.started.elapsed().as_secs_f64() })
}

/// The id of the record on line `number` of a file whose content hashes to `file_hash`: the same
/// line of the same file always gets the same id, and the ids of two different files never meet.
/// Its time part is fixed (the Unix epoch), since no time of the file's survives a copy.
fn line_id(file_hash: &[u8; 32], number: usize) -> RecordId {
    let mut hasher = blake3::Hasher::new_derive_key("adiuva import record id v1");
    hasher.update(file_hash);
    hasher.update(&(number as u64).to_le_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&hasher.finalize().as_bytes()[..10]);
    RecordId(Ulid::from_parts(0, u128::from_be_bytes(random)))
}

fn to_event(line: Line, id: RecordId) -> Result<(EventKind, Effect)> {
    let now = Utc::now();
    Ok(match line {
        Line::Task(task) => {
            let collection = Collection::Tasks;
            let task = Task {
                id,
                title: non_empty_title(task.title)?,
                description: task.description,
                status: task.status,
                priority: task.priority,
                due: task.due,
                tags: task.tags,
                project: task.project,
                created_at: now,
            };
            let fields = fields_of(collection, &task)?;
            (EventKind::from_static("task.created"), Effect::CreateRecord { collection, id: task.id, fields })
        }
        Line::Note(note) => {
            let collection = Collection::Notes;
            let note =
                Note { id, title: non_empty_title(note.title)?, body: note.body, tags: note.tags, created_at: now };
            let fields = fields_of(collection, &note)?;
            (EventKind::from_static("note.created"), Effect::CreateRecord { collection, id: note.id, fields })
        }
    })
}
