//! What the fuzz targets (`fuzz/`) reach of a provider's answers without a network: the
//! readers a call runs on the bytes it receives, here on bytes given. Not an API.

use std::sync::LazyLock;

use crate::config::{ApiKey, ProviderConfig, ProviderKind, ProviderSettings};
use crate::error::{LlmError, Result};
use crate::http::HttpProvider;
use crate::stream::Answer;
pub use crate::stream::Piece;
use crate::types::{FinishReason, ToolCall, Usage};

/// A provider with a key, so that every message read is cleaned of it.
static PROVIDER: LazyLock<Result<HttpProvider>> = LazyLock::new(|| {
    HttpProvider::new(&ProviderConfig {
        settings: ProviderSettings::new("fuzz", ProviderKind::OpenAi, "model"),
        api_key: Some(ApiKey::new("sk-fuzz-0123456789abcdef")),
    })
});

fn provider() -> Result<&'static HttpProvider> {
    PROVIDER.as_ref().map_err(|error| LlmError::Unreachable { provider: "fuzz".into(), detail: error.to_string() })
}

/// A whole answer's body (`stream: false`), as pieces.
pub fn answer(body: &[u8]) -> Result<Vec<Piece>> {
    provider()?.read_answer(body)
}

/// The pieces of an event stream that arrives as `parts`, one after another, until it ends.
pub async fn stream(parts: Vec<Vec<u8>>) -> Result<Vec<Piece>> {
    let bytes = futures_util::stream::iter(parts.into_iter().map(|part| Ok(bytes::Bytes::from(part))));
    let mut chunks = provider()?.read_stream(Box::pin(bytes));
    let mut pieces = Vec::new();
    while let Some(piece) = chunks.next().await? {
        pieces.push(piece);
    }
    Ok(pieces)
}

/// An answer put together from its pieces, as the router does: its text, tool calls, finish
/// reason and usage.
pub fn assemble(pieces: Vec<Piece>) -> (String, Vec<ToolCall>, FinishReason, Usage) {
    let mut answer = Answer::default();
    for piece in pieces {
        answer.add(piece);
    }
    let (calls, reason) = answer.finish();
    (answer.text, calls, reason, answer.usage)
}

/// A model list's body: the models' ids.
pub fn models(body: &[u8]) -> Result<Vec<String>> {
    provider()?.read_models(body)
}

/// An embeddings body answering `inputs` inputs.
pub fn embeddings(body: &[u8], inputs: usize) -> Result<Vec<Vec<f32>>> {
    provider()?.read_embeddings(body, inputs)
}

/// The error a call refused with `status` reports, from its `Retry-After` value and body.
pub fn refusal(status: u16, retry_after: &str, body: &[u8]) -> Result<LlmError> {
    let retry_after = crate::wire::retry_after(retry_after, chrono::Utc::now());
    Ok(provider()?.status_error(status, retry_after, body))
}
