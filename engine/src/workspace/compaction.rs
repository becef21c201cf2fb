//! Compaction: a document's tail folded into a fresh snapshot. A collection document whose
//! records now have documents of their own first moves them out (see `upgrade`).
//!
//! The new snapshot and the manifest that points at it (and the read view's new base) are
//! written and made durable together first; only then are the chunks, the older snapshot and
//! the deltas they replace deleted. A crash in between leaves leftovers the manifest does not
//! count: they are ignored on load and removed by the next compaction.

use automerge::{Automerge, Change, VerificationMode};
use tracing::{debug, warn};

use super::upgrade::shared_document_of_records;
use super::{LoadedDocument, ROOT_DOCUMENT, Workspace, layout};
use crate::authorship::{Attestation, Attestations, ChangeNames, SignedSnapshot};
use crate::chunk::BlobKind;
use crate::error::{Error, Result};
use crate::manifest::SnapshotRef;
use crate::store::{StoreError, WriteBatch};
use crate::untrusted::load_document;

impl Workspace {
    /// Folds every document's tail into a fresh snapshot (documents without a tail are not
    /// loaded), moves records out of a collection document that should no longer hold any, and
    /// finishes moving an older workspace to the device's storage key (see `upgrade`).
    pub fn compact(&mut self) -> Result<()> {
        for document in self.document_names()? {
            self.move_records_out_of(&document)?;
            let tail = match self.docs.get(&document) {
                Some(loaded) => loaded.manifest.tail_len(),
                None => self.log.read_manifest(&document)?.map_or(0, |manifest| manifest.tail_len()),
            };
            if tail > 0 {
                self.compact_document(&document)?;
            }
        }
        self.move_to_device_key()?;
        Ok(())
    }

    /// Folds the tails of the documents in memory only: what a long-running process does
    /// from time to time, without loading what nobody used.
    pub fn compact_loaded(&mut self) -> Result<()> {
        let due: Vec<String> = self
            .docs
            .iter()
            .filter(|(_, loaded)| loaded.manifest.tail_len() > 0)
            .map(|(name, _)| name.clone())
            .collect();
        for document in due {
            self.compact_document(&document)?;
        }
        Ok(())
    }

    pub(super) fn compact_document(&mut self, document: &str) -> Result<()> {
        self.finish_compaction(true);
        self.move_records_out_of(document)?;
        let own_legacy = self.own_unattested_changes(document)?;
        let loaded = self.document(document)?;
        let mut fold = Fold::of(document, loaded);
        let saved =
            Saved { snapshot: save_verified(document, &loaded.doc), names: ChangeNames::of(&loaded.doc), index: None };
        // The snapshot keeps the attestation of every change it folds in, so authorship
        // survives compaction; this device's own changes from before attestations get one now.
        if !own_legacy.is_empty() {
            let changes: Vec<&Change> = own_legacy.iter().collect();
            fold.legacy = Some(self.log.attest(document, &changes));
        }
        self.install_snapshot(fold, saved)
    }

    /// Compacts `document` after a commit: its Automerge save, which is most of the work, runs
    /// on a thread of its own over a copy of the document, and the snapshot is installed by a
    /// later commit (or at close) once the save is done. One compaction runs at a time; a
    /// document that needs moving records out or attesting old changes compacts at once.
    pub(super) fn compact_in_background(&mut self, document: &str) -> Result<()> {
        self.finish_compaction(false);
        if self.compacting.is_some() {
            return Ok(()); // still due after the next commit
        }
        let loaded = self.document(document)?;
        if loaded.legacy || shared_document_of_records(document).is_some() {
            return self.compact_document(document);
        }
        let fold = Fold::of(document, loaded);
        let copy = loaded.doc.clone();
        // The event index as far as the copy goes: encoded and sealed on the thread too.
        let index = self.event_index(document)?;
        let (index_key, sealer) = (layout::index(document), self.log.local_sealer());
        let name = document.to_owned();
        let saving = std::thread::Builder::new()
            .name("compaction".into())
            .spawn(move || {
                let sealed = index.encode().and_then(|plain| sealer.seal(&index_key, BlobKind::EventIndex, &plain));
                Saved {
                    snapshot: save_verified(&name, &copy),
                    names: ChangeNames::of(&copy),
                    index: Some(sealed.map(|sealed| (sealed, index.next_seq))),
                }
            })
            .map_err(|e| Error::Store(StoreError::from(e)))?;
        self.compacting = Some(Compacting { fold, saving });
        Ok(())
    }

    /// Installs the snapshot of a background compaction whose save is done, or, with `wait`,
    /// waits for it first. A compaction that fails is only logged: the document is still due
    /// and compacts again after a later commit.
    pub(super) fn finish_compaction(&mut self, wait: bool) {
        let Some(compacting) = self.compacting.take_if(|c| wait || c.saving.is_finished()) else { return };
        let document = compacting.fold.document.clone();
        let result = match compacting.saving.join() {
            Ok(saved) => self.install_snapshot(compacting.fold, saved),
            Err(_) => Err(Error::DocumentCorrupt {
                document: document.clone(),
                detail: "the compaction's save panicked".into(),
            }),
        };
        if let Err(error) = result {
            warn!(document, %error, "compaction failed; will retry");
        }
    }

    /// Writes `saved`, the document as `fold` found it, as the document's next snapshot, and
    /// then deletes what it replaces. Chunks written since `fold` stay in the tail.
    fn install_snapshot(&mut self, fold: Fold, saved: Saved) -> Result<()> {
        let document = fold.document.as_str();
        let current = self.document(document)?.manifest.clone();
        let generation = current.snapshot.map_or(1, |s| s.generation + 1);
        if generation != fold.generation || current.tail_start > fold.upto {
            debug!(document, "a compaction overtaken by another: dropped");
            return Ok(());
        }
        let mut attestations = fold.attestations;
        if let Some(legacy) = &fold.legacy {
            attestations.add(legacy.clone());
        }
        let snapshot = SignedSnapshot { attestations: attestations.all().to_vec(), document: saved.snapshot? };
        // Step 1: the new snapshot and the manifest that points at it, durable together.
        let key = layout::snapshot(document, generation);
        let sealed = self.log.seal(&key, BlobKind::Snapshot, &snapshot.encode(&saved.names)?)?;
        let mut manifest = current.clone();
        manifest.tail_start = fold.upto;
        manifest.tail_bytes = current.tail_bytes.saturating_sub(fold.tail_bytes);
        manifest.snapshot = Some(SnapshotRef { generation, bytes: sealed.len() as u64 });
        let mut batch = WriteBatch::default();
        batch.put(key, sealed);
        self.log.stage_manifest(document, &manifest, &mut batch)?;
        // The event index's parts fold into a new base, like the view's deltas.
        match saved.index {
            Some(index) => {
                let (sealed, next_seq) = index?;
                self.stage_sealed_index_base(document, sealed, next_seq, &mut batch)?;
            }
            None => {
                let index = self.event_index(document)?;
                self.stage_index_base(document, &index, &mut batch)?;
            }
        }
        if document != ROOT_DOCUMENT {
            // The view's deltas fold into a new base at the same pace as the tail into the snapshot.
            self.view(document)?;
            if let Some(view) = self.views.get(document) {
                self.stage_view(document, view, &mut batch)?;
            }
        }
        self.log.write_durably(batch)?;
        if let Some(loaded) = self.docs.get_mut(document) {
            loaded.manifest = manifest;
            if let Some(legacy) = fold.legacy {
                loaded.attestations.add(legacy);
            }
            loaded.legacy = false;
        }
        // Step 2: only now delete what the snapshot replaces (and leftovers of earlier runs).
        let mut cleanup = WriteBatch::default();
        for key in self.log.store.keys_with_prefix(&layout::change_prefix(document))? {
            if layout::change_seq(document, &key).is_some_and(|seq| seq < fold.upto) {
                cleanup.delete(key);
            }
        }
        for key in self.log.store.keys_with_prefix(&layout::snapshot_prefix(document))? {
            if key != layout::snapshot(document, generation) {
                cleanup.delete(key);
            }
        }
        if !cleanup.is_empty() {
            self.log.write_durably(cleanup)?;
        }
        self.write_witness()?;
        debug!(document, generation, bytes = snapshot.document.len(), "compacted");
        Ok(())
    }
}

/// A document as a compaction found it: what its snapshot will cover.
struct Fold {
    document: String,
    /// The snapshot generation it will write.
    generation: u64,
    /// The chunks before this sequence number are in the snapshot.
    upto: u64,
    /// Their bytes, which leave the tail.
    tail_bytes: u64,
    attestations: Attestations,
    /// This device's attestation of its own changes from before attestations, if any.
    legacy: Option<Attestation>,
}

impl Fold {
    fn of(document: &str, loaded: &LoadedDocument) -> Self {
        let manifest = &loaded.manifest;
        Fold {
            document: document.to_owned(),
            generation: manifest.snapshot.map_or(1, |s| s.generation + 1),
            upto: manifest.next_seq,
            tail_bytes: manifest.tail_bytes,
            attestations: loaded.attestations.clone(),
            legacy: None,
        }
    }
}

/// What a compaction's save produced: the document's bytes, the names of its changes and, when
/// saved on a thread of its own, the sealed event index base as far as the document went, with
/// the sequence number it reaches.
struct Saved {
    snapshot: Result<Vec<u8>>,
    names: ChangeNames,
    index: Option<Result<(Vec<u8>, u64)>>,
}

/// `doc` saved, and the save loaded back and checked. A save that does not load (Automerge
/// took in a change it cannot save again) must not replace the tail it folds: the document
/// would be lost. The compaction fails instead, and the document stays as its tail holds it.
fn save_verified(document: &str, doc: &Automerge) -> Result<Vec<u8>> {
    let snapshot = doc.save();
    load_document(&snapshot, VerificationMode::Check).map_err(|detail| Error::DocumentCorrupt {
        document: document.to_owned(),
        detail: format!("its save does not load again ({detail}): not compacted"),
    })?;
    Ok(snapshot)
}

/// A background compaction: the save running on its thread.
pub(super) struct Compacting {
    fold: Fold,
    saving: std::thread::JoinHandle<Saved>,
}

impl Workspace {
    /// This device's changes of `document` that no attestation covers: written before
    /// attestations existed (only a document whose log predates them can have any).
    fn own_unattested_changes(&mut self, document: &str) -> Result<Vec<Change>> {
        let actor = self.actor.clone();
        let loaded = self.document(document)?;
        if !loaded.legacy {
            return Ok(Vec::new());
        }
        let covered = loaded.attestations.hashes();
        Ok(loaded
            .doc
            .get_changes(&[])
            .into_iter()
            .filter(|change| change.actor_id() == &actor && !covered.contains(&change.hash()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    // Tests fail loudly: unwrapping is how they assert.
    #![allow(clippy::unwrap_used)]

    use adiuva_model::{Actor, Collection, EventKind, RecordId};
    use zeroize::Zeroizing;

    use super::*;
    use crate::KeyProtection;
    use crate::records::Effect;
    use crate::workspace::EventDraft;

    #[test]
    fn a_document_whose_save_does_not_load_is_not_compacted_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = || Some(Zeroizing::new("a passphrase for tests".to_owned()));
        let protection = KeyProtection::Passphrase(passphrase().unwrap());
        let mut workspace = Workspace::init(dir.path(), protection, "a").unwrap();
        let fields = serde_json::json!({"goal": "a plan"}).as_object().cloned().unwrap();
        let effect = Effect::CreateRecord { collection: Collection::Plans, id: RecordId::new(), fields };
        workspace.commit(EventDraft::new(EventKind::from_static("plan.created"), Actor::User), effect).unwrap();
        // In memory only, past every check an import makes: a change without operations
        // numbered from 4, which Automerge takes in but cannot save again.
        let unsaveable = automerge::ExpandedChange {
            operations: Vec::new(),
            actor_id: automerge::ActorId::from([4; 16]),
            hash: None,
            seq: 1,
            start_op: std::num::NonZeroU64::new(4).unwrap(),
            time: 0,
            message: None,
            deps: Vec::new(),
            extra_bytes: Vec::new(),
            author: None,
        };
        let loaded = workspace.document("plans").unwrap();
        loaded.doc.apply_changes([Change::from(unsaveable)]).unwrap();

        let error = workspace.compact_document("plans").unwrap_err();
        assert!(matches!(error, Error::DocumentCorrupt { .. }), "{error}");
        drop(workspace);
        let mut workspace = Workspace::open(dir.path(), passphrase).unwrap();
        assert_eq!(workspace.list(Collection::Plans).unwrap().len(), 1);
    }
}
