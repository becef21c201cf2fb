//! What of a record is searchable, and long texts cut into chunks the model reads whole.
//!
//! A record's text is read from its JSON (the read view's form), so a collection added later
//! is searchable by its `title` and long-text fields without code here. A chunk is what one
//! embedding covers: at most about [`CHUNK_BUDGET`] units of text (a CJK character counts as
//! four, about a token each, other characters one, about four to a token), so a chunk stays
//! under the model's 256 tokens; cuts fall after a sentence or at a space where one is near.

use adiuva_model::{Collection, RecordId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The collections searched: those whose records people write and look for.
pub const SEARCHED: [Collection; 4] = [Collection::Notes, Collection::Tasks, Collection::Calendar, Collection::Memory];

/// About 200 tokens of English: room for the title the model reads before each chunk.
pub const CHUNK_BUDGET: usize = 800;

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

/// The fields of a record the index reads, deserialized straight from the read view's JSON.
/// Not the whole record as a `Value` (a map and a string per field): a first build of 100k
/// records held about 100 MB of those at once, and the daemon kept much of it afterwards as
/// allocator pages its long-lived data was scattered over. A field of another type than the
/// index reads counts as absent, as a missing one does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SearchedFields {
    #[serde(deserialize_with = "text")]
    id: Option<String>,
    #[serde(deserialize_with = "text")]
    title: Option<String>,
    #[serde(deserialize_with = "text")]
    body: Option<String>,
    #[serde(deserialize_with = "text")]
    description: Option<String>,
    #[serde(deserialize_with = "text")]
    location: Option<String>,
    #[serde(deserialize_with = "text")]
    text: Option<String>,
    #[serde(deserialize_with = "text")]
    content: Option<String>,
    #[serde(deserialize_with = "text")]
    namespace: Option<String>,
    #[serde(deserialize_with = "text")]
    key: Option<String>,
    value: Option<Value>,
    #[serde(deserialize_with = "texts")]
    tags: Vec<String>,
    #[serde(deserialize_with = "text")]
    start: Option<String>,
    #[serde(deserialize_with = "text")]
    created_at: Option<String>,
    #[serde(deserialize_with = "text")]
    source: Option<String>,
}

/// A string field; anything else (a number, `null`, an object) as absent.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => Some(text),
        _ => None,
    })
}

/// The strings of an array field; anything else as none.
fn texts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::String(text) => Some(text),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

impl Searchable {
    /// The searchable parts of `record` (a read view's JSON), or `None` for one without an id.
    pub fn from_record(collection: Collection, record: &Value) -> Option<Self> {
        Self::from_fields(collection, SearchedFields::deserialize(record).ok()?)
    }

    /// The searchable parts of a record's fields, or `None` for one without an id.
    pub fn from_fields(collection: Collection, fields: SearchedFields) -> Option<Self> {
        let id: RecordId = fields.id.as_deref()?.parse().ok()?;
        let trimmed = |field: &Option<String>| field.as_deref().unwrap_or_default().trim().to_owned();
        let mut title = trimmed(&fields.title);
        let mut parts: Vec<String> =
            [&fields.body, &fields.description, &fields.location, &fields.text, &fields.content]
                .into_iter()
                .map(trimmed)
                .filter(|t| !t.is_empty())
                .collect();
        if collection == Collection::Memory {
            // A memory fact: `namespace/key` names it, its value is what it says.
            title = format!("{} {}", trimmed(&fields.namespace), trimmed(&fields.key)).trim().to_owned();
            match fields.value {
                Some(Value::String(text)) => parts.push(text),
                Some(value @ (Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_))) => {
                    parts.push(value.to_string())
                }
                _ => {}
            }
        }
        // The first of `start` and `created_at` that is text, if it is a time.
        let time = fields
            .start
            .or(fields.created_at)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        Some(Self {
            id,
            collection,
            title,
            tags: fields.tags,
            source: fields.source,
            time,
            chunks: chunk(&parts.join("\n\n")),
        })
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
