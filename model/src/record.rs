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

/// A collection of records, kept in one or more Automerge documents (see [`Spread`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    Tasks,
    Calendar,
    Notes,
    Memory,
    Plans,
    Conversations,
    /// Activity entries (every use of a grant, every plugin run): one document per month.
    Activity,
}

/// How many documents a collection of [`Spread::Buckets`] has at most.
pub const BUCKETS: usize = 16;

/// Which of a bucketed collection's [`BUCKETS`] documents holds the record `id`: the low bits of
/// its random part.
pub fn bucket_of(id: RecordId) -> usize {
    (id.0.random() % BUCKETS as u128) as usize
}

/// How a collection's records are spread over Automerge documents. Loading, compacting and
/// syncing a document cost what its history holds, so no collection that keeps growing may
/// keep all of its history in one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// One document named after the collection (`plans`): few records.
    Whole,
    /// One of [`BUCKETS`] documents, by the low bits of the id's random part (`tasks/a`):
    /// short records that may number in the hundred thousands, written at any time. A write
    /// or a live sync touches one sixteenth of the history; loads run side by side.
    Buckets,
    /// One per month of the record's creation (`activity/2026-11`): entries that keep coming
    /// and are rarely edited later.
    Monthly,
    /// One per record (`notes/01KB…`): long text that people edit, so that a write loads only
    /// the record it touches.
    PerRecord,
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

    /// How the collection's records are spread over documents.
    pub fn spread(self) -> Spread {
        match self {
            Collection::Tasks | Collection::Calendar | Collection::Memory => Spread::Buckets,
            Collection::Notes => Spread::PerRecord,
            Collection::Activity => Spread::Monthly,
            Collection::Plans | Collection::Conversations => Spread::Whole,
        }
    }

    /// Whether each record has an Automerge document of its own (`notes/ID`).
    pub fn has_record_documents(self) -> bool {
        self.spread() == Spread::PerRecord
    }

    /// The document that holds the record `id`: `plans`, `tasks/a`, `activity/2026-11` or
    /// `notes/01KB…`. It follows from the id alone, so every device writes a record where
    /// every other device looks for it. (A workspace written before its collection was spread
    /// keeps older records in the collection's own document, `tasks`, which stays in use.)
    pub fn document_of(self, id: RecordId) -> String {
        let name = self.name();
        match self.spread() {
            Spread::Whole => name.to_owned(),
            Spread::Buckets => format!("{name}/{:x}", bucket_of(id)),
            Spread::Monthly => {
                let created: DateTime<Utc> = id.0.datetime().into();
                format!("{name}/{}", created.format("%Y-%m"))
            }
            Spread::PerRecord => format!("{name}/{id}"),
        }
    }

    /// The collection a document name belongs to (`tasks/a` → `Tasks`, `activity/2026-11` →
    /// `Activity`, `notes/01KB…` → `Notes`), including the collection's own document in a
    /// workspace written before the collection was spread (`tasks`, `notes`).
    pub fn of_document(document: &str) -> Option<Collection> {
        let (base, rest) = match document.split_once('/') {
            Some((base, rest)) => (base, Some(rest)),
            None => (document, None),
        };
        let collection: Collection = base.parse().ok()?;
        let fits = match (collection.spread(), rest) {
            (Spread::Monthly, None) => false,
            (_, None) => true,
            (Spread::Whole, Some(_)) => false,
            (Spread::Buckets, Some(rest)) => (0..BUCKETS).any(|bucket| format!("{bucket:x}") == rest),
            (Spread::Monthly, Some(rest)) => NaiveDate::parse_from_str(&format!("{rest}-01"), "%Y-%m-%d").is_ok(),
            (Spread::PerRecord, Some(rest)) => rest.parse::<RecordId>().is_ok(),
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
        let id: RecordId = "01KB7Z8X3F8T1W0G6Q3W1YH4ZV".parse().unwrap();
        assert_eq!(Collection::Plans.document_of(id), "plans");
        assert_eq!(Collection::Tasks.document_of(id), format!("tasks/{:x}", id.0.random() % 16));
        assert_eq!(
            Collection::Activity.document_of(id),
            format!("activity/{}", chrono::DateTime::<Utc>::from(id.0.datetime()).format("%Y-%m"))
        );
        assert_eq!(Collection::Notes.document_of(id), "notes/01KB7Z8X3F8T1W0G6Q3W1YH4ZV");
        assert_eq!(Collection::of_document("activity/2026-11"), Some(Collection::Activity));
        assert_eq!(Collection::of_document("tasks/f"), Some(Collection::Tasks));
        assert_eq!(Collection::of_document("memory/0"), Some(Collection::Memory));
        assert_eq!(Collection::of_document("tasks"), Some(Collection::Tasks), "written before tasks were spread");
        for wrong in ["tasks/10", "tasks/F", "tasks/g", "tasks/", "tasks/2026-11", "activity", "activity/2026-13"] {
            assert_eq!(Collection::of_document(wrong), None, "{wrong}");
        }
        assert_eq!(Collection::of_document("plans/0"), None);
        assert_eq!(Collection::of_document("root"), None);
        assert_eq!(Collection::of_document("notes/01KB7Z8X3F8T1W0G6Q3W1YH4ZV"), Some(Collection::Notes));
        assert_eq!(Collection::of_document("notes"), Some(Collection::Notes), "written before notes moved out");
        assert_eq!(Collection::of_document("notes/2026-11"), None);
    }

    #[test]
    fn buckets_take_records_evenly() {
        let mut counts = [0usize; BUCKETS];
        for _ in 0..16_000 {
            let document = Collection::Tasks.document_of(RecordId::new());
            let bucket = document.strip_prefix("tasks/").and_then(|b| usize::from_str_radix(b, 16).ok()).unwrap();
            counts[bucket] += 1;
        }
        assert!(counts.iter().all(|&count| (800..1200).contains(&count)), "{counts:?}");
    }
}
