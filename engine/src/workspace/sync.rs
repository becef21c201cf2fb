//! Sync primitives: a document's heads, the changes a peer lacks, and changes received from
//! another device applied and stored durably (idempotent, envelope-checked).

use adiuva_model::{Collection, Envelope};
use automerge::{ChangeHash, PatchLog};

use super::commit::Operation;
use super::{ROOT_DOCUMENT, Workspace, layout};
use crate::error::{Error, Result};
use crate::records;
use crate::store::WriteBatch;

impl Workspace {
    /// The current heads of a document.
    pub fn heads(&mut self, document: &str) -> Result<Vec<ChangeHash>> {
        Ok(self.document(document)?.doc.get_heads())
    }

    /// The changes of `document` that a peer with `since` heads lacks, as concatenated change
    /// bytes (what a sync bundle carries inside its encryption).
    pub fn export_changes(&mut self, document: &str, since: &[ChangeHash]) -> Result<Vec<u8>> {
        let doc = &self.document(document)?.doc;
        Ok(doc.get_changes(since).iter().flat_map(|change| change.raw_bytes().to_vec()).collect())
    }

    /// Applies changes received from another device and stores them durably. Idempotent:
    /// changes already present are skipped. Every new change must carry a valid envelope, or
    /// nothing is kept. Returns how many changes were new.
    pub fn import_changes(&mut self, document: &str, bytes: &[u8]) -> Result<usize> {
        let result = self.import_and_persist(document, bytes);
        if result.is_err() {
            self.docs.remove(document);
            self.views.remove(document);
        }
        result
    }

    fn import_and_persist(&mut self, document: &str, bytes: &[u8]) -> Result<usize> {
        // Before the name can reach the root document's directory.
        layout::check_document_name(document)?;
        if document != ROOT_DOCUMENT && !self.is_registered(document)? {
            let collection = Collection::of_document(document)
                .ok_or_else(|| Error::InvalidInput { detail: format!("unknown document {document:?}") })?;
            let operation = Operation::RegisterDocument { name: document.to_owned(), collection };
            let registered = self.root_event("document.created", None, operation, false);
            self.commit_prepared(vec![registered], WriteBatch::default())?;
        }
        let loaded = self.document(document)?;
        let before = loaded.doc.get_heads();
        // Logging patches while applying costs what the new changes touch; a diff afterwards
        // would walk the whole document.
        let mut patch_log = PatchLog::active();
        loaded
            .doc
            .load_incremental_log_patches(bytes, &mut patch_log)
            .map_err(|e| Error::DocumentCorrupt { document: document.to_owned(), detail: e.to_string() })?;
        let touched = records::touched_records(&loaded.doc.make_patches(&mut patch_log));
        let new_changes = loaded.doc.get_changes(&before);
        for change in &new_changes {
            Envelope::decode(change.message().unwrap_or_default()).map_err(|source| Error::Envelope {
                document: document.to_owned(),
                change: change.hash().to_string(),
                source,
            })?;
        }
        let count = new_changes.len();
        if count > 0 {
            let mut batch = WriteBatch::default();
            let touched = (document != ROOT_DOCUMENT).then_some(&touched);
            let staged = self.stage_document(document, &new_changes, touched, &mut batch)?;
            self.log.write_durably(batch)?;
            self.finish_staged(vec![staged]);
        }
        Ok(count)
    }
}
