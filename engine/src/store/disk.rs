//! The file I/O of the write-ahead log, the value files and the witness, behind a small
//! interface: the real file system in the app, a simulated disk that loses, reorders and tears
//! unsynced writes in the crash tests (`store::sim`).
//!
//! The interface says only what the store relies on from the OS: a write is durable once
//! `sync_data` of its file returns `Ok`, and a directory entry (a new, removed or renamed file)
//! once `sync_dir` of its directory returns `Ok`. Nothing else is assumed: not the order in
//! which unsynced writes reach the disk, not that a write within one sector is atomic, not that
//! a failed `sync_data` can be retried.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file system operations the store's own files need.
pub(crate) trait Disk: Send + Sync {
    /// Opens `path` for reading and writing, creating it (empty) if missing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// The whole contents of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates (or truncates) `path`, writes `bytes` into it and syncs them.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Creates `files` in `dir`, in order, and makes them and their directory entries durable.
    /// A failure leaves the files before the one that failed (and maybe that one) in place.
    fn write_all_synced(&self, dir: &Path, files: &[(PathBuf, &[u8])]) -> io::Result<()> {
        for (path, bytes) in files {
            self.write_synced(path, bytes)?;
        }
        self.sync_dir(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub(crate) trait DiskFile: Send + Sync {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
}

/// The real file system. Everything is created owner-only (files 0600, directories 0700):
/// what it holds is sealed, but its sizes and timing are nobody else's business.
pub(crate) struct RealDisk;

/// The mode of the files and directories a workspace creates.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
pub(crate) const PRIVATE_DIR: u32 = 0o700;

impl Disk for RealDisk {
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let file = File::options().create(true).truncate(false).read(true).write(true).mode(PRIVATE_FILE).open(path)?;
        Ok(Box::new(file))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::options().create(true).truncate(true).write(true).mode(PRIVATE_FILE).open(path)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_data()
    }

    /// The files are written one after the other, then synced all at once, each on a thread
    /// of its own with the directory on another: the file system commits concurrent syncs
    /// together, where one after the other each waits for a commit of its own (a group commit
    /// writes a dozen value files).
    fn write_all_synced(&self, dir: &Path, files: &[(PathBuf, &[u8])]) -> io::Result<()> {
        let mut opened = Vec::with_capacity(files.len() + 1);
        for (path, bytes) in files {
            let mut file = File::options().create(true).truncate(true).write(true).mode(PRIVATE_FILE).open(path)?;
            io::Write::write_all(&mut file, bytes)?;
            opened.push(file);
        }
        opened.push(File::open(dir)?);
        std::thread::scope(|scope| {
            let syncing: Vec<_> = opened.iter().map(|file| scope.spawn(move || file.sync_all())).collect();
            syncing
                .into_iter()
                .try_for_each(|sync| sync.join().unwrap_or_else(|_| Err(io::Error::other("a sync panicked"))))
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(dir)
    }
}

impl DiskFile for File {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Replaces `dir/name` with `bytes` atomically: after a crash at any point the file holds its
/// old contents or the new ones, whole. (Write a temporary file, sync it, rename it over the
/// old one, sync the directory.)
pub(crate) fn replace_file(disk: &dyn Disk, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary: PathBuf = dir.join(format!("{name}.tmp"));
    disk.write_synced(&temporary, bytes)?;
    disk.rename(&temporary, &dir.join(name))?;
    disk.sync_dir(dir)
}
