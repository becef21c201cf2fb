//! What each provider's OpenAI-compatible endpoint sends, from its documentation and its
//! published error bodies: chunk shapes, where usage goes (a `choices: []` chunk after
//! `stream_options.include_usage`, Mistral's last chunk, Groq's `x_groq.usage`, Gemini's last
//! chunk), tool calls (streamed in parts by OpenAI and Anthropic, whole with an empty id and
//! `finish_reason: "stop"` by Gemini, whole with a 9-character id by Mistral), error bodies
//! (Gemini's array, Mistral's `object: error`, Anthropic's `type: error` and its 529), and the
//! fields each one refuses.

use adiuva_llm::ProviderKind;
use serde_json::{Value, json};

use super::Reply;

pub fn path_prefix(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Gemini => "/v1beta/openai",
        ProviderKind::Groq => "/openai/v1",
        _ => "/v1",
    }
}

fn model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "gpt-4o-mini",
        ProviderKind::Anthropic => "claude-3-5-haiku-latest",
        ProviderKind::Gemini => "gemini-2.0-flash",
        ProviderKind::Mistral => "mistral-small-latest",
        ProviderKind::Groq => "llama-3.1-8b-instant",
        ProviderKind::Ollama | ProviderKind::Local => "llama3.2",
    }
}

pub fn event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

/// A chunk carrying `delta` (and `finish_reason`), with the fields each provider adds.
fn chunk(kind: ProviderKind, delta: Value, finish_reason: Option<&str>) -> Value {
    let mut chunk = json!({
        "id": "chatcmpl-9x2b", "object": "chat.completion.chunk", "created": 1764662400,
        "model": model(kind),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    match kind {
        ProviderKind::OpenAi => {
            chunk["system_fingerprint"] = json!("fp_44709d6fcb");
            chunk["service_tier"] = json!("default");
            chunk["choices"][0]["logprobs"] = Value::Null;
        }
        ProviderKind::Groq => {
            chunk["system_fingerprint"] = json!("fp_a4265e44d5");
            chunk["service_tier"] = json!("on_demand");
            chunk["x_groq"] = json!({"id": "req_01jbd6g2qdfw2adyrt2az8hz4w"});
        }
        ProviderKind::Ollama => chunk["system_fingerprint"] = json!("fp_ollama"),
        ProviderKind::Gemini => {
            // Gemini leaves out `id` and `index`-level extras.
            chunk.as_object_mut().map(|c| c.remove("id"));
        }
        _ => {}
    }
    chunk
}

fn usage_json(input: u64, output: u64) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// The events of a streamed text answer made of `parts`, with usage where the provider puts it.
pub fn text_stream(kind: ProviderKind, parts: &[&str], usage: (u64, u64)) -> Vec<String> {
    let mut events = vec![event(&chunk(kind, json!({"role": "assistant", "content": ""}), None))];
    events.extend(parts.iter().map(|part| event(&chunk(kind, json!({"content": part}), None))));
    let mut last = chunk(kind, json!({}), Some("stop"));
    match kind {
        ProviderKind::Mistral | ProviderKind::Gemini => last["usage"] = usage_json(usage.0, usage.1),
        ProviderKind::Groq => {
            last["x_groq"] = json!({"id": "req_01jbd6g2qdfw2adyrt2az8hz4w", "usage": {
                "queue_time": 0.0186, "prompt_tokens": usage.0, "prompt_time": 0.0024,
                "completion_tokens": usage.1, "completion_time": 0.0127, "total_tokens": usage.0 + usage.1, "total_time": 0.015}});
        }
        _ => {}
    }
    events.push(event(&last));
    if matches!(kind, ProviderKind::OpenAi | ProviderKind::Anthropic | ProviderKind::Ollama) {
        // `stream_options.include_usage`: one more chunk, with no choices.
        let mut usage_chunk = chunk(kind, json!({}), None);
        usage_chunk["choices"] = json!([]);
        usage_chunk["usage"] = usage_json(usage.0, usage.1);
        events.push(event(&usage_chunk));
    }
    events.push(DONE.to_owned());
    events
}

/// The events of a streamed call of tool `name` with `arguments` (sent in parts where the
/// provider streams arguments).
pub fn tool_call_stream(kind: ProviderKind, name: &str, arguments: &[&str]) -> Vec<String> {
    let mut events = vec![event(&chunk(kind, json!({"role": "assistant", "content": null}), None))];
    let whole = arguments.concat();
    match kind {
        ProviderKind::Gemini => {
            let call = json!({"id": "", "type": "function", "function": {"name": name, "arguments": whole}});
            events.push(event(&chunk(kind, json!({"role": "assistant", "tool_calls": [call]}), Some("stop"))));
        }
        ProviderKind::Mistral | ProviderKind::Groq | ProviderKind::Ollama => {
            let id = if kind == ProviderKind::Mistral { "D681PevKs" } else { "call_9pw1qnYScqvGrCH58HWCvFH6" };
            let call =
                json!({"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": whole}});
            events.push(event(&chunk(kind, json!({"tool_calls": [call]}), None)));
            events.push(event(&chunk(kind, json!({}), Some("tool_calls"))));
        }
        _ => {
            let first = json!({"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function", "function": {"name": name, "arguments": ""}});
            events.push(event(&chunk(kind, json!({"tool_calls": [first]}), None)));
            for part in arguments {
                events.push(event(&chunk(
                    kind,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    None,
                )));
            }
            events.push(event(&chunk(kind, json!({}), Some("tool_calls"))));
        }
    }
    events.push(DONE.to_owned());
    events
}

/// A whole (non-streamed) answer.
pub fn completion(kind: ProviderKind, text: &str, usage: (u64, u64)) -> Reply {
    let mut body = json!({
        "id": "chatcmpl-9x2b", "object": "chat.completion", "created": 1764662400, "model": model(kind),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage_json(usage.0, usage.1),
    });
    match kind {
        ProviderKind::OpenAi => {
            body["choices"][0]["message"]["refusal"] = Value::Null;
            body["choices"][0]["logprobs"] = Value::Null;
            body["service_tier"] = json!("default");
            body["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 0, "audio_tokens": 0});
        }
        ProviderKind::Groq => {
            body["service_tier"] = json!("on_demand");
            body["x_groq"] = json!({"id": "req_01jbd6g2qdfw2adyrt2az8hz4w"});
            body["usage"]["queue_time"] = json!(0.0186);
        }
        _ => {}
    }
    Reply::json(200, body.to_string())
}

/// HTTP 429 with `Retry-After: retry_after` and the provider's body.
pub fn rate_limited(kind: ProviderKind, retry_after: &str) -> Reply {
    let body = match kind {
        ProviderKind::Anthropic => {
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "This request would exceed the rate limit for your organization."}})
        }
        ProviderKind::Gemini => {
            json!([{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}])
        }
        ProviderKind::Mistral => {
            json!({"object": "error", "message": "Requests rate limit exceeded", "type": "rate_limited", "param": null, "code": "1300"})
        }
        _ => {
            json!({"error": {"message": "Rate limit reached for requests. Please try again in 1s.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        }
    };
    Reply::json(429, body.to_string()).with_header("retry-after", retry_after)
}

/// The provider's server error: Anthropic's 529 "overloaded", Gemini's 503, others' 500.
pub fn server_error(kind: ProviderKind) -> Reply {
    match kind {
        ProviderKind::Anthropic => {
            Reply::json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string())
        }
        ProviderKind::Gemini => Reply::json(
            503,
            json!([{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}]).to_string(),
        ),
        ProviderKind::Mistral => Reply::json(
            500,
            json!({"object": "error", "message": "Internal server error", "type": "internal_server_error", "param": null, "code": "1000"}).to_string(),
        ),
        _ => Reply::json(
            500,
            json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}}).to_string(),
        ),
    }
}

/// HTTP 401. OpenAI and Groq echo the refused key, masked; the client must not repeat it.
pub fn unauthorized(kind: ProviderKind, key: &str) -> Reply {
    let masked = format!("{}************{}", &key[..6], &key[key.len() - 4..]);
    let body = match kind {
        ProviderKind::Anthropic => {
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        }
        ProviderKind::Gemini => {
            json!([{"error": {"code": 401, "message": format!("API key not valid: {key}. Please pass a valid API key."), "status": "UNAUTHENTICATED"}}])
        }
        ProviderKind::Mistral => json!({"message": "Unauthorized", "request_id": "9c5d0b4c6e2e4f0e"}),
        _ => {
            json!({"error": {"message": format!("Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        }
    };
    Reply::json(401, body.to_string())
}

/// An error reported inside a `200` stream: Anthropic's `error` event ("overloaded"), an
/// `error` object elsewhere.
pub fn stream_error(kind: ProviderKind) -> String {
    match kind {
        ProviderKind::Anthropic => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        ),
        _ => event(
            &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "code": "internal_error"}}),
        ),
    }
}

/// What the real service answers to a request carrying a field it refuses, if it does.
pub fn refusal(kind: ProviderKind, body: &Value) -> Option<Reply> {
    match kind {
        ProviderKind::Gemini => {
            let tools = body.get("tools").map(Value::to_string).unwrap_or_default();
            let bad = ["additionalProperties", "$schema", "\"const\""].into_iter().find(|key| tools.contains(key))?;
            let message = format!(
                "Invalid JSON payload received. Unknown name \"{}\" at 'tools[0].function_declarations[0].parameters': Cannot find field.",
                bad.trim_matches('"')
            );
            Some(Reply::json(
                400,
                json!([{"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}]).to_string(),
            ))
        }
        ProviderKind::Mistral => {
            let extra = ["stream_options", "max_completion_tokens"].into_iter().find(|f| body.get(*f).is_some());
            if let Some(field) = extra {
                let message = json!({"detail": [{"type": "extra_forbidden", "loc": ["body", field], "msg": "Extra inputs are not permitted", "input": body[field]}]});
                return Some(Reply::json(
                    422,
                    json!({"object": "error", "message": message, "type": "invalid_request_error", "param": null, "code": null}).to_string(),
                ));
            }
            let bad_id = tool_call_ids(body)
                .into_iter()
                .find(|id| id.len() != 9 || !id.bytes().all(|b| b.is_ascii_alphanumeric()))?;
            Some(Reply::json(
                400,
                json!({"object": "error", "message": format!("Tool call id was {bad_id} but must be a-z, A-Z, 0-9, with a length of 9."), "type": "invalid_request_message_error", "param": null, "code": "3280"}).to_string(),
            ))
        }
        ProviderKind::Groq => {
            let named = body["messages"].as_array().is_some_and(|m| m.iter().any(|m| m.get("name").is_some()));
            let field = if named {
                "messages[].name"
            } else {
                ["logprobs", "top_logprobs", "logit_bias"].into_iter().find(|f| body.get(*f).is_some())?
            };
            Some(Reply::json(
                400,
                json!({"error": {"message": format!("'{field}' : property '{field}' is unsupported"), "type": "invalid_request_error"}}).to_string(),
            ))
        }
        ProviderKind::Anthropic => {
            let bad_id = tool_call_ids(body)
                .into_iter()
                .find(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))?;
            Some(Reply::json(
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$' (got {bad_id:?})")}}).to_string(),
            ))
        }
        _ => None,
    }
}

/// Every tool-call id a request's messages carry (assistant calls and tool results).
fn tool_call_ids(body: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            ids.extend(call["id"].as_str().map(str::to_owned));
        }
        ids.extend(message["tool_call_id"].as_str().map(str::to_owned));
    }
    ids
}
