//! The routes, all under `/api/v1`, with the OpenAPI document generated from their handlers
//! (served at `/api/v1/openapi.json`), and what wraps every request: its request id and span,
//! and `connection: close` on an answer given before its request's body was read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use adiuva_http_api::BearerToken;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span};
use ulid::Ulid;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{self, ErrorBody};
use crate::{AppState, auth, backup, blobs, grants, workspaces};

/// The header carrying a request's id: the client's if it sent a sane one, else a new ULID.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Bodies of every route but blob uploads (which read theirs up to `blobs::MAX_BLOB_BYTES`).
const BODY_LIMIT: usize = 1024 * 1024;

/// Requests carry a JWT access token in `Authorization: Bearer`.
const BEARER_TOKEN: BearerToken = BearerToken { format: Some("JWT") };

#[derive(OpenApi)]
#[openapi(
    info(title = "Adiuva relay API", description = "The blind relay: accounts, workspaces of opaque ciphertext blobs, device key envelopes, recovery records, invites and restore points. The relay never holds a key that decrypts user data. Every route except `auth/register`, `auth/login`, `auth/refresh`, `health` and this document needs a bearer access token; errors are `{\"error\": {\"code\", \"message\"}}` with stable codes."),
    components(schemas(ErrorBody)),
    modifiers(&BEARER_TOKEN),
    security(("token" = []))
)]
struct ApiDoc;

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi))
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::me))
        .routes(routes!(auth::logout))
        .routes(routes!(workspaces::create))
        .routes(routes!(workspaces::list_devices))
        .routes(routes!(workspaces::add_device, workspaces::remove_device))
        .routes(routes!(workspaces::put_envelope, workspaces::get_envelope))
        .routes(routes!(workspaces::list_envelopes))
        .routes(routes!(workspaces::put_recovery, workspaces::get_recovery))
        .routes(routes!(workspaces::recovery_authorize))
        .routes(routes!(grants::recovery_read))
        .routes(routes!(workspaces::create_invite))
        .routes(routes!(workspaces::join))
        .routes(routes!(workspaces::list_joins))
        .routes(routes!(blobs::put_blob, blobs::get_blob))
        .routes(routes!(blobs::changes))
        .routes(routes!(blobs::live))
        .routes(routes!(backup::put, backup::latest))
        .routes(routes!(backup::history))
        .routes(routes!(backup::one, backup::delete))
        .split_for_parts();
    let document = Arc::new(document);
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::Extension(document))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(close_if_body_unread))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Answers a request whose body was not read to its end (refused before it, or cut at a limit)
/// with `connection: close`. The server closes such a connection after answering, since what
/// is left of the body cannot be told from the next request; without the header a client
/// keeping connections alive would send its next request into the closed one.
async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let body = Body::new(ReadToEnd { inner: body, finished: finished.clone() });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !finished.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that notes when it has been read to its end.
struct ReadToEnd {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for ReadToEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives each request its id (echoed in `x-request-id`) and a span carrying it; logs one line
/// when it is answered. Nothing of the body or the token is logged.
async fn request_span(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map_or_else(|| Ulid::new().to_string(), str::to_owned);
    let span =
        info_span!("request", request_id = %request_id, method = %request.method(), path = %request.uri().path());
    async move {
        let started = std::time::Instant::now();
        let mut response = next.run(request).await;
        info!(status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "answered");
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }
    .instrument(span)
    .await
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub version: String,
}

#[utoipa::path(get, path = "/api/v1/health", tag = "server", security(()),
    responses((status = 200, description = "The server answers", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server", security(()),
    responses((status = 200, description = "This document", body = serde_json::Value)))]
async fn openapi(
    axum::Extension(document): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*document).clone())
}
