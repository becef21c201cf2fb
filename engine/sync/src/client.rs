//! The relay's routes, one method each, over blocking HTTP (ureq): requests and answers as the
//! relay defines them (`sync-server/src/*.rs`), every refusal turned into a typed
//! [`SyncError::Relay`] carrying the relay's code, every transport failure into
//! [`SyncError::Offline`], and every answer that is not the documented shape into
//! [`SyncError::Malformed`].

use std::time::Duration;

use adiuva_model::api::BackupMetadata;
use adiuva_model::{DeviceId, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Result, SyncError};

/// The largest answer read (a blob is at most 16 MiB).
const MAX_ANSWER: u64 = 17 * 1024 * 1024;
/// How long one request may take in all (a 16 MiB blob on a slow link included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header a read grant travels in (the relay's `grants::READ_GRANT_HEADER`).
const READ_GRANT_HEADER: &str = "x-adiuva-read-grant";

/// A session with the relay: tokens for one account and device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
}

/// The account as the relay shows it to its owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountView {
    pub email: String,
    pub tier: String,
    pub usage_bytes: u64,
    pub quota_bytes: Option<u64>,
}

/// Where a blob sits in the workspace's sequence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobEntry {
    pub seq: u64,
    pub id: String,
    pub size: u64,
}

/// One page of the workspace's sequence after a cursor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesPage {
    pub changes: Vec<BlobEntry>,
    pub head: u64,
}

/// The recovery record, with a challenge for the calling device.
#[derive(Clone, Debug, Deserialize)]
pub struct RecoveryView {
    pub wrapped_key: String,
    pub verifier: String,
    pub challenge: String,
}

/// A read grant: this device may read the workspace's sequence until `expires_at`.
#[derive(Clone, Debug, Deserialize)]
pub struct ReadGrant {
    pub grant: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A join request posted to one of the workspace's invites, as the relay lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct JoinView {
    pub invite_id: String,
    /// The device that posted it.
    pub device: String,
    /// The engine's join request, hex.
    pub payload: String,
    /// Whether the device is authorized already (the request was answered).
    pub authorized: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A relay at one address.
pub struct RelayClient {
    agent: ureq::Agent,
    server: String,
}

/// An answer's status, `Retry-After` and body.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

enum Body<'a> {
    None,
    Json(serde_json::Value),
    Bytes(&'a [u8]),
}

impl RelayClient {
    /// A client of the relay at `server` (`http://host:port`, no trailing slash needed).
    pub fn new(server: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build();
        Self { agent: config.into(), server: server.trim_end_matches('/').to_owned() }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>, body: Body<'_>) -> Result<Answer> {
        self.send(method, path, token, None, body)
    }

    /// A request, with a read grant (`recovery/read`) beside the token if `grant` is given.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        grant: Option<&str>,
        body: Body<'_>,
    ) -> Result<Answer> {
        let url = format!("{}/api/v1{path}", self.server);
        let offline =
            |error: ureq::Error| SyncError::Offline { server: self.server.clone(), detail: error.to_string() };
        let bearer = token.map(|token| format!("Bearer {token}"));
        let response = match body {
            Body::None => {
                let mut request = match method {
                    "DELETE" => self.agent.delete(&url),
                    _ => self.agent.get(&url),
                };
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                if let Some(grant) = grant {
                    request = request.header(READ_GRANT_HEADER, grant);
                }
                request.call()
            }
            body => {
                let mut request = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                if let Some(bearer) = &bearer {
                    request = request.header("authorization", bearer);
                }
                match body {
                    Body::Json(value) => {
                        request.header("content-type", "application/json").send(value.to_string().as_bytes())
                    }
                    Body::Bytes(bytes) => request.header("content-type", "application/octet-stream").send(bytes),
                    Body::None => request.send_empty(),
                }
            }
        };
        let mut response = response.map_err(offline)?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|value| value.to_str().ok()?.trim().parse().ok());
        let body = response.body_mut().with_config().limit(MAX_ANSWER).read_to_vec().map_err(offline)?;
        Ok(Answer { status, retry_after, body })
    }

    /// Creates an account (`register`) or signs in (`login`) for `device`.
    pub fn sign_in(&self, register: bool, email: &str, password: &str, device: DeviceId) -> Result<Session> {
        let (path, expected) = if register { ("/auth/register", 201) } else { ("/auth/login", 200) };
        let body = json!({"email": email, "password": password, "device_id": device.to_string()});
        let answer = self.request("POST", path, None, Body::Json(body))?;
        json(answer, &[expected], path)
    }

    /// A new access token and the next refresh token of the session.
    pub fn refresh(&self, refresh_token: &str) -> Result<Session> {
        let answer =
            self.request("POST", "/auth/refresh", None, Body::Json(json!({"refresh_token": refresh_token})))?;
        json(answer, &[200], "/auth/refresh")
    }

    /// Whether the relay answers at all (no token needed).
    pub fn health(&self) -> Result<()> {
        let answer = self.request("GET", "/health", None, Body::None)?;
        expect(answer, &[200], "/health").map(drop)
    }

    /// Revokes the session `token` belongs to (its refresh token with it).
    pub fn logout(&self, token: &str) -> Result<()> {
        let answer = self.request("POST", "/auth/logout", Some(token), Body::Bytes(&[]))?;
        expect(answer, &[204], "/auth/logout").map(drop)
    }

    pub fn me(&self, token: &str) -> Result<AccountView> {
        let answer = self.request("GET", "/auth/me", Some(token), Body::None)?;
        json(answer, &[200], "/auth/me")
    }

    /// Creates workspace `ws` with the calling device as its first; `false` if the account
    /// already has it.
    pub fn create_workspace(&self, token: &str, ws: &str) -> Result<bool> {
        let answer = self.request("POST", "/workspaces", Some(token), Body::Json(json!({"id": ws})))?;
        match expect(answer, &[200, 201], "/workspaces") {
            Ok(_) => Ok(true),
            Err(SyncError::Relay { code: ErrorCode::RelayWorkspaceExists, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub fn authorize_device(&self, token: &str, ws: &str, device: &DeviceId) -> Result<()> {
        let answer =
            self.request("PUT", &format!("/workspaces/{ws}/devices/{device}"), Some(token), Body::Bytes(&[]))?;
        expect(answer, &[201, 204], "devices").map(drop)
    }

    /// Revokes `device` (nothing if it is not authorized).
    pub fn revoke_device(&self, token: &str, ws: &str, device: &DeviceId) -> Result<()> {
        let answer = self.request("DELETE", &format!("/workspaces/{ws}/devices/{device}"), Some(token), Body::None)?;
        match expect(answer, &[204], "devices") {
            Err(SyncError::Relay { code: ErrorCode::RelayNotFound, .. }) => Ok(()),
            other => other.map(drop),
        }
    }

    pub fn put_envelope(&self, token: &str, ws: &str, device: &DeviceId, epoch: u32, bytes: &[u8]) -> Result<()> {
        let path = format!("/workspaces/{ws}/key-envelopes/{device}/{epoch}");
        let answer = self.request("PUT", &path, Some(token), Body::Bytes(bytes))?;
        expect(answer, &[204], "key-envelopes").map(drop)
    }

    /// The envelope of `epoch` for `device`, if the relay has one.
    pub fn get_envelope(&self, token: &str, ws: &str, device: &DeviceId, epoch: u32) -> Result<Option<Vec<u8>>> {
        let path = format!("/workspaces/{ws}/key-envelopes/{device}/{epoch}");
        let answer = self.request("GET", &path, Some(token), Body::None)?;
        match expect(answer, &[200], "key-envelopes") {
            Ok(bytes) => Ok(Some(bytes)),
            Err(SyncError::Relay { code: ErrorCode::RelayNotFound, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Opens invite `invite_id` for `ws` until `expires_at`; a joiner must show the proof whose
    /// BLAKE3 is `proof_hash`.
    pub fn create_invite(
        &self,
        token: &str,
        ws: &str,
        invite_id: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        proof_hash: &str,
    ) -> Result<()> {
        let body = json!({"invite_id": invite_id, "expires_at": expires_at, "proof_hash": proof_hash});
        let answer = self.request("POST", &format!("/workspaces/{ws}/invites"), Some(token), Body::Json(body))?;
        expect(answer, &[201], "invites").map(drop)
    }

    /// Posts a join request to invite `invite_id` (single use: the relay marks it used).
    pub fn post_join(&self, token: &str, invite_id: &str, proof: &[u8], payload: &[u8], mac: &str) -> Result<()> {
        let hex = adiuva_model::hex::encode;
        let body = json!({"proof": hex(proof), "payload": hex(payload), "mac": mac});
        let answer = self.request("POST", &format!("/invites/{invite_id}/join"), Some(token), Body::Json(body))?;
        expect(answer, &[201], "invites/join").map(drop)
    }

    /// The join requests posted to the workspace's invites.
    pub fn joins(&self, token: &str, ws: &str) -> Result<Vec<JoinView>> {
        let answer = self.request("GET", &format!("/workspaces/{ws}/joins"), Some(token), Body::None)?;
        json(answer, &[200], "joins")
    }

    /// Records a restore point made of blobs the workspace holds.
    pub fn put_backup(
        &self,
        token: &str,
        ws: &str,
        checksum: &str,
        size_bytes: u64,
        blob_ids: &[String],
    ) -> Result<BackupMetadata> {
        let body = json!({"workspace": ws, "version": 1, "checksum": checksum, "chunk_count": blob_ids.len(),
                          "size_bytes": size_bytes, "blob_ids": blob_ids});
        let answer = self.request("PUT", "/backup", Some(token), Body::Json(body))?;
        json(answer, &[201], "backup")
    }

    /// The workspace's restore points, oldest first, without their blob ids.
    pub fn backup_history(&self, token: &str, ws: &str) -> Result<Vec<BackupMetadata>> {
        let answer = self.request("GET", &format!("/backup/history?workspace={ws}"), Some(token), Body::None)?;
        json(answer, &[200], "backup/history")
    }

    /// One restore point, with its blob ids.
    pub fn backup(&self, token: &str, id: &str) -> Result<BackupMetadata> {
        let answer = self.request("GET", &format!("/backup/{id}"), Some(token), Body::None)?;
        json(answer, &[200], "backup")
    }

    pub fn put_recovery(&self, token: &str, ws: &str, wrapped: &[u8], verifier: &DeviceId) -> Result<()> {
        let body = json!({"wrapped_key": adiuva_model::hex::encode(wrapped), "verifier": verifier.to_string()});
        let answer = self.request("PUT", &format!("/workspaces/{ws}/recovery"), Some(token), Body::Json(body))?;
        expect(answer, &[204], "recovery").map(drop)
    }

    pub fn get_recovery(&self, token: &str, ws: &str) -> Result<RecoveryView> {
        let answer = self.request("GET", &format!("/workspaces/{ws}/recovery"), Some(token), Body::None)?;
        json(answer, &[200], "recovery")
    }

    /// A read grant for `ws` from a proof of the recovery phrase: this device may then read
    /// the sequence and its blobs ([`Self::changes_granted`], [`Self::get_blob_granted`]) until
    /// it expires, without being authorized.
    pub fn read_grant(&self, token: &str, ws: &str, challenge: &str, signature: &[u8]) -> Result<ReadGrant> {
        let body = json!({"challenge": challenge, "signature": adiuva_model::hex::encode(signature)});
        let path = format!("/workspaces/{ws}/recovery/read");
        let answer = self.request("POST", &path, Some(token), Body::Json(body))?;
        json(answer, &[201], "recovery/read")
    }

    pub fn authorize_by_recovery(&self, token: &str, ws: &str, challenge: &str, signature: &[u8]) -> Result<()> {
        let body = json!({"challenge": challenge, "signature": adiuva_model::hex::encode(signature)});
        let path = format!("/workspaces/{ws}/recovery/authorize");
        let answer = self.request("POST", &path, Some(token), Body::Json(body))?;
        expect(answer, &[201], "recovery/authorize").map(drop)
    }

    /// Uploads a blob (its id is its BLAKE3 hash); a retry of the same bytes returns the number
    /// the first upload got.
    pub fn put_blob(&self, token: &str, ws: &str, bytes: &[u8]) -> Result<BlobEntry> {
        let id = blake3::hash(bytes).to_hex().to_string();
        let answer = self.request("PUT", &format!("/workspaces/{ws}/blobs/{id}"), Some(token), Body::Bytes(bytes))?;
        let entry: BlobEntry = json(answer, &[200, 201], "blobs")?;
        if entry.id != id {
            return Err(SyncError::Malformed {
                what: "blobs".into(),
                detail: "the relay acknowledged another id".into(),
            });
        }
        Ok(entry)
    }

    /// Blob `id`, checked against its id.
    pub fn get_blob(&self, token: &str, ws: &str, id: &str) -> Result<Vec<u8>> {
        self.get_blob_granted(token, None, ws, id)
    }

    /// [`Self::get_blob`] with a read grant, if given.
    pub fn get_blob_granted(&self, token: &str, grant: Option<&str>, ws: &str, id: &str) -> Result<Vec<u8>> {
        let answer = self.send("GET", &format!("/workspaces/{ws}/blobs/{id}"), Some(token), grant, Body::None)?;
        let bytes = expect(answer, &[200], "blobs")?;
        if blake3::hash(&bytes).to_hex().as_str() != id {
            return Err(SyncError::BlobCorrupt { id: id.to_owned() });
        }
        Ok(bytes)
    }

    /// The sequence after `after`, checked: numbered `after + 1, after + 2, …` without a gap or a
    /// repeat, each id a blob id, and not stopping short of the head it announces unless full.
    pub fn changes(&self, token: &str, ws: &str, after: u64) -> Result<ChangesPage> {
        self.changes_granted(token, None, ws, after)
    }

    /// [`Self::changes`] with a read grant, if given.
    pub fn changes_granted(&self, token: &str, grant: Option<&str>, ws: &str, after: u64) -> Result<ChangesPage> {
        self.page(token, grant, ws, &format!("after={after}"), after)
    }

    /// Entry number `seq` of the workspace's sequence, alone (`None` if the relay lists
    /// nothing there).
    pub fn entry_at(&self, token: &str, ws: &str, seq: u64) -> Result<Option<BlobEntry>> {
        let after = seq.saturating_sub(1);
        Ok(self.page(token, None, ws, &format!("after={after}&limit=1"), after)?.changes.into_iter().next())
    }

    fn page(&self, token: &str, grant: Option<&str>, ws: &str, query: &str, after: u64) -> Result<ChangesPage> {
        let answer = self.send("GET", &format!("/workspaces/{ws}/changes?{query}"), Some(token), grant, Body::None)?;
        check_page(after, json(answer, &[200], "changes")?)
    }
}

/// The answer's body if its status is one of `expected`, else the relay's typed refusal.
pub fn expect(answer: Answer, expected: &[u16], what: &str) -> Result<Vec<u8>> {
    if expected.contains(&answer.status) {
        return Ok(answer.body);
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(body) => {
            let code =
                serde_json::from_value(serde_json::Value::String(body.error.code)).unwrap_or(ErrorCode::SyncRelayError);
            (code, body.error.message)
        }
        Err(_) if answer.status >= 500 => (ErrorCode::RelayStorage, format!("{what}: the relay failed")),
        Err(_) => {
            return Err(SyncError::Malformed {
                what: what.to_owned(),
                detail: format!("status {} without an error body", answer.status),
            });
        }
    };
    Err(SyncError::Relay { status: answer.status, code, message, retry_after: answer.retry_after })
}

/// The answer's body as a `T` if its status is one of `expected`, else the relay's typed refusal.
pub fn json<T: DeserializeOwned>(answer: Answer, expected: &[u16], what: &str) -> Result<T> {
    let body = expect(answer, expected, what)?;
    serde_json::from_slice(&body)
        .map_err(|error| SyncError::Malformed { what: what.to_owned(), detail: adiuva_engine::json_error(&error) })
}

/// `page`, the sequence after `after`, checked: numbered `after + 1, after + 2, …` without a
/// gap or a repeat, each id a blob id, and not stopping short of the head it announces unless
/// full.
pub fn check_page(after: u64, page: ChangesPage) -> Result<ChangesPage> {
    let mut reached = after;
    for entry in &page.changes {
        let due = reached
            .checked_add(1)
            .ok_or_else(|| SyncError::PageInvalid { cursor: after, detail: "numbers past the largest one".into() })?;
        if entry.seq != due {
            let detail = if entry.seq <= after {
                format!("number {} was pulled already (a replayed page)", entry.seq)
            } else {
                format!("number {} where {due} was due", entry.seq)
            };
            return Err(SyncError::PageInvalid { cursor: after, detail });
        }
        if entry.id.len() != 64 || !entry.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SyncError::PageInvalid { cursor: after, detail: format!("{:?} is not a blob id", entry.id) });
        }
        reached = due;
    }
    if page.changes.is_empty() && page.head > after {
        return Err(SyncError::PageTruncated { reached, head: page.head });
    }
    if reached > page.head {
        return Err(SyncError::PageInvalid { cursor: after, detail: format!("entries past the head {}", page.head) });
    }
    Ok(page)
}
