//! The test harness: the real `adiuva-server` binary as a child process on a free loopback
//! port, and a small HTTP client for its API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub const BINARY: &str = env!("CARGO_BIN_EXE_adiuva-server");

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub address: String,
    /// The data directory, for the embedded backend.
    pub data: PathBuf,
    pub log: PathBuf,
    /// Where it stores (`--data DIR`, or the cloud backend's options) and the rest.
    backend: Vec<String>,
    extra: Vec<String>,
    agent: ureq::Agent,
}

impl Server {
    /// Starts a server on the embedded backend in `data` (logging into `data.log`).
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let backend = vec!["--data".to_owned(), data.display().to_string()];
        Self::start_on(backend, data, &data.with_extension("log"), extra)
    }

    /// Starts a server with the given backend options.
    pub fn start_on(backend: Vec<String>, data: &Path, log: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, address) = spawn(&backend, log, &extra);
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Server { child, address, data: data.to_owned(), log: log.to_owned(), backend, extra, agent }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean stop.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the server stopped with {status}");
    }

    /// Starts again on the same data directory (a new port).
    pub fn restart(&mut self) {
        let (child, address) = spawn(&self.backend, &self.log, &self.extra);
        self.child = child;
        self.address = address;
    }

    /// Sets an account's tier with `adiuva-server admin set-tier`, with the server stopped
    /// (the embedded backend's data directory is one process's at a time).
    pub fn set_tier(&mut self, email: &str, tier: &str, seats: u32) {
        self.stop();
        self.admin_set_tier(email, tier, seats);
        self.restart();
    }

    /// `adiuva-server admin set-tier` on this server's backend, without stopping it.
    pub fn admin_set_tier(&self, email: &str, tier: &str, seats: u32) {
        let output = Command::new(BINARY)
            .args(&self.backend)
            .args(["admin", "set-tier", email, tier, "--seats", &seats.to_string()])
            .output()
            .unwrap();
        assert!(output.status.success(), "set-tier: {}", String::from_utf8_lossy(&output.stderr));
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request; `body` is sent as JSON when it is a `Value`, else raw.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> Answer {
        self.call_with(method, path, token, body, &[])
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = self.url(path);
        let bearer = token.map(|t| format!("Bearer {t}"));
        let (content_type, bytes): (Option<&str>, Vec<u8>) = match body {
            Body::None => (None, Vec::new()),
            Body::Json(value) => (Some("application/json"), value.to_string().into_bytes()),
            Body::RawJson(text) => (Some("application/json"), text.as_bytes().to_vec()),
            Body::Bytes(bytes) => (Some("application/octet-stream"), bytes),
        };
        let response = match method {
            "GET" | "DELETE" => {
                let mut request = if method == "GET" { self.agent.get(&url) } else { self.agent.delete(&url) };
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                request.call()
            }
            _ => {
                let mut request = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => panic!("method {other}"),
                };
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type);
                }
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                request.send(&bytes[..])
            }
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect();
        let bytes = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec().unwrap_or_default();
        Answer { status, headers, bytes }
    }
}

impl Server {
    /// Sends `body` as one raw request (ignoring a connection the server closes before reading
    /// it all, as it may for an oversized body) and returns the answer's status and body.
    pub fn raw(&self, method: &str, path: &str, token: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.address,
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let json = text.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
        (status, json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(backend: &[String], log: &Path, extra: &[String]) -> (Child, String) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = Command::new(BINARY)
        .args(backend)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, address)
}

pub enum Body {
    None,
    Json(Value),
    RawJson(&'static str),
    Bytes(Vec<u8>),
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.bytes)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.bytes));
        self
    }

    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
        self
    }
}

/// A device identity: an Ed25519 key (its public half is the device id).
pub struct TestDevice {
    pub key: ed25519_dalek::SigningKey,
}

impl TestDevice {
    pub fn new(seed: u8) -> Self {
        Self { key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]) }
    }

    pub fn id(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn blob_id(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A session's tokens.
#[derive(Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
}

impl Session {
    fn from(answer: &Answer) -> Self {
        let json = answer.json();
        Session {
            access: json["access_token"].as_str().unwrap().to_owned(),
            refresh: json["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

pub fn register(server: &Server, email: &str, device: &TestDevice) -> Session {
    let answer = server
        .call(
            "POST",
            "/api/v1/auth/register",
            None,
            Body::Json(json!({"email": email, "password": PASSWORD, "device_id": device.id()})),
        )
        .expect(201);
    Session::from(&answer)
}

pub fn login(server: &Server, email: &str, device: &TestDevice) -> Session {
    let answer = server
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Body::Json(json!({"email": email, "password": PASSWORD, "device_id": device.id()})),
        )
        .expect(200);
    Session::from(&answer)
}

pub fn refresh(server: &Server, session: &Session) -> Answer {
    server.call("POST", "/api/v1/auth/refresh", None, Body::Json(json!({"refresh_token": session.refresh})))
}

/// An account with `tier`, its first device's session and a workspace `ws` that device created.
pub fn account_with_workspace(
    server: &mut Server,
    email: &str,
    tier: &str,
    seats: u32,
    device: &TestDevice,
    ws: &str,
) -> Session {
    register(server, email, device);
    server.set_tier(email, tier, seats);
    let session = login(server, email, device);
    server.call("POST", "/api/v1/workspaces", Some(&session.access), Body::Json(json!({"id": ws}))).expect(201);
    session
}

pub fn put_blob(server: &Server, token: &str, ws: &str, bytes: &[u8]) -> Answer {
    server.call(
        "PUT",
        &format!("/api/v1/workspaces/{ws}/blobs/{}", blob_id(bytes)),
        Some(token),
        Body::Bytes(bytes.to_vec()),
    )
}

/// A fresh temporary directory and a data directory inside it.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

/// The real S3-compatible server and PostgreSQL that `scripts/test` starts, from its
/// environment variables; `None` (with the reason printed) when they are not given.
pub struct CloudServers {
    pub postgres_url: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// Their files, for searching what they hold.
    pub s3_dir: Option<PathBuf>,
    pub postgres_dir: Option<PathBuf>,
}

impl CloudServers {
    pub fn from_env(test: &str) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("ADIUVA_TEST_POSTGRES_URL"), var("ADIUVA_TEST_S3_ENDPOINT")) {
            (Some(postgres_url), Some(s3_endpoint)) => Some(Self {
                postgres_url,
                s3_endpoint,
                s3_access_key: var("ADIUVA_TEST_S3_ACCESS_KEY").unwrap_or_default(),
                s3_secret_key: var("ADIUVA_TEST_S3_SECRET_KEY").unwrap_or_default(),
                s3_dir: var("ADIUVA_TEST_S3_DIR").map(PathBuf::from),
                postgres_dir: var("ADIUVA_TEST_POSTGRES_DIR").map(PathBuf::from),
            }),
            _ => {
                eprintln!(
                    "SKIPPED {test}: ADIUVA_TEST_POSTGRES_URL and ADIUVA_TEST_S3_ENDPOINT are not set \
                     (scripts/test starts PostgreSQL and s3s-fs and sets them)"
                );
                None
            }
        }
    }

    /// A new, empty database on the server; its connection string.
    pub fn fresh_database(&self) -> String {
        let name = format!("relay_{}", ulid::Ulid::new().to_string().to_lowercase());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&self.postgres_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        });
        let base = self.postgres_url.rsplit_once('/').unwrap().0;
        format!("{base}/{name}")
    }

    /// The server options of the cloud backend over `database` and `bucket`.
    pub fn backend(&self, database: &str, bucket: &str) -> Vec<String> {
        [
            "--postgres",
            database,
            "--s3-endpoint",
            &self.s3_endpoint,
            "--s3-bucket",
            bucket,
            "--s3-access-key",
            &self.s3_access_key,
            "--s3-secret-key",
            &self.s3_secret_key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}
