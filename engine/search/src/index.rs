//! [`SearchIndex`]: the searchable form of a workspace, derived from its log like the read
//! views are, and kept current by following it.
//!
//! - **Built** from the collections' read views ([`SearchIndex::build`]); **kept current** by
//!   reading the events after its [`Cursor`] ([`SearchIndex::catch_up`]): whatever wrote them
//!   (a command, the daemon, an import from another device), each touched record is read again
//!   and its chunks replaced. Both are also offered in three steps ([`Pending`]) so that a
//!   process serving requests runs the model without holding the workspace.
//! - **At rest**: the full-text index lives in memory only and is rebuilt at every open (from
//!   the read views: no model involved, seconds for a large workspace). The vectors, which cost
//!   the model's time, are kept as device settings (`search/vectors/XX`, sealed under the
//!   device's storage key like every local blob, never synced), keyed by the hash of what was
//!   embedded, listed by `search/manifest`. A build embeds only text it has no vector for.
//! - **Damage**: a stored part that is missing or does not open or decode is reported in
//!   [`SearchIndex::take_notices`] and rebuilt; it never fails a search.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use adiuva_engine::{Cursor, Workspace};
use adiuva_model::{Collection, RecordId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::error::{Result, SearchError};
use crate::fusion;
use crate::record::{SEARCHED, Searchable, SearchedFields};
use crate::text::{self as words, Filter, TextFound, TextHit, TextIndex};
use crate::vectors::{self, ContentHash, Quantized, VectorRef, VectorTable};

const MANIFEST: &str = "search/manifest";
const MANIFEST_VERSION: u32 = 1;
/// Texts embedded per call while building (progress is reported between calls).
const EMBED_GROUP: usize = 128;

fn shard_name(shard: u8) -> String {
    format!("search/vectors/{shard:02x}")
}

/// How a search ranks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Words and meaning, fused by reciprocal rank weighted towards meaning unless the words
    /// are rare (the default, [`fusion::hybrid`]).
    Hybrid,
    /// Words only (BM25).
    Text,
    /// Meaning only (cosine of embeddings).
    Vector,
    /// Words and meaning, by a weighted sum of their scaled scores.
    Weighted { text_weight: f32 },
}

/// A search: its text, how it ranks, which records it may return, how many.
#[derive(Clone, Debug)]
pub struct SearchQuery {
    pub text: String,
    pub mode: Mode,
    pub filter: Filter,
    pub limit: usize,
}

/// One record found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: RecordId,
    pub collection: Collection,
    pub title: String,
    pub score: f32,
    /// A passage of the record, the query's words marked `**like this**`.
    pub snippet: String,
}

/// What the index holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IndexStatus {
    pub records: usize,
    pub chunks: usize,
    pub vectors: usize,
    /// The embedding model's id, or why there is none.
    pub model: String,
    pub vector_bytes: usize,
    /// How far into the log the index reaches.
    pub cursor: String,
}

/// What a build or catch-up did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed {
    /// Records (re)indexed.
    pub records: usize,
    /// Records taken out (deleted).
    pub removed: usize,
    /// Chunks the model embedded.
    pub embedded: usize,
    /// Chunks whose vector was already stored.
    pub reused: usize,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    v: u32,
    model: String,
    shards: Vec<u8>,
}

/// What a search needs of a record beyond its text: what filters read and the collection a hit
/// names (its title and text come from the read view). 16 bytes per record, no allocation of
/// its own: collections, tag lists and sources, which records share, are kept once in
/// [`Labels`]. With 100k records the table is about 4 MB; holding titles, tags and sources per
/// record made it about 20 MB.
#[derive(Clone, Copy)]
struct RecordMeta {
    /// Microseconds since the epoch, [`NO_TIME`] for a record without one.
    time: i64,
    /// How many chunks the text index holds of it.
    chunks: u32,
    /// The record's collection, tags and source, in [`Labels`].
    labels: u32,
}

const NO_TIME: i64 = i64::MIN;

impl RecordMeta {
    fn time(&self) -> Option<DateTime<Utc>> {
        if self.time == NO_TIME { None } else { DateTime::from_timestamp_micros(self.time) }
    }
}

/// A record's collection, tags and source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Label {
    collection: Collection,
    tags: Vec<String>,
    source: Option<String>,
}

/// Each distinct [`Label`] kept once, numbered. Never shrinks while the index lives: a label
/// no record carries any more stays until the next build, which starts afresh.
#[derive(Default)]
struct Labels {
    all: Vec<Arc<Label>>,
    numbers: HashMap<Arc<Label>, u32>,
}

impl Labels {
    fn number(&mut self, label: Label) -> u32 {
        if let Some(number) = self.numbers.get(&label) {
            return *number;
        }
        let number = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        let label = Arc::new(label);
        self.all.push(label.clone());
        self.numbers.insert(label, number);
        number
    }

    /// The label numbered `number` (every record's label number comes from [`Self::number`]).
    fn get(&self, number: u32) -> Option<&Label> {
        self.all.get(number as usize).map(|label| &**label)
    }
}

/// The search index of one workspace.
pub struct SearchIndex {
    text: TextIndex,
    vectors: VectorTable,
    records: HashMap<RecordId, RecordMeta>,
    labels: Labels,
    embedder: std::result::Result<Arc<Embedder>, String>,
    cursor: Cursor,
    notices: Vec<String>,
}

impl SearchIndex {
    /// Builds the index of `workspace` from its read views, reusing every stored vector and
    /// embedding the rest; `progress(done, total)` is told about records. Without a model
    /// (`embedder` is the reason there is none) it indexes words only.
    pub fn build(
        workspace: &mut Workspace,
        embedder: std::result::Result<Arc<Embedder>, String>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Self, Indexed)> {
        let mut pending = Self::prepare_build(workspace, embedder)?;
        // Nothing here breaks the embedding off: it runs to its end.
        let _ran_to_its_end = pending.embed(&mut |done, total| {
            progress(done, total);
            ControlFlow::Continue(())
        })?;
        Self::finish_build(workspace, pending)
    }

    /// The first step of a build: the stored vectors, and the texts none of them covers. The
    /// records are read one at a time from the read views, here and again in
    /// [`finish_build`](Self::finish_build), and none is kept: holding every record of a
    /// large workspace at once cost the daemon more memory than the index itself.
    pub fn prepare_build(
        workspace: &mut Workspace,
        embedder: std::result::Result<Arc<Embedder>, String>,
    ) -> Result<Pending> {
        let to = workspace.cursor()?;
        let mut notices = Vec::new();
        let has_records = SEARCHED
            .into_iter()
            .try_fold(false, |any, collection| Ok::<_, SearchError>(any || workspace.has_records(collection)?))?;
        let (cache, dirty) = load_cache(workspace, &embedder, has_records, &mut notices);
        let loaded = cache.keys().copied().collect();
        let changes = Changes { from: None, to, touched: Vec::new(), removed: 0 };
        let mut pending = Pending::plan(embedder, changes, Vec::new(), cache, dirty, loaded, notices);
        for_each_record(workspace, &mut |record| {
            pending.stats.records += 1;
            pending.plan_record(&record);
            Ok(())
        })?;
        Ok(pending)
    }

    /// The last step of a build: the index, its text committed and its vectors stored.
    pub fn finish_build(workspace: &mut Workspace, pending: Pending) -> Result<(Self, Indexed)> {
        let mut index = Self {
            text: TextIndex::new()?,
            vectors: VectorTable::default(),
            records: HashMap::new(),
            labels: Labels::default(),
            embedder: pending.embedder.clone(),
            cursor: pending.changes.to.clone(),
            notices: Vec::new(),
        };
        let stats = index.put_in(pending, workspace)?;
        Ok((index, stats))
    }

    /// Puts a record's chunks in the text index and the vectors at hand in the table, and
    /// notes it in the record table. `hashes`: its chunks' content hashes, if known.
    fn insert(
        &mut self,
        record: Searchable,
        hashes: Option<&[ContentHash]>,
        cache: &HashMap<ContentHash, Quantized>,
    ) -> Result<()> {
        self.text.add(&record)?;
        if let Ok(embedder) = &self.embedder {
            for chunk in 0..record.chunks.len() {
                let hash = match hashes {
                    Some(hashes) => hashes.get(chunk).copied(),
                    None => Some(vectors::content_hash(embedder.model_id(), &record.embedding_text(chunk))),
                };
                if let Some(vector) = hash.and_then(|hash| Some((hash, cache.get(&hash)?))) {
                    self.vectors.insert(record.id, chunk as u32, vector.0, vector.1.clone());
                }
            }
        }
        let chunks = u32::try_from(record.chunks.len()).unwrap_or(u32::MAX);
        let labels =
            self.labels.number(Label { collection: record.collection, tags: record.tags, source: record.source });
        let time = record.time.map_or(NO_TIME, |t| t.timestamp_micros());
        self.records.insert(record.id, RecordMeta { time, chunks, labels });
        Ok(())
    }

    /// Puts in a prepared and embedded update: its records replace what the index held of
    /// each record it touched (a build reads every record from the read views again: one
    /// changed since it was prepared is put in as it is now, and the next catch-up, which
    /// reads the events after the build's cursor, takes it in again), and its vectors are
    /// stored.
    fn put_in(&mut self, pending: Pending, workspace: &mut Workspace) -> Result<Indexed> {
        let Pending { changes, records, cache, mut dirty, loaded, planned, mut stats, notices, .. } = pending;
        self.notices.extend(notices);
        for id in &changes.touched {
            if let Some(meta) = self.records.remove(id) {
                self.text.remove(*id, meta.chunks as usize)?;
                dirty.extend(self.vectors.remove(*id).into_iter().map(|(hash, _)| hash[0]));
            }
        }
        if changes.from.is_none() {
            for_each_record(workspace, &mut |record| self.insert(record, None, &cache))?;
        }
        for (n, record) in records.into_iter().enumerate() {
            self.insert(record, planned.get(n).map(Vec::as_slice), &cache)?;
        }
        // Stored vectors nothing uses any more leave with their shards.
        let live: BTreeSet<&ContentHash> = self.vectors.entries().map(|(hash, _)| hash).collect();
        dirty.extend(loaded.iter().filter(|hash| !live.contains(hash)).map(|hash| hash[0]));
        self.text.commit()?;
        self.cursor = changes.to;
        self.persist(workspace, &dirty)?;
        stats.removed = changes.removed;
        Ok(stats)
    }

    /// Takes in every event committed since the index last looked (by this process or any
    /// other, locally or imported): each record they touched is read again.
    pub fn catch_up(&mut self, workspace: &mut Workspace) -> Result<Indexed> {
        let mut pending = self.prepare_catch_up(workspace)?;
        let _ran_to_its_end = pending.embed(&mut |_, _| ControlFlow::Continue(()))?;
        Ok(self.apply(workspace, pending)?.unwrap_or_default())
    }

    /// The first step of a catch-up: the records the events since the cursor touched, as they
    /// are now, with the vectors the index already has for them.
    pub fn prepare_catch_up(&self, workspace: &mut Workspace) -> Result<Pending> {
        let events = workspace.events_after(&self.cursor)?;
        let mut to = self.cursor.clone();
        let mut touched: Vec<(Collection, RecordId)> = Vec::new();
        for event in &events {
            to.advance(event);
            let Some(subject) = &event.event.envelope.subject else { continue };
            let Some(collection) = Collection::of_document(&subject.document) else { continue };
            if SEARCHED.contains(&collection) && !touched.contains(&(collection, subject.record)) {
                touched.push((collection, subject.record));
            }
        }
        let mut cache = HashMap::new();
        let mut records = Vec::new();
        let mut removed = 0;
        for &(collection, id) in &touched {
            cache.extend(self.vectors.of_record(id));
            match workspace.get(collection, id)? {
                Some(record) => records.extend(Searchable::from_record(collection, &record)),
                None => removed += 1,
            }
        }
        let touched = touched.into_iter().map(|(_, id)| id).collect();
        let changes = Changes { from: Some(self.cursor.clone()), to, touched, removed };
        Ok(Pending::plan(self.embedder.clone(), changes, records, cache, BTreeSet::new(), BTreeSet::new(), Vec::new()))
    }

    /// The last step of a catch-up, unless the index moved since it was prepared (another
    /// update got there first: `None`, and nothing changes).
    pub fn apply(&mut self, workspace: &mut Workspace, pending: Pending) -> Result<Option<Indexed>> {
        if pending.changes.from.as_ref() != Some(&self.cursor) {
            return Ok(None);
        }
        Ok(Some(self.put_in(pending, workspace)?))
    }

    /// Rewrites the vector shards in `dirty` from the table, then the manifest.
    fn persist(&self, workspace: &mut Workspace, dirty: &BTreeSet<u8>) -> Result<()> {
        let Ok(embedder) = &self.embedder else { return Ok(()) };
        let model = embedder.model_id().to_owned();
        let mut shards: HashMap<u8, HashMap<&ContentHash, VectorRef<'_>>> = HashMap::new();
        let mut present = BTreeSet::new();
        for (hash, vector) in self.vectors.entries() {
            present.insert(hash[0]);
            if dirty.contains(&hash[0]) {
                shards.entry(hash[0]).or_default().insert(hash, vector);
            }
        }
        for shard in dirty {
            let name = shard_name(*shard);
            match shards.get(shard) {
                Some(entries) => {
                    let mut entries: Vec<(&ContentHash, VectorRef<'_>)> =
                        entries.iter().map(|(h, v)| (*h, *v)).collect();
                    entries.sort_by_key(|(h, _)| **h);
                    workspace.set_device_setting(&name, &vectors::encode_shard(&model, &entries))?
                }
                None => workspace.remove_device_setting(&name)?,
            }
        }
        let manifest = Manifest { v: MANIFEST_VERSION, model, shards: present.into_iter().collect() };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| SearchError::IndexFailed { detail: e.to_string() })?;
        if workspace.device_setting(MANIFEST).ok().flatten().as_deref() != Some(bytes.as_slice()) {
            workspace.set_device_setting(MANIFEST, &bytes)?;
        }
        Ok(())
    }

    /// Damage found and rebuilt since the last call, for the person to see.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    pub fn status(&self) -> IndexStatus {
        IndexStatus {
            records: self.records.len(),
            chunks: usize::try_from(self.text.chunk_count()).unwrap_or(usize::MAX),
            vectors: self.vectors.len(),
            model: match &self.embedder {
                Ok(embedder) => embedder.model_id().to_owned(),
                Err(reason) => format!("none: {reason}"),
            },
            vector_bytes: self.vectors.memory_bytes(),
            cursor: self.cursor.to_string(),
        }
    }

    /// The records that best answer `query`, their titles and snippets read from `workspace`'s
    /// read views (the index this was caught up with).
    pub fn search(&mut self, workspace: &mut Workspace, query: &SearchQuery) -> Result<Vec<Hit>> {
        let limit = query.limit;
        // Each side offers more than `limit`, so fusion can lift what both sides agree on.
        let depth = (limit * 3).max(30);
        let text_limit = if query.mode == Mode::Text { limit } else { depth };
        let text = &mut self.text;
        let mut text_side = || match query.mode {
            Mode::Vector => Ok(None),
            _ => text.search(&query.text, &query.filter, text_limit).map(Some),
        };
        // The query is embedded while the text side searches.
        let (embedding, text_hits) = match (&self.embedder, &query.mode) {
            (_, Mode::Text) => (None, text_side()),
            (Ok(embedder), _) => {
                let (embedding, text_hits) = embedder.embed_query_beside(&query.text, text_side);
                (Some(embedding?), text_hits)
            }
            (Err(reason), Mode::Vector) => return Err(SearchError::VectorsUnavailable { reason: reason.clone() }),
            (Err(reason), _) => {
                notice(&mut self.notices, format!("searched by words only: {reason}"));
                (None, text_side())
            }
        };
        let (text_hits, marker) = match text_hits? {
            Some(TextFound { hits, marker }) => (hits, Some(marker)),
            None => (Vec::new(), None),
        };
        let vector_hits = match &embedding {
            Some(embedding) => {
                let (records, labels) = (&self.records, &self.labels);
                let filter = &query.filter;
                let admit = |id: RecordId| {
                    let found = records.get(&id).and_then(|m| Some((labels.get(m.labels)?, m.time())));
                    found.is_some_and(|(label, time)| {
                        filter.admits(label.collection, &label.tags, label.source.as_deref(), time)
                    })
                };
                // Every row of the table is a record the index holds: without a filter, all pass.
                let admit: Option<&dyn Fn(RecordId) -> bool> = if filter.is_empty() { None } else { Some(&admit) };
                self.vectors.search(embedding, if query.mode == Mode::Vector { limit } else { depth }, admit)
            }
            None => Vec::new(),
        };
        let text_ranked: Vec<(RecordId, f32)> = text_hits.iter().map(|h| (h.record, h.score)).collect();
        let vector_ranked: Vec<(RecordId, f32)> = vector_hits.iter().map(|h| (h.record, h.score)).collect();
        let ranked = match query.mode {
            Mode::Text => text_ranked,
            Mode::Vector => vector_ranked,
            Mode::Hybrid => {
                let text_ids: Vec<RecordId> = text_ranked.iter().map(|(r, _)| *r).collect();
                let vector_ids: Vec<RecordId> = vector_ranked.iter().map(|(r, _)| *r).collect();
                fusion::hybrid(&text_ids, &vector_ids, depth)
            }
            Mode::Weighted { text_weight } => fusion::weighted(&text_ranked, &vector_ranked, text_weight),
        };
        let found: HashMap<RecordId, &TextHit> = text_hits.iter().map(|h| (h.record, h)).collect();
        let chunks: HashMap<RecordId, u32> = vector_hits.iter().map(|h| (h.record, h.chunk)).collect();
        let mut hits = Vec::with_capacity(limit);
        for (id, score) in ranked.into_iter().take(limit) {
            let Some(label) = self.records.get(&id).and_then(|m| self.labels.get(m.labels)) else { continue };
            let collection = label.collection;
            let record = workspace.get(collection, id)?.and_then(|r| Searchable::from_record(collection, &r));
            let (title, snippet) = match record {
                Some(record) => {
                    // The chunk the words matched best, else the one meaning did, else the first.
                    let hit = found.get(&id);
                    let n = hit.map_or_else(|| chunks.get(&id).map_or(0, |n| *n as usize), |hit| hit.chunk);
                    let chunk = record.chunks.get(n).map_or("", String::as_str);
                    let snippet = match (hit, &marker) {
                        (Some(_), Some(marker)) => marker.snippet(&record.title, chunk),
                        _ => words::opening(chunk),
                    };
                    (record.title, snippet)
                }
                // The index holds what the views hold: only a damaged view lacks a record.
                None => Default::default(),
            };
            hits.push(Hit { id, collection, title, score, snippet });
        }
        Ok(hits)
    }
}

/// Where an update reaches in the log, and what it takes out.
struct Changes {
    /// The index's cursor it was read against; `None` for a build.
    from: Option<Cursor>,
    to: Cursor,
    /// Records the events touched: what the index held of them goes.
    touched: Vec<RecordId>,
    /// Touched records that no longer exist.
    removed: usize,
}

/// An update of the index in three steps, so the model's time holds nothing: `prepare_*` reads
/// the workspace, [`Pending::embed`] runs the model (a first build of a large workspace takes
/// minutes) and needs nothing else, `finish_build` or `apply` puts the result in. The
/// workspace may change in between: the update reaches its own cursor and the next catch-up
/// takes in the rest.
pub struct Pending {
    embedder: std::result::Result<Arc<Embedder>, String>,
    changes: Changes,
    records: Vec<Searchable>,
    /// Vectors at hand, by the hash of what was embedded.
    cache: HashMap<ContentHash, Quantized>,
    /// Stored shards to rewrite.
    dirty: BTreeSet<u8>,
    /// The stored vectors a build loaded.
    loaded: BTreeSet<ContentHash>,
    /// Each record's chunks' hashes.
    planned: Vec<Vec<ContentHash>>,
    /// Texts to embed: hash, text, and the number of the record they belong to.
    missing: Vec<(ContentHash, String, usize)>,
    /// The hashes of the texts in `missing`.
    wanted: BTreeSet<ContentHash>,
    /// Records planned so far.
    seen: usize,
    stats: Indexed,
    notices: Vec<String>,
}

impl Pending {
    fn plan(
        embedder: std::result::Result<Arc<Embedder>, String>,
        changes: Changes,
        records: Vec<Searchable>,
        cache: HashMap<ContentHash, Quantized>,
        dirty: BTreeSet<u8>,
        loaded: BTreeSet<ContentHash>,
        notices: Vec<String>,
    ) -> Self {
        let stats = Indexed { records: records.len(), ..Indexed::default() };
        let mut pending = Self {
            embedder,
            changes,
            records: Vec::new(),
            cache,
            dirty,
            loaded,
            planned: Vec::with_capacity(records.len()),
            missing: Vec::new(),
            wanted: BTreeSet::new(),
            seen: 0,
            stats,
            notices,
        };
        for record in &records {
            let hashes = pending.plan_record(record);
            pending.planned.push(hashes);
        }
        pending.records = records;
        pending
    }

    /// Plans the embedding of `record`'s chunks that no vector at hand covers; its chunks'
    /// content hashes (none without a model).
    fn plan_record(&mut self, record: &Searchable) -> Vec<ContentHash> {
        let n = self.seen;
        self.seen += 1;
        let Ok(embedder) = &self.embedder else { return Vec::new() };
        let mut hashes = Vec::with_capacity(record.chunks.len());
        for chunk in 0..record.chunks.len() {
            let text = record.embedding_text(chunk);
            let hash = vectors::content_hash(embedder.model_id(), &text);
            if self.cache.contains_key(&hash) || !self.wanted.insert(hash) {
                self.stats.reused += 1;
            } else {
                self.missing.push((hash, text, n));
            }
            hashes.push(hash);
        }
        hashes
    }

    /// Whether this builds an index (rather than catching one up).
    pub fn is_build(&self) -> bool {
        self.changes.from.is_none()
    }

    /// Embeds every text no stored vector covers; `progress(done, total)` is told about records
    /// after each group of texts, and stops the work there by breaking (a daemon that stops
    /// does not wait for the model to get through a large workspace): what was not embedded
    /// is then left for the next `embed`.
    pub fn embed(&mut self, progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>) -> Result<ControlFlow<()>> {
        let total = self.stats.records;
        if progress(0, total).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        if let Ok(embedder) = &self.embedder {
            while !self.missing.is_empty() {
                let group: Vec<_> = self.missing.drain(..EMBED_GROUP.min(self.missing.len())).collect();
                let texts: Vec<&str> = group.iter().map(|(_, text, _)| text.as_str()).collect();
                for ((hash, _, _), embedding) in group.iter().zip(embedder.embed(&texts)?) {
                    self.cache.insert(*hash, Quantized::new(&embedding));
                    self.dirty.insert(hash[0]);
                }
                self.stats.embedded += group.len();
                if progress(group.last().map_or(0, |(_, _, n)| *n), total).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        self.missing.clear();
        Ok(progress(total, total))
    }
}

/// The stored vectors (when the model is the one they were made with), and the shards
/// to rewrite (damaged, missing); every fault becomes a notice.
fn load_cache(
    workspace: &Workspace,
    embedder: &std::result::Result<Arc<Embedder>, String>,
    has_records: bool,
    notices: &mut Vec<String>,
) -> (HashMap<ContentHash, Quantized>, BTreeSet<u8>) {
    let mut cache = HashMap::new();
    let mut dirty = BTreeSet::new();
    let Ok(embedder) = embedder else { return (cache, dirty) };
    let model = embedder.model_id().to_owned();
    let manifest = match workspace.device_setting(MANIFEST) {
        Ok(Some(bytes)) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) if manifest.v == MANIFEST_VERSION => Some(manifest),
            Ok(manifest) => {
                notice(notices, format!("the search index is of format {}: rebuilt", manifest.v));
                None
            }
            Err(e) => {
                notice(
                    notices,
                    format!("the search index's manifest is damaged ({}): rebuilt", adiuva_engine::json_error(&e)),
                );
                None
            }
        },
        Ok(None) => {
            if has_records {
                notice(notices, "the search index was missing: rebuilt from the log".to_owned());
            }
            None
        }
        Err(e) => {
            notice(notices, format!("the search index's manifest does not open ({e}): rebuilt"));
            None
        }
    };
    let listed: BTreeSet<u8> = manifest.as_ref().map(|m| m.shards.iter().copied().collect()).unwrap_or_default();
    if manifest.as_ref().is_some_and(|m| m.model != model) {
        notice(notices, "the embedding model changed: every text is embedded again".to_owned());
        dirty.extend(listed.iter().copied());
        return (cache, dirty);
    }
    for shard in 0..=u8::MAX {
        let name = shard_name(shard);
        let damaged = |detail: String| SearchError::IndexDamaged { part: name.clone(), detail }.to_string();
        match workspace.device_setting(&name) {
            Ok(Some(bytes)) => match vectors::decode_shard(&bytes) {
                Ok((shard_model, entries)) if shard_model == model => {
                    cache.extend(entries.into_iter().filter(|(hash, _)| hash[0] == shard));
                }
                Ok(_) => {
                    dirty.insert(shard);
                }
                Err(detail) => {
                    notice(notices, format!("{}: rebuilt", damaged(detail)));
                    dirty.insert(shard);
                }
            },
            Ok(None) if listed.contains(&shard) => {
                notice(notices, format!("the search index part {name} is missing: rebuilt"));
                dirty.insert(shard);
            }
            Ok(None) => {}
            Err(e) => {
                notice(notices, format!("{}: rebuilt", damaged(e.to_string())));
                dirty.insert(shard);
            }
        }
    }
    (cache, dirty)
}

/// Every searchable record of the workspace, read from the read views one at a time.
fn for_each_record(workspace: &mut Workspace, visit: &mut dyn FnMut(Searchable) -> Result<()>) -> Result<()> {
    for collection in SEARCHED {
        workspace.record_texts(collection, |id, text| {
            let fields =
                serde_json::from_str::<SearchedFields>(text).map_err(|e| adiuva_engine::Error::RecordInvalid {
                    collection,
                    detail: format!("record {id} {}", adiuva_engine::json_error(&e)),
                })?;
            match Searchable::from_fields(collection, fields) {
                Some(record) => visit(record),
                None => Ok(()),
            }
        })?;
    }
    Ok(())
}

fn notice(notices: &mut Vec<String>, message: String) {
    tracing::info!("{message}");
    notices.push(message);
}
