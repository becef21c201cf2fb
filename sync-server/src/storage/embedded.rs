//! The embedded backend: everything under one data directory, no other service.
//!
//! - `meta/`: sled, two trees. `records` holds the small records; a write there is flushed and
//!   sled's file `fdatasync`ed before it returns (sled's flush alone is not durable). `index`
//!   holds the blob index: `b WS \0 ID` → (seq, segment, offset, size), `s WS \0 SEQ` → (id,
//!   size), `h WS` → head, `u ACCOUNT` → usage, and `checkpoint`.
//! - `blobs/`: the segments ([`super::segments`]).
//!
//! **Small records are read through a cache** ([`RecordCache`]): every request reads its
//! session, workspace and device records, and sled's tree walks for the three were a tenth of
//! an upload's CPU. This process is the store's only writer (sled locks the directory), and every
//! write here invalidates its key, so the cache never serves what the store no longer holds.
//!
//! **Blob writes** go through one writer thread, which is the group commit: it takes every
//! upload waiting, numbers the new ones, appends them to the current segment in one write, makes
//! that durable with one `fdatasync`, applies the group's index entries in one sled batch, and
//! only then answers each upload. While it syncs, the next group gathers. The index is not
//! synced per group: the segments are the log, and every few seconds a **checkpoint** flushes
//! and syncs sled with the segment position it covers. At open, the records after the
//! checkpoint are replayed into the index (idempotently: an id already indexed is skipped), and
//! a torn tail of the last segment (a write that never finished, so was never acknowledged) is
//! cut off.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::segments::{self, Record, SEGMENT_BYTES, Segments};
use super::{BlobId, Change, NewBlob, Result, Storage, StorageError, StoredBlob};

/// sled's page cache, in on-disk bytes.
const CACHE_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;
/// How often the writer checkpoints the index while blobs arrive.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// A group holds at most this many uploads, or this many bytes.
const GROUP_UPLOADS: usize = 4096;
const GROUP_BYTES: usize = 32 * 1024 * 1024;

const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The embedded backend (see the module docs).
pub struct Embedded {
    shared: Arc<Shared>,
    uploads: Mutex<Option<mpsc::Sender<Upload>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    db: sled::Db,
    records: sled::Tree,
    index: sled::Tree,
    /// sled's own file, `fdatasync`ed after each flush.
    db_file: File,
    segments: Segments,
    cache: RecordCache,
}

struct Upload {
    blob: NewBlob,
    answer: oneshot::Sender<Result<StoredBlob>>,
}

impl Embedded {
    /// Opens (or creates) the store in `dir`, replaying blobs written after the last checkpoint.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StorageError::io("creating the data directory"))?;
        // Owner-only: it holds password hashes and session records.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(StorageError::io("making the data directory owner-only"))?;
        let meta = dir.join("meta");
        let db =
            sled::Config::new().path(&meta).cache_capacity(CACHE_CAPACITY_BYTES).flush_every_ms(None).open().map_err(
                |error| match error {
                    sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => StorageError::Locked,
                    sled::Error::Io(ref io) if io.to_string().contains("lock") => StorageError::Locked,
                    other => StorageError::Sled(other),
                },
            )?;
        let db_file = File::open(meta.join("db")).map_err(StorageError::io("opening the metadata file"))?;
        let records = db.open_tree("records")?;
        let index = db.open_tree("index")?;
        let segments = Segments::new(&dir.join("blobs"))?;
        let shared = Arc::new(Shared { db, records, index, db_file, segments, cache: RecordCache::default() });
        let position = shared.replay()?;
        let (sender, receiver) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("blob-writer".into())
            .spawn(move || Writer::new(writer_shared, position).run(receiver))
            .map_err(StorageError::io("starting the blob writer"))?;
        Ok(Self { shared, uploads: Mutex::new(Some(sender)), writer: Mutex::new(Some(writer)) })
    }

    /// Runs `operation` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || operation(&shared))
            .await
            .map_err(|_| StorageError::Corrupt { what: "a storage task panicked".into() })?
    }
}

/// Most small records kept in memory; past it, the cache starts again empty.
const CACHED_RECORDS: usize = 8192;

/// Small records as last read, absent ones included. A write bumps the generation and forgets
/// its key; a read that missed stores what it read only if no write happened meanwhile, so a
/// value read before a write can never be stored after it.
#[derive(Default)]
struct RecordCache(Mutex<CachedRecords>);

#[derive(Default)]
struct CachedRecords {
    values: HashMap<String, Option<Vec<u8>>>,
    generation: u64,
}

impl RecordCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedRecords> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value (`Ok`), or the generation to fill the key at (`Err`).
    fn get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, u64> {
        let cached = self.lock();
        cached.values.get(key).cloned().ok_or(cached.generation)
    }

    fn fill(&self, key: &str, value: &Option<Vec<u8>>, generation: u64) {
        let mut cached = self.lock();
        if cached.generation != generation {
            return;
        }
        if cached.values.len() >= CACHED_RECORDS {
            cached.values.clear();
        }
        cached.values.insert(key.to_owned(), value.clone());
    }

    /// Forgets `key` when dropped: after its write, whether it succeeded, failed or panicked.
    /// Held by the write itself, which runs to its end even if its caller gave up waiting.
    fn writing<'a>(&'a self, key: &'a str) -> Writing<'a> {
        Writing { cache: self, key }
    }
}

struct Writing<'a> {
    cache: &'a RecordCache,
    key: &'a str,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut cached = self.cache.lock();
        cached.generation += 1;
        cached.values.remove(self.key);
    }
}

impl Drop for Embedded {
    /// Stops the writer after the uploads it has, which checkpoints the index.
    fn drop(&mut self) {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Shared {
    /// sled flushed and its file synced: everything applied so far is durable.
    fn sync(&self) -> Result<()> {
        self.db.flush()?;
        self.db_file.sync_data().map_err(StorageError::io("syncing the metadata file"))
    }

    fn read_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(self.index.get(key)?.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_le_bytes).unwrap_or(0))
    }

    /// Indexes every record after the checkpoint; returns where the writer continues.
    fn replay(&self) -> Result<(u32, u64)> {
        let (mut segment, mut offset) = match self.index.get(CHECKPOINT_KEY)? {
            Some(value) if value.len() == 12 => (
                u32::from_le_bytes(value[..4].try_into().unwrap_or_default()),
                u64::from_le_bytes(value[4..].try_into().unwrap_or_default()),
            ),
            Some(_) => return Err(StorageError::Corrupt { what: "the index checkpoint".into() }),
            None => (0, 0),
        };
        let numbers = self.segments.list()?;
        let first = segment;
        let mut replayed = 0usize;
        for (position, &number) in numbers.iter().enumerate().filter(|(_, n)| **n >= first) {
            let start = if number == segment { offset } else { 0 };
            let path = self.segments.path(number);
            let data = std::fs::read(&path).map_err(StorageError::io("reading a blob segment"))?;
            let from = usize::try_from(start).unwrap_or(usize::MAX).min(data.len());
            let mut group = IndexGroup::default();
            let valid = segments::scan(&data[from..], |at, record| {
                replayed += group.add_if_new(self, &record, number, start + at)?.is_some() as usize;
                Ok(())
            })?;
            group.apply(self)?;
            let end = (from + valid) as u64;
            if end < data.len() as u64 {
                if position + 1 < numbers.len() {
                    return Err(StorageError::Corrupt { what: format!("blob segment {number} at byte {end}") });
                }
                warn!(
                    segment = number,
                    at = end,
                    dropped = data.len() as u64 - end,
                    "cut an unfinished write off the last blob segment"
                );
                let file = self.segments.open_for_append(number)?;
                file.set_len(end).map_err(StorageError::io("truncating a blob segment"))?;
                file.sync_all().map_err(StorageError::io("truncating a blob segment"))?;
            }
            (segment, offset) = (number, end);
        }
        if replayed > 0 {
            info!(replayed, "indexed blobs written after the last checkpoint");
        }
        checkpoint(self, segment, offset)?;
        Ok((segment, offset))
    }
}

/// Records the segment position the index covers, durably.
fn checkpoint(shared: &Shared, segment: u32, offset: u64) -> Result<()> {
    let mut value = segment.to_le_bytes().to_vec();
    value.extend_from_slice(&offset.to_le_bytes());
    shared.index.insert(CHECKPOINT_KEY, value)?;
    shared.sync()
}

fn blob_key(workspace: &str, id: &BlobId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + workspace.len() + 1 + 32);
    key.push(b'b');
    key.extend_from_slice(workspace.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.0);
    key
}

fn seq_key(workspace: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + workspace.len() + 1 + 8);
    key.push(b's');
    key.extend_from_slice(workspace.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn named_key(kind: u8, name: &str) -> Vec<u8> {
    let mut key = vec![kind];
    key.extend_from_slice(name.as_bytes());
    key
}

/// A blob's index entry: where its bytes are.
struct Location {
    seq: u64,
    segment: u32,
    offset: u64,
    size: u64,
}

impl Location {
    fn encode(&self) -> [u8; 28] {
        let mut value = [0u8; 28];
        value[..8].copy_from_slice(&self.seq.to_le_bytes());
        value[8..12].copy_from_slice(&self.segment.to_le_bytes());
        value[12..20].copy_from_slice(&self.offset.to_le_bytes());
        value[20..28].copy_from_slice(&self.size.to_le_bytes());
        value
    }

    fn decode(value: &[u8]) -> Result<Self> {
        let field = |range: std::ops::Range<usize>| {
            value.get(range).ok_or_else(|| StorageError::Corrupt { what: "a blob index entry".into() })
        };
        Ok(Self {
            seq: u64::from_le_bytes(field(0..8)?.try_into().unwrap_or_default()),
            segment: u32::from_le_bytes(field(8..12)?.try_into().unwrap_or_default()),
            offset: u64::from_le_bytes(field(12..20)?.try_into().unwrap_or_default()),
            size: u64::from_le_bytes(field(20..28)?.try_into().unwrap_or_default()),
        })
    }
}

/// The index entries of one group, applied in one sled batch (so heads, usage and entries
/// never disagree), with the heads and usage as they stand inside the group.
#[derive(Default)]
struct IndexGroup {
    batch: sled::Batch,
    heads: HashMap<String, u64>,
    usage: HashMap<String, u64>,
    /// Ids new in this group, so a second upload of one in the same group is not stored twice.
    pending: HashMap<Vec<u8>, u64>,
}

impl IndexGroup {
    fn head(&mut self, shared: &Shared, workspace: &str) -> Result<&mut u64> {
        Ok(match self.heads.entry(workspace.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(shared.read_u64(&named_key(b'h', workspace))?),
        })
    }

    fn usage(&mut self, shared: &Shared, account: &str) -> Result<&mut u64> {
        Ok(match self.usage.entry(account.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(shared.read_u64(&named_key(b'u', account))?),
        })
    }

    /// The seq an id already has (indexed, or new in this group).
    fn existing(&self, shared: &Shared, key: &[u8]) -> Result<Option<u64>> {
        if let Some(seq) = self.pending.get(key) {
            return Ok(Some(*seq));
        }
        shared.index.get(key)?.map(|value| Location::decode(&value).map(|l| l.seq)).transpose()
    }

    /// Adds a replayed record unless its id is indexed; returns its seq if it was added.
    fn add_if_new(&mut self, shared: &Shared, record: &Record<'_>, segment: u32, offset: u64) -> Result<Option<u64>> {
        let key = blob_key(record.workspace, &record.id);
        if self.existing(shared, &key)?.is_some() {
            return Ok(None);
        }
        let head = self.head(shared, record.workspace)?;
        *head = (*head).max(record.seq);
        self.add(shared, key, record, segment, offset)?;
        Ok(Some(record.seq))
    }

    fn add(&mut self, shared: &Shared, key: Vec<u8>, record: &Record<'_>, segment: u32, offset: u64) -> Result<()> {
        let size = record.bytes.len() as u64;
        *self.usage(shared, record.account)? += size;
        let location = Location { seq: record.seq, segment, offset, size };
        self.batch.insert(key.clone(), &location.encode()[..]);
        let mut entry = record.id.0.to_vec();
        entry.extend_from_slice(&size.to_le_bytes());
        self.batch.insert(seq_key(record.workspace, record.seq), entry);
        self.pending.insert(key, record.seq);
        Ok(())
    }

    fn apply(self, shared: &Shared) -> Result<()> {
        let mut batch = self.batch;
        for (workspace, head) in self.heads {
            batch.insert(named_key(b'h', &workspace), &head.to_le_bytes()[..]);
        }
        for (account, usage) in self.usage {
            batch.insert(named_key(b'u', &account), &usage.to_le_bytes()[..]);
        }
        shared.index.apply_batch(batch)?;
        Ok(())
    }
}

/// The writer thread's state: the segment it appends to.
struct Writer {
    shared: Arc<Shared>,
    segment: u32,
    end: u64,
    file: Option<File>,
    /// Groups written since the last checkpoint.
    dirty: bool,
    last_checkpoint: Instant,
    /// Set at the first failed write or sync: the outcome of that group on disk is unknown, so
    /// the writer takes nothing more until a restart replays the segments.
    failed: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>, (segment, end): (u32, u64)) -> Self {
        Self { shared, segment, end, file: None, dirty: false, last_checkpoint: Instant::now(), failed: false }
    }

    fn run(mut self, uploads: mpsc::Receiver<Upload>) {
        loop {
            let first = match uploads.recv_timeout(CHECKPOINT_INTERVAL) {
                Ok(upload) => upload,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.checkpoint_if_dirty();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            let mut bytes = group[0].blob.bytes.len();
            while group.len() < GROUP_UPLOADS && bytes < GROUP_BYTES {
                match uploads.try_recv() {
                    Ok(upload) => {
                        bytes += upload.blob.bytes.len();
                        group.push(upload);
                    }
                    Err(_) => break,
                }
            }
            self.write_group(group);
            if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                self.checkpoint_if_dirty();
            }
        }
        self.checkpoint_if_dirty();
    }

    fn checkpoint_if_dirty(&mut self) {
        if !self.dirty || self.failed {
            return;
        }
        match checkpoint(&self.shared, self.segment, self.end) {
            Ok(()) => {
                self.dirty = false;
                self.last_checkpoint = Instant::now();
            }
            // The segments still hold everything; the next open replays them.
            Err(error) => warn!(%error, "index checkpoint failed"),
        }
    }

    fn write_group(&mut self, group: Vec<Upload>) {
        if self.failed {
            for upload in group {
                let _ = upload.answer.send(Err(StorageError::Stopped));
            }
            return;
        }
        match self.store_group(group) {
            Ok(answers) => {
                for (answer, outcome) in answers {
                    let _ = answer.send(outcome);
                }
            }
            Err((error, answers)) => {
                error!(%error, "blob write failed; the writer stops until restart");
                self.failed = true;
                for answer in answers {
                    let _ = answer.send(Err(StorageError::Stopped));
                }
            }
        }
    }

    /// Numbers, appends, syncs and indexes a group; answers are sent by the caller.
    #[allow(clippy::type_complexity)]
    fn store_group(
        &mut self,
        group: Vec<Upload>,
    ) -> std::result::Result<
        Vec<(oneshot::Sender<Result<StoredBlob>>, Result<StoredBlob>)>,
        (StorageError, Vec<oneshot::Sender<Result<StoredBlob>>>),
    > {
        let total: usize = group.iter().map(|u| u.blob.bytes.len()).sum();
        if self.end > 0 && self.end + total as u64 > SEGMENT_BYTES {
            self.segment += 1;
            self.end = 0;
            self.file = None;
        }
        let shared = self.shared.clone();
        let mut index = IndexGroup::default();
        let mut buffer = Vec::with_capacity(total + group.len() * 128);
        let mut answers = Vec::with_capacity(group.len());
        // The outcome of each upload; `None` until the group is durable.
        let mut waiting = Vec::new();
        for upload in group {
            let blob = &upload.blob;
            // Ok((stored, durable_with_group)): a blob new in this group, or a second upload of
            // one, is acknowledged only once the group is durable.
            let outcome = (|| -> Result<(StoredBlob, bool)> {
                let key = blob_key(&blob.workspace, &blob.id);
                let size = blob.bytes.len() as u64;
                if let Some(seq) = index.existing(&shared, &key)? {
                    let in_group = index.pending.contains_key(&key);
                    return Ok((StoredBlob { seq, size, created: false }, in_group));
                }
                let used = *index.usage(&shared, &blob.account)?;
                if let Some(quota) = blob.quota
                    && used + size > quota
                {
                    return Err(StorageError::QuotaExceeded { used, size, quota });
                }
                let head = index.head(&shared, &blob.workspace)?;
                *head += 1;
                let seq = *head;
                let record =
                    Record { seq, id: blob.id, workspace: &blob.workspace, account: &blob.account, bytes: &blob.bytes };
                let offset = self.end + buffer.len() as u64;
                let body = segments::encode(&record, &mut buffer);
                index.add(&shared, key, &record, self.segment, offset + body)?;
                Ok((StoredBlob { seq, size, created: true }, true))
            })();
            match outcome {
                Ok((stored, true)) => waiting.push((upload.answer, stored)),
                Ok((stored, false)) => answers.push((upload.answer, Ok(stored))),
                Err(error) => answers.push((upload.answer, Err(error))),
            }
        }
        if buffer.is_empty() {
            return Ok(answers);
        }
        let written = (|| -> Result<()> {
            if self.file.is_none() {
                self.file = Some(shared.segments.open_for_append(self.segment)?);
            }
            let file = self.file.as_ref().ok_or(StorageError::Stopped)?;
            file.write_all_at(&buffer, self.end).map_err(StorageError::io("appending to a blob segment"))?;
            file.sync_data().map_err(StorageError::io("syncing a blob segment"))?;
            self.end += buffer.len() as u64;
            index.apply(&shared)
        })();
        match written {
            Ok(()) => {
                self.dirty = true;
                answers.extend(waiting.into_iter().map(|(answer, stored)| (answer, Ok(stored))));
                Ok(answers)
            }
            Err(error) => {
                for (answer, outcome) in answers {
                    let _ = answer.send(outcome);
                }
                Err((error, waiting.into_iter().map(|(answer, _)| answer).collect()))
            }
        }
    }
}

#[async_trait]
impl Storage for Embedded {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let cache = &self.shared.cache;
        let generation = match cache.get(key) {
            Ok(cached) => return Ok(cached),
            Err(generation) => generation,
        };
        let value = self.shared.records.get(key.as_bytes())?.map(|value| value.to_vec());
        cache.fill(key, &value, generation);
        Ok(value)
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = prefix.to_owned();
        self.blocking(move |shared| {
            let mut found = Vec::new();
            for entry in shared.records.scan_prefix(prefix.as_bytes()) {
                let (key, value) = entry?;
                let key = String::from_utf8(key.to_vec())
                    .map_err(|_| StorageError::Corrupt { what: "a record key".into() })?;
                found.push((key, value.to_vec()));
            }
            Ok(found)
        })
        .await
    }

    async fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool> {
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.blocking(move |shared| {
            let _writing = shared.cache.writing(&key);
            let swapped = shared.records.compare_and_swap(key.as_bytes(), expected, new)?.is_ok();
            if swapped {
                shared.sync()?;
            }
            Ok(swapped)
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.blocking(move |shared| {
            let _writing = shared.cache.writing(&key);
            shared.records.insert(key.as_bytes(), value)?;
            shared.sync()
        })
        .await
    }

    async fn put_blob(&self, blob: NewBlob) -> Result<StoredBlob> {
        let (answer, answered) = oneshot::channel();
        {
            let uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
            let sender = uploads.as_ref().ok_or(StorageError::Stopped)?;
            sender.send(Upload { blob, answer }).map_err(|_| StorageError::Stopped)?;
        }
        answered.await.map_err(|_| StorageError::Stopped)?
    }

    async fn get_blob(&self, workspace: &str, id: &BlobId) -> Result<Option<Bytes>> {
        let key = blob_key(workspace, id);
        self.blocking(move |shared| {
            let Some(value) = shared.index.get(key)? else { return Ok(None) };
            let location = Location::decode(&value)?;
            Ok(Some(Bytes::from(shared.segments.read(location.segment, location.offset, location.size)?)))
        })
        .await
    }

    async fn blob_seq(&self, workspace: &str, id: &BlobId) -> Result<Option<u64>> {
        match self.shared.index.get(blob_key(workspace, id))? {
            Some(value) => Ok(Some(Location::decode(&value)?.seq)),
            None => Ok(None),
        }
    }

    async fn changes(&self, workspace: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        let (start, end) = (seq_key(workspace, after.saturating_add(1)), seq_key(workspace, u64::MAX));
        self.blocking(move |shared| {
            let mut changes = Vec::new();
            for entry in shared.index.range(start..=end).take(limit) {
                let (key, value) = entry?;
                let corrupt = || StorageError::Corrupt { what: "a sequence entry".into() };
                let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().map_err(|_| corrupt())?);
                let id = BlobId(value.get(..32).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
                let size =
                    u64::from_le_bytes(value.get(32..40).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
                changes.push(Change { seq, id, size });
            }
            Ok(changes)
        })
        .await
    }

    async fn head(&self, workspace: &str) -> Result<u64> {
        self.shared.read_u64(&named_key(b'h', workspace))
    }

    async fn usage(&self, account: &str) -> Result<u64> {
        self.shared.read_u64(&named_key(b'u', account))
    }
}

#[cfg(test)]
mod tests {
    use super::RecordCache;

    #[test]
    fn a_read_from_before_a_write_is_not_cached_after_it() {
        let cache = RecordCache::default();
        // A read misses, then a write of the key ends before the read stores what it read.
        let Err(generation) = cache.get("k") else { panic!("an empty cache had the key") };
        drop(cache.writing("k"));
        cache.fill("k", &Some(b"before the write".to_vec()), generation);
        assert!(cache.get("k").is_err(), "the value from before the write was cached");
        // A read that no write overtook is cached, and forgotten by the next write.
        let Err(generation) = cache.get("k") else { panic!("the key was cached") };
        cache.fill("k", &Some(b"now".to_vec()), generation);
        assert_eq!(cache.get("k"), Ok(Some(b"now".to_vec())));
        drop(cache.writing("k"));
        assert!(cache.get("k").is_err());
    }
}
