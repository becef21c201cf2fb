//! Time travel: the records of every collection as they were at a point of the log (`at`),
//! and what changed between two points, record by record and field by field (`diff`).
//!
//! A point is a change (its hash, or a unique prefix) or a time. The log's events are ordered
//! by their envelopes' time (then id); the state at a point holds every change up to it in that
//! order whose dependencies are held too, and each document is forked at the heads of those.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use adiuva_engine::view::RecordView;
use adiuva_engine::{EventFilter, LoggedEvent, ROOT_DOCUMENT, Spread, Workspace};
use adiuva_model::Collection;
use automerge::{Automerge, ChangeHash};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::ReplayError;

/// A point of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Point {
    /// A change hash, or a prefix of one (lowercase hex).
    Change(String),
    Time(DateTime<Utc>),
}

/// Shortest prefix of a change hash taken as one (shorter hex strings could be years).
const MIN_HASH_PREFIX: usize = 8;

impl FromStr for Point {
    type Err = ReplayError;

    fn from_str(text: &str) -> Result<Self, ReplayError> {
        let text = text.trim();
        if text.len() >= MIN_HASH_PREFIX && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Point::Change(text.to_ascii_lowercase()));
        }
        DateTime::parse_from_rfc3339(text)
            .map(|time| Point::Time(time.with_timezone(&Utc)))
            .map_err(|_| ReplayError::PointInvalid { text: text.to_owned() })
    }
}

/// Records by collection name, then by id.
pub type State = BTreeMap<String, BTreeMap<String, Value>>;

/// The state of every collection at `point`.
pub fn at(workspace: &mut Workspace, point: &Point) -> Result<State, ReplayError> {
    let events = workspace.events(&EventFilter::default())?;
    let held = held_at(&events, point)?;
    let mut state = State::new();
    for document in workspace.document_names()? {
        let Some(collection) = Collection::of_document(&document).filter(|_| document != ROOT_DOCUMENT) else {
            continue;
        };
        let empty = HashSet::new();
        let held = held.get(&document).unwrap_or(&empty);
        let doc = workspace.automerge(&document)?;
        let records = match heads_within(doc, held) {
            Heads::All => RecordView::materialize(doc, 0, Spread::AcrossCores)?,
            Heads::None => continue,
            Heads::Some(heads) => {
                let forked = doc.fork_at(&heads).map_err(|e| adiuva_engine::Error::DocumentCorrupt {
                    document: document.clone(),
                    detail: format!("cannot go back to the point: {e}"),
                })?;
                RecordView::materialize(&forked, 0, Spread::AcrossCores)?
            }
        };
        let records: Vec<Value> = records.records_as().map_err(|(id, _)| adiuva_engine::Error::RecordInvalid {
            collection,
            detail: format!("record {id} is not JSON"),
        })?;
        let into = state.entry(collection.name().to_owned()).or_default();
        for record in records {
            if let Some(id) = record.get("id").and_then(Value::as_str) {
                into.insert(id.to_owned(), record.clone());
            }
        }
    }
    state.retain(|_, records| !records.is_empty());
    Ok(state)
}

/// The changes of each document up to `point`, in the events' order.
fn held_at(events: &[LoggedEvent], point: &Point) -> Result<BTreeMap<String, HashSet<String>>, ReplayError> {
    let end = match point {
        Point::Time(time) => events.iter().take_while(|event| event.envelope.time <= *time).count(),
        Point::Change(prefix) => {
            let matches: Vec<usize> =
                (0..events.len()).filter(|&at| events[at].change.starts_with(prefix.as_str())).collect();
            match matches.as_slice() {
                [] => return Err(ReplayError::ChangeNotFound { hash: prefix.clone() }),
                [at] => at + 1,
                _ => return Err(ReplayError::ChangeAmbiguous { prefix: prefix.clone(), matches: matches.len() }),
            }
        }
    };
    let mut held: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for event in &events[..end] {
        held.entry(event.document.clone()).or_default().insert(event.change.clone());
    }
    Ok(held)
}

enum Heads {
    All,
    None,
    Some(Vec<ChangeHash>),
}

/// The heads of the changes of `doc` in `held` whose dependencies are held too.
fn heads_within(doc: &Automerge, held: &HashSet<String>) -> Heads {
    let changes = doc.get_changes(&[]);
    if changes.len() == held.len() && changes.iter().all(|change| held.contains(&change.hash().to_string())) {
        return Heads::All;
    }
    // Changes come in causal order: a change's dependencies before it.
    let mut kept: HashSet<ChangeHash> = HashSet::new();
    let mut depended_on: HashSet<ChangeHash> = HashSet::new();
    for change in &changes {
        if held.contains(&change.hash().to_string()) && change.deps().iter().all(|dep| kept.contains(dep)) {
            kept.insert(change.hash());
            depended_on.extend(change.deps().iter().copied());
        }
    }
    let heads: Vec<ChangeHash> = kept.difference(&depended_on).copied().collect();
    if heads.is_empty() { Heads::None } else { Heads::Some(heads) }
}

/// What changed between two states.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Diff {
    pub added: Vec<RecordChange>,
    pub removed: Vec<RecordChange>,
    pub changed: Vec<RecordChange>,
}

/// One record's difference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordChange {
    pub collection: String,
    pub id: String,
    /// Each field whose value differs, with its value before and after (`null`: absent).
    pub fields: Vec<FieldChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The difference from `before` to `after`, record by record and field by field.
pub fn diff(before: &State, after: &State) -> Diff {
    let mut diff = Diff::default();
    let empty = BTreeMap::new();
    let collections: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for collection in collections {
        let old = before.get(collection).unwrap_or(&empty);
        let new = after.get(collection).unwrap_or(&empty);
        let ids: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for id in ids {
            let change = |old: Option<&Value>, new: Option<&Value>| RecordChange {
                collection: collection.clone(),
                id: id.clone(),
                fields: field_changes(old, new),
            };
            match (old.get(id), new.get(id)) {
                (None, Some(record)) => diff.added.push(change(None, Some(record))),
                (Some(record), None) => diff.removed.push(change(Some(record), None)),
                (Some(a), Some(b)) if a != b => diff.changed.push(change(Some(a), Some(b))),
                _ => {}
            }
        }
    }
    diff
}

fn field_changes(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let fields_of = |record: Option<&Value>| record.and_then(Value::as_object).cloned().unwrap_or_default();
    let (before, after) = (fields_of(before), fields_of(after));
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| FieldChange {
            field: name.clone(),
            before: before.get(name).cloned().unwrap_or(Value::Null),
            after: after.get(name).cloned().unwrap_or(Value::Null),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn points_are_hashes_or_times() {
        assert_eq!("ABCDEF0123".parse::<Point>().unwrap(), Point::Change("abcdef0123".into()));
        assert!(matches!("2026-12-02T10:00:00Z".parse::<Point>().unwrap(), Point::Time(_)));
        assert!(matches!("2026".parse::<Point>(), Err(ReplayError::PointInvalid { .. })));
        assert!(matches!("yesterday".parse::<Point>(), Err(ReplayError::PointInvalid { .. })));
    }

    #[test]
    fn a_diff_names_records_and_fields() {
        let state = |records: Value| -> State { serde_json::from_value(json!({ "tasks": records })).unwrap() };
        let before = state(json!({"A": {"id": "A", "title": "x", "done": false}, "B": {"id": "B"}}));
        let after = state(json!({"A": {"id": "A", "title": "y", "done": false}, "C": {"id": "C"}}));
        let diff = diff(&before, &after);
        assert_eq!(diff.added.len(), 1);
        assert_eq!(diff.added[0].id, "C");
        assert_eq!(diff.removed[0].id, "B");
        assert_eq!(
            diff.changed[0].fields,
            vec![FieldChange { field: "title".into(), before: json!("x"), after: json!("y") }]
        );
    }
}
