//! Live sync in the daemon: two daemons (two workspace directories, one real `adiuva-server`),
//! and a task added through one appears in the other with no `adiuva sync` run; with the relay
//! down, a write waits (status says offline, and how much waits) and goes out by itself once the
//! relay is back. `adiuva sync` while a daemon runs goes through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../engine/sync/tests/common/mod.rs"]
mod common;
mod relay_cli;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use relay_cli::{adiuva, succeeded, titles};
use serde_json::Value;

fn sync_status(dir: &Path) -> Value {
    let status: Value =
        serde_json::from_str(&succeeded(adiuva(dir).args(["status", "--json"]).output().unwrap())).unwrap();
    status["sync"].clone()
}

/// Waits until `check` holds. Not a timed assertion: the bound only turns a hang into a failure.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Daemons stopped when the test ends, whatever happened.
struct Daemons(Vec<PathBuf>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = adiuva(dir).args(["daemon", "stop"]).output();
        }
    }
}

#[test]
fn a_task_added_through_one_daemon_appears_in_the_other_without_a_manual_sync() {
    let mut relay = Relay::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let email = "live@example.com";
    {
        let mut a = first_device(&mut relay, a_dir.path(), email);
        let mut b = join(&mut a, &relay, b_dir.path(), email, "b");
        sync(&mut a);
        sync(&mut b);
    }
    let daemons = Daemons(vec![a_dir.path().to_owned(), b_dir.path().to_owned()]);
    for dir in &daemons.0 {
        assert!(succeeded(adiuva(dir).args(["daemon", "start"]).output().unwrap()).contains("daemon started"));
    }

    succeeded(adiuva(a_dir.path()).args(["task", "add", "written through daemon a"]).output().unwrap());
    eventually("a's task reaches b", || titles(b_dir.path()).contains(&"written through daemon a".to_owned()));
    succeeded(adiuva(b_dir.path()).args(["task", "add", "written through daemon b"]).output().unwrap());
    eventually("b's task reaches a", || titles(a_dir.path()).contains(&"written through daemon b".to_owned()));

    // `adiuva sync` while the daemon runs is the daemon's sync.
    let synced = succeeded(adiuva(a_dir.path()).arg("sync").output().unwrap());
    assert!(synced.starts_with("synced:"), "{synced}");
    eventually("both online, nothing waiting", || {
        [a_dir.path(), b_dir.path()].iter().all(|dir| {
            let sync = sync_status(dir);
            sync["online"] == true && sync["waiting"] == 0
        })
    });

    // The relay down: the write waits, and status says so.
    relay.kill();
    succeeded(adiuva(a_dir.path()).args(["task", "add", "written while the relay is down"]).output().unwrap());
    eventually("a reports offline with the event waiting", || {
        let sync = sync_status(a_dir.path());
        sync["online"] == false && sync["waiting"].as_u64().unwrap() >= 1
    });
    let offline = succeeded(adiuva(a_dir.path()).arg("sync").output().unwrap());
    assert!(offline.starts_with("offline:"), "{offline}");
    let human = succeeded(adiuva(a_dir.path()).arg("status").output().unwrap());
    assert!(human.contains("live sync  offline"), "{human}");

    // Back: it goes out and arrives on its own.
    relay.restart();
    eventually("the waiting write reaches b", || {
        titles(b_dir.path()).contains(&"written while the relay is down".to_owned())
    });
    eventually("a has nothing waiting", || sync_status(a_dir.path())["waiting"] == 0);
    let mut a_titles = titles(a_dir.path());
    let mut b_titles = titles(b_dir.path());
    a_titles.sort();
    b_titles.sort();
    assert_eq!(a_titles, b_titles);
    assert_eq!(a_titles.len(), 3);
    drop(daemons);
}
