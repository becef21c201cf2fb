//! The engine's storage interface: an ordered map of opaque keys to opaque (already sealed)
//! values, written in atomic batches, with an explicit durability barrier.
//!
//! Everything above this trait decides *what* to store; a backend only decides *how*. The
//! interface is deliberately narrow so that another embedded store could replace `sled`: the
//! contract suite in `engine/tests/store_contract.rs` is what any backend must pass.

pub(crate) mod disk;
mod read_only;
#[cfg(test)]
mod sim;
mod sled_store;
mod sled_tree;
mod values;
mod wal;

use std::path::{Path, PathBuf};

pub(crate) use disk::{RealDisk, replace_file};
pub use read_only::ReadOnlyStore;
pub use sled_store::{SledStore, inspect_write_ahead_log};

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One atomic write: all of it becomes visible (and, after [`ChunkStore::sync`], durable) or
/// none of it does.
#[derive(Default, Debug)]
pub struct WriteBatch {
    pub(crate) puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) deletes: Vec<Vec<u8>>,
}

impl WriteBatch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.puts.push((key.into(), value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.deletes.push(key.into());
    }

    /// Adds `other`'s puts and deletes after this batch's own.
    pub fn append(&mut self, other: WriteBatch) {
        self.puts.extend(other.puts);
        self.deletes.extend(other.deletes);
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// A key-value store the engine keeps its sealed chunks in.
///
/// Contract, checked by the shared suite:
/// - [`write`](Self::write) applies a batch atomically: a reader (and a reopen after a crash)
///   sees all of its puts and deletes or none of them; deletes apply after puts.
/// - Writes become visible to reads at once, in order.
/// - When [`sync`](Self::sync) returns `Ok`, every batch written before it survives a crash of
///   the process or the machine. Batches after the last completed `sync` may be lost, but only
///   as a suffix: never a later batch without an earlier one.
/// - Scans return keys in ascending byte order.
/// - Values of any size (a compacted snapshot is megabytes) have the same guarantees.
/// - A damaged store is an `Err` from opening it or from the read that hits the damage, never a
///   panic.
pub trait ChunkStore: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;

    /// The keys (not values) starting with `prefix`, in key order.
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// The durability barrier.
    fn sync(&self) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the store at {path} is open in another process")]
    Locked { path: PathBuf },
    #[error("the store's files are damaged: {detail}")]
    Corrupt { detail: String },
    #[error("store I/O failed: {source}")]
    Io {
        #[from]
        source: std::io::Error,
    },
    #[error("the disk holding the store at {path} is full: free some space and run the command again")]
    DiskFull { path: PathBuf },
    /// Fail-stop: after a failed write, sync or checkpoint the store's state in memory may be
    /// ahead of (or behind) its files, so it takes no further writes; reopening replays the
    /// write-ahead log and recovers every acknowledged batch.
    #[error("the store at {path} stopped after a failed write ({cause}); open it again to continue")]
    Stopped { path: PathBuf, cause: String },
    /// The store was opened read-only (for an audit): nothing is ever written to it.
    #[error("the store at {path} is open read-only")]
    ReadOnly { path: PathBuf },
}

impl StoreError {
    /// An I/O error on the store at `path`: a full disk says so, naming it.
    pub(crate) fn io(error: std::io::Error, path: &Path) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull {
            StoreError::DiskFull { path: path.to_owned() }
        } else {
            StoreError::Io { source: error }
        }
    }
}
