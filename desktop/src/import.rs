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
use std::path::Path;
use std::time::Instant;

use adiuva_engine::{Effect, EventDraft, Workspace, fields_of, json_error};
use adiuva_model::record::{Note, Priority, Task, TaskStatus};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use anyhow::Context;
use chrono::{NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use ulid::Ulid;

/// Events per group commit: large enough that the barrier's cost vanishes per event, small
/// enough that progress moves smoothly and a group stays a few hundred KiB.
const GROUP_SIZE: usize = 1000;

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

pub fn run(workspace: &mut Workspace, file: &Path, correlation: Ulid) -> anyhow::Result<()> {
    let mut events = parse(file)?;
    let in_file = events.len();
    let mut present = Vec::with_capacity(events.len());
    for (_, effect) in &events {
        present.push(workspace.get(effect.collection(), effect.record())?.is_some());
    }
    let mut present = present.into_iter();
    events.retain(|_| present.next() == Some(false));
    let total = events.len();
    let progress = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{spinner} importing [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut pending = events.into_iter();
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
        workspace.commit_batch(group).with_context(|| {
            format!("import stopped after {} of {total} events (those are kept)", progress.position())
        })?;
        progress.inc(count);
    }
    progress.finish_and_clear();
    // Fold what the import left in the documents' tails into their snapshots now, so the next
    // command does not replay thousands of changes.
    progress.set_style(
        ProgressStyle::with_template("{spinner} compacting").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(std::time::Duration::from_millis(120));
    workspace.compact().context("the import is complete and durable; folding it into snapshots failed")?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {total} events from {} in {seconds:.2} s ({:.0} events/s){}",
        file.display(),
        total as f64 / seconds.max(f64::EPSILON),
        match in_file - total {
            0 => String::new(),
            skipped => format!("; {skipped} were already imported"),
        }
    );
    Ok(())
}

/// Reads and checks every line; any error names its line and nothing is imported.
fn parse(file: &Path) -> anyhow::Result<Vec<(EventKind, Effect)>> {
    let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let file_hash = blake3::hash(&content);
    let mut events = Vec::new();
    for (index, line) in content.as_slice().lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}:{number}: not readable text", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        // Without serde's own message: it quotes the line's values.
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{number}: not an import line: it {}", file.display(), json_error(&e)))?;
        let id = line_id(file_hash.as_bytes(), number);
        let event = to_event(parsed, id).with_context(|| format!("{}:{number}", file.display()))?;
        events.push(event);
    }
    Ok(events)
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

fn to_event(line: Line, id: RecordId) -> anyhow::Result<(EventKind, Effect)> {
    let now = Utc::now();
    Ok(match line {
        Line::Task(task) => {
            let collection = Collection::Tasks;
            let task = Task {
                id,
                title: crate::cli::non_empty_title(task.title)?,
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
            let note = Note {
                id,
                title: crate::cli::non_empty_title(note.title)?,
                body: note.body,
                tags: note.tags,
                created_at: now,
            };
            let fields = fields_of(collection, &note)?;
            (EventKind::from_static("note.created"), Effect::CreateRecord { collection, id: note.id, fields })
        }
    })
}
