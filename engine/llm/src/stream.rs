//! What every backend produces, piece by piece, and how pieces add up to an answer: text,
//! parts of tool calls (assembled by their index), the reason the model stopped, and usage.

use crate::types::{FinishReason, ToolCall, Usage};
use crate::wire::WireToolCall;

/// One piece of an answer as it arrives.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    Text(String),
    /// A part of the tool call at `index`: later parts append to its arguments.
    ToolCall {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The provider's `finish_reason`, as sent.
    Finish(String),
    Usage(Usage),
}

impl Piece {
    /// A tool call (part) from the wire; `position` stands in for a missing `index`.
    pub fn tool_call(position: usize, call: &WireToolCall) -> Piece {
        let function = call.function.as_ref();
        Piece::ToolCall {
            index: call.index.unwrap_or(position),
            id: call.id.clone().filter(|id| !id.is_empty()),
            name: function.and_then(|f| f.name.clone()).filter(|name| !name.is_empty()),
            arguments: function.and_then(|f| f.arguments.clone()).unwrap_or_default(),
        }
    }
}

/// An answer being put together from pieces.
#[derive(Debug, Default)]
pub struct Answer {
    pub text: String,
    calls: Vec<(usize, Option<String>, String, String)>,
    finish: Option<String>,
    pub usage: Usage,
}

impl Answer {
    pub fn add(&mut self, piece: Piece) {
        match piece {
            Piece::Text(text) => self.text.push_str(&text),
            Piece::ToolCall { index, id, name, arguments } => match self.calls.iter_mut().find(|(i, ..)| *i == index) {
                Some((_, call_id, call_name, call_arguments)) => {
                    if call_id.is_none() {
                        *call_id = id;
                    }
                    if let Some(name) = name {
                        call_name.push_str(&name);
                    }
                    call_arguments.push_str(&arguments);
                }
                None => self.calls.push((index, id, name.unwrap_or_default(), arguments)),
            },
            Piece::Finish(reason) => self.finish = Some(reason),
            // Some providers repeat usage on several chunks: the last one is the total.
            Piece::Usage(usage) => self.usage = usage,
        }
    }

    /// The tool calls, each with an id (a fresh one where the provider sent none, as Gemini
    /// does), and the finish reason (`tool_calls` where calls came with `stop`, as Gemini
    /// sends them).
    pub fn finish(&mut self) -> (Vec<ToolCall>, FinishReason) {
        self.calls.sort_by_key(|(index, ..)| *index);
        let calls: Vec<ToolCall> = self
            .calls
            .drain(..)
            .map(|(_, id, name, arguments)| ToolCall { id: id.unwrap_or_else(fresh_call_id), name, arguments })
            .collect();
        let reason = match FinishReason::from_wire(self.finish.as_deref()) {
            FinishReason::Stop if !calls.is_empty() => FinishReason::ToolCalls,
            reason => reason,
        };
        (calls, reason)
    }
}

/// A new tool-call id, unique across a conversation.
fn fresh_call_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 24];
    // Without randomness the id is still unique enough from the clock.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes.copy_from_slice(&blake3::hash(&nanos.to_le_bytes()).as_bytes()[..24]);
    }
    let id: String = bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    format!("call_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_tool_call_parts_assemble_and_empty_ids_get_one() {
        let mut answer = Answer::default();
        for piece in [
            Piece::ToolCall {
                index: 0,
                id: Some("call_1".into()),
                name: Some("add".into()),
                arguments: "{\"a\":".into(),
            },
            Piece::ToolCall { index: 0, id: None, name: None, arguments: "1}".into() },
            Piece::ToolCall { index: 1, id: None, name: Some("list".into()), arguments: "{}".into() },
            Piece::Finish("stop".into()),
        ] {
            answer.add(piece);
        }
        let (calls, reason) = answer.finish();
        assert_eq!(reason, FinishReason::ToolCalls);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("call_1", "add", "{\"a\":1}")
        );
        assert!(calls[1].id.starts_with("call_") && calls[1].id.len() > 10);
    }
}
