//! [`ChunkStore`] on sled 0.34, made durable, atomic and fail-stop by a write-ahead log of our
//! own.
//!
//! - sled's `flush` is not durable and costs two device round trips once followed by the
//!   `fdatasync` it needs. So [`write`](ChunkStore::write) appends the batch to our log (`wal`)
//!   and `fdatasync`s it *before* handing it to sled (whose background writes would otherwise
//!   compete with that `fdatasync`): a batch is durable when `write` returns. The log also
//!   makes the batch atomic, so sled gets it one insert at a time (a third of the cost of its
//!   own `apply_batch`). sled is made durable only at checkpoints, when the log is full, which
//!   then starts its next generation; at open, whatever the log holds is replayed into sled
//!   (idempotent: puts and deletes in order) and the log continues from its end.
//! - Large values live in files of our own (`values`), synced before the record pointing at
//!   them.
//! - **Fail-stop.** Once a write, `fdatasync`, checkpoint or sled insert has failed, the files
//!   and memory may disagree (Linux may even have dropped the unsynced pages a failed
//!   `fdatasync` covered, and report success next time), so the store takes no further writes
//!   until it is opened again, which recovers exactly what the log holds. If sled was left
//!   holding part of a batch, reads stop too: they would see half a batch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::disk::{Disk, RealDisk};
use super::sled_tree::{SledTree, Tree};
use super::values::{self, Values};
use super::wal::{self, Op, Record, Wal};
use super::{ChunkStore, Entry, StoreError, WriteBatch};

pub struct SledStore {
    tree: Box<dyn Tree>,
    path: PathBuf,
    values: Values,
    wal: Mutex<Wal>,
    /// Value files that durable batches no longer point at; removed at the next barrier.
    unreferenced: Mutex<Vec<String>>,
    /// Set by the first failed write; only opening the store again clears it.
    stop: OnceLock<Stop>,
}

struct Stop {
    cause: String,
    /// Failed for want of space: reported as such, not as a failure.
    disk_full: bool,
    /// sled may hold part of a batch: reads would see it half applied.
    reads: bool,
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let tree = SledTree::open(path)?;
        Self::open_with(Box::new(tree), Arc::new(RealDisk), path, wal::CAPACITY)
    }

    /// Opens the store over any tree and disk (the crash tests give simulated ones).
    pub(crate) fn open_with(
        tree: Box<dyn Tree>,
        disk: Arc<dyn Disk>,
        path: &Path,
        wal_capacity: u64,
    ) -> Result<Self, StoreError> {
        let io = |e| StoreError::io(e, path);
        let values = Values::open(path, disk.clone()).map_err(io)?;
        let (wal, contents) = Wal::open(&*disk, &path.join(wal::FILE), wal_capacity)?;
        for record in &contents.records {
            tree.apply_atomically(&record.ops)?;
        }
        tracing::debug!(replayed = contents.records.len(), torn = contents.torn, "write-ahead log replayed");
        if let Some(generation) = contents.generation {
            values.remove_unlogged(generation, contents.end).map_err(io)?;
        }
        let store = Self {
            tree,
            path: path.to_owned(),
            values,
            wal: Mutex::new(wal),
            unreferenced: Mutex::new(contents.records.into_iter().flat_map(|record| record.unreferenced).collect()),
            stop: OnceLock::new(),
        };
        // sled may hold a batch that is only in the page cache (a process that stopped after a
        // failed write left it there): made durable before anything builds on it.
        let settled = match contents.generation {
            Some(_) => store.tree.checkpoint(),
            // A new store, or a log of an older format: started afresh once what it held is in
            // sled, durably.
            None => (|| {
                store.tree.checkpoint()?;
                store.lock_wal()?.reset().map_err(io)?;
                disk.sync_dir(path).map_err(io)?;
                path.parent().map_or(Ok(()), |parent| disk.sync_dir(parent).map_err(io))
            })(),
        };
        match settled {
            Ok(()) => Ok(store),
            // Reads need no space: open read-only until there is some.
            Err(error @ StoreError::DiskFull { .. }) => {
                tracing::warn!(%error, "the store opens read-only");
                let _ = store.stop.set(Stop { cause: error.to_string(), disk_full: true, reads: false });
                Ok(store)
            }
            Err(error) => Err(error),
        }
    }

    fn io(&self, error: std::io::Error) -> StoreError {
        StoreError::io(error, &self.path)
    }

    fn stopped(&self, stop: &Stop) -> StoreError {
        if stop.disk_full {
            StoreError::DiskFull { path: self.path.clone() }
        } else {
            StoreError::Stopped { path: self.path.clone(), cause: stop.cause.clone() }
        }
    }

    /// Whether the store takes writes (the crash tests ask, after opening it).
    #[cfg(test)]
    pub(super) fn writable(&self) -> bool {
        self.stop.get().is_none()
    }

    fn readable(&self) -> Result<(), StoreError> {
        match self.stop.get() {
            Some(stop) if stop.reads => Err(self.stopped(stop)),
            _ => Ok(()),
        }
    }

    /// Logs the batch, then applies it to sled. `sled_touched` tells the caller, on failure,
    /// whether sled may hold part of it.
    fn write_logged(&self, wal: &mut Wal, batch: WriteBatch, sled_touched: &mut bool) -> Result<(), StoreError> {
        let mut record = Record::default();
        for key in batch.puts.iter().map(|(key, _)| key).chain(&batch.deletes) {
            if let Some(stored) = self.tree.get(key)?
                && let Some(name) = values::file_of(&stored)?
            {
                record.unreferenced.push(name.to_owned());
            }
        }
        // Large values get their pointers once the log position their files are named after
        // is known.
        let mut large = Vec::new();
        for (key, value) in batch.puts {
            if value.len() <= values::INLINE_LIMIT {
                record.ops.push(Op::Put(key, values::inline(&value)));
            } else {
                large.push((record.ops.len(), value));
                record.ops.push(Op::Put(key, Vec::new()));
            }
        }
        record.ops.extend(batch.deletes.into_iter().map(Op::Delete));
        let length = record.len() + (large.len() * values::POINTER_LEN) as u64;
        let logged = wal.can_hold(length);
        if !wal.fits(length) {
            self.checkpoint(wal)?;
        }
        // Files of a batch too large to log are named at position 0, which no record has.
        let end = if logged { wal.end } else { 0 };
        if !large.is_empty() {
            // The files and their directory entries are durable before anything points at them.
            let (places, values): (Vec<usize>, Vec<Vec<u8>>) = large.into_iter().unzip();
            let pointers = self.values.write(wal.generation, end, &values).map_err(|e| self.io(e))?;
            for (at, pointer) in places.into_iter().zip(pointers) {
                if let Some(Op::Put(_, stored)) = record.ops.get_mut(at) {
                    *stored = pointer;
                }
            }
        }
        *sled_touched = true;
        if logged {
            wal.append(&record).map_err(|e| self.io(e))?;
            for op in &record.ops {
                self.tree.apply(op)?;
            }
        } else {
            // Larger than the whole log, which the checkpoint above emptied: no older record can
            // replay over it. sled applies it atomically and makes it durable itself.
            self.tree.apply_atomically(&record.ops)?;
            self.tree.checkpoint()?;
        }
        self.lock_unreferenced()?.extend(record.unreferenced);
        Ok(())
    }

    /// Makes sled durable and empties the log.
    fn checkpoint(&self, wal: &mut Wal) -> Result<(), StoreError> {
        self.tree.checkpoint()?;
        // The records naming these files are about to leave the log: remove them now, durably.
        let unreferenced = std::mem::take(&mut *self.lock_unreferenced()?);
        for name in &unreferenced {
            self.values.remove(name).map_err(|e| self.io(e))?;
        }
        if !unreferenced.is_empty() {
            self.values.sync_dir().map_err(|e| self.io(e))?;
        }
        wal.next_generation().map_err(|e| self.io(e))
    }

    fn lock_wal(&self) -> Result<std::sync::MutexGuard<'_, Wal>, StoreError> {
        self.wal.lock().map_err(|_| StoreError::Corrupt { detail: "write-ahead log lock poisoned".into() })
    }

    fn lock_unreferenced(&self) -> Result<std::sync::MutexGuard<'_, Vec<String>>, StoreError> {
        self.unreferenced.lock().map_err(|_| StoreError::Corrupt { detail: "value file list lock poisoned".into() })
    }
}

impl ChunkStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.readable()?;
        match self.tree.get(key)? {
            Some(stored) => self.values.resolve(&stored).map(Some),
            None => Ok(None),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.readable()?;
        let entries = self.tree.scan_prefix(prefix)?;
        entries.into_iter().map(|(key, stored)| Ok((key, self.values.resolve(&stored)?))).collect()
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.readable()?;
        self.tree.keys_with_prefix(prefix)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wal = self.lock_wal()?;
        if let Some(stop) = self.stop.get() {
            return Err(self.stopped(stop));
        }
        let mut sled_touched = false;
        let written = self.write_logged(&mut wal, batch, &mut sled_touched);
        if let Err(error) = &written {
            tracing::error!(%error, path = %self.path.display(), "a store write failed: the store takes no more writes until it is opened again");
            let disk_full = matches!(error, StoreError::DiskFull { .. });
            let _ = self.stop.set(Stop { cause: error.to_string(), disk_full, reads: sled_touched });
        }
        written
    }

    /// Batches are durable when `write` returns; what is left is removing the value files they
    /// replaced.
    fn sync(&self) -> Result<(), StoreError> {
        let unreferenced = std::mem::take(&mut *self.lock_unreferenced()?);
        for name in unreferenced {
            self.values.remove(&name).map_err(|e| self.io(e))?;
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

/// Checks a write-ahead log file's bytes as opening the store would: how many complete records
/// it holds and whether a torn one follows them. For the fuzz target and the audit tool.
pub fn inspect_write_ahead_log(log: &[u8]) -> Result<(usize, bool), StoreError> {
    wal::parse(log).map(|contents| (contents.records.len(), contents.torn))
}

#[cfg(test)]
mod tests {
    // Tests fail loudly: unwrapping is how they assert.
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A value-file pointer altered to name a path outside the store reads nothing there and,
    /// when the entry is replaced, removes nothing there: it is a typed error.
    #[test]
    fn a_tampered_value_file_name_reaches_nothing_outside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"not the store's").unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let mut pointer = vec![1];
        pointer.extend_from_slice(b"../../outside");
        store.tree.apply(&Op::Put(b"k".to_vec(), pointer)).unwrap();
        assert!(matches!(store.get(b"k"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.scan_prefix(b""), Err(StoreError::Corrupt { .. })));
        let mut batch = WriteBatch::default();
        batch.delete(b"k".to_vec());
        assert!(matches!(store.write(batch), Err(StoreError::Corrupt { .. })));
        store.sync().unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"not the store's");
    }
}
