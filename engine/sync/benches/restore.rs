//! Relay sync at scale, each figure beside its baseline measured in the same run, on a
//! workspace of 100k task events (`--events N` to change it) and the real `adiuva-server`
//! (release build, embedded backend, data on the local disk):
//!
//! - backup: the first push of the whole log to the relay (`sync_once`: sealed units, durable
//!   on the relay) and a restore point (`backup_now`), beside `restic backup` of the same events
//!   as JSON lines into a local restic repository (Debian `restic`, which `scripts/bench-relay`
//!   installs; left out if missing);
//! - restore: `adiuva_sync::restore` from the phrase and a login into an empty directory, until
//!   the workspace is open with every change imported — from the units alone (before the
//!   restore point is made) and from the restore point (after) — beside raw Automerge sync of the same
//!   number of changes to an empty peer, in memory: once as the crate does it for an empty peer
//!   (the whole document in one message) and once change by change (capabilities dropped, as
//!   the engine's peer sync does) — and Automerge alone loading that history saved as one
//!   document, which adopting a restore point's document cannot go below; and the same history
//!   spread as the engine spreads it (16 bucket documents), synced whole and loaded, one
//!   document after the other.
//!
//! `cargo bench --workspace --bench restore [-- --events N] [-- --json FILE]`; the relay binary
//! is taken from the same target directory (`cargo bench --workspace` builds it).

// A benchmark that hits an error must stop loudly rather than report partial figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::envelope::{ENVELOPE_VERSION, Subject};
use adiuva_model::record::{BUCKETS, bucket_of};
use adiuva_model::{Actor, Collection, DeviceId, Envelope, EventId, EventKind, RecordId};
use adiuva_sync::{Progress, RestoreFrom};
use automerge::sync::SyncDoc;
use automerge::transaction::CommitOptions;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// The allocator the app (`adiuva`) runs with, so the figures are the app's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSPHRASE: &str = "benchmark passphrase";
const PASSWORD: &str = "benchmark account password";
const EMAIL: &str = "bench@example.com";
const GROUP: usize = 1000;

fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

/// A task as `adiuva task add` writes it (the foundation benchmark's `task` shape).
fn task_fields(index: usize) -> Map<String, Value> {
    let priority = ["low", "medium", "high", "urgent"][index % 4];
    let value = json!({
        "title": format!("Task number {index}: follow up on the quarterly report"),
        "description": "",
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

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The relay binary beside this benchmark's (`target/release/deps/restore-…` → `target/release`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("adiuva-server");
    assert!(binary.is_file(), "{} is missing: run `cargo bench --workspace`", binary.display());
    binary
}

/// The real relay on a loopback port, stopped when dropped.
struct Relay {
    child: Option<Child>,
    binary: PathBuf,
    data: PathBuf,
    port: u16,
    url: String,
}

impl Relay {
    fn start(data: PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut relay =
            Relay { child: None, binary: server_binary(), data, port, url: format!("http://127.0.0.1:{port}") };
        relay.restart();
        relay
    }

    fn restart(&mut self) {
        for _ in 0..50 {
            let mut child = Command::new(&self.binary)
                .arg("--data")
                .arg(&self.data)
                .args(["--listen", &format!("127.0.0.1:{}", self.port)])
                .env("ADIUVA_SERVER_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            if line.starts_with("listening on ") {
                self.child = Some(child);
                return;
            }
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the relay did not start on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            child.wait().unwrap();
        }
    }

    /// A team tier with seats enough that the rate limit never applies.
    fn set_tier(&mut self) {
        self.stop();
        let status = Command::new(&self.binary)
            .arg("--data")
            .arg(&self.data)
            .args(["admin", "set-tier", EMAIL, "team", "--seats", "1000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        self.restart();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn directory_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { directory_size(&entry.path()) } else { meta.len() };
    }
    total
}

/// The workspace's events as JSON lines (envelope + the record it created), the baseline's input.
fn json_lines(workspace: &mut Workspace, out: &Path) -> u64 {
    let events = workspace.events(&Default::default()).unwrap();
    let tasks = workspace.list(Collection::Tasks).unwrap();
    let records: std::collections::HashMap<String, &Value> =
        tasks.iter().map(|t| (t["id"].as_str().unwrap_or_default().to_owned(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for event in &events {
        let record = event.envelope.subject.as_ref().and_then(|s| records.get(&s.record.to_string()));
        writeln!(file, "{}", json!({"envelope": event.envelope, "record": record})).unwrap();
    }
    file.flush().unwrap();
    std::fs::metadata(out).unwrap().len()
}

/// `restic backup` of `input` into a new repository under `scratch`: the time of the backup
/// command alone, or `None` without restic.
fn restic_backup(scratch: &Path, input: &Path) -> Option<Duration> {
    let restic = ["/usr/bin/restic", "/usr/local/bin/restic"].into_iter().map(PathBuf::from).find(|p| p.is_file())?;
    let repository = scratch.join("restic-repo");
    let run = |args: &[&str]| {
        let output = Command::new(&restic)
            .arg("--repo")
            .arg(&repository)
            .args(args)
            .env("RESTIC_PASSWORD", PASSPHRASE)
            .env("RESTIC_CACHE_DIR", scratch.join("restic-cache"))
            .output()
            .unwrap();
        assert!(output.status.success(), "restic {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    run(&["init"]);
    let started = Instant::now();
    run(&["backup", "--quiet", input.to_str().unwrap()]);
    Some(started.elapsed())
}

/// The same number of changes as raw Automerge transactions in one document (the envelope as
/// the commit message, as the engine writes them), synced to an empty peer in memory, messages
/// encoded and decoded as on a wire. `whole_document`: as the crate does for an empty peer
/// that advertises it; otherwise change by change (capabilities dropped).
fn automerge_sync(source: &mut automerge::Automerge, whole_document: bool) -> (Duration, usize) {
    let started = Instant::now();
    let mut peer = automerge::Automerge::new();
    let (mut ours, mut theirs) = (automerge::sync::State::new(), automerge::sync::State::new());
    let mut rounds = 0;
    loop {
        let to_peer = source.generate_sync_message(&mut ours);
        let to_source = peer.generate_sync_message(&mut theirs);
        if to_peer.is_none() && to_source.is_none() {
            break;
        }
        rounds += 1;
        if let Some(message) = to_peer {
            let message = automerge::sync::Message::decode(&message.encode()).unwrap();
            peer.receive_sync_message(&mut theirs, message).unwrap();
        }
        if let Some(message) = to_source {
            let message = automerge::sync::Message::decode(&message.encode()).unwrap();
            source.receive_sync_message(&mut ours, message).unwrap();
            // What the peer advertised decides whether the whole document goes in one message.
            if !whole_document {
                ours.their_capabilities = None;
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(peer.get_heads(), source.get_heads());
    (elapsed, rounds)
}

/// The same history as plain Automerge documents: one, or the engine's 16 buckets (each change
/// in the bucket of its record).
fn automerge_history(events: usize, documents: usize) -> Vec<automerge::Automerge> {
    let mut docs: Vec<_> = (0..documents).map(|_| automerge::Automerge::new()).collect();
    let device = DeviceId([7; 32]);
    for index in 0..events {
        let id = RecordId::new();
        let document = Collection::Tasks.document_of(id);
        let bucket = bucket_of(id);
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: EventId::new(),
            kind: EventKind::from_static("task.created"),
            actor: Actor::User,
            device,
            time: chrono::Utc::now(),
            correlation: None,
            causation: None,
            subject: Some(Subject { document, record: id }),
        };
        let effect = Effect::CreateRecord { collection: Collection::Tasks, id, fields: task_fields(index) };
        let options = CommitOptions::default()
            .with_message(envelope.encode().unwrap())
            .with_time(envelope.time.timestamp_millis());
        docs[bucket % documents].transact_with(|_| options, |tx| effect.apply(tx)).unwrap();
    }
    docs
}

/// Automerge loading each of `docs` saved: the least adopting them costs.
fn automerge_load(docs: &[automerge::Automerge]) -> Duration {
    let saved: Vec<Vec<u8>> = docs.iter().map(|doc| doc.save()).collect();
    let started = Instant::now();
    for (doc, bytes) in docs.iter().zip(&saved) {
        assert_eq!(automerge::Automerge::load(bytes).unwrap().get_heads(), doc.get_heads());
    }
    started.elapsed()
}

/// How long a restore took, to the first progress report (sign-in, phrase, proof) and to the
/// end of the last pull.
struct TimedRestore {
    total: Duration,
    signed_in: Duration,
    pulled: Duration,
}

/// `adiuva_sync::restore` of `source`'s workspace from `relay` into `target`, timed, then
/// checked against `source` (the same heads, every task).
fn timed_restore(relay: &Relay, source: &mut Workspace, phrase: &str, target: &Path, events: usize) -> TimedRestore {
    let workspace_id = source.workspace_id().to_string();
    let from = RestoreFrom { server: &relay.url, email: EMAIL, password: PASSWORD, workspace: &workspace_id, phrase };
    let started = Instant::now();
    let (mut signed_in, mut pulled) = (None, None);
    let mut restored = adiuva_sync::restore(target, protection(), &from, "restored", &[], &mut |progress| {
        if let Progress::Pulling { done, total } = progress {
            signed_in.get_or_insert_with(|| started.elapsed());
            if done == total {
                pulled = Some(started.elapsed());
            }
        }
    })
    .unwrap();
    let total = started.elapsed();
    for name in source.document_names().unwrap() {
        if name != adiuva_engine::ROOT_DOCUMENT {
            assert_eq!(source.heads(&name).unwrap(), restored.heads(&name).unwrap(), "{name}");
        }
    }
    assert_eq!(restored.list(Collection::Tasks).unwrap().len(), events);
    TimedRestore { total, signed_in: signed_in.unwrap_or_default(), pulled: pulled.unwrap_or_default() }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut events, mut json_out) = (100_000usize, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => events = args.next().and_then(|n| n.parse().ok()).unwrap_or(events),
            "--json" => json_out = args.next().map(PathBuf::from),
            _ => {} // cargo bench passes `--bench`
        }
    }
    // On disk (not a tmpfs), so fsyncs mean what they say.
    let scratch = tempfile::Builder::new().prefix("restore-bench").tempdir_in("/var/tmp").unwrap();
    let mut relay = Relay::start(scratch.path().join("relay"));
    let mut report = Map::new();
    report.insert("events".into(), json!(events));

    println!("workspace of {events} task events: committing…");
    let source_dir = scratch.path().join("source");
    let mut source = Workspace::init(&source_dir, protection(), "source").unwrap();
    let mut done = 0;
    while done < events {
        let batch: Vec<_> = (done..(done + GROUP).min(events))
            .map(|index| {
                let effect = Effect::CreateRecord {
                    collection: Collection::Tasks,
                    id: RecordId::new(),
                    fields: task_fields(index),
                };
                (draft(), effect)
            })
            .collect();
        done += batch.len();
        source.commit_batch(batch).unwrap();
    }
    adiuva_sync::sign_in(&mut source, &relay.url, EMAIL, PASSWORD, true).unwrap();
    relay.set_tier();
    // The tier is in the access token: sign in again for one that has it.
    adiuva_sync::sign_in(&mut source, &relay.url, EMAIL, PASSWORD, false).unwrap();
    let phrase = source.create_recovery().unwrap().to_string();
    let jsonl = scratch.path().join("jsonl");
    std::fs::create_dir(&jsonl).unwrap();
    let jsonl_bytes = json_lines(&mut source, &jsonl.join("events.jsonl"));

    // Backup: the whole log pushed to the relay, then a restore point.
    let started = Instant::now();
    let pushed = adiuva_sync::sync_once(&mut source, &mut |_| {}).unwrap();
    let push = started.elapsed();
    let relay_bytes = directory_size(&relay.data);
    // Restore from the units alone, before any restore point is made.
    let from_units = timed_restore(&relay, &mut source, &phrase, &scratch.path().join("from-units"), events);
    let started = Instant::now();
    let point = adiuva_sync::backup_now(&mut source, &mut |_| {}).unwrap();
    let backup = started.elapsed();
    let restic = restic_backup(scratch.path(), &jsonl);

    let mb_per_s = |d: Duration| jsonl_bytes as f64 / 1e6 / seconds(d);
    println!("backup of {events} events ({:.1} MB as JSON lines)", jsonl_bytes as f64 / 1e6);
    println!(
        "  first push to the relay (sync_once):  {:>8.2} s  {:>9.0} events/s  {:>6.1} MB/s of JSON lines  ({} units, relay holds {:.1} MB)",
        seconds(push),
        events as f64 / seconds(push),
        mb_per_s(push),
        pushed.pushed,
        relay_bytes as f64 / 1e6
    );
    println!(
        "  restore point (backup now):           {:>8.2} s  {:>9.0} events/s  {:>6.1} MB/s of JSON lines  ({} blobs, {:.1} MB)",
        seconds(backup),
        events as f64 / seconds(backup),
        mb_per_s(backup),
        point.chunk_count,
        point.size_bytes as f64 / 1e6
    );
    match restic {
        Some(restic) => println!(
            "  restic backup of the JSON lines:      {:>8.2} s  {:>9.0} events/s  {:>6.1} MB/s",
            seconds(restic),
            events as f64 / seconds(restic),
            mb_per_s(restic)
        ),
        None => println!("  restic not installed: its baseline is left out (scripts/bench-relay installs it)"),
    }
    report.insert(
        "backup".into(),
        json!({"jsonl_bytes": jsonl_bytes, "push_s": seconds(push), "units": pushed.pushed, "relay_bytes": relay_bytes,
               "restore_point_s": seconds(backup), "restic_s": restic.map(seconds)}),
    );

    // Restore from the phrase into an empty directory, now that the relay keeps a restore
    // point (which a restore starts from).
    let from_point = timed_restore(&relay, &mut source, &phrase, &scratch.path().join("from-point"), events);
    let mut history = automerge_history(events, 1);
    let (whole, whole_rounds) = automerge_sync(&mut history[0], true);
    let (by_change, change_rounds) = automerge_sync(&mut history[0], false);
    // What adopting a restore point's documents cannot go below: Automerge loading them.
    let load = automerge_load(&history);
    drop(history);
    let mut buckets = automerge_history(events, BUCKETS);
    let started = Instant::now();
    for doc in &mut buckets {
        automerge_sync(doc, true);
    }
    let buckets_whole = started.elapsed();
    let buckets_load = automerge_load(&buckets);
    drop(buckets);
    println!("restore of {events} events into an empty directory");
    for (name, timed) in [("from the restore point", &from_point), ("from the units alone", &from_units)] {
        println!(
            "  adiuva restore, {name:<22} {:>8.3} s  (sign-in, phrase and proof {:.3} s; pull {:.3} s; import and first sync {:.3} s)",
            seconds(timed.total),
            seconds(timed.signed_in),
            seconds(timed.pulled - timed.signed_in),
            seconds(timed.total - timed.pulled)
        );
    }
    println!("  automerge sync to an empty peer, whole document: {:>8.3} s ({whole_rounds} rounds)", seconds(whole));
    println!("  automerge loading the same history as one saved document: {:>8.3} s", seconds(load));
    println!(
        "  automerge, the same history in 16 buckets: whole-document sync {:>8.3} s, loading them {:>8.3} s (one after the other)",
        seconds(buckets_whole),
        seconds(buckets_load)
    );
    println!(
        "  automerge sync to an empty peer, change by change: {:>8.3} s ({change_rounds} rounds)",
        seconds(by_change)
    );
    let timed_json = |t: &TimedRestore| json!({"restore_s": seconds(t.total), "signed_in_s": seconds(t.signed_in), "pulled_s": seconds(t.pulled)});
    report.insert(
        "restore".into(),
        json!({"from_point": timed_json(&from_point), "from_units": timed_json(&from_units),
               "automerge_whole_document_s": seconds(whole), "automerge_change_by_change_s": seconds(by_change),
               "automerge_load_s": seconds(load), "automerge_buckets_whole_document_s": seconds(buckets_whole),
               "automerge_buckets_load_s": seconds(buckets_load)}),
    );
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    }
}
