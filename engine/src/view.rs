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
//! Records are kept as their JSON text, sorted by id, in blocks of [`BLOCK`] records whose texts
//! are deflated together: the daemon keeps the view of 100k tasks for as long as it runs, and
//! held as one string per record it took 24 MB, deflated in blocks 3.2 MB, ids included. A read
//! inflates only the blocks it needs (a few microseconds each); a write inflates and deflates
//! again only the blocks it touches. The stored base is the same blocks (no JSON to parse and
//! nothing to deflate at load: each block is inflated once to check it, and kept as stored).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use adiuva_model::RecordId;
use automerge::ReadDoc;
use flate2::write::DeflateEncoder;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::cores::{self, Spread};
use crate::{encode, records};

const BASE_MAGIC: &[u8; 4] = b"ADVW";
/// Version 1: every record in one deflated stream. Still read, and then stored again as the
/// current version (packing it into blocks costs a load about a tenth of a second at 100k).
const BASE_V1: u8 = 1;
/// Version 2: the blocks as held in memory.
const BASE_VERSION: u8 = 2;
const WHAT: &str = "read view";

/// Records per block: small enough that reading one record inflates a few kilobytes, large
/// enough that the JSON keys every record repeats deflate away (tasks: ~10× at 32).
const BLOCK: usize = 32;

/// Up to this many blocks changed by one delta are replaced in place (see `merge`).
const MERGE_IN_PLACE: usize = 4;

/// Below this many records one core parses them sooner than several threads would start.
const PARALLEL_PARSE_MIN: usize = 8192;

/// Reading a record out of Automerge costs several times parsing it: a bucket's few thousand
/// records are worth both cores.
const PARALLEL_MATERIALIZE_MIN: usize = 1024;

/// A document's records as of chunk sequence `through_seq` (exclusive).
#[derive(Debug, Default)]
pub struct RecordView {
    through_seq: u64,
    /// In id order, none empty, each id once in the whole view. New ids are mostly the largest,
    /// so inserts mostly touch the last block.
    blocks: Vec<Block>,
    /// Decoded from a base of an older version: to be stored again.
    older_format: bool,
}

/// Consecutive records: their ids, sorted, and their JSON texts, each `length u32 | JSON`,
/// deflated together. Each text is checked when it is parsed.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    ids: Box<[RecordId]>,
    deflated: Box<[u8]>,
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

/// A record's new state, `None` once deleted.
type State<'a> = (RecordId, Option<&'a str>);

impl RecordView {
    /// Every record of `doc`, which holds the chunks before `through_seq`. Reading records
    /// out of Automerge is most of the cost, and runs of whole blocks read independently: from
    /// 1024 records on, the work is split across the cores when `spread` allows it.
    pub fn materialize(doc: &(impl ReadDoc + Sync), through_seq: u64, spread: Spread) -> crate::Result<Self> {
        let ids = records::record_ids(doc);
        let pack = |ids: &[RecordId]| -> crate::Result<Vec<Block>> {
            let mut packer = Packer::new();
            let mut blocks = Vec::with_capacity(ids.len().div_ceil(BLOCK));
            // One block's records at a time: the whole collection as text is never held at once.
            let mut texts: Vec<(RecordId, String)> = Vec::with_capacity(BLOCK);
            for run in ids.chunks(BLOCK) {
                texts.clear();
                texts.extend(records::read_records(doc, run).into_iter().map(|(id, record)| (id, record.to_string())));
                if !texts.is_empty() {
                    blocks.push(packer.pack(&texts)?);
                }
            }
            Ok(blocks)
        };
        let runs = match spread {
            Spread::AcrossCores => cores::across(&ids, BLOCK, PARALLEL_MATERIALIZE_MIN, pack),
            Spread::OnThisThread => vec![pack(&ids)],
        };
        let mut blocks = Vec::with_capacity(ids.len().div_ceil(BLOCK));
        for run in runs {
            blocks.extend(run?);
        }
        Ok(Self { through_seq, blocks, older_format: false })
    }

    pub fn through_seq(&self) -> u64 {
        self.through_seq
    }

    /// Whether the stored base this view was decoded from is of an older version.
    pub fn stored_in_older_format(&self) -> bool {
        self.older_format
    }

    pub fn len(&self) -> usize {
        self.blocks.iter().map(|block| block.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn contains(&self, id: RecordId) -> bool {
        self.find(id).is_some()
    }

    /// A record's fields; `None` if there is no such record (or its text is not JSON).
    pub fn get(&self, id: RecordId) -> Result<Option<Value>, ViewDecodeError> {
        let Some((block, at)) = self.find(id) else {
            return Ok(None);
        };
        let mut inflater = Inflater::default();
        let texts = inflater.texts(block)?;
        Ok(texts.get(at).and_then(|text| serde_json::from_str(text).ok()))
    }

    /// The record ids, in id (creation time) order.
    pub fn ids(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.blocks.iter().flat_map(|block| block.ids.iter().copied())
    }

    /// Each record's JSON text, in id (creation time) order, one block at a time.
    pub fn texts(&self) -> Texts<'_> {
        Texts { blocks: self.blocks.iter(), inflater: Inflater::default() }
    }

    /// The records deserialized straight from their JSON text, in id (creation time) order. A
    /// record that does not fit `T` is an error naming it.
    pub fn records_as<T: DeserializeOwned + Send>(&self) -> Result<Vec<T>, (RecordId, serde_json::Error)> {
        Self::records_of_as(&[self])
    }

    /// The records of several views (a collection's buckets), as [`Self::records_as`], merged
    /// in id order.
    ///
    /// Parsing is most of the cost of listing a large collection, and blocks inflate and parse
    /// independently: from 8192 records on, the work is split across the cores.
    pub fn records_of_as<T: DeserializeOwned + Send>(
        views: &[&RecordView],
    ) -> Result<Vec<T>, (RecordId, serde_json::Error)> {
        let blocks: Vec<&Block> = views.iter().flat_map(|view| &view.blocks).collect();
        let parse = |blocks: &[&Block]| -> Result<Vec<(RecordId, T)>, (RecordId, serde_json::Error)> {
            let mut inflater = Inflater::default();
            let mut out = Vec::with_capacity(blocks.len() * BLOCK);
            for block in blocks {
                let texts = inflater.texts(block).map_err(|e| (block.first(), serde_json::Error::custom(e)))?;
                for (id, text) in block.ids.iter().zip(texts) {
                    out.push((*id, serde_json::from_str(text).map_err(|e| (*id, e))?));
                }
            }
            Ok(out)
        };
        let mut out = Vec::with_capacity(blocks.iter().map(|block| block.ids.len()).sum());
        for run in cores::across(&blocks, 1, PARALLEL_PARSE_MIN / BLOCK, parse) {
            out.extend(run?);
        }
        if views.len() > 1 {
            // Each view's records are one sorted run: the stable sort merges the runs.
            out.sort_by_key(|(id, _)| *id);
        }
        Ok(out.into_iter().map(|(_, record)| record).collect())
    }

    /// The block holding `id` and its place there.
    fn find(&self, id: RecordId) -> Option<(&Block, usize)> {
        let block = self.blocks.get(self.blocks.partition_point(|block| block.last() < id))?;
        Some((block, block.ids.binary_search(&id).ok()?))
    }

    /// Applies the delta that continues this view; `false` (and nothing applied) if it does not,
    /// or if a block it touches does not inflate (then the view is to be rebuilt).
    pub fn apply(&mut self, delta: &Delta) -> bool {
        if delta.first_seq != self.through_seq || delta.next_seq < delta.first_seq {
            return false;
        }
        let mut states: Vec<State<'_>> =
            delta.records.iter().map(|(id, state)| (*id, state.as_deref().map(RawValue::get))).collect();
        // Stable: of a record given twice, the last state wins.
        states.sort_by_key(|(id, _)| *id);
        let states: Vec<State<'_>> =
            states.chunk_by(|a, b| a.0 == b.0).filter_map(|same| same.last().copied()).collect();
        if self.merge(&states).is_none() {
            return false;
        }
        self.through_seq = delta.next_seq;
        true
    }

    /// Applies record states (sorted by id, each id once), inflating and deflating again only
    /// the blocks they fall in: a state goes to the first block whose last id is not below its
    /// own, else to the last block. `None`, and nothing changed, if a block does not inflate or
    /// deflate.
    fn merge(&mut self, states: &[State<'_>]) -> Option<()> {
        let mut packer = Packer::new();
        let count = self.blocks.len();
        if count == 0 {
            let created: Vec<(RecordId, &str)> =
                states.iter().filter_map(|(id, state)| Some((*id, (*state)?))).collect();
            self.blocks = packer.pack_all(&created).ok()?;
            return Some(());
        }
        let mut inflater = Inflater::default();
        let mut replaced: Vec<(usize, Vec<Block>)> = Vec::new();
        let mut rest = states;
        while let Some(&(first, _)) = rest.first() {
            let at = self.blocks.partition_point(|block| block.last() < first).min(count - 1);
            let block = self.blocks.get(at)?;
            let mine = if at + 1 == count { rest.len() } else { rest.partition_point(|(id, _)| *id <= block.last()) };
            let (here, after) = rest.split_at(mine);
            rest = after;
            let texts = inflater.texts(block).ok()?;
            let merged = merge_sorted(block.ids.iter().copied().zip(texts), here);
            replaced.push((at, packer.pack_all(&merged).ok()?));
        }
        // A commit touches a few blocks, mostly the last: replaced in place, each moving the
        // blocks after it. An import whose ids interleave with the view's touches many: one
        // pass, O(blocks + states).
        if replaced.len() <= MERGE_IN_PLACE {
            for (at, new) in replaced.into_iter().rev() {
                self.blocks.splice(at..=at, new);
            }
            return Some(());
        }
        let mut replaced = replaced.into_iter().peekable();
        let mut blocks = Vec::with_capacity(count + states.len() / BLOCK + 1);
        for (at, block) in std::mem::take(&mut self.blocks).into_iter().enumerate() {
            match replaced.next_if(|(place, _)| *place == at) {
                Some((_, new)) => blocks.extend(new),
                None => blocks.push(block),
            }
        }
        self.blocks = blocks;
        Some(())
    }

    /// The view as a stored base: `"ADVW" | version 2 | through_seq u64 | blocks u32 |
    /// blocks × (count u32 | count × id u128 | length u32 | deflated texts)`, integers
    /// little-endian but ids big-endian (their sort order). The blocks as held: nothing to
    /// deflate here, nothing to parse at load.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        let size = self.blocks.iter().map(|block| 8 + 16 * block.ids.len() + block.deflated.len()).sum::<usize>();
        let mut out = Vec::with_capacity(17 + size);
        out.extend_from_slice(BASE_MAGIC);
        out.push(BASE_VERSION);
        out.extend_from_slice(&self.through_seq.to_le_bytes());
        out.extend_from_slice(&encode::length_u32(self.blocks.len(), WHAT)?);
        for block in &self.blocks {
            out.extend_from_slice(&encode::length_u32(block.ids.len(), WHAT)?);
            for id in &block.ids {
                out.extend_from_slice(&id.0.0.to_be_bytes());
            }
            out.extend_from_slice(&encode::length_u32(block.deflated.len(), WHAT)?);
            out.extend_from_slice(&block.deflated);
        }
        Ok(out)
    }

    /// Decodes a base of either version. Pure; never panics. Ids out of order or repeated are
    /// refused, so the binary searches above can rely on them, and every block is inflated
    /// once: a block that does not hold exactly its records' texts is refused here.
    pub fn decode(bytes: &[u8]) -> Result<Self, ViewDecodeError> {
        match bytes.strip_prefix(BASE_MAGIC).and_then(<[u8]>::split_first) {
            Some((&BASE_VERSION, body)) => Self::decode_blocks(body),
            _ => Self::decode_v1(bytes),
        }
    }

    fn decode_blocks(body: &[u8]) -> Result<Self, ViewDecodeError> {
        let mut reader = Reader(body);
        let through_seq = u64::from_le_bytes(reader.array()?);
        let count = u32::from_le_bytes(reader.array()?) as usize;
        // Each block takes at least 24 bytes: never reserve more than the bytes can hold.
        let mut blocks = Vec::with_capacity(count.min(body.len() / 24));
        let mut inflater = Inflater::default();
        let mut last: Option<RecordId> = None;
        for _ in 0..count {
            let records = u32::from_le_bytes(reader.array()?) as usize;
            if records == 0 {
                return Err(ViewDecodeError::Malformed("empty block"));
            }
            let ids = reader.take(records.checked_mul(16).ok_or(ViewDecodeError::Malformed("count"))?)?;
            let mut block_ids = Vec::with_capacity(records);
            for id in ids.chunks_exact(16) {
                let id = RecordId(ulid::Ulid(u128::from_be_bytes(
                    id.try_into().map_err(|_| ViewDecodeError::Malformed("id"))?,
                )));
                if last.is_some_and(|last| last >= id) {
                    return Err(ViewDecodeError::Malformed("record ids out of order"));
                }
                last = Some(id);
                block_ids.push(id);
            }
            let length = u32::from_le_bytes(reader.array()?) as usize;
            let block = Block { ids: block_ids.into(), deflated: reader.take(length)?.into() };
            inflater.texts(&block)?;
            blocks.push(block);
        }
        if !reader.0.is_empty() {
            return Err(ViewDecodeError::Malformed("bytes after the last block"));
        }
        Ok(Self { through_seq, blocks, older_format: false })
    }

    /// Version 1: `"ADVW" | 1 | through_seq u64 | count u32 | count × (id u128 | length u32 |
    /// JSON)`, deflated as a whole.
    fn decode_v1(bytes: &[u8]) -> Result<Self, ViewDecodeError> {
        let mut plain = Vec::with_capacity(bytes.len().saturating_mul(4));
        flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut plain)?;
        let mut reader = Reader(&plain);
        if reader.take(4)? != BASE_MAGIC {
            return Err(ViewDecodeError::Malformed("bad magic"));
        }
        if reader.take(1)? != [BASE_V1] {
            return Err(ViewDecodeError::Malformed("unknown version"));
        }
        let through_seq = u64::from_le_bytes(reader.array()?);
        let count = u32::from_le_bytes(reader.array()?) as usize;
        // Each record takes at least 20 bytes: never reserve more than the bytes can hold.
        let mut texts: Vec<(RecordId, &str)> = Vec::with_capacity(count.min(plain.len() / 20));
        for _ in 0..count {
            let id = RecordId(ulid::Ulid(u128::from_be_bytes(reader.array()?)));
            if texts.last().is_some_and(|(last, _)| *last >= id) {
                return Err(ViewDecodeError::Malformed("record ids out of order"));
            }
            let length = u32::from_le_bytes(reader.array()?) as usize;
            let text = std::str::from_utf8(reader.take(length)?).map_err(|_| ViewDecodeError::Malformed("utf-8"))?;
            texts.push((id, text));
        }
        if !reader.0.is_empty() {
            return Err(ViewDecodeError::Malformed("bytes after the last record"));
        }
        let blocks = Packer::new().pack_all(&texts).map_err(|_| ViewDecodeError::Malformed("records do not pack"))?;
        Ok(Self { through_seq, blocks, older_format: true })
    }
}

/// The records' texts, one block at a time (a block's texts live in one inflated buffer, which
/// the next block reuses).
pub struct Texts<'a> {
    blocks: std::slice::Iter<'a, Block>,
    inflater: Inflater,
}

impl Texts<'_> {
    /// The next block's records; `None` after the last.
    pub fn next_block(&mut self) -> Option<Result<Vec<(RecordId, &str)>, ViewDecodeError>> {
        let block = self.blocks.next()?;
        Some(self.inflater.texts(block).map(|texts| block.ids.iter().copied().zip(texts).collect()))
    }
}

impl Block {
    fn first(&self) -> RecordId {
        self.ids.first().copied().unwrap_or(RecordId(ulid::Ulid(0)))
    }

    /// Blocks are never empty; an empty one would sort first.
    fn last(&self) -> RecordId {
        self.ids.last().copied().unwrap_or(RecordId(ulid::Ulid(0)))
    }
}

/// Deflates blocks with one compressor, reset between blocks (a new one costs more to set up
/// than a block costs to deflate).
struct Packer {
    encoder: DeflateEncoder<Vec<u8>>,
    plain: Vec<u8>,
}

impl Packer {
    fn new() -> Self {
        Self { encoder: DeflateEncoder::new(Vec::new(), flate2::Compression::fast()), plain: Vec::new() }
    }

    fn pack<S: AsRef<str>>(&mut self, records: &[(RecordId, S)]) -> crate::Result<Block> {
        self.plain.clear();
        for (_, text) in records {
            let text = text.as_ref();
            self.plain.extend_from_slice(&encode::length_u32(text.len(), WHAT)?);
            self.plain.extend_from_slice(text.as_bytes());
        }
        let failed = |_| crate::Error::Encode { what: WHAT };
        self.encoder.write_all(&self.plain).map_err(failed)?;
        let deflated = self.encoder.reset(Vec::new()).map_err(failed)?;
        Ok(Block { ids: records.iter().map(|(id, _)| *id).collect(), deflated: deflated.into_boxed_slice() })
    }

    /// `records` in blocks of at most [`BLOCK`]; none if there are none.
    fn pack_all(&mut self, records: &[(RecordId, &str)]) -> crate::Result<Vec<Block>> {
        records.chunks(BLOCK).map(|records| self.pack(records)).collect()
    }
}

/// Inflates blocks with one decompressor and one buffer, reset between blocks.
struct Inflater {
    state: flate2::Decompress,
    plain: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Self { state: flate2::Decompress::new(false), plain: Vec::new() }
    }
}

impl Inflater {
    /// The block's texts, in id order: exactly as many as it has ids, filling its bytes.
    fn texts(&mut self, block: &Block) -> Result<Vec<&str>, ViewDecodeError> {
        self.state.reset(false);
        self.plain.clear();
        let input = &*block.deflated;
        loop {
            let read = usize::try_from(self.state.total_in()).map_err(|_| ViewDecodeError::Malformed("size"))?;
            let rest = input.get(read..).ok_or(ViewDecodeError::Malformed("size"))?;
            self.plain.reserve(4096.max(rest.len() * 4));
            let written = self.plain.len();
            let status = self
                .state
                .decompress_vec(rest, &mut self.plain, flate2::FlushDecompress::Finish)
                .map_err(std::io::Error::from)?;
            if status == flate2::Status::StreamEnd {
                break;
            }
            let progressed = self.plain.len() > written || self.state.total_in() > read as u64;
            if !progressed {
                return Err(ViewDecodeError::Malformed("truncated block"));
            }
        }
        if self.state.total_in() != input.len() as u64 {
            return Err(ViewDecodeError::Malformed("bytes after a block"));
        }
        split(&self.plain, block.ids.len())
    }
}

/// `count` texts framed `length u32 | JSON`, exactly filling `plain`.
fn split(plain: &[u8], count: usize) -> Result<Vec<&str>, ViewDecodeError> {
    let mut reader = Reader(plain);
    let mut texts = Vec::with_capacity(count.min(plain.len() / 4));
    for _ in 0..count {
        let length = u32::from_le_bytes(reader.array()?) as usize;
        texts.push(std::str::from_utf8(reader.take(length)?).map_err(|_| ViewDecodeError::Malformed("utf-8"))?);
    }
    if !reader.0.is_empty() {
        return Err(ViewDecodeError::Malformed("bytes after a block's last record"));
    }
    Ok(texts)
}

/// Records of a block (sorted) with states for it (sorted, each id once): a state replaces or
/// removes the record of its id, or adds one.
fn merge_sorted<'a>(
    records: impl Iterator<Item = (RecordId, &'a str)>,
    states: &[State<'a>],
) -> Vec<(RecordId, &'a str)> {
    let mut records = records.peekable();
    let mut merged = Vec::with_capacity(BLOCK + states.len());
    for &(id, state) in states {
        while let Some(record) = records.next_if(|(old, _)| *old < id) {
            merged.push(record);
        }
        records.next_if(|(old, _)| *old == id);
        if let Some(text) = state {
            merged.push((id, text));
        }
    }
    merged.extend(records);
    merged
}

/// Reads stored bytes front to back; running out is `Malformed("truncated")`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ViewDecodeError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(ViewDecodeError::Malformed("truncated"))?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ViewDecodeError> {
        self.take(N)?.try_into().map_err(|_| ViewDecodeError::Malformed("truncated"))
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

    /// How many records it touched.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
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

    fn contents(view: &RecordView) -> Vec<(RecordId, String)> {
        let mut texts = view.texts();
        let mut out = Vec::new();
        while let Some(block) = texts.next_block() {
            out.extend(block.unwrap().into_iter().map(|(id, text)| (id, text.to_owned())));
        }
        out
    }

    /// Blocks hold at most `BLOCK` records, none is empty, and ids increase across them all.
    fn assert_blocks_well_formed(view: &RecordView) {
        assert!(view.blocks.iter().all(|block| !block.ids.is_empty() && block.ids.len() <= BLOCK));
        let ids: Vec<RecordId> = view.ids().collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    fn delta(first_seq: u64, states: Vec<(RecordId, Option<Box<RawValue>>)>) -> Delta {
        Delta { first_seq, next_seq: first_seq + 1, records: states }
    }

    fn task(n: u128) -> Option<Box<RawValue>> {
        serde_json::value::to_raw_value(&serde_json::json!({"title": format!("Task number {n}"), "status": "todo"}))
            .ok()
    }

    /// Applying a large delta at once gives what applying its records one delta each gives,
    /// whatever the order, interleaving, repeats and deletions, across many blocks.
    #[test]
    fn a_merged_delta_equals_its_records_placed_one_by_one() {
        let id = |n: u128| RecordId(ulid::Ulid(n * 7));
        let existing: Vec<_> = (0..300).map(|n| (id(n * 3), task(n))).collect();
        // Interleaving new ids, replacements, deletions (also of missing ids), a repeated id,
        // ids before the first block and after the last.
        let mut states: Vec<(RecordId, Option<Box<RawValue>>)> = Vec::new();
        for n in (0..1000u128).rev() {
            states.push((id(n), if n % 5 == 0 { None } else { task(n + 10_000) }));
        }
        states.push((id(9), task(1000)));
        states.push((id(12), None));
        let mut merged = RecordView::default();
        assert!(merged.apply(&delta(0, existing.clone())));
        assert!(merged.blocks.len() > 5);
        assert!(merged.apply(&delta(1, states.clone())));
        let mut one_by_one = RecordView::default();
        assert!(one_by_one.apply(&delta(0, existing)));
        for (seq, state) in (1..).zip(states) {
            assert!(one_by_one.apply(&delta(seq, vec![state])));
        }
        assert_eq!(contents(&merged), contents(&one_by_one));
        assert_blocks_well_formed(&merged);
        assert_blocks_well_formed(&one_by_one);
        assert_eq!(merged.get(id(9)).unwrap().unwrap()["title"], "Task number 1000");
        assert!(merged.get(id(12)).unwrap().is_none());
        assert!(merged.get(id(10)).unwrap().is_none(), "deleted");
        assert_eq!(merged.len(), contents(&merged).len());
        let listed: Vec<Value> = merged.records_as().unwrap();
        assert_eq!(listed.len(), merged.len());
    }

    #[test]
    fn a_view_read_on_one_thread_is_the_view_read_across_the_cores() {
        let mut ids: Vec<RecordId> = (0..PARALLEL_MATERIALIZE_MIN * 2 + 5).map(|_| RecordId::new()).collect();
        ids.sort();
        let doc = doc_with(&ids);
        let across = RecordView::materialize(&doc, 4, Spread::AcrossCores).unwrap();
        let here = RecordView::materialize(&doc, 4, Spread::OnThisThread).unwrap();
        assert_eq!(contents(&here).len(), ids.len());
        assert_eq!(contents(&here), contents(&across));
        assert_eq!(here.encode().unwrap(), across.encode().unwrap());
    }

    #[test]
    fn a_base_and_its_deltas_round_trip_and_a_gap_is_refused() {
        let ids: Vec<RecordId> = (0..3).map(|_| RecordId::new()).collect();
        let doc = doc_with(&ids);
        let view = RecordView::materialize(&doc, 4, Spread::AcrossCores).unwrap();
        let mut decoded = RecordView::decode(&view.encode().unwrap()).unwrap();
        assert_eq!(decoded.len(), 3);
        assert!(!decoded.stored_in_older_format());
        assert_eq!(decoded.get(ids[1]).unwrap().unwrap()["title"], "task 1");

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
        assert_eq!(decoded.get(ids[0]).unwrap().unwrap()["title"], "renamed");
        assert!(decoded.get(ids[2]).unwrap().is_none());
        let mut expected: Vec<String> = ids[..2].iter().map(ToString::to_string).collect();
        expected.sort();
        let listed: Vec<Value> =
            decoded.records_as::<Value>().unwrap().into_iter().map(|record| record["id"].clone()).collect();
        assert_eq!(listed, expected);
    }

    /// A base as builds before the blocks stored it: every record in one deflated stream.
    fn encode_v1(through_seq: u64, records: &[(RecordId, String)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(BASE_MAGIC);
        plain.push(BASE_V1);
        plain.extend_from_slice(&through_seq.to_le_bytes());
        plain.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for (id, text) in records {
            plain.extend_from_slice(&id.0.0.to_be_bytes());
            plain.extend_from_slice(&(text.len() as u32).to_le_bytes());
            plain.extend_from_slice(text.as_bytes());
        }
        encode::deflate(&plain, WHAT).unwrap()
    }

    #[test]
    fn a_base_of_the_first_version_is_read_and_stored_again_as_blocks() {
        let records: Vec<(RecordId, String)> =
            (1..=100u128).map(|n| (RecordId(ulid::Ulid(n)), task(n).unwrap().get().to_owned())).collect();
        let old = RecordView::decode(&encode_v1(42, &records)).unwrap();
        assert!(old.stored_in_older_format());
        assert_eq!(old.through_seq(), 42);
        assert_eq!(contents(&old), records);
        assert_blocks_well_formed(&old);
        let again = RecordView::decode(&old.encode().unwrap()).unwrap();
        assert!(!again.stored_in_older_format());
        assert_eq!(again.through_seq(), 42);
        assert_eq!(contents(&again), records);
        assert_eq!(again.get(records[57].0).unwrap().unwrap()["title"], "Task number 58");
        // Out of order in the old format too.
        let mut swapped = records.clone();
        swapped.swap(3, 4);
        assert!(RecordView::decode(&encode_v1(42, &swapped)).is_err());
    }

    /// What the daemon keeps for as long as it runs: task-shaped records take a fraction of
    /// their text's size.
    #[test]
    fn the_view_holds_its_records_deflated() {
        let states: Vec<_> = (1..=2000u128).map(|n| (RecordId(ulid::Ulid(n << 80 | n)), task(n))).collect();
        let text: usize = states.iter().filter_map(|(_, state)| state.as_ref()).map(|state| state.get().len()).sum();
        let mut view = RecordView::default();
        assert!(view.apply(&delta(0, states)));
        let held: usize = view.blocks.iter().map(|block| block.deflated.len()).sum();
        assert!(held * 4 < text, "{held} bytes held for {text} bytes of text");
    }

    #[test]
    fn a_damaged_block_is_refused_at_decode() {
        let states: Vec<_> = (1..=70u128).map(|n| (RecordId(ulid::Ulid(n)), task(n))).collect();
        let mut view = RecordView::default();
        assert!(view.apply(&delta(0, states)));
        let good = view.encode().unwrap();
        assert!(RecordView::decode(&good).is_ok());
        // Each cut, and a block claiming one record more than its texts hold.
        for cut in [good.len() - 1, good.len() - 10, 30, 17] {
            assert!(RecordView::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut miscounted = view.blocks[0].clone();
        miscounted.ids = miscounted.ids[..miscounted.ids.len() - 1].into();
        view.blocks[0] = miscounted;
        assert!(RecordView::decode(&view.encode().unwrap()).is_err());
    }
}
