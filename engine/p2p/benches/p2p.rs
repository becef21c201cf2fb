//! Peer sync over real iroh endpoints on loopback, each figure beside raw in-memory Automerge
//! sync of the same history measured in the same run:
//! - full sync of N events (default 100,000 task creations, groups of 1000) to a device that
//!   has none of them: time, bytes on the wire in both directions, bytes per change;
//! - one new change to a device that has everything else (sync state persisted from the last
//!   session): time and bytes per session, p50 and p99 of [`ONE_CHANGE_ROUNDS`], once with each
//!   session dialed afresh (the QUIC handshake in it), once to a live peer (`sync_live`: from
//!   the commit until the peer's session that took the change in ended).
//!
//! The baseline is Automerge holding the same N changes (same fields, same envelope messages),
//! once in one document and once spread over the engine's 16 bucket documents, synced to empty
//! documents with Automerge's sync protocol until neither side has a message, then one more
//! change with both sync states kept; Automerge alone loading the 16 buckets sent whole on one
//! thread per core, then reading every record once (the least a device that shows the records
//! pays, whatever its protocol); and Automerge alone applying one new change to its document,
//! the least a receiver pays.
//!
//! Run: `cargo bench -p adiuva-p2p --bench p2p [-- --events N]`.

// A benchmark that hits an error must stop loudly rather than report partial figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::envelope::{ENVELOPE_VERSION, Subject};
use adiuva_model::record::{BUCKETS, bucket_of};
use adiuva_model::{Actor, Collection, DeviceId, Envelope, EventId, EventKind, RecordId};
use adiuva_p2p::{PeerOptions, PeerServer, Peers, SessionReport, SharedWorkspace, sync_live, sync_once};
use automerge::sync::SyncDoc;
use automerge::transaction::CommitOptions;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// The allocator the app (`adiuva`) runs with, so the figures are the app's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GROUP: usize = 1000;
const ONE_CHANGE_ROUNDS: usize = 30;

fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new("benchmark passphrase".into()))
}

fn events_setting() -> usize {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--events" {
            return args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
        }
    }
    100_000
}

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

fn task(index: usize) -> (EventDraft, Effect) {
    let draft = EventDraft::new(EventKind::from_static("task.created"), Actor::User);
    (draft, Effect::CreateRecord { collection: Collection::Tasks, id: RecordId::new(), fields: task_fields(index) })
}

fn join(inviter: &mut Workspace, dir: &Path) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), "second").unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    pending.complete(dir, protection(), &acceptance).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn wire_bytes(report: &SessionReport) -> u64 {
    report.bytes_sent + report.bytes_received
}

struct Figures {
    full: Duration,
    full_bytes: u64,
    one: Vec<Duration>,
    one_bytes: Vec<u64>,
    /// One new change to a live peer (the raw baseline: the same as `one`).
    live: Vec<Duration>,
}

async fn ours(events: usize) -> Figures {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut source = Workspace::init(dirs[0].path(), protection(), "source").unwrap();
    let target = join(&mut source, dirs[1].path());
    for start in (0..events).step_by(GROUP) {
        source.commit_batch((start..(start + GROUP).min(events)).map(task).collect()).unwrap();
    }
    source.compact().unwrap();
    let source = Arc::new(Mutex::new(source));
    let target: Arc<dyn SharedWorkspace> = Arc::new(Mutex::new(target));
    let source_peers = Peers::new();
    let server = PeerServer::start(source.clone(), source_peers.clone(), PeerOptions::loopback()).await.unwrap();
    let ticket = server.ticket();
    let options = PeerOptions::loopback();

    let started = Instant::now();
    let full = sync_once(target.clone(), &ticket, &options).await.unwrap();
    let full_time = started.elapsed();
    assert!(full.converged && full.applied >= events, "{full:?}");

    let (mut one, mut one_bytes) = (Vec::new(), Vec::new());
    for index in 0..ONE_CHANGE_ROUNDS {
        let (draft, effect) = task(events + index);
        source.lock().unwrap().commit(draft, effect).unwrap();
        let started = Instant::now();
        let report = sync_once(target.clone(), &ticket, &options).await.unwrap();
        one.push(started.elapsed());
        assert!(report.converged && report.applied == 1, "{report:?}");
        one_bytes.push(wire_bytes(&report));
    }

    let (reports, mut reported) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let link = tokio::spawn({
        let (target, ticket, options) = (target.clone(), ticket.clone(), options.clone());
        async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            sync_live(target, Peers::new(), &ticket, &options, stopped, |report| {
                let _ = reports.send(report.clone());
            })
            .await
        }
    });
    let first = reported.recv().await.unwrap();
    assert!(first.converged, "{first:?}");
    let mut live = Vec::new();
    for index in 0..ONE_CHANGE_ROUNDS {
        let (draft, effect) = task(events + ONE_CHANGE_ROUNDS + index);
        source.lock().unwrap().commit(draft, effect).unwrap();
        let started = Instant::now();
        source_peers.changed();
        let report = reported.recv().await.unwrap();
        live.push(started.elapsed());
        assert!(report.converged && report.applied == 1, "{report:?}");
    }
    let _ = stop.send(());
    link.await.unwrap().unwrap();
    server.shutdown().await;
    Figures { full: full_time, full_bytes: wire_bytes(&full), one, one_bytes, live }
}

/// A change like the engine's (the task's fields, its envelope as the commit message) into the
/// document the engine puts it in, when `docs` are the engine's buckets (else into the one
/// document); returns which of `docs` took it.
fn raw_change(docs: &mut [automerge::Automerge], index: usize) -> usize {
    let id = RecordId::new();
    let document = Collection::Tasks.document_of(id);
    let at = bucket_of(id) % docs.len();
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        id: EventId::new(),
        kind: EventKind::from_static("task.created"),
        actor: Actor::User,
        device: DeviceId([7; 32]),
        time: chrono::Utc::now(),
        correlation: None,
        causation: None,
        subject: Some(Subject { document, record: id }),
    };
    let effect = Effect::CreateRecord { collection: Collection::Tasks, id, fields: task_fields(index) };
    let options =
        CommitOptions::default().with_message(envelope.encode().unwrap()).with_time(envelope.time.timestamp_millis());
    docs[at].transact_with(|_| options, |tx| effect.apply(tx)).unwrap();
    at
}

/// How the raw baseline may send what the other side lacks.
#[derive(Clone, Copy)]
enum Shortcut {
    /// Automerge as it comes: an empty peer gets the whole document, compressed.
    WholeDocument,
    /// Change by change, as the engine sends them (each keeps its attestation): the
    /// capability flags are dropped on receipt, as the engine drops them.
    ChangesOnly,
}

/// Passes one message from one side to the other; returns its bytes.
fn pass(
    message: automerge::sync::Message,
    to: &mut automerge::Automerge,
    state: &mut automerge::sync::State,
    shortcut: Shortcut,
) -> u64 {
    let encoded = message.encode();
    let mut received = automerge::sync::Message::decode(&encoded).unwrap();
    if let Shortcut::ChangesOnly = shortcut {
        received.flags = None;
    }
    to.receive_sync_message(state, received).unwrap();
    encoded.len() as u64
}

/// Runs Automerge's sync protocol between `a` and `b` until neither has a message; returns
/// the bytes of every message exchanged.
fn raw_sync(
    a: &mut automerge::Automerge,
    a_state: &mut automerge::sync::State,
    b: &mut automerge::Automerge,
    b_state: &mut automerge::sync::State,
    shortcut: Shortcut,
) -> u64 {
    let mut bytes = 0;
    loop {
        let mut moved = false;
        if let Some(message) = a.generate_sync_message(a_state) {
            bytes += pass(message, b, b_state, shortcut);
            moved = true;
        }
        if let Some(message) = b.generate_sync_message(b_state) {
            bytes += pass(message, a, a_state, shortcut);
            moved = true;
        }
        if !moved {
            return bytes;
        }
    }
}

/// The raw baseline over `documents` documents: 1, or the engine's [`BUCKETS`], each synced
/// on its own, one after the other.
fn raw(events: usize, documents: usize, shortcut: Shortcut) -> Figures {
    let mut sources: Vec<_> = (0..documents).map(|_| automerge::Automerge::new()).collect();
    for index in 0..events {
        raw_change(&mut sources, index);
    }
    let mut targets: Vec<_> = (0..documents).map(|_| automerge::Automerge::new()).collect();
    let mut states: Vec<_> =
        (0..documents).map(|_| (automerge::sync::State::new(), automerge::sync::State::new())).collect();
    let started = Instant::now();
    let mut full_bytes = 0;
    for ((source, target), (source_state, target_state)) in sources.iter_mut().zip(&mut targets).zip(&mut states) {
        full_bytes += raw_sync(source, source_state, target, target_state, shortcut);
        assert_eq!(source.get_heads(), target.get_heads());
    }
    let full = started.elapsed();

    let (mut one, mut one_bytes) = (Vec::new(), Vec::new());
    for index in 0..ONE_CHANGE_ROUNDS {
        let at = raw_change(&mut sources, events + index);
        let (source_state, target_state) = &mut states[at];
        let started = Instant::now();
        one_bytes.push(raw_sync(&mut sources[at], source_state, &mut targets[at], target_state, shortcut));
        one.push(started.elapsed());
        assert_eq!(sources[at].get_heads(), targets[at].get_heads());
    }
    Figures { full, full_bytes, live: one.clone(), one, one_bytes }
}

/// Automerge alone taking in one new change of the document that gets it, when N changes are
/// spread over `documents` documents (the least any receiver of that change pays):
/// `apply_changes`, and `apply_changes_log_patches` with `make_patches` (what an import that
/// learns which records changed from patches pays).
fn raw_apply(events: usize, documents: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut sources: Vec<_> = (0..documents).map(|_| automerge::Automerge::new()).collect();
    for index in 0..events {
        raw_change(&mut sources, index);
    }
    let mut plain: Vec<_> = sources.iter().map(|doc| doc.fork()).collect();
    let mut patched: Vec<_> = sources.iter().map(|doc| doc.fork()).collect();
    let (mut applied, mut with_patches) = (Vec::new(), Vec::new());
    for index in 0..ONE_CHANGE_ROUNDS {
        let at = raw_change(&mut sources, events + index);
        let change = sources[at].get_last_local_change().unwrap().clone();
        let started = Instant::now();
        plain[at].apply_changes([change.clone()]).unwrap();
        applied.push(started.elapsed());
        let started = Instant::now();
        let mut log = automerge::PatchLog::active();
        patched[at].apply_changes_log_patches([change], &mut log).unwrap();
        assert!(!patched[at].make_patches(&mut log).is_empty());
        with_patches.push(started.elapsed());
    }
    (applied, with_patches)
}

/// Automerge alone taking in the 16 buckets saved whole, on one thread per core: loaded only,
/// then loaded with every value of every record read once.
fn raw_load(events: usize) -> (Duration, Duration) {
    let mut sources: Vec<_> = (0..BUCKETS).map(|_| automerge::Automerge::new()).collect();
    for index in 0..events {
        raw_change(&mut sources, index);
    }
    let saved: Vec<Vec<u8>> = sources.iter_mut().map(|doc| doc.save()).collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let on_every_core = |read: bool| {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for first in 0..threads {
                let saved = &saved;
                scope.spawn(move || {
                    for bytes in saved.iter().skip(first).step_by(threads) {
                        let doc = automerge::Automerge::load(bytes).unwrap();
                        if read {
                            assert!(read_every_value(&doc, &automerge::ROOT, automerge::ObjType::Map) > 0);
                        }
                    }
                });
            }
        });
        started.elapsed()
    };
    (on_every_core(false), on_every_core(true))
}

/// Reads every value under `obj` through Automerge's read API; returns how many it read.
fn read_every_value(doc: &automerge::Automerge, obj: &automerge::ObjId, kind: automerge::ObjType) -> usize {
    use automerge::{ObjType, ReadDoc, ValueRef};
    let value = |value: ValueRef<'_>, id: automerge::ObjId| match value {
        ValueRef::Object(kind) => read_every_value(doc, &id, kind),
        ValueRef::Scalar(_) => 1,
    };
    match kind {
        ObjType::Map | ObjType::Table => doc.map_range(obj, ..).map(|item| value(item.value.clone(), item.id())).sum(),
        ObjType::List => doc.list_range(obj, ..).map(|item| value(item.value.clone(), item.id())).sum(),
        ObjType::Text => doc.text(obj).map_or(0, |text| text.len() + 1),
    }
}

fn main() {
    let events = events_setting();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rows = [
        ("adiuva", runtime.block_on(ours(events))),
        ("automerge, whole document", raw(events, 1, Shortcut::WholeDocument)),
        ("automerge, changes only", raw(events, 1, Shortcut::ChangesOnly)),
        ("automerge, 16 buckets, whole", raw(events, BUCKETS, Shortcut::WholeDocument)),
        ("automerge, 16 buckets, changes", raw(events, BUCKETS, Shortcut::ChangesOnly)),
    ];
    println!("peer sync on loopback, {events} task events, beside raw in-memory Automerge sync");
    println!(
        "  {:<26} {:>12} {:>12} {:>9}   one new change ({ONE_CHANGE_ROUNDS} rounds): {:>9} {:>9} {:>8}   live: {:>9} {:>9}",
        "", "full sync", "bytes", "B/change", "p50", "p99", "bytes", "p50", "p99"
    );
    let mut report = Map::new();
    for (name, mut figures) in rows {
        figures.one.sort();
        figures.one_bytes.sort();
        let (p50, p99) = (percentile(&figures.one, 0.5), percentile(&figures.one, 0.99));
        let one_bytes = figures.one_bytes[figures.one_bytes.len() / 2];
        figures.live.sort();
        let (live_p50, live_p99) = (percentile(&figures.live, 0.5), percentile(&figures.live, 0.99));
        println!(
            "  {name:<26} {:>9.1} ms {:>12} {:>9.1}   {:>47.2} ms {:>6.2} ms {:>8}   {:>12.2} ms {:>6.2} ms",
            ms(figures.full),
            figures.full_bytes,
            figures.full_bytes as f64 / events as f64,
            ms(p50),
            ms(p99),
            one_bytes,
            ms(live_p50),
            ms(live_p99)
        );
        report.insert(
            name.into(),
            json!({"full_ms": ms(figures.full), "full_bytes": figures.full_bytes, "one_p50_ms": ms(p50),
                   "one_p99_ms": ms(p99), "one_bytes_p50": one_bytes, "live_p50_ms": ms(live_p50),
                   "live_p99_ms": ms(live_p99)}),
        );
    }
    println!(
        "  (adiuva's one-change sessions each dial afresh, the QUIC handshake in every one; live: one connection kept)"
    );
    for (documents, name) in [(1, "automerge, apply one change"), (BUCKETS, "automerge, apply one change, 16 buckets")]
    {
        let (mut applied, mut with_patches) = raw_apply(events, documents);
        applied.sort();
        with_patches.sort();
        println!(
            "  automerge alone, one new change applied to its document ({events} changes in {documents}): p50 {:.2} ms, p99 {:.2} ms; with patches p50 {:.2} ms, p99 {:.2} ms",
            ms(percentile(&applied, 0.5)),
            ms(percentile(&applied, 0.99)),
            ms(percentile(&with_patches, 0.5)),
            ms(percentile(&with_patches, 0.99))
        );
        report.insert(
            name.into(),
            json!({"p50_ms": ms(percentile(&applied, 0.5)), "p99_ms": ms(percentile(&applied, 0.99)),
                   "with_patches_p50_ms": ms(percentile(&with_patches, 0.5)),
                   "with_patches_p99_ms": ms(percentile(&with_patches, 0.99))}),
        );
    }
    let (loaded, read) = raw_load(events);
    println!(
        "  automerge alone, the {BUCKETS} buckets saved whole loaded on one thread per core: {:.1} ms; loaded and every record read once: {:.1} ms",
        ms(loaded),
        ms(read)
    );
    report.insert("automerge, 16 buckets loaded".into(), json!({"load_ms": ms(loaded), "load_and_read_ms": ms(read)}));
    report.insert("events".into(), json!(events));
    println!("{}", Value::Object(report));
}
