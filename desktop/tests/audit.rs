//! The audit tool changes no byte of a workspace: every replay command run on a closed
//! workspace, and again while a real daemon (`adiuva daemon start`) holds it open, leaves every
//! file of it as it was.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adiuva_engine::Workspace;
use adiuva_replay::events::{self, Filter};
use adiuva_replay::state::{self, Point};
use adiuva_replay::{history, rebuild, verify};
use zeroize::Zeroizing;

const PASSPHRASE: &str = "audit-passphrase-3f9a1c";

fn ok(workspace: &Path, args: &[&str]) -> String {
    let output = common::adiuva_command(workspace, PASSPHRASE, args).output().unwrap();
    assert!(output.status.success(), "adiuva {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn open(dir: &Path) -> Workspace {
    Workspace::open_read_only(dir, || Some(Zeroizing::new(PASSPHRASE.to_owned()))).unwrap()
}

/// Runs every replay command on `dir`, each on its own read-only open (as each invocation of
/// the tool would), checking after each that no byte of the workspace changed.
fn every_command_leaves_it_as_it_was(dir: &Path) {
    let before = files_under(dir);
    let unchanged = |command: &str| {
        let after = files_under(dir);
        let changed: Vec<_> =
            after.iter().filter(|(path, bytes)| before.get(*path) != Some(bytes)).map(|(p, _)| p).collect();
        assert!(changed.is_empty() && after.len() == before.len(), "{command} changed {changed:?}");
    };
    let report = verify::verify(&mut open(dir), &mut |_| {}).unwrap();
    assert_eq!(report.faults, vec![]);
    unchanged("verify");
    let all = events::events(&mut open(dir), &Filter::default()).unwrap();
    assert!(all.len() >= 4);
    unchanged("events");
    let task = all.iter().rev().find_map(|e| e.envelope.subject.as_ref()).unwrap().record.to_string();
    let found = history::history(&mut open(dir), &task).unwrap();
    assert!(!found.events.is_empty());
    unchanged("history");
    let (first, last) = (all[1].change.clone(), all.last().unwrap().change.clone());
    state::at(&mut open(dir), &Point::Change(last.clone())).unwrap();
    unchanged("at");
    let mut workspace = open(dir);
    let a = state::at(&mut workspace, &Point::Change(first)).unwrap();
    let b = state::at(&mut workspace, &Point::Change(last)).unwrap();
    assert!(!state::diff(&a, &b).is_empty());
    drop(workspace);
    unchanged("diff");
    let out = tempfile::tempdir().unwrap();
    rebuild::rebuild(&mut open(dir), out.path()).unwrap();
    unchanged("rebuild-index");
}

#[test]
fn replay_commands_change_no_byte_of_a_closed_workspace_or_one_a_daemon_holds() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    ok(ws, &["init", "--device-name", "laptop"]);
    ok(ws, &["task", "add", "Water the plants"]);
    let id = ok(ws, &["task", "add", "Call the bank"]);
    ok(ws, &["task", "done", id.trim()]);
    ok(ws, &["note", "add", "Groceries", "--body", "oat milk"]);
    every_command_leaves_it_as_it_was(ws);

    assert!(ok(ws, &["daemon", "start"]).contains("daemon started"));
    assert!(Workspace::is_held(ws), "the daemon holds the workspace");
    ok(ws, &["task", "add", "Written through the daemon"]);
    // The daemon indexes what is new for search in the background (sealed device settings):
    // brought up to date now, it has nothing to write while the audit runs.
    ok(ws, &["index", "status"]);
    every_command_leaves_it_as_it_was(ws);
    assert_eq!(ok(ws, &["daemon", "stop"]), "daemon stopped\n");
}
