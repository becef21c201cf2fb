//! The provider-neutral request and answer: what every agent hands the router and gets back,
//! whichever provider answered. Wire formats live in `wire.rs` and `quirks.rs`.

use adiuva_model::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::accounting::Cost;
use crate::error::Attempt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// The calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A participant's name (left out for providers that reject it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None, name: None }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }

    pub fn assistant_calls(tool_calls: Vec<ToolCall>) -> Self {
        Message { tool_calls, ..Message::new(Role::Assistant, "") }
    }

    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message { tool_call_id: Some(tool_call_id.into()), ..Message::new(Role::Tool, content) }
    }
}

/// A tool the model may call: a name, what it does, and its arguments as a JSON Schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// A call the model made: `arguments` is the JSON text it produced (not checked here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A chat request, independent of any provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Ask for token log probabilities where the provider offers them (left out where it
    /// rejects them).
    #[serde(default)]
    pub logprobs: bool,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest { messages, ..ChatRequest::default() }
    }
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A reason this crate does not know, kept as the provider said it.
    Other(String),
    /// The provider did not say.
    NotReported,
}

impl FinishReason {
    /// A provider's `finish_reason`; an empty string is "not said" (some servers send `""`).
    pub fn from_wire(reason: Option<&str>) -> FinishReason {
        match reason {
            None | Some("") => FinishReason::NotReported,
            Some("stop" | "end_turn" | "eos") => FinishReason::Stop,
            Some("length" | "max_tokens") => FinishReason::Length,
            Some("tool_calls" | "function_call" | "tool_use") => FinishReason::ToolCalls,
            Some("content_filter") => FinishReason::ContentFilter,
            Some(other) => FinishReason::Other(other.to_owned()),
        }
    }
}

/// Tokens of one call. `None` is "the provider did not report it", which is not 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// A finished answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The configured name of the provider that answered.
    pub provider: String,
    pub model: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub cost: Cost,
    pub latency_ms: u64,
    /// Every try that did not produce this answer, in order: why the router moved on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Attempt>,
}

/// What a stream yields, in order: tokens (and completed tool calls) as they come, then one
/// `Done` with the whole answer. `Restarted` appears only where the caller allowed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    Token {
        text: String,
    },
    ToolCall {
        call: ToolCall,
    },
    /// The provider broke off after output was sent; the answer starts over on `to`. What was
    /// shown so far is to be discarded.
    Restarted {
        from: String,
        to: String,
        code: ErrorCode,
        reason: String,
    },
    Done {
        completion: Completion,
    },
}
