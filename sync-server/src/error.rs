//! The relay's errors: every refusal or failure it answers is an [`ErrorBody`] carrying a stable
//! [`ErrorCode`] (the body, [`ApiError`] and the extractors that turn axum's rejections into
//! them are `adiuva_http_api`'s, shared with the desktop daemon); here, the relay's own codes.

use adiuva_model::ErrorCode;
use axum::http::StatusCode;
use tracing::error;

pub use adiuva_http_api::{ApiError, Body, ErrorBody, ErrorDetail, Params, Raw, Segments};

use crate::storage::StorageError;

pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::RelayUnauthorized, message)
}

pub fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RelayNotFound, message)
}

pub fn rate_limited(retry_after: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RelayRateLimited,
        format!("too many requests for this account's tier; retry in {retry_after} s"),
    )
    .retry_after(retry_after)
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

/// Any route the API does not have.
pub async fn no_route() -> ApiError {
    adiuva_http_api::no_route(ErrorCode::RelayNoRoute)
}

pub async fn method_not_allowed() -> ApiError {
    adiuva_http_api::method_not_allowed(ErrorCode::RelayNoRoute)
}
