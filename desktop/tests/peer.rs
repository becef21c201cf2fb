//! Peer-to-peer sync through the real binary, each device its own `adiuva` process, on
//! loopback with no relay: three devices converge, and so do three where one pair syncs over
//! P2P and the other through a real `adiuva-server`; `device invite --p2p` lets a device join
//! with no relay (a forged ticket refused); a removed device is refused (and the
//! refusal logged with its id); SIGKILL of either side mid-sync, repeated, loses nothing and
//! the next sync completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../engine/tests/common/mod.rs"]
mod engine_common;
#[path = "../../engine/sync/tests/common/mod.rs"]
mod relay_common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::Collection;
use common::adiuva_command;
use engine_common::{PASSPHRASE, add_task, draft, init, join, open, task_effect};

/// How long a peer may send nothing before the session ends: long enough for a loaded machine
/// to import thousands of changes in a debug build between two frames.
const PATIENT: &str = "120";
/// Where a test kills a side mid-session: the survivor gives up on it quickly.
const IMPATIENT: &str = "5";

fn adiuva(dir: &Path, args: &[&str]) -> Command {
    let mut command = adiuva_command(dir, PASSPHRASE, args);
    command
        .env("ADIUVA_PEER_BIND", "127.0.0.1:0")
        .env("ADIUVA_PEER_STALL_SECS", PATIENT)
        .env("ADIUVA_PASSWORD", relay_common::PASSWORD);
    command
}

/// `adiuva peer serve` running, with the ticket it printed.
struct Serving {
    child: Child,
    ticket: String,
}

impl Serving {
    fn start(dir: &Path) -> Self {
        Self::start_with_stall(dir, PATIENT)
    }

    fn start_with_stall(dir: &Path, stall: &str) -> Self {
        let mut child = adiuva(dir, &["peer", "serve"])
            .env("ADIUVA_PEER_STALL_SECS", stall)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("adiuva-peer-1-"), "{line:?}");
        Serving { child, ticket: line.trim().to_owned() }
    }

    /// Stops it (SIGTERM) and returns what it logged.
    fn stop(mut self) -> String {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap();
        let mut log = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        log
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn sync(dir: &Path, ticket: &str) -> Output {
    adiuva(dir, &["sync", "--peer", ticket, "--json"]).output().unwrap()
}

fn synced(dir: &Path, ticket: &str) -> serde_json::Value {
    serde_json::from_str(&succeeded(sync(dir, ticket))).unwrap()
}

fn heads(workspace: &mut Workspace) -> Vec<(String, Vec<String>)> {
    let mut all: Vec<_> = workspace
        .document_names()
        .unwrap()
        .into_iter()
        .map(|name| {
            let mut heads: Vec<String> = workspace.heads(&name).unwrap().iter().map(|h| h.to_string()).collect();
            heads.sort();
            (name, heads)
        })
        .collect();
    all.sort();
    all
}

fn add_tasks(dir: &Path, prefix: &str, count: usize) {
    let mut workspace = open(dir);
    let events = (0..count).map(|n| (draft("task.created"), task_effect(&format!("{prefix} {n}"), ""))).collect();
    workspace.commit_batch(events).unwrap();
}

#[test]
fn three_devices_editing_apart_converge_over_p2p_alone() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    {
        let mut a = init(dirs[0].path());
        join(&mut a, dirs[1].path(), "b");
        join(&mut a, dirs[2].path(), "c");
    }
    for (dir, name) in dirs.iter().zip(["a", "b", "c"]) {
        add_tasks(dir.path(), name, 30);
        add_task(&mut open(dir.path()), &format!("{name} alone"), "");
    }
    let a = Serving::start(dirs[0].path());
    let c = Serving::start(dirs[2].path());
    // b carries between a and c, editing between its syncs.
    assert_eq!(synced(dirs[1].path(), &a.ticket)["converged"], true);
    add_task(&mut open(dirs[1].path()), "b between", "");
    assert_eq!(synced(dirs[1].path(), &c.ticket)["converged"], true);
    assert_eq!(synced(dirs[1].path(), &a.ticket)["converged"], true);
    a.stop();
    c.stop();
    let mut all: Vec<Workspace> = dirs.iter().map(|dir| open(dir.path())).collect();
    let expected = heads(&mut all[0]);
    for workspace in &mut all {
        assert_eq!(heads(workspace), expected);
        assert_eq!(workspace.list(Collection::Tasks).unwrap().len(), 3 * 31 + 1);
    }
}

fn succeeded(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// `adiuva sync` through the relay.
fn relay_sync(dir: &Path) {
    assert!(succeeded(adiuva(dir, &["sync"]).output().unwrap()).starts_with("synced:"));
}

#[test]
fn three_devices_one_pair_over_p2p_the_other_through_the_relay_converge() {
    let mut relay = relay_common::Relay::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b, c] = [dirs[0].path(), dirs[1].path(), dirs[2].path()];
    {
        let email = "p2p-and-relay@example.com";
        let mut first = relay_common::first_device(&mut relay, a, email);
        let mut second = relay_common::join(&mut first, &relay, b, email, "b");
        // c never speaks to the relay: b is its only link.
        join(&mut first, c, "c");
        relay_common::sync(&mut first);
        relay_common::sync(&mut second);
    }
    for round in 0..3 {
        // All three edit at once, each in its own processes, apart.
        std::thread::scope(|scope| {
            for (dir, name) in [(a, "a"), (b, "b"), (c, "c")] {
                scope.spawn(move || {
                    for n in 0..2 {
                        succeeded(adiuva(dir, &["task", "add", &format!("{name} {round}.{n}")]).output().unwrap());
                    }
                });
            }
        });
        // a syncs through the relay while b syncs with c directly, and then through the relay.
        let serving = Serving::start(c);
        std::thread::scope(|scope| {
            scope.spawn(|| relay_sync(a));
            scope.spawn(|| {
                assert_eq!(synced(b, &serving.ticket)["converged"], true);
                relay_sync(b);
            });
        });
        serving.stop();
    }
    // Settling: b takes a's last changes from the relay, carries them to c, brings c's back
    // and passes them on to a.
    relay_sync(b);
    let serving = Serving::start(c);
    assert_eq!(synced(b, &serving.ticket)["converged"], true);
    serving.stop();
    relay_sync(b);
    relay_sync(a);
    let mut all: Vec<relay_common::Snapshot> =
        dirs.iter().map(|dir| relay_common::snapshot(&mut open(dir.path()))).collect();
    assert_eq!(all[0].tasks.len(), 3 * 3 * 2, "{:?}", all[0].tasks);
    let first = all.remove(0);
    for other in all {
        assert_eq!(other, first);
    }
}

#[test]
fn a_device_invited_over_p2p_joins_with_no_relay_and_a_forged_ticket_is_refused() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, b, forger) = (dirs[0].path(), dirs[1].path().join("joined"), dirs[2].path());
    add_task(&mut init(a), "written before the invite", "");
    let mut inviter =
        adiuva(a, &["device", "invite", "--p2p"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(inviter.stdout.take().unwrap());
    let mut ticket = String::new();
    stdout.read_line(&mut ticket).unwrap();
    let ticket = ticket.trim();
    assert!(ticket.starts_with("adiuva-join-p2p-1-adiuva-invite-1-"), "{ticket:?}");

    // The invitation's secret changed: refused, and nothing created.
    let secret_at = "adiuva-join-p2p-1-adiuva-invite-1-".len() + 70;
    let flipped = if ticket.as_bytes()[secret_at] == b'0' { "1" } else { "0" };
    let forged = format!("{}{flipped}{}", &ticket[..secret_at], &ticket[secret_at + 1..]);
    let refused = adiuva(forger, &["device", "join", &forged]).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invite.unauthentic"), "{stderr}");
    assert!(!forger.join("store").exists());

    let joined =
        succeeded(adiuva(&b, &["device", "join", ticket, "--device-name", "joined-over-p2p"]).output().unwrap());
    assert!(joined.contains("joined workspace"), "{joined}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(inviter.wait().unwrap().success(), "the inviter failed");
    assert!(rest.contains("joined"), "{rest}");
    let devices: serde_json::Value =
        serde_json::from_str(&succeeded(adiuva(&b, &["device", "list", "--json"]).output().unwrap())).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 2, "{devices}");
    let (mut a, mut b) = (open(a), open(&b));
    assert_eq!(heads(&mut a), heads(&mut b));
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), 1);
}

#[test]
fn a_removed_device_is_refused_and_the_refusal_is_logged_with_its_id() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let removed_id = {
        let mut a = init(dirs[0].path());
        let removed = join(&mut a, dirs[1].path(), "removed");
        let id = removed.device_id();
        a.remove_device(id).unwrap();
        id
    };
    add_task(&mut open(dirs[1].path()), "after its removal", "");
    let before = heads(&mut open(dirs[0].path()));
    let a = Serving::start(dirs[0].path());
    let output = sync(dirs[1].path(), &a.ticket);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[peer.refused]"), "{stderr}");
    let log = a.stop();
    assert!(log.contains("refused a peer") && log.contains(&removed_id.to_string()), "{log}");
    assert_eq!(heads(&mut open(dirs[0].path())), before);
}

#[test]
fn sigkill_of_either_side_mid_sync_loses_nothing_and_the_next_sync_completes() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    {
        let mut a = init(dirs[0].path());
        join(&mut a, dirs[1].path(), "b");
    }
    let mut delay = 7u64;
    for round in 0..4 {
        add_tasks(dirs[0].path(), &format!("a round {round}"), 2000);
        add_tasks(dirs[1].path(), &format!("b round {round}"), 500);
        // The dialer killed.
        let a = Serving::start_with_stall(dirs[0].path(), IMPATIENT);
        delay = (delay * 37 + 11) % 200;
        let mut dialer = adiuva(dirs[1].path(), &["sync", "--peer", &a.ticket])
            .env("ADIUVA_PEER_STALL_SECS", IMPATIENT)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        dialer.kill().unwrap();
        dialer.wait().unwrap();
        // The listener killed.
        let output = adiuva(dirs[1].path(), &["sync", "--peer", &a.ticket])
            .env("ADIUVA_PEER_STALL_SECS", IMPATIENT)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay / 2 + 20));
        a.kill();
        let _ = output.wait_with_output().unwrap();
    }
    let a = Serving::start(dirs[0].path());
    let report = synced(dirs[1].path(), &a.ticket);
    assert_eq!(report["converged"], true, "{report}");
    let again = synced(dirs[1].path(), &a.ticket);
    assert_eq!(again["applied"], 0, "{again}");
    a.stop();
    let (mut a, mut b) = (open(dirs[0].path()), open(dirs[1].path()));
    assert_eq!(heads(&mut a), heads(&mut b));
    assert_eq!(a.list(Collection::Tasks).unwrap().len(), 4 * 2500);
    assert_eq!(b.list(Collection::Tasks).unwrap().len(), 4 * 2500);
}
