//! The write-ahead log: its file format, its appends and its generations.
//!
//! The file is preallocated (real zeros, so an append never allocates blocks or changes the
//! file's size, and its `fdatasync` never has to journal metadata) and then overwritten in
//! place. It starts with two header slots, each in its own 512-byte sector, holding the log's
//! **generation**; records follow from [`RECORDS_START`]:
//! `length u32 LE | checksum 8 | body`, the checksum being BLAKE3 of the generation and the
//! body, and the body a sequence of
//! `op u8 (1 put, 0 delete, 2 unreferenced value file) | key length u32 LE | key |
//! [value length u32 LE | value]`.
//!
//! A checkpoint (sled made durable) empties the log by starting the next generation: one
//! header write and one `fdatasync`, into the slot the current generation does not use, so a
//! torn header write leaves the previous one whole. Records of an older generation, and any
//! bytes a failed or torn write left behind, fail the checksum of the current one: the log ends
//! at the first record that does not check out, wherever it was cut (a torn record was never
//! acknowledged). Only a damaged record that a valid record follows is corruption.
//!
//! Logs written before generations existed (no header) are read with the checksum of the body
//! alone from offset 0, replayed, and then continued in the current format.

use std::path::Path;

use super::StoreError;
use super::disk::{Disk, DiskFile};

pub(super) const FILE: &str = "wal";
/// The log's preallocated size: a checkpoint happens when the next record would not fit.
pub(super) const CAPACITY: u64 = 1024 * 1024;
const MAGIC: &[u8; 8] = b"adiuvaW2";
const SLOTS: [usize; 2] = [0, 512];
const SLOT_BYTES: usize = 24;
pub(super) const RECORDS_START: u64 = 1024;
const RECORD_HEADER: usize = 12;

/// One change to the ordered map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// One logged batch: what sled is to apply, and the value files it leaves unreferenced (removed
/// once the record is durable, and again at replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Record {
    pub ops: Vec<Op>,
    pub unreferenced: Vec<String>,
}

impl Record {
    /// The encoded length of this record.
    pub fn len(&self) -> u64 {
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => 9 + key.len() + value.len(),
                Op::Delete(key) => 5 + key.len(),
            })
            .sum();
        let files: usize = self.unreferenced.iter().map(|name| 5 + name.len()).sum();
        (RECORD_HEADER + ops + files) as u64
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.len() as usize - RECORD_HEADER);
        let mut field = |op: u8, key: &[u8], value: Option<&[u8]>| {
            body.push(op);
            body.extend_from_slice(&(key.len() as u32).to_le_bytes());
            body.extend_from_slice(key);
            if let Some(value) = value {
                body.extend_from_slice(&(value.len() as u32).to_le_bytes());
                body.extend_from_slice(value);
            }
        };
        for op in &self.ops {
            match op {
                Op::Put(key, value) => field(1, key, Some(value)),
                Op::Delete(key) => field(0, key, None),
            }
        }
        for name in &self.unreferenced {
            field(2, name.as_bytes(), None);
        }
        body
    }
}

/// What a log file holds.
#[derive(Debug)]
pub(super) struct Contents {
    /// `None` for a log without a header (empty, or written before generations).
    pub generation: Option<u64>,
    pub records: Vec<Record>,
    /// Where the next record goes.
    pub end: u64,
    /// Whether bytes that are not a record follow the last one (a torn or failed append).
    pub torn: bool,
}

/// Decodes a whole log file. Pure; never panics.
pub(super) fn parse(log: &[u8]) -> Result<Contents, StoreError> {
    let generation = SLOTS.iter().filter_map(|&slot| read_slot(log.get(slot..slot + SLOT_BYTES)?)).max();
    let damaged = |detail: &str| Err(StoreError::Corrupt { detail: format!("write-ahead log: {detail}") });
    let start = match generation {
        Some(generation) => {
            // Records of the next generation exist only once its header was durable. A file cut
            // short before the records holds none.
            let records = log.get(RECORDS_START as usize..).unwrap_or_default();
            if matches!(decode(records, Some(generation + 1)), Decoded::Record(..)) {
                return damaged("its header is damaged");
            }
            RECORDS_START as usize
        }
        // A header with one part damaged (its magic, or its generation or checksum).
        None if SLOTS
            .iter()
            .filter_map(|&slot| log.get(slot..slot + SLOT_BYTES))
            .any(|slot| &slot[..8] == MAGIC || slot_checksum(&slot[8..16]) == slot[16..24]) =>
        {
            return damaged("its header is damaged");
        }
        None => 0,
    };
    let mut contents = Contents { generation, records: Vec::new(), end: start as u64, torn: false };
    let mut position = start;
    while position < log.len() {
        match decode(&log[position..], generation) {
            Decoded::Record(record, used) => {
                contents.records.push(record);
                position += used;
            }
            Decoded::End => break,
            Decoded::Damaged { length } => {
                // Torn (or left by a failed append) unless a valid record follows it: then it
                // was acknowledged once, and what follows cannot be trusted either. The next
                // record is looked for where the length field says, or would say with any one
                // of its bits flipped.
                let lengths = length
                    .into_iter()
                    .flat_map(|length| std::iter::once(length).chain((0..32).map(move |bit| length ^ (1 << bit))));
                let followed = lengths.filter_map(|length| RECORD_HEADER.checked_add(length as usize)).any(|next| {
                    log.get(position + next..)
                        .is_some_and(|rest| matches!(decode(rest, generation), Decoded::Record(..)))
                });
                if followed {
                    return damaged(&format!("record {} is damaged and more follow it", contents.records.len()));
                }
                contents.torn = true;
                break;
            }
        }
    }
    contents.end = position as u64;
    Ok(contents)
}

fn read_slot(slot: &[u8]) -> Option<u64> {
    let (magic, rest) = slot.split_at(8);
    let (generation, checksum) = rest.split_at(8);
    (magic == MAGIC && slot_checksum(generation) == checksum)
        .then(|| u64::from_le_bytes(generation.try_into().unwrap_or_default()))
}

fn slot_checksum(generation: &[u8]) -> [u8; 8] {
    checksum8(blake3::Hasher::new().update(MAGIC).update(generation))
}

fn record_checksum(generation: Option<u64>, body: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    if let Some(generation) = generation {
        hasher.update(&generation.to_le_bytes());
    }
    checksum8(hasher.update(body))
}

fn checksum8(hasher: &blake3::Hasher) -> [u8; 8] {
    let mut checksum = [0; 8];
    checksum.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    checksum
}

enum Decoded {
    Record(Record, usize),
    /// Zeros: nothing was ever written here.
    End,
    /// Not a record of this generation; `length` is its length field, if it has one.
    Damaged {
        length: Option<u32>,
    },
}

fn decode(log: &[u8], generation: Option<u64>) -> Decoded {
    let Some(header) = log.get(..RECORD_HEADER) else {
        return if log.iter().all(|&b| b == 0) { Decoded::End } else { Decoded::Damaged { length: None } };
    };
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let damaged = Decoded::Damaged { length: Some(length) };
    let Some(body) = RECORD_HEADER.checked_add(length as usize).and_then(|end| log.get(RECORD_HEADER..end)) else {
        return damaged;
    };
    if record_checksum(generation, body) != header[4..12] {
        return damaged;
    }
    match decode_body(body) {
        Some(record) => Decoded::Record(record, RECORD_HEADER + body.len()),
        // The checksum matched, so these bytes were written as they are: a record of a format
        // this build does not know, or damage the checksum missed. Either way not replayable.
        None => damaged,
    }
}

fn decode_body(body: &[u8]) -> Option<Record> {
    let mut record = Record::default();
    let mut cursor = Cursor(body);
    while !cursor.0.is_empty() {
        let op = cursor.take(1)?[0];
        let key_length = cursor.length()?;
        let key = cursor.take(key_length)?.to_vec();
        match op {
            1 => {
                let value_length = cursor.length()?;
                record.ops.push(Op::Put(key, cursor.take(value_length)?.to_vec()));
            }
            0 => record.ops.push(Op::Delete(key)),
            2 => record.unreferenced.push(String::from_utf8(key).ok()?),
            _ => return None,
        }
    }
    Some(record)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(count)?;
        self.0 = rest;
        Some(taken)
    }

    fn length(&mut self) -> Option<usize> {
        let bytes = self.take(4)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    }
}

/// The open log.
pub(super) struct Wal {
    file: Box<dyn DiskFile>,
    capacity: u64,
    pub generation: u64,
    /// Where the next record goes.
    pub end: u64,
}

impl Wal {
    /// Opens the log at `path` as found. `Contents::generation` is `None` when the log must be
    /// [`reset`](Self::reset) (once its records are durable elsewhere) before it is appended to.
    pub fn open(disk: &dyn Disk, path: &Path, capacity: u64) -> Result<(Self, Contents), StoreError> {
        let bytes = match disk.read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut contents = parse(&bytes)?;
        if bytes.len() as u64 != capacity {
            contents.generation = None;
        }
        let file = disk.open(path)?;
        if contents.generation.is_some() {
            // What was read may be only in the page cache (a process that stopped after a
            // failed `fdatasync` left it there, and Linux will not write it again): made
            // durable before it is replayed or appended to.
            file.write_at(0, &bytes[..contents.end as usize])?;
            file.sync_data()?;
        }
        let wal = Self { file, capacity, generation: contents.generation.unwrap_or(0), end: contents.end };
        Ok((wal, contents))
    }

    /// Whether a record of `length` bytes fits after the current end.
    pub fn fits(&self, length: u64) -> bool {
        self.end + length <= self.capacity
    }

    /// Whether a record of `length` bytes fits in an empty log.
    pub fn can_hold(&self, length: u64) -> bool {
        RECORDS_START + length <= self.capacity
    }

    /// Appends `record` and makes it durable.
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let body = record.encode_body();
        let mut bytes = Vec::with_capacity(RECORD_HEADER + body.len());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&record_checksum(Some(self.generation), &body));
        bytes.extend_from_slice(&body);
        self.file.write_at(self.end, &bytes)?;
        self.file.sync_data()?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Empties the log: every record in it must be durable elsewhere.
    pub fn next_generation(&mut self) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let mut slot = Vec::with_capacity(SLOT_BYTES);
        slot.extend_from_slice(MAGIC);
        slot.extend_from_slice(&generation.to_le_bytes());
        slot.extend_from_slice(&slot_checksum(&generation.to_le_bytes()));
        self.file.write_at(SLOTS[(generation % 2) as usize] as u64, &slot)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.end = RECORDS_START;
        Ok(())
    }

    /// Rewrites the whole file as an empty log of the current format, preallocated: for a new
    /// store or a log of an older format, once its records are durable elsewhere.
    pub fn reset(&mut self) -> std::io::Result<()> {
        // Real zeros, not a sparse file: later appends must not allocate blocks.
        self.file.write_at(0, &vec![0; self.capacity as usize])?;
        self.file.sync_data()?;
        self.next_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> Record {
        Record { ops: vec![Op::Put(key.to_vec(), value.to_vec())], unreferenced: vec!["x".into()] }
    }

    /// A log of `generation` holding `records`, as the file would be.
    fn log_of(generation: u64, records: &[Record]) -> Vec<u8> {
        let mut log = vec![0; 8192];
        let slot = SLOTS[(generation % 2) as usize];
        log[slot..slot + 8].copy_from_slice(MAGIC);
        log[slot + 8..slot + 16].copy_from_slice(&generation.to_le_bytes());
        log[slot + 16..slot + 24].copy_from_slice(&slot_checksum(&generation.to_le_bytes()));
        let mut at = RECORDS_START as usize;
        for record in records {
            let body = record.encode_body();
            log[at..at + 4].copy_from_slice(&(body.len() as u32).to_le_bytes());
            log[at + 4..at + 12].copy_from_slice(&record_checksum(Some(generation), &body));
            log[at + 12..at + 12 + body.len()].copy_from_slice(&body);
            at += 12 + body.len();
        }
        log
    }

    #[test]
    fn a_log_cut_short_inside_its_header_area_holds_no_records() {
        let log = log_of(6, &[]);
        for length in SLOT_BYTES..RECORDS_START as usize {
            let contents = parse(&log[..length]).unwrap();
            assert_eq!((contents.generation, contents.records.len()), (Some(6), 0), "cut at {length}");
            assert_eq!(contents.end, RECORDS_START);
        }
    }

    #[test]
    fn records_round_trip_and_length_is_exact() {
        let records = [put(b"a", b"1"), Record { ops: vec![Op::Delete(b"b".to_vec())], unreferenced: vec![] }];
        let contents = parse(&log_of(3, &records)).unwrap();
        assert_eq!(contents.generation, Some(3));
        assert_eq!(contents.records, records);
        assert_eq!(contents.end, RECORDS_START + records.iter().map(Record::len).sum::<u64>());
        assert!(!contents.torn);
    }

    /// A record header cut anywhere, including where a 512-byte sector boundary falls inside it
    /// (the first sector written, the next still holding an older generation's bytes), is a
    /// torn append, never corruption.
    #[test]
    fn a_header_torn_at_any_byte_is_torn_not_corrupt() {
        let first = put(b"a", &[1; 40]);
        let second = put(b"b", &[2; 600]);
        let whole = log_of(5, &[first.clone(), second.clone()]);
        let stale = log_of(4, &[put(b"old", &[9; 2000]), put(b"old2", &[8; 100])]);
        let start = (RECORDS_START + first.len()) as usize;
        for cut in start..start + RECORD_HEADER + 1 {
            for behind in [&vec![0; 8192], &stale] {
                let mut log = behind.clone();
                log[..cut].copy_from_slice(&whole[..cut]);
                let contents = parse(&log).unwrap();
                assert_eq!(contents.records, std::slice::from_ref(&first), "cut at {cut}");
                assert_eq!(contents.end, start as u64);
            }
        }
    }

    #[test]
    fn older_generations_are_not_replayed() {
        let mut log = log_of(6, &[put(b"a", b"1"), put(b"b", b"2")]);
        let newer = log_of(7, &[put(b"c", b"3")]);
        // Generation 7's header goes to the other slot; its record overwrites the first one.
        let slot = SLOTS[1];
        log[slot..slot + SLOT_BYTES].copy_from_slice(&newer[slot..slot + SLOT_BYTES]);
        let record = RECORDS_START as usize..(RECORDS_START + put(b"c", b"3").len()) as usize;
        log[record.clone()].copy_from_slice(&newer[record]);
        let contents = parse(&log).unwrap();
        assert_eq!(contents.generation, Some(7));
        assert_eq!(contents.records, [put(b"c", b"3")]);
    }

    /// Any one bit flipped in a record that others follow, or in the current header, is
    /// corruption, never a silently shorter log.
    #[test]
    fn a_damaged_record_or_header_is_corrupt() {
        let log = log_of(2, &[put(b"a", b"1"), put(b"b", b"2")]);
        let first = RECORDS_START as usize..(RECORDS_START + put(b"a", b"1").len()) as usize;
        for byte in first.chain(SLOTS[0]..SLOTS[0] + SLOT_BYTES) {
            for bit in 0..8 {
                let mut damaged = log.clone();
                damaged[byte] ^= 1 << bit;
                assert!(matches!(parse(&damaged), Err(StoreError::Corrupt { .. })), "byte {byte} bit {bit}");
            }
        }
    }
}
