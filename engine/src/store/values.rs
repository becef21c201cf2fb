//! Value files: values above [`INLINE_LIMIT`] are written by the store to files in `values/`
//! (synced before the batch that points at them), and sled holds only a tagged pointer. sled
//! rewrites whole leaf pages (up to 17 entries) on every change, so large values inflate its
//! log many times over, and a page larger than a quarter of a segment goes to a side file sled
//! never syncs.
//!
//! A file is named after the log position of the record that points at it
//! (`GENERATION-END-INDEX`, fixed-width hex): the files of a record that never became durable
//! are the ones named with the log's end, found at open by name, without reading anything else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;
use super::disk::Disk;

/// Values up to this size live inline in sled: a full leaf page (17 entries) then stays far
/// below sled's side-file threshold of 128 KiB, and page rewrites stay cheap.
pub(super) const INLINE_LIMIT: usize = 4 * 1024;
pub(super) const DIR: &str = "values";
const TAG_INLINE: u8 = 0;
const TAG_FILE: u8 = 1;
/// `GENERATION-END-INDEX`: 16 + 1 + 8 + 1 + 8 hex digits and dashes.
const NAME_LEN: usize = 34;
/// Longest name a store may point at: today's names, or the ULIDs older stores used.
const MAX_NAME_LEN: usize = 40;

/// The length of a stored pointer to a value file.
pub(super) const POINTER_LEN: usize = 1 + NAME_LEN;

pub(super) fn inline(value: &[u8]) -> Vec<u8> {
    [&[TAG_INLINE][..], value].concat()
}

fn pointer(name: &str) -> Vec<u8> {
    [&[TAG_FILE][..], name.as_bytes()].concat()
}

/// The file a stored value points at, if it is a pointer (its name checked).
pub(super) fn file_of(stored: &[u8]) -> Result<Option<&str>, StoreError> {
    match stored.split_first() {
        Some((&TAG_FILE, name)) => checked(name).map(Some),
        Some((&TAG_INLINE, _)) => Ok(None),
        _ => Err(StoreError::Corrupt { detail: "untagged value".into() }),
    }
}

/// A name read from the store, checked before any path is built from it: a tampered store
/// must not make the store read or remove a file outside its directory.
fn checked(name: &[u8]) -> Result<&str, StoreError> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.iter().all(|&b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
    match std::str::from_utf8(name) {
        Ok(name) if valid => Ok(name),
        _ => Err(StoreError::Corrupt {
            detail: format!("a value points at {:?}, which is not a value file's name", String::from_utf8_lossy(name)),
        }),
    }
}

pub(super) struct Values {
    dir: PathBuf,
    disk: Arc<dyn Disk>,
}

impl Values {
    pub fn open(store: &Path, disk: Arc<dyn Disk>) -> io::Result<Self> {
        let dir = store.join(DIR);
        disk.create_dir_all(&dir)?;
        Ok(Self { dir, disk })
    }

    /// The value files of an existing store, for reading only (nothing is created).
    pub fn existing(store: &Path, disk: Arc<dyn Disk>) -> Self {
        Self { dir: store.join(DIR), disk }
    }

    /// Writes `values` to the files of the record to be logged at `end` in `generation`, one
    /// each, synced with their directory entries; returns the pointers to store in their place.
    pub fn write(&self, generation: u64, end: u64, values: &[Vec<u8>]) -> io::Result<Vec<Vec<u8>>> {
        let names: Vec<String> =
            (0..values.len()).map(|index| format!("{generation:016x}-{end:08x}-{index:08x}")).collect();
        let files: Vec<(PathBuf, &[u8])> =
            names.iter().zip(values).map(|(name, value)| (self.dir.join(name), value.as_slice())).collect();
        self.disk.write_all_synced(&self.dir, &files)?;
        Ok(names.iter().map(|name| pointer(name)).collect())
    }

    pub fn sync_dir(&self) -> io::Result<()> {
        self.disk.sync_dir(&self.dir)
    }

    /// Turns a stored value (tag + inline bytes or file name) into the value.
    pub fn resolve(&self, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(name) = file_of(stored)? else {
            return Ok(stored[1..].to_vec());
        };
        self.disk.read(&self.dir.join(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Corrupt { detail: format!("value file {name} is missing") },
            _ => e.into(),
        })
    }

    /// Removes a file nothing durable points at any more (already gone is fine).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match self.disk.remove(&self.dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes the files written for a record that was to be logged at `end` but never became
    /// durable (a crash or a failed write). A record's files are written in order, so the
    /// first missing index ends them.
    pub fn remove_unlogged(&self, generation: u64, end: u64) -> io::Result<()> {
        for index in 0.. {
            let path = self.dir.join(format!("{generation:016x}-{end:08x}-{index:08x}"));
            match self.disk.remove(&path) {
                Ok(()) => tracing::debug!(?path, "removed a value file no durable record points at"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_from_the_store_are_checked_before_use() {
        for bad in [&b"../../../etc/passwd"[..], b"/etc/passwd", b"a/b", b"..", b"", b"a\0b", &[b'a'; 41], b"UPPER"] {
            let stored = pointer(&String::from_utf8_lossy(bad));
            assert!(matches!(file_of(&stored), Err(StoreError::Corrupt { .. })), "{bad:?}");
        }
        assert_eq!(file_of(&pointer("01jq0000000000000000000000")).unwrap(), Some("01jq0000000000000000000000"));
        assert_eq!(file_of(&inline(b"x")).unwrap(), None);
    }

    #[test]
    fn a_pointer_has_a_fixed_length() {
        let dir = tempfile::tempdir().unwrap();
        let values = Values::open(dir.path(), Arc::new(super::super::disk::RealDisk)).unwrap();
        let big = vec![vec![7; INLINE_LIMIT + 1]; 4];
        let pointers = values.write(u64::MAX, 0xffff_ffff, &big).unwrap();
        assert!(pointers.iter().all(|pointer| pointer.len() == POINTER_LEN));
        for pointer in &pointers {
            assert_eq!(values.resolve(pointer).unwrap(), big[0]);
        }
    }
}
