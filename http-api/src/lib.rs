//! What Adiuva's HTTP APIs share — the blind relay (`adiuva-server`) and the desktop daemon's
//! local API: every refusal or failure is answered as an [`ErrorBody`] carrying a stable
//! [`ErrorCode`], axum's own extractor rejections (malformed JSON, unknown fields, oversized
//! bodies, bad paths and queries) included, through the extractors here; and the bearer-token
//! security scheme their OpenAPI documents declare.
//!
//! Each API keeps what is its own: which codes its failures map to, and its fallbacks.

use adiuva_model::ErrorCode;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Every error body: `{"error": {"code": "input.invalid", "message": "..."}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable error code (see `adiuva_model::ErrorCode`).
    #[schema(value_type = String, example = "input.invalid")]
    pub code: ErrorCode,
    pub message: String,
}

/// A refused or failed request, answered as an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// Malformed input: 400 `input.invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InputInvalid, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
    }

    /// The same error, telling the client when to try again.
    pub fn retry_after(self, seconds: u64) -> Self {
        Self { retry_after: Some(seconds), ..self }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } }
    }

    /// An extractor's refusal: 413 and 415 keep their status; every other malformed input
    /// (syntax, unknown or missing fields, wrong types: axum says 400 or 422) is a 400, as the
    /// OpenAPI documents say.
    fn rejected(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(status, ErrorCode::InputTooLarge, message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(status, ErrorCode::InputInvalid, message),
            _ => Self::invalid(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(code = self.code.as_str(), status = self.status.as_u16(), "request failed");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
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

/// A JSON request body.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// A raw request body (opaque bytes).
pub struct Raw(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(bytes::Bytes::from_request(request, state).await?))
    }
}

/// Query parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Path segments: one as a `String`, several as a tuple.
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The OpenAPI security scheme `token`: an HTTP bearer token, of `format` if given (e.g. JWT).
pub struct BearerToken {
    pub format: Option<&'static str>,
}

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer);
        let scheme = match self.format {
            Some(format) => scheme.bearer_format(format),
            None => scheme,
        };
        components.add_security_scheme("token", SecurityScheme::Http(scheme.build()));
    }
}

/// The fallback answer for a route the API does not have (`code` is the API's own).
pub fn no_route(code: ErrorCode) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code, "no such route")
}

/// The fallback answer for a route that does not take the request's method.
pub fn method_not_allowed(code: ErrorCode) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, code, "this route does not take that method")
}
