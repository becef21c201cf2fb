//! What stands between a request and the workspace: the daemon's own `Host` and `Origin` (a web
//! page that rebinds a name of its own to 127.0.0.1 sends its name, not ours), the bearer token,
//! the correlation id, and the daemon's codes for the engine's errors (the error body and the
//! extractors that make axum's refusals typed errors are `adiuva_http_api`'s, shared with the
//! relay).

use std::net::SocketAddr;
use std::sync::Arc;

use adiuva_model::ErrorCode;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{Instrument, debug, info_span, warn};
use ulid::Ulid;

use super::Shared;
use crate::service;

/// The header a client names its correlation id in (a ULID); the daemon makes one otherwise.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

pub use adiuva_http_api::{ApiError, Body, ErrorBody, ErrorDetail, Params, Segments};

impl From<service::Error> for ApiError {
    fn from(error: service::Error) -> Self {
        let code = error.code();
        let status = match code {
            ErrorCode::RecordNotFound | ErrorCode::WorkspaceNotFound | ErrorCode::DeviceNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::RecordAmbiguous | ErrorCode::WorkspaceLocked | ErrorCode::DeviceRemoved => StatusCode::CONFLICT,
            ErrorCode::InputInvalid | ErrorCode::RecordInvalid | ErrorCode::PeerTicketInvalid => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::LlmUnknownProvider => StatusCode::NOT_FOUND,
            ErrorCode::LlmNoProvider | ErrorCode::SyncNotSignedIn => StatusCode::CONFLICT,
            // A provider's failure: the daemon worked, the service behind it did not.
            code if ["llm.", "relay.", "sync.", "peer."].iter().any(|prefix| code.as_str().starts_with(prefix)) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, code, error.to_string())
    }
}

/// The request's correlation id, put there by [`guard`].
#[derive(Clone, Copy)]
pub struct Correlation(pub Ulid);

impl<S: Send + Sync> FromRequestParts<S> for Correlation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Correlation>().copied().ok_or_else(|| ApiError::internal("no correlation id"))
    }
}

/// Refuses foreign `Host`/`Origin` (403) and a missing or wrong token (401); runs everything
/// else in a span carrying the request's correlation id. Nothing about the token is logged.
pub async fn guard(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let correlation = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| Ulid::from_string(text).ok())
        .unwrap_or_else(Ulid::new);
    let span = info_span!("request", %correlation, method = %request.method(), path = %request.uri().path());
    async move {
        if let Err(refusal) = check(shared.address, &shared.token, request.headers()) {
            warn!(code = refusal.code().as_str(), "refused");
            return refusal.into_response();
        }
        request.extensions_mut().insert(Correlation(correlation));
        let response = next.run(request).await;
        debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await
}

fn check(address: SocketAddr, token: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let port = address.port();
    let own_host = |host: &str| host == format!("127.0.0.1:{port}") || host == format!("localhost:{port}");
    let forbidden = |what: &str| ApiError::new(StatusCode::FORBIDDEN, ErrorCode::ApiForbidden, what.to_owned());
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    if !host.is_some_and(own_host) {
        return Err(forbidden("the Host header does not name this daemon"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !origin.strip_prefix("http://").is_some_and(own_host) {
            return Err(forbidden("the Origin is not this daemon"));
        }
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::ApiUnauthorized,
            "a valid bearer token is required",
        ));
    }
    Ok(())
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn same(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// A fresh per-launch token: 32 random bytes, hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the daemon token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Any route the API does not have.
pub async fn not_found() -> ApiError {
    adiuva_http_api::no_route(ErrorCode::ApiNotFound)
}

pub async fn method_not_allowed() -> ApiError {
    adiuva_http_api::method_not_allowed(ErrorCode::ApiNotFound)
}
