//! The workspace key in a real OS keyring: a private D-Bus session bus with a real
//! gnome-keyring (Secret Service) on it, and the real `adiuva` binary. `scripts/test` installs
//! both (Debian packages `dbus` and `gnome-keyring`).

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Kills the helper processes even when an assertion fails.
struct Session {
    children: Vec<Child>,
    bus_address: String,
    home: tempfile::TempDir,
}

impl Drop for Session {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_session() -> Session {
    let home = tempfile::tempdir().unwrap();
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon (Debian package dbus) must be installed: scripts/test installs it");
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
    let mut session = Session { children: vec![bus], bus_address: address.trim().to_owned(), home };
    let mut keyring = Command::new("gnome-keyring-daemon")
        .args(["--foreground", "--unlock", "--components=secrets"])
        .env("DBUS_SESSION_BUS_ADDRESS", &session.bus_address)
        .env("HOME", session.home.path())
        .env("XDG_RUNTIME_DIR", session.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gnome-keyring-daemon (Debian package gnome-keyring) must be installed: scripts/test installs it");
    // The login keyring's password, on stdin as --unlock expects.
    keyring.stdin.take().unwrap().write_all(b"keyring password for the test").unwrap();
    session.children.push(keyring);
    wait_for_secret_service(&session);
    session
}

/// Waits until our daemon owns the Secret Service name. Asking before that would make the bus
/// start another, locked instance through D-Bus activation.
fn wait_for_secret_service(session: &Session) {
    let started = std::time::Instant::now();
    loop {
        let reply = Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &session.bus_address)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&reply.stdout).contains("boolean true") {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the Secret Service never came up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn adiuva(session: &Session, workspace: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adiuva"))
        .arg("--workspace")
        .arg(workspace)
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", &session.bus_address)
        .env("HOME", session.home.path())
        .env("XDG_RUNTIME_DIR", session.home.path())
        .env_remove("ADIUVA_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn succeeds(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_workspace_key_lives_in_the_os_keyring_and_nothing_asks_for_a_passphrase() {
    let session = start_session();
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    succeeds(adiuva(&session, &workspace, &["init", "--key-store", "keyring"]));
    let id = succeeds(adiuva(&session, &workspace, &["task", "add", "Kept by the keyring"]));
    let list = succeeds(adiuva(&session, &workspace, &["task", "list", "--json"]));
    assert!(list.contains(id.trim()) && list.contains("Kept by the keyring"), "{list}");

    // Without the keyring (no session bus), the workspace does not open, and says why.
    let output = Command::new(env!("CARGO_BIN_EXE_adiuva"))
        .args(["--workspace", workspace.to_str().unwrap(), "task", "list"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("ADIUVA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[key.keyring_unavailable]"));
}

#[test]
fn an_api_key_lives_in_the_os_keyring_where_there_is_one() {
    const KEY: &str = "sk-MARKER-keyring-5b8e0d2f71";
    let session = start_session();
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    succeeds(adiuva(&session, &workspace, &["init", "--key-store", "keyring"]));
    let mut add = Command::new(env!("CARGO_BIN_EXE_adiuva"));
    add.arg("--workspace")
        .arg(&workspace)
        .args(["llm", "add", "work", "--kind", "openai", "--model", "gpt-4o-mini"])
        .env("DBUS_SESSION_BUS_ADDRESS", &session.bus_address)
        .env("HOME", session.home.path())
        .env("XDG_RUNTIME_DIR", session.home.path())
        .env("ADIUVA_API_KEY", KEY)
        .stdin(Stdio::null());
    let added = succeeds(add.output().unwrap());
    assert!(added.contains("its key in the OS keyring"), "{added}");
    let list = succeeds(adiuva(&session, &workspace, &["llm", "list", "--json"]));
    assert!(list.contains("\"os_keyring\"") && !list.contains(KEY), "{list}");
    // Nothing under the workspace holds the key, sealed or not: it is the keyring's.
    let mut pending = vec![workspace.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "{}", entry.path().display());
            }
        }
    }
    succeeds(adiuva(&session, &workspace, &["llm", "remove", "work"]));
}
