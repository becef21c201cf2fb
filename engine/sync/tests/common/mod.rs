//! The test harness (the desktop's relay tests share it): the real `adiuva-server` binary as a child process on a loopback port of
//! its own (kept across restarts, so a device's relay address stays the same), and devices as
//! real workspaces in temporary directories, signed in to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use adiuva_engine::{Effect, EventDraft, KeyProtection, ROOT_DOCUMENT, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub const PASSPHRASE: &str = "correct horse battery staple";
pub const PASSWORD: &str = "account password of the test";

/// The `adiuva-server` binary, built beside this test's binaries if it is not there yet (a
/// test of this package cannot name another package's binary; `cargo build` is a no-op when
/// it is up to date).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
    let binary = profile_dir.join("adiuva-server");
    let target_dir = profile_dir.parent().unwrap();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned()))
        .args(["build", "--quiet", "-p", "adiuva-server", "--bin", "adiuva-server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .unwrap();
    assert!(status.success(), "building adiuva-server failed");
    binary
}

/// A running relay; killed when dropped.
pub struct Relay {
    child: Option<Child>,
    binary: PathBuf,
    /// Where it stores: `--data DIR`, or the cloud backend's options.
    backend: Vec<String>,
    pub port: u16,
    pub data: PathBuf,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Relay {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A relay started with `extra` options too (e.g. `--read-grant-ttl 2`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut backend = vec!["--data".into(), data.to_string_lossy().into_owned()];
        backend.extend(extra.iter().map(|option| option.to_string()));
        let mut relay = Relay {
            child: None,
            binary: server_binary(),
            backend,
            port,
            data,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        relay.restart();
        relay
    }

    /// A relay on the cloud backend: a fresh database of the test PostgreSQL and a fresh bucket
    /// of the test S3 server (`scripts/test-servers`); its log beside `data`, which holds nothing
    /// else.
    pub fn start_cloud(cloud: &Cloud) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut relay = Relay {
            child: None,
            binary: server_binary(),
            backend: cloud.backend(),
            port,
            data,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        relay.restart();
        relay
    }

    /// Starts (again) on the same data directory and port.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.with_extension("log")).unwrap();
        for _ in 0..50 {
            let mut child = Command::new(&self.binary)
                .args(&self.backend)
                .args(["--listen", &format!("127.0.0.1:{}", self.port)])
                .stdout(Stdio::piped())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            if line.starts_with("listening on ") {
                self.child = Some(child);
                return;
            }
            // The port may still be held by the process just killed.
            let _ = child.wait();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the relay did not start on port {}", self.port);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|child| child.id()).unwrap()
    }

    /// SIGKILL (and reaps the process).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sets an account's tier (with the server stopped: its data directory is one process's).
    pub fn set_tier(&mut self, email: &str, tier: &str, seats: u32) {
        self.stop();
        let output = Command::new(&self.binary)
            .args(&self.backend)
            .args(["admin", "set-tier", email, tier, "--seats", &seats.to_string()])
            .output()
            .unwrap();
        assert!(output.status.success(), "set-tier: {}", String::from_utf8_lossy(&output.stderr));
        self.restart();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test S3 server and PostgreSQL `scripts/test-servers` started, with a database and a
/// bucket of this test's own.
pub struct Cloud {
    pub database_url: String,
    pub s3_endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// The bucket's files, and the database cluster's.
    pub bucket_dir: PathBuf,
    pub postgres_dir: PathBuf,
}

impl Cloud {
    /// From the environment `scripts/test-servers` exports; `None` (and a note) without it.
    pub fn from_env(test: &str) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(postgres_url), Some(s3_endpoint), Some(s3_dir), Some(postgres_dir)) = (
            var("ADIUVA_TEST_POSTGRES_URL"),
            var("ADIUVA_TEST_S3_ENDPOINT"),
            var("ADIUVA_TEST_S3_DIR"),
            var("ADIUVA_TEST_POSTGRES_DIR"),
        ) else {
            eprintln!("{test}: skipped, no test servers (run it under `source scripts/test-servers`)");
            return None;
        };
        let name = format!("sync_{}", ulid::Ulid::new().to_string().to_lowercase());
        let psql = ["/usr/lib/postgresql/15/bin/psql", "psql"]
            .into_iter()
            .find(|psql| Command::new(psql).arg("--version").output().is_ok())
            .expect("psql");
        let created = Command::new(psql)
            .args([postgres_url.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")])
            .status()
            .unwrap();
        assert!(created.success(), "creating the test database failed");
        let bucket = name.replace('_', "-");
        Some(Self {
            database_url: format!("{}/{name}", postgres_url.rsplit_once('/').unwrap().0),
            s3_endpoint,
            access_key: var("ADIUVA_TEST_S3_ACCESS_KEY").unwrap_or_default(),
            secret_key: var("ADIUVA_TEST_S3_SECRET_KEY").unwrap_or_default(),
            bucket_dir: PathBuf::from(s3_dir).join(&bucket),
            bucket,
            postgres_dir: PathBuf::from(postgres_dir),
        })
    }

    fn backend(&self) -> Vec<String> {
        [
            "--postgres",
            &self.database_url,
            "--s3-endpoint",
            &self.s3_endpoint,
            "--s3-bucket",
            &self.bucket,
            "--s3-access-key",
            &self.access_key,
            "--s3-secret-key",
            &self.secret_key,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

pub fn protection() -> KeyProtection {
    KeyProtection::Passphrase(Zeroizing::new(PASSPHRASE.into()))
}

pub fn open(dir: &Path) -> Workspace {
    Workspace::open(dir, || Some(Zeroizing::new(PASSPHRASE.into()))).unwrap()
}

/// A first device with an account (tier team, so quotas and rate limits stay out of the way)
/// that created the workspace on the relay.
pub fn first_device(relay: &mut Relay, dir: &Path, email: &str) -> Workspace {
    let mut workspace = Workspace::init(dir, protection(), "first").unwrap();
    adiuva_sync::sign_in(&mut workspace, &relay.url, email, PASSWORD, true).unwrap();
    relay.set_tier(email, "team", 100);
    // The tier is in the access token: sign in again for one that has it.
    adiuva_sync::sign_in(&mut workspace, &relay.url, email, PASSWORD, false).unwrap();
    workspace
}

/// Another device of `inviter`'s workspace, joined in memory and signed in to the account; it
/// may use the relay once a device already there has synced (which authorizes it).
pub fn join(inviter: &mut Workspace, relay: &Relay, dir: &Path, email: &str, name: &str) -> Workspace {
    let ticket = inviter.invite(chrono::Duration::minutes(10)).unwrap();
    let (pending, request) = Workspace::request_join(&ticket.encode(), name).unwrap();
    let acceptance = inviter.accept_join(&request).unwrap();
    let mut workspace = pending.complete(dir, protection(), &acceptance).unwrap();
    adiuva_sync::sign_in(&mut workspace, &relay.url, email, PASSWORD, false).unwrap();
    workspace
}

pub fn sync(workspace: &mut Workspace) -> adiuva_sync::SyncReport {
    adiuva_sync::sync_once(workspace, &mut |_| {}).unwrap()
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields must be an object"),
    }
}

fn draft(kind: &str) -> EventDraft {
    EventDraft::new(EventKind::new(kind).unwrap(), Actor::User)
}

pub fn add_task(workspace: &mut Workspace, title: &str) -> RecordId {
    let id = RecordId::new();
    let effect = Effect::CreateRecord {
        collection: Collection::Tasks,
        id,
        fields: fields(json!({"title": title, "description": "", "status": "todo", "priority": "medium",
                              "tags": [], "created_at": "2026-12-03T10:00:00Z"})),
    };
    workspace.commit(draft("task.created"), effect).unwrap();
    id
}

pub fn edit_task(workspace: &mut Workspace, id: RecordId, title: &str) {
    let effect = Effect::UpdateRecord { collection: Collection::Tasks, id, fields: fields(json!({"title": title})) };
    workspace.commit(draft("task.updated"), effect).unwrap();
}

pub fn add_note(workspace: &mut Workspace, title: &str, body: &str) -> RecordId {
    let id = RecordId::new();
    let effect = Effect::CreateRecord {
        collection: Collection::Notes,
        id,
        fields: fields(json!({"title": title, "body": body, "tags": [], "created_at": "2026-12-03T10:00:00Z"})),
    };
    workspace.commit(draft("note.created"), effect).unwrap();
    id
}

/// Every record of tasks and notes, and every document's heads: what two devices that
/// converged agree on.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub tasks: Vec<Value>,
    pub notes: Vec<Value>,
    pub heads: Vec<(String, Vec<String>)>,
}

pub fn snapshot(workspace: &mut Workspace) -> Snapshot {
    let tasks = workspace.list(Collection::Tasks).unwrap();
    let notes = workspace.list(Collection::Notes).unwrap();
    let mut heads = Vec::new();
    let mut names = workspace.document_names().unwrap();
    names.sort();
    for name in names {
        let mut document_heads: Vec<String> = workspace.heads(&name).unwrap().iter().map(|h| h.to_string()).collect();
        document_heads.sort();
        heads.push((name, document_heads));
    }
    Snapshot { tasks, notes, heads }
}

pub const ROOT: &str = ROOT_DOCUMENT;

/// Every file under `dir`, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
