//! The foundation's benchmarks, each beside its baseline measured in the same run:
//!
//! - `commit`: durable single-event commit latency (p50/p99) vs SQLite (WAL, synchronous=FULL)
//!   inserting the same rows one transaction each;
//! - `group`: group-commit throughput from 0 to N events in one collection, per window, vs raw
//!   in-memory Automerge transactions of the same records and messages;
//!
//! Commit latency and group commit run for two record shapes (see [`Shape`]): Automerge text
//! costs one operation per character, which dominates whenever a description is written.
//! - `open`: opening the resulting workspace (unlock), the first read of a task (read view),
//!   listing every task, `status`, then loading the Automerge document;
//! - `size`: bytes on disk per event after compaction vs the same events as JSON lines.
//!
//! Run: `cargo bench -p adiuva-engine --bench foundation [-- --events N --commits N]`.
//! Prints a table and, with `--json FILE`, writes the figures as JSON for side-by-side runs.

// A benchmark that hits an error must stop loudly rather than report partial figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace, WorkspaceOptions};
use adiuva_model::envelope::{ENVELOPE_VERSION, Subject};
use adiuva_model::record::Task;
use adiuva_model::{Actor, Collection, DeviceId, Envelope, EventId, EventKind, RecordId};
use automerge::transaction::CommitOptions;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// The allocator the app (`adiuva`) runs with, so the figures are the app's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSPHRASE: &str = "benchmark passphrase";
const GROUP: usize = 1000;

struct Settings {
    events: usize,
    commits: usize,
    windows: usize,
    json_out: Option<String>,
}

fn settings() -> Settings {
    let mut settings = Settings { events: 100_000, commits: 2_000, windows: 10, json_out: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--events" => settings.events = value().parse().unwrap_or(settings.events),
            "--commits" => settings.commits = value().parse().unwrap_or(settings.commits),
            "--json" => settings.json_out = Some(value()),
            _ => {} // cargo bench passes --bench
        }
    }
    settings
}

/// What one event writes.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// A task as `adiuva task add TITLE --priority P --tag T` creates it: scalars, a tag list
    /// and an empty description.
    Task,
    /// The same with a 70-character description: Automerge text, one operation per character.
    TaskWithDescription,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Task => "task",
            Shape::TaskWithDescription => "task + 70-char description",
        }
    }
}

fn task_fields(index: usize, shape: Shape) -> Map<String, Value> {
    let priority = ["low", "medium", "high", "urgent"][index % 4];
    let description = match shape {
        Shape::Task => String::new(),
        Shape::TaskWithDescription => {
            format!("Details for task {index:06}. Check the figures, ask for review, send it on.")
        }
    };
    let value = json!({
        "title": format!("Task number {index}: follow up on the quarterly report"),
        "description": description,
        "status": "todo",
        "priority": priority,
        "tags": ["work", format!("batch-{}", index / 1000)],
        "project": "benchmarks",
        "created_at": "2026-11-29T10:00:00Z",
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn draft() -> EventDraft {
    EventDraft::new(EventKind::from_static("task.created"), Actor::User)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn new_workspace(dir: &Path, options: WorkspaceOptions) -> Workspace {
    drop(Workspace::init(dir, KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), "bench").unwrap());
    Workspace::open_with(dir, || Some(Zeroizing::new(PASSPHRASE.into())), options).unwrap()
}

/// Durable single-event commits vs SQLite inserting the same rows. The two alternate, commit by
/// commit, so both see the same moments of this noisy machine.
fn commit_latency(settings: &Settings, shape: Shape, report: &mut Map<String, Value>) {
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = new_workspace(&dir.path().join("ws"), WorkspaceOptions::default());
    let sqlite = rusqlite::Connection::open(dir.path().join("baseline.sqlite")).unwrap();
    sqlite.pragma_update(None, "journal_mode", "WAL").unwrap();
    sqlite.pragma_update(None, "synchronous", "FULL").unwrap();
    sqlite
        .execute("CREATE TABLE events (id TEXT PRIMARY KEY, envelope TEXT NOT NULL, record TEXT NOT NULL)", [])
        .unwrap();
    let mut ours = Vec::with_capacity(settings.commits);
    let mut theirs = Vec::with_capacity(settings.commits);
    for index in 0..settings.commits {
        let id = RecordId::new();
        let fields = task_fields(index, shape);
        let started = Instant::now();
        let envelope = workspace
            .commit(draft(), Effect::CreateRecord { collection: Collection::Tasks, id, fields: fields.clone() })
            .unwrap();
        ours.push(started.elapsed());

        let (id, envelope, record) =
            (envelope.id.to_string(), envelope.encode().unwrap(), Value::Object(fields).to_string());
        let started = Instant::now();
        sqlite
            .execute("INSERT INTO events (id, envelope, record) VALUES (?1, ?2, ?3)", (&id, &envelope, &record))
            .unwrap();
        theirs.push(started.elapsed());
    }
    ours.sort();
    theirs.sort();
    let (p50, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (s50, s99) = (percentile(&theirs, 0.5), percentile(&theirs, 0.99));
    println!("commit latency ({} durable single-event commits, {})", settings.commits, shape.name());
    println!("  adiuva   p50 {:>7.3} ms  p99 {:>7.3} ms", ms(p50), ms(p99));
    println!("  sqlite   p50 {:>7.3} ms  p99 {:>7.3} ms   (WAL, synchronous=FULL, same rows)", ms(s50), ms(s99));
    println!("  ratio    p50 {:>7.2}×    p99 {:>7.2}×", ms(p50) / ms(s50), ms(p99) / ms(s99));
    report.insert(
        format!("commit {}", shape.name()),
        json!({"commits": settings.commits, "p50_ms": ms(p50), "p99_ms": ms(p99),
               "sqlite_p50_ms": ms(s50), "sqlite_p99_ms": ms(s99)}),
    );
}

/// Group commit from 0 to N events vs raw Automerge transactions, window by window.
fn group_commit(events: usize, windows: usize, shape: Shape, dir: &Path, report: &mut Map<String, Value>) {
    let mut workspace = new_workspace(dir, WorkspaceOptions::default());
    // A whole number of groups per window.
    let window = (events / windows).div_ceil(GROUP) * GROUP;
    let mut ours = Vec::new();
    let mut started = Instant::now();
    let (mut done, mut mark) = (0, 0);
    while done < events {
        let batch: Vec<_> = (done..(done + GROUP).min(events))
            .map(|index| {
                let fields = task_fields(index, shape);
                (draft(), Effect::CreateRecord { collection: Collection::Tasks, id: RecordId::new(), fields })
            })
            .collect();
        done += batch.len();
        workspace.commit_batch(batch).unwrap();
        if done - mark >= window || done == events {
            ours.push((done - mark) as f64 / started.elapsed().as_secs_f64());
            mark = done;
            started = Instant::now();
        }
    }
    drop(workspace);

    // Baseline: the same records and envelopes as plain in-memory Automerge transactions.
    let mut doc = automerge::Automerge::new();
    let device = DeviceId([7; 32]);
    let mut theirs = Vec::new();
    let mut started = Instant::now();
    let mut mark = 0;
    for index in 0..events {
        let id = RecordId::new();
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: EventId::new(),
            kind: EventKind::from_static("task.created"),
            actor: Actor::User,
            device,
            time: chrono::Utc::now(),
            correlation: None,
            causation: None,
            subject: Some(Subject { document: "tasks".into(), record: id }),
        };
        let effect = Effect::CreateRecord { collection: Collection::Tasks, id, fields: task_fields(index, shape) };
        let options = CommitOptions::default()
            .with_message(envelope.encode().unwrap())
            .with_time(envelope.time.timestamp_millis());
        doc.transact_with(|_| options, |tx| effect.apply(tx)).unwrap();
        if index + 1 - mark >= window || index + 1 == events {
            theirs.push((index + 1 - mark) as f64 / started.elapsed().as_secs_f64());
            mark = index + 1;
            started = Instant::now();
        }
    }
    println!(
        "group commit throughput, events/s per window of {window} ({events} events, groups of {GROUP}, {})",
        shape.name()
    );
    println!("  {:>10}  {:>12}  {:>12}", "up to", "adiuva", "automerge");
    for (index, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        println!("  {:>10}  {:>12.0}  {:>12.0}", ((index + 1) * window).min(events), a, b);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (ours[0], ours[ours.len() - 1]);
    println!("  mean {:.0} vs {:.0} events/s; last/first window {:.2}", mean(&ours), mean(&theirs), last / first);
    report.insert(
        format!("group {}", shape.name()),
        json!({"events": events, "window": window, "adiuva_events_per_s": ours, "automerge_events_per_s": theirs}),
    );
}

/// Opening the workspace of N events: unlock (Argon2id) and the root document, then the first
/// read of the collection (through its read view), then loading the collection's Automerge
/// document (what a write, the history or the status needs).
fn open_and_size(settings: &Settings, dir: &Path, report: &mut Map<String, Value>) {
    {
        let mut workspace = Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
        workspace.compact().unwrap();
    }
    let newest = Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into())))
        .unwrap()
        .events(&Default::default())
        .unwrap()
        .iter()
        .rev()
        .find_map(|event| event.envelope.subject.as_ref().map(|subject| subject.record))
        .unwrap();
    let (mut opens, mut firsts, mut lists) = (Vec::new(), Vec::new(), Vec::new());
    let (mut statuses, mut loads) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        let mut workspace = Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
        opens.push(started.elapsed());
        let started = Instant::now();
        assert!(workspace.get(Collection::Tasks, newest).unwrap().is_some());
        firsts.push(started.elapsed());
        let started = Instant::now();
        let tasks: Vec<Task> = workspace.list_as(Collection::Tasks).unwrap();
        assert_eq!(tasks.len(), settings.events);
        lists.push(started.elapsed());
        let started = Instant::now();
        let status = workspace.status().unwrap();
        statuses.push(started.elapsed());
        assert!(status.documents.iter().any(|d| d.name == "tasks" && d.events == settings.events));
        let started = Instant::now();
        assert_eq!(workspace.history(Collection::Tasks, newest).unwrap().len(), 1);
        loads.push(started.elapsed());
    }
    let [unlock, first, list, status, load] = [opens, firsts, lists, statuses, loads].map(|mut times| {
        times.sort();
        percentile(&times, 0.5)
    });
    println!("open a workspace of {} events (median of 5)", settings.events);
    println!("  unlock (Argon2id t=3 m=64MiB) + root:         {:>7.1} ms", ms(unlock));
    println!("  first read of a task (log checked, view):     {:>7.1} ms", ms(first));
    println!("  then every task typed, as `task list` does:   {:>7.1} ms", ms(list));
    println!("  open to first read:                           {:>7.1} ms", ms(unlock + first));
    println!("  open to every task listed:                    {:>7.1} ms", ms(unlock + first + list));
    println!("  then `status` (views and manifests):          {:>7.1} ms", ms(status));
    println!("  then load the Automerge document (history):   {:>7.1} ms", ms(load));

    let workspace_bytes = directory_size(dir);
    // Baseline: the same events (envelope + record) as JSON lines.
    let mut workspace = Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
    let events = workspace.events(&Default::default()).unwrap();
    let tasks = workspace.list(Collection::Tasks).unwrap();
    let records: std::collections::HashMap<String, &Value> =
        tasks.iter().map(|t| (t["id"].as_str().unwrap_or_default().to_owned(), t)).collect();
    let mut jsonl_bytes = 0usize;
    for event in &events {
        let record = event.envelope.subject.as_ref().and_then(|s| records.get(&s.record.to_string()));
        jsonl_bytes += json!({"envelope": event.envelope, "record": record}).to_string().len() + 1;
    }
    let per_event = workspace_bytes as f64 / events.len() as f64;
    let json_per_event = jsonl_bytes as f64 / events.len() as f64;
    println!("bytes on disk per event after compaction ({} events)", events.len());
    println!("  adiuva     {per_event:>7.1} B/event  ({workspace_bytes} bytes, all files)");
    println!("  JSON lines {json_per_event:>7.1} B/event  ({jsonl_bytes} bytes)");
    println!("  ratio      {:>7.2}×", per_event / json_per_event);
    report.insert(
        "open".into(),
        json!({"events": settings.events, "unlock_ms": ms(unlock), "first_read_ms": ms(first), "list_ms": ms(list),
               "status_ms": ms(status), "load_ms": ms(load)}),
    );
    report.insert(
        "size".into(),
        json!({"events": events.len(), "bytes_per_event": per_event, "jsonl_bytes_per_event": json_per_event}),
    );
}

fn directory_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            if entry.path().is_dir() { directory_size(&entry.path()) } else { entry.metadata().unwrap().len() }
        })
        .sum()
}

fn main() {
    let settings = settings();
    let mut report = Map::new();
    report
        .insert("machine".into(), json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)}));
    for shape in [Shape::Task, Shape::TaskWithDescription] {
        commit_latency(&settings, shape, &mut report);
    }
    let dir = tempfile::tempdir().unwrap();
    let workspace_dir = dir.path().join("ws");
    group_commit(settings.events, settings.windows, Shape::Task, &workspace_dir, &mut report);
    open_and_size(&settings, &workspace_dir, &mut report);
    let text_dir = dir.path().join("ws-text");
    group_commit(settings.events / 5, settings.windows, Shape::TaskWithDescription, &text_dir, &mut report);
    if let Some(path) = &settings.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(report)).unwrap()).unwrap();
    }
}
