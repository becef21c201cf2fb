//! Reads: records through the read views, events and histories through the event indexes,
//! conflicts through the documents, and the workspace's status. Nothing here writes to the log
//! (a rebuilt read view or event index is stored as a cache).

use adiuva_model::{Collection, DeviceId, Envelope, RecordId, Spread};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use tracing::warn;
use ulid::Ulid;

use super::{ROOT_DOCUMENT, Workspace};
use crate::error::{Error, Result, json_error};
use crate::manifest::Manifest;
use crate::records::{self, FieldConflict};
use crate::view::RecordView;
use automerge::ReadDoc;

/// An event as read back from the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub document: String,
    /// The Automerge change hash, hex.
    pub change: String,
    pub envelope: Envelope,
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub record: Option<RecordId>,
}

impl EventFilter {
    fn matches(&self, envelope: &Envelope) -> bool {
        let kind_ok = self.kind.as_deref().is_none_or(|kind| {
            // `task` matches `task.created`, `task.updated`...; `task.created` matches itself.
            envelope.kind.as_str() == kind || envelope.kind.as_str().starts_with(&format!("{kind}."))
        });
        let actor_ok = self.actor.as_deref().is_none_or(|actor| {
            let text = envelope.actor.to_string();
            text == actor || text.starts_with(&format!("{actor}:")) || text.starts_with(&format!("{actor}/"))
        });
        let record_ok = self.record.is_none_or(|record| envelope.subject.as_ref().is_some_and(|s| s.record == record));
        kind_ok && actor_ok && record_ok
    }
}

/// What `status` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkspaceStatus {
    pub workspace_id: Ulid,
    pub device_id: DeviceId,
    pub path: PathBuf,
    pub key_epoch: u32,
    pub documents: Vec<DocumentStatus>,
    pub storage_bytes: u64,
    /// Received changes waiting in the pending area for changes they depend on.
    #[serde(default)]
    pub pending_changes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentStatus {
    /// The document, or `notes/*` for the sum of a collection's documents of one record each.
    pub name: String,
    pub records: usize,
    pub events: usize,
    /// Change chunks written since the last compaction.
    pub tail_chunks: u64,
    pub snapshot_generation: Option<u64>,
    /// Set when the document cannot be loaded; the rest of the workspace is still usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Workspace {
    /// Whether the root directory lists `document`.
    pub(super) fn is_registered(&mut self, document: &str) -> Result<bool> {
        let root = &self.document(ROOT_DOCUMENT)?.doc;
        Ok(match root.get(automerge::ROOT, "documents") {
            Ok(Some((_, directory))) => matches!(root.get(&directory, document), Ok(Some(_))),
            _ => false,
        })
    }

    /// The documents the root directory lists, root first.
    pub fn document_names(&mut self) -> Result<Vec<String>> {
        let root = &self.document(ROOT_DOCUMENT)?.doc;
        let mut names = vec![ROOT_DOCUMENT.to_owned()];
        if let Ok(Some((_, directory))) = root.get(automerge::ROOT, "documents") {
            names.extend(root.keys(&directory));
        }
        Ok(names)
    }

    fn collection_documents(&mut self, collection: Collection) -> Result<Vec<String>> {
        Ok(self
            .document_names()?
            .into_iter()
            .filter(|name| Collection::of_document(name) == Some(collection))
            .collect())
    }

    /// The document that holds a record: [`Collection::document_of`], except for a record
    /// written before its collection was spread over documents (and not moved out yet), which
    /// is still in the collection's own document.
    pub(super) fn locate(&mut self, collection: Collection, id: RecordId) -> Result<String> {
        let document = collection.document_of(id);
        let shared = collection.name();
        if document != shared && self.is_registered(shared)? && self.view(shared)?.contains(id) {
            return Ok(shared.to_owned());
        }
        Ok(document)
    }

    /// A record's current fields, or `None`.
    pub fn get(&mut self, collection: Collection, id: RecordId) -> Result<Option<Value>> {
        let document = self.locate(collection, id)?;
        if document != collection.name() && !self.is_registered(&document)? {
            return Ok(None);
        }
        self.view(&document)?.get(id).map_err(|e| Error::DocumentCorrupt { document, detail: e.to_string() })
    }

    pub fn get_as<T: DeserializeOwned>(&mut self, collection: Collection, id: RecordId) -> Result<Option<T>> {
        self.get(collection, id)?.map(|value| decode_record(collection, value)).transpose()
    }

    /// Every record of a collection, oldest first.
    pub fn list(&mut self, collection: Collection) -> Result<Vec<Value>> {
        self.list_as(collection)
    }

    /// Every record of a collection, oldest first, deserialized straight from the read views.
    pub fn list_as<T: DeserializeOwned + Send>(&mut self, collection: Collection) -> Result<Vec<T>> {
        let documents = self.collection_documents(collection)?;
        for document in &documents {
            self.view(document)?;
        }
        let views: Vec<&RecordView> = documents.iter().filter_map(|document| self.views.get(document)).collect();
        RecordView::records_of_as(&views)
            .map_err(|(id, e)| Error::RecordInvalid { collection, detail: format!("record {id} {}", json_error(&e)) })
    }

    /// Visits every record of a collection as its JSON text, oldest first within each document,
    /// not parsed: for a reader that takes a few fields of each record and keeps none of the
    /// text (parsing every record first held them all at once).
    pub fn record_texts<E: From<Error>>(
        &mut self,
        collection: Collection,
        mut visit: impl FnMut(RecordId, &str) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for document in self.collection_documents(collection)? {
            let mut texts = self.view(&document)?.texts();
            while let Some(block) = texts.next_block() {
                let block =
                    block.map_err(|e| Error::DocumentCorrupt { document: document.clone(), detail: e.to_string() })?;
                for (id, text) in block {
                    visit(id, text)?;
                }
            }
        }
        Ok(())
    }

    /// Whether a collection holds any record.
    pub fn has_records(&mut self, collection: Collection) -> Result<bool> {
        for document in self.collection_documents(collection)? {
            if !self.view(&document)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Resolves a full id or a unique prefix of one (case-insensitive) to a record id.
    ///
    /// A unique *suffix* of at least four characters works too: a ULID starts with its
    /// timestamp, so records created close together share long prefixes but end differently.
    pub fn resolve_id(&mut self, collection: Collection, text: &str) -> Result<RecordId> {
        let part = text.to_ascii_uppercase();
        if part.is_empty() {
            return Err(Error::InvalidInput { detail: "empty record id".into() });
        }
        let matches_text = |id: &RecordId| {
            let id = id.to_string();
            id.starts_with(&part) || (part.len() >= 4 && id.ends_with(&part))
        };
        let mut matches = Vec::new();
        for document in self.collection_documents(collection)? {
            matches.extend(self.view(&document)?.ids().filter(matches_text));
        }
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::RecordNotFound { collection, id: text.to_owned() }),
            _ => Err(Error::RecordAmbiguous { collection, prefix: text.to_owned(), matches: matches.len() }),
        }
    }

    /// A document as Automerge holds it (loaded from its checked log; empty if never written):
    /// for readers that travel through its history, such as the audit tool.
    pub fn automerge(&mut self, document: &str) -> Result<&automerge::Automerge> {
        Ok(&self.document(document)?.doc)
    }

    /// The conflicts Automerge keeps for a record (fields set concurrently on two devices).
    pub fn conflicts(&mut self, collection: Collection, id: RecordId) -> Result<Vec<FieldConflict>> {
        let document = self.locate(collection, id)?;
        records::record_conflicts(&self.document(&document)?.doc, collection, id)
    }

    /// Events matching `filter`, across all documents, in time order.
    pub fn events(&mut self, filter: &EventFilter) -> Result<Vec<LoggedEvent>> {
        let mut out = Vec::new();
        for document in self.document_names()? {
            out.extend(self.document_events(&document)?.into_iter().filter(|e| filter.matches(&e.envelope)));
        }
        out.sort_by_key(|e| (e.envelope.time, e.envelope.id));
        Ok(out)
    }

    /// A record's events (its history), oldest first.
    pub fn history(&mut self, collection: Collection, id: RecordId) -> Result<Vec<LoggedEvent>> {
        let mut documents = vec![self.locate(collection, id)?];
        // A record moved into a document of its own left its earlier events in the collection's.
        if documents[0] != collection.name() && self.is_registered(collection.name())? {
            documents.push(collection.name().to_owned());
        }
        let mut events = Vec::new();
        for document in documents {
            let about = |e: &LoggedEvent| e.envelope.subject.as_ref().is_some_and(|s| s.record == id);
            events.extend(self.document_events(&document)?.into_iter().filter(about));
        }
        events.sort_by_key(|e| (e.envelope.time, e.envelope.id));
        Ok(events)
    }

    /// A document's events, from its event index (never loading the document unless the
    /// index must be rebuilt).
    pub(super) fn document_events(&mut self, document: &str) -> Result<Vec<LoggedEvent>> {
        self.event_index(document)?
            .events
            .into_iter()
            .map(|event| {
                let change = event.change.to_string();
                let envelope = Envelope::decode(&event.envelope).map_err(|source| Error::Envelope {
                    document: document.to_owned(),
                    change: change.clone(),
                    source,
                })?;
                Ok(LoggedEvent { document: document.to_owned(), change, envelope })
            })
            .collect()
    }

    /// Counts, sizes and the health of every document. A damaged document is reported in its
    /// entry; the others are counted as usual. Collections are counted through their read
    /// views and events through the manifests, so no Automerge document needs to load; the log
    /// of each document is still checked.
    pub fn status(&mut self) -> Result<WorkspaceStatus> {
        let mut documents: Vec<DocumentStatus> = Vec::new();
        for name in self.document_names()? {
            let status = self.document_status(&name).unwrap_or_else(|error| {
                warn!(document = %name, %error, "document does not load");
                DocumentStatus {
                    name: name.clone(),
                    records: 0,
                    events: 0,
                    tail_chunks: 0,
                    snapshot_generation: None,
                    error: Some(format!("{}: {error}", error.code().as_str())),
                }
            });
            // A collection's buckets and documents of one record each are summed up (`tasks/*`,
            // `notes/*`), unless damaged.
            let summed = |c: &Collection| matches!(c.spread(), Spread::Buckets | Spread::PerRecord);
            let group = Collection::of_document(&name)
                .filter(|c| summed(c) && name != c.name() && status.error.is_none())
                .map(|c| format!("{c}/*"));
            match group {
                Some(group) => match documents.iter_mut().find(|d| d.name == group) {
                    Some(sum) => {
                        sum.records += status.records;
                        sum.events += status.events;
                        sum.tail_chunks += status.tail_chunks;
                    }
                    None => documents.push(DocumentStatus { name: group, snapshot_generation: None, ..status }),
                },
                None => documents.push(status),
            }
        }
        Ok(WorkspaceStatus {
            workspace_id: self.workspace_id(),
            device_id: self.device_id(),
            path: self.path.clone(),
            key_epoch: self.log.keyring.workspace_key().map_or(0, |key| key.epoch),
            documents,
            storage_bytes: self.log.store.size_on_disk()?,
            pending_changes: self.pending_count()?,
        })
    }

    fn document_status(&mut self, name: &str) -> Result<DocumentStatus> {
        let records = if name == ROOT_DOCUMENT { 0 } else { self.view(name)?.len() };
        let manifest = self.current_manifest(name)?;
        let events = self.event_count(name, &manifest)? as usize;
        Ok(DocumentStatus {
            name: name.to_owned(),
            records,
            events,
            tail_chunks: manifest.tail_len(),
            snapshot_generation: manifest.snapshot.map(|s| s.generation),
            error: None,
        })
    }
}

impl Workspace {
    /// A document's manifest as it is now: the loaded one, else the stored one.
    pub(super) fn current_manifest(&self, document: &str) -> Result<Manifest> {
        Ok(match self.docs.get(document) {
            Some(loaded) => loaded.manifest.clone(),
            None => self.log.read_manifest(document)?.unwrap_or_else(Manifest::empty),
        })
    }
}

fn decode_record<T: DeserializeOwned>(collection: Collection, value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::RecordInvalid { collection, detail: format!("the record {}", json_error(&e)) })
}
