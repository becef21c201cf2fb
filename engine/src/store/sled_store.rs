//! [`ChunkStore`] on sled 0.34.
//!
//! Two sled habits shape this file (both measured, see `TOOLING.md`):
//! - `Db::flush` writes with `sync_file_range`, which neither syncs file metadata nor flushes the
//!   disk's cache. The durability barrier is therefore `flush` *and then* `fdatasync` of sled's
//!   log file, through a descriptor of our own.
//! - sled may panic on damaged files instead of returning an error. Opening is wrapped so a
//!   damaged store is a typed [`StoreError::Corrupt`], never a crash of the app.
//!
//! Values stay well under sled's ~128 KiB threshold for separate blob files (which it writes
//! without any sync): the engine splits snapshots into parts of at most 64 KiB.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use super::{ChunkStore, StoreError, WriteBatch};

/// sled's page cache. Its `cache_capacity` counts on-disk bytes, not RAM; the engine keeps the
/// documents in memory itself, so a small cache is enough.
const CACHE_CAPACITY_BYTES: u64 = 32 * 1024 * 1024;

pub struct SledStore {
    db: sled::Db,
    /// sled's log file, for `fdatasync` after `flush`.
    log_file: File,
    path: PathBuf,
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
        if created {
            // Make the new directory entries themselves durable.
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
            File::open(path)?.sync_all()?;
        }
        Ok(Self { db, log_file, path: path.to_owned() })
    }

    fn guard<T>(&self, operation: impl FnOnce() -> sled::Result<T>) -> Result<T, StoreError> {
        catch_unwind(AssertUnwindSafe(operation))
            .map_err(|panic| StoreError::Corrupt { detail: panic_text(&panic) })?
            .map_err(|error| map_error(error, &self.path))
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

fn collect(iter: sled::Iter, with_values: bool) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    iter.map(|entry| entry.map(|(key, value)| (key.to_vec(), if with_values { value.to_vec() } else { Vec::new() })))
        .collect()
}

impl ChunkStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.guard(|| self.db.get(key).map(|value| value.map(|v| v.to_vec())))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.guard(|| collect(self.db.scan_prefix(prefix), true))
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let entries = self.guard(|| collect(self.db.scan_prefix(prefix), false))?;
        Ok(entries.into_iter().map(|(key, _)| key).collect())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.puts {
            sled_batch.insert(key, value);
        }
        for key in batch.deletes {
            sled_batch.remove(key);
        }
        self.guard(|| self.db.apply_batch(sled_batch))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.guard(|| self.db.flush())?;
        self.log_file.sync_data()?;
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
