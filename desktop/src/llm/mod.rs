//! The language model commands on this device: which providers it uses (kept in the device
//! settings, never in the synced log), their API keys (in the OS keyring where there is one,
//! else in the sealed device settings), the record of every call, and asking. The router, the
//! providers and the accounting are `adiuva-llm`'s; this module stores and wires them.

pub mod commands;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use adiuva_engine::Workspace;
use adiuva_engine::keystore;
use adiuva_llm::{
    ApiKey, CallRecord, ChatRequest, Completion, Health, LlmError, Message, ProviderConfig, ProviderKind,
    ProviderSettings, Router, RouterConfig, StreamEvent, StreamOptions, UsageSummary,
};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

use crate::service::{Error, Result};

/// The device setting holding the providers and the fallback chain.
const SETTINGS: &str = "llm/settings";
/// The device setting holding the record of calls.
const USAGE: &str = "llm/usage";
/// The OS keyring's service for API keys.
const KEYRING_SERVICE: &str = "adiuva-llm";
/// Calls kept in the record (the oldest are dropped).
const USAGE_KEPT: usize = 10_000;
/// Calls shown by `llm usage` besides the totals.
const USAGE_SHOWN: usize = 20;

/// Which providers are failing, shared by every call this process makes (the daemon's
/// included), so a provider that keeps failing is skipped for its cooldown.
static HEALTH: LazyLock<Arc<Health>> = LazyLock::new(Health::new);

/// The stored form of the providers (`llm/settings`), versioned.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    v: u32,
    providers: Vec<StoredProvider>,
    /// The fallback chain, by name, in order.
    chain: Vec<String>,
}

const STORED_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StoredProvider {
    settings: ProviderSettings,
    key: KeyPlace,
}

/// Where a provider's API key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyPlace {
    /// It needs none (Ollama, a local model).
    None,
    OsKeyring,
    /// Sealed in the device settings, where the OS has no keyring.
    DeviceSettings,
}

/// A provider to add (or replace, by name).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    pub name: String,
    /// `openai`, `anthropic`, `gemini`, `mistral`, `groq`, `ollama` or `local`.
    pub kind: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// A local model's GGUF file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub model_path: Option<PathBuf>,
    /// The provider's API key; stored in the OS keyring or the sealed device settings, never
    /// shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for NewProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProvider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A configured provider, as shown (never its key).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderInfo {
    pub name: String,
    pub kind: String,
    pub model: String,
    pub base_url: Option<String>,
    #[schema(value_type = Option<String>)]
    pub model_path: Option<PathBuf>,
    pub key: KeyPlace,
    /// Its place in the fallback chain (0 is tried first), if it is in it.
    pub position: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderInfo>,
    pub chain: Vec<String>,
}

/// What a test call found.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TestReport {
    pub provider: String,
    pub model: String,
    pub latency_ms: u64,
    pub reply: String,
}

/// The record of calls: totals per provider and per day, and the latest calls.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    #[schema(value_type = Object)]
    pub summary: UsageSummary,
    #[schema(value_type = Vec<Object>)]
    pub recent: Vec<CallRecord>,
}

/// A question for the models.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    pub prompt: String,
    /// Ask this provider only, instead of the fallback chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Stream the answer's tokens as they come.
    #[serde(default)]
    pub stream: bool,
}

fn read_stored(workspace: &Workspace) -> Result<Stored> {
    match workspace.device_setting(SETTINGS)? {
        None => Ok(Stored { v: STORED_VERSION, ..Stored::default() }),
        Some(bytes) => {
            let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!("the language model settings are unreadable: {}", adiuva_engine::json_error(&e)))
            })?;
            if stored.v > STORED_VERSION {
                return Err(Error::invalid("the language model settings were written by a newer version"));
            }
            Ok(stored)
        }
    }
}

fn write_stored(workspace: &mut Workspace, stored: &Stored) -> Result<()> {
    let bytes = serde_json::to_vec(stored).map_err(|e| Error::invalid(e.to_string()))?;
    Ok(workspace.set_device_setting(SETTINGS, &bytes)?)
}

fn key_setting(name: &str) -> String {
    format!("llm/key/{name}")
}

fn keyring_account(workspace: &Workspace, name: &str) -> String {
    format!("workspace {} provider {name}", workspace.workspace_id())
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!("{name:?} is not a provider name: use letters, digits, '-', '_', '.'")))
    }
}

fn info(stored: &Stored, provider: &StoredProvider) -> ProviderInfo {
    let settings = &provider.settings;
    ProviderInfo {
        name: settings.name.clone(),
        kind: settings.kind.to_string(),
        model: settings.model.clone(),
        base_url: settings.base_url().map(str::to_owned),
        model_path: settings.model_path.clone(),
        key: provider.key,
        position: stored.chain.iter().position(|name| *name == settings.name),
    }
}

fn list_of(stored: &Stored) -> ProviderList {
    ProviderList { providers: stored.providers.iter().map(|p| info(stored, p)).collect(), chain: stored.chain.clone() }
}

/// Adds a provider, or replaces the one of the same name; a first provider becomes the chain.
pub fn add(workspace: &mut Workspace, new: NewProvider) -> Result<ProviderInfo> {
    check_name(&new.name)?;
    let kind = ProviderKind::parse(&new.kind).ok_or_else(|| {
        Error::invalid(format!(
            "unknown kind {:?}: openai, anthropic, gemini, mistral, groq, ollama or local",
            new.kind
        ))
    })?;
    if new.model.trim().is_empty() {
        return Err(Error::invalid("a provider needs a model (--model)"));
    }
    let mut settings = ProviderSettings::new(&new.name, kind, new.model.trim());
    settings.base_url = new.base_url.filter(|url| !url.is_empty());
    if kind == ProviderKind::Local {
        let path = new.model_path.ok_or_else(|| Error::invalid("a local model needs its GGUF file (--model-path)"))?;
        let path = std::fs::canonicalize(&path).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        settings.model_path = Some(path);
    }
    let api_key = new.api_key.filter(|key| !key.is_empty()).map(zeroize::Zeroizing::new);
    if kind.needs_key() && api_key.is_none() {
        return Err(Error::invalid(format!("{kind} needs an API key (ADIUVA_API_KEY, or typed when asked)")));
    }
    let account = keyring_account(workspace, &new.name);
    forget_key(workspace, &new.name)?;
    let key = match api_key {
        None => KeyPlace::None,
        Some(key) => match keystore::store_os_secret(KEYRING_SERVICE, &account, key.as_bytes()) {
            Ok(()) => KeyPlace::OsKeyring,
            Err(adiuva_engine::Error::KeyringUnavailable { detail }) => {
                tracing::info!(%detail, "no OS keyring; the API key goes into the sealed device settings");
                workspace.set_device_setting(&key_setting(&new.name), key.as_bytes())?;
                KeyPlace::DeviceSettings
            }
            Err(error) => return Err(error.into()),
        },
    };
    let mut stored = read_stored(workspace)?;
    stored.v = STORED_VERSION;
    stored.providers.retain(|p| p.settings.name != new.name);
    stored.providers.push(StoredProvider { settings, key });
    if stored.chain.is_empty() {
        stored.chain.push(new.name.clone());
    }
    write_stored(workspace, &stored)?;
    let added = stored.providers.last().map(|p| info(&stored, p));
    added.ok_or_else(|| Error::invalid("the provider was not stored"))
}

/// Removes a key from wherever it may be.
fn forget_key(workspace: &mut Workspace, name: &str) -> Result<()> {
    match keystore::delete_os_secret(KEYRING_SERVICE, &keyring_account(workspace, name)) {
        Ok(()) | Err(adiuva_engine::Error::KeyringUnavailable { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(workspace.remove_device_setting(&key_setting(name))?)
}

pub fn list(workspace: &Workspace) -> Result<ProviderList> {
    Ok(list_of(&read_stored(workspace)?))
}

pub fn remove(workspace: &mut Workspace, name: &str) -> Result<ProviderList> {
    let mut stored = read_stored(workspace)?;
    if !stored.providers.iter().any(|p| p.settings.name == name) {
        return Err(LlmError::UnknownProvider { name: name.to_owned() }.into());
    }
    forget_key(workspace, name)?;
    stored.providers.retain(|p| p.settings.name != name);
    stored.chain.retain(|n| n != name);
    write_stored(workspace, &stored)?;
    Ok(list_of(&stored))
}

/// Sets the fallback chain, in order.
pub fn set_chain(workspace: &mut Workspace, chain: Vec<String>) -> Result<ProviderList> {
    let mut stored = read_stored(workspace)?;
    for name in &chain {
        if !stored.providers.iter().any(|p| p.settings.name == *name) {
            return Err(LlmError::UnknownProvider { name: name.clone() }.into());
        }
    }
    if chain.is_empty() {
        return Err(Error::invalid("name at least one provider"));
    }
    stored.chain = chain;
    write_stored(workspace, &stored)?;
    Ok(list_of(&stored))
}

fn load_key(workspace: &Workspace, provider: &StoredProvider) -> Result<Option<ApiKey>> {
    let name = &provider.settings.name;
    let bytes = match provider.key {
        KeyPlace::None => return Ok(None),
        KeyPlace::OsKeyring => keystore::load_os_secret(KEYRING_SERVICE, &keyring_account(workspace, name))?,
        KeyPlace::DeviceSettings => workspace.device_setting(&key_setting(name))?.map(zeroize::Zeroizing::new),
    };
    let bytes =
        bytes.ok_or_else(|| Error::invalid(format!("the API key of {name} is missing: add the provider again")))?;
    let key = std::str::from_utf8(&bytes).map_err(|_| Error::invalid(format!("the API key of {name} is not text")))?;
    Ok(Some(ApiKey::new(key)))
}

/// A call ready to run: its router, and the records its calls leave for [`finish`].
pub struct Prepared {
    router: Router,
    records: Arc<Mutex<Vec<CallRecord>>>,
}

/// Builds the router of a call: `only` that provider, or the fallback chain. Only this and
/// [`finish`] need the workspace, so a daemon does not hold it while a model answers.
pub fn prepare(workspace: &Workspace, only: Option<&str>, correlation: Ulid) -> Result<Prepared> {
    let stored = read_stored(workspace)?;
    let names: Vec<String> = match only {
        Some(name) => vec![name.to_owned()],
        None => stored.chain.clone(),
    };
    let mut chain = Vec::new();
    for name in names {
        let provider = stored
            .providers
            .iter()
            .find(|p| p.settings.name == name)
            .ok_or_else(|| LlmError::UnknownProvider { name: name.clone() })?;
        chain.push(ProviderConfig { settings: provider.settings.clone(), api_key: load_key(workspace, provider)? });
    }
    let records: Arc<Mutex<Vec<CallRecord>>> = Arc::default();
    let sink = records.clone();
    let router = Router::new(RouterConfig { chain, ..RouterConfig::default() }, HEALTH.clone())?
        .with_correlation(correlation.to_string())
        .with_recorder(Arc::new(move |record| sink.lock().unwrap_or_else(|e| e.into_inner()).push(record)));
    Ok(Prepared { router, records })
}

/// Appends the records of `prepared`'s calls to the device's record of calls.
pub fn finish(workspace: &mut Workspace, prepared: &Prepared) -> Result<()> {
    let new = std::mem::take(&mut *prepared.records.lock().unwrap_or_else(|e| e.into_inner()));
    if new.is_empty() {
        return Ok(());
    }
    let mut all = read_records(workspace)?;
    all.extend(new);
    let excess = all.len().saturating_sub(USAGE_KEPT);
    all.drain(..excess);
    let bytes = serde_json::to_vec(&all).map_err(|e| Error::invalid(e.to_string()))?;
    Ok(workspace.set_device_setting(USAGE, &bytes)?)
}

fn read_records(workspace: &Workspace) -> Result<Vec<CallRecord>> {
    match workspace.device_setting(USAGE)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!("the record of calls is unreadable: {}", adiuva_engine::json_error(&e)))
        }),
    }
}

pub fn usage(workspace: &Workspace) -> Result<UsageReport> {
    let records = read_records(workspace)?;
    let summary = UsageSummary::of(&records);
    let recent = records.iter().rev().take(USAGE_SHOWN).rev().cloned().collect();
    Ok(UsageReport { summary, recent })
}

/// Runs `future` to its end: on the daemon's runtime when called from one of its blocking
/// threads, else on a runtime of its own.
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return Ok(handle.block_on(future));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Reported { code: adiuva_model::ErrorCode::Internal, message: e.to_string() })?;
    Ok(runtime.block_on(future))
}

/// Asks the models, telling `on_event` each stream event as it comes (when streaming).
pub async fn ask_with(
    prepared: &Prepared,
    request: AskRequest,
    on_event: &mut (dyn FnMut(&StreamEvent) + Send),
) -> Result<Completion, LlmError> {
    let chat = ChatRequest::new(vec![Message::user(request.prompt)]);
    if !request.stream {
        return prepared.router.complete(&chat).await;
    }
    let mut events = prepared.router.stream(chat, StreamOptions::default());
    while let Some(event) = events.next().await {
        let event = event?;
        on_event(&event);
        if let StreamEvent::Done { completion } = event {
            return Ok(completion);
        }
    }
    Err(LlmError::StreamInterrupted {
        provider: String::new(),
        received_chars: 0,
        detail: "the stream ended without an answer".into(),
    })
}

pub fn check_prompt(request: &AskRequest) -> Result<()> {
    if request.prompt.trim().is_empty() {
        return Err(Error::invalid("ask what? the prompt is empty"));
    }
    Ok(())
}

/// [`prepare`], [`ask_with`] and [`finish`] on a workspace this thread holds.
pub fn ask(
    workspace: &mut Workspace,
    correlation: Ulid,
    request: AskRequest,
    on_event: &mut (dyn FnMut(&StreamEvent) + Send),
) -> Result<Completion> {
    check_prompt(&request)?;
    let prepared = prepare(workspace, request.provider.as_deref(), correlation)?;
    let answer = block_on(ask_with(&prepared, request, on_event))?;
    finish(workspace, &prepared)?;
    Ok(answer?)
}

/// The short call of the settings screen's "test connection".
pub async fn test_with(prepared: &Prepared) -> Result<TestReport, LlmError> {
    let mut chat = ChatRequest::new(vec![Message::user("Reply with the single word OK.")]);
    chat.max_tokens = Some(8);
    let answer = prepared.router.complete(&chat).await?;
    Ok(TestReport { provider: answer.provider, model: answer.model, latency_ms: answer.latency_ms, reply: answer.text })
}

pub fn test(workspace: &mut Workspace, correlation: Ulid, name: &str) -> Result<TestReport> {
    let prepared = prepare(workspace, Some(name), correlation)?;
    let report = block_on(test_with(&prepared))?;
    finish(workspace, &prepared)?;
    Ok(report?)
}

pub async fn models_with(prepared: &Prepared, name: &str) -> Result<Vec<String>, LlmError> {
    prepared.router.models(name).await
}

pub fn models(workspace: &Workspace, correlation: Ulid, name: &str) -> Result<Vec<String>> {
    let prepared = prepare(workspace, Some(name), correlation)?;
    Ok(block_on(models_with(&prepared, name))??)
}
