//! Live peer sync through the real binary on loopback, with no relay: a daemon listening while
//! peers are on (`peer on|off`), `sync --peer TICKET --live` held by the other device's daemon
//! or run in its own process, tasks added on either side reaching the other with no sync
//! command, `status` listing the connected peers and what each lacks, SIGTERM ending a live
//! sync cleanly, and live links dialing again once a listener that went away is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../engine/tests/common/mod.rs"]
mod engine_common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use adiuva_model::Collection;
use common::adiuva_command;
use engine_common::{PASSPHRASE, init, join, open};
use serde_json::Value;

/// Turns a hang into a failure; nothing here is timed.
const PATIENCE: Duration = Duration::from_secs(120);

fn adiuva(dir: &Path, args: &[&str]) -> Command {
    let mut command = adiuva_command(dir, PASSPHRASE, args);
    command.env("ADIUVA_PEER_BIND", "127.0.0.1:0").env("ADIUVA_PEER_STALL_SECS", "120");
    command
}

fn succeeded(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    succeeded(adiuva(dir, args).output().unwrap())
}

fn titles(dir: &Path) -> Vec<String> {
    let tasks: Value = serde_json::from_str(&ok(dir, &["task", "list", "--json"])).unwrap();
    tasks.as_array().unwrap().iter().map(|task| task["title"].as_str().unwrap().to_owned()).collect()
}

fn peers(dir: &Path) -> Value {
    let status: Value = serde_json::from_str(&ok(dir, &["status", "--json"])).unwrap();
    status["peers"].clone()
}

/// Waits until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");

        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Daemons stopped when the test ends, whatever happened.
struct Daemons(Vec<PathBuf>);

impl Daemons {
    fn start(dirs: &[&Path]) -> Self {
        let daemons = Daemons(dirs.iter().map(|dir| dir.to_path_buf()).collect());
        for dir in dirs {
            assert!(ok(dir, &["daemon", "start"]).contains("daemon started"));
        }
        daemons
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = adiuva(dir, &["daemon", "stop"]).output();
        }
    }
}

/// `N` devices of one workspace, apart so far.
fn devices<const N: usize>() -> [tempfile::TempDir; N] {
    let dirs: [tempfile::TempDir; N] = std::array::from_fn(|_| tempfile::tempdir().unwrap());
    let mut a = init(dirs[0].path());
    for (n, dir) in dirs[1..].iter().enumerate() {
        join(&mut a, dir.path(), &format!("device {n}"));
    }
    dirs
}

/// `peer on` through the daemon: the ticket it listens at.
fn peers_on(dir: &Path) -> String {
    let on = ok(dir, &["peer", "on"]);
    let ticket = on.trim().strip_prefix("listening at ").unwrap_or_else(|| panic!("{on}")).to_owned();
    assert_eq!(ok(dir, &["peer", "ticket"]).trim(), ticket);
    ticket
}

/// A `sync --peer --live --json` process, each line it prints arriving on a channel.
struct LiveSync {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl LiveSync {
    fn start(dir: &Path, ticket: &str) -> Self {
        let mut child = adiuva(dir, &["sync", "--peer", ticket, "--live", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Self { child, lines }
    }

    /// The next session report it prints.
    fn next_session(&mut self) -> Value {
        let line = match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            // It ended: what it said on the way out is the failure to see.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("the live sync ended without a session report: {stderr}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no session reported within {PATIENCE:?}"),
        };
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"))
    }

    /// SIGTERM; it must end cleanly.
    fn terminate(self) -> String {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let output = self.child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("live sync with peer"), "{stderr}");
        stderr
    }
}

#[test]
fn a_live_connection_through_the_daemons_carries_each_new_task_both_ways() {
    let dirs = devices::<2>();
    let (a, b) = (dirs[0].path(), dirs[1].path());
    let daemons = Daemons::start(&[a, b]);
    let ticket = peers_on(a);
    assert!(ok(a, &["status"]).contains(&format!("peers      listening at {ticket}")));

    let mut live = LiveSync::start(b, &ticket);
    assert_eq!(live.next_session()["converged"], true);

    ok(a, &["task", "add", "added on the listening device"]);
    eventually("a's task reaches b", || titles(b).contains(&"added on the listening device".to_owned()));
    ok(b, &["task", "add", "added on the dialing device"]);
    eventually("b's task reaches a", || titles(a).contains(&"added on the dialing device".to_owned()));

    // Each side lists the other as connected, lacking nothing once both hold the same.
    for (dir, other) in [(a, b), (b, a)] {
        let other_id = ok(other, &["status", "--json"]);
        let other_id = serde_json::from_str::<Value>(&other_id).unwrap()["device_id"].clone();
        eventually("the peer connected and lacking nothing", || {
            let peers = peers(dir);
            let peer = &peers["peers"][0];
            peer["id"] == other_id && peer["connected"] == true && peer["lacks"] == 0
        });
        assert!(ok(dir, &["status"]).contains("): connected, lacks 0 changes"));
    }

    // SIGTERM ends it cleanly: b's daemon closes the connection, and a counts b out.
    live.terminate();
    eventually("b no longer connected on a", || peers(a)["peers"][0]["connected"] == false);
    assert_eq!(peers(b)["peers"][0]["connected"], false);

    // Off: the daemon stops listening.
    assert!(ok(a, &["peer", "off"]).contains("peers off"));
    assert!(!adiuva(a, &["peer", "ticket"]).output().unwrap().status.success());
    assert!(ok(a, &["status"]).contains("not listening"));
    drop(daemons);
}

#[test]
fn a_live_sync_in_its_own_process_takes_in_each_new_task_and_ends_on_sigterm() {
    let dirs = devices::<2>();
    let (a, b) = (dirs[0].path(), dirs[1].path());
    let daemons = Daemons::start(&[a]);
    let ticket = peers_on(a);
    let mut live = LiveSync::start(b, &ticket);
    assert_eq!(live.next_session()["converged"], true);

    ok(a, &["task", "add", "added while b syncs live"]);
    // A session comes for it on its own, and brings it.
    loop {
        let session = live.next_session();
        if session["applied"].as_u64().unwrap() > 0 {
            break;
        }
    }
    live.terminate();
    let tasks = open(b).list(Collection::Tasks).unwrap();
    assert!(tasks.iter().any(|task| task["title"] == "added while b syncs live"), "{tasks:?}");
    eventually("b no longer connected on a", || peers(a)["peers"][0]["connected"] == false);
    drop(daemons);
}

#[test]
fn live_links_dial_again_once_the_listener_is_back() {
    let dirs = devices::<3>();
    let (a, b, c) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    // a listens at the same address each time peers are on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let daemons = Daemons(vec![a.to_owned(), c.to_owned()]);
    let started = adiuva(a, &["daemon", "start"]).env("ADIUVA_PEER_BIND", format!("127.0.0.1:{port}")).output();
    assert!(succeeded(started.unwrap()).contains("daemon started"));
    assert!(ok(c, &["daemon", "start"]).contains("daemon started"));
    let ticket = peers_on(a);
    // b's link in its own process, c's held by its daemon.
    let (mut b_live, mut c_live) = (LiveSync::start(b, &ticket), LiveSync::start(c, &ticket));
    assert_eq!(b_live.next_session()["converged"], true);
    assert_eq!(c_live.next_session()["converged"], true);

    assert!(ok(a, &["peer", "off"]).contains("peers off"));
    ok(a, &["task", "add", "on a while its peers are off"]);
    ok(c, &["task", "add", "on c while a is away"]);
    assert_eq!(peers_on(a), ticket);

    // Both links come back by themselves and carry what was written meanwhile.
    while b_live.next_session()["applied"].as_u64().unwrap() == 0 {}
    eventually("c's task reaches a", || titles(a).contains(&"on c while a is away".to_owned()));
    eventually("a's task reaches c", || titles(c).contains(&"on a while its peers are off".to_owned()));
    b_live.terminate();
    c_live.terminate();
    let tasks = open(b).list(Collection::Tasks).unwrap();
    assert!(tasks.iter().any(|task| task["title"] == "on a while its peers are off"), "{tasks:?}");
    drop(daemons);
}
