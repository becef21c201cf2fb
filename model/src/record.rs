//! The records a workspace keeps, and the collections (documents) they live in.
//!
//! A record is stored as an Automerge map under its [`RecordId`] in its collection's document.
//! Fields listed by [`Collection::text_fields`] are Automerge text, so concurrent edits merge
//! character by character; every other field is a last-writer-wins scalar or list.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::ParseError;

crate::envelope::ulid_id!(
    /// The id of a record: a ULID, so a collection's map sorts by creation time.
    RecordId,
    RecordId,
    "The id of a record (ULID)."
);

/// A collection of records; each is one Automerge document, or one per month for the
/// high-volume ones so that no document's history grows without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    Tasks,
    Calendar,
    Notes,
    Memory,
    Plans,
    Conversations,
    /// Activity entries (every use of a grant, every plugin run): sharded by month.
    Activity,
}

impl Collection {
    pub const ALL: [Collection; 7] = [
        Collection::Tasks,
        Collection::Calendar,
        Collection::Notes,
        Collection::Memory,
        Collection::Plans,
        Collection::Conversations,
        Collection::Activity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Collection::Tasks => "tasks",
            Collection::Calendar => "calendar",
            Collection::Notes => "notes",
            Collection::Memory => "memory",
            Collection::Plans => "plans",
            Collection::Conversations => "conversations",
            Collection::Activity => "activity",
        }
    }

    /// Whether records are spread over one document per month.
    pub fn is_sharded(self) -> bool {
        self == Collection::Activity
    }

    /// The name of the document that holds this collection's records created at `time`:
    /// `tasks`, or `activity/2026-11` for a sharded collection.
    pub fn document_name(self, time: DateTime<Utc>) -> String {
        if self.is_sharded() { format!("{}/{}", self.name(), time.format("%Y-%m")) } else { self.name().to_owned() }
    }

    /// Whether each record has an Automerge document of its own (`notes/ID`): records that
    /// hold long text, so that a write loads only the record it touches. The collection's
    /// read views keep what lists need. Workspaces written before kept these records in the
    /// collection's own document (`notes`), which stays readable until they move out.
    pub fn has_record_documents(self) -> bool {
        self == Collection::Notes
    }

    /// The collection a document name belongs to (`activity/2026-11` → `Activity`,
    /// `notes/01KB…` → `Notes`, and the older `notes` too).
    pub fn of_document(document: &str) -> Option<Collection> {
        let (base, rest) = match document.split_once('/') {
            Some((base, rest)) => (base, Some(rest)),
            None => (document, None),
        };
        let collection: Collection = base.parse().ok()?;
        let fits = match rest {
            None => !collection.is_sharded(),
            Some(rest) if collection.has_record_documents() => rest.parse::<RecordId>().is_ok(),
            Some(_) => collection.is_sharded(),
        };
        fits.then_some(collection)
    }

    /// Fields kept as Automerge text (merged character by character).
    pub fn text_fields(self) -> &'static [&'static str] {
        match self {
            Collection::Tasks | Collection::Calendar => &["description"],
            Collection::Notes => &["body"],
            Collection::Memory | Collection::Plans | Collection::Conversations | Collection::Activity => &[],
        }
    }

    /// The singular used in event kinds: `task.created`, `note.updated`.
    pub fn singular(self) -> &'static str {
        match self {
            Collection::Tasks => "task",
            Collection::Calendar => "calendar_event",
            Collection::Notes => "note",
            Collection::Memory => "memory_fact",
            Collection::Plans => "plan",
            Collection::Conversations => "conversation",
            Collection::Activity => "activity",
        }
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Collection {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        Collection::ALL.into_iter().find(|c| c.name() == text).ok_or_else(|| ParseError::Collection(text.to_owned()))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    #[default]
    Todo,
    InProgress,
    Done,
    Cancelled,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
    Urgent,
}

/// A task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub id: RecordId,
    pub title: String,
    /// Long free text: Automerge text.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub status: TaskStatus,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<NaiveDate>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An event in the calendar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CalendarEvent {
    pub id: RecordId,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The calendar it came from (a CalDAV URL, an ICS file), when not created here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    pub id: RecordId,
    pub title: String,
    /// Long free text: Automerge text.
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A long-term fact an agent learned (the memory's key-value tier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryFact {
    pub id: RecordId,
    /// The agent's namespace, e.g. `task`.
    pub namespace: String,
    pub key: String,
    pub value: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_and_back() {
        let time: DateTime<Utc> = "2026-11-29T10:00:00Z".parse().unwrap();
        assert_eq!(Collection::Tasks.document_name(time), "tasks");
        assert_eq!(Collection::Activity.document_name(time), "activity/2026-11");
        assert_eq!(Collection::of_document("activity/2026-11"), Some(Collection::Activity));
        assert_eq!(Collection::of_document("tasks"), Some(Collection::Tasks));
        assert_eq!(Collection::of_document("tasks/2026-11"), None);
        assert_eq!(Collection::of_document("activity"), None);
        assert_eq!(Collection::of_document("root"), None);
        assert_eq!(Collection::of_document("notes/01KB7Z8X3F8T1W0G6Q3W1YH4ZV"), Some(Collection::Notes));
        assert_eq!(Collection::of_document("notes"), Some(Collection::Notes), "written before notes moved out");
        assert_eq!(Collection::of_document("notes/2026-11"), None);
    }
}
