//! Compaction: a document's tail folded into a fresh snapshot. A collection document whose
//! records now have documents of their own first moves them out (see `upgrade`).
//!
//! The new snapshot and the manifest that points at it (and the read view's new base) are
//! written and made durable together first; only then are the chunks, the older snapshot and
//! the deltas they replace deleted. A crash in between leaves leftovers the manifest does not
//! count: they are ignored on load and removed by the next compaction.

use tracing::debug;

use super::{ROOT_DOCUMENT, Workspace, layout};
use automerge::Change;

use crate::authorship::SignedSnapshot;
use crate::chunk::BlobKind;
use crate::error::Result;
use crate::manifest::SnapshotRef;
use crate::store::WriteBatch;

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
        self.move_records_out_of(document)?;
        let own_legacy = self.own_unattested_changes(document)?;
        let loaded = self.document(document)?;
        let bytes = loaded.doc.save();
        let old = loaded.manifest.clone();
        let generation = old.snapshot.map_or(1, |s| s.generation + 1);
        // The snapshot keeps the attestation of every change it folds in, so authorship
        // survives compaction; this device's own changes from before attestations get one now.
        let mut attestations = loaded.attestations.clone();
        if !own_legacy.is_empty() {
            let changes: Vec<&Change> = own_legacy.iter().collect();
            attestations.add(self.log.attest(document, &changes));
        }
        let snapshot = SignedSnapshot { attestations: attestations.all().to_vec(), document: bytes };
        // Step 1: the new snapshot and the manifest that points at it, durable together.
        let key = layout::snapshot(document, generation);
        let sealed = self.log.seal(&key, BlobKind::Snapshot, &snapshot.encode()?)?;
        let mut manifest = old.clone();
        manifest.tail_start = old.next_seq;
        manifest.tail_bytes = 0;
        manifest.snapshot = Some(SnapshotRef { generation, bytes: sealed.len() as u64 });
        let index = self.event_index(document)?;
        let mut batch = WriteBatch::default();
        batch.put(key, sealed);
        self.log.stage_manifest(document, &manifest, &mut batch)?;
        // The event index's parts fold into a new base, like the view's deltas.
        self.stage_index_base(document, &index, &mut batch)?;
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
            loaded.attestations = attestations;
            loaded.legacy = false;
        }
        // Step 2: only now delete what the snapshot replaces (and leftovers of earlier runs).
        let mut cleanup = WriteBatch::default();
        for key in self.log.store.keys_with_prefix(&layout::change_prefix(document))? {
            if layout::change_seq(document, &key).is_some_and(|seq| seq < old.next_seq) {
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
