//! Read grants: how an audit reads a workspace from the relay without becoming one of its
//! devices. A device of the account proves the recovery phrase (the challenge of `GET
//! recovery`, signed for reading) and gets a short-lived grant instead of an authorization:
//! the device list is not touched, and nothing lasting is granted.
//!
//! - A grant is a JWT (HS256) for one account, device and workspace, under a key derived from
//!   the token secret with its own context, so it is never an access token nor one a grant.
//! - It travels beside the caller's access token, in [`READ_GRANT_HEADER`], and only the two
//!   read routes of the sequence (`changes` and `GET blobs/{id}`) look at it
//!   ([`AppState::authorize_read`]); every other route, every write among them, ignores it and
//!   refuses the unauthorized device as before.
//! - It expires ([`crate::Config::read_grant_ttl`], minutes) and is stored nowhere.

use std::sync::Arc;

use adiuva_model::ErrorCode;
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Tokens, validation};
use crate::error::{ApiError, Body, ErrorBody, Segments};
use crate::storage::records::Workspace;
use crate::workspaces::RecoveryProof;

/// The header a read grant travels in, beside `Authorization: Bearer`.
pub const READ_GRANT_HEADER: &str = "x-adiuva-read-grant";
/// The context the grant key is derived under from the token secret.
pub const GRANT_KEY_CONTEXT: &str = "adiuva relay read grant key v1";
/// What a proof for a read grant signs (see `workspaces::recovery_proof_message`).
const READ_PROOF_CONTEXT: &str = "adiuva relay recovery read v1";
/// The only scope a grant has.
const READ_SCOPE: &str = "read";

/// A grant's claims.
#[derive(Debug, Serialize, Deserialize)]
struct GrantClaims {
    /// The account id.
    sub: String,
    /// The device it was granted to.
    dev: String,
    /// The workspace it reads.
    ws: String,
    scope: String,
    iat: i64,
    exp: i64,
}

/// A read grant, as `recovery/read` answers it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReadGrant {
    /// Send it in `x-adiuva-read-grant`, beside the access token, to `changes` and `GET blobs/{id}`.
    pub grant: String,
    pub expires_at: DateTime<Utc>,
}

/// The read grant a request carries, if any.
pub struct GrantHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for GrantHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get(READ_GRANT_HEADER) {
            None => Ok(Self(None)),
            Some(value) => value.to_str().map(|grant| Self(Some(grant.to_owned()))).map_err(|_| grant_invalid()),
        }
    }
}

fn grant_invalid() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::RelayGrantInvalid,
        "the read grant is not valid for this workspace and device",
    )
}

impl Tokens {
    /// A read grant of `workspace` for the caller's device, from now on.
    pub fn grant(&self, caller: &Caller, workspace: &str) -> Result<ReadGrant, ApiError> {
        let now = Utc::now();
        let expires_at = now + self.read_grant_ttl;
        let claims = GrantClaims {
            sub: caller.account.to_string(),
            dev: caller.device.to_string(),
            ws: workspace.to_owned(),
            scope: READ_SCOPE.into(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        let grant = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.grant_encoding)
            .map_err(|_| ApiError::internal("could not sign a read grant"))?;
        Ok(ReadGrant { grant, expires_at })
    }

    /// Whether `grant` lets the caller's device read `workspace` now.
    pub fn check_grant(&self, grant: &str, caller: &Caller, workspace: &str) -> Result<(), ApiError> {
        let claims = jsonwebtoken::decode::<GrantClaims>(grant, &self.grant_decoding, &validation())
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::RelayGrantExpired,
                    "the read grant has expired; prove the recovery phrase again",
                ),
                _ => grant_invalid(),
            })?
            .claims;
        let matches = claims.sub == caller.account.to_string()
            && claims.dev == caller.device.to_string()
            && claims.ws == workspace
            && claims.scope == READ_SCOPE;
        if matches { Ok(()) } else { Err(grant_invalid()) }
    }
}

impl AppState {
    /// The workspace, if the caller may read it: an authorized device, or the device a valid,
    /// unexpired read grant for this workspace was issued to.
    pub async fn authorize_read(
        &self,
        caller: &Caller,
        workspace: &str,
        grant: &GrantHeader,
    ) -> Result<Workspace, ApiError> {
        let Some(grant) = &grant.0 else { return self.authorize(caller, workspace).await };
        let record = self.owned_workspace(caller, workspace).await?;
        self.tokens.check_grant(grant, caller, workspace)?;
        Ok(record)
    }
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/recovery/read", tag = "keys", request_body = RecoveryProof,
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 201, description = "A read grant for the calling device: `changes` and `GET blobs/{id}` accept it (in `x-adiuva-read-grant`) until it expires; every other route refuses the device as before. The device list is not touched", body = ReadGrant),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 413, description = "Body larger than the route accepts", body = ErrorBody),
              (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
              (status = 401, description = "Missing, expired or invalid access token", body = ErrorBody),
              (status = 403, description = "Unknown, expired or used challenge, or the signature (of `adiuva relay recovery read v1\\nWS\\nDEVICE\\nCHALLENGE`) does not verify (`relay.proof_invalid`)", body = ErrorBody),
              (status = 404, description = "No such workspace, or no recovery record", body = ErrorBody)))]
pub async fn recovery_read(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Segments(workspace): Segments<String>,
    Body(proof): Body<RecoveryProof>,
) -> Result<(StatusCode, Json<ReadGrant>), ApiError> {
    state.check_recovery_proof(&caller, &workspace, &proof, READ_PROOF_CONTEXT).await?;
    Ok((StatusCode::CREATED, Json(state.tokens.grant(&caller, &workspace)?)))
}
