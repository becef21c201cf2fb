//! Reading what providers send: chat answers, stream chunks, error bodies and `Retry-After`.
//! Decoding is lenient on purpose: fields outside OpenAI's schema (Groq's `service_tier` and
//! `x_groq`, `finish_reason: ""`, `choices: []`, `null` where a list was expected) are data,
//! never a decoding failure. Only what the router needs is read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::types::Usage;

/// A chat completion, streamed chunk or whole answer alike (`delta` or `message`).
#[derive(Debug, Default, Deserialize)]
pub struct WireChunk {
    #[serde(default)]
    pub choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// Groq reports a stream's usage here, on its last chunk.
    #[serde(default)]
    pub x_groq: Option<XGroq>,
    /// An in-band error (`{"error": {...}}` inside a stream).
    #[serde(default)]
    pub error: Option<Value>,
    /// Anthropic's error events carry `"type": "error"`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct XGroq {
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireChoice {
    #[serde(default)]
    pub delta: Option<WireMessage>,
    #[serde(default)]
    pub message: Option<WireMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireToolCall {
    /// Position of the call in a stream; Gemini leaves it out when it sends whole calls.
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WireFunction {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
}

impl WireUsage {
    pub fn usage(self) -> Usage {
        Usage { input_tokens: self.prompt_tokens, output_tokens: self.completion_tokens }
    }
}

impl WireChunk {
    /// The usage this chunk reports, wherever the provider put it.
    pub fn reported_usage(&self) -> Option<Usage> {
        self.usage.or_else(|| self.x_groq.as_ref().and_then(|x| x.usage)).map(WireUsage::usage)
    }

    /// The in-band error this chunk carries, as (kind, message), if it is one.
    pub fn in_band_error(&self) -> Option<(String, String)> {
        let is_error_type = self.kind.as_deref() == Some("error");
        if self.error.is_none() && !is_error_type {
            return None;
        }
        Some(error_kind_and_message(self.error.as_ref().unwrap_or(&Value::Null)))
    }
}

/// An error object's kind (`type`, `status` or `code`) and message, whatever its shape.
fn error_kind_and_message(error: &Value) -> (String, String) {
    match error {
        Value::String(message) => (String::new(), message.clone()),
        Value::Object(fields) => {
            let text = |name: &str| match fields.get(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(other @ (Value::Object(_) | Value::Array(_))) => Some(other.to_string()),
                _ => None,
            };
            let kind = text("type").or_else(|| text("status")).or_else(|| text("code")).unwrap_or_default();
            (kind, text("message").unwrap_or_default())
        }
        Value::Null => (String::new(), String::new()),
        other => (String::new(), other.to_string()),
    }
}

/// The kind and message of an error response body, in each provider's shape: OpenAI, Groq and
/// Anthropic's compatibility layer `{"error": {"message", "type"}}`; Anthropic's own
/// `{"type": "error", "error": {...}}`; Gemini's array `[{"error": {"code", "message",
/// "status"}}]`; Mistral's `{"object": "error", "message": ..., "type": ...}` (whose message
/// may itself be an object); Ollama's `{"error": "text"}`. Anything else: the text itself.
pub fn error_body(body: &[u8]) -> (String, String) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (String::new(), String::from_utf8_lossy(body).trim().to_owned());
    };
    let value = match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    match value.get("error") {
        Some(error) => error_kind_and_message(error),
        None => error_kind_and_message(&value),
    }
}

/// Longest provider message kept in an error.
const MESSAGE_LIMIT: usize = 400;

/// A provider's message made safe to show and record: the key removed wherever it appears
/// (some providers echo part or all of a refused key) and shortened.
pub fn clean_message(message: &str, key: Option<&str>) -> String {
    let mut text = message.replace(['\n', '\r'], " ");
    if let Some(key) = key.filter(|key| key.len() >= 8) {
        text = text.replace(key, "<redacted>");
        // A masked echo such as `sk-abc…wxyz` shows the key's ends: drop any long token that
        // shares the key's first or last six characters.
        let head = key.get(..6).unwrap_or(key);
        let tail = key.get(key.len() - 6..).unwrap_or(key);
        text = text
            .split(' ')
            .map(
                |word| {
                    if word.len() >= 8 && (word.contains(head) || word.contains(tail)) { "<redacted>" } else { word }
                },
            )
            .collect::<Vec<_>>()
            .join(" ");
    }
    if text.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The longest `Retry-After` taken as asked: a provider's cooldown ends at the latest then. A
/// longer one (`1e30`, or `u64::MAX` seconds) would overflow the clock the cooldown is kept on.
pub const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to `now`,
/// at most [`RETRY_AFTER_LIMIT`]. A date in the past means "now"; anything else unreadable is
/// ignored.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let asked = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(seconds) = value.parse::<f64>()
        && seconds >= 0.0
    {
        // More than a `Duration` holds (infinity too) is more than the limit; NaN is no number
        // `>= 0` and reads as a date, which it is not.
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    } else {
        let date = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
        (date - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(asked.min(RETRY_AFTER_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        assert_eq!(retry_after("Wed, 02 Dec 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("Wed, 02 Dec 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-3", now), None);
        assert_eq!(retry_after("NaN", now), None);
    }

    #[test]
    fn retry_after_beyond_any_clock_is_the_limit() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").unwrap().with_timezone(&Utc);
        for huge in ["1e30", "inf", "18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            assert_eq!(retry_after(huge, now), Some(RETRY_AFTER_LIMIT), "{huge}");
            // What the router does with it: a provider's cooldown on the monotonic clock.
            let _ = std::time::Instant::now() + retry_after(huge, now).unwrap();
        }
    }

    #[test]
    fn error_bodies_of_every_shape() {
        let cases: [(&str, (&str, &str)); 6] = [
            (
                r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":null}}"#,
                ("rate_limit_error", "Rate limit reached"),
            ),
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ("overloaded_error", "Overloaded"),
            ),
            (
                r#"[{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}]"#,
                ("INVALID_ARGUMENT", "Invalid JSON payload"),
            ),
            (
                r#"{"object":"error","message":"Unauthorized","type":"invalid_request_error","param":null,"code":null}"#,
                ("invalid_request_error", "Unauthorized"),
            ),
            (
                r#"{"error":"model \"x\" not found, try pulling it first"}"#,
                ("", "model \"x\" not found, try pulling it first"),
            ),
            ("<html>Bad Gateway</html>", ("", "<html>Bad Gateway</html>")),
        ];
        for (body, (kind, message)) in cases {
            assert_eq!(error_body(body.as_bytes()), (kind.to_owned(), message.to_owned()), "{body}");
        }
    }

    #[test]
    fn chunks_with_fields_outside_openai_schema_decode() {
        let chunk: WireChunk = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion.chunk","service_tier":"on_demand","choices":[{"index":0,"delta":{},"finish_reason":""}],"x_groq":{"id":"req","usage":{"prompt_tokens":3,"completion_tokens":4,"queue_time":0.01}}}"#,
        )
        .unwrap();
        assert_eq!(chunk.reported_usage(), Some(Usage { input_tokens: Some(3), output_tokens: Some(4) }));
        let usage_only: WireChunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
        )
        .unwrap();
        assert_eq!(usage_only.reported_usage().and_then(|u| u.input_tokens), Some(9));
        let null_choices: WireChunk = serde_json::from_str(r#"{"choices":null,"usage":null}"#).unwrap();
        assert!(null_choices.reported_usage().is_none());
    }

    #[test]
    fn messages_lose_the_key_even_when_masked() {
        let key = "sk-MARKERabcdef0123456789xyz";
        let echoed = format!("Incorrect API key provided: {key}. And masked: sk-MAR**********9xyz.");
        let clean = clean_message(&echoed, Some(key));
        assert!(!clean.contains(key) && !clean.contains("sk-MAR") && !clean.contains("89xyz"), "{clean}");
    }
}
