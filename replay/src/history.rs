//! `history`: every event that touched a record, each with its provenance — the chain of
//! events that caused it (through causation ids: this task ← step 2 of plan P ← approved by
//! the user on device D ← proposed by the task agent for chat message M) and the other events
//! of its correlation (the chat turn, plan or plugin run it belongs to).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use adiuva_engine::{EventFilter, LoggedEvent, Workspace};
use serde::Serialize;

use crate::ReplayError;
use crate::events::time_text;

/// A record's history.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    pub record: String,
    pub events: Vec<Provenance>,
}

/// One event of a record, and where it came from.
#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    pub event: LoggedEvent,
    /// What caused it, nearest first: its causation, that event's causation, and so on.
    pub caused_by: Vec<LoggedEvent>,
    /// A causation id the log holds no event for (the chain ends there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved_cause: Option<String>,
    /// The other events of its correlation, in time order.
    pub correlated: Vec<LoggedEvent>,
}

/// The history of the record whose id is `record` (or a unique prefix or suffix of one, of at
/// least four characters), from the event indexes.
pub fn history(workspace: &mut Workspace, record: &str) -> Result<History, ReplayError> {
    let events = workspace.events(&EventFilter::default())?;
    let id = resolve_record(&events, record)?;
    let by_id: HashMap<String, &LoggedEvent> =
        events.iter().map(|event| (event.envelope.id.to_string(), event)).collect();
    let about = |event: &&LoggedEvent| event.envelope.subject.as_ref().is_some_and(|s| s.record.to_string() == id);
    let mut history = History { record: id.clone(), events: Vec::new() };
    for event in events.iter().filter(about) {
        let mut caused_by = Vec::new();
        let mut unresolved_cause = None;
        let mut seen = HashSet::from([event.envelope.id.to_string()]);
        let mut cause = event.envelope.causation.as_ref().map(ToString::to_string);
        while let Some(id) = cause.filter(|id| seen.insert(id.clone())) {
            match by_id.get(&id) {
                Some(found) => {
                    caused_by.push((*found).clone());
                    cause = found.envelope.causation.as_ref().map(ToString::to_string);
                }
                None => {
                    unresolved_cause = Some(id);
                    cause = None;
                }
            }
        }
        let correlated = match event.envelope.correlation {
            Some(correlation) => events
                .iter()
                .filter(|other| other.envelope.correlation == Some(correlation) && other.change != event.change)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        history.events.push(Provenance { event: event.clone(), caused_by, unresolved_cause, correlated });
    }
    Ok(history)
}

/// The one record id among the events' subjects that `text` names.
fn resolve_record(events: &[LoggedEvent], text: &str) -> Result<String, ReplayError> {
    let wanted = text.trim().to_ascii_uppercase();
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|event| event.envelope.subject.as_ref().map(|s| s.record.to_string()))
        .filter(|id| *id == wanted || id.starts_with(&wanted) || (wanted.len() >= 4 && id.ends_with(&wanted)))
        .collect();
    ids.sort();
    ids.dedup();
    if ids.contains(&wanted) {
        return Ok(wanted);
    }
    match ids.len() {
        1 => Ok(ids.remove(0)),
        0 => Err(ReplayError::RecordNotFound { id: text.to_owned() }),
        matches => Err(ReplayError::RecordAmbiguous { prefix: text.to_owned(), matches }),
    }
}

/// Prints a history as text.
pub fn write_text(out: &mut dyn Write, history: &History) -> std::io::Result<()> {
    writeln!(out, "record {}", history.record)?;
    for provenance in &history.events {
        writeln!(out, "{}", describe(&provenance.event))?;
        for cause in &provenance.caused_by {
            writeln!(out, "    ← {}", describe(cause))?;
        }
        if let Some(id) = &provenance.unresolved_cause {
            writeln!(out, "    ← event {id} (not in this log)")?;
        }
        if let Some(correlation) = provenance.event.envelope.correlation {
            writeln!(out, "    correlation {correlation}: {} other events", provenance.correlated.len())?;
            for other in &provenance.correlated {
                writeln!(out, "      · {}", describe(other))?;
            }
        }
    }
    Ok(())
}

fn describe(event: &LoggedEvent) -> String {
    let envelope = &event.envelope;
    format!(
        "{} {} by {} on device {} (event {}, change {} of {})",
        time_text(envelope.time),
        envelope.kind.as_str(),
        envelope.actor,
        envelope.device.short(),
        envelope.id,
        &event.change[..event.change.len().min(12)],
        event.document,
    )
}
