//! [`ChunkStore`] on sled 0.34.
//!
//! Three sled habits shape this file (measured, see `TOOLING.md` and `BENCHMARKS.md`):
//! - `Db::flush` writes with `sync_file_range`, which neither syncs file metadata nor flushes the
//!   disk's cache, and costs two device round trips when followed by the `fdatasync` it needs.
//!   So durability comes from our own **write-ahead log** (`wal`): [`write`](ChunkStore::write)
//!   appends the batch to it and `fdatasync`s it *before* handing the batch to sled (whose
//!   background `sync_file_range` would otherwise compete with that `fdatasync`), so a batch is
//!   durable when `write` returns and [`sync`](ChunkStore::sync) only tidies up. sled itself is
//!   flushed (and then `fdatasync`ed through a descriptor of our own) only at checkpoints, after
//!   which the log is emptied; on open, whatever the log holds is replayed into sled. Replaying is
//!   idempotent (puts and deletes in order), and a record cut short by a crash is recognised by
//!   its checksum and dropped: it was never acknowledged. The log file is written full of zeros
//!   at each checkpoint and then overwritten in place, so an append never changes the file's
//!   size or extents and its `fdatasync` never has to journal metadata.
//! - sled copes badly with large values: it rewrites whole leaf pages (up to 17 entries), so its
//!   log grows by many times what is stored, and a page larger than a quarter of a segment goes
//!   to a side file that sled never syncs. Values above [`INLINE_LIMIT`] are therefore written
//!   by us to files in `values/` (synced before the sled batch that points at them), and sled
//!   holds only a small pointer. Every sled value starts with a tag byte saying which it is.
//! - sled may panic on damaged files instead of returning an error. Every call into sled is
//!   wrapped so a damaged store is a typed [`StoreError::Corrupt`], never a crash of the app.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{ChunkStore, Entry, StoreError, WriteBatch};

/// Values up to this size live inline in sled: a full leaf page (17 entries) then stays far
/// below sled's side-file threshold of 128 KiB, and page rewrites stay cheap.
const INLINE_LIMIT: usize = 4 * 1024;

/// sled's page cache. Its `cache_capacity` counts on-disk bytes, not RAM; the engine keeps the
/// documents in memory itself, so a small cache is enough.
const CACHE_CAPACITY_BYTES: u64 = 32 * 1024 * 1024;

/// The log's preallocated size: a checkpoint (flush sled, empty the log) happens when the next
/// record would not fit.
const WAL_CAPACITY_BYTES: u64 = 1024 * 1024;
const WAL_FILE: &str = "wal";

const TAG_INLINE: u8 = 0;
const TAG_FILE: u8 = 1;
const VALUE_DIR: &str = "values";

pub struct SledStore {
    db: sled::Db,
    /// sled's log file, for `fdatasync` after `flush`.
    log_file: File,
    path: PathBuf,
    value_dir: PathBuf,
    /// Value files replaced or deleted by a batch; removed once that batch is durable.
    unreferenced: Mutex<Vec<PathBuf>>,
    wal: Mutex<Wal>,
}

/// The write-ahead log: batches applied to sled but not yet flushed by it.
struct Wal {
    file: File,
    /// Where the next record goes; everything after it is zeros.
    end: u64,
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let created = !path.exists();
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // We flush at every durability barrier ourselves; a background flusher would only
            // add I/O that competes with it.
            .flush_every_ms(None);
        let db = open_db(&config, path)?;
        let log_file = File::open(path.join("db"))?;
        let value_dir = path.join(VALUE_DIR);
        std::fs::create_dir_all(&value_dir)?;
        let wal_path = path.join(WAL_FILE);
        let wal_file =
            std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&wal_path)?;
        let wal = Wal { file: wal_file, end: 0 };
        if created {
            // Make the new directory entries themselves durable.
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
            File::open(path)?.sync_all()?;
        }

        let store = Self {
            db,
            log_file,
            path: path.to_owned(),
            value_dir,
            unreferenced: Mutex::new(Vec::new()),
            wal: Mutex::new(wal),
        };
        store.replay_wal(&std::fs::read(&wal_path)?)?;
        store.remove_orphan_files()?;
        Ok(store)
    }

    /// Applies every complete record of the log to sled. The log then goes on from its end; only
    /// a record torn by a crash, or a log that is not the preallocated size, calls for a
    /// checkpoint first.
    fn replay_wal(&self, log: &[u8]) -> Result<(), StoreError> {
        let contents = parse_log(log)?;
        let replayed = contents.batches.len();
        for batch in contents.batches {
            self.guard(|| self.db.apply_batch(batch))?;
        }
        tracing::debug!(replayed, torn = contents.torn, "write-ahead log replayed");
        let mut wal = self.lock_wal()?;
        if contents.torn || log.len() as u64 != WAL_CAPACITY_BYTES {
            self.checkpoint(&mut wal)
        } else {
            wal.end = contents.end as u64;
            Ok(())
        }
    }

    fn lock_wal(&self) -> Result<std::sync::MutexGuard<'_, Wal>, StoreError> {
        self.wal.lock().map_err(|_| StoreError::Corrupt { detail: "write-ahead log lock poisoned".into() })
    }

    /// Makes sled's own files durable and empties the log.
    fn checkpoint(&self, wal: &mut Wal) -> Result<(), StoreError> {
        self.guard(|| self.db.flush())?;
        self.log_file.sync_data()?;
        wal.file.set_len(0)?;
        wal.file.set_len(WAL_CAPACITY_BYTES)?;
        // Real zeros, not a sparse file: later appends must not allocate blocks.
        let zeros = vec![0u8; 1024 * 1024];
        for offset in (0..WAL_CAPACITY_BYTES).step_by(zeros.len()) {
            std::os::unix::fs::FileExt::write_all_at(&wal.file, &zeros, offset)?;
        }
        wal.file.sync_all()?;
        wal.end = 0;
        Ok(())
    }

    fn guard<T>(&self, operation: impl FnOnce() -> sled::Result<T>) -> Result<T, StoreError> {
        catch_unwind(AssertUnwindSafe(operation))
            .map_err(|panic| StoreError::Corrupt { detail: panic_text(&panic) })?
            .map_err(|error| map_error(error, &self.path))
    }

    /// Value files no sled entry points at: left by a crash between writing a file and the
    /// batch that references it becoming durable, or before an unreferenced file was removed.
    fn remove_orphan_files(&self) -> Result<(), StoreError> {
        let referenced: std::collections::HashSet<Vec<u8>> = self
            .guard(|| self.db.iter().values().collect::<sled::Result<Vec<_>>>())?
            .into_iter()
            .filter_map(|value| value.strip_prefix(&[TAG_FILE]).map(<[u8]>::to_vec))
            .collect();
        for entry in std::fs::read_dir(&self.value_dir)? {
            let entry = entry?;
            if !referenced.contains(entry.file_name().as_encoded_bytes()) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Turns a stored value (tag + inline bytes or file name) into the value.
    fn resolve(&self, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        match stored.split_first() {
            Some((&TAG_INLINE, value)) => Ok(value.to_vec()),
            Some((&TAG_FILE, name)) => {
                let name = std::str::from_utf8(name)
                    .map_err(|_| StoreError::Corrupt { detail: "value file name is not text".into() })?;
                std::fs::read(self.value_dir.join(name)).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        StoreError::Corrupt { detail: format!("value file {name} is missing") }
                    }
                    _ => e.into(),
                })
            }
            _ => Err(StoreError::Corrupt { detail: "untagged value".into() }),
        }
    }

    /// The value file an existing entry points at, if any.
    fn file_of(&self, key: &[u8]) -> Result<Option<PathBuf>, StoreError> {
        let stored = self.guard(|| self.db.get(key))?;
        Ok(stored.and_then(|stored| {
            let name = stored.strip_prefix(&[TAG_FILE])?;
            Some(self.value_dir.join(std::str::from_utf8(name).ok()?))
        }))
    }
}

/// sled's background threads keep its file lock for a moment after a `Db` is dropped, so a
/// store reopened at once in the same process can find it still taken. Callers hold the
/// workspace's own lock, which keeps other processes out; so a taken sled lock is retried for
/// up to [`LOCK_RETRY`] before it is reported.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(config: &sled::Config, path: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = catch_unwind(AssertUnwindSafe(|| config.open()))
            .map_err(|panic| StoreError::Corrupt { detail: panic_text(&panic) })?
            .map_err(|error| map_error(error, path));
        match opened {
            Err(StoreError::Locked { .. }) if started.elapsed() < LOCK_RETRY => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("sled panicked");
    format!("sled failed on damaged files: {message}")
}

fn map_error(error: sled::Error, path: &Path) -> StoreError {
    match error {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked { path: path.to_owned() }
        }
        sled::Error::Io(io) => StoreError::Io { source: io },
        other => StoreError::Corrupt { detail: other.to_string() },
    }
}

impl ChunkStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.guard(|| self.db.get(key))? {
            Some(stored) => self.resolve(&stored).map(Some),
            None => Ok(None),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let entries = self.guard(|| self.db.scan_prefix(prefix).collect::<sled::Result<Vec<_>>>())?;
        entries.into_iter().map(|(key, stored)| Ok((key.to_vec(), self.resolve(&stored)?))).collect()
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = self.guard(|| self.db.scan_prefix(prefix).keys().collect::<sled::Result<Vec<_>>>())?;
        Ok(keys.into_iter().map(|key| key.to_vec()).collect())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        // What sled is to apply, and the log to record: (key, Some(stored value)) or (key, None).
        let mut sled_batch_ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut replaced = Vec::new();
        let mut new_files = Vec::new();
        for (key, value) in batch.puts {
            replaced.extend(self.file_of(&key)?);
            let stored = if value.len() <= INLINE_LIMIT {
                [&[TAG_INLINE][..], &value].concat()
            } else {
                // A fresh name per write: the file being replaced must survive until this
                // batch is durable.
                let name = ulid::Ulid::new().to_string().to_ascii_lowercase();
                let path = self.value_dir.join(&name);
                let mut file = File::create(&path)?;
                std::io::Write::write_all(&mut file, &value)?;
                file.sync_data()?;
                new_files.push(path);
                [&[TAG_FILE][..], name.as_bytes()].concat()
            };
            sled_batch_ops.push((key, Some(stored)));
        }
        for key in batch.deletes {
            replaced.extend(self.file_of(&key)?);
            sled_batch_ops.push((key, None));
        }
        if !new_files.is_empty() {
            // The new files' directory entries must be durable before anything points at them.
            File::open(&self.value_dir)?.sync_all()?;
        }
        let record = wal_record::encode(&sled_batch_ops);
        {
            let mut wal = self.lock_wal()?;
            if wal.end + record.len() as u64 > WAL_CAPACITY_BYTES {
                // Everything logged so far is in sled's memory: making sled durable empties the log.
                self.checkpoint(&mut wal)?;
            }
            if record.len() as u64 <= WAL_CAPACITY_BYTES {
                let end = wal.end;
                std::os::unix::fs::FileExt::write_all_at(&wal.file, &record, end)?;
                wal.file.sync_data()?;
                wal.end += record.len() as u64;
                // The batch is durable and atomic in the log already (replayed at open if a crash
                // cuts this short), so sled need not make it atomic again: one insert at a time
                // costs a third of `apply_batch`.
                self.guard(|| {
                    for (key, value) in &sled_batch_ops {
                        match value {
                            Some(value) => self.db.insert(key.as_slice(), value.as_slice()).map(drop)?,
                            None => self.db.remove(key.as_slice()).map(drop)?,
                        }
                    }
                    Ok(())
                })?;
            } else {
                // Larger than the whole log: applied atomically and made durable by sled directly.
                let mut sled_batch = sled::Batch::default();
                for (key, value) in sled_batch_ops {
                    match value {
                        Some(value) => sled_batch.insert(key, value),
                        None => sled_batch.remove(key),
                    }
                }
                self.guard(|| self.db.apply_batch(sled_batch))?;
                self.checkpoint(&mut wal)?;
            }
        }
        if let Ok(mut unreferenced) = self.unreferenced.lock() {
            unreferenced.extend(replaced);
        }
        Ok(())
    }

    /// Batches are durable when `write` returns; what is left is removing the value files they
    /// replaced.
    fn sync(&self) -> Result<(), StoreError> {
        let unreferenced = match self.unreferenced.lock() {
            Ok(mut unreferenced) => std::mem::take(&mut *unreferenced),
            Err(_) => Vec::new(),
        };
        for path in unreferenced {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut pending = vec![self.path.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let metadata = entry.metadata()?;
                if metadata.is_dir() {
                    pending.push(entry.path());
                } else {
                    total += metadata.len();
                }
            }
        }
        Ok(total)
    }
}

/// What a write-ahead log holds: its complete records, where they end, and whether a record
/// torn by a crash follows them.
struct LogContents {
    batches: Vec<sled::Batch>,
    end: usize,
    torn: bool,
}

/// Decodes a whole write-ahead log. Pure; never panics. A damaged record with others after it
/// is an error: the log cannot be trusted past it, and dropping what follows would lose
/// acknowledged batches.
fn parse_log(log: &[u8]) -> Result<LogContents, StoreError> {
    let mut contents = LogContents { batches: Vec::new(), end: 0, torn: false };
    while contents.end < log.len() {
        match wal_record::decode(&log[contents.end..]) {
            Ok((batch, used)) => {
                contents.batches.push(batch);
                contents.end += used;
            }
            Err(wal_record::Damage::End) => break,
            // Cut short by a crash mid-append: never acknowledged, so dropped.
            Err(wal_record::Damage::Torn) => {
                contents.torn = true;
                break;
            }
            Err(wal_record::Damage::Corrupt) => {
                return Err(StoreError::Corrupt {
                    detail: format!("write-ahead log record {} is damaged and more follow it", contents.batches.len()),
                });
            }
        }
    }
    Ok(contents)
}

/// Checks a write-ahead log file's bytes as opening the store would: how many complete records
/// it holds and whether a torn one follows them. For the fuzz target and the audit tool.
pub fn inspect_write_ahead_log(log: &[u8]) -> Result<(usize, bool), StoreError> {
    parse_log(log).map(|contents| (contents.batches.len(), contents.torn))
}

/// The write-ahead log's record format:
/// `length u32 LE | checksum 8 (BLAKE3 of the body, truncated) | body`, where the body is a
/// sequence of `op u8 (1 put, 0 delete) | key length u32 LE | key | [value length u32 LE | value]`.
mod wal_record {
    const HEADER: usize = 12;

    pub enum Damage {
        /// Zeros: no record was written here.
        End,
        /// The log ends inside this record: a crash cut the append short.
        Torn,
        /// A complete record whose checksum or contents are wrong.
        Corrupt,
    }

    pub fn encode(ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, value) in ops {
            body.push(u8::from(value.is_some()));
            body.extend_from_slice(&(key.len() as u32).to_le_bytes());
            body.extend_from_slice(key);
            if let Some(value) = value {
                body.extend_from_slice(&(value.len() as u32).to_le_bytes());
                body.extend_from_slice(value);
            }
        }
        let mut record = Vec::with_capacity(HEADER + body.len());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&blake3::hash(&body).as_bytes()[..8]);
        record.extend_from_slice(&body);
        record
    }

    /// The first record of `log` as a sled batch, and how many bytes it took.
    pub fn decode(log: &[u8]) -> Result<(sled::Batch, usize), Damage> {
        let header = log.get(..HEADER).ok_or(Damage::Torn)?;
        if header.iter().all(|&b| b == 0) {
            return Err(Damage::End);
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let body = log.get(HEADER..HEADER + length).ok_or(Damage::Torn)?;
        if blake3::hash(body).as_bytes()[..8] != header[4..12] {
            // A torn record is the last one written: only zeros may follow it.
            let is_last = log[HEADER + length..].iter().all(|&b| b == 0);
            return Err(if is_last { Damage::Torn } else { Damage::Corrupt });
        }
        let mut batch = sled::Batch::default();
        let mut cursor = Cursor(body);
        while !cursor.0.is_empty() {
            let op = cursor.take(1)?[0];
            let key_length = cursor.length()?;
            let key = cursor.take(key_length)?.to_vec();
            match op {
                1 => {
                    let value_length = cursor.length()?;
                    batch.insert(key, cursor.take(value_length)?.to_vec());
                }
                0 => batch.remove(key),
                _ => return Err(Damage::Corrupt),
            }
        }
        Ok((batch, HEADER + length))
    }

    struct Cursor<'a>(&'a [u8]);

    impl<'a> Cursor<'a> {
        fn take(&mut self, count: usize) -> Result<&'a [u8], Damage> {
            let (taken, rest) = self.0.split_at_checked(count).ok_or(Damage::Corrupt)?;
            self.0 = rest;
            Ok(taken)
        }

        fn length(&mut self) -> Result<usize, Damage> {
            let bytes = self.take(4)?;
            Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &SledStore, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.put(key, value);
        store.write(batch).unwrap();
        store.sync().unwrap();
    }

    #[test]
    fn the_log_is_replayed_and_a_torn_tail_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path).unwrap();
            put(&store, b"a", b"1");
            put(&store, b"b", &[2; 9000]); // a value file
        }
        // Acknowledged batches are still only in the log (no checkpoint yet); a crash mid-append
        // leaves a partial record after them.
        let wal = path.join(WAL_FILE);
        let log = std::fs::read(&wal).unwrap();
        let end = log.len() - log.iter().rev().take_while(|&&b| b == 0).count();
        assert!(end > 0, "the acknowledged batches are in the log");
        let partial = wal_record::encode(&[(b"c".to_vec(), Some(vec![3; 50]))]);
        let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &partial[..partial.len() - 7], end as u64).unwrap();
        drop(file);
        let store = SledStore::open(&path).unwrap();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get(b"b").unwrap(), Some(vec![2; 9000]));
        assert_eq!(store.get(b"c").unwrap(), None);
        assert!(std::fs::read(&wal).unwrap().iter().all(|&b| b == 0), "replay ends with a checkpoint");
    }

    #[test]
    fn a_damaged_record_followed_by_others_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path).unwrap();
            put(&store, b"a", b"1");
            put(&store, b"b", b"2");
        }
        let wal = path.join(WAL_FILE);
        let mut log = std::fs::read(&wal).unwrap();
        log[14] ^= 1; // inside the first record's body
        std::fs::write(&wal, log).unwrap();
        assert!(matches!(SledStore::open(&path), Err(StoreError::Corrupt { .. })));
    }
}
