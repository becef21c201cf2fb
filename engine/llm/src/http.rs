//! One cloud provider over HTTP: sending a request, classifying the answer's status, and
//! reading a server-sent-event stream into [`Piece`]s. A stream is complete only at `[DONE]`
//! or after a `finish_reason`; a stream that ends before either, an `error` event, an error
//! object in a chunk, `finish_reason: "error"` or a chunk that is not JSON is an error, never a
//! short success. Whether that error may still fall back is the router's call (it knows
//! whether output was sent).

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::Value;

use crate::config::{ApiKey, ProviderConfig, ProviderKind, ProviderSettings};
use crate::error::{LlmError, Result};
use crate::quirks;
use crate::stream::Piece;
use crate::types::ChatRequest;
use crate::wire::{self, WireChunk};

/// A provider reached through its OpenAI-compatible endpoint.
pub struct HttpProvider {
    settings: ProviderSettings,
    key: Option<ApiKey>,
    base_url: String,
    client: reqwest::Client,
}

impl HttpProvider {
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        let settings = config.settings.clone();
        let base_url = settings.base_url().unwrap_or_default().trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeouts.connect)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| LlmError::Unreachable { provider: settings.name.clone(), detail: e.to_string() })?;
        Ok(HttpProvider { settings, key: config.api_key.clone(), base_url, client })
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        self.settings.kind
    }

    fn clean(&self, message: &str) -> String {
        wire::clean_message(message, self.key.as_ref().map(ApiKey::expose))
    }

    /// Sends `body` to `path` and returns the response if its status is a success.
    async fn send(&self, path: &str, body: Option<&Value>) -> Result<reqwest::Response> {
        let url = format!("{}/{}", self.base_url, path);
        let mut request = match body {
            Some(body) => self
                .client
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).unwrap_or_default()),
            None => self.client.get(&url),
        };
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        Err(self.status_error(status, retry_after, &body))
    }

    fn transport_error(&self, error: &reqwest::Error) -> LlmError {
        let provider = self.name().to_owned();
        if error.is_connect() && error.is_timeout() {
            return LlmError::ConnectTimeout { provider, limit: self.settings.timeouts.connect };
        }
        // reqwest's messages name the URL, never a header: no key can be in them.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        LlmError::Unreachable { provider, detail: self.clean(&detail) }
    }

    pub(crate) fn status_error(&self, status: u16, retry_after: Option<std::time::Duration>, body: &[u8]) -> LlmError {
        let (kind, message) = wire::error_body(body);
        let message = self.clean(&if kind.is_empty() { message } else { format!("{kind}: {message}") });
        let provider = self.name().to_owned();
        match status {
            401 | 403 => LlmError::Unauthorized { provider, status, message },
            429 => LlmError::RateLimited { provider, retry_after, message },
            408 | 500..=599 => LlmError::Server { provider, status, message },
            _ => LlmError::BadRequest { provider, status, message },
        }
    }

    /// A whole answer (`stream: false`), as pieces.
    pub async fn complete(&self, request: &ChatRequest) -> Result<Vec<Piece>> {
        let body = quirks::chat_body(self.kind(), &self.settings.model, request, false);
        let response = self.send("chat/completions", Some(&body)).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        self.read_answer(&bytes)
    }

    /// A whole answer's body, as pieces.
    pub(crate) fn read_answer(&self, bytes: &[u8]) -> Result<Vec<Piece>> {
        let chunk: WireChunk = serde_json::from_slice(bytes).map_err(|e| self.malformed(&e.to_string()))?;
        if let Some((kind, message)) = chunk.in_band_error() {
            return Err(self.in_band_error(&kind, &message));
        }
        let choices = chunk.choices.as_deref().unwrap_or_default();
        if choices.is_empty() {
            return Err(self.malformed("the answer has no choices"));
        }
        let mut pieces = Vec::new();
        for choice in choices.iter().take(1) {
            if let Some(message) = &choice.message {
                pieces.extend(message.content.clone().filter(|text| !text.is_empty()).map(Piece::Text));
                for (position, call) in message.tool_calls.iter().flatten().enumerate() {
                    pieces.push(Piece::tool_call(position, call));
                }
            }
            pieces.push(Piece::Finish(choice.finish_reason.clone().unwrap_or_default()));
        }
        pieces.extend(chunk.reported_usage().map(Piece::Usage));
        Ok(pieces)
    }

    /// Opens a stream (`stream: true`); its pieces are read with [`SseChunks::next`].
    pub async fn open_stream(&self, request: &ChatRequest) -> Result<SseChunks> {
        let body = quirks::chat_body(self.kind(), &self.settings.model, request, true);
        let response = self.send("chat/completions", Some(&body)).await?;
        Ok(self.read_stream(Box::pin(response.bytes_stream())))
    }

    /// The pieces of the event stream `bytes`.
    pub(crate) fn read_stream(&self, bytes: ByteStream) -> SseChunks {
        SseChunks {
            provider: self.name().to_owned(),
            key: self.key.clone(),
            bytes,
            buffer: Vec::new(),
            event: Event::default(),
            pieces: VecDeque::new(),
            done: false,
            finished: false,
        }
    }

    /// The model ids the provider lists (`GET /models`).
    pub async fn models(&self) -> Result<Vec<String>> {
        let response = self.send("models", None).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        self.read_models(&bytes)
    }

    /// A model list's body: the models' ids.
    pub(crate) fn read_models(&self, bytes: &[u8]) -> Result<Vec<String>> {
        let list: Value = serde_json::from_slice(bytes).map_err(|e| self.malformed(&e.to_string()))?;
        let data = list.get("data").or_else(|| list.get("models")).and_then(Value::as_array);
        let data = data.ok_or_else(|| self.malformed("the model list has no `data`"))?;
        Ok(data
            .iter()
            .filter_map(|model| model.get("id").or_else(|| model.get("name")).and_then(Value::as_str))
            .map(str::to_owned)
            .collect())
    }

    /// Embeddings of `inputs`, in order.
    pub async fn embed(&self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>> {
        if matches!(self.kind(), ProviderKind::Anthropic | ProviderKind::Groq) {
            return Err(LlmError::Unsupported { provider: self.name().to_owned(), operation: "embeddings" });
        }
        let response = self.send("embeddings", Some(&quirks::embedding_body(model, inputs))).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        self.read_embeddings(&bytes, inputs.len())
    }

    /// An embeddings body answering `inputs` inputs: their vectors, in order.
    pub(crate) fn read_embeddings(&self, bytes: &[u8], inputs: usize) -> Result<Vec<Vec<f32>>> {
        #[derive(serde::Deserialize)]
        struct Embeddings {
            data: Vec<Embedding>,
        }
        #[derive(serde::Deserialize)]
        struct Embedding {
            #[serde(default)]
            index: Option<usize>,
            embedding: Vec<f32>,
        }
        let mut answer: Embeddings = serde_json::from_slice(bytes).map_err(|e| self.malformed(&e.to_string()))?;
        if answer.data.len() != inputs {
            return Err(self.malformed(&format!("{} embeddings for {inputs} inputs", answer.data.len())));
        }
        answer.data.sort_by_key(|e| e.index);
        Ok(answer.data.into_iter().map(|e| e.embedding).collect())
    }

    fn malformed(&self, detail: &str) -> LlmError {
        LlmError::Malformed { provider: self.name().to_owned(), detail: self.clean(detail) }
    }

    fn in_band_error(&self, kind: &str, message: &str) -> LlmError {
        in_band_error(self.name(), kind, &self.clean(message))
    }
}

/// An error reported inside a successful response. Before any output it is as retryable as
/// the HTTP status it stands for (Anthropic's `overloaded_error` is its 529).
fn in_band_error(provider: &str, kind: &str, message: &str) -> LlmError {
    let provider = provider.to_owned();
    let message = if kind.is_empty() { message.to_owned() } else { format!("{kind}: {message}") };
    if kind.contains("rate_limit") || kind == "429" || kind == "RESOURCE_EXHAUSTED" {
        return LlmError::RateLimited { provider, retry_after: None, message };
    }
    let status = if kind.contains("overloaded") { 529 } else { 500 };
    LlmError::Server { provider, status, message: format!("error event in the stream: {message}") }
}

fn retry_after(headers: &HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    wire::retry_after(value, chrono::Utc::now())
}

#[derive(Default)]
struct Event {
    name: String,
    data: String,
}

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An open server-sent-event stream of chat completion chunks.
pub struct SseChunks {
    provider: String,
    key: Option<ApiKey>,
    bytes: ByteStream,
    buffer: Vec<u8>,
    event: Event,
    pieces: VecDeque<Piece>,
    /// `[DONE]` was received.
    done: bool,
    /// A `finish_reason` was received: the answer is whole even if `[DONE]` never comes.
    finished: bool,
}

impl SseChunks {
    /// The next piece; `None` once the stream ended properly.
    pub async fn next(&mut self) -> Result<Option<Piece>> {
        loop {
            if let Some(piece) = self.pieces.pop_front() {
                return Ok(Some(piece));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(line_end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=line_end).collect();
                let line = String::from_utf8_lossy(&line[..line_end]);
                self.line(line.strip_suffix('\r').unwrap_or(&line))?;
                continue;
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(self.cut(&format!("the connection broke: {error}"))),
                None if self.finished => return Ok(None),
                None => return Err(self.cut("the stream ended before [DONE]")),
            }
        }
    }

    fn cut(&self, detail: &str) -> LlmError {
        LlmError::Malformed { provider: self.provider.clone(), detail: detail.to_owned() }
    }

    /// One line of the event stream (WHATWG server-sent events).
    fn line(&mut self, line: &str) -> Result<()> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            return self.dispatch(event);
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if !self.event.data.is_empty() {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
            }
            "event" => self.event.name = value.to_owned(),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, event: Event) -> Result<()> {
        if event.data.is_empty() && event.name.is_empty() {
            return Ok(());
        }
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let clean = |message: &str| wire::clean_message(message, self.key.as_ref().map(ApiKey::expose));
        if matches!(event.name.as_str(), "ping" | "keepalive") {
            return Ok(());
        }
        let chunk: WireChunk = match serde_json::from_str(&event.data) {
            Ok(chunk) => chunk,
            Err(_) if event.name == "error" => return Err(in_band_error(&self.provider, "", &clean(&event.data))),
            Err(e) => return Err(self.cut(&format!("a chunk is not JSON ({e})"))),
        };
        if let Some((kind, message)) = chunk.in_band_error() {
            return Err(in_band_error(&self.provider, &kind, &clean(&message)));
        }
        if event.name == "error" {
            return Err(in_band_error(&self.provider, "", &clean(&event.data)));
        }
        for choice in chunk.choices.iter().flatten().take(1) {
            if let Some(delta) = &choice.delta {
                if let Some(text) = delta.content.clone().filter(|text| !text.is_empty()) {
                    self.pieces.push_back(Piece::Text(text));
                }
                for (position, call) in delta.tool_calls.iter().flatten().enumerate() {
                    self.pieces.push_back(Piece::tool_call(position, call));
                }
            }
            match choice.finish_reason.as_deref() {
                None | Some("") => {}
                Some("error") => {
                    return Err(in_band_error(
                        &self.provider,
                        "",
                        "the provider ended the answer with finish_reason \"error\"",
                    ));
                }
                Some(reason) => {
                    self.finished = true;
                    self.pieces.push_back(Piece::Finish(reason.to_owned()));
                }
            }
        }
        if let Some(usage) = chunk.reported_usage() {
            self.pieces.push_back(Piece::Usage(usage));
        }
        Ok(())
    }
}
