//! Workspaces and who may use them: creation, the authorized device list, per-device key
//! envelopes, the wrapped recovery key with its proof of the phrase, and invites with their
//! join requests. Every payload here is opaque to the relay except ids and expiry times.
//!
//! Only an authorized device of the owning account reads or writes a workspace
//! ([`AppState::authorize`]); the exceptions are the two steps a new device of the same account
//! takes before it is authorized: reading the recovery record (and then proving the phrase),
//! and posting a join request to an invite.

use std::sync::Arc;

use adiuva_model::ErrorCode;
use adiuva_model::envelope::DeviceId;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, same};
use crate::error::{self, ApiError, Body, ErrorBody, Raw, Segments};
use crate::storage::records::{self, Challenge, Device, Invite, Join, Recovery, Workspace};
use crate::storage::valid_name;

/// Largest key envelope, recovery record or join payload.
pub const SMALL_RECORD_BYTES: usize = 64 * 1024;
/// How long a recovery challenge may be answered.
const CHALLENGE_TTL: Duration = Duration::minutes(10);
/// The longest an invite may live.
const MAX_INVITE_TTL: Duration = Duration::days(7);
/// What a proof that authorizes the device signs (see [`recovery_proof_message`]).
const RECOVERY_PROOF_CONTEXT: &str = "adiuva relay recovery proof v1";

/// A workspace's or an invite's id as the routes take it: 1 to 64 letters, digits, `-`, `_`.
pub fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("{what}: 1 to 64 letters, digits, '-' or '_'")))
    }
}

/// A device id in a path: an Ed25519 public key, hex.
pub fn parse_device(text: &str) -> Result<DeviceId, ApiError> {
    text.parse().map_err(|_| ApiError::invalid("a device id is 64 hex digits (an Ed25519 public key)"))
}

fn workspace_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RelayWorkspaceNotFound, "this account has no such workspace")
}

impl AppState {
    /// The workspace if it belongs to the caller's account (authorized device or not).
    pub async fn owned_workspace(&self, caller: &Caller, workspace: &str) -> Result<Workspace, ApiError> {
        check_name(workspace, "workspace id")?;
        let bytes = self.storage.get(&records::workspace_key(workspace)).await?.ok_or_else(workspace_not_found)?;
        let record: Workspace = records::decode(&bytes, "a workspace")?;
        if record.account != caller.account {
            return Err(workspace_not_found());
        }
        Ok(record)
    }

    /// The workspace, if the caller's device is one of its authorized devices.
    pub async fn authorize(&self, caller: &Caller, workspace: &str) -> Result<Workspace, ApiError> {
        let record = self.owned_workspace(caller, workspace).await?;
        if self.storage.get(&records::device_key(workspace, &caller.device)).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::RelayDeviceNotAuthorized,
                "this device is not an authorized device of the workspace",
            ));
        }
        Ok(record)
    }

    async fn add_device(&self, workspace: &str, device: &DeviceId, added_by: &DeviceId) -> Result<bool, ApiError> {
        let key = records::device_key(workspace, device);
        let record = Device { added_at: Utc::now(), added_by: *added_by };
        Ok(self.storage.compare_and_swap(&key, None, Some(&records::encode(&record))).await?)
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// The workspace's id, chosen by the client (1 to 64 letters, digits, `-`, `_`).
    pub id: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct WorkspaceView {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub devices: Vec<DeviceView>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// The device's Ed25519 public key, hex.
    pub device: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

async fn devices(state: &AppState, workspace: &str) -> Result<Vec<DeviceView>, ApiError> {
    let prefix = records::devices_prefix(workspace);
    let mut devices = Vec::new();
    for (key, bytes) in state.storage.scan(&prefix).await? {
        let record: Device = records::decode(&bytes, "a device")?;
        devices.push(DeviceView {
            device: key[prefix.len()..].to_owned(),
            added_at: record.added_at,
            added_by: record.added_by.to_string(),
        });
    }
    Ok(devices)
}

#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = NewWorkspace,
    responses((status = 201, description = "Created; the calling device is its first authorized device", body = WorkspaceView),
              (status = 200, description = "It already exists for this account and device (a retried create)", body = WorkspaceView),
              (status = 400, description = "Malformed body or id", body = ErrorBody),
              (status = 413, description = "Body larger than the route accepts", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 409, description = "The id is taken (`relay.workspace_exists`)", body = ErrorBody),
              (status = 429, description = "Rate limit of the tier reached", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(new): Body<NewWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    check_name(&new.id, "workspace id")?;
    let record = Workspace { account: caller.account, created_at: Utc::now(), created_by: caller.device };
    let created =
        state.storage.compare_and_swap(&records::workspace_key(&new.id), None, Some(&records::encode(&record))).await?;
    let status = if created {
        state.add_device(&new.id, &caller.device, &caller.device).await?;
        StatusCode::CREATED
    } else {
        // A retry by the creating device (whose first attempt may have stopped after the
        // workspace record) completes it; anyone else finds the id taken.
        let existing = state.owned_workspace(&caller, &new.id).await.map_err(|_| taken())?;
        if existing.created_by != caller.device {
            return Err(taken());
        }
        state.add_device(&new.id, &caller.device, &caller.device).await?;
        StatusCode::OK
    };
    let existing = state.owned_workspace(&caller, &new.id).await?;
    let view =
        WorkspaceView { id: new.id.clone(), created_at: existing.created_at, devices: devices(&state, &new.id).await? };
    Ok((status, Json(view)))
}

fn taken() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::RelayWorkspaceExists, "a workspace with that id exists")
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/devices", tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, description = "The authorized devices", body = Vec<DeviceView>),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody)))]
pub async fn list_devices(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    state.authorize(&caller, &workspace).await?;
    Ok(Json(devices(&state, &workspace).await?))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/devices/{device}", tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace id"), ("device" = String, Path, description = "The device's Ed25519 public key, hex")),
    responses((status = 201, description = "The device is now authorized"),
              (status = 204, description = "It already was"),
              (status = 400, description = "Malformed device id", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody)))]
pub async fn add_device(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments((workspace, device)): Segments<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let device = parse_device(&device)?;
    let added = state.add_device(&workspace, &device, &caller.device).await?;
    Ok(if added { StatusCode::CREATED } else { StatusCode::NO_CONTENT })
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/devices/{device}", tag = "workspaces",
    params(("ws" = String, Path, description = "Workspace id"), ("device" = String, Path, description = "The device's Ed25519 public key, hex")),
    responses((status = 204, description = "The device is no longer authorized: its tokens get 403 on this workspace"),
              (status = 400, description = "Malformed device id", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace, or the device is not authorized (`relay.not_found`)", body = ErrorBody)))]
pub async fn remove_device(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments((workspace, device)): Segments<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let device = parse_device(&device)?;
    let key = records::device_key(&workspace, &device);
    let Some(current) = state.storage.get(&key).await? else {
        return Err(error::not_found("that device is not authorized"));
    };
    state.storage.compare_and_swap(&key, Some(&current), None).await?;
    state.live.notify_membership(&workspace);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/key-envelopes/{device}/{epoch}", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id"), ("device" = String, Path, description = "The device the envelope is sealed to"),
           ("epoch" = u32, Path, description = "The workspace key's epoch")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The workspace key of that epoch sealed to the device's box key (opaque, at most 64 KiB)"),
    responses((status = 204, description = "Stored (replacing any earlier envelope of that device and epoch)"),
              (status = 400, description = "Malformed device id or epoch", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody),
              (status = 413, description = "Larger than 64 KiB", body = ErrorBody)))]
pub async fn put_envelope(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments((workspace, device, epoch)): Segments<(String, String, u32)>,
    Raw(envelope): Raw,
) -> Result<StatusCode, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let device = parse_device(&device)?;
    if envelope.len() > SMALL_RECORD_BYTES {
        return Err(too_large());
    }
    state.storage.put(&records::envelope_key(&workspace, &device, epoch), &envelope).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::InputTooLarge, "at most 64 KiB")
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/key-envelopes/{device}/{epoch}", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id"), ("device" = String, Path, description = "The device the envelope is sealed to"),
           ("epoch" = u32, Path, description = "The workspace key's epoch")),
    responses((status = 200, description = "The envelope's bytes", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 400, description = "Malformed device id or epoch", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace or envelope", body = ErrorBody)))]
pub async fn get_envelope(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments((workspace, device, epoch)): Segments<(String, String, u32)>,
) -> Result<Response, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let device = parse_device(&device)?;
    let envelope = state
        .storage
        .get(&records::envelope_key(&workspace, &device, epoch))
        .await?
        .ok_or_else(|| error::not_found("no envelope for that device and epoch"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], envelope).into_response())
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/key-envelopes/{device}", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id"), ("device" = String, Path, description = "The device the envelopes are sealed to")),
    responses((status = 200, description = "The epochs that device has an envelope for, ascending", body = Vec<u32>),
              (status = 400, description = "Malformed device id", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody)))]
pub async fn list_envelopes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments((workspace, device)): Segments<(String, String)>,
) -> Result<Json<Vec<u32>>, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let device = parse_device(&device)?;
    let prefix = records::envelopes_prefix(&workspace, &device);
    let epochs = state
        .storage
        .scan(&prefix)
        .await?
        .into_iter()
        .filter_map(|(key, _)| key[prefix.len()..].parse().ok())
        .collect();
    Ok(Json(epochs))
}

/// The recovery record a device uploads.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecovery {
    /// The workspace key wrapped by the recovery phrase's key, hex (opaque to the relay).
    pub wrapped_key: String,
    /// An Ed25519 public key derived from the phrase's key, hex: the key recovery proofs verify with.
    pub verifier: String,
}

impl NewRecovery {
    /// The wrapped key (at most 64 KiB) and the verifier (an Ed25519 public key), from hex.
    pub fn decode(&self) -> Result<(Vec<u8>, [u8; 32]), ApiError> {
        let wrapped_key = hex::decode(&self.wrapped_key).map_err(|_| ApiError::invalid("wrapped_key is hex"))?;
        if wrapped_key.len() > SMALL_RECORD_BYTES {
            return Err(too_large());
        }
        let mut verifier = [0u8; 32];
        hex::decode_to_slice(&self.verifier, &mut verifier)
            .map_err(|_| ApiError::invalid("verifier is 64 hex digits"))?;
        VerifyingKey::from_bytes(&verifier).map_err(|_| ApiError::invalid("verifier is not an Ed25519 public key"))?;
        Ok((wrapped_key, verifier))
    }
}

/// The recovery record as a device of the account reads it, with a fresh challenge.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RecoveryView {
    pub wrapped_key: String,
    pub verifier: String,
    pub updated_at: DateTime<Utc>,
    /// To sign (with the phrase-derived private key) to authorize the calling device, or for a
    /// read grant; single use.
    pub challenge: String,
    pub challenge_expires_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryProof {
    pub challenge: String,
    /// Ed25519 signature, hex, of `CONTEXT\nWS\nDEVICE\nCHALLENGE`, where CONTEXT is
    /// `adiuva relay recovery proof v1` (`recovery/authorize`) or `adiuva relay recovery read v1`
    /// (`recovery/read`).
    pub signature: String,
}

impl RecoveryProof {
    /// The signature, if it is 128 hex digits.
    pub fn signature(&self) -> Option<Signature> {
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut signature).ok()?;
        Some(Signature::from_bytes(&signature))
    }
}

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/recovery", tag = "keys", request_body = NewRecovery,
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 204, description = "Stored (replacing the earlier record)"),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody),
              (status = 413, description = "Larger than 64 KiB", body = ErrorBody)))]
pub async fn put_recovery(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
    Body(new): Body<NewRecovery>,
) -> Result<StatusCode, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let (wrapped_key, verifier) = new.decode()?;
    let record = Recovery { wrapped_key, verifier, updated_at: Utc::now() };
    state.storage.put(&records::recovery_key(&workspace), &records::encode(&record)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/recovery", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, description = "The recovery record and a challenge for the calling device. Any device of the account may read it, authorized or not: this is how a new machine restores", body = RecoveryView),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 404, description = "No such workspace, or no recovery record", body = ErrorBody)))]
pub async fn get_recovery(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
) -> Result<Json<RecoveryView>, ApiError> {
    state.owned_workspace(&caller, &workspace).await?;
    let bytes = state
        .storage
        .get(&records::recovery_key(&workspace))
        .await?
        .ok_or_else(|| error::not_found("the workspace has no recovery record"))?;
    let record: Recovery = records::decode(&bytes, "a recovery record")?;
    let mut challenge = [0u8; 32];
    getrandom::fill(&mut challenge).map_err(|_| ApiError::internal("no randomness for a challenge"))?;
    let challenge = hex::encode(challenge);
    let expires_at = Utc::now() + CHALLENGE_TTL;
    let pending = Challenge { device: caller.device, expires_at };
    state.storage.put(&records::challenge_key(&workspace, &challenge), &records::encode(&pending)).await?;
    Ok(Json(RecoveryView {
        wrapped_key: hex::encode(&record.wrapped_key),
        verifier: hex::encode(record.verifier),
        updated_at: record.updated_at,
        challenge,
        challenge_expires_at: expires_at,
    }))
}

/// The message a recovery proof signs: its context (what the proof is for), then the
/// workspace, the device and the challenge, each on a line.
pub fn recovery_proof_message(context: &str, workspace: &str, device: &DeviceId, challenge: &str) -> String {
    format!("{context}\n{workspace}\n{device}\n{challenge}")
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/recovery/authorize", tag = "keys", request_body = RecoveryProof,
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 201, description = "The calling device is now an authorized device of the workspace"),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 413, description = "Body larger than the route accepts", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "Unknown, expired or used challenge, or the signature does not verify (`relay.proof_invalid`)", body = ErrorBody),
              (status = 404, description = "No such workspace, or no recovery record", body = ErrorBody)))]
pub async fn recovery_authorize(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
    Body(proof): Body<RecoveryProof>,
) -> Result<StatusCode, ApiError> {
    state.check_recovery_proof(&caller, &workspace, &proof, RECOVERY_PROOF_CONTEXT).await?;
    state.add_device(&workspace, &caller.device, &caller.device).await?;
    Ok(StatusCode::CREATED)
}

impl AppState {
    /// Checks a proof of the recovery phrase: a challenge `GET recovery` issued to the calling
    /// device, unexpired, consumed by this attempt whatever its outcome, and signed by the
    /// record's verifier over `context`, the workspace, the device and the challenge.
    pub async fn check_recovery_proof(
        &self,
        caller: &Caller,
        workspace: &str,
        proof: &RecoveryProof,
        context: &str,
    ) -> Result<(), ApiError> {
        self.owned_workspace(caller, workspace).await?;
        let refused =
            || ApiError::new(StatusCode::FORBIDDEN, ErrorCode::RelayProofInvalid, "the recovery proof does not verify");
        if proof.challenge.len() != 64 || !proof.challenge.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let bytes = self
            .storage
            .get(&records::recovery_key(workspace))
            .await?
            .ok_or_else(|| error::not_found("the workspace has no recovery record"))?;
        let record: Recovery = records::decode(&bytes, "a recovery record")?;
        let challenge_key = records::challenge_key(workspace, &proof.challenge);
        let Some(pending_bytes) = self.storage.get(&challenge_key).await? else { return Err(refused()) };
        let pending: Challenge = records::decode(&pending_bytes, "a recovery challenge")?;
        // Single use, whatever the outcome: a challenge cannot be tried twice.
        if !self.storage.compare_and_swap(&challenge_key, Some(&pending_bytes), None).await? {
            return Err(refused());
        }
        if pending.device != caller.device || pending.expires_at <= Utc::now() {
            return Err(refused());
        }
        let signature = proof.signature().ok_or_else(refused)?;
        let verifier = VerifyingKey::from_bytes(&record.verifier).map_err(|_| refused())?;
        let message = recovery_proof_message(context, workspace, &caller.device, &proof.challenge);
        verifier.verify_strict(message.as_bytes(), &signature).map_err(|_| refused())
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// The invite's id (1 to 64 letters, digits, `-`, `_`), chosen by the inviter.
    pub invite_id: String,
    /// At most 7 days ahead.
    pub expires_at: DateTime<Utc>,
    /// BLAKE3 (hex) of the proof a joiner will present; the proof is derived from the ticket
    /// secret, which the relay never sees.
    pub proof_hash: String,
}

impl NewInvite {
    /// The proof's hash, from hex.
    pub fn proof_hash(&self) -> Result<[u8; 32], ApiError> {
        let mut proof_hash = [0u8; 32];
        hex::decode_to_slice(&self.proof_hash, &mut proof_hash)
            .map_err(|_| ApiError::invalid("proof_hash is 64 hex digits"))?;
        Ok(proof_hash)
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct InviteView {
    pub invite_id: String,
    pub workspace: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The proof derived from the ticket secret, hex (its BLAKE3 must match the invite's).
    pub proof: String,
    /// The joining device's public keys and whatever else the inviter needs, hex (opaque).
    pub payload: String,
    /// A MAC over the payload by a key derived from the ticket secret, hex; the inviter checks it.
    pub mac: String,
}

/// A join request's fields, decoded.
pub struct JoinFields {
    pub proof: Vec<u8>,
    pub payload: Vec<u8>,
    pub mac: Vec<u8>,
}

impl JoinRequest {
    /// The proof, the payload and the MAC, from hex; payload and MAC at most 64 KiB together.
    pub fn decode(&self) -> Result<JoinFields, ApiError> {
        let proof = hex::decode(&self.proof).map_err(|_| ApiError::invalid("proof is hex"))?;
        let payload = hex::decode(&self.payload).map_err(|_| ApiError::invalid("payload is hex"))?;
        let mac = hex::decode(&self.mac).map_err(|_| ApiError::invalid("mac is hex"))?;
        if payload.len() + mac.len() > SMALL_RECORD_BYTES {
            return Err(too_large());
        }
        Ok(JoinFields { proof, payload, mac })
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct JoinView {
    pub invite_id: String,
    /// The joining device.
    pub device: String,
    pub payload: String,
    pub mac: String,
    pub created_at: DateTime<Utc>,
    /// Whether the device is already authorized (the inviter has acted on it).
    pub authorized: bool,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/invites", tag = "devices", request_body = NewInvite,
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 201, description = "The invite is open until it expires or is used", body = InviteView),
              (status = 400, description = "Malformed body, bad id, or an expiry in the past or more than 7 days ahead", body = ErrorBody),
              (status = 413, description = "Body larger than the route accepts", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody),
              (status = 409, description = "An invite with that id exists (`relay.invite_used`)", body = ErrorBody)))]
pub async fn create_invite(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
    Body(new): Body<NewInvite>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    state.authorize(&caller, &workspace).await?;
    check_name(&new.invite_id, "invite id")?;
    let now = Utc::now();
    if new.expires_at <= now || new.expires_at > now + MAX_INVITE_TTL {
        return Err(ApiError::invalid("an invite expires in the future, at most 7 days ahead"));
    }
    let proof_hash = new.proof_hash()?;
    let invite = Invite {
        workspace: workspace.clone(),
        account: caller.account,
        created_by: caller.device,
        expires_at: new.expires_at,
        proof_hash,
        used: false,
    };
    if !state
        .storage
        .compare_and_swap(&records::invite_key(&new.invite_id), None, Some(&records::encode(&invite)))
        .await?
    {
        return Err(ApiError::new(StatusCode::CONFLICT, ErrorCode::RelayInviteUsed, "an invite with that id exists"));
    }
    Ok((StatusCode::CREATED, Json(InviteView { invite_id: new.invite_id, workspace, expires_at: new.expires_at })))
}

#[utoipa::path(post, path = "/api/v1/invites/{invite}/join", tag = "devices", request_body = JoinRequest,
    params(("invite" = String, Path, description = "Invite id")),
    responses((status = 201, description = "The join request waits for the inviter"),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The proof does not match the invite (`relay.proof_invalid`)", body = ErrorBody),
              (status = 404, description = "No such invite for this account (`relay.invite_not_found`)", body = ErrorBody),
              (status = 409, description = "The invite was used (`relay.invite_used`)", body = ErrorBody),
              (status = 410, description = "The invite expired (`relay.invite_expired`)", body = ErrorBody),
              (status = 413, description = "Payload larger than 64 KiB", body = ErrorBody)))]
pub async fn join(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(invite_id): Segments<String>,
    Body(request): Body<JoinRequest>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RelayInviteNotFound, "no such invite");
    if !valid_name(&invite_id) {
        return Err(not_found());
    }
    let key = records::invite_key(&invite_id);
    let Some(bytes) = state.storage.get(&key).await? else { return Err(not_found()) };
    let invite: Invite = records::decode(&bytes, "an invite")?;
    if invite.account != caller.account {
        return Err(not_found());
    }
    if invite.used {
        return Err(ApiError::new(StatusCode::CONFLICT, ErrorCode::RelayInviteUsed, "the invite was already used"));
    }
    if invite.expires_at <= Utc::now() {
        return Err(ApiError::new(StatusCode::GONE, ErrorCode::RelayInviteExpired, "the invite has expired"));
    }
    let JoinFields { proof, payload, mac } = request.decode()?;
    if !same(blake3::hash(&proof).as_bytes(), &invite.proof_hash) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::RelayProofInvalid,
            "the proof does not match the invite",
        ));
    }
    let used = Invite { used: true, ..invite.clone() };
    if !state.storage.compare_and_swap(&key, Some(&bytes), Some(&records::encode(&used))).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, ErrorCode::RelayInviteUsed, "the invite was already used"));
    }
    let join = Join { invite: invite_id.clone(), device: caller.device, payload, mac, created_at: Utc::now() };
    state.storage.put(&records::join_key(&invite.workspace, &invite_id), &records::encode(&join)).await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/joins", tag = "devices",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, description = "Join requests posted to this workspace's invites", body = Vec<JoinView>),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "The calling device is not authorized", body = ErrorBody),
              (status = 404, description = "No such workspace for this account", body = ErrorBody)))]
pub async fn list_joins(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
) -> Result<Json<Vec<JoinView>>, ApiError> {
    state.authorize(&caller, &workspace).await?;
    let mut joins = Vec::new();
    for (_, bytes) in state.storage.scan(&records::joins_prefix(&workspace)).await? {
        let join: Join = records::decode(&bytes, "a join request")?;
        let authorized = state.storage.get(&records::device_key(&workspace, &join.device)).await?.is_some();
        joins.push(JoinView {
            invite_id: join.invite,
            device: join.device.to_string(),
            payload: hex::encode(&join.payload),
            mac: hex::encode(&join.mac),
            created_at: join.created_at,
            authorized,
        });
    }
    Ok(Json(joins))
}
