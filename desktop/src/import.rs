//! `adiuva import FILE.jsonl`: bulk import through group commit.
//!
//! The whole file is parsed and checked before anything is written, so a bad line (reported
//! with its number) imports nothing rather than half a file. Events are then committed in groups
//! of [`GROUP_SIZE`]: each is still its own event with its own envelope, but a group shares one
//! durability barrier. A crash mid-import keeps every group that had completed.

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use adiuva_engine::{Effect, EventDraft, Workspace, fields_of};
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
    let events = parse(file)?;
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
        "imported {total} events from {} in {seconds:.2} s ({:.0} events/s)",
        file.display(),
        total as f64 / seconds.max(f64::EPSILON)
    );
    Ok(())
}

/// Reads and checks every line; any error names its line and nothing is imported.
fn parse(file: &Path) -> anyhow::Result<Vec<(EventKind, Effect)>> {
    let reader =
        std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}:{number}: not readable text", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).with_context(|| format!("{}:{number}: not an import line", file.display()))?;
        let event = to_event(parsed).with_context(|| format!("{}:{number}", file.display()))?;
        events.push(event);
    }
    Ok(events)
}

fn to_event(line: Line) -> anyhow::Result<(EventKind, Effect)> {
    let now = Utc::now();
    Ok(match line {
        Line::Task(task) => {
            let collection = Collection::Tasks;
            let task = Task {
                id: RecordId::new(),
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
                id: RecordId::new(),
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
