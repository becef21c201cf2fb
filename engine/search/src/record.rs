//! What of a record is searchable, and long texts cut into chunks the model reads whole.
//!
//! A record's text is read from its JSON (the read view's form), so a collection added later
//! is searchable by its `title` and long-text fields without code here. A chunk is what one
//! embedding covers: at most about [`CHUNK_BUDGET`] units of text (a CJK character counts as
//! four, about a token each, other characters one, about four to a token), so a chunk stays
//! under the model's 256 tokens; cuts fall after a sentence or at a space where one is near.

use adiuva_model::{Collection, RecordId};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The collections searched: those whose records people write and look for.
pub const SEARCHED: [Collection; 4] = [Collection::Notes, Collection::Tasks, Collection::Calendar, Collection::Memory];

/// About 200 tokens of English: room for the title the model reads before each chunk.
pub const CHUNK_BUDGET: usize = 800;

/// The long-text fields, in the order their text is joined.
const TEXT_FIELDS: [&str; 5] = ["body", "description", "location", "text", "content"];

/// A record as the index sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Searchable {
    pub id: RecordId,
    pub collection: Collection,
    pub title: String,
    pub tags: Vec<String>,
    pub source: Option<String>,
    pub time: Option<DateTime<Utc>>,
    /// The record's long text in chunks (at least one, possibly empty).
    pub chunks: Vec<String>,
}

impl Searchable {
    /// The searchable parts of `record` (a read view's JSON), or `None` for one without an id.
    pub fn from_record(collection: Collection, record: &Value) -> Option<Self> {
        let id: RecordId = record.get("id")?.as_str()?.parse().ok()?;
        let text_of = |field: &str| record.get(field).and_then(Value::as_str).unwrap_or_default().trim();
        let mut title = text_of("title").to_owned();
        let mut parts: Vec<String> =
            TEXT_FIELDS.iter().map(|f| text_of(f)).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        if collection == Collection::Memory {
            // A memory fact: `namespace/key` names it, its value is what it says.
            title = format!("{} {}", text_of("namespace"), text_of("key")).trim().to_owned();
            match record.get("value") {
                Some(Value::String(text)) => parts.push(text.clone()),
                Some(value @ (Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_))) => {
                    parts.push(value.to_string())
                }
                _ => {}
            }
        }
        let tags = match record.get("tags") {
            Some(Value::Array(tags)) => tags.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let time = ["start", "created_at"]
            .iter()
            .find_map(|f| record.get(f).and_then(Value::as_str))
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let source = record.get("source").and_then(Value::as_str).map(str::to_owned);
        Some(Self { id, collection, title, tags, source, time, chunks: chunk(&parts.join("\n\n")) })
    }

    /// What the model reads for chunk `n`: the title, then the chunk.
    pub fn embedding_text(&self, n: usize) -> String {
        match (self.title.is_empty(), self.chunks[n].is_empty()) {
            (_, true) => self.title.clone(),
            (true, false) => self.chunks[n].clone(),
            (false, false) => format!("{}\n{}", self.title, self.chunks[n]),
        }
    }
}

fn weight(c: char) -> usize {
    if crate::text::is_cjk(c) { 4 } else { 1 }
}

/// `text` cut into chunks of at most [`CHUNK_BUDGET`] units; always at least one.
pub fn chunk(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let mut used = 0;
        let mut end = rest.len();
        let mut sentence_end = None;
        let mut space = None;
        for (at, c) in rest.char_indices() {
            used += weight(c);
            if used > CHUNK_BUDGET {
                end = at;
                break;
            }
            let after = at + c.len_utf8();
            if matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？') {
                sentence_end = Some(after);
            } else if c.is_whitespace() {
                space = Some(after);
            }
        }
        if end < rest.len() {
            // Cut after a sentence in the chunk's second half, else at a space, else mid-word.
            end = match (sentence_end, space) {
                (Some(at), _) if at > end / 2 => at,
                (_, Some(at)) if at > end / 2 => at,
                _ => end,
            };
        }
        chunks.push(rest[..end].trim().to_owned());
        rest = rest[end..].trim_start();
    }
    if chunks.is_empty() {
        chunks.push(String::new());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_within_the_budget_and_cover_the_text() {
        let english = "The cat sat on the mat. ".repeat(200);
        let chinese = "我的护照下个月过期，需要尽快续签。".repeat(100);
        for text in [english.as_str(), chinese.as_str(), "short", "", &"x".repeat(5000)] {
            let chunks = chunk(text);
            assert!(!chunks.is_empty());
            for c in &chunks {
                assert!(c.chars().map(weight).sum::<usize>() <= CHUNK_BUDGET);
            }
            let joined: String = chunks.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let original: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            assert_eq!(joined, original);
        }
        assert!(chunk(&english).len() > 5);
        assert!(chunk(&english).iter().all(|c| c.ends_with('.')));
    }
}
