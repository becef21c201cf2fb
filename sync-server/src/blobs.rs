//! A workspace's blobs: content-addressed upload (the id is the BLAKE3 hash of the bytes, so a
//! retried upload is the same upload), download, the sequence after a cursor, and the live
//! WebSocket that tells connected devices the sequence grew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_model::ErrorCode;
use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::debug;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{self, ApiError, ErrorBody, Params, Segments};
use crate::grants::GrantHeader;
use crate::storage::{BlobId, NewBlob};

/// Largest blob: clients chunk larger snapshots.
pub const MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;
/// Most entries one `changes` answer holds.
const MAX_CHANGES: usize = 10_000;
/// How often a live socket re-reads the head and re-checks the device from storage: this is
/// how it learns of blobs stored through another instance, and of its device's removal.
const LIVE_RECHECK: Duration = Duration::from_secs(2);
/// A live socket's read buffer: devices send nothing but pings and a close, and the default
/// (128 KiB, allocated and zeroed per socket) made a thousand idle sockets cost 130 MiB.
const LIVE_READ_BUFFER: usize = 4 * 1024;
/// The largest message a device may send on its live socket (it has nothing to say).
const LIVE_MAX_MESSAGE: usize = 64 * 1024;

/// Each workspace's latest sequence number, for the live sockets of this instance.
#[derive(Default)]
pub struct Live {
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Live {
    fn sender(&self, workspace: &str) -> watch::Sender<u64> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads.entry(workspace.to_owned()).or_insert_with(|| watch::channel(0).0).clone()
    }

    /// The workspace's sequence reached `seq`.
    pub fn publish(&self, workspace: &str, seq: u64) {
        self.sender(workspace).send_if_modified(|head| {
            let grew = seq > *head;
            *head = (*head).max(seq);
            grew
        });
    }

    /// Wakes the workspace's sockets so they re-check their devices (one was removed).
    pub fn notify_membership(&self, workspace: &str) {
        self.sender(workspace).send_modify(|_| {});
    }

    fn subscribe(&self, workspace: &str) -> watch::Receiver<u64> {
        self.sender(workspace).subscribe()
    }
}

fn parse_id(text: &str) -> Result<BlobId, ApiError> {
    BlobId::parse(text).ok_or_else(|| ApiError::invalid("a blob id is 64 lowercase hex digits (BLAKE3 of the bytes)"))
}

/// Where a blob sits in its workspace's sequence.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BlobEntry {
    pub seq: u64,
    pub id: String,
    pub size: u64,
}

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/blobs/{id}", tag = "blobs",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "BLAKE3 of the body, 64 lowercase hex digits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Ciphertext, at most 16 MiB"),
    responses((status = 201, description = "Stored durably with the next number of the workspace's sequence", body = BlobEntry),
              (status = 200, description = "Already stored (a retry): its number, nothing charged", body = BlobEntry),
              (status = 400, description = "Malformed id, or the id is not the body's hash (`relay.blob_id_mismatch`)", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 402, description = "Over the tier's storage quota (`relay.quota_exceeded`); nothing stored", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody),
              (status = 413, description = "Larger than 16 MiB", body = ErrorBody),
              (status = 429, description = "Rate limit of the tier reached", body = ErrorBody)))]
pub async fn put_blob(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments((workspace, id)): Segments<(String, String)>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<BlobEntry>), ApiError> {
    state.authorize(&caller, &workspace).await?;
    let id = parse_id(&id)?;
    // Read here rather than through an extractor: blobs may exceed the other routes' limit.
    let bytes = axum::body::to_bytes(body, MAX_BLOB_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InputTooLarge,
            "a blob is at most 16 MiB, or its upload broke off",
        )
    })?;
    if BlobId::of(&bytes) != id {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::RelayBlobIdMismatch,
            "the id is not the BLAKE3 hash of the body",
        ));
    }
    let quota = caller.tier.storage_quota_bytes();
    let stored = state
        .storage
        .put_blob(NewBlob { workspace: workspace.clone(), account: caller.account_name(), id, bytes, quota })
        .await?;
    if stored.created {
        state.live.publish(&workspace, stored.seq);
    }
    let status = if stored.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(BlobEntry { seq: stored.seq, id: id.to_string(), size: stored.size })))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/blobs/{id}", tag = "blobs",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "BLAKE3 of the blob, hex"),
           ("x-adiuva-read-grant" = Option<String>, Header, description = "A read grant (`recovery/read`) for this workspace and device: reads without the device being authorized")),
    responses((status = 200, description = "The blob's bytes", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 400, description = "Malformed id", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized and brings no read grant, or its grant is not for this workspace and device (`relay.grant_invalid`) or expired (`relay.grant_expired`)", body = ErrorBody),
              (status = 404, description = "No such workspace or blob", body = ErrorBody)))]
pub async fn get_blob(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    grant: GrantHeader,
    Segments((workspace, id)): Segments<(String, String)>,
) -> Result<Response, ApiError> {
    state.authorize_read(&caller, &workspace, &grant).await?;
    let id = parse_id(&id)?;
    let bytes = state.storage.get_blob(&workspace, &id).await?.ok_or_else(|| error::not_found("no such blob"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The cursor: entries numbered after this (0, or absent, for all).
    #[serde(default)]
    pub after: u64,
    /// At most this many entries (default and maximum 10000).
    pub limit: Option<usize>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChangesPage {
    /// In sequence order; pass the last `seq` as the next `after`.
    pub changes: Vec<BlobEntry>,
    /// The workspace's highest number now.
    pub head: u64,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/changes", tag = "blobs",
    params(("ws" = String, Path, description = "Workspace id"), ChangesQuery,
           ("x-adiuva-read-grant" = Option<String>, Header, description = "A read grant (`recovery/read`) for this workspace and device: reads without the device being authorized")),
    responses((status = 200, description = "The sequence after the cursor", body = ChangesPage),
              (status = 400, description = "Malformed query", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized and brings no read grant, or its grant is not for this workspace and device (`relay.grant_invalid`) or expired (`relay.grant_expired`)", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody)))]
pub async fn changes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    grant: GrantHeader,
    Segments(workspace): Segments<String>,
    Params(query): Params<ChangesQuery>,
) -> Result<Json<ChangesPage>, ApiError> {
    state.authorize_read(&caller, &workspace, &grant).await?;
    let limit = query.limit.unwrap_or(MAX_CHANGES).clamp(1, MAX_CHANGES);
    let head = state.storage.head(&workspace).await?;
    let changes = state.storage.changes(&workspace, query.after, limit).await?;
    let changes = changes.into_iter().map(|c| BlobEntry { seq: c.seq, id: c.id.to_string(), size: c.size }).collect();
    Ok(Json(ChangesPage { changes, head }))
}

/// What a live socket sends.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LiveHead {
    /// The workspace's highest number: pull after your cursor up to here.
    pub seq: u64,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/live", tag = "blobs",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 101, description = "A WebSocket: the server sends `{\"seq\": N}` (a `LiveHead`) at once and whenever new blobs arrive; it closes when the device is removed", body = LiveHead),
              (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody)))]
pub async fn live(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let upgrade = upgrade.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    Ok(upgrade
        .read_buffer_size(LIVE_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(LIVE_MAX_MESSAGE)
        .on_upgrade(move |socket| follow(state, caller, workspace, socket)))
}

async fn follow(state: Arc<AppState>, caller: Caller, workspace: String, mut socket: WebSocket) {
    let mut heads = state.live.subscribe(&workspace);
    let mut sent = None;
    let mut recheck = tokio::time::interval(LIVE_RECHECK);
    loop {
        // The head from storage covers blobs stored through other instances.
        let stored = state.storage.head(&workspace).await.unwrap_or(0);
        let head = stored.max(*heads.borrow_and_update());
        if state.authorize(&caller, &workspace).await.is_err() {
            debug!("live socket closed: the device is no longer authorized");
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        if sent != Some(head) {
            let text = serde_json::json!({ "seq": head }).to_string();
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
            sent = Some(head);
        }
        tokio::select! {
            changed = heads.changed() => if changed.is_err() { return },
            _ = recheck.tick() => {}
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
