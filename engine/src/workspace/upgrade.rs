//! Upgrading a workspace written by an older build to what this build writes.
//!
//! Notes were kept in the collection's one document (`notes`) before each got a document of
//! its own (`notes/ID`), and tasks, calendar events and memory facts before they were spread
//! over buckets (`tasks/a`, see [`adiuva_model::Spread`]). Such a workspace keeps opening,
//! reading and writing as it is; its records move out at `adiuva upgrade`, and notes also at
//! the next compaction of `notes` (a bucketed collection may hold a hundred thousand records:
//! moving them is asked for, not a side effect of a compaction). Moving a record is two events
//! committed together, with the new document's registration if it is new:
//! `task.moved_out` deletes it from the collection's document (whose history keeps every
//! earlier event of it) and `task.moved_in`, caused by the first, creates it, as it then was,
//! in its document.
//!
//! Changes written before attestations (see [`crate::authorship`]) carry none: compacting
//! their document attests this device's own, which `upgrade` does for every such document, so
//! everything it exports can be verified by other devices.
//!
//! Format 1 sealed the store under keys derived from the shared workspace key, which every
//! device of the workspace holds, a removed one included. Since keyring format 2 each device
//! seals its store under a storage key of its own: an older workspace gets one at its first
//! open and writes everything new under it at once. What was sealed before moves at `upgrade`
//! or at a full compaction: every blob still under a derived key is opened and sealed again
//! under the device's key, then the keyring stops accepting the derived keys. A crash part-way
//! leaves a workspace that opens (both keys are still accepted); the next run finishes.

use std::collections::BTreeSet;

use adiuva_model::{Actor, Collection, EventKind, RecordId, Spread};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use super::commit::{EventDraft, Operation};
use super::{Workspace, layout};
use crate::error::{Error, Result};
use crate::records::{self, Effect};
use crate::store::WriteBatch;

/// Records moved per group commit: bounds the batch (long texts) while sharing barriers.
const MOVE_GROUP: usize = 64;

/// How many bytes of re-sealed blobs one batch carries.
const RESEAL_BATCH_BYTES: usize = 256 * 1024;

/// What an upgrade did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    /// Records moved into documents of their own.
    pub records_moved: usize,
    /// Stored blobs moved from a key derived from the workspace key to the device's own.
    pub resealed: usize,
    /// Documents whose changes from before attestations got this device's attestation (a
    /// compaction each).
    pub attested: usize,
}

impl Workspace {
    /// Brings the workspace to this build's layout and keys: every record of a collection spread
    /// over documents moves out of the collection's own document, which is then compacted,
    /// every document holding changes from before attestations is compacted (which attests this
    /// device's own), and every blob still sealed under a derived key moves to the device's
    /// storage key. Running it again does nothing.
    pub fn upgrade(&mut self) -> Result<Upgrade> {
        let mut upgrade = Upgrade::default();
        let spread = |c: &Collection| matches!(c.spread(), Spread::Buckets | Spread::PerRecord);
        for collection in Collection::ALL.into_iter().filter(spread) {
            let moved = self.move_records_out(collection)?;
            if moved > 0 {
                self.compact_document(collection.name())?;
            }
            upgrade.records_moved += moved;
        }
        upgrade.resealed = self.move_to_device_key()?;
        for document in self.document_names()? {
            if self.document(&document)?.legacy {
                self.compact_document(&document)?;
                upgrade.attested += 1;
            }
        }
        Ok(upgrade)
    }

    /// Re-seals every blob still under a derived key, then records that there are none.
    pub(super) fn move_to_device_key(&mut self) -> Result<usize> {
        if self.log.derived_keys.is_empty() {
            return Ok(0);
        }
        let mut resealed = 0;
        let mut batch = WriteBatch::default();
        let mut batch_bytes = 0;
        for key in self.log.store.keys_with_prefix(b"")? {
            if key == layout::HEADER || key == layout::KEYRING {
                continue;
            }
            let Some(bytes) = self.log.store.get(&key)? else {
                continue;
            };
            if let Some(moved) = self.log.reseal(&key, &bytes)? {
                batch_bytes += moved.len();
                batch.put(key, moved);
                resealed += 1;
            }
            if batch_bytes >= RESEAL_BATCH_BYTES {
                self.log.write_durably(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.log.write_durably(batch)?;
        }
        // The witness is sealed under the current key whenever it is written.
        self.write_witness()?;
        self.log.keyring.storage_moved();
        self.log.store_keyring()?;
        self.log.derived_keys.clear();
        info!(resealed, "the store moved to this device's own storage key");
        Ok(resealed)
    }

    /// Moves out the records `document` holds if it is the collection document of a
    /// collection whose records now have documents of their own.
    pub(super) fn move_records_out_of(&mut self, document: &str) -> Result<()> {
        match shared_document_of_records(document) {
            Some(collection) => self.move_records_out(collection).map(drop),
            None => Ok(()),
        }
    }

    /// Moves the records still in `collection`'s own document into the documents they now
    /// belong to. Returns how many moved.
    pub(super) fn move_records_out(&mut self, collection: Collection) -> Result<usize> {
        let shared = collection.name();
        if !self.is_registered(shared)? || self.view(shared)?.is_empty() {
            return Ok(0);
        }
        let ids: Vec<RecordId> = self.view(shared)?.ids().collect();
        let kind = |action: &str| {
            EventKind::new(format!("{}.{action}", collection.singular()))
                .map_err(|e| Error::InvalidInput { detail: e.to_string() })
        };
        let (moved_out, moved_in) = (kind("moved_out")?, kind("moved_in")?);
        let mut moved = 0;
        for group in ids.chunks(MOVE_GROUP) {
            let mut events = Vec::new();
            let mut registering = BTreeSet::new();
            for &id in group {
                // Gone already if a compaction during an earlier group moved it.
                let Some(Value::Object(fields)) = records::read_record(&self.document(shared)?.doc, id, None) else {
                    continue;
                };
                let document = collection.document_of(id);
                let out = self.record_event(
                    shared.to_owned(),
                    EventDraft::new(moved_out.clone(), Actor::System),
                    Effect::DeleteRecord { collection, id },
                    false,
                );
                let cause = out.id();
                events.push(out);
                // A record another device moved already is in its new document: that one stands.
                // (A note's document exists only once it moved; a bucket holds many records.)
                let registered_in_group = registering.contains(&document);
                let registered = registered_in_group || self.is_registered(&document)?;
                let moved_before = registered
                    && !registered_in_group
                    && (collection.has_record_documents() || self.view(&document)?.contains(id));
                if !moved_before {
                    if !registered {
                        let operation = Operation::RegisterDocument { name: document.clone(), collection };
                        events.push(self.root_event("document.created", None, operation, false));
                        registering.insert(document.clone());
                    }
                    let draft = EventDraft::new(moved_in.clone(), Actor::System).caused_by(Some(cause));
                    events.push(self.record_event(
                        document,
                        draft,
                        Effect::CreateRecord { collection, id, fields },
                        false,
                    ));
                }
                moved += 1;
            }
            if !events.is_empty() {
                self.commit_prepared(events, WriteBatch::default())?;
            }
        }
        info!(collection = %collection, moved, "records moved out of the collection's own document");
        Ok(moved)
    }
}

/// The collection whose records have documents of their own, if `document` is its older shared
/// document (which may still hold records to move out at its compaction).
pub(super) fn shared_document_of_records(document: &str) -> Option<Collection> {
    Collection::of_document(document).filter(|c| c.has_record_documents() && c.name() == document)
}
