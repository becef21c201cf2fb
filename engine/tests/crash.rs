//! Crash safety: a child process commits events (single commits and group commits, with
//! frequent compaction) and reports each one whose commit returned; the parent kills it with
//! SIGKILL at a random moment, reopens the workspace and checks that every reported event is
//! there. Repeated [`ROUNDS`] times over the same, growing workspace. Another child runs `init`
//! and is killed at moments spread over it: the directory then holds a complete workspace or
//! none, and `init` runs again.
//!
//! The child is this test binary itself, re-run with [`CHILD_ENV`] set: the real engine, in a
//! real separate process, killed for real.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adiuva_engine::{KeyProtection, Workspace, WorkspaceOptions};
use adiuva_model::{Collection, RecordId};
use common::*;
use zeroize::Zeroizing;

const ROUNDS: usize = 60;
const CHILD_ENV: &str = "ADIUVA_CRASH_CHILD_WORKSPACE";
/// Where the child reports: a plain file (the page cache outlives a SIGKILL of the writer).
const ACK_ENV: &str = "ADIUVA_CRASH_CHILD_ACKS";
const SEED: u64 = 0x5eed_adf0_2026_1129;

/// xorshift64*: a seeded, reproducible sequence of kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The child: commit forever, reporting `ack <id>` for every event whose commit returned.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run as a normal test: nothing to do
    };
    let options = WorkspaceOptions { compact_after_chunks: 8, compact_after_bytes: 16 * 1024 };
    let mut workspace = Workspace::open_with(dir.as_ref(), passphrase, options).unwrap();
    let mut acks = std::fs::File::create(std::env::var(ACK_ENV).unwrap()).unwrap();
    acks.write_all(b"ready\n").unwrap();
    for round in 0u64.. {
        // Alternate single commits and groups of up to 20 events.
        let group_size = if round % 3 == 0 { 1 + (round % 20) as usize } else { 1 };
        let events: Vec<_> = (0..group_size)
            .map(|i| (draft("task.created"), task_effect(&format!("task {round}.{i}"), "body")))
            .collect();
        let ids: Vec<RecordId> = events.iter().map(|(_, effect)| effect.record()).collect();
        workspace.commit_batch(events).unwrap();
        let report: String = ids.iter().map(|id| format!("ack {id}\n")).collect();
        acks.write_all(report.as_bytes()).unwrap();
        if round % 10 == 9 {
            // Besides the compactions commits trigger: every document at once.
            workspace.compact().unwrap();
        }
    }
}

const INIT_CHILD_ENV: &str = "ADIUVA_CRASH_CHILD_INIT";

/// The child: create a workspace.
#[test]
fn crash_init_child() {
    if let Ok(dir) = std::env::var(INIT_CHILD_ENV) {
        drop(init(dir.as_ref()));
    }
}

#[test]
fn sigkill_during_init_leaves_a_complete_workspace_or_none() {
    let mut rng = Rng(SEED);
    let (mut complete, mut none) = (0, 0);
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_init_child", "--nocapture", "--test-threads=1"])
            .env(INIT_CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread over the child's start, its key derivation and its first batch.
        let delay = Duration::from_micros(rng.next() % 1_500_000);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let mut workspace = match Workspace::open(dir.path(), passphrase) {
            Ok(workspace) => {
                complete += 1;
                workspace
            }
            Err(adiuva_engine::Error::WorkspaceNotFound { .. }) => {
                none += 1;
                Workspace::init(dir.path(), KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into())), "device")
                    .unwrap_or_else(|e| panic!("round {round}: killed after {delay:?}: none, and init failed: {e}"))
            }
            Err(e) => panic!("round {round}: killed after {delay:?}: neither a workspace nor none: {e}"),
        };
        let effect = task_effect("after the kill", "");
        if let Err(e) = workspace.commit(draft("task.created"), effect) {
            panic!("round {round}: killed after {delay:?}: opened, but a commit failed: {e}");
        }
        eprintln!("round {round}: killed after {delay:?}");
    }
    eprintln!("{complete} complete workspaces, {none} none");
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    drop(init(dir.path()));
    let mut rng = Rng(SEED);
    let mut acknowledged: Vec<RecordId> = Vec::new();
    for round in 0..ROUNDS {
        let ack_file = dir.path().join(format!("acks-{round}"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(ACK_ENV, &ack_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has opened the workspace, then let it commit for 0–100 ms.
        let waiting = Instant::now();
        while !std::fs::read_to_string(&ack_file).is_ok_and(|acks| acks.starts_with("ready")) {
            assert!(waiting.elapsed() < Duration::from_secs(60), "round {round}: the child never got ready");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: the child exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let delay = Duration::from_micros(rng.next() % 100_000);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let reported = std::fs::read_to_string(&ack_file).unwrap();
        let acknowledged_before = acknowledged.len();
        // A line cut short by the kill was never complete, so never acknowledged.
        acknowledged.extend(
            reported
                .split_inclusive('\n')
                .filter_map(|line| line.strip_prefix("ack ")?.strip_suffix('\n')?.parse::<RecordId>().ok()),
        );

        let mut workspace = Workspace::open(dir.path(), passphrase)
            .unwrap_or_else(|e| panic!("round {round}: the store must open after SIGKILL: {e}"));
        let present: std::collections::HashSet<String> = workspace
            .list(Collection::Tasks)
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .iter()
            .map(|task| task["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &acknowledged {
            assert!(present.contains(&id.to_string()), "round {round}: acknowledged event {id} was lost");
        }
        // Every event in the log still carries a valid envelope, and the read view holds exactly
        // the tasks the log created (the child only creates).
        let created: std::collections::HashSet<String> = workspace
            .events(&Default::default())
            .unwrap()
            .iter()
            .filter_map(|event| event.envelope.subject.as_ref())
            .map(|subject| subject.record.to_string())
            .collect();
        assert_eq!(created, present, "round {round}: the read view disagrees with the log");
        eprintln!(
            "round {round}: killed after {delay:?}, {} new acknowledged, {} total, {} present",
            acknowledged.len() - acknowledged_before,
            acknowledged.len(),
            present.len()
        );
    }
    assert!(acknowledged.len() > ROUNDS, "the child must have committed events before being killed");
}
