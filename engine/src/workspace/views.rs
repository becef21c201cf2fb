//! Read views: each collection document's current records, materialized and sealed beside its
//! log, so reads do not wait for Automerge to replay the history.
//!
//! Each commit group stages, in the same batch as its chunks, a delta holding the new state of
//! every record it touched; compaction folds the deltas into a new base. A stored view is used
//! only if its base and deltas reach exactly the manifest's `next_seq`; otherwise it is rebuilt
//! from the document. The view is a cache of the log, never its source.

use tracing::{debug, warn};

use super::{Workspace, layout};
use crate::chunk::BlobKind;
use crate::cores::Spread;
use crate::error::{Error, Result};
use crate::store::{StoreError, WriteBatch};
use crate::view::{Delta, RecordView, Touched};

/// Records in the deltas of a loaded view from which it is stored again as a base (packing
/// them costs a load about a millisecond per thousand).
const FOLD_FROM: usize = 4096;

impl Workspace {
    /// Stages the view delta of the chunks `document` got from `first_seq` to `next_seq`: the
    /// new state of the `touched` records, in the same batch as the chunks.
    pub(super) fn stage_delta(
        &self,
        document: &str,
        first_seq: u64,
        next_seq: u64,
        touched: &Touched,
        batch: &mut WriteBatch,
    ) -> Result<Delta> {
        let delta = Delta::capture(&self.loaded(document)?.doc, first_seq, next_seq, touched);
        let key = layout::delta(document, first_seq);
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::ReadViewDelta, &delta.encode()?)?);
        Ok(delta)
    }

    /// Brings a cached view up to date once its delta is durable.
    pub(super) fn apply_delta(&mut self, document: &str, delta: &Delta) {
        if let Some(view) = self.views.get_mut(document)
            && !view.apply(delta)
        {
            self.views.remove(document);
        }
    }

    /// A collection document's read view: cached, else from the store once its log checks out,
    /// else rebuilt from the document (and stored for next time).
    pub(super) fn view(&mut self, document: &str) -> Result<&RecordView> {
        if !self.views.contains_key(document) {
            let view = self.load_view(document)?;
            self.views.insert(document.to_owned(), view);
        }
        self.views.get(document).ok_or_else(|| Error::DocumentCorrupt {
            document: document.to_owned(),
            detail: "view vanished while loading".into(),
        })
    }

    fn load_view(&mut self, document: &str) -> Result<RecordView> {
        let (next_seq, stored) = self.checked_with(document, || self.stored_view(document))?;
        let Some(next_seq) = next_seq else {
            return Ok(RecordView::default());
        };
        if let Some((view, from_deltas)) = stored?.filter(|(view, _)| view.through_seq() == next_seq) {
            // Deltas are packed into blocks as they are applied: once they hold many records
            // (an import), the view is stored as a new base so the next load does not repeat it.
            if view.stored_in_older_format() || from_deltas >= FOLD_FROM {
                self.store_view(document, &view)?;
            }
            return Ok(view);
        }
        let loaded = self.document(document)?;
        let view = RecordView::materialize(&loaded.doc, loaded.manifest.next_seq, Spread::AcrossCores)?;
        debug!(document, records = view.len(), "read view rebuilt");
        self.store_view(document, &view)?;
        Ok(view)
    }

    /// Stores a current view (rebuilt, read in an older format or from many deltas) as the
    /// document's base.
    fn store_view(&self, document: &str, view: &RecordView) -> Result<()> {
        if self.log.read_only {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.stage_view(document, view, &mut batch)?;
        // The view is a cache: failing to store it costs the next open a rebuild, nothing else.
        if let Err(error) = self.log.write_durably(batch) {
            warn!(document, %error, "could not store the read view");
        }
        Ok(())
    }

    /// The stored view: a base continued by its deltas without a gap, and how many records the
    /// deltas held. `None` if there is none or it is damaged (to be rebuilt); whether it is
    /// current is the caller's to check.
    fn stored_view(&self, document: &str) -> Result<Option<(RecordView, usize)>> {
        let at = |source: StoreError| Error::DocumentStore { document: document.to_owned(), source };
        let base_key = layout::view(document);
        let mut view = match self.log.store.get(&base_key).map_err(at)? {
            // Until its first compaction a document's view is its deltas alone, from chunk 0.
            None => RecordView::default(),
            Some(sealed) => {
                match self.open_cached_part(document, &base_key, &sealed, BlobKind::ReadView, RecordView::decode) {
                    Some(view) => view,
                    None => return Ok(None),
                }
            }
        };
        let mut from_deltas = 0;
        for (key, sealed) in self.log.store.scan_prefix(&layout::delta_prefix(document)).map_err(at)? {
            let Some(delta) = self.open_cached_part(document, &key, &sealed, BlobKind::ReadViewDelta, Delta::decode)
            else {
                return Ok(None);
            };
            if delta.next_seq <= view.through_seq() {
                continue; // folded into the base; left over from an interrupted compaction
            }
            if !view.apply(&delta) {
                return Ok(None);
            }
            from_deltas += delta.len();
        }
        Ok(Some((view, from_deltas)))
    }

    /// Opens and decodes one stored part of a read view or an event index; `None` (logged) if
    /// it does not, so the cache is rebuilt from the log.
    pub(super) fn open_cached_part<T, E: std::fmt::Display>(
        &self,
        document: &str,
        key: &[u8],
        sealed: &[u8],
        kind: BlobKind,
        decode: impl FnOnce(&[u8]) -> std::result::Result<T, E>,
    ) -> Option<T> {
        let decoded = self.log.open_local(document, key, sealed, kind).map_err(|e| e.to_string());
        match decoded.and_then(|bytes| decode(&bytes).map_err(|e| e.to_string())) {
            Ok(part) => Some(part),
            Err(error) => {
                warn!(document, blob = %layout::describe(key), %error, "a cached part does not open; rebuilding it from the log");
                None
            }
        }
    }

    /// Stages `view` as the document's base and removes every delta it includes.
    pub(super) fn stage_view(&self, document: &str, view: &RecordView, batch: &mut WriteBatch) -> Result<()> {
        let key = layout::view(document);
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::ReadView, &view.encode()?)?);
        for key in self.log.store.keys_with_prefix(&layout::delta_prefix(document))? {
            if layout::delta_seq(document, &key).is_none_or(|seq| seq < view.through_seq()) {
                batch.delete(key);
            }
        }
        Ok(())
    }
}
