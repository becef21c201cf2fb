//! SIGKILL in the middle of relay sync, repeated: the relay killed during pushes (a device
//! syncing in this process), and the `adiuva sync` process killed during pulls. After restarts
//! nothing is lost and nothing is sent or applied twice: every unit a push made reaches the
//! relay once (the outbox resends the same bytes), and the devices converge. And `adiuva
//! restore` killed half-way: the directory does not open, and the restore run again completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../engine/sync/tests/common/mod.rs"]
mod common;
mod relay_cli;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use adiuva_engine::{Effect, EventDraft};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use common::*;
use relay_cli::{adiuva, succeeded, titles};

/// A small deterministic generator of delays (no dependency for it).
struct Delays(u64);

impl Delays {
    fn next(&mut self, below_ms: u64) -> Duration {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Duration::from_millis((self.0 >> 33) % below_ms)
    }
}

/// Every entry of the relay's sequence (id), read as device `device`.
fn relay_sequence(relay: &Relay, email: &str, device: adiuva_model::DeviceId, ws: &str) -> Vec<String> {
    let client = adiuva_sync::RelayClient::new(&relay.url);
    let token = client.sign_in(false, email, PASSWORD, device).unwrap().access_token;
    let mut ids = Vec::new();
    loop {
        let page = client.changes(&token, ws, ids.len() as u64).unwrap();
        if page.changes.is_empty() {
            return ids;
        }
        ids.extend(page.changes.into_iter().map(|entry| entry.id));
    }
}

#[test]
fn sigkill_of_the_relay_during_pushes_loses_nothing_and_stores_nothing_twice() {
    const ROUNDS: usize = 8;
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "kill-relay@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
    sync(&mut a);
    let mut delays = Delays(7);
    let mut interrupted = 0;
    for round in 0..ROUNDS {
        for n in 0..40 {
            add_task(&mut a, &format!("round {round} task {n}"));
        }
        let pid = relay.pid();
        let delay = delays.next(60);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        });
        if adiuva_sync::sync_once(&mut a, &mut |_| {}).is_err() {
            interrupted += 1;
        }
        killer.join().unwrap();
        relay.kill();
        relay.restart();
        sync(&mut a);
        assert_eq!(a.relay_waiting(&relay.url).unwrap(), 0, "round {round}: all of it went out");
    }
    assert!(interrupted > 0, "no sync was cut short: the kills came too late");
    // One unit for the first push and one per round, whatever the kills interrupted.
    let sequence = relay_sequence(&relay, email, a.device_id(), &a.workspace_id().to_string());
    assert_eq!(sequence.len(), 1 + ROUNDS, "a push cut short was stored twice");
    sync(&mut b);
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), ROUNDS * 40);
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
}

#[test]
fn sigkill_of_the_client_during_pulls_loses_nothing_and_applies_nothing_twice() {
    const UNITS: usize = 100;
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "kill-client@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    drop(join(&mut a, &relay, b_dir.path(), email, "b"));
    for n in 0..UNITS {
        add_task(&mut a, &format!("task {n}"));
        if n % 10 == 0 {
            add_note(&mut a, &format!("note {n}"), "body");
        }
        sync(&mut a);
    }
    let adiuva_sync = |dir: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_adiuva"));
        command
            .arg("--workspace")
            .arg(dir)
            .arg("sync")
            .env("ADIUVA_PASSPHRASE", PASSPHRASE)
            .env_remove("ADIUVA_HOME")
            .env_remove("ADIUVA_LOG")
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        command
    };
    // Killed as soon as its progress shows a pull under way, so each kill lands mid-pull
    // whatever this machine's speed; each later run resumes from where the last one stopped.
    let mut killed = 0;
    for _ in 0..3 {
        let mut child = adiuva_sync(b_dir.path()).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let under_way = stderr.lines().map_while(Result::ok).any(|line| {
            line.strip_prefix("pulling units ")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(done, total)| done != "0" && done != total)
        });
        if !under_way {
            child.wait().unwrap();
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
    }
    assert!(killed > 0, "the pull was never interrupted");
    let output = adiuva_sync(b_dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut b = open(b_dir.path());
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), UNITS);
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
    let tasks_events = b.status().unwrap().documents.iter().find(|d| d.name == "tasks/*").unwrap().events;
    assert_eq!(tasks_events, UNITS, "each change stored once");
}

#[test]
fn sigkill_of_a_restore_leaves_a_directory_that_does_not_open_and_a_second_restore_completes() {
    const TASKS: usize = 3000;
    let mut relay = Relay::start();
    let (a_dir, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let target = target.path().join("restored");
    let email = "kill-restore@example.com";
    let mut a = first_device(&mut relay, a_dir.path(), email);
    let phrase = a.create_recovery().unwrap().to_string();
    let tasks = (0..TASKS)
        .map(|n| {
            let fields = serde_json::json!({"title": format!("task {n}"), "description": "", "status": "todo",
                "priority": "medium", "tags": [], "created_at": "2026-12-06T10:00:00Z"});
            let effect = Effect::CreateRecord {
                collection: Collection::Tasks,
                id: RecordId::new(),
                fields: fields.as_object().unwrap().clone(),
            };
            (EventDraft::new(EventKind::new("task.created").unwrap(), Actor::User), effect)
        })
        .collect();
    a.commit_batch(tasks).unwrap();
    sync(&mut a);
    adiuva_sync::backup_now(&mut a, &mut |_| {}).unwrap();
    let ws = a.workspace_id().to_string();
    let restore = || {
        let mut command = adiuva(&target);
        command.args(["restore", "--server", &relay.url, "--email", email, "--phrase", &phrase, "--id", &ws]);
        command
    };

    // Killed once the restore has started writing the workspace's store (it marks the
    // directory before anything else).
    let marker = target.join("restore-unfinished");
    let mut child = restore().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    while !target.join("store").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the restore ended before it wrote anything");
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(marker.exists(), "the directory of a restore killed half-way is marked unfinished");
    let opened = adiuva(&target).args(["task", "list"]).output().unwrap();
    assert!(!opened.status.success());
    let stderr = String::from_utf8_lossy(&opened.stderr);
    assert!(stderr.contains("workspace.restore_unfinished"), "{stderr}");

    // Run again, it starts over and completes; the result is the workspace, once.
    let restored = succeeded(restore().output().unwrap());
    assert!(restored.contains("restored workspace"), "{restored}");
    assert!(!marker.exists());
    assert_eq!(titles(&target).len(), TASKS);
    sync(&mut a);
    let mut b = open(&target);
    sync(&mut b);
    sync(&mut a);
    assert_eq!(snapshot(&mut a), snapshot(&mut b));
}
