//! Relay throughput on loopback, each figure beside its baseline measured in the same run:
//! durable 1 KiB blob PUT/s and GET/s against the real `adiuva-server` (embedded backend,
//! release build), beside s3s-fs (an S3 server on a folder, which does not fsync) serving the
//! same blobs, and nginx serving them as static files; then the server's resident memory with
//! `RELAY_BENCH_SOCKETS` live WebSockets open beside the same process idle, and how long one
//! upload takes to reach all of them. `scripts/bench-relay` installs the baselines (s3s-fs,
//! Debian nginx) and runs this; results go to `BENCHMARKS.md`.
//!
//! Environment: `RELAY_BENCH_BLOBS` (default 50000), `RELAY_BENCH_CONCURRENCY` (default 64),
//! `RELAY_BENCH_SOCKETS` (default 1000).
//! Prints a table and one JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BLOB_BYTES: usize = 1024;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Pseudo-random 1 KiB blobs (ciphertext-like), distinct per index.
fn blob(index: usize) -> Vec<u8> {
    let mut out = vec![0u8; BLOB_BYTES];
    blake3::Hasher::new().update(&index.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// A minimal HTTP/1.1 keep-alive client: one request at a time per connection, so the figures
/// measure the servers, not a client library.
struct Connection {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    async fn open(address: &str) -> Self {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream: BufReader::new(stream), host: address.to_owned() }
    }

    async fn request(&mut self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n", self.host, body.len());
        if let Some(token) = token {
            head.push_str(&format!("authorization: Bearer {token}\r\n"));
        }
        if method != "GET" {
            head.push_str("content-type: application/octet-stream\r\n");
        }
        head.push_str("\r\n");
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await.unwrap();
        (status, body)
    }
}

/// Requests per second and p50/p99 latency of `count` operations run by `concurrency` workers.
struct Figure {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure<F, Fut>(count: usize, concurrency: usize, make_worker: F) -> Figure
where
    F: Fn() -> Fut,
    Fut: std::future::Future<
            Output = Box<dyn FnMut(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>,
        >,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut worker = make_worker().await;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return latencies;
                }
                let at = Instant::now();
                worker(index).await;
                latencies.push(at.elapsed());
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    Figure { per_second: count as f64 / elapsed.as_secs_f64(), p50_ms: at(0.5), p99_ms: at(0.99) }
}

type Worker = Box<dyn FnMut(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// A worker sending one request per index on its own kept-alive connection, about blob
/// `first + index`.
async fn http_worker(
    address: String,
    token: Option<String>,
    method: &'static str,
    (first, path): (usize, Arc<dyn Fn(usize) -> String + Send + Sync>),
    expect: &'static [u16],
) -> Worker {
    let connection = Arc::new(tokio::sync::Mutex::new(Connection::open(&address).await));
    Box::new(move |index| {
        let (connection, token, path) = (connection.clone(), token.clone(), path.clone());
        let index = first + index;
        Box::pin(async move {
            let body = if method == "PUT" { blob(index) } else { Vec::new() };
            let (status, answer) = connection.lock().await.request(method, &path(index), token.as_deref(), &body).await;
            assert!(
                expect.contains(&status),
                "{method} {}: {status} {}",
                path(index),
                String::from_utf8_lossy(&answer)
            );
            if method == "GET" {
                assert_eq!(answer.len(), BLOB_BYTES);
            }
        })
    })
}

fn spawn_relay(data: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_adiuva-server"))
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("ADIUVA_SERVER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().trim_start_matches("listening on ").to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(address: &str) {
    for _ in 0..300 {
        if std::net::TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {address}");
}

async fn json_call(address: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let mut connection = Connection::open(address).await;
    let bytes = body.to_string();
    let stream = connection.stream.get_mut();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(bytes.as_bytes()).await.unwrap();
    // Reuse the response reader of `request` by sending nothing more.
    let mut line = String::new();
    connection.stream.read_line(&mut line).await.unwrap();
    let mut length = 0usize;
    loop {
        line.clear();
        connection.stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut answer = vec![0u8; length];
    connection.stream.read_exact(&mut answer).await.unwrap();
    serde_json::from_slice(&answer).unwrap()
}

fn credentials() -> serde_json::Value {
    serde_json::json!({"email": "bench@example.com", "password": "benchmark password", "device_id": "11".repeat(32)})
}

/// A relay with an account able to send everything the benchmark sends (a team tier with
/// enough seats that the rate limit never applies), and a workspace.
async fn relay_session(data: &Path) -> (Child, String, String) {
    let credentials = credentials();
    let (mut child, address) = spawn_relay(data);
    json_call(&address, "/api/v1/auth/register", credentials.clone()).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_adiuva-server"))
        .arg("--data")
        .arg(data)
        .args(["admin", "set-tier", "bench@example.com", "team", "--seats", "1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (child, address) = spawn_relay(data);
    let session = json_call(&address, "/api/v1/auth/login", credentials).await;
    let token = session["access_token"].as_str().unwrap().to_owned();
    let mut connection = Connection::open(&address).await;
    let body = br#"{"id":"bench"}"#;
    let stream = connection.stream.get_mut();
    let head = format!(
        "POST /api/v1/workspaces HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut line = String::new();
    connection.stream.read_line(&mut line).await.unwrap();
    assert!(line.contains(" 201 "), "{line}");
    (child, address, token)
}

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("bench", "bench-secret", None, None, "bench"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn which(name: &str) -> Option<PathBuf> {
    let candidates = [format!("/usr/sbin/{name}"), format!("/usr/bin/{name}")];
    let home = std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/{name}")).unwrap_or_default();
    candidates.into_iter().chain([home]).map(PathBuf::from).find(|p| p.is_file())
}

/// The resident memory of a process, in MiB (`VmRSS`).
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// What the live sockets cost the relay.
struct LiveFigures {
    sockets: usize,
    idle_mib: f64,
    open_mib: f64,
    /// From one upload's answer to its head read on the last of the sockets.
    fan_out_ms: f64,
}

/// A fresh relay process on the benchmark's data: its memory idle (after a few requests), then
/// with `sockets` live WebSockets of the workspace open (each has sent its first head and the
/// relay has gone through a recheck round), then the time one upload takes to reach them all.
fn live_sockets(data: &Path, sockets: usize) -> LiveFigures {
    use tungstenite::client::IntoClientRequest;
    let (mut relay, address) = spawn_relay(data);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A fresh login: the first one's access token may have expired by now.
    let session = runtime.block_on(json_call(&address, "/api/v1/auth/login", credentials()));
    let token = session["access_token"].as_str().unwrap().to_owned();
    let token = token.as_str();
    let put = |index: usize| {
        runtime.block_on(async {
            let mut connection = Connection::open(&address).await;
            let path = format!("/api/v1/workspaces/bench/blobs/{}", blake3::hash(&blob(index)).to_hex());
            let (status, _) = connection.request("PUT", &path, Some(token), &blob(index)).await;
            assert_eq!(status, 201);
        })
    };
    put(20_000_000);
    std::thread::sleep(Duration::from_secs(3));
    let idle_mib = resident_mib(relay.id());
    let mut open = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let mut request = format!("ws://{address}/api/v1/workspaces/bench/live").into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let stream = std::net::TcpStream::connect(&address).unwrap();
        let (mut socket, _) = tungstenite::client(request, stream).unwrap();
        let first = socket.read().unwrap();
        assert!(first.to_text().unwrap().contains("\"seq\""), "{first:?}");
        open.push(socket);
    }
    // A recheck round (every 2 s) re-reads the head and the device for every socket.
    std::thread::sleep(Duration::from_secs(5));
    let open_mib = resident_mib(relay.id());
    let started = Instant::now();
    put(20_000_001);
    for socket in &mut open {
        let head = socket.read().unwrap();
        assert!(head.to_text().unwrap().contains("\"seq\""), "{head:?}");
    }
    let fan_out_ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(open);
    let _ = relay.kill();
    let _ = relay.wait();
    LiveFigures { sockets, idle_mib, open_mib, fan_out_ms }
}

fn main() {
    let count = env_number("RELAY_BENCH_BLOBS", 50_000);
    let concurrency = env_number("RELAY_BENCH_CONCURRENCY", 64);
    let sockets = env_number("RELAY_BENCH_SOCKETS", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // On disk (not a tmpfs), so fdatasync means what it says.
    let scratch = tempfile::Builder::new().prefix("relay-bench").tempdir_in("/var/tmp").unwrap();
    let mut results: Vec<(String, Figure)> = Vec::new();

    runtime.block_on(async {
        let (mut relay, address, token) = relay_session(&scratch.path().join("relay")).await;
        let put_path: Arc<dyn Fn(usize) -> String + Send + Sync> =
            Arc::new(|i| format!("/api/v1/workspaces/bench/blobs/{}", blake3::hash(&blob(i)).to_hex()));
        let figure = measure(count, concurrency, || http_worker(address.clone(), Some(token.clone()), "PUT", (0, put_path.clone()), &[201])).await;
        results.push(("relay durable PUT (group commit)".into(), figure));
        let figure = measure(count.min(2000), 1, || http_worker(address.clone(), Some(token.clone()), "PUT", (10_000_000, put_path.clone()), &[201])).await;
        results.push(("relay durable PUT, one at a time".into(), figure));
        let figure = measure(count, concurrency, || http_worker(address.clone(), Some(token.clone()), "GET", (0, put_path.clone()), &[200])).await;
        results.push(("relay GET".into(), figure));
        let _ = relay.kill();
        let _ = relay.wait();

        if let Some(s3s) = which("s3s-fs") {
            let port = free_port();
            let root = scratch.path().join("s3");
            std::fs::create_dir_all(&root).unwrap();
            let mut server = Command::new(s3s)
                .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "bench", "--secret-key", "bench-secret"])
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            wait_for(&format!("127.0.0.1:{port}"));
            let client = s3_client(&format!("http://127.0.0.1:{port}"));
            client.create_bucket().bucket("bench").send().await.unwrap();
            let make = |get: bool| {
                let client = client.clone();
                async move {
                    let worker: Worker = Box::new(move |index| {
                        let client = client.clone();
                        Box::pin(async move {
                            let key = blake3::hash(&blob(index)).to_hex().to_string();
                            if get {
                                let object = client.get_object().bucket("bench").key(key).send().await.unwrap();
                                assert_eq!(object.body.collect().await.unwrap().into_bytes().len(), BLOB_BYTES);
                            } else {
                                client.put_object().bucket("bench").key(key).body(blob(index).into()).send().await.unwrap();
                            }
                        })
                    });
                    worker
                }
            };
            results.push(("s3s-fs PUT (no fsync), aws-sdk-s3 client".into(), measure(count, concurrency, || make(false)).await));
            results.push(("s3s-fs GET, aws-sdk-s3 client".into(), measure(count, concurrency, || make(true)).await));
            let _ = server.kill();
            let _ = server.wait();
        } else {
            eprintln!("s3s-fs not installed: its baseline is left out (scripts/bench-relay installs it)");
        }

        if let Some(nginx) = which("nginx") {
            let port = free_port();
            let root = scratch.path().join("nginx");
            std::fs::create_dir_all(root.join("html")).unwrap();
            for index in 0..count {
                std::fs::write(root.join("html").join(blake3::hash(&blob(index)).to_hex().as_str()), blob(index)).unwrap();
            }
            let config = format!(
                "worker_processes 2;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{ worker_connections 1024; }}\n\
                 http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; \
                 fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp; \
                 server {{ listen 127.0.0.1:{port}; root {root}/html; }} }}\n",
                root = root.display()
            );
            std::fs::write(root.join("nginx.conf"), config).unwrap();
            let mut server = Command::new(nginx)
                .arg("-c")
                .arg(root.join("nginx.conf"))
                .arg("-p")
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let address = format!("127.0.0.1:{port}");
            wait_for(&address);
            let get_path: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(|i| format!("/{}", blake3::hash(&blob(i)).to_hex()));
            results.push(("nginx GET (static files)".into(), measure(count, concurrency, || http_worker(address.clone(), None, "GET", (0, get_path.clone()), &[200])).await));
            // SIGTERM, so the master stops its workers (SIGKILL would leave them running).
            Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
            let _ = server.wait();
        } else {
            eprintln!("nginx not installed: its baseline is left out (scripts/bench-relay installs it)");
        }
    });
    drop(runtime);
    let live = live_sockets(&scratch.path().join("relay"), sockets);

    println!(
        "{count} blobs of {BLOB_BYTES} B, {concurrency} connections, loopback, client and server on the same machine"
    );
    println!("{:<45} {:>12} {:>10} {:>10}", "", "req/s", "p50 ms", "p99 ms");
    for (name, figure) in &results {
        println!("{name:<45} {:>12.0} {:>10.3} {:>10.3}", figure.per_second, figure.p50_ms, figure.p99_ms);
    }
    println!(
        "relay resident memory: idle {:.1} MiB, with {} live sockets {:.1} MiB ({:.1} KiB per socket); one upload reached them all in {:.1} ms",
        live.idle_mib,
        live.sockets,
        live.open_mib,
        (live.open_mib - live.idle_mib) * 1024.0 / live.sockets as f64,
        live.fan_out_ms
    );
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|(name, f)| serde_json::json!({"name": name, "per_second": f.per_second.round(), "p50_ms": f.p50_ms, "p99_ms": f.p99_ms}))
        .collect();
    let live = serde_json::json!({"sockets": live.sockets, "idle_rss_mib": live.idle_mib, "open_rss_mib": live.open_mib, "fan_out_ms": live.fan_out_ms});
    println!("{}", serde_json::json!({"blobs": count, "concurrency": concurrency, "results": json, "live": live}));
}
