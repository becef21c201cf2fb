//! [`ReadOnlyStore`]: a store opened without its write path, for auditing a workspace — even
//! one a running daemon holds — without changing a byte of it.
//!
//! sled cannot open its files without writing to them (every open after writes regenerates its
//! snapshot) and takes an exclusive lock on them, so the audited store is never opened: sled's
//! files are copied into a private directory of this process and opened there, and the copy is
//! removed when the store is dropped. The write-ahead log is read, never replayed into sled's
//! files: what it holds beyond sled is kept in memory, over the copy. Value files are read where
//! they are.
//!
//! **A consistent view of a live store.** The writer appends a batch to the log before sled
//! sees it, and starts a new log generation only after sled is durable. So the log is read
//! before and after the copy: if both readings are of the same generation, the copy holds sled's
//! state at the start of that generation plus some prefix of the second reading's records, and
//! replaying all of them over it (puts and deletes in order: idempotent) gives exactly the store
//! as of the second reading. If a checkpoint ran in between, the copy is taken again.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{PRIVATE_DIR, RealDisk};
use super::sled_tree::{SledTree, Tree};
use super::values::{self, Values};
use super::wal::{self, Op};
use super::{ChunkStore, Entry, StoreError, WriteBatch};

/// How many times the copy is taken again when the writer checkpointed while it was taken.
const COPY_ATTEMPTS: usize = 8;

/// The files of the store directory that are ours, not sled's: never copied.
const NOT_SLEDS: [&str; 4] = [wal::FILE, values::DIR, "reserve", "reserve.tmp"];

pub struct ReadOnlyStore {
    /// Declared first: sled closes its files before the copy is removed.
    tree: SledTree,
    /// What the write-ahead log holds beyond sled: a value, or `None` for a delete.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    values: Values,
    path: PathBuf,
    _copy: PrivateCopy,
}

impl ReadOnlyStore {
    /// Opens the store in directory `path` without writing to it (see the module docs).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |e| StoreError::io(e, path);
        if !path.join("db").is_file() {
            return Err(StoreError::Corrupt { detail: format!("{} holds no store", path.display()) });
        }
        let mut attempt = 0;
        let (copy, records) = loop {
            let before = read_log(path)?;
            let copy = PrivateCopy::of(path).map_err(io)?;
            let after = read_log(path)?;
            attempt += 1;
            if before.generation == after.generation || attempt == COPY_ATTEMPTS {
                break (copy, after.records);
            }
        };
        let tree = SledTree::open_copy(&copy.dir)?;
        let mut overlay = BTreeMap::new();
        for record in records {
            for op in record.ops {
                match op {
                    Op::Put(key, value) => overlay.insert(key, Some(value)),
                    Op::Delete(key) => overlay.insert(key, None),
                };
            }
        }
        tracing::debug!(overlay = overlay.len(), "store opened read-only");
        Ok(Self {
            tree,
            overlay,
            values: Values::existing(path, Arc::new(RealDisk)),
            path: path.to_owned(),
            _copy: copy,
        })
    }

    /// The stored (tagged) entries under `prefix`, sled's overlaid by the log's.
    fn stored_with_prefix(&self, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = self.tree.scan_prefix(prefix)?.into_iter().collect();
        for (key, value) in self.overlay.range(prefix.to_vec()..).take_while(|(key, _)| key.starts_with(prefix)) {
            match value {
                Some(value) => entries.insert(key.clone(), value.clone()),
                None => entries.remove(key),
            };
        }
        Ok(entries)
    }
}

impl ChunkStore for ReadOnlyStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let stored = match self.overlay.get(key) {
            Some(value) => value.clone(),
            None => self.tree.get(key)?,
        };
        stored.map(|stored| self.values.resolve(&stored)).transpose()
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.stored_with_prefix(prefix)?
            .into_iter()
            .map(|(key, stored)| Ok((key, self.values.resolve(&stored)?)))
            .collect()
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.stored_with_prefix(prefix)?.into_keys().collect())
    }

    fn write(&self, _batch: WriteBatch) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly { path: self.path.clone() })
    }

    /// Nothing is ever written, so everything is as durable as it was found.
    fn sync(&self) -> Result<(), StoreError> {
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

/// The write-ahead log as it is on disk now (empty if there is none yet).
fn read_log(store: &Path) -> Result<wal::Contents, StoreError> {
    let bytes = match std::fs::read(store.join(wal::FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io(e, store)),
    };
    wal::parse(&bytes)
}

/// A private copy of sled's files, removed when dropped.
struct PrivateCopy {
    dir: PathBuf,
}

impl PrivateCopy {
    fn of(store: &Path) -> std::io::Result<Self> {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(std::io::Error::other)?;
        let dir = std::env::temp_dir().join(format!("adiuva-read-only-{}", adiuva_model::hex::encode(&name)));
        std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(&dir)?;
        let copy = Self { dir };
        copy_tree(store, &copy.dir, true)?;
        Ok(copy)
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "could not remove the private copy of a store");
        }
    }
}

fn copy_tree(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && NOT_SLEDS.iter().any(|ours| name == *ours) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(&target)?;
            copy_tree(&entry.path(), &target, false)?;
        } else {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                // sled removed a file it no longer needs while the copy was taken.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
