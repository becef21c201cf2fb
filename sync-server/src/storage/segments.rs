//! The embedded backend's blob files: append-only **segments** (`blobs/seg-NNNNNNNN`), each a run
//! of records that carry a blob *and* its place (workspace, account, sequence number), so the
//! segments alone can rebuild the index after a crash.
//!
//! A record:
//!
//! ```text
//! magic "ADB1" | check [8] | seq u64 | size u32 | workspace_len u8 | account_len u8 | id [32]
//!              | workspace | account | bytes (size)
//! ```
//!
//! `check` is BLAKE3 over everything after it except the bytes, whose own check is their id
//! (BLAKE3 of the bytes). Integers are little-endian. A record is durable once the segment's
//! `fdatasync` returned; a crash may leave a torn record at a segment's end, which [`scan`]
//! reports as the end of the valid part.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{BlobId, Result, StorageError};

const MAGIC: &[u8; 4] = b"ADB1";
/// Fixed part of a record before the workspace and account names.
const FIXED: usize = 4 + 8 + 8 + 4 + 1 + 1 + 32;
/// A segment is closed once it holds this much; smaller segments would mean more files, larger
/// ones a longer scan after a crash (only the part after the last checkpoint is scanned).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A blob record's place and content, as written or as found by [`scan`].
#[derive(Debug)]
pub struct Record<'a> {
    pub seq: u64,
    pub id: BlobId,
    pub workspace: &'a str,
    pub account: &'a str,
    pub bytes: &'a [u8],
}

/// Appends `record` to `buffer`; returns the offset of its bytes within the encoding.
pub fn encode(record: &Record<'_>, buffer: &mut Vec<u8>) -> u64 {
    let start = buffer.len();
    buffer.extend_from_slice(MAGIC);
    buffer.extend_from_slice(&[0u8; 8]);
    buffer.extend_from_slice(&record.seq.to_le_bytes());
    buffer.extend_from_slice(&(record.bytes.len() as u32).to_le_bytes());
    // Names are at most 64 bytes (`valid_name`).
    buffer.push(record.workspace.len() as u8);
    buffer.push(record.account.len() as u8);
    buffer.extend_from_slice(&record.id.0);
    buffer.extend_from_slice(record.workspace.as_bytes());
    buffer.extend_from_slice(record.account.as_bytes());
    let check = blake3::hash(&buffer[start + 12..]);
    buffer[start + 4..start + 12].copy_from_slice(&check.as_bytes()[..8]);
    let body = buffer.len() - start;
    buffer.extend_from_slice(record.bytes);
    body as u64
}

/// Calls `found(offset_of_bytes, record)` for each valid record of `data` from its start, and
/// returns the length of the valid prefix (where a torn or foreign tail begins).
pub fn scan(data: &[u8], mut found: impl FnMut(u64, Record<'_>) -> Result<()>) -> Result<usize> {
    let mut at = 0usize;
    while let Some((end, body, record)) = parse(&data[at..]) {
        found((at + body) as u64, record)?;
        at += end;
    }
    Ok(at)
}

/// One record at the start of `data`: (its length, the offset of its bytes, the record).
fn parse(data: &[u8]) -> Option<(usize, usize, Record<'_>)> {
    let fixed = data.get(..FIXED)?;
    if &fixed[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(fixed[12..20].try_into().ok()?);
    let size = u32::from_le_bytes(fixed[20..24].try_into().ok()?) as usize;
    let (workspace_len, account_len) = (fixed[24] as usize, fixed[25] as usize);
    let id = BlobId(fixed[26..58].try_into().ok()?);
    let body = FIXED + workspace_len + account_len;
    let header = data.get(..body)?;
    if blake3::hash(&header[12..]).as_bytes()[..8] != fixed[4..12] {
        return None;
    }
    let bytes = data.get(body..body + size)?;
    if BlobId::of(bytes) != id {
        return None;
    }
    let workspace = std::str::from_utf8(&header[FIXED..FIXED + workspace_len]).ok()?;
    let account = std::str::from_utf8(&header[FIXED + workspace_len..body]).ok()?;
    Some((body + size, body, Record { seq, id, workspace, account, bytes }))
}

/// The segment directory: reads from any segment, and the names in it.
pub struct Segments {
    dir: PathBuf,
    open: RwLock<HashMap<u32, Arc<File>>>,
}

impl Segments {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StorageError::io("creating the blob directory"))?;
        Ok(Self { dir: dir.to_owned(), open: RwLock::new(HashMap::new()) })
    }

    pub fn path(&self, number: u32) -> PathBuf {
        self.dir.join(format!("seg-{number:08}"))
    }

    /// The numbers of the segments present, ascending.
    pub fn list(&self) -> Result<Vec<u32>> {
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(StorageError::io("listing the blob directory"))? {
            let entry = entry.map_err(StorageError::io("listing the blob directory"))?;
            if let Some(number) =
                entry.file_name().to_str().and_then(|n| n.strip_prefix("seg-")).and_then(|n| n.parse().ok())
            {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Reads `size` bytes at `offset` of segment `number`.
    pub fn read(&self, number: u32, offset: u64, size: u64) -> Result<Vec<u8>> {
        let file = self.file(number)?;
        let mut bytes = vec![0u8; size as usize];
        file.read_exact_at(&mut bytes, offset).map_err(StorageError::io("reading a blob"))?;
        Ok(bytes)
    }

    fn file(&self, number: u32) -> Result<Arc<File>> {
        if let Some(file) = self.open.read().unwrap_or_else(|p| p.into_inner()).get(&number) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.path(number)).map_err(StorageError::io("opening a blob segment"))?);
        self.open.write().unwrap_or_else(|p| p.into_inner()).insert(number, file.clone());
        Ok(file)
    }

    /// Opens segment `number` for appending, creating it (and making its name durable) if needed.
    pub fn open_for_append(&self, number: u32) -> Result<File> {
        let path = self.path(number);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::io("opening a blob segment for writing"))?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        Ok(file)
    }
}

/// Makes the directory's entries (a new segment's name) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(StorageError::io("syncing the blob directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(seq: u64, bytes: &'a [u8]) -> Record<'a> {
        Record { seq, id: BlobId::of(bytes), workspace: "ws-1", account: "acct", bytes }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_scan() {
        let mut buffer = Vec::new();
        let first = encode(&record(1, b"one"), &mut buffer);
        let second_start = buffer.len();
        encode(&record(2, b"second blob"), &mut buffer);
        let full = buffer.len();
        let mut seen = Vec::new();
        let valid = scan(&buffer, |offset, r| {
            seen.push((offset, r.seq, r.bytes.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(valid, full);
        assert_eq!(seen[0], (first, 1, b"one".to_vec()));
        assert_eq!(seen[1].1, 2);
        for cut in second_start..full {
            let valid = scan(&buffer[..cut], |_, _| Ok(())).unwrap();
            assert_eq!(valid, second_start, "cut at {cut}");
        }
        let mut flipped = buffer.clone();
        flipped[second_start + 14] ^= 1;
        assert_eq!(scan(&flipped, |_, _| Ok(())).unwrap(), second_start);
        let mut flipped = buffer;
        flipped[full - 1] ^= 1;
        assert_eq!(scan(&flipped, |_, _| Ok(())).unwrap(), second_start);
    }
}
