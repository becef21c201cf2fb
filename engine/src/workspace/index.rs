//! Event indexes: each document's events (change hash and envelope), kept beside its log by
//! the same batches as its chunks, so `log` and `history` never load a document into
//! Automerge. Like the read view, an index is used only if its base and parts reach exactly
//! the manifest's `next_seq`; otherwise it is rebuilt from the document.

use automerge::Change;
use tracing::{debug, warn};

use super::{Workspace, layout};
use crate::chunk::BlobKind;
use crate::error::{Error, Result};
use crate::event_index::{EventIndex, IndexedEvent};
use crate::store::{StoreError, WriteBatch};

impl Workspace {
    /// Stages the index part of `changes`, the chunks `document` gets from `first_seq` to
    /// `next_seq`, in the same batch as the chunks.
    pub(super) fn stage_index_part(
        &self,
        document: &str,
        first_seq: u64,
        next_seq: u64,
        changes: &[Change],
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let events = changes
            .iter()
            .map(|change| IndexedEvent { change: change.hash(), envelope: change.message().unwrap_or_default().into() })
            .collect();
        let part = EventIndex { first_seq, next_seq, events };
        let key = layout::index_part(document, first_seq);
        batch.put(key.clone(), self.log.seal_local(&key, BlobKind::EventIndex, &part.encode()?)?);
        Ok(())
    }

    /// The document's event index: from the store once its log checks out, else rebuilt from
    /// the document (and stored for next time).
    pub(super) fn event_index(&mut self, document: &str) -> Result<EventIndex> {
        let (next_seq, stored) = self.checked_with(document, || self.stored_index(document))?;
        let Some(next_seq) = next_seq else {
            return Ok(EventIndex::default());
        };
        if let Some(index) = stored?.filter(|index| index.next_seq == next_seq) {
            return Ok(index);
        }
        let loaded = self.document(document)?;
        let events = loaded
            .doc
            .get_changes_meta(&[])
            .into_iter()
            .map(|meta| IndexedEvent {
                change: meta.hash,
                envelope: meta.message.as_deref().unwrap_or_default().into(),
            })
            .collect();
        let index = EventIndex { first_seq: 0, next_seq: loaded.manifest.next_seq, events };
        debug!(document, events = index.events.len(), "event index rebuilt");
        if self.log.read_only {
            return Ok(index);
        }
        let mut batch = WriteBatch::default();
        self.stage_index_base(document, &index, &mut batch)?;
        // A cache: failing to store it costs the next read a rebuild, nothing else.
        if let Err(error) = self.log.write_durably(batch) {
            warn!(document, %error, "could not store the rebuilt event index");
        }
        Ok(index)
    }

    /// The stored index: a base (empty before the first compaction) continued by its parts
    /// without a gap. `None` if a part is damaged or missing (to be rebuilt).
    fn stored_index(&self, document: &str) -> Result<Option<EventIndex>> {
        let at = |source: StoreError| Error::DocumentStore { document: document.to_owned(), source };
        let base_key = layout::index(document);
        let mut index = match self.log.store.get(&base_key).map_err(at)? {
            None => EventIndex::default(),
            Some(sealed) => {
                match self.open_cached_part(document, &base_key, &sealed, BlobKind::EventIndex, EventIndex::decode) {
                    Some(index) => index,
                    None => return Ok(None),
                }
            }
        };
        for (key, sealed) in self.log.store.scan_prefix(&layout::index_part_prefix(document)).map_err(at)? {
            let Some(part) = self.open_cached_part(document, &key, &sealed, BlobKind::EventIndex, EventIndex::decode)
            else {
                return Ok(None);
            };
            if part.next_seq <= index.next_seq {
                continue; // folded into the base; left over from an interrupted compaction
            }
            if !index.append(part) {
                return Ok(None);
            }
        }
        Ok(Some(index))
    }

    /// Stages `index` as the document's base and removes every part it includes.
    pub(super) fn stage_index_base(&self, document: &str, index: &EventIndex, batch: &mut WriteBatch) -> Result<()> {
        let key = layout::index(document);
        let sealed = self.log.seal_local(&key, BlobKind::EventIndex, &index.encode()?)?;
        self.stage_sealed_index_base(document, sealed, index.next_seq, batch)
    }

    /// Stages a sealed base that covers the chunks before `next_seq`, and removes every part
    /// it includes.
    pub(super) fn stage_sealed_index_base(
        &self,
        document: &str,
        sealed: Vec<u8>,
        next_seq: u64,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        batch.put(layout::index(document), sealed);
        for key in self.log.store.keys_with_prefix(&layout::index_part_prefix(document))? {
            if layout::index_part_seq(document, &key).is_none_or(|seq| seq < next_seq) {
                batch.delete(key);
            }
        }
        Ok(())
    }
}
