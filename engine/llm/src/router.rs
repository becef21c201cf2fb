//! The router: one client over a fallback chain of providers.
//!
//! For each call it walks the chain in order, skipping providers that are cooling down (unless
//! all are) and those whose context window the request does not fit. Each provider is tried,
//! and tried again after a rate limit, a server error, a timeout or a broken connection (never
//! after a refused key or a rejected request), waiting what `Retry-After` asks or an
//! exponential, jittered backoff, never longer than the policy's cap: a provider that asks for
//! more is left for the next one at once. Every failed try is recorded and reported in the
//! answer's `fallbacks`.
//!
//! A stream falls back only until its first token: the first piece is awaited within the
//! provider's first-token limit, and only then is anything sent to the caller. After that a
//! failure ends the stream with `llm.stream_interrupted` (the partial answer is not a result),
//! unless the caller allowed restarts, in which case the answer starts over on the next
//! provider behind an explicit `Restarted` event.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adiuva_model::ErrorCode;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::accounting::{self, CallRecord};
use crate::config::{CooldownPolicy, ProviderConfig, ProviderKind, ProviderSettings, RetryPolicy, RouterConfig};
use crate::error::{Attempt, LlmError, Result};
use crate::http::{HttpProvider, SseChunks};
use crate::local::{LocalModel, LocalStream};
use crate::stream::{Answer, Piece};
use crate::types::{ChatRequest, Completion, StreamEvent};

/// Where a provider's answers come from.
enum Backend {
    Http(Box<HttpProvider>),
    Local(Arc<LocalModel>),
}

/// An open answer of either backend.
enum PieceSource {
    Http(SseChunks),
    Local(LocalStream),
}

impl PieceSource {
    async fn next(&mut self) -> Result<Option<Piece>> {
        match self {
            PieceSource::Http(chunks) => chunks.next().await,
            PieceSource::Local(stream) => stream.next().await,
        }
    }
}

struct Provider {
    settings: ProviderSettings,
    backend: Backend,
}

impl Provider {
    fn name(&self) -> &str {
        &self.settings.name
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Vec<Piece>> {
        match &self.backend {
            Backend::Http(http) => http.complete(request).await,
            Backend::Local(model) => {
                let mut stream = model.generate(request)?;
                let mut pieces = Vec::new();
                while let Some(piece) = stream.next().await? {
                    pieces.push(piece);
                }
                Ok(pieces)
            }
        }
    }

    async fn open(&self, request: &ChatRequest) -> Result<PieceSource> {
        match &self.backend {
            Backend::Http(http) => Ok(PieceSource::Http(http.open_stream(request).await?)),
            Backend::Local(model) => Ok(PieceSource::Local(model.generate(request)?)),
        }
    }

    /// Opens a stream and waits for its first piece (`None`: an empty answer).
    async fn open_first(&self, request: &ChatRequest) -> Result<(PieceSource, Option<Piece>)> {
        let mut source = self.open(request).await?;
        let first = source.next().await?;
        Ok((source, first))
    }

    /// Refuses a request that does not fit the model's context window, before any call.
    fn check_context(&self, request: &ChatRequest) -> Result<()> {
        let window = match &self.backend {
            Backend::Local(model) => Some(model.context_window()),
            Backend::Http(_) => self.settings.context_window.or_else(|| known_context_window(&self.settings)),
        };
        let Some(window) = window else { return Ok(()) };
        let prompt = match &self.backend {
            Backend::Local(model) => model.count_prompt_tokens(request)?,
            Backend::Http(_) => estimated_prompt_tokens(request),
        };
        let needed = prompt + u64::from(request.max_tokens.unwrap_or(0));
        if needed > window {
            return Err(LlmError::ContextOverflow {
                provider: self.name().to_owned(),
                model: self.settings.model.clone(),
                needed,
                window,
            });
        }
        Ok(())
    }
}

/// An upper estimate of a request's prompt tokens without the provider's tokenizer: about
/// three bytes per token (English averages four), so a borderline request is refused here
/// rather than truncated there.
fn estimated_prompt_tokens(request: &ChatRequest) -> u64 {
    let message_bytes: usize = request
        .messages
        .iter()
        .map(|m| m.content.len() + m.tool_calls.iter().map(|c| c.name.len() + c.arguments.len()).sum::<usize>() + 8)
        .sum();
    let tool_bytes: usize =
        request.tools.iter().map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len()).sum();
    ((message_bytes + tool_bytes) / 3) as u64
}

/// Context windows of commonly used models, and Ollama's documented default context length
/// (4096 tokens on machines with less than 24 GiB of VRAM) for any Ollama model.
fn known_context_window(settings: &ProviderSettings) -> Option<u64> {
    let model = settings.model.as_str();
    match settings.kind {
        ProviderKind::Ollama => Some(4096),
        ProviderKind::OpenAi if model.starts_with("gpt-4o") => Some(128_000),
        ProviderKind::OpenAi if model.starts_with("gpt-4.1") => Some(1_047_576),
        ProviderKind::Anthropic if model.starts_with("claude-") => Some(200_000),
        ProviderKind::Gemini if model.starts_with("gemini-") => Some(1_048_576),
        ProviderKind::Mistral if model.starts_with("mistral-") => Some(128_000),
        ProviderKind::Groq if model.starts_with("llama-3") => Some(131_072),
        _ => None,
    }
}

/// Which providers are failing, shared by every router of a process so a provider that keeps
/// failing is skipped by the next call too.
#[derive(Debug, Default)]
pub struct Health {
    providers: Mutex<HashMap<String, ProviderHealth>>,
}

#[derive(Debug, Default)]
struct ProviderHealth {
    consecutive_failures: u32,
    cooling_until: Option<Instant>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    pub fn is_cooling(&self, provider: &str) -> bool {
        let providers = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        providers.get(provider).and_then(|h| h.cooling_until).is_some_and(|until| Instant::now() < until)
    }

    fn succeeded(&self, provider: &str) {
        self.providers.lock().unwrap_or_else(|e| e.into_inner()).remove(provider);
    }

    /// A call failed on `provider` after its retries. `at_least` is a cooldown the provider
    /// itself asked for (a `Retry-After` beyond the router's cap).
    fn failed(&self, provider: &str, policy: CooldownPolicy, at_least: Option<Duration>) {
        let mut providers = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        let health = providers.entry(provider.to_owned()).or_default();
        health.consecutive_failures += 1;
        let mut cooldown = at_least;
        if health.consecutive_failures >= policy.failures {
            cooldown = Some(cooldown.unwrap_or_default().max(policy.duration));
        }
        if let Some(cooldown) = cooldown {
            tracing::info!(provider, cooldown_ms = cooldown.as_millis() as u64, "provider cooling down");
            health.cooling_until = Some(Instant::now() + cooldown);
        }
    }
}

/// Receives every call's record (the app stores them on the device).
pub type Recorder = Arc<dyn Fn(CallRecord) + Send + Sync>;

/// How a stream may behave after its first token.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamOptions {
    /// Allow starting the answer over on the next provider (after a `Restarted` event) when a
    /// provider breaks off mid-answer. Off by default: the stream then ends with an error.
    pub allow_restart: bool,
}

/// One client over the fallback chain. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    providers: Arc<Vec<Provider>>,
    retry: RetryPolicy,
    cooldown: CooldownPolicy,
    health: Arc<Health>,
    recorder: Option<Recorder>,
    correlation: Option<String>,
}

/// A provider that answered, and the tries before it.
struct Answered<T> {
    value: T,
    provider: usize,
    started: Instant,
    fallbacks: Vec<Attempt>,
}

impl Router {
    /// A router over `config.chain`, in order. Local models are loaded here.
    pub fn new(config: RouterConfig, health: Arc<Health>) -> Result<Self> {
        if config.chain.is_empty() {
            return Err(LlmError::NoProvider);
        }
        let providers = config.chain.iter().map(provider).collect::<Result<Vec<_>>>()?;
        Ok(Router {
            providers: Arc::new(providers),
            retry: config.retry,
            cooldown: config.cooldown,
            health,
            recorder: None,
            correlation: None,
        })
    }

    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Tags every record with the command or request this router serves.
    pub fn with_correlation(mut self, correlation: impl Into<String>) -> Self {
        self.correlation = Some(correlation.into());
        self
    }

    /// A whole answer from the first provider of the chain that gives one.
    pub async fn complete(&self, request: &ChatRequest) -> Result<Completion> {
        let answered = self.first_answer(0, request, |provider| provider.complete(request)).await?;
        let mut answer = Answer::default();
        for piece in answered.value {
            answer.add(piece);
        }
        Ok(self.finish(answered.provider, answered.started, answer, answered.fallbacks))
    }

    /// The models `provider` offers (for a local model: its file).
    pub async fn models(&self, provider: &str) -> Result<Vec<String>> {
        let found = self.providers.iter().find(|p| p.name() == provider);
        let found = found.ok_or_else(|| LlmError::UnknownProvider { name: provider.to_owned() })?;
        match &found.backend {
            Backend::Http(http) => http.models().await,
            Backend::Local(_) => Ok(vec![found.settings.model.clone()]),
        }
    }

    /// Embeddings of `inputs` from the first provider with an embedding model that gives them.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>> {
        let answered = self
            .first_answer(0, &ChatRequest::default(), |provider| async move {
                match (&provider.backend, provider.settings.embedding_model.as_deref()) {
                    (Backend::Http(http), Some(model)) => http.embed(model, inputs).await,
                    _ => Err(LlmError::Unsupported { provider: provider.name().to_owned(), operation: "embeddings" }),
                }
            })
            .await?;
        Ok(answered.value)
    }

    /// A stream of the answer: see [`StreamEvent`] for what it yields. Must be called within a
    /// Tokio runtime.
    pub fn stream(&self, request: ChatRequest, options: StreamOptions) -> EventStream {
        let (events, receiver) = mpsc::channel(64);
        let router = self.clone();
        tokio::spawn(async move { router.drive_stream(request, options, events).await });
        EventStream { receiver }
    }

    async fn drive_stream(
        &self,
        request: ChatRequest,
        options: StreamOptions,
        events: mpsc::Sender<Result<StreamEvent>>,
    ) {
        let mut start = 0;
        let mut fallbacks = Vec::new();
        let mut restarted_from: Option<(String, LlmError)> = None;
        loop {
            let opened = self.first_answer(start, &request, |provider| provider.open_first(&request)).await;
            let answered = match opened {
                Ok(answered) => answered,
                Err(error) => {
                    let _ = events.send(Err(error)).await;
                    return;
                }
            };
            fallbacks.extend(answered.fallbacks);
            let provider = &self.providers[answered.provider];
            if let Some((from, error)) = restarted_from.take() {
                let restarted = StreamEvent::Restarted {
                    from,
                    to: provider.name().to_owned(),
                    code: error.code(),
                    reason: error.to_string(),
                };
                if events.send(Ok(restarted)).await.is_err() {
                    return;
                }
            }
            let (mut source, first) = answered.value;
            let mut answer = Answer::default();
            let outcome = self.forward(provider, answered.started, &mut source, first, &mut answer, &events).await;
            match outcome {
                Ok(true) => {}
                Ok(false) => return, // The caller went away.
                Err(error) => {
                    let error = LlmError::StreamInterrupted {
                        provider: provider.name().to_owned(),
                        received_chars: answer.text.chars().count(),
                        detail: error.to_string(),
                    };
                    self.record(provider, answered.started, Default::default(), error.code().as_str());
                    self.health.failed(provider.name(), self.cooldown, None);
                    fallbacks.push(attempt(provider, &error, None));
                    if options.allow_restart && answered.provider + 1 < self.providers.len() {
                        start = answered.provider + 1;
                        restarted_from = Some((provider.name().to_owned(), error));
                        continue;
                    }
                    let _ = events.send(Err(error)).await;
                    return;
                }
            }
            let completion = self.finish(answered.provider, answered.started, answer, fallbacks);
            for call in completion.tool_calls.clone() {
                if events.send(Ok(StreamEvent::ToolCall { call })).await.is_err() {
                    return;
                }
            }
            let _ = events.send(Ok(StreamEvent::Done { completion })).await;
            return;
        }
    }

    /// Sends the answer's tokens on as they come. `Ok(false)` if the caller went away.
    async fn forward(
        &self,
        provider: &Provider,
        started: Instant,
        source: &mut PieceSource,
        first: Option<Piece>,
        answer: &mut Answer,
        events: &mpsc::Sender<Result<StreamEvent>>,
    ) -> Result<bool> {
        let limits = provider.settings.timeouts;
        let mut next = first;
        let mut ended = next.is_none();
        loop {
            if let Some(piece) = next.take() {
                if let Piece::Text(text) = &piece
                    && events.send(Ok(StreamEvent::Token { text: text.clone() })).await.is_err()
                {
                    return Ok(false);
                }
                answer.add(piece);
            }
            if ended {
                return Ok(true);
            }
            let total_left = limits.total.saturating_sub(started.elapsed());
            let wait = limits.idle.min(total_left);
            match tokio::time::timeout(wait, source.next()).await {
                Ok(Ok(Some(piece))) => next = Some(piece),
                Ok(Ok(None)) => ended = true,
                Ok(Err(error)) => return Err(error),
                Err(_) if wait == total_left => {
                    return Err(LlmError::TotalTimeout { provider: provider.name().to_owned(), limit: limits.total });
                }
                Err(_) => {
                    return Err(LlmError::IdleTimeout { provider: provider.name().to_owned(), limit: limits.idle });
                }
            }
        }
    }

    /// Walks the chain from `start` until `call` succeeds on a provider.
    async fn first_answer<'a, T, F, Fut>(
        &'a self,
        start: usize,
        request: &ChatRequest,
        mut call: F,
    ) -> Result<Answered<T>>
    where
        F: FnMut(&'a Provider) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut fallbacks = Vec::new();
        let mut last_error = None;
        let candidates = &self.providers[start.min(self.providers.len())..];
        let all_cooling = candidates.iter().all(|p| self.health.is_cooling(p.name()));
        for (offset, provider) in candidates.iter().enumerate() {
            if !all_cooling && self.health.is_cooling(provider.name()) {
                fallbacks.push(Attempt {
                    provider: provider.name().to_owned(),
                    model: provider.settings.model.clone(),
                    code: ErrorCode::LlmCoolingDown,
                    message: "skipped: failed repeatedly and is cooling down".into(),
                    waited_ms: None,
                });
                continue;
            }
            if let Err(error) = provider.check_context(request) {
                tracing::info!(provider = provider.name(), %error, "falling back");
                fallbacks.push(attempt(provider, &error, None));
                last_error = Some(error);
                continue;
            }
            let mut retries = 0;
            loop {
                let started = Instant::now();
                let limit = provider.settings.timeouts.first_token.min(provider.settings.timeouts.total);
                let outcome = match tokio::time::timeout(limit, call(provider)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(LlmError::FirstTokenTimeout { provider: provider.name().to_owned(), limit }),
                };
                let error = match outcome {
                    Ok(value) => {
                        self.health.succeeded(provider.name());
                        return Ok(Answered { value, provider: start + offset, started, fallbacks });
                    }
                    Err(error) => error,
                };
                self.record(provider, started, Default::default(), error.code().as_str());
                let wait = (error.is_retryable() && retries < self.retry.max_retries)
                    .then(|| self.retry_wait(&error, retries))
                    .flatten();
                tracing::info!(provider = provider.name(), %error, retry_in_ms = wait.map(|w| w.as_millis() as u64), "call failed");
                fallbacks.push(attempt(provider, &error, wait));
                match wait {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        retries += 1;
                    }
                    None => {
                        if error.counts_against_provider() {
                            let asked = match &error {
                                LlmError::RateLimited { retry_after, .. } => *retry_after,
                                _ => None,
                            };
                            self.health.failed(
                                provider.name(),
                                self.cooldown,
                                asked.filter(|d| *d > self.retry.max_wait),
                            );
                        }
                        last_error = Some(error);
                        break;
                    }
                }
            }
        }
        let tried: Vec<_> = fallbacks.iter().map(|a| a.provider.as_str()).collect();
        let single_provider = tried.windows(2).all(|w| w[0] == w[1]);
        match last_error {
            Some(error) if single_provider => Err(error),
            _ => Err(LlmError::AllFailed { attempts: fallbacks }),
        }
    }

    /// How long to wait before trying again after `error`, or `None` to move on: what
    /// `Retry-After` asks (plus up to 10% jitter, so clients told the same time do not return
    /// together), else an exponential backoff with full jitter; never beyond the cap, and a
    /// provider asking for more than the cap is not waited for.
    fn retry_wait(&self, error: &LlmError, retries: u32) -> Option<Duration> {
        let cap = self.retry.max_wait;
        if let LlmError::RateLimited { retry_after: Some(asked), .. } = error {
            if *asked > cap {
                return None;
            }
            return Some((*asked + asked.mul_f64(0.1 * random_unit())).min(cap));
        }
        let backoff = self.retry.base_backoff.saturating_mul(2u32.saturating_pow(retries)).min(cap);
        Some(backoff.mul_f64(0.5 + 0.5 * random_unit()))
    }

    fn finish(&self, index: usize, started: Instant, mut answer: Answer, fallbacks: Vec<Attempt>) -> Completion {
        let provider = &self.providers[index];
        let (tool_calls, finish_reason) = answer.finish();
        let usage = answer.usage;
        let cost = accounting::cost(accounting::price(provider.settings.kind, &provider.settings.model), usage);
        let latency_ms = self.record(provider, started, usage, "ok");
        Completion {
            provider: provider.name().to_owned(),
            model: provider.settings.model.clone(),
            text: answer.text,
            tool_calls,
            finish_reason,
            usage,
            cost,
            latency_ms,
            fallbacks,
        }
    }

    /// Records one call (never its prompt or answer) and returns its latency.
    fn record(&self, provider: &Provider, started: Instant, usage: crate::types::Usage, outcome: &str) -> u64 {
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(recorder) = &self.recorder {
            recorder(CallRecord {
                at: Utc::now(),
                provider: provider.name().to_owned(),
                kind: provider.settings.kind,
                model: provider.settings.model.clone(),
                usage,
                cost: accounting::cost(accounting::price(provider.settings.kind, &provider.settings.model), usage),
                latency_ms,
                outcome: outcome.to_owned(),
                correlation: self.correlation.clone(),
            });
        }
        latency_ms
    }
}

fn provider(config: &ProviderConfig) -> Result<Provider> {
    let backend = match config.settings.kind {
        ProviderKind::Local => Backend::Local(LocalModel::load_cached(&config.settings)?),
        _ => Backend::Http(Box::new(HttpProvider::new(config)?)),
    };
    Ok(Provider { settings: config.settings.clone(), backend })
}

fn attempt(provider: &Provider, error: &LlmError, waited: Option<Duration>) -> Attempt {
    Attempt {
        provider: provider.name().to_owned(),
        model: provider.settings.model.clone(),
        code: error.code(),
        message: error.to_string(),
        waited_ms: waited.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A uniform number in [0, 1) from the OS, for jitter (0.5 if the OS has none to give).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// The events of one streamed answer.
pub struct EventStream {
    receiver: mpsc::Receiver<Result<StreamEvent>>,
}

impl EventStream {
    /// The next event; `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<StreamEvent>> {
        self.receiver.recv().await
    }
}

impl futures_util::Stream for EventStream {
    type Item = Result<StreamEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.receiver.poll_recv(context)
    }
}
