//! Restore points, on the seed's backup routes: a restore point names the blobs (already
//! uploaded to its workspace) that make up an encrypted compacted snapshot, with its version,
//! checksum, chunk count and size. The relay checks the blobs exist and otherwise stores the
//! description as given; it cannot read any of it. One restore point is read by its id, with its
//! blob ids (the history leaves them out). Deleting a restore point forgets the
//! description; the blobs stay in the workspace's log.

use std::sync::Arc;

use adiuva_model::ErrorCode;
use adiuva_model::api::BackupMetadata;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{self, ApiError, Body, ErrorBody, Params, Segments};
use crate::storage::BlobId;
use crate::storage::records::{self, Backup};

/// Most blobs one restore point may name.
const MAX_BLOBS: usize = 100_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackup {
    /// The workspace whose blobs make up the restore point.
    pub workspace: String,
    pub version: u32,
    /// BLAKE3 of the snapshot's ciphertext, hex.
    pub checksum: String,
    pub chunk_count: u32,
    pub size_bytes: u64,
    /// The blob ids making up the restore point, in order.
    pub blob_ids: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// Only this workspace's restore points.
    pub workspace: Option<String>,
}

fn metadata(backup: Backup, with_blobs: bool) -> BackupMetadata {
    BackupMetadata {
        id: backup.id,
        version: backup.version,
        timestamp: backup.timestamp,
        checksum: backup.checksum,
        chunk_count: backup.chunk_count,
        size_bytes: backup.size_bytes,
        workspace: Some(backup.workspace),
        blob_ids: if with_blobs { backup.blob_ids } else { Vec::new() },
    }
}

/// The caller's restore points, oldest first, of workspaces its device is authorized for.
async fn restore_points(state: &AppState, caller: &Caller, workspace: Option<&str>) -> Result<Vec<Backup>, ApiError> {
    if let Some(workspace) = workspace {
        state.authorize(caller, workspace).await?;
    }
    let mut found = Vec::new();
    for (_, bytes) in state.storage.scan(&records::backups_prefix(caller.account)).await? {
        let backup: Backup = records::decode(&bytes, "a restore point")?;
        if workspace.is_some_and(|w| w != backup.workspace) {
            continue;
        }
        if workspace.is_none() && state.authorize(caller, &backup.workspace).await.is_err() {
            continue;
        }
        found.push(backup);
    }
    Ok(found)
}

#[utoipa::path(put, path = "/api/v1/backup", tag = "backup", request_body = NewBackup,
    responses((status = 201, description = "The restore point (a `BackupMetadata`)", body = serde_json::Value),
              (status = 400, description = "Malformed body or blob id", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized for the workspace", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody),
              (status = 409, description = "A named blob is not in the workspace (`relay.blob_missing`)", body = ErrorBody),
              (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(new): Body<NewBackup>,
) -> Result<(StatusCode, Json<BackupMetadata>), ApiError> {
    state.authorize(&caller, &new.workspace).await?;
    if new.blob_ids.len() > MAX_BLOBS || new.checksum.len() > 128 {
        return Err(ApiError::invalid("at most 100000 blobs and a checksum of at most 128 characters"));
    }
    for text in &new.blob_ids {
        let id = BlobId::parse(text).ok_or_else(|| ApiError::invalid("a blob id is 64 lowercase hex digits"))?;
        if state.storage.blob_seq(&new.workspace, &id).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::RelayBlobMissing,
                format!("blob {text} is not in the workspace: upload it first"),
            ));
        }
    }
    let backup = Backup {
        id: Ulid::new(),
        workspace: new.workspace,
        version: new.version,
        timestamp: Utc::now(),
        checksum: new.checksum,
        chunk_count: new.chunk_count,
        size_bytes: new.size_bytes,
        blob_ids: new.blob_ids,
    };
    state.storage.put(&records::backup_key(caller.account, backup.id), &records::encode(&backup)).await?;
    Ok((StatusCode::CREATED, Json(metadata(backup, true))))
}

#[utoipa::path(get, path = "/api/v1/backup", tag = "backup", params(BackupQuery,
        ("If-Modified-Since" = Option<String>, Header, description = "An HTTP date: 304 if the latest restore point is not newer")),
    responses((status = 200, description = "The latest restore point with its blob ids (a `BackupMetadata`); `Last-Modified` is its time", body = serde_json::Value),
              (status = 304, description = "Not newer than `If-Modified-Since`"),
              (status = 400, description = "Malformed query", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized for the workspace", body = ErrorBody),
              (status = 404, description = "No restore point", body = ErrorBody)))]
pub async fn latest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Params(query): Params<BackupQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let latest = restore_points(&state, &caller, query.workspace.as_deref())
        .await?
        .into_iter()
        .max_by_key(|b| b.id)
        .ok_or_else(|| error::not_found("no restore point"))?;
    let modified = latest.timestamp.timestamp();
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|text| DateTime::parse_from_rfc2822(text).ok());
    let last_modified = latest.timestamp.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let last_modified = HeaderValue::from_str(&last_modified).map_err(|_| ApiError::internal("bad date"))?;
    if since.is_some_and(|since| modified <= since.timestamp()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::LAST_MODIFIED, last_modified)]).into_response());
    }
    Ok(([(header::LAST_MODIFIED, last_modified)], Json(metadata(latest, true))).into_response())
}

#[utoipa::path(get, path = "/api/v1/backup/history", tag = "backup", params(BackupQuery),
    responses((status = 200, description = "Every restore point, oldest first, without blob ids (`BackupMetadata` objects)", body = Vec<serde_json::Value>),
              (status = 400, description = "Malformed query", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized for the workspace", body = ErrorBody)))]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Params(query): Params<BackupQuery>,
) -> Result<Json<Vec<BackupMetadata>>, ApiError> {
    let points = restore_points(&state, &caller, query.workspace.as_deref()).await?;
    Ok(Json(points.into_iter().map(|b| metadata(b, false)).collect()))
}

#[utoipa::path(delete, path = "/api/v1/backup/{id}", tag = "backup",
    params(("id" = String, Path, description = "The restore point's id")),
    responses((status = 204, description = "Forgotten (its blobs stay in the workspace)"),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized for its workspace", body = ErrorBody),
              (status = 404, description = "No such restore point", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || error::not_found("no such restore point");
    let id: Ulid = id.parse().map_err(|_| not_found())?;
    let key = records::backup_key(caller.account, id);
    let bytes = state.storage.get(&key).await?.ok_or_else(not_found)?;
    let backup: Backup = records::decode(&bytes, "a restore point")?;
    state.authorize(&caller, &backup.workspace).await?;
    state.storage.compare_and_swap(&key, Some(&bytes), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/backup/{id}", tag = "backup",
    params(("id" = String, Path, description = "The restore point's id")),
    responses((status = 200, description = "The restore point with its blob ids (a `BackupMetadata`)", body = serde_json::Value),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized for its workspace", body = ErrorBody),
              (status = 404, description = "No such restore point", body = ErrorBody)))]
pub async fn one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(id): Segments<String>,
) -> Result<Json<BackupMetadata>, ApiError> {
    let not_found = || error::not_found("no such restore point");
    let id: Ulid = id.parse().map_err(|_| not_found())?;
    let bytes = state.storage.get(&records::backup_key(caller.account, id)).await?.ok_or_else(not_found)?;
    let backup: Backup = records::decode(&bytes, "a restore point")?;
    state.authorize(&caller, &backup.workspace).await?;
    Ok(Json(metadata(backup, true)))
}
