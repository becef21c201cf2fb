//! The command line's side of the API: finding the workspace's daemon and running the
//! [`Service`] through it. Errors come back with the daemon's code and message, so a command
//! prints the same through the daemon as without it.

use std::io::BufRead;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use adiuva_engine::{DeviceInfo, LoggedEvent, WorkspaceStatus};
use adiuva_model::ErrorCode;
use adiuva_model::record::{Note, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ulid::Ulid;

use super::DaemonFile;
use super::api::{DaemonStatus, ImportLine, IndexLine};
use super::guard::{CORRELATION_HEADER, ErrorBody};
use super::llm_api::{AskLine, Chain};
use super::peers::{Listening, LiveRequest};
use crate::import::{ImportProgress, ImportReport};
use crate::llm::{AskRequest, NewProvider, ProviderInfo, ProviderList, TestReport, UsageReport};
use crate::peer::{PeerStatus, SessionView};
use crate::search::{IndexProgress, IndexReport, SearchAnswer, SearchRequest};
use crate::service::{
    DeviceRef, DeviceRemoval, DeviceRename, Error, LogQuery, NewNote, NewTask, RecordRef, Result, Service, SyncStatus,
    TaskDetail, TaskPatch, TaskQuery,
};

/// How long to wait for a daemon's port to accept: it is on this machine, so any answer is fast.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A daemon that answers, and the correlation id of this command.
pub struct Remote {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    correlation: Ulid,
}

impl Remote {
    /// The workspace's daemon, if one runs: its file is there and its port accepts. A file whose
    /// port does not accept is stale (or its daemon is stopping); the caller opens the workspace
    /// itself, which the lock decides.
    pub fn find(dir: &Path, correlation: Ulid) -> Option<Self> {
        let announced = DaemonFile::read(dir)?;
        TcpStream::connect_timeout(&announced.address, CONNECT_TIMEOUT).ok()?;
        let config = ureq::Agent::config_builder().http_status_as_error(false).proxy(None).build();
        Some(Self {
            agent: config.into(),
            base: format!("http://{}", announced.address),
            authorization: format!("Bearer {}", announced.token),
            correlation,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn headers<B>(&self, builder: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        builder.header("authorization", &self.authorization).header(CORRELATION_HEADER, self.correlation.to_string())
    }

    fn post(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.headers(self.agent.post(self.url(path)))
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &impl Serialize) -> Result<T> {
        let query = serde_urlencoded_query(query)?;
        answer(self.headers(self.agent.get(self.url(&format!("{path}{query}")))).call())
    }

    fn send<T: DeserializeOwned>(
        &self,
        builder: ureq::RequestBuilder<ureq::typestate::WithBody>,
        body: &impl Serialize,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(|e| unreachable_daemon(e.to_string()))?;
        answer(builder.header("content-type", "application/json").send(&body[..]))
    }

    /// The daemon's own status (`adiuva daemon status`).
    pub fn daemon_status(&self) -> Result<DaemonStatus> {
        self.get("/v1/daemon", &())
    }

    /// Syncs with the relay once, in the daemon (`adiuva sync` while it runs).
    pub fn sync_now(&self) -> Result<crate::relay::SyncOutcome> {
        answer(self.post("/v1/sync").send_empty())
    }

    /// Has the daemon stay connected to the peer `ticket` names (`sync --peer --live`); answers
    /// with the first session.
    pub fn peer_live_start(&self, ticket: &str) -> Result<SessionView> {
        self.send(self.post("/v1/peers/live"), &LiveRequest { ticket: ticket.to_owned() })
    }

    /// Ends the daemon's live connection to `device`, once it is closed.
    pub fn peer_live_stop(&self, device: &str) -> Result<PeerStatus> {
        answer(self.headers(self.agent.delete(self.url(&format!("/v1/peers/live/{}", encode(device))))).call())
    }

    /// Asks the daemon to stop; it does once the requests in flight are answered.
    pub fn stop(&self) -> Result<()> {
        answer(self.post("/v1/daemon/stop").send_empty())
    }
}

fn unreachable_daemon(detail: String) -> Error {
    Error::Reported { code: ErrorCode::DaemonUnreachable, message: format!("the daemon did not answer: {detail}") }
}

/// `?a=1&b=x` for a query struct (empty when it has no fields set).
fn serde_urlencoded_query(query: &impl Serialize) -> Result<String> {
    let value = serde_json::to_value(query).map_err(|e| unreachable_daemon(e.to_string()))?;
    let Some(fields) = value.as_object() else { return Ok(String::new()) };
    let pairs: Vec<String> = fields
        .iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            format!("{name}={}", encode(&text))
        })
        .collect();
    Ok(if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) })
}

/// Percent-encodes everything but unreserved characters, for a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn answer<T: DeserializeOwned>(
    response: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<T> {
    let mut response = response.map_err(|e| unreachable_daemon(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| unreachable_daemon(e.to_string()))?;
    // Routes that answer with no body (204, 202) give `()`.
    let bytes = if bytes.is_empty() { b"null".to_vec() } else { bytes };
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Error::Reported { code: body.error.code, message: body.error.message },
            Err(_) => unreachable_daemon(format!("status {status}")),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| unreachable_daemon(format!("unexpected answer: {e}")))
}

impl Service for Remote {
    fn add_task(&mut self, new: NewTask) -> Result<Task> {
        self.send(self.post("/v1/tasks"), &new)
    }

    fn list_tasks(&mut self, query: TaskQuery) -> Result<Vec<Task>> {
        self.get("/v1/tasks", &query)
    }

    fn show_task(&mut self, id: &str) -> Result<TaskDetail> {
        self.get(&format!("/v1/tasks/{}", encode(id)), &())
    }

    fn complete_task(&mut self, id: &str) -> Result<RecordRef> {
        answer(self.post(&format!("/v1/tasks/{}/done", encode(id))).send_empty())
    }

    fn edit_task(&mut self, id: &str, patch: TaskPatch) -> Result<RecordRef> {
        self.send(self.headers(self.agent.patch(self.url(&format!("/v1/tasks/{}", encode(id))))), &patch)
    }

    fn remove_task(&mut self, id: &str) -> Result<RecordRef> {
        answer(self.headers(self.agent.delete(self.url(&format!("/v1/tasks/{}", encode(id))))).call())
    }

    fn add_note(&mut self, new: NewNote) -> Result<Note> {
        self.send(self.post("/v1/notes"), &new)
    }

    fn list_notes(&mut self) -> Result<Vec<Note>> {
        self.get("/v1/notes", &())
    }

    fn log(&mut self, query: LogQuery) -> Result<Vec<LoggedEvent>> {
        self.get("/v1/log", &query)
    }

    fn status(&mut self) -> Result<WorkspaceStatus> {
        self.get("/v1/status", &())
    }

    fn sync_status(&mut self) -> Result<Option<SyncStatus>> {
        self.get("/v1/sync", &())
    }

    fn peer_status(&mut self) -> Result<PeerStatus> {
        self.get("/v1/peers", &())
    }

    fn set_peer_listening(&mut self, on: bool) -> Result<PeerStatus> {
        self.send(self.headers(self.agent.put(self.url("/v1/peers"))), &Listening { on })
    }

    fn import(
        &mut self,
        source: &str,
        content: Vec<u8>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport> {
        let path = format!("/v1/import?source={}", encode(source));
        let response = self
            .post(&path)
            .header("content-type", "application/x-ndjson")
            .send(&content[..])
            .map_err(|e| unreachable_daemon(e.to_string()))?;
        if !response.status().is_success() {
            return answer(Ok(response));
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| unreachable_daemon(e.to_string()))?;
            match serde_json::from_str(&line).map_err(|e| unreachable_daemon(format!("unexpected answer: {e}")))? {
                ImportLine::Progress(step) => progress(step),
                ImportLine::Done(report) => return Ok(report),
                ImportLine::Error(detail) => {
                    return Err(Error::Reported { code: detail.code, message: detail.message });
                }
            }
        }
        Err(unreachable_daemon("the import's answer ended early".into()))
    }

    fn compact(&mut self) -> Result<()> {
        answer(self.post("/v1/compact").send_empty())
    }

    fn list_devices(&mut self) -> Result<Vec<DeviceInfo>> {
        self.get("/v1/devices", &())
    }

    fn rename_device(&mut self, id: &str, rename: DeviceRename) -> Result<DeviceRef> {
        self.send(self.headers(self.agent.patch(self.url(&format!("/v1/devices/{}", encode(id))))), &rename)
    }

    fn remove_device(&mut self, id: &str) -> Result<DeviceRemoval> {
        answer(self.headers(self.agent.delete(self.url(&format!("/v1/devices/{}", encode(id))))).call())
    }

    fn llm_add(&mut self, new: NewProvider) -> Result<ProviderInfo> {
        self.send(self.post("/v1/llm/providers"), &new)
    }

    fn llm_list(&mut self) -> Result<ProviderList> {
        self.get("/v1/llm/providers", &())
    }

    fn llm_remove(&mut self, name: &str) -> Result<ProviderList> {
        answer(self.headers(self.agent.delete(self.url(&format!("/v1/llm/providers/{}", encode(name))))).call())
    }

    fn llm_set_default(&mut self, chain: Vec<String>) -> Result<ProviderList> {
        self.send(self.headers(self.agent.put(self.url("/v1/llm/chain"))), &Chain { names: chain })
    }

    fn llm_test(&mut self, name: &str) -> Result<TestReport> {
        answer(self.post(&format!("/v1/llm/providers/{}/test", encode(name))).send_empty())
    }

    fn llm_models(&mut self, name: &str) -> Result<Vec<String>> {
        self.get(&format!("/v1/llm/providers/{}/models", encode(name)), &())
    }

    fn llm_usage(&mut self) -> Result<UsageReport> {
        self.get("/v1/llm/usage", &())
    }

    fn ask(
        &mut self,
        request: AskRequest,
        on_event: &mut (dyn FnMut(&adiuva_llm::StreamEvent) + Send),
    ) -> Result<adiuva_llm::Completion> {
        let body = serde_json::to_vec(&request).map_err(|e| unreachable_daemon(e.to_string()))?;
        let response = self
            .post("/v1/ask")
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(|e| unreachable_daemon(e.to_string()))?;
        if !response.status().is_success() {
            return answer(Ok(response));
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| unreachable_daemon(e.to_string()))?;
            let line: AskLine =
                serde_json::from_str(&line).map_err(|e| unreachable_daemon(format!("unexpected answer: {e}")))?;
            if let Some(event) = &line.event {
                on_event(event);
            }
            if let Some(completion) = line.done {
                return Ok(completion);
            }
            if let Some(detail) = line.error {
                return Err(Error::Reported { code: detail.code, message: detail.message });
            }
        }
        Err(unreachable_daemon("the answer ended early".into()))
    }

    fn search(&mut self, request: SearchRequest) -> Result<SearchAnswer> {
        self.get("/v1/search", &request)
    }

    fn index_rebuild(&mut self, progress: &mut dyn FnMut(IndexProgress)) -> Result<IndexReport> {
        let response = self.post("/v1/index/rebuild").send_empty().map_err(|e| unreachable_daemon(e.to_string()))?;
        if !response.status().is_success() {
            return answer(Ok(response));
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| unreachable_daemon(e.to_string()))?;
            match serde_json::from_str(&line).map_err(|e| unreachable_daemon(format!("unexpected answer: {e}")))? {
                IndexLine::Progress(step) => progress(step),
                IndexLine::Done(report) => return Ok(report),
                IndexLine::Error(detail) => {
                    return Err(Error::Reported { code: detail.code, message: detail.message });
                }
            }
        }
        Err(unreachable_daemon("the rebuild's answer ended early".into()))
    }

    fn index_status(&mut self) -> Result<IndexReport> {
        self.get("/v1/index", &())
    }
}
