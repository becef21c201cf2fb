//! The daemon's benchmarks (issue: the desktop daemon), each beside its baseline in the same run,
//! on a workspace of 100k tasks (`--tasks N` to change it):
//!
//! - `task add` end to end: the real `adiuva` process, start to exit, through a running daemon
//!   vs the same command opening the workspace itself (unlock, open, load the tasks document);
//! - API commit: `POST /v1/tasks` on a kept-alive connection vs `Workspace::commit` of the same
//!   task in this process, on a copy of the same workspace (alternating);
//! - `task list --json` of every task: through the daemon vs direct;
//! - the daemon's resident memory, idle (settled), with the workspace loaded.
//!
//! `cargo bench -p adiuva --bench daemon --locked [-- --tasks N] [-- --json FILE]`

// A benchmark that hits an error must stop loudly rather than report partial figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use adiuva_engine::{Effect, EventDraft, Workspace, fields_of};
use adiuva_model::record::{Priority, Task, TaskStatus};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use serde_json::{Map, Value, json};
use ulid::Ulid;
use zeroize::Zeroizing;

const PASSPHRASE: &str = "benchmark passphrase";
const SAMPLES: usize = 21;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut tasks, mut json_out) = (100_000usize, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tasks" => tasks = args.next().and_then(|n| n.parse().ok()).unwrap_or(tasks),
            "--json" => json_out = args.next().map(PathBuf::from),
            _ => {} // cargo bench passes `--bench`
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let copy = dir.path().join("copy");
    println!("workspace of {tasks} tasks: importing…");
    build_workspace(&ws, tasks, dir.path());
    copy_dir(&ws, &copy);
    let mut report = Map::new();
    report.insert("tasks".into(), json!(tasks));

    let direct_add = sample_process(&ws, &["task", "add", "Direct"]);
    let direct_list = sample_process(&ws, &["task", "list", "--all", "--json"]);

    ok(&ws, &["daemon", "start"]);
    let announced: Value = serde_json::from_slice(&std::fs::read(ws.join("daemon.json")).unwrap()).unwrap();
    let address = announced["address"].as_str().unwrap().to_owned();
    let token = announced["token"].as_str().unwrap().to_owned();
    // The first write loads the tasks document; the samples measure the daemon as it stays.
    ok(&ws, &["task", "add", "Warm-up"]);
    let daemon_add = sample_process(&ws, &["task", "add", "Through the daemon"]);
    let daemon_list = sample_process(&ws, &["task", "list", "--all", "--json"]);
    let (api, engine) = api_vs_engine(&address, &token, &copy);
    let rss_mb = settled_resident_mb(announced["pid"].as_u64().unwrap());
    ok(&ws, &["daemon", "stop"]);

    println!("`adiuva task add`, process start to exit (p50 of {SAMPLES})");
    row("through the daemon", &daemon_add, "direct", &direct_add);
    println!("commit of one task (p50 of {}, alternating)", api.len());
    row("API POST /v1/tasks", &api, "engine commit", &engine);
    println!("  overhead                            {:>9.3} ms", ms(p50(&api)) - ms(p50(&engine)));
    println!("`adiuva task list --all --json` of every task (p50 of {SAMPLES})");
    row("through the daemon", &daemon_list, "direct", &direct_list);
    println!("daemon resident memory, idle, workspace loaded: {rss_mb:.1} MB");

    report.insert("task add".into(), pair(&daemon_add, &direct_add));
    report.insert("api commit".into(), pair(&api, &engine));
    report.insert("task list json".into(), pair(&daemon_list, &direct_list));
    report.insert("daemon rss mb".into(), json!(rss_mb));
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    }
}

fn adiuva(workspace: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_adiuva"));
    command
        .arg("--workspace")
        .arg(workspace)
        .args(args)
        .env("ADIUVA_PASSPHRASE", PASSPHRASE)
        .env_remove("ADIUVA_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    command
}

fn ok(workspace: &Path, args: &[&str]) -> Output {
    let output = adiuva(workspace, args).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "adiuva {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A workspace of `tasks` tasks, written by `adiuva import` as a person would.
fn build_workspace(ws: &Path, tasks: usize, scratch: &Path) {
    ok(ws, &["init", "--device-name", "bench"]);
    let file = scratch.join("tasks.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for n in 0..tasks {
        writeln!(out, r#"{{"type":"task","title":"Task number {n}","tags":["bench"],"priority":"low"}}"#).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    ok(ws, &["import", file.to_str().unwrap()]);
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

/// The whole process, start to exit, `SAMPLES` times.
fn sample_process(ws: &Path, args: &[&str]) -> Vec<Duration> {
    (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            ok(ws, args);
            started.elapsed()
        })
        .collect()
}

/// `POST /v1/tasks` on one kept-alive connection beside `Workspace::commit` on a copy of the
/// workspace (its tasks document loaded first, as the daemon's is), alternating.
fn api_vs_engine(address: &str, token: &str, copy: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{address}/v1/tasks");
    let bearer = format!("Bearer {token}");
    let mut workspace = Workspace::open(copy, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap();
    // The same task the API's handler builds.
    let mut engine_commit = |n: usize| {
        let task = Task {
            id: RecordId::new(),
            title: format!("Engine {n}"),
            description: String::new(),
            status: TaskStatus::Todo,
            priority: Priority::default(),
            due: None,
            tags: Vec::new(),
            project: None,
            created_at: chrono::Utc::now(),
        };
        let fields = fields_of(Collection::Tasks, &task).unwrap();
        let effect = Effect::CreateRecord { collection: Collection::Tasks, id: task.id, fields };
        let draft = EventDraft::new(EventKind::new("task.created").unwrap(), Actor::User).correlated(Some(Ulid::new()));
        workspace.commit(draft, effect).unwrap();
    };
    engine_commit(0);
    let (mut api, mut engine) = (Vec::new(), Vec::new());
    for n in 0..SAMPLES * 5 {
        let body = json!({"title": format!("API {n}")}).to_string();
        let started = Instant::now();
        let response = agent
            .post(&url)
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap();
        let status = response.status().as_u16();
        response.into_body().read_to_vec().unwrap();
        api.push(started.elapsed());
        assert!((200..300).contains(&status), "POST /v1/tasks answered {status}");

        let started = Instant::now();
        engine_commit(n + 1);
        engine.push(started.elapsed());
    }
    (api, engine)
}

/// Resident memory once the daemon is idle: the last requests' buffers returned and any
/// background work they started (a compaction) done, i.e. two readings a second apart within
/// 1 MB of each other (at most 30 s).
fn settled_resident_mb(pid: u64) -> f64 {
    let mut last = resident_mb(pid);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now = resident_mb(pid);
        if (now - last).abs() < 1.0 {
            return now;
        }
        last = now;
    }
    last
}

fn resident_mb(pid: u64) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn p50(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn row(ours: &str, ours_samples: &[Duration], theirs: &str, theirs_samples: &[Duration]) {
    let (a, b) = (ms(p50(ours_samples)), ms(p50(theirs_samples)));
    println!("  {ours:<22} {a:>9.3} ms   {theirs:<14} {b:>9.3} ms   ratio {:>6.3}×", a / b);
}

fn pair(ours: &[Duration], theirs: &[Duration]) -> Value {
    json!({"p50_ms": ms(p50(ours)), "baseline_p50_ms": ms(p50(theirs))})
}
