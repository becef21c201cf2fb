//! `adiuva-replay` on a workspace of N events (100,000 by default), each figure beside SQLite
//! doing the same job on the same events in the same run:
//!
//! - `verify`: the read-only open (unlock, a private copy of the store) and the audit of every
//!   document (AEAD tags, signatures, Automerge hashes and dependencies, manifests, envelopes),
//!   beside SQLite's `PRAGMA integrity_check` and a full read of a table holding the same events;
//! - `events --format csv`: every event from the event indexes, written as CSV, beside the same
//!   CSV written from a `SELECT` of that table.
//!
//! Run: `cargo bench -p adiuva-replay --bench replay [-- --events N --json FILE]`.

// A benchmark that hits an error must stop loudly rather than report partial figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use adiuva_replay::events::{Filter, Format};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// The allocator the app runs with, so the figures are the app's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSPHRASE: &str = "benchmark passphrase";
const GROUP: usize = 1000;
const RUNS: usize = 3;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut events, mut json_out) = (100_000usize, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = args.next().and_then(|n| n.parse().ok()).unwrap_or(events),
            "--json" => json_out = args.next(),
            _ => {} // cargo bench passes `--bench`
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    println!("workspace of {events} task events: committing in groups of {GROUP}…");
    build_workspace(&ws, events);
    let sqlite = dir.path().join("events.sqlite");
    let rows = build_sqlite(&ws, &sqlite);

    let (mut open, mut audit, mut sqlite_check) = (Vec::new(), Vec::new(), Vec::new());
    let (mut csv, mut sqlite_csv) = (Vec::new(), Vec::new());
    let mut csv_bytes = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut workspace = Workspace::open_read_only(&ws, passphrase).unwrap();
        open.push(started.elapsed());
        let started = Instant::now();
        let report = adiuva_replay::verify::verify(&mut workspace, &mut |_| {}).unwrap();
        audit.push(started.elapsed());
        assert!(report.faults.is_empty(), "a healthy workspace verifies: {:?}", report.faults);
        assert!(report.changes as usize >= events);
        drop(workspace);

        let started = Instant::now();
        sqlite_integrity_and_read(&sqlite, rows);
        sqlite_check.push(started.elapsed());

        let mut workspace = Workspace::open_read_only(&ws, passphrase).unwrap();
        let mut out = Vec::with_capacity(csv_bytes);
        let started = Instant::now();
        let listed = adiuva_replay::events::events(&mut workspace, &Filter::default()).unwrap();
        adiuva_replay::events::write(&mut out, &listed, Format::Csv).unwrap();
        csv.push(started.elapsed());
        assert_eq!(listed.len(), rows);
        csv_bytes = out.len();

        let mut out = Vec::with_capacity(csv_bytes);
        let started = Instant::now();
        sqlite_csv_of(&sqlite, &mut out);
        sqlite_csv.push(started.elapsed());
    }
    let verify: Vec<Duration> = open.iter().zip(&audit).map(|(a, b)| *a + *b).collect();
    println!("`adiuva-replay verify` of {rows} events (median of {RUNS})");
    println!("  open, read-only (unlock + store copy) {:>9.1} ms", ms(median(&open)));
    println!("  audit of every document               {:>9.1} ms", ms(median(&audit)));
    println!("  verify, total                          {:>9.1} ms", ms(median(&verify)));
    println!("  SQLite integrity_check + full read     {:>9.1} ms", ms(median(&sqlite_check)));
    println!("`adiuva-replay events --format csv` of {rows} events ({csv_bytes} bytes; median of {RUNS}, after open)");
    println!("  adiuva (event indexes + CSV)           {:>9.1} ms", ms(median(&csv)));
    println!("  SQLite SELECT + the same CSV           {:>9.1} ms", ms(median(&sqlite_csv)));

    let mut report = Map::new();
    report.insert("events".into(), json!(rows));
    report.insert(
        "verify".into(),
        json!({"open_ms": ms(median(&open)), "audit_ms": ms(median(&audit)), "total_ms": ms(median(&verify)),
               "sqlite_integrity_and_read_ms": ms(median(&sqlite_check))}),
    );
    report.insert("events csv".into(), json!({"ms": ms(median(&csv)), "sqlite_ms": ms(median(&sqlite_csv))}));
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&Value::Object(report)).unwrap()).unwrap();
    }
}

fn passphrase() -> Option<Zeroizing<String>> {
    Some(Zeroizing::new(PASSPHRASE.into()))
}

/// Tasks committed in groups, as an import writes them, and then compacted once as the app
/// does when the log grows: the audit reads snapshots and chunks both.
fn build_workspace(dir: &Path, events: usize) {
    let mut workspace =
        Workspace::init(dir, KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), "bench").unwrap();
    let mut done = 0;
    while done < events {
        let group: Vec<_> = (done..(done + GROUP).min(events))
            .map(|index| {
                let draft = EventDraft::new(EventKind::from_static("task.created"), Actor::User);
                let priority = ["low", "medium", "high", "urgent"][index % 4];
                let fields = json!({
                    "title": format!("Task number {index}: follow up on the quarterly report"),
                    "description": "",
                    "status": "todo",
                    "priority": priority,
                    "tags": ["work", format!("batch-{}", index / 1000)],
                    "created_at": "2026-11-29T10:00:00Z",
                })
                .as_object()
                .cloned()
                .unwrap();
                (draft, Effect::CreateRecord { collection: Collection::Tasks, id: RecordId::new(), fields })
            })
            .collect();
        done += group.len();
        workspace.commit_batch(group).unwrap();
    }
}

/// The same events in a SQLite table, one row per event with the CSV's columns. Returns the
/// number of rows.
fn build_sqlite(ws: &Path, path: &Path) -> usize {
    let mut workspace = Workspace::open_read_only(ws, passphrase).unwrap();
    let events = adiuva_replay::events::events(&mut workspace, &Filter::default()).unwrap();
    let mut connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE events (time TEXT, kind TEXT, actor TEXT, device TEXT, document TEXT, \
             record TEXT, event TEXT, correlation TEXT, causation TEXT, change TEXT);",
        )
        .unwrap();
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction.prepare("INSERT INTO events VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)").unwrap();
        for event in &events {
            let envelope = &event.envelope;
            insert
                .execute(rusqlite::params![
                    envelope.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    envelope.kind.as_str(),
                    envelope.actor.to_string(),
                    envelope.device.to_string(),
                    event.document,
                    envelope.subject.as_ref().map(|s| s.record.to_string()).unwrap_or_default(),
                    envelope.id.to_string(),
                    envelope.correlation.map(|c| c.to_string()).unwrap_or_default(),
                    envelope.causation.as_ref().map(ToString::to_string).unwrap_or_default(),
                    event.change,
                ])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
    events.len()
}

fn sqlite_integrity_and_read(path: &Path, rows: usize) {
    let connection = rusqlite::Connection::open(path).unwrap();
    let verdict: String = connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
    assert_eq!(verdict, "ok");
    let mut statement = connection.prepare("SELECT * FROM events").unwrap();
    let mut read = 0;
    let mut cursor = statement.query([]).unwrap();
    while let Some(row) = cursor.next().unwrap() {
        for column in 0..10 {
            let _: String = row.get(column).unwrap();
        }
        read += 1;
    }
    assert_eq!(read, rows);
}

/// What `events --format csv` prints, from the table (its fields need no quoting).
fn sqlite_csv_of(path: &Path, out: &mut Vec<u8>) {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut statement = connection.prepare("SELECT * FROM events ORDER BY time, event").unwrap();
    writeln!(out, "time,kind,actor,device,document,record,event,correlation,causation,change").unwrap();
    let mut cursor = statement.query([]).unwrap();
    while let Some(row) = cursor.next().unwrap() {
        let fields: Vec<String> = (0..10).map(|column| row.get(column).unwrap()).collect();
        writeln!(out, "{}", fields.join(",")).unwrap();
    }
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
