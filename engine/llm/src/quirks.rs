//! Each provider's request, from its own documentation: the body is built with async-openai's
//! OpenAI types, then what a provider rejects is left out and what it needs is changed.
//!
//! - Mistral answers 422 to `stream_options` and `max_completion_tokens` (it sends usage on a
//!   stream's last chunk anyway, and takes `max_tokens`); its tool-call ids are 9 alphanumerics.
//! - Groq answers 400 to `logprobs`, `top_logprobs`, `logit_bias` and `messages[].name`; it
//!   reports a stream's usage under `x_groq.usage` (read in `wire.rs`).
//! - Gemini answers 400 to `additionalProperties`, `$schema` and `const` in tool schemas; it
//!   sends empty tool-call ids (given fresh ones in `http.rs`).
//! - Anthropic takes tool-call ids matching `[a-zA-Z0-9_-]+` only.
//! - Ollama's OpenAI endpoint cannot be told `num_ctx` and silently truncates a longer prompt:
//!   the router checks the configured window before the call instead.
//!
//! Tool-call ids are rewritten per provider so a conversation that moved to another provider
//! after a fallback stays valid there; the rewrite is a pure function of the original id, so a
//! call and the tool result answering it keep matching.

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent,
    ChatCompletionStreamOptions, ChatCompletionTool, ChatCompletionTools, CreateChatCompletionRequest, FunctionCall,
    FunctionObject,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use serde_json::Value;

use crate::config::ProviderKind;
use crate::types::{ChatRequest, Message, Role, ToolCall};

/// The JSON body of a chat completion request for `kind`.
pub fn chat_body(kind: ProviderKind, model: &str, request: &ChatRequest, stream: bool) -> Value {
    let messages = request.messages.iter().map(|message| wire_message(kind, message)).collect();
    let tools = (!request.tools.is_empty()).then(|| {
        request
            .tools
            .iter()
            .map(|tool| {
                ChatCompletionTools::Function(ChatCompletionTool {
                    function: FunctionObject {
                        name: tool.name.clone(),
                        description: Some(tool.description.clone()),
                        parameters: Some(tool_schema(kind, &tool.parameters)),
                        strict: None,
                    },
                })
            })
            .collect()
    });
    // Mistral takes only `max_tokens`; OpenAI deprecated it for `max_completion_tokens`.
    let (max_tokens, max_completion_tokens) = match kind {
        ProviderKind::OpenAi => (None, request.max_tokens),
        _ => (request.max_tokens, None),
    };
    let wants_usage_option = stream && !matches!(kind, ProviderKind::Mistral | ProviderKind::Groq);
    let rejects_logprobs = matches!(kind, ProviderKind::Groq);
    #[allow(deprecated)] // The deprecated `max_tokens` is the one field Mistral accepts.
    let body = CreateChatCompletionRequest {
        model: model.to_owned(),
        messages,
        tools,
        max_tokens,
        max_completion_tokens,
        temperature: request.temperature,
        logprobs: (request.logprobs && !rejects_logprobs).then_some(true),
        stream: stream.then_some(true),
        stream_options: wants_usage_option
            .then_some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None }),
        ..CreateChatCompletionRequest::default()
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// The JSON body of an embeddings request.
pub fn embedding_body(model: &str, inputs: &[String]) -> Value {
    let body = CreateEmbeddingRequest {
        model: model.to_owned(),
        input: EmbeddingInput::StringArray(inputs.to_vec()),
        ..CreateEmbeddingRequest::default()
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

fn wire_message(kind: ProviderKind, message: &Message) -> ChatCompletionRequestMessage {
    // Groq answers 400 to `messages[].name`.
    let name = message.name.clone().filter(|_| kind != ProviderKind::Groq);
    match message.role {
        Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: ChatCompletionRequestSystemMessageContent::Text(message.content.clone()),
            name,
        }),
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(message.content.clone()),
            name,
        }),
        #[allow(deprecated)] // `function_call` is part of the struct; it stays unset.
        Role::Assistant => ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
            content: (!message.content.is_empty() || message.tool_calls.is_empty())
                .then(|| ChatCompletionRequestAssistantMessageContent::Text(message.content.clone())),
            name,
            tool_calls: (!message.tool_calls.is_empty())
                .then(|| message.tool_calls.iter().map(|call| wire_tool_call(kind, call)).collect()),
            ..ChatCompletionRequestAssistantMessage::default()
        }),
        Role::Tool => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(message.content.clone()),
            tool_call_id: tool_call_id(kind, message.tool_call_id.as_deref().unwrap_or_default()),
        }),
    }
}

fn wire_tool_call(kind: ProviderKind, call: &ToolCall) -> ChatCompletionMessageToolCalls {
    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
        id: tool_call_id(kind, &call.id),
        function: FunctionCall { name: call.name.clone(), arguments: call.arguments.clone() },
    })
}

/// `id` in the form `kind` accepts, the same for the same `id` every time.
pub fn tool_call_id(kind: ProviderKind, id: &str) -> String {
    match kind {
        ProviderKind::Mistral if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => id.to_owned(),
        ProviderKind::Mistral => hashed_id(id, 9),
        ProviderKind::Anthropic
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            id.to_owned()
        }
        ProviderKind::Anthropic => format!("toolu_{}", hashed_id(id, 24)),
        _ if id.is_empty() => format!("call_{}", hashed_id(id, 24)),
        _ => id.to_owned(),
    }
}

/// `length` alphanumerics derived from `id` (BLAKE3), so distinct ids stay distinct.
fn hashed_id(id: &str, length: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let digest = blake3::hash(id.as_bytes());
    digest.as_bytes().iter().take(length).map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
}

/// Schema keys Gemini answers 400 to.
const GEMINI_REJECTED_SCHEMA_KEYS: [&str; 2] = ["additionalProperties", "$schema"];

/// A tool's parameter schema as `kind` accepts it. For Gemini, `const` becomes a one-value
/// `enum` (which it accepts) and the rejected keys are left out, at every depth.
pub fn tool_schema(kind: ProviderKind, schema: &Value) -> Value {
    if kind != ProviderKind::Gemini {
        return schema.clone();
    }
    match schema {
        Value::Object(fields) => {
            let mut cleaned = serde_json::Map::new();
            for (key, value) in fields {
                if GEMINI_REJECTED_SCHEMA_KEYS.contains(&key.as_str()) {
                    continue;
                }
                if key == "const" {
                    cleaned.insert("enum".into(), Value::Array(vec![value.clone()]));
                    continue;
                }
                cleaned.insert(key.clone(), tool_schema(kind, value));
            }
            Value::Object(cleaned)
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| tool_schema(kind, item)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ToolDefinition;
    use serde_json::json;

    fn conversation() -> ChatRequest {
        let call = ToolCall { id: "call_abc.123/xyz".into(), name: "add_task".into(), arguments: "{}".into() };
        let mut user = Message::user("add a task");
        user.name = Some("sam".into());
        ChatRequest {
            messages: vec![user, Message::assistant_calls(vec![call]), Message::tool_result("call_abc.123/xyz", "ok")],
            tools: vec![ToolDefinition {
                name: "add_task".into(),
                description: "Adds a task".into(),
                parameters: json!({"$schema": "x", "type": "object", "additionalProperties": false,
                    "properties": {"kind": {"const": "task"}, "tags": {"type": "array", "items": {"type": "object", "additionalProperties": false}}}}),
            }],
            max_tokens: Some(50),
            temperature: None,
            logprobs: true,
        }
    }

    #[test]
    fn each_provider_gets_only_what_it_accepts() {
        let request = conversation();
        let mistral = chat_body(ProviderKind::Mistral, "m", &request, true);
        assert!(mistral.get("stream_options").is_none() && mistral.get("max_completion_tokens").is_none());
        assert_eq!(mistral["max_tokens"], 50);
        let openai = chat_body(ProviderKind::OpenAi, "m", &request, true);
        assert_eq!(openai["stream_options"]["include_usage"], true);
        assert_eq!(openai["max_completion_tokens"], 50);
        assert_eq!(openai["messages"][0]["name"], "sam");
        let groq = chat_body(ProviderKind::Groq, "m", &request, false);
        assert!(groq.get("logprobs").is_none() && groq["messages"][0].get("name").is_none());
        let gemini = chat_body(ProviderKind::Gemini, "m", &request, false);
        let schema = gemini["tools"][0]["function"]["parameters"].to_string();
        assert!(!schema.contains("additionalProperties") && !schema.contains("$schema") && !schema.contains("const"));
        assert_eq!(gemini["tools"][0]["function"]["parameters"]["properties"]["kind"]["enum"], json!(["task"]));
    }

    #[test]
    fn tool_call_ids_are_rewritten_consistently_per_provider() {
        let request = conversation();
        for kind in [ProviderKind::Mistral, ProviderKind::Anthropic] {
            let body = chat_body(kind, "m", &request, false);
            let call_id = body["messages"][1]["tool_calls"][0]["id"].as_str().unwrap().to_owned();
            assert_eq!(body["messages"][2]["tool_call_id"], call_id.as_str(), "{kind}");
            match kind {
                ProviderKind::Mistral => {
                    assert!(call_id.len() == 9 && call_id.bytes().all(|b| b.is_ascii_alphanumeric()))
                }
                _ => assert!(call_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')),
            }
        }
        assert_ne!(tool_call_id(ProviderKind::Mistral, "a"), tool_call_id(ProviderKind::Mistral, "b"));
        assert_eq!(tool_call_id(ProviderKind::OpenAi, "call_1"), "call_1");
        assert!(!tool_call_id(ProviderKind::OpenAi, "").is_empty());
    }
}
