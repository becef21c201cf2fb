//! Following the log: a [`Cursor`] says how many events of each document a reader has seen, so
//! a reader (the daemon's event stream, a UI) resumes exactly where it stopped, across
//! reconnects and restarts, without missing or repeating an event.
//!
//! A document's events are its Automerge changes in the order the document holds them; a
//! device's own changes form one chain, so that order is the order they were committed in and
//! survives compaction. Counting per document rather than numbering globally needs nothing
//! stored beyond the manifests' event counts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{LoggedEvent, Workspace};
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// An event and its place in its document: the `seq`-th event (from 1) of `event.document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowedEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: LoggedEvent,
}

/// Called with every durable commit group's events, in commit order, before the commit returns.
pub type CommitObserver = Box<dyn FnMut(&[FollowedEvent]) + Send + Sync>;

/// How many events of each document a reader has seen. Its text form is
/// `document:count,document:count` (document names hold neither `,` nor `:`); the empty text is
/// the start of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<String, u64>);

impl Cursor {
    /// Moves past `event`; false if the cursor had already seen it.
    pub fn advance(&mut self, event: &FollowedEvent) -> bool {
        let seen = self.0.entry(event.event.document.clone()).or_default();
        if event.seq <= *seen {
            return false;
        }
        *seen = event.seq;
        true
    }

    fn seen(&self, document: &str) -> u64 {
        self.0.get(document).copied().unwrap_or_default()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(document, seen)| format!("{document}:{seen}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::InvalidInput { detail: format!("not a cursor: {text:?}") };
        let mut seen = BTreeMap::new();
        for part in text.split(',').filter(|part| !part.is_empty()) {
            let (document, count) = part.rsplit_once(':').ok_or_else(invalid)?;
            let count: u64 = count.parse().map_err(|_| invalid())?;
            if document.is_empty() || seen.insert(document.to_owned(), count).is_some() {
                return Err(invalid());
            }
        }
        Ok(Self(seen))
    }
}

impl Workspace {
    /// Where the log ends now: every document's event count.
    pub fn cursor(&mut self) -> Result<Cursor> {
        let mut seen = BTreeMap::new();
        for document in self.document_names()? {
            let manifest = self.current_manifest(&document)?;
            let count = self.event_count(&document, &manifest)?;
            seen.insert(document, count);
        }
        Ok(Cursor(seen))
    }

    /// Every event after `cursor`, each document's in its order, documents merged by time.
    /// A cursor naming a document this workspace does not have, or ahead of a document's log
    /// (a workspace restored from an older copy), is refused.
    pub fn events_after(&mut self, cursor: &Cursor) -> Result<Vec<FollowedEvent>> {
        let documents = self.document_names()?;
        if let Some(unknown) = cursor.0.keys().find(|name| !documents.contains(name)) {
            return Err(Error::InvalidInput { detail: format!("the cursor names an unknown document {unknown:?}") });
        }
        let mut out = Vec::new();
        for document in documents {
            let seen = cursor.seen(&document);
            let manifest = self.current_manifest(&document)?;
            let count = self.event_count(&document, &manifest)?;
            if seen > count {
                return Err(Error::InvalidInput {
                    detail: format!("the cursor is past the end of document {document} ({seen} > {count} events)"),
                });
            }
            if seen == count {
                continue;
            }
            let events = self.document_events(&document)?;
            let first = usize::try_from(seen).unwrap_or(usize::MAX);
            out.extend(events.into_iter().zip(1u64..).skip(first).map(|(event, seq)| FollowedEvent { seq, event }));
        }
        // Stable: each document's events keep their order.
        out.sort_by_key(|e| e.event.envelope.time);
        Ok(out)
    }

    /// Sets the function told about every durable commit group (the daemon's event stream).
    pub fn on_commit(&mut self, observer: CommitObserver) {
        self.observer = Some(observer);
    }

    /// The documents held in memory (loaded Automerge documents and read views).
    pub fn loaded_documents(&self) -> Vec<String> {
        let mut names: Vec<String> = self.docs.keys().chain(self.views.keys()).cloned().collect();
        names.sort();
        names.dedup();
        names
    }

    /// A document's event count, from its manifest when that has one (no Automerge load).
    pub(super) fn event_count(&mut self, document: &str, manifest: &Manifest) -> Result<u64> {
        match manifest.events {
            Some(events) => Ok(events),
            None => Ok(self.document(document)?.doc.get_changes_meta(&[]).len() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_text_round_trips_and_refuses_garbage() {
        let cursor: Cursor = "root:3,activity/2026-11:7,tasks:120".parse().unwrap_or_default();
        assert_eq!(cursor.seen("activity/2026-11"), 7);
        assert_eq!(cursor.to_string().parse::<Cursor>().ok(), Some(cursor));
        assert_eq!("".parse::<Cursor>().ok(), Some(Cursor::default()));
        for bad in ["tasks", "tasks:x", ":3", "tasks:1,tasks:2", "tasks:-1"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
