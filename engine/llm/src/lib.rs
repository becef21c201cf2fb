//! Adiuva's language models: OpenAI, Anthropic, Gemini, Mistral, Groq and Ollama through each
//! one's OpenAI-compatible endpoint, and a GGUF model run in this process, behind one
//! [`Router`] with a fallback chain, retries, cooldown, streaming, tool calls and accounting.
//!
//! ```no_run
//! # async fn example() -> adiuva_llm::Result<()> {
//! use adiuva_llm::{ApiKey, ChatRequest, Health, Message, ProviderConfig, ProviderKind, ProviderSettings, Router, RouterConfig};
//! let primary = ProviderConfig {
//!     settings: ProviderSettings::new("work", ProviderKind::OpenAi, "gpt-4o-mini"),
//!     api_key: Some(ApiKey::new("sk-...")),
//! };
//! let router = Router::new(RouterConfig { chain: vec![primary], ..RouterConfig::default() }, Health::new())?;
//! let answer = router.complete(&ChatRequest::new(vec![Message::user("Hello")])).await?;
//! println!("{} (from {}, {:?} tokens out)", answer.text, answer.provider, answer.usage.output_tokens);
//! # Ok(()) }
//! ```
//!
//! Design decisions:
//! - **async-openai for the request types, our own transport.** Requests are built with
//!   async-openai's OpenAI types (`quirks.rs`) and sent with reqwest here, because async-openai's
//!   transport loses what a dependable router needs: its errors drop the `Retry-After` header,
//!   and its stream ends the same way at `[DONE]` as when the connection is cut, so a cut answer
//!   would look like a short success. Its retry is therefore never involved, and retries never
//!   multiply.
//! - **Lenient decoding** (`wire.rs`): fields outside OpenAI's schema never fail a decode.
//! - **Unknown is not zero**: unreported tokens and unknown prices stay `None` (`accounting.rs`).
//! - **No storage, no UI, no HTTP server**: configuration comes in as data, keys as [`ApiKey`],
//!   and every call's record goes out through a [`router::Recorder`]; the app decides where
//!   they live (on the device, never in the synced log). The crate links nothing that decrypts
//!   user data, so a server can reuse it.

pub mod accounting;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod local;
pub mod quirks;
pub mod router;
mod stream;
pub mod types;
pub mod wire;

pub use accounting::{CallRecord, Cost, Totals, UsageSummary};
pub use config::{
    ApiKey, CooldownPolicy, ProviderConfig, ProviderKind, ProviderSettings, RetryPolicy, RouterConfig, Timeouts,
};
pub use error::{Attempt, LlmError, Result};
pub use router::{EventStream, Health, Recorder, Router, StreamOptions};
pub use types::{ChatRequest, Completion, FinishReason, Message, Role, StreamEvent, ToolCall, ToolDefinition, Usage};
