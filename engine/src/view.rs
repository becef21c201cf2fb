//! The read view: a collection document's current records, materialized beside its log.
//!
//! Loading a document into Automerge replays its whole history: about 2 s for 100k tasks. Reads
//! only need the current records, so every collection document keeps them materialized, sealed
//! in the same store:
//!
//! ```text
//! v/DOC          base: every record as of chunk sequence `through_seq`
//! d/DOC\0SEQ     delta: the new state of the records the chunks [first_seq, next_seq) touched
//! ```
//!
//! A commit stages its delta in the same atomic batch as its chunks and manifest, so base and
//! deltas always agree with the log. The view is current when the deltas continue the base
//! without a gap up to the manifest's `next_seq`; otherwise (a workspace older than the view, a
//! view that failed authentication) the workspace rebuilds it from the Automerge document.
//!
//! The view is a cache of the log, never its source: it is local (never synced), so it is sealed
//! as a local blob ([`crate::chunk::seal_local`]), without a device signature.
//!
//! Records are kept as their JSON text, sorted by id: 100k tasks take about 25 MB that way,
//! several times less than as parsed values, and typed reads deserialize straight from it. The
//! stored base frames those texts in binary (no JSON to parse at load) and is deflated (about
//! sevenfold for task-shaped records).

use std::collections::BTreeMap;
use std::io::Read;

use adiuva_model::RecordId;
use automerge::ReadDoc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{encode, records};

const BASE_MAGIC: &[u8; 4] = b"ADVW";
const BASE_VERSION: u8 = 1;
const WHAT: &str = "read view";

/// A delta of more records than this is merged into the view in one pass (see `merge`).
const MERGE_FROM: usize = 8;

/// Below this many records one core parses them sooner than several threads would start.
const PARALLEL_PARSE_MIN: usize = 8192;

/// A document's records as of chunk sequence `through_seq` (exclusive).
#[derive(Debug, Default)]
pub struct RecordView {
    through_seq: u64,
    /// Sorted by id, each id once; each record's JSON text, checked when it is parsed. New ids
    /// are mostly the largest, so inserts mostly append.
    records: Vec<(RecordId, Box<str>)>,
}

/// Why stored bytes are not a view. The workspace rebuilds the view from the log.
#[derive(Debug, thiserror::Error)]
pub enum ViewDecodeError {
    #[error("not a read view: {0}")]
    Malformed(&'static str),
    #[error("read view does not inflate: {0}")]
    Inflate(#[from] std::io::Error),
    #[error("read view delta {}", crate::error::json_error(.0))]
    Json(#[from] serde_json::Error),
}

/// The records a group of events touched, each with its new state where the events alone
/// determine it (see [`records::Effect::created_record`]), `None` where it must be read back.
pub type Touched = BTreeMap<RecordId, Option<Value>>;

/// What the chunks `[first_seq, next_seq)` did to the records: each touched record's new state,
/// `None` once deleted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delta {
    pub first_seq: u64,
    pub next_seq: u64,
    records: Vec<(RecordId, Option<Box<RawValue>>)>,
}

impl RecordView {
    /// Every record of `doc`, which holds the chunks before `through_seq`.
    pub fn materialize(doc: &impl ReadDoc, through_seq: u64) -> Self {
        let records = records::record_ids(doc)
            .into_iter()
            .filter_map(|id| Some((id, records::read_record(doc, id, None)?.to_string().into_boxed_str())))
            .collect();
        Self { through_seq, records }
    }

    pub fn through_seq(&self) -> u64 {
        self.through_seq
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn contains(&self, id: RecordId) -> bool {
        self.position(id).is_ok()
    }

    pub fn get(&self, id: RecordId) -> Option<Value> {
        let at = self.position(id).ok()?;
        serde_json::from_str(&self.records[at].1).ok()
    }

    /// The record ids, in id (creation time) order.
    pub fn ids(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.records.iter().map(|(id, _)| *id)
    }

    /// Each record's JSON text, in id (creation time) order.
    pub fn texts(&self) -> impl Iterator<Item = (RecordId, &str)> + '_ {
        self.records.iter().map(|(id, text)| (*id, &**text))
    }

    /// The records deserialized straight from their JSON text, in id (creation time) order. A
    /// record that does not fit `T` is an error naming it.
    ///
    /// Parsing is most of the cost of listing a large collection, and records parse
    /// independently: from 8192 records on, the work is split across the cores.
    pub fn records_as<T: DeserializeOwned + Send>(&self) -> Result<Vec<T>, (RecordId, serde_json::Error)> {
        let parse = |records: &[(RecordId, Box<str>)]| -> Result<Vec<T>, (RecordId, serde_json::Error)> {
            records.iter().map(|(id, text)| serde_json::from_str(text).map_err(|e| (*id, e))).collect()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads == 1 || self.records.len() < PARALLEL_PARSE_MIN {
            return parse(&self.records);
        }
        let part = self.records.len().div_ceil(threads);
        let parts: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                self.records.chunks(part).map(|records| scope.spawn(move || parse(records))).collect();
            handles.into_iter().map(|handle| handle.join()).collect()
        });
        let mut out = Vec::with_capacity(self.records.len());
        for part in parts {
            match part {
                Ok(records) => out.extend(records?),
                // Parsing text does not panic; if it ever did, that panic is the bug to see.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    }

    fn position(&self, id: RecordId) -> Result<usize, usize> {
        self.records.binary_search_by_key(&id, |(key, _)| *key)
    }

    /// Applies the delta that continues this view; `false` (and nothing applied) if it does not.
    pub fn apply(&mut self, delta: &Delta) -> bool {
        if delta.first_seq != self.through_seq || delta.next_seq < delta.first_seq {
            return false;
        }
        if delta.records.len() <= MERGE_FROM {
            for (id, state) in &delta.records {
                self.put(*id, state.as_deref());
            }
        } else {
            self.merge(&delta.records);
        }
        self.through_seq = delta.next_seq;
        true
    }

    fn put(&mut self, id: RecordId, state: Option<&RawValue>) {
        match (self.position(id), state) {
            (Ok(at), Some(text)) => self.records[at].1 = text.get().into(),
            (Err(at), Some(text)) => self.records.insert(at, (id, text.get().into())),
            (Ok(at), None) => {
                self.records.remove(at);
            }
            (Err(_), None) => {}
        }
    }

    /// Applies many record states in one pass over the records, O(records + states): placing
    /// each on its own shifts every record after it, quadratic when imported ids interleave
    /// with the ones already here. Same result as [`Self::put`] one by one.
    fn merge(&mut self, states: &[(RecordId, Option<Box<RawValue>>)]) {
        let mut sorted: Vec<&(RecordId, Option<Box<RawValue>>)> = states.iter().collect();
        // Stable: of a record given twice, the last state wins, as one by one.
        sorted.sort_by_key(|(id, _)| *id);
        let mut old = std::mem::take(&mut self.records).into_iter().peekable();
        let mut merged = Vec::with_capacity(old.len() + sorted.len());
        for same in sorted.chunk_by(|a, b| a.0 == b.0) {
            let Some((id, state)) = same.last().copied() else { continue };
            while let Some(record) = old.next_if(|(old_id, _)| old_id < id) {
                merged.push(record);
            }
            old.next_if(|(old_id, _)| old_id == id);
            if let Some(text) = state {
                merged.push((*id, text.get().into()));
            }
        }
        merged.extend(old);
        self.records = merged;
    }

    /// The view as a stored base, deflated:
    /// `"ADVW" | version 1 | through_seq u64 | count u32 | count × (id u128 | length u32 | JSON)`,
    /// integers little-endian but ids big-endian (their sort order). No JSON to parse at load.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        let mut plain = Vec::with_capacity(17 + self.records.iter().map(|(_, text)| 20 + text.len()).sum::<usize>());
        plain.extend_from_slice(BASE_MAGIC);
        plain.push(BASE_VERSION);
        plain.extend_from_slice(&self.through_seq.to_le_bytes());
        plain.extend_from_slice(&encode::length_u32(self.records.len(), WHAT)?);
        for (id, text) in &self.records {
            plain.extend_from_slice(&id.0.0.to_be_bytes());
            plain.extend_from_slice(&encode::length_u32(text.len(), WHAT)?);
            plain.extend_from_slice(text.as_bytes());
        }
        encode::deflate(&plain, WHAT)
    }

    /// Decodes a base. Pure; never panics. Ids out of order or repeated are refused, so the
    /// binary searches above can rely on them.
    pub fn decode(bytes: &[u8]) -> Result<Self, ViewDecodeError> {
        let mut plain = Vec::with_capacity(bytes.len().saturating_mul(4));
        flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut plain)?;
        let mut rest = plain.as_slice();
        let mut take = |n: usize| -> Result<&[u8], ViewDecodeError> {
            let (head, tail) = rest.split_at_checked(n).ok_or(ViewDecodeError::Malformed("truncated"))?;
            rest = tail;
            Ok(head)
        };
        if take(4)? != BASE_MAGIC {
            return Err(ViewDecodeError::Malformed("bad magic"));
        }
        if take(1)? != [BASE_VERSION] {
            return Err(ViewDecodeError::Malformed("unknown version"));
        }
        let through_seq = u64::from_le_bytes(take(8)?.try_into().map_err(|_| ViewDecodeError::Malformed("seq"))?);
        let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| ViewDecodeError::Malformed("count"))?);
        // Each record takes at least 20 bytes: never reserve more than the bytes can hold.
        let mut records: Vec<(RecordId, Box<str>)> = Vec::with_capacity((count as usize).min(plain.len() / 20));
        for _ in 0..count {
            let id = u128::from_be_bytes(take(16)?.try_into().map_err(|_| ViewDecodeError::Malformed("id"))?);
            let id = RecordId(ulid::Ulid(id));
            if records.last().is_some_and(|(last, _)| *last >= id) {
                return Err(ViewDecodeError::Malformed("record ids out of order"));
            }
            let length = u32::from_le_bytes(take(4)?.try_into().map_err(|_| ViewDecodeError::Malformed("length"))?);
            let text = std::str::from_utf8(take(length as usize)?).map_err(|_| ViewDecodeError::Malformed("utf-8"))?;
            records.push((id, text.into()));
        }
        if !rest.is_empty() {
            return Err(ViewDecodeError::Malformed("bytes after the last record"));
        }
        Ok(Self { through_seq, records })
    }
}

impl Delta {
    /// The state of the records `touched` by the chunks `[first_seq, next_seq)`: as given where
    /// known, else read from `doc`.
    pub fn capture(doc: &impl ReadDoc, first_seq: u64, next_seq: u64, touched: &Touched) -> Self {
        let records = touched
            .iter()
            .map(|(&id, known)| {
                let state = match known {
                    Some(state) => raw(state),
                    None => records::read_record(doc, id, None).as_ref().and_then(raw),
                };
                (id, state)
            })
            .collect();
        Self { first_seq, next_seq, records }
    }

    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        encode::json(self, "read view delta")
    }

    /// Decodes a delta. Pure; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, ViewDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

fn raw(value: &Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_with(ids: &[RecordId]) -> automerge::Automerge {
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        for (index, id) in ids.iter().enumerate() {
            let record = tx.put_object(automerge::ROOT, id.to_string(), automerge::ObjType::Map).unwrap();
            tx.put(&record, "title", format!("task {index}")).unwrap();
        }
        tx.commit();
        doc
    }

    /// Merging a large delta gives what placing its records one by one gives, whatever the
    /// order, interleaving, repeats and deletions.
    #[test]
    fn a_merged_delta_equals_its_records_placed_one_by_one() {
        let id = |n: u128| RecordId(ulid::Ulid(n * 7));
        let text = |n: u128| serde_json::value::to_raw_value(&format!("state {n}")).ok();
        let existing: Vec<(RecordId, Box<str>)> = (0..40).map(|n| (id(n * 3), format!("\"old {n}\"").into())).collect();
        // Interleaving new ids, replacements, deletions (also of missing ids), a repeated id.
        let mut states: Vec<(RecordId, Option<Box<RawValue>>)> = Vec::new();
        for n in (0..130u128).rev() {
            states.push((id(n), if n % 5 == 0 { None } else { text(n) }));
        }
        states.push((id(9), text(1000)));
        states.push((id(12), None));
        let delta = Delta { first_seq: 0, next_seq: 1, records: states };
        let mut merged = RecordView { through_seq: 0, records: existing.clone() };
        assert!(delta.records.len() > MERGE_FROM);
        assert!(merged.apply(&delta));
        let mut one_by_one = RecordView { through_seq: 0, records: existing };
        for (id, state) in &delta.records {
            one_by_one.put(*id, state.as_deref());
        }
        assert_eq!(merged.records, one_by_one.records);
        assert!(merged.records.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert_eq!(merged.get(id(9)).unwrap(), "state 1000");
        assert!(merged.get(id(12)).is_none());
    }

    #[test]
    fn a_base_and_its_deltas_round_trip_and_a_gap_is_refused() {
        let ids: Vec<RecordId> = (0..3).map(|_| RecordId::new()).collect();
        let doc = doc_with(&ids);
        let view = RecordView::materialize(&doc, 4);
        let mut decoded = RecordView::decode(&view.encode().unwrap()).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded.get(ids[1]).unwrap()["title"], "task 1");

        let mut doc = doc;
        let mut tx = doc.transaction();
        let first = tx.get(automerge::ROOT, ids[0].to_string()).unwrap().unwrap().1;
        tx.put(&first, "title", "renamed").unwrap();
        tx.delete(automerge::ROOT, ids[2].to_string()).unwrap();
        tx.commit();
        let delta = Delta::capture(&doc, 4, 6, &[(ids[0], None), (ids[2], None)].into_iter().collect());
        let delta = Delta::decode(&delta.encode().unwrap()).unwrap();
        assert!(decoded.apply(&delta));
        assert_eq!(decoded.through_seq(), 6);
        assert!(!decoded.apply(&delta), "the same delta again does not continue the view");
        assert_eq!(decoded.get(ids[0]).unwrap()["title"], "renamed");
        assert!(decoded.get(ids[2]).is_none());
        let mut expected: Vec<String> = ids[..2].iter().map(ToString::to_string).collect();
        expected.sort();
        let listed: Vec<Value> =
            decoded.records_as::<Value>().unwrap().into_iter().map(|record| record["id"].clone()).collect();
        assert_eq!(listed, expected);
    }
}
