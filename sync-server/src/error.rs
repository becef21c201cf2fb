//! Typed JSON errors: every refusal or failure the relay answers, axum's own extractor
//! rejections (malformed JSON, unknown fields, oversized bodies) included, is an [`ErrorBody`]
//! carrying a stable [`ErrorCode`]. Also the extractors that turn rejections into them.

use adiuva_model::ErrorCode;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};
use utoipa::ToSchema;

use crate::storage::StorageError;

/// Every error body: `{"error": {"code": "relay.unauthorized", "message": "..."}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable error code (see `adiuva_model::ErrorCode`).
    #[schema(value_type = String, example = "relay.unauthorized")]
    pub code: ErrorCode,
    pub message: String,
}

/// A refused or failed request, answered as an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Seconds, for 429.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InputInvalid, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::RelayUnauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::RelayNotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RelayRateLimited,
            format!("too many requests for this account's tier; retry in {retry_after} s"),
        );
        error.retry_after = Some(retry_after);
        error
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// An extractor's refusal: 413 and 415 keep their status; every other malformed input
    /// (syntax, unknown or missing fields, wrong types: axum says 400 or 422) is a 400.
    fn rejected(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(status, ErrorCode::InputTooLarge, message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(status, ErrorCode::InputInvalid, message),
            _ => Self::new(StatusCode::BAD_REQUEST, ErrorCode::InputInvalid, message),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::QuotaExceeded { .. } => {
                Self::new(StatusCode::PAYMENT_REQUIRED, ErrorCode::RelayQuotaExceeded, error.to_string())
            }
            other => {
                error!(error = %other, "storage failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::RelayStorage,
                    "the relay's storage failed; retry later",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(code = self.code.as_str(), status = self.status.as_u16(), "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

macro_rules! rejections {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                Self::rejected(rejection.status(), rejection.body_text())
            }
        }
    )*};
}
rejections!(JsonRejection, QueryRejection, PathRejection, BytesRejection);

/// A JSON request body; refusals are [`ApiError`]s.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// A raw request body (blobs, key envelopes); refusals are [`ApiError`]s.
pub struct Raw(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(bytes::Bytes::from_request(request, state).await?))
    }
}

/// Query parameters; refusals are [`ApiError`]s.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Path segments; refusals are [`ApiError`]s.
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Any route the API does not have.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RelayNoRoute, "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::RelayNoRoute, "this route does not take that method")
}
