//! The foundation's benchmarks, each beside its baseline measured in the same run:
//!
//! - `commit`: durable single-event commit latency (p50/p99) vs SQLite (WAL, synchronous=FULL)
//!   inserting the same rows one transaction each;
//! - `group`: group-commit throughput from 0 to N events in one collection, per window, vs raw
//!   in-memory Automerge transactions of the same records and messages (one thread, one
//!   document), their windows alternating with ours;
//!
//! Commit latency and group commit run for two record shapes (see [`Shape`]): Automerge text
//! costs one operation per character, which dominates whenever a description is written.
//! - `open`: opening the resulting workspace (unlock), the first read of a task (read view),
//!   listing every task, `status`, then loading the Automerge document;
//! - `open with value files`: the same open and first read after N/10 more commits, with and
//!   without a value file each (opening must not read or list them);
//! - `size`: bytes on disk per event after compaction vs the same events as JSON lines;
//! - `log`: `log --json` of every event (through the event index) vs serializing the same
//!   events from memory;
//! - `notes`: `note add` in a freshly opened workspace holding 0, N/10 and N notes of 30 KB
//!   (each note is a document of its own, so it should not matter), and `log --json` there;
//! - `large note`: committing a 1 MB Markdown note vs raw Automerge `splice_text` of the same
//!   text plus reading its change back;
//! - `interleaved import`: 10k records whose ids interleave with 10k present, per window.
//!
//! Run: `cargo bench -p adiuva-engine --bench foundation [-- --events N --commits N --notes N]`;
//! `-- --only documents` runs only the last four, `-- --only large-note` only the 1 MB note,
//! `-- --only group` only group commit (task shape).
//! Prints a table and, with `--json FILE`, writes the figures as JSON for side-by-side runs.

// A benchmark that hits an error must stop loudly rather than report partial figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace, WorkspaceOptions};
use adiuva_model::envelope::{ENVELOPE_VERSION, Subject};
use adiuva_model::record::Task;
use adiuva_model::{Actor, Collection, DeviceId, Envelope, EventId, EventKind, RecordId};
use automerge::transaction::{CommitOptions, Transactable};
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
    /// Other notes of 30 KB in the largest `note add` workspace.
    notes: usize,
    /// `documents`: only the document benchmarks; `large-note`: only the 1 MB note; `group`:
    /// only group commit of tasks.
    only: Option<String>,
    json_out: Option<String>,
}

fn settings() -> Settings {
    let mut settings =
        Settings { events: 100_000, commits: 2_000, windows: 10, notes: 1_000, only: None, json_out: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--events" => settings.events = value().parse().unwrap_or(settings.events),
            "--commits" => settings.commits = value().parse().unwrap_or(settings.commits),
            "--notes" => settings.notes = value().parse().unwrap_or(settings.notes),
            "--only" => settings.only = Some(value()),
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
    let mut workspace = Some(new_workspace(dir, WorkspaceOptions::default()));
    // A whole number of groups per window.
    let window = (events / windows).div_ceil(GROUP) * GROUP;
    // Baseline: the same records and envelopes as plain in-memory Automerge transactions, one
    // thread, one document. Its windows alternate with ours, so a host that slows down or
    // speeds up during the run weighs on both alike.
    let mut doc = automerge::Automerge::new();
    let device = DeviceId([7; 32]);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < events {
        let end = (done + window).min(events);
        let started = Instant::now();
        for first in (done..end).step_by(GROUP) {
            let batch: Vec<_> = (first..(first + GROUP).min(end))
                .map(|index| {
                    let fields = task_fields(index, shape);
                    (draft(), Effect::CreateRecord { collection: Collection::Tasks, id: RecordId::new(), fields })
                })
                .collect();
            workspace.as_mut().unwrap().commit_batch(batch).unwrap();
        }
        if end == events {
            // The last window includes closing, which waits for a compaction still saving.
            drop(workspace.take());
        }
        ours.push((end - done) as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        for index in done..end {
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
                subject: Some(Subject { document: Collection::Tasks.document_of(id), record: id }),
            };
            let effect = Effect::CreateRecord { collection: Collection::Tasks, id, fields: task_fields(index, shape) };
            let options = CommitOptions::default()
                .with_message(envelope.encode().unwrap())
                .with_time(envelope.time.timestamp_millis());
            doc.transact_with(|_| options, |tx| effect.apply(tx)).unwrap();
        }
        theirs.push((end - done) as f64 / started.elapsed().as_secs_f64());
        done = end;
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
        assert!(status.documents.iter().any(|d| d.name == "tasks/*" && d.events == settings.events));
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

/// Opening (unlock, root, the store's own checks) and the first read of a task beside many value
/// files: two copies of the workspace each get N/10 notes (compaction off), one with 100-byte
/// bodies (no value file), one with 8 KB bodies (the chunk and the view delta of each a value
/// file). Same events, same documents and keys, and the tasks' read view the same (each note
/// has a document and a read view of its own, which a task's read does not touch): what
/// differs is only the value files, which opening must neither read nor list.
fn open_with_value_files(settings: &Settings, dir: &Path, report: &mut Map<String, Value>) {
    let newest = first_task(dir);
    let commits = settings.events / 10;
    let no_compaction = WorkspaceOptions { compact_after_chunks: u64::MAX, compact_after_bytes: u64::MAX };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    println!("open a workspace of {} events + {commits} notes, with and without value files", settings.events);
    let mut rows = Vec::new();
    for body_bytes in [100, 8_000] {
        let copy = dir.with_file_name(format!("ws-notes-{body_bytes}"));
        assert!(std::process::Command::new("cp").arg("-a").arg(dir).arg(&copy).status().unwrap().success());
        {
            let mut workspace =
                Workspace::open_with(&copy, || Some(Zeroizing::new(PASSPHRASE.into())), no_compaction.clone()).unwrap();
            for n in 0..commits {
                let body: String = (0..body_bytes)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        char::from(b'a' + (rng % 26) as u8)
                    })
                    .collect();
                let mut fields = Map::new();
                fields.insert("title".into(), format!("Note {n:06}").into());
                fields.insert("body".into(), body.into());
                let effect = Effect::CreateRecord { collection: Collection::Notes, id: RecordId::new(), fields };
                workspace.commit(EventDraft::new(EventKind::from_static("note.created"), Actor::User), effect).unwrap();
            }
        }
        let files = std::fs::read_dir(copy.join("store").join("values")).map(|entries| entries.count()).unwrap_or(0);
        let (mut opens, mut firsts) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let started = Instant::now();
            let mut workspace = open_workspace(&copy);
            opens.push(started.elapsed());
            let started = Instant::now();
            assert!(workspace.get(Collection::Tasks, newest).unwrap().is_some());
            firsts.push(started.elapsed());
        }
        opens.sort();
        firsts.sort();
        let (open, first) = (percentile(&opens, 0.5), percentile(&firsts, 0.5));
        println!(
            "  {body_bytes:>5}-byte bodies {files:>7} value files   open {:>7.1} ms   + first read {:>7.1} ms",
            ms(open),
            ms(first)
        );
        rows.push(
            json!({"body_bytes": body_bytes, "value_files": files, "open_ms": ms(open), "first_read_ms": ms(first)}),
        );
        std::fs::remove_dir_all(&copy).unwrap();
    }
    report.insert("open with value files".into(), Value::Array(rows));
}

/// The id of a task of the workspace, through its read view.
fn first_task(dir: &Path) -> RecordId {
    let mut workspace = open_workspace(dir);
    let tasks: Vec<Task> = workspace.list_as(Collection::Tasks).unwrap();
    tasks[0].id
}

fn open_workspace(dir: &Path) -> Workspace {
    Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap()
}

/// `adiuva log --json` in a freshly opened workspace: every event through the event index,
/// printed as JSON, beside serializing the same events from memory.
fn log_json(name: &str, dir: &Path, report: &mut Map<String, Value>) {
    let (mut ours, mut theirs, mut count) = (Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        let mut workspace = open_workspace(dir);
        let started = Instant::now();
        let events = workspace.events(&Default::default()).unwrap();
        serde_json::to_writer_pretty(std::io::sink(), &events).unwrap();
        ours.push(started.elapsed());
        let started = Instant::now();
        serde_json::to_writer_pretty(std::io::sink(), &events).unwrap();
        theirs.push(started.elapsed());
        count = events.len();
    }
    ours.sort();
    theirs.sort();
    let (ours, theirs) = (percentile(&ours, 0.5), percentile(&theirs, 0.5));
    println!("`log --json` of {count} events ({name}; median of 3, after open)");
    println!("  adiuva (event index + JSON)   {:>8.1} ms", ms(ours));
    println!("  the same JSON from memory     {:>8.1} ms", ms(theirs));
    report.insert(format!("log {name}"), json!({"events": count, "ms": ms(ours), "json_only_ms": ms(theirs)}));
}

/// About 30 KB of Markdown, different for each `seed`.
fn markdown(seed: usize, bytes: usize) -> String {
    let mut text = format!("# Note {seed}\n\n");
    let mut line = 0;
    while text.len() < bytes {
        line += 1;
        text.push_str(&format!(
            "- item {line} of note {seed}: the figures for week {}, checked by {} and sent on.\n",
            (seed * 31 + line) % 52,
            ["Ana", "Bo", "Chen", "Dara"][line % 4]
        ));
        if line % 12 == 0 {
            text.push_str("\n## Section\n\nA paragraph of plain prose between the lists, as notes have.\n\n");
        }
    }
    text
}

fn note_effect(title: String, body: String) -> Effect {
    let fields = json!({"title": title, "body": body, "tags": ["bench"], "created_at": "2026-12-02T10:00:00Z"});
    let Value::Object(fields) = fields else { unreachable!() };
    Effect::CreateRecord { collection: Collection::Notes, id: RecordId::new(), fields }
}

fn note_draft() -> EventDraft {
    EventDraft::new(EventKind::from_static("note.created"), Actor::User)
}

/// `note add` (a 2 KB note) in a freshly opened workspace holding 0, N/10 and N other notes of
/// 30 KB: p50 of the commit alone (unlock is timed by `open`). Baseline: the empty workspace.
fn note_add(settings: &Settings, root: &Path, report: &mut Map<String, Value>) {
    println!("`note add` after open, with other notes of 30 KB (p50 of 15)");
    let mut baseline = None;
    for others in [0, settings.notes / 10, settings.notes] {
        let dir = root.join(format!("notes-{others}"));
        let mut workspace = new_workspace(&dir, WorkspaceOptions::default());
        let mut index = 0;
        while index < others {
            let group: Vec<_> = (index..(index + 100).min(others))
                .map(|seed| (note_draft(), note_effect(format!("Note {seed}"), markdown(seed, 30_000))))
                .collect();
            index += group.len();
            workspace.commit_batch(group).unwrap();
        }
        workspace.compact().unwrap();
        drop(workspace);
        let mut times = Vec::new();
        for sample in 0..15 {
            let mut workspace = open_workspace(&dir);
            let effect = note_effect(format!("Added {sample}"), markdown(sample, 2_000));
            let started = Instant::now();
            workspace.commit(note_draft(), effect).unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        let p50 = percentile(&times, 0.5);
        let base = *baseline.get_or_insert(p50);
        println!(
            "  {others:>6} other notes   p50 {:>8.2} ms   {:>5.2}× the empty workspace",
            ms(p50),
            ms(p50) / ms(base)
        );
        report.insert(format!("note add {others}"), json!({"other_notes": others, "p50_ms": ms(p50)}));
        if others == settings.notes {
            log_json(&format!("{others} notes of 30 KB"), &dir, report);
        }
    }
}

/// A 1 MB Markdown note committed vs raw Automerge: `splice_text` of the same text in a new
/// document, committed, and its change read back. Alternating, median of 3. The workspace keeps
/// each note's document loaded, so the baseline keeps its documents too: both sides hold the
/// same documents in memory (fresh pages cost both the same).
fn large_note(report: &mut Map<String, Value>) {
    let text = markdown(7, 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = new_workspace(&dir.path().join("ws"), WorkspaceOptions::default());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut documents = Vec::new();
    for sample in 0..3 {
        let effect = note_effect(format!("Large {sample}"), text.clone());
        let started = Instant::now();
        workspace.commit(note_draft(), effect).unwrap();
        ours.push(started.elapsed());

        let started = Instant::now();
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        let body = tx.put_object(automerge::ROOT, "body", automerge::ObjType::Text).unwrap();
        tx.splice_text(&body, 0, 0, &text).unwrap();
        tx.commit();
        let changes = doc.get_changes(&[]);
        assert_eq!(changes.len(), 1);
        std::hint::black_box(changes[0].raw_bytes().len());
        theirs.push(started.elapsed());
        documents.push(doc);
    }
    ours.sort();
    theirs.sort();
    let (ours, theirs) = (percentile(&ours, 0.5), percentile(&theirs, 0.5));
    println!("a 1 MB Markdown note (median of 3)");
    println!("  adiuva `note add` (durable)              {:>8.1} ms", ms(ours));
    println!("  automerge splice_text + change read back {:>8.1} ms", ms(theirs));
    println!("  ratio                                    {:>8.2}×", ms(ours) / ms(theirs));
    report.insert("large note".into(), json!({"bytes": text.len(), "ms": ms(ours), "automerge_ms": ms(theirs)}));
}

/// 10k task records whose ids interleave with the 10k already present (as an idempotent import
/// of ids derived from content makes them), in groups of 1000: time per record per group,
/// which stays flat when applying a group to the read view is linear.
fn interleaved_import(report: &mut Map<String, Value>) {
    const RECORDS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let mut workspace = new_workspace(&dir.path().join("ws"), WorkspaceOptions::default());
    let base = 1_764_600_000_000u64;
    // Present: ids at even steps of one millisecond; imported: the odd ones, in a shuffled order.
    let id = |n: usize| RecordId(ulid::Ulid::from_parts(base + n as u64, 1));
    for start in (0..RECORDS).step_by(GROUP) {
        let group: Vec<_> = (start..start + GROUP)
            .map(|n| {
                let effect = Effect::CreateRecord {
                    collection: Collection::Tasks,
                    id: id(2 * n),
                    fields: task_fields(n, Shape::Task),
                };
                (draft(), effect)
            })
            .collect();
        workspace.commit_batch(group).unwrap();
    }
    workspace.list(Collection::Tasks).unwrap(); // the view in memory, kept current by each group
    let mut order: Vec<usize> = (0..RECORDS).collect();
    order.sort_by_key(|n| (n * 7919) % RECORDS);
    let mut per_record = Vec::new();
    for group in order.chunks(GROUP) {
        let events: Vec<_> = group
            .iter()
            .map(|&n| {
                let effect = Effect::CreateRecord {
                    collection: Collection::Tasks,
                    id: id(2 * n + 1),
                    fields: task_fields(n, Shape::Task),
                };
                (draft(), effect)
            })
            .collect();
        let started = Instant::now();
        workspace.commit_batch(events).unwrap();
        per_record.push(started.elapsed().as_secs_f64() * 1e6 / group.len() as f64);
    }
    assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 2 * RECORDS);
    println!("{RECORDS} records interleaving with {RECORDS} present, µs per record per group of {GROUP}");
    println!("  {}", per_record.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join("  "));
    println!("  last/first group {:.2}", per_record[per_record.len() - 1] / per_record[0]);
    report.insert("interleaved import".into(), json!({"records": RECORDS, "us_per_record": per_record}));
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
    let dir = tempfile::tempdir().unwrap();
    if settings.only.as_deref() == Some("large-note") {
        large_note(&mut report);
    } else if settings.only.as_deref() == Some("group") {
        group_commit(settings.events, settings.windows, Shape::Task, &dir.path().join("ws"), &mut report);
    } else {
        all_but_large_note(&settings, dir.path(), &mut report);
        large_note(&mut report);
        interleaved_import(&mut report);
    }
    if let Some(path) = &settings.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(report)).unwrap()).unwrap();
    }
}

fn all_but_large_note(settings: &Settings, dir: &Path, report: &mut Map<String, Value>) {
    if settings.only.is_none() {
        for shape in [Shape::Task, Shape::TaskWithDescription] {
            commit_latency(settings, shape, report);
        }
        let workspace_dir = dir.join("ws");
        group_commit(settings.events, settings.windows, Shape::Task, &workspace_dir, report);
        open_and_size(settings, &workspace_dir, report);
        log_json("tasks", &workspace_dir, report);
        open_with_value_files(settings, &workspace_dir, report);
        let text_dir = dir.join("ws-text");
        group_commit(settings.events / 5, settings.windows, Shape::TaskWithDescription, &text_dir, report);
    }
    note_add(settings, dir, report);
}
