//! What can go wrong talking to a model, one variant per kind the router branches on (retry,
//! fall back, stop), each mapped to a stable code. A provider's own message is kept (shortened,
//! with the API key removed) because it is what a person needs to fix a configuration.

use std::time::Duration;

use adiuva_model::ErrorCode;
use serde::{Deserialize, Serialize};

/// One provider's failure, as reported to the caller and recorded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    #[error("{provider}: rate limited{}: {message}", .retry_after.map(|d| format!(" (retry after {} s)", d.as_secs_f64())).unwrap_or_default())]
    RateLimited { provider: String, retry_after: Option<Duration>, message: String },
    #[error("{provider}: server error (HTTP {status}): {message}")]
    Server { provider: String, status: u16, message: String },
    #[error("{provider}: the API key was refused (HTTP {status}): {message}")]
    Unauthorized { provider: String, status: u16, message: String },
    #[error("{provider}: the request was rejected (HTTP {status}): {message}")]
    BadRequest { provider: String, status: u16, message: String },
    #[error("{provider}: unreachable: {detail}")]
    Unreachable { provider: String, detail: String },
    #[error("{provider}: no connection within {} ms", .limit.as_millis())]
    ConnectTimeout { provider: String, limit: Duration },
    #[error("{provider}: no output within {} ms", .limit.as_millis())]
    FirstTokenTimeout { provider: String, limit: Duration },
    #[error("{provider}: the stream went silent for {} ms", .limit.as_millis())]
    IdleTimeout { provider: String, limit: Duration },
    #[error("{provider}: the call took longer than {} ms", .limit.as_millis())]
    TotalTimeout { provider: String, limit: Duration },
    #[error("{provider}: the answer broke off after {received_chars} characters: {detail}")]
    StreamInterrupted { provider: String, received_chars: usize, detail: String },
    #[error("{provider}: unexpected answer: {detail}")]
    Malformed { provider: String, detail: String },
    #[error("{provider}: the request needs about {needed} tokens but {model} holds {window}")]
    ContextOverflow { provider: String, model: String, needed: u64, window: u64 },
    #[error("every provider failed: {}", .attempts.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("; "))]
    AllFailed { attempts: Vec<Attempt> },
    #[error("no language model provider is configured (adiuva llm add)")]
    NoProvider,
    #[error("no language model provider is named {name:?}")]
    UnknownProvider { name: String },
    #[error("{provider}: {operation} is not offered by this provider")]
    Unsupported { provider: String, operation: &'static str },
    #[error("local model {path}: {detail}")]
    LocalModel { path: String, detail: String },
}

impl LlmError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LlmError::RateLimited { .. } => ErrorCode::LlmRateLimited,
            LlmError::Server { .. } => ErrorCode::LlmServerError,
            LlmError::Unauthorized { .. } => ErrorCode::LlmUnauthorized,
            LlmError::BadRequest { .. } => ErrorCode::LlmBadRequest,
            LlmError::Unreachable { .. } => ErrorCode::LlmUnreachable,
            LlmError::ConnectTimeout { .. } => ErrorCode::LlmTimeoutConnect,
            LlmError::FirstTokenTimeout { .. } => ErrorCode::LlmTimeoutFirstToken,
            LlmError::IdleTimeout { .. } => ErrorCode::LlmTimeoutIdle,
            LlmError::TotalTimeout { .. } => ErrorCode::LlmTimeoutTotal,
            LlmError::StreamInterrupted { .. } => ErrorCode::LlmStreamInterrupted,
            LlmError::Malformed { .. } => ErrorCode::LlmMalformedResponse,
            LlmError::ContextOverflow { .. } => ErrorCode::LlmContextOverflow,
            LlmError::AllFailed { .. } => ErrorCode::LlmAllFailed,
            LlmError::NoProvider => ErrorCode::LlmNoProvider,
            LlmError::UnknownProvider { .. } => ErrorCode::LlmUnknownProvider,
            LlmError::Unsupported { .. } => ErrorCode::LlmUnsupported,
            LlmError::LocalModel { .. } => ErrorCode::LlmLocalModel,
        }
    }

    /// Whether trying the same provider again may help: rate limits, server errors, timeouts
    /// and broken connections; never a refused key or a rejected request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Unreachable { .. }
                | LlmError::ConnectTimeout { .. }
                | LlmError::FirstTokenTimeout { .. }
                | LlmError::IdleTimeout { .. }
                | LlmError::TotalTimeout { .. }
                | LlmError::Malformed { .. }
        )
    }

    /// Whether the failure says something about the provider's health (what cooldown counts):
    /// a rejected request or an oversized prompt is the caller's, not the provider's.
    pub fn counts_against_provider(&self) -> bool {
        self.is_retryable() || matches!(self, LlmError::Unauthorized { .. })
    }
}

/// One try of one provider that did not produce the answer: why the router moved on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// The failure (`llm.rate_limited`), or `llm.cooling_down` for a provider skipped while it
    /// cools down.
    pub code: ErrorCode,
    pub message: String,
    /// How long the router waited before its next try of this provider, if it tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): [{}] {}", self.provider, self.model, self.code.as_str(), self.message)
    }
}

pub type Result<T, E = LlmError> = std::result::Result<T, E>;
