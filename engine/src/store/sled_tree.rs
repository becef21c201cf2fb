//! The ordered map under the store: sled 0.34, the part of the store whose files we do not
//! write ourselves, behind [`Tree`] (which the crash tests also implement with a model of
//! what sled promises).
//!
//! sled habits handled here:
//! - `flush` writes with `sync_file_range`, which is not durable: a checkpoint also
//!   `fdatasync`s sled's file through a descriptor of our own.
//! - sled may panic on damaged files: every call is wrapped, so damage is a typed error.
//! - On a full disk sled cannot even open: every open after writes regenerates its snapshot,
//!   and a snapshot write that hits ENOSPC leaves an empty `snap.*.generating` file that sled
//!   then reads as its newest snapshot and refuses to open (sled issue #1527). A `.generating`
//!   file is never a finished snapshot (sled renames it once written), so leftovers are removed
//!   before every open; and a **reserve** file set aside while there was space is shrunk to
//!   make room when an open hits a full disk, so reads keep working.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use super::wal::Op;
use super::{Entry, StoreError};

/// The ordered map the write-ahead log is applied to.
pub(crate) trait Tree: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Applies one op (not durable until [`checkpoint`](Self::checkpoint)).
    fn apply(&self, op: &Op) -> Result<(), StoreError>;
    /// Applies `ops` atomically, also across a crash.
    fn apply_atomically(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Makes everything applied so far durable.
    fn checkpoint(&self) -> Result<(), StoreError>;
}

/// sled's page cache. Its `cache_capacity` counts on-disk bytes, not RAM; the engine keeps the
/// documents in memory itself, so a small cache is enough.
const CACHE_CAPACITY_BYTES: u64 = 32 * 1024 * 1024;

/// Space set aside for opening on a full disk: sled's snapshot of a large workspace is tens of
/// KiB, so each open on a full disk frees one step and several can run before it is used up.
const RESERVE_FILE: &str = "reserve";
const RESERVE_BYTES: u64 = 1024 * 1024;
const RESERVE_STEP: u64 = 256 * 1024;

pub(super) struct SledTree {
    db: sled::Db,
    /// sled's log file, for `fdatasync` after `flush`.
    log_file: File,
    path: PathBuf,
}

impl SledTree {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // We flush at checkpoints ourselves; a background flusher would only add I/O that
            // competes with the write-ahead log's `fdatasync`.
            .flush_every_ms(None);
        let db = loop {
            remove_unfinished_snapshots(path)?;
            match open_db(&config, path) {
                Err(StoreError::DiskFull { .. }) if release_reserve(path)? => continue,
                opened => break opened?,
            }
        };
        let tree = Self::with_log_file(db, path)?;
        set_aside_reserve(path);
        Ok(tree)
    }

    /// Opens sled's files copied into `path` (a read-only open's private copy): no reserve is
    /// set aside, since nothing but this process reads the copy and it is removed after.
    pub fn open_copy(path: &Path) -> Result<Self, StoreError> {
        let config = sled::Config::new().path(path).cache_capacity(CACHE_CAPACITY_BYTES).flush_every_ms(None);
        remove_unfinished_snapshots(path)?;
        Self::with_log_file(open_db(&config, path)?, path)
    }

    fn with_log_file(db: sled::Db, path: &Path) -> Result<Self, StoreError> {
        let log_file = File::open(path.join("db")).map_err(|e| StoreError::io(e, path))?;
        Ok(Self { db, log_file, path: path.to_owned() })
    }

    fn guard<T>(&self, operation: impl FnOnce() -> sled::Result<T>) -> Result<T, StoreError> {
        guard(&self.path, operation)
    }
}

fn guard<T>(path: &Path, operation: impl FnOnce() -> sled::Result<T>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(operation))
        .map_err(|panic| StoreError::Corrupt { detail: panic_text(&panic) })?
        .map_err(|error| map_error(error, path))
}

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.guard(|| self.db.get(key))?.map(|value| value.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let entries = self.guard(|| self.db.scan_prefix(prefix).collect::<sled::Result<Vec<_>>>())?;
        Ok(entries.into_iter().map(|(key, value)| (key.to_vec(), value.to_vec())).collect())
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = self.guard(|| self.db.scan_prefix(prefix).keys().collect::<sled::Result<Vec<_>>>())?;
        Ok(keys.into_iter().map(|key| key.to_vec()).collect())
    }

    fn apply(&self, op: &Op) -> Result<(), StoreError> {
        self.guard(|| match op {
            Op::Put(key, value) => self.db.insert(key.as_slice(), value.as_slice()).map(drop),
            Op::Delete(key) => self.db.remove(key.as_slice()).map(drop),
        })
    }

    fn apply_atomically(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(key, value) => batch.insert(key.as_slice(), value.as_slice()),
                Op::Delete(key) => batch.remove(key.as_slice()),
            }
        }
        self.guard(|| self.db.apply_batch(batch))
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.guard(|| self.db.flush())?;
        self.log_file.sync_data().map_err(|e| StoreError::io(e, &self.path))
    }
}

/// Removes `snap.*.generating` files: snapshots sled began and never finished.
fn remove_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(e, path)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(e, path))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a snapshot sled left unfinished");
            std::fs::remove_file(entry.path()).map_err(|e| StoreError::io(e, path))?;
        }
    }
    Ok(())
}

/// Shrinks the reserve by one step; `false` once nothing is left to free.
fn release_reserve(path: &Path) -> Result<bool, StoreError> {
    let reserve = path.join(RESERVE_FILE);
    let size = match std::fs::metadata(&reserve) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(e, path)),
    };
    let shrunk = size.saturating_sub(RESERVE_STEP);
    tracing::warn!(path = %path.display(), left = shrunk, "the disk is full: using the store's reserved space");
    let file = File::options().write(true).open(&reserve).map_err(|e| StoreError::io(e, path))?;
    if shrunk == 0 {
        drop(file);
        std::fs::remove_file(&reserve).map_err(|e| StoreError::io(e, path))?;
    } else {
        file.set_len(shrunk).map_err(|e| StoreError::io(e, path))?;
    }
    Ok(size > 0)
}

/// (Re)creates the reserve, real bytes, while there is space for all of it; on a fuller disk it
/// waits for a later open (never taking the disk's last bytes itself).
fn set_aside_reserve(path: &Path) {
    let reserve = path.join(RESERVE_FILE);
    if std::fs::metadata(&reserve).is_ok_and(|metadata| metadata.len() == RESERVE_BYTES) {
        return;
    }
    let temporary = path.join(format!("{RESERVE_FILE}.tmp"));
    let written = (|| {
        let mut file =
            File::options().create(true).truncate(true).write(true).mode(super::disk::PRIVATE_FILE).open(&temporary)?;
        std::io::Write::write_all(&mut file, &vec![0; RESERVE_BYTES as usize])?;
        file.sync_all()?;
        std::fs::rename(&temporary, &reserve)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        tracing::warn!(%error, "could not set aside the store's reserve space; will retry at the next open");
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
        match guard(path, || config.open()) {
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
        sled::Error::Io(io) => StoreError::io(io, path),
        other => StoreError::Corrupt { detail: other.to_string() },
    }
}
