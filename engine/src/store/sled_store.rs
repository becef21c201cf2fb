//! [`ChunkStore`] on sled 0.34.
//!
//! Three sled habits shape this file (measured, see `TOOLING.md` and `BENCHMARKS.md`):
//! - `Db::flush` writes with `sync_file_range`, which neither syncs file metadata nor flushes the
//!   disk's cache. The durability barrier is therefore `flush` *and then* `fdatasync` of sled's
//!   log file, through a descriptor of our own.
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
        let db = catch_unwind(AssertUnwindSafe(|| config.open()))
            .map_err(|panic| StoreError::Corrupt { detail: panic_text(&panic) })?
            .map_err(|error| map_error(error, path))?;
        let log_file = File::open(path.join("db"))?;
        let value_dir = path.join(VALUE_DIR);
        std::fs::create_dir_all(&value_dir)?;
        if created {
            // Make the new directory entries themselves durable.
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
            File::open(path)?.sync_all()?;
        }
        let store = Self { db, log_file, path: path.to_owned(), value_dir, unreferenced: Mutex::new(Vec::new()) };
        store.remove_orphan_files()?;
        Ok(store)
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
        let mut sled_batch = sled::Batch::default();
        let mut replaced = Vec::new();
        let mut new_files = Vec::new();
        for (key, value) in batch.puts {
            replaced.extend(self.file_of(&key)?);
            if value.len() <= INLINE_LIMIT {
                sled_batch.insert(key, [&[TAG_INLINE][..], &value].concat());
            } else {
                // A fresh name per write: the file being replaced must survive until this
                // batch is durable.
                let name = ulid::Ulid::new().to_string().to_ascii_lowercase();
                let path = self.value_dir.join(&name);
                let mut file = File::create(&path)?;
                std::io::Write::write_all(&mut file, &value)?;
                file.sync_data()?;
                new_files.push(path);
                sled_batch.insert(key, [&[TAG_FILE][..], name.as_bytes()].concat());
            }
        }
        for key in batch.deletes {
            replaced.extend(self.file_of(&key)?);
            sled_batch.remove(key);
        }
        if !new_files.is_empty() {
            // The new files' directory entries must be durable before anything points at them.
            File::open(&self.value_dir)?.sync_all()?;
        }
        self.guard(|| self.db.apply_batch(sled_batch))?;
        if let Ok(mut unreferenced) = self.unreferenced.lock() {
            unreferenced.extend(replaced);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.guard(|| self.db.flush())?;
        self.log_file.sync_data()?;
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
