//! How providers are configured: kind, endpoint, model, limits and key. Settings are plain
//! data the app stores on the device (never in the synced log); the API key is held apart, in a
//! type that wipes itself and never prints.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Which provider (and so which wire quirks) a configuration talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
    Mistral,
    Groq,
    Ollama,
    /// A GGUF model run in this process.
    Local,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Mistral,
        ProviderKind::Groq,
        ProviderKind::Ollama,
        ProviderKind::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Groq => "groq",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Local => "local",
        }
    }

    pub fn parse(text: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The provider's documented OpenAI-compatible base URL (`None` for the local model).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
            ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
            ProviderKind::Groq => Some("https://api.groq.com/openai/v1"),
            ProviderKind::Ollama => Some("http://localhost:11434/v1"),
            ProviderKind::Local => None,
        }
    }

    /// Whether calls need an API key (Ollama and the local model do not).
    pub fn needs_key(self) -> bool {
        !matches!(self, ProviderKind::Ollama | ProviderKind::Local)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key: wiped from memory when dropped, never printed, never serialized.
#[derive(Clone)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(Zeroizing::new(key.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A provider's time limits. Each is separate because one limit for the whole request would
/// cut long streams, and no limit on the first token would wait forever on a stalled server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS).
    #[serde(with = "millis")]
    pub connect: Duration,
    /// From sending the request to the first token (or the whole answer, when not streaming).
    #[serde(with = "millis")]
    pub first_token: Duration,
    /// Longest silence between two chunks of a stream.
    #[serde(with = "millis")]
    pub idle: Duration,
    /// The whole call, first byte to last.
    #[serde(with = "millis")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

/// One configured provider, as stored in the device settings (without its key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderSettings {
    /// The person's name for it (`work-openai`), unique on the device.
    pub name: String,
    pub kind: ProviderKind,
    pub model: String,
    /// Overrides the kind's default endpoint (a proxy, a self-hosted Ollama, a test double).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The GGUF file of a local model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// The model's context window in tokens, when the built-in table does not know it. For
    /// Ollama this must match the server's context length (`OLLAMA_CONTEXT_LENGTH`): its
    /// OpenAI-compatible endpoint cannot set `num_ctx` per request and silently truncates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub timeouts: Timeouts,
}

impl ProviderSettings {
    pub fn new(name: impl Into<String>, kind: ProviderKind, model: impl Into<String>) -> Self {
        ProviderSettings {
            name: name.into(),
            kind,
            model: model.into(),
            base_url: None,
            model_path: None,
            embedding_model: None,
            context_window: None,
            timeouts: Timeouts::default(),
        }
    }

    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref().or(self.kind.default_base_url())
    }
}

/// A provider ready to call: its settings and, for cloud providers, its key.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub settings: ProviderSettings,
    pub api_key: Option<ApiKey>,
}

/// Retries of one provider before moving to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Tries after the first one, per provider and call.
    pub max_retries: u32,
    /// First backoff after a server error or timeout; doubled each time, with jitter.
    #[serde(with = "millis")]
    pub base_backoff: Duration,
    /// The longest the router waits before a retry. A `Retry-After` longer than this moves on
    /// to the next provider at once (and cools this one down until then) instead of waiting.
    #[serde(with = "millis")]
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 2, base_backoff: Duration::from_millis(500), max_wait: Duration::from_secs(10) }
    }
}

/// When a failing provider is skipped for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CooldownPolicy {
    /// Consecutive failed calls (each after its retries) that start a cooldown.
    pub failures: u32,
    #[serde(with = "millis")]
    pub duration: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy { failures: 3, duration: Duration::from_secs(60) }
    }
}

/// Everything the router needs: the fallback chain, in order, and its policies.
#[derive(Clone, Debug, Default)]
pub struct RouterConfig {
    pub chain: Vec<ProviderConfig>,
    pub retry: RetryPolicy,
    pub cooldown: CooldownPolicy,
}
